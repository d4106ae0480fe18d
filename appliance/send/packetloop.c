/* The fast path's packet loop in C: one access unit from the shared ring to every viewer.
 *
 * One call per access unit walks every viewer on this loop (pl_send_all). For each, it does what
 * appliance/send/sender.py's RtpSender.send_range() does in Python, packet for packet and byte
 * for byte (tests/send/test_native.py compares the two on the wire): skip the access unit while
 * the viewer waits for a keyframe; for each packet of the access unit, write the viewer's RTP
 * header (its template with the access unit's timestamp, abs-send-time and abs-capture-time
 * filled once, then per packet the sequence number and the last packet's marker), copy the payload from its ring slot (the one copy per packet per
 * viewer), protect it in place with the viewer's libsrtp session, and hand runs of equal-size
 * packets to the kernel in one sendmsg() with UDP GSO (UDP_SEGMENT). No heap allocation, no
 * Python object, no lock: the caller (the event loop's thread) owns the viewer and the buffer.
 *
 * The struct and the function are in packetloop.h, which native.py also reads for its cdef.
 * Loaded with cffi in ABI mode (appliance/send/native.py): no Python.h, so one shared object
 * per architecture serves every CPython. libsrtp is not linked: srtp_protect() is called
 * through the pointer pylibsrtp's own binding exports, so that both paths run the same libsrtp.
 * Built by image/build_native.py (the package's build hook) with: cc -O2 -fPIC -shared.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>

#ifndef SOL_UDP
#define SOL_UDP 17
#endif
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif

#define PL_SPANS 256 /* as the arrays in packetloop.h */
#define PL_MAX_SEGMENTS 40          /* as sender.MAX_SEGMENTS */
#define PL_MAX_DATAGRAMS_BYTES 65000 /* as sender.MAX_DATAGRAMS_BYTES */
#define PL_FLAG_MARKER 0x01
#define PL_FLAG_KEYFRAME 0x02
#define NTP_UNIX_OFFSET 2208988800ULL

#include "packetloop.h"


static uint64_t ntp_from_unix_ns(int64_t unix_ns)
{
    uint64_t seconds = (uint64_t)(unix_ns / 1000000000);
    uint64_t ns = (uint64_t)(unix_ns % 1000000000);
    return ((seconds + NTP_UNIX_OFFSET) << 32) | ((ns << 32) / 1000000000ULL);
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v;
}

static int send_plain(struct pl_viewer *v, const uint8_t *data, int length)
{
    if (sendto(v->fd, data, (size_t)length, 0, (const struct sockaddr *)v->addr,
               (socklen_t)v->addrlen) < 0)
        return errno ? errno : EIO;
    v->calls++;
    v->datagrams++;
    return 0;
}

/* `count` packets at buf, `stride` apart, the last `last` bytes long: one GSO sendmsg, or one
 * sendto each where the kernel has no GSO. Returns 0 or an errno. */
static int flush(struct pl_viewer *v, int count, int last)
{
    int total = (count - 1) * v->stride + last;
    if (count > 1 && v->gso) {
        struct iovec iov = {v->buf, (size_t)total};
        union {
            char space[CMSG_SPACE(sizeof(uint16_t))];
            struct cmsghdr align;
        } control;
        struct msghdr msg;
        memset(&msg, 0, sizeof msg);
        msg.msg_name = v->addr;
        msg.msg_namelen = (socklen_t)v->addrlen;
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.space;
        msg.msg_controllen = sizeof control.space;
        struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
        cm->cmsg_level = SOL_UDP;
        cm->cmsg_type = UDP_SEGMENT;
        cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
        uint16_t segment = (uint16_t)v->stride;
        memcpy(CMSG_DATA(cm), &segment, sizeof segment);
        if (sendmsg(v->fd, &msg, 0) >= 0) {
            v->calls++;
            v->datagrams += (uint64_t)count;
            return 0;
        }
        int e = errno ? errno : EIO;
        if (e != EINVAL && e != EIO && e != ENOPROTOOPT && e != EOPNOTSUPP)
            return e;
        v->gso = 0; /* this kernel or path has no GSO: one datagram at a time from now on */
        v->gso_error = e;
    }
    if (count == 1)
        return send_plain(v, v->buf, last);
    for (int k = 0; k < count; k++) {
        int e = send_plain(v, v->buf + (long)k * v->stride, k == count - 1 ? last : v->stride);
        if (e)
            return e;
    }
    return 0;
}

