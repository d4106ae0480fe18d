"""A listening server that runs out of descriptors, then closes: asyncio's accept retry (a
second after EMFILE) then fires on the closed socket. Run by test_hostile_http.py in its own
process, with a 64-file limit: `python tests/http/emfile_close.py quiet|default` (with or without
the daemon's exception handler). Prints "done" at the end."""

from __future__ import annotations

import asyncio
import logging
import resource
import socket
import sys

from appliance.http.connections import QuietAcceptErrors


async def main() -> None:
    loop = asyncio.get_running_loop()
    if sys.argv[1] == "quiet":
        loop.set_exception_handler(QuietAcceptErrors())
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    held: list[socket.socket] = []
    try:
        while True:  # fill the table: the server's accept then fails with EMFILE
            held.append(socket.create_connection(("127.0.0.1", port)))
    except OSError:
        pass
    await asyncio.sleep(0.3)  # asyncio meets EMFILE and schedules its retry a second later
    for s in held[-8:]:
        s.close()
    server.close()
    await asyncio.sleep(1.5)  # the retry fires on the closed socket
    sys.stdout.write("done\n")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stdout)
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    asyncio.run(main())
