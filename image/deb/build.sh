#!/bin/sh
# Builds the Debian package: the one artefact that goes into the SD-card image, onto a Jetson with
# JetPack, and into the test machine.
#
#   sh image/deb/build.sh ARCH OUTDIR      (ARCH: amd64 or arm64) -> OUTDIR/appliance_<ver>_<ARCH>.deb
#
# The package carries wheels, not a virtualenv: the daemon's own wheel and its dependencies for
# CPython 3.10 (JetPack 6, Ubuntu 22.04) and 3.11 (Debian 12, Raspberry Pi OS bookworm) on ARCH.
# postinst makes /opt/appliance/venv with --system-site-packages (so picamera2 and libcamera from
# Raspberry Pi OS are importable) and installs from those wheels offline. Needs PyPI and dpkg-deb.
set -eu
ARCH=$1
OUT=$(realpath -m "$2")
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/../.." && pwd)
PYTHON=${PYTHON:-python3}
case "$ARCH" in
    amd64|arm64) ;;
    *) echo "ARCH must be amd64 or arm64, not $ARCH" >&2; exit 2 ;;
esac
VERSION=$("$PYTHON" -c "import re,sys; print(re.search(r'__version__ = \"(.+)\"', open(sys.argv[1]).read())[1])" "$SRC/appliance/__init__.py")
mkdir -p "$OUT"
WORK=$(mktemp -d "$OUT/.deb.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
ROOT=$WORK/root
WHEELS=$ROOT/usr/share/appliance/wheels
mkdir -p "$WHEELS"

"$PYTHON" -m pip wheel -q --no-deps -w "$WHEELS" "$SRC"
# The C packet loop for the device's architecture (image/build_native.py builds it when a compiler
# for it is installed: gcc-aarch64-linux-gnu for arm64 on an x86 host). Without it a device would
# serve from the Python loop, about a third as many viewers: refuse to build such a package.
case "$ARCH" in amd64) machine=x86_64 ;; arm64) machine=aarch64 ;; esac
"$PYTHON" -m zipfile -l "$WHEELS"/appliance-*.whl | grep "appliance/send/lib/packetloop-$machine.so" > /dev/null || {
    echo "the wheel has no C packet loop for $machine: install its compiler (image/build_native.py)" >&2
    exit 1
}
# ... and its declarations, written by cffi at build time (else parsed at every start).
"$PYTHON" -m zipfile -l "$WHEELS"/appliance-*.whl | grep "appliance/send/_packetloop_ffi.py" > /dev/null || {
    echo "the wheel has no appliance/send/_packetloop_ffi.py (image/build_native.py)" >&2
    exit 1
}
PYTHON=$PYTHON sh "$HERE/../wheels.sh" "$ARCH" "$WORK/wheels" 3.10 3.11
mv "$WORK"/wheels/*.whl "$WHEELS/"

install -D -m 644 "$SRC/systemd/appliance.service" "$ROOT/lib/systemd/system/appliance.service"
install -D -m 644 "$SRC/systemd/appliance-firstboot.service" "$ROOT/lib/systemd/system/appliance-firstboot.service"
install -D -m 644 "$HERE/appliance.toml" "$ROOT/etc/appliance/appliance.toml"
install -d -m 700 "$ROOT/etc/appliance/credentials"
install -D -m 644 "$SRC/appliance/appliance.example.toml" "$ROOT/usr/share/doc/appliance/examples/appliance.toml"
install -D -m 644 "$SRC/README.md" "$ROOT/usr/share/doc/appliance/README.md"
install -D -m 644 "$HERE/copyright" "$ROOT/usr/share/doc/appliance/copyright"
printf 'appliance (%s) stable; urgency=medium\n\n  * Release %s.\n\n -- appliance developers <appliance@users.noreply.github.com>  %s\n' \
    "$VERSION" "$VERSION" "$(date -R -u -d @"${SOURCE_DATE_EPOCH:-0}")" | gzip -9n > "$WORK/changelog.gz"
install -D -m 644 "$WORK/changelog.gz" "$ROOT/usr/share/doc/appliance/changelog.gz"
install -D -m 644 "$HERE/lintian-overrides" "$ROOT/usr/share/lintian/overrides/appliance"

mkdir -p "$ROOT/DEBIAN"
for script in postinst prerm postrm; do install -m 755 "$HERE/$script" "$ROOT/DEBIAN/$script"; done
echo /etc/appliance/appliance.toml > "$ROOT/DEBIAN/conffiles"
size=$(du -sk --exclude=DEBIAN "$ROOT" | cut -f1)
sed -e "s/@VERSION@/$VERSION/" -e "s/@ARCH@/$ARCH/" -e "s/@SIZE@/$size/" "$HERE/control" > "$ROOT/DEBIAN/control"
find "$ROOT" -type d -exec chmod 755 {} +
chmod 700 "$ROOT/etc/appliance/credentials"
dpkg-deb --root-owner-group -Zxz --build "$ROOT" "$OUT/appliance_${VERSION}_$ARCH.deb" >/dev/null
echo "$OUT/appliance_${VERSION}_$ARCH.deb"
