/* The C packet loop's interface (packetloop.c), read as is by send/native.py for cffi's cdef:
 * no preprocessor lines here (cffi takes none but #define), sizes written as numbers. The caller
 * includes <stdint.h> first. */

typedef int (*pl_protect_fn)(void *srtp, void *packet, int *length);

struct pl_viewer {
    /* set once, by native.py */
    void *srtp;
    pl_protect_fn protect;
    int fd;
    int gso;                /* 1 until the kernel refuses UDP_SEGMENT */
    uint8_t addr[112];      /* sockaddr_in, sockaddr_in6 or sockaddr_un */
    int addrlen;
    uint8_t *buf;           /* the send buffer, shared by senders alike */
    int buf_size;
    uint8_t header[64];     /* the viewer's header template (marker clear, seq 0) */
    int header_len;
    int abs_send_at;        /* offset of the 3-byte abs-send-time, or -1 */
    int abs_capture_at;     /* offset of the 8-byte abs-capture-time, or -1 */
    const uint8_t *ring;
    int slot_size;
    int64_t mask;
    const uint32_t *lengths;
    const int64_t *timestamps;
    const int64_t *capture_ns;
    const uint8_t *flags;
    uint32_t ts_offset;
    int64_t now_ns;         /* 0: the real-time clock; otherwise the wall clock to use (tests) */
    int closed;             /* set by the sender's close(): sends nothing more */
    /* kept between calls */
    int waiting;            /* for a keyframe: at the start, and after the kernel refused a send */
    uint16_t seq;
    int stride;             /* a full packet on the wire; 0 until the first protect */
    int batch;              /* packets per sendmsg */
    int64_t last_capture_ns;
    uint64_t capture_ntp;
    uint16_t span_seq[256];      /* per access unit sent: first sequence number... */
    int64_t span_index[256];     /* ...its first ring index... */
    int32_t span_count[256];     /* ...and its packets (NACK maps back through these) */
    int span_next;
    int spans;
    uint64_t calls;         /* sendmsg/sendto calls made, and datagrams in them */
    uint64_t datagrams;
    uint64_t packets;       /* packets and access units sent, payload octets (RTCP SR counts) */
    uint64_t frames;
    uint64_t octets;
    uint64_t bytes;         /* datagram bytes the kernel took */
    /* what the last access unit needs the sender to do (pl_send_all lists the viewer) */
    int first_frame;        /* it was the viewer's first: note when */
    int dropped;            /* packets the kernel refused... */
    int error;              /* ...with this errno */
    int want_keyframe;      /* and the viewer now waits for a keyframe: ask the stream for one */
    int gso_error;          /* errno with which GSO was found missing (the call turned gso off) */
    int srtp_status;        /* libsrtp's status if protecting failed (the call stopped there) */
    /* RTCP sender reports (pl_report_all) */
    pl_protect_fn protect_rtcp;
    uint32_t clock_rate;
    uint8_t sdes[272];      /* this viewer's SDES CNAME packet, sent after each SR */
    int sdes_len;
    uint32_t last_sr_mid32; /* the last SR's NTP time, middle 32 bits (RTT: the RR's LSR) */
    uint64_t reports;       /* SRs sent, and those the kernel or libsrtp refused */
    uint64_t report_errors;
};

/* Send the `count` packets of one access unit, from absolute ring index `first`, to each of the
 * `n` viewers. Writes the positions of the viewers whose sender must look at what happened
 * (first frame, refused sends, GSO missing, libsrtp failing) to `attention`; returns how many. */
int pl_send_all(struct pl_viewer **viewers, int n, int64_t first, int count, int *attention);

/* An RTCP sender report and SDES CNAME (RFC 3550 6.4.1, 6.5) to each of the `n` viewers that has
 * been sent a packet, its RTP time extrapolated from the access unit at ring index `newest` and
 * its capture time: SRTCP in place, one sendto each. Returns the reports sent. */
int pl_report_all(struct pl_viewer **viewers, int n, int64_t newest);

/* sizeof(struct pl_viewer) as this build of packetloop.c has it: native.py refuses a shared object
 * built from another version of this header (a stale build) rather than corrupt memory. */
int pl_layout(void);
