"""One reader's packets on the wire: its RTP header written into its own send buffer, the payload
copied once from the shared ring, SRTP in place (srtp.py), and GSO batches to its socket (udp.py).
sender.py is the hot path; tests/perf/bench_sendpath.py measures it."""