static void refused(struct pl_viewer *v, int count, int e)
{
    v->dropped += count;
    v->error = e;
    if (!v->waiting) { /* resume at the next keyframe, and ask for one */
        v->waiting = 1;
        v->want_keyframe = 1;
    }
}

/* One access unit to one viewer. Returns whether the sender must look at what happened. */
static int send_one(struct pl_viewer *v, int64_t first, int count)
{
    if (v->closed)
        return 0;
    int64_t slot0 = first & v->mask;
    if (v->waiting) {
        if (!(v->flags[slot0] & PL_FLAG_KEYFRAME))
            return 0;
        v->waiting = 0;
    }
    v->first_frame = v->frames == 0;
    v->dropped = 0;
    v->error = 0;
    v->want_keyframe = 0;
    v->gso_error = 0;
    v->srtp_status = 0;

    int64_t capture_ns = v->capture_ns[slot0];
    if (capture_ns != v->last_capture_ns) {
        v->last_capture_ns = capture_ns;
        v->capture_ntp = ntp_from_unix_ns(capture_ns);
    }
    /* The access unit's header: template, timestamp, abs-send-time, abs-capture-time. */
    uint8_t header[sizeof ((struct pl_viewer *)0)->header];
    int header_len = v->header_len;
    memcpy(header, v->header, (size_t)header_len);
    put32(header + 4, (uint32_t)(v->ts_offset + (uint32_t)v->timestamps[slot0]));
    if (v->abs_send_at >= 0) {
        int64_t now = v->now_ns;
        if (!now) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            now = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
        }
        uint32_t send_time = (uint32_t)(ntp_from_unix_ns(now) >> 14) & 0xFFFFFF;
        header[v->abs_send_at] = send_time >> 16;
        header[v->abs_send_at + 1] = send_time >> 8;
        header[v->abs_send_at + 2] = send_time;
    }
    if (v->abs_capture_at >= 0) {
        put32(header + v->abs_capture_at, (uint32_t)(v->capture_ntp >> 32));
        put32(header + v->abs_capture_at + 4, (uint32_t)v->capture_ntp);
    }

    uint16_t seq = v->seq, first_seq = seq;
    int k = 0; /* packets in the current batch */
    int wire = 0;
    int done = 0;
    for (int i = 0; i < count; i++) {
        int64_t slot = (first + i) & v->mask;
        int size = (int)v->lengths[slot];
        uint8_t *p = v->buf + (long)k * v->stride;
        if (header_len + size + 16 > v->buf_size - (long)k * v->stride) {
            v->srtp_status = -1; /* cannot happen with the ring's slot size; never overrun */
            break;
        }
        memcpy(p, header, (size_t)header_len);
        p[2] = seq >> 8;
        p[3] = seq & 0xFF;
        if (v->flags[slot] & PL_FLAG_MARKER)
            p[1] |= 0x80;
        memcpy(p + header_len, v->ring + slot * v->slot_size, (size_t)size);
        wire = header_len + size;
        int status = v->protect(v->srtp, p, &wire);
        if (status) {
            v->srtp_status = status;
            break;
        }
        if (!v->stride) { /* the first packet ever: its tag fixes a full packet's size */
            v->stride = header_len + v->slot_size + (wire - header_len - size);
            int batch = PL_MAX_DATAGRAMS_BYTES / v->stride;
            if (batch > PL_MAX_SEGMENTS)
                batch = PL_MAX_SEGMENTS;
            if (batch > v->buf_size / v->stride)
                batch = v->buf_size / v->stride;
            v->batch = batch < 1 ? 1 : batch;
        }
        seq++;
        v->octets += (uint64_t)size;
        done++;
        k++;
        if (wire != v->stride || k == v->batch) {
            int e = flush(v, k, wire);
            if (e)
                refused(v, k, e);
            else
                v->bytes += (uint64_t)((k - 1) * v->stride + wire);
            k = 0;
        }
    }
    if (k) { /* full-size packets all (a shorter one is flushed at once), as in Python */
        int e = flush(v, k, v->stride);
        if (e)
            refused(v, k, e);
        else
            v->bytes += (uint64_t)(k * v->stride);
    }
    v->seq = seq;
    v->packets += (uint64_t)done;
    v->frames++;
    if (done) {
        int at = v->span_next;
        v->span_seq[at] = first_seq;
        v->span_index[at] = first;
        v->span_count[at] = done;
        v->span_next = (at + 1) % PL_SPANS;
        if (v->spans < PL_SPANS)
            v->spans++;
    }
    return v->first_frame || v->dropped || v->gso_error || v->srtp_status;
}

