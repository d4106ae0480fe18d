"""Debian's Janus in a folder of its own, for the tests (tests/e2e/janus.py: VideoRoom behind a WHIP
server) and the benchmarks (tests/perf/janus_fanout.py: the streaming plugin as the bar):
only the plugin and transport asked for, its configuration written there, run until done.

    config = layout(folder, "libjanus_streaming.so", "libjanus_http.so", general, media, nat)
    async with running(config, port, folder / "janus.log") as process: ...
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path

JANUS_LIB = Path("/usr/lib/x86_64-linux-gnu/janus")


def layout(folder: Path, plugin: str, transport: str, general: str, media: str, nat: str) -> Path:
    """Janus's folders under `folder` with just `plugin` and `transport`, and its janus.jcfg
    (`general`, `media`, `nat`: the lines of those sections besides the folders); returns it.
    The plugin's and the transport's own .jcfg files are the caller's to write beside it."""
    for kind, keep in (("plugins", plugin), ("transports", transport)):
        (folder / kind).mkdir()
        (folder / kind / keep).symlink_to(JANUS_LIB / kind / keep)
    for kind in ("events", "loggers"):
        (folder / kind).mkdir()
    config = folder / "janus.jcfg"
    config.write_text(
        f"""general: {{
    configs_folder = "{folder}"
    plugins_folder = "{folder}/plugins"
    transports_folder = "{folder}/transports"
    events_folder = "{folder}/events"
    loggers_folder = "{folder}/loggers"
    {general}
}}
media: {{
    {media}
}}
nat: {{
    {nat}
}}
"""
    )
    return config


def tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


@contextlib.asynccontextmanager
async def running(
    config: Path, port: int, log: Path, preexec_fn: Callable[[], None] | None = None
) -> AsyncIterator[asyncio.subprocess.Process]:
    """Janus on `config`, its output in `log`, once it listens on TCP `port`; stopped after."""
    janus = shutil.which("janus")
    assert janus, "janus comes from tests/run.sh (tests/packages.txt)"
    with log.open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            janus, "--config", str(config), "--configs-folder", str(config.parent),
            "--disable-colors", "--log-stdout", stdout=output, stderr=asyncio.subprocess.STDOUT,
            preexec_fn=preexec_fn,
        )  # fmt: skip
        try:
            await _wait_port(port, process, log)
            yield process
        finally:
            await stop(process)


async def stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except asyncio.TimeoutError:
            process.kill()
            await process.wait()


async def _wait_port(port: int, process: asyncio.subprocess.Process, log: Path) -> None:
    for _ in range(200):
        assert process.returncode is None, f"janus exited: {tail(log)}"
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"janus did not listen on {port}: {tail(log)}")
