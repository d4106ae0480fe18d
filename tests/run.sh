#!/bin/sh
# Installs what the tests need (Debian 12 / Raspberry Pi OS), then runs the checks and every test.
# Arguments go to pytest, for example: sh tests/run.sh -m "not e2e" -x
set -eu
cd "$(dirname "$0")/.."

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
missing=""
# tests/packages.txt says why each is needed; tests/test_programs.py checks it is complete. A
# package counts as there when an installed one provides it (NodeSource's nodejs provides npm,
# and conflicts with Debian's).
provided=$(dpkg-query -W -f='${db:Status-Abbrev} ${Provides}\n' | sed -n 's/^ii *//p' | tr ',' '\n' |
    sed 's/ *(.*//; s/^ *//')
for pkg in $(sed 's/#.*//' tests/packages.txt); do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" ||
        echo "$provided" | grep -qx "$pkg" || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
    echo "installing:$missing"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing
    # coturn's package starts a TURN server on every address where systemd runs; the tests run
    # their own, in a network namespace (tests/e2e/nat.py).
    case " $missing " in *" coturn "*)
        [ ! -d /run/systemd/system ] || $sudo systemctl disable --now coturn.service || true ;;
    esac
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
# The oldest aiortc and aioice the pins allow (Python 3.10 on JetPack 6 gets these): the aiortc
# seam's contract tests run there too (tests/rtc/test_versions.py).
[ -x .venv-oldest/bin/python ] || python3 -m venv .venv-oldest
.venv-oldest/bin/python -m pip install -q --upgrade pip
.venv-oldest/bin/python -m pip install -q -e . 'aiortc==1.15.*' 'aioice==0.10.*' \
    pytest pytest-asyncio pytest-timeout

# The npm peers (tests/e2e/npm: WHIP/WHEP clients others wrote), exactly as locked, and their
# browser bundle.
npm ci --prefix tests/e2e/npm --no-audit --no-fund --loglevel=error
tests/e2e/npm/node_modules/.bin/esbuild tests/e2e/npm/peers.js --bundle --format=esm \
    --platform=browser --log-level=warning --outfile=tests/e2e/npm/dist/peers.js
# Meetecho's simple-whip-server in front of Janus, an egress target (tests/e2e/janus.py): Debian's
# package, unpacked and run on the npm modules above, since its Debian node-* dependencies
# conflict with NodeSource's nodejs where that is installed.
if [ ! -f tests/e2e/npm/simple-whip-server/src/server.js ]; then
    deb=$(mktemp -d)
    (cd "$deb" && apt-get download -qq simple-whip-server 2>/dev/null ||
        { $sudo apt-get update -qq && apt-get download -qq simple-whip-server 2>/dev/null; })
    dpkg-deb -x "$deb"/simple-whip-server_*.deb "$deb/root"
    cp -r "$deb/root/usr/share/simple-whip-server" tests/e2e/npm/
    rm -rf "$deb"
fi

.venv/bin/ruff check appliance tests
.venv/bin/ruff format --check appliance tests
.venv/bin/mypy
# The machines and images are built here, with the registries reachable: the test machine (about a
# minute), the .deb and the vm-amd64 image (two minutes), the arm64 SD card (about thirteen). All are
# cached by what goes into them. The tests themselves run without a network.
if [ "$(id -u)" -eq 0 ]; then
    .venv/bin/python -m tests.vm.machine
else
    echo "not root: the test machine is not built and tests/vm will skip"
fi
exec .venv/bin/python -m pytest "$@"
