#!/bin/sh
# Installs what the tests need (Debian 12 / Raspberry Pi OS), then runs the checks and every test.
# Arguments go to pytest, for example: sh tests/run.sh -m "not e2e" -x
set -eu
cd "$(dirname "$0")/.."

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
missing=""
for pkg in python3-venv python3-dev gcc chromium iproute2 nftables ethtool; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
    echo "installing:$missing"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'

.venv/bin/ruff check appliance tests
.venv/bin/ruff format --check appliance tests
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