/* See packetloop.h. */
int pl_send_all(struct pl_viewer **viewers, int n, int64_t first, int count, int *attention)
{
    int k = 0;
    if (count <= 0)
        return 0;
    for (int i = 0; i < n; i++)
        if (send_one(viewers[i], first, count))
            attention[k++] = i;
    return k;
}

/* floor(a / b) for b > 0, as Python's // (the RTP time of a capture after "now" rounds down) */
static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && a < 0) ? q - 1 : q;
}

static int report_one(struct pl_viewer *v, int64_t newest)
{
    uint8_t packet[28 + sizeof v->sdes + 32]; /* SR, SDES, the SRTCP trailer (tag, index) */
    int64_t now = v->now_ns;
    if (!now) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        now = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    }
    int64_t slot = newest & v->mask;
    int64_t elapsed = floor_div((now - v->capture_ns[slot]) * (int64_t)v->clock_rate, 1000000000);
    uint32_t rtp_now = (uint32_t)(v->ts_offset + (uint64_t)v->timestamps[slot] + (uint64_t)elapsed);
    uint64_t ntp = ntp_from_unix_ns(now);
    packet[0] = 0x80;
    packet[1] = 200; /* SR */
    packet[2] = 0;
    packet[3] = 6;
    memcpy(packet + 4, v->header + 8, 4); /* our SSRC, from the RTP header template */
    put32(packet + 8, (uint32_t)(ntp >> 32));
    put32(packet + 12, (uint32_t)ntp);
    put32(packet + 16, rtp_now);
    put32(packet + 20, (uint32_t)v->packets);
    put32(packet + 24, (uint32_t)v->octets);
    memcpy(packet + 28, v->sdes, (size_t)v->sdes_len);
    int length = 28 + v->sdes_len;
    if (v->protect_rtcp(v->srtp, packet, &length) ||
        sendto(v->fd, packet, (size_t)length, 0, (const struct sockaddr *)v->addr,
               (socklen_t)v->addrlen) < 0) {
        v->report_errors++;
        return 0;
    }
    v->last_sr_mid32 = (uint32_t)(ntp >> 16);
    v->reports++;
    return 1;
}

/* See packetloop.h. */
int pl_report_all(struct pl_viewer **viewers, int n, int64_t newest)
{
    int sent = 0;
    for (int i = 0; i < n; i++) {
        struct pl_viewer *v = viewers[i];
        if (!v->closed && v->packets)
            sent += report_one(v, newest);
    }
    return sent;
}

/* See packetloop.h. */
int pl_layout(void)
{
    return (int)sizeof(struct pl_viewer);
}
