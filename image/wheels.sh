#!/bin/sh
# The daemon's dependencies as wheels for one architecture and some CPython versions, fetched by
# the host's pip (its index, proxy and certificates), so that a target installs them offline.
#
#   sh image/wheels.sh ARCH OUTDIR PYTHON_VERSION...    (ARCH: amd64 or arm64)
#
# OUTDIR gets the wheels and requirements.txt (pyproject's dependencies). $PYTHON: a Python with
# pip (default python3). Used by the package (image/deb/build.sh) and the test machine
# (image/vm/build.sh).
set -eu
ARCH=$1
OUT=$2
shift 2
SRC=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
case "$ARCH" in
    amd64) machine=x86_64 ;;
    arm64) machine=aarch64 ;;
    *) echo "ARCH must be amd64 or arm64, not $ARCH" >&2; exit 2 ;;
esac
mkdir -p "$OUT"
"$PYTHON" -c "import tomllib,sys; print('\n'.join(tomllib.load(open(sys.argv[1], 'rb'))['project']['dependencies']))" \
    "$SRC/pyproject.toml" > "$OUT/requirements.txt"
platforms="--platform linux_$machine --platform manylinux2014_$machine"
for v in 5 12 17 24 26 27 28 31 34 35 36; do platforms="$platforms --platform manylinux_2_${v}_$machine"; done
for py in "$@"; do
    # shellcheck disable=SC2086
    "$PYTHON" -m pip download -q -d "$OUT" --only-binary=:all: --python-version "$py" \
        --implementation cp $platforms -r "$OUT/requirements.txt"
done
