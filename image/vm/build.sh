#!/bin/sh
# Builds the amd64 test machine the hardware-path tests boot under QEMU (TCG): a stock Debian 12
# kernel with its real V4L2 and ALSA test drivers (vivid, snd-aloop), v4l2loopback built by DKMS,
# and the daemon's Python dependencies in /opt/appliance/venv. The checkout itself is not in the
# image: tests share it over 9p, so the code under test is always the working tree.
#
#   sh image/vm/build.sh OUTDIR      -> OUTDIR/vmlinuz, OUTDIR/initrd.img, OUTDIR/root.ext4
#
# Needs root, mmdebstrap and e2fsprogs (tests/run.sh installs them), and PyPI. About a minute here.
set -eu
OUT=$(realpath -m "$1")
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/../.." && pwd)
mkdir -p "$OUT"
WORK=$(mktemp -d "$OUT/.build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# The daemon's dependencies, fetched by the host's pip (its index, proxy and certificates) as wheels
# for the guest's Python 3.11, and installed inside without a network.
sh "$SRC/image/wheels.sh" amd64 "$WORK/wheels" 3.11

mmdebstrap --variant=minbase --mode=root --arch=amd64 \
  --include="systemd-sysv,udev,kmod,busybox,linux-image-amd64,linux-headers-amd64,initramfs-tools,\
dkms,v4l2loopback-dkms,gcc,make,linux-source-6.1,xz-utils,v4l-utils,alsa-utils,python3,python3-venv,iproute2,procps,netbase,\
e2fsprogs,ca-certificates" \
  --essential-hook='mkdir -p "$1/etc/initramfs-tools/conf.d"
printf "MODULES=list\nCOMPRESS=gzip\n" > "$1/etc/initramfs-tools/conf.d/vm.conf"
printf "virtio_pci\nvirtio_blk\next4\n" > "$1/etc/initramfs-tools/modules"' \
  --customize-hook="copy-in $HERE/overlay/etc /" \
  --customize-hook="copy-in $WORK/wheels /tmp" \
  --customize-hook='set -e
chroot "$1" python3 -m venv /opt/appliance/venv
chroot "$1" /opt/appliance/venv/bin/pip install -q --no-index --find-links /tmp/wheels \
  -r /tmp/wheels/requirements.txt
rm -rf "$1/tmp/wheels"' \
  --customize-hook='set -e
chroot "$1" systemctl enable systemd-networkd vm-harness.service
chroot "$1" passwd -d root
echo appliance-vm > "$1/etc/hostname"
printf "/dev/vda / ext4 defaults 0 1\n" > "$1/etc/fstab"
ls "$1"/lib/modules/*/updates/dkms/v4l2loopback.ko*' \
  --customize-hook='mkdir -p "$1/usr/src/m2m"' \
  --customize-hook="copy-in $HERE/m2m/Kbuild /usr/src/m2m" \
  --customize-hook='set -e
chroot "$1" sh -c "cd /usr/src && tar -xJf linux-source-6.1.tar.xz \
  linux-source-6.1/drivers/media/v4l2-core/v4l2-mem2mem.c linux-source-6.1/drivers/media/test-drivers/vicodec"
cp "$1"/usr/src/linux-source-6.1/drivers/media/v4l2-core/v4l2-mem2mem.c \
  "$1"/usr/src/linux-source-6.1/drivers/media/test-drivers/vicodec/*.[ch] "$1/usr/src/m2m/"
kver=$(ls "$1/lib/modules")
chroot "$1" make -s -C "/lib/modules/$kver/build" M=/usr/src/m2m modules
mkdir -p "$1/lib/modules/$kver/updates/m2m"
cp "$1"/usr/src/m2m/*.ko "$1/lib/modules/$kver/updates/m2m/"
chroot "$1" depmod "$kver"
rm -rf "$1/usr/src/linux-source-6.1" "$1/usr/src/linux-source-6.1.tar.xz" "$1/usr/src/m2m"' \
  --customize-hook="cp \"\$1\"/boot/vmlinuz-* $WORK/vmlinuz; cp \"\$1\"/boot/initrd.img-* $WORK/initrd.img" \
  bookworm "$WORK/rootfs"

mkfs.ext4 -q -F -L rootfs -d "$WORK/rootfs" "$WORK/root.ext4" 2G
mv "$WORK/vmlinuz" "$WORK/initrd.img" "$WORK/root.ext4" "$OUT/"
