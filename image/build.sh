#!/bin/sh
# The appliance system images: mmdebstrap + customize hooks (+ genimage for SD cards), the
# architecture of Raspberry Pi's rpi-image-gen without its framework.
#
#   sh image/build.sh FLAVOR OUTDIR DEB
#
# FLAVOR:
#   vm-amd64  test image for QEMU: OUTDIR/vmlinuz, initrd.img, root.ext4 (tests/vm boots it)
#   debian    Debian 12 arm64 for Raspberry Pi 3/4 (raspi-firmware): OUTDIR/sdcard.img
#   rpios     Raspberry Pi OS Lite bookworm arm64 (Pi 3/4/5, libcamera, picamera2):
#             OUTDIR/sdcard.img; needs archive.raspberrypi.org, so it builds only where that
#             is reachable (not on our CI)
# DEB: the appliance package for the image's architecture (image/deb/build.sh).
#
# Needs root, mmdebstrap, e2fsprogs; for the arm64 flavors also qemu-user-static,
# binfmt-support, arch-test, genimage, dosfstools, mtools.
set -eu
FLAVOR=$1
OUT=$(realpath -m "$2")
DEB=$(realpath "$3")
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT"
WORK=$(mktemp -d "$OUT/.image.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

RPI_ARCHIVE=${RPI_ARCHIVE:-http://archive.raspberrypi.com/debian}
extra_mirror=""
common="systemd-sysv,udev,kmod,dbus,iproute2,procps,netbase,ca-certificates,e2fsprogs,dosfstools,\
python3,python3-venv,adduser,avahi-daemon,libnss-mdns,openssh-server,sudo,v4l-utils,alsa-utils,\
initramfs-tools,busybox,util-linux,systemd-timesyncd,fake-hwclock"
case "$FLAVOR" in
    vm-amd64)
        arch=amd64; suite=bookworm; components=main
        packages="$common,linux-image-amd64,avahi-utils"
        overlays="common vm"
        modules="virtio_pci virtio_blk ext4 vfat"
        ;;
    debian)
        arch=arm64; suite=bookworm; components="main non-free-firmware"
        packages="$common,linux-image-arm64,raspi-firmware,cloud-guest-utils,wpasupplicant,\
firmware-brcm80211"
        overlays="common pi"
        modules="sdhci_iproc mmc_block bcm2835 ext4 vfat"
        ;;
    rpios)
        # Raspberry Pi OS Lite's archive (its kernels for Pi 3/4 and Pi 5, firmware, libcamera,
        # picamera2) on top of Debian's. Only where archive.raspberrypi.com is reachable: not
        # on our CI, where this recipe has never run (see README).
        arch=arm64; suite=bookworm; components="main non-free-firmware"
        key=$WORK/raspberrypi.gpg
        if ! python3 -c "import urllib.request,sys; sys.stdout.buffer.write(urllib.request.urlopen('$RPI_ARCHIVE/raspberrypi.gpg.key', timeout=20).read())" \
            | gpg --dearmor > "$key" 2>/dev/null || [ ! -s "$key" ]; then
            echo "rpios: $RPI_ARCHIVE is not reachable from here; build this flavor where it is" >&2
            exit 3
        fi
        packages="$common,linux-image-rpi-v8,linux-image-rpi-2712,raspi-firmware,\
raspberrypi-sys-mods,rpicam-apps-lite,python3-picamera2,network-manager,wpasupplicant,\
firmware-brcm80211"
        overlays="common pi"
        modules="ext4 vfat"
        extra_mirror="deb [signed-by=/etc/apt/keyrings/raspberrypi.gpg] $RPI_ARCHIVE bookworm main"
        ;;
    *) echo "unknown flavor $FLAVOR (vm-amd64, debian, rpios)" >&2; exit 2 ;;
esac
if [ "$arch" != "$(dpkg --print-architecture)" ]; then
    mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    update-binfmts --enable >/dev/null 2>&1 || true
fi

set -- --variant=minbase --mode=root --arch="$arch" --components="$components" --include="$packages"
set -- "$@" --essential-hook="mkdir -p \"\$1/etc/initramfs-tools/conf.d\"
printf 'MODULES=list\nCOMPRESS=gzip\nFSTYPE=ext4\n' > \"\$1/etc/initramfs-tools/conf.d/image.conf\"
printf '%s\n' $modules > \"\$1/etc/initramfs-tools/modules\""
for overlay in $overlays; do
    for top in "$HERE/overlay/$overlay"/*; do
        set -- "$@" --customize-hook="copy-in $top /"
    done
done
set -- "$@" --customize-hook='mkdir -p "$1/tmp/deb"' --customize-hook="copy-in $DEB /tmp/deb"
set -- "$@" --customize-hook='chroot "$1" sh -c "dpkg -i /tmp/deb/*.deb" && rm -rf "$1/tmp/deb"'
set -- "$@" --customize-hook="$HERE/hooks/system.sh \"\$1\" $FLAVOR"
if [ -n "$extra_mirror" ]; then
    set -- "$@" --setup-hook='mkdir -p "$1/etc/apt/keyrings"' \
        --setup-hook="copy-in $WORK/raspberrypi.gpg /etc/apt/keyrings"
    mmdebstrap "$@" "$suite" "$WORK/rootfs" "deb http://deb.debian.org/debian $suite $components" \
        "$extra_mirror"
else
    mmdebstrap "$@" "$suite" "$WORK/rootfs"
fi

case "$FLAVOR" in
    vm-amd64)
        cp "$WORK"/rootfs/boot/vmlinuz-* "$OUT/vmlinuz"
        cp "$WORK"/rootfs/boot/initrd.img-* "$OUT/initrd.img"
        mkfs.ext4 -q -F -L rootfs -d "$WORK/rootfs" "$OUT/root.ext4" 3G
        ;;
    debian|rpios)
        mkdir -p "$WORK/tmp" "$WORK/in"
        genimage --config "$HERE/genimage-pi.cfg" --rootpath "$WORK/rootfs" \
            --tmppath "$WORK/tmp" --inputpath "$WORK/in" --outputpath "$OUT" >/dev/null
        rm -f "$OUT/bootfs.vfat" "$OUT/rootfs.ext4"
        ;;
esac
echo "$FLAVOR: done in $OUT"
