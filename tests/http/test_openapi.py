"""The OpenAPI description against the server: schemathesis generates requests from it (valid and
invalid ones) for every operation and checks each answer against the description. A daemon in its
own process takes them all: no 5xx, and it is still serving at the end."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

import appliance

SPEC = Path(appliance.__file__).with_name("openapi.yaml")
ADMIN = "fuzz-admin-token-0123"


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp_path_factory.mktemp("fuzz") / "appliance.toml"
    config.write_text(
        '[video]\nsource = "testsrc"\nwidth = 320\nheight = 240\n'
        "[http]\nsessions_per_minute = 100000.0\nsessions_burst = 10000\n"
        # offers back to back keep its loop busy: no refusals for load (503) in a conformance run
        "[stream]\nmax_load = 1.0\n"
        f'[auth]\npublic_read = true\n[[auth.tokens]]\ntoken = "{ADMIN}"\nrights = ["admin"]\n'
    )
    args = ["serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen([sys.executable, "-m", "appliance", *args])
    url = f"http://127.0.0.1:{port}"
    try:
        # healthy, not only listening: /healthz answers 503 until the first frame (as described),
        # and schemathesis counts any 5xx as a server error
        for _ in range(400):
            try:
                urllib.request.urlopen(f"{url}/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.05)
        else:
            pytest.fail("the daemon never became healthy")
        yield url
        assert proc.poll() is None, "the daemon died during the fuzz run"
        with urllib.request.urlopen(f"{url}/healthz", timeout=5) as r:
            assert r.status == 200
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_description_is_what_the_server_serves(base_url: str) -> None:
    with urllib.request.urlopen(f"{base_url}/openapi.yaml") as r:
        assert r.read() == SPEC.read_bytes()


@schemathesis.serializer("application/sdp", "application/trickle-ice-sdpfrag")
def sdp_text(ctx: object, value: object) -> bytes:
    """SDP and SDP fragments are text: send what was generated, as UTF-8."""
    return value if isinstance(value, bytes) else str(value).encode()


schema = schemathesis.openapi.from_path(SPEC)
OPERATIONS = [result.ok() for result in schema.get_all_operations()]


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: op.label)
@pytest.mark.parametrize("token", [None, ADMIN], ids=["no-token", "admin"])
def test_fuzz_no_server_errors_and_answers_as_described(
    base_url: str, operation: schemathesis.APIOperation, token: str | None
) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}

    @given(case=operation.as_strategy())
    @settings(
        max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None
    )
    def run(case: schemathesis.Case) -> None:
        case.call_and_validate(
            base_url=base_url,
            headers=headers,
            timeout=10,
            excluded_checks=[positive_data_acceptance],
        )

    # call_and_validate: no 5xx; the status, headers, content type and body are as described. Not
    # "schema-valid data is accepted": no schema says what a valid SDP offer or camera control
    # value is, and a random string or number the schema allows is rightly refused with 400.
    run()
