#!/bin/sh
# Customize hook shared by the flavors: $1 is the image's root, $2 the flavor.
set -eu
root=$1
flavor=$2
echo appliance > "$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tappliance\n' > "$root/etc/hosts"
chroot "$root" systemctl enable systemd-networkd systemd-network-generator avahi-daemon ssh \
    systemd-timesyncd fake-hwclock fake-hwclock-save.timer >/dev/null
chroot "$root" systemctl is-enabled appliance.service appliance-firstboot.service >/dev/null
# No password logins: SSH keys come with the first-boot file.
sed -i 's/^#\?PasswordAuthentication.*/PasswordAuthentication no/' "$root/etc/ssh/sshd_config"
rm -f "$root"/etc/ssh/ssh_host_*  # made per device at first boot (below)
cat > "$root/etc/systemd/system/ssh-hostkeys.service" <<'UNIT'
[Unit]
Description=make this device's SSH host keys (once)
ConditionPathExistsGlob=!/etc/ssh/ssh_host_*_key
Before=ssh.service
[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A
[Install]
WantedBy=multi-user.target
UNIT
chroot "$root" systemctl enable ssh-hostkeys.service >/dev/null
case "$flavor" in
    vm-*)
        # The first-boot disk is optional here ("nofail"), but when it is there it must be waited
        # for: under emulation udev names it late (a 5 s timeout lost it once in CI).
        printf '/dev/vda / ext4 defaults 0 1\nLABEL=bootfs /boot/firmware vfat defaults,nofail,x-systemd.device-timeout=45s 0 2\n' > "$root/etc/fstab"
        mkdir -p "$root/boot/firmware"
        chroot "$root" systemctl enable vm-agent.service >/dev/null
        chroot "$root" passwd -d root >/dev/null
        ;;
    debian|rpios)
        printf 'LABEL=rootfs / ext4 defaults,noatime 0 1\nLABEL=bootfs /boot/firmware vfat defaults 0 2\n' > "$root/etc/fstab"
        chroot "$root" systemctl enable appliance-growfs.service >/dev/null
        echo "console=serial0,115200 console=tty1 root=LABEL=rootfs rootfstype=ext4 rootwait fsck.repair=yes" \
            > "$root/boot/firmware/cmdline.txt"
        ;;
esac
# The root file system is checked at every boot (build.sh sets FSTYPE=ext4 for the initramfs:
# it cannot find the root's type in a build chroot, and then leaves fsck out).
for initrd in "$root"/boot/initrd.img-*; do
    [ -e "$initrd" ] || continue
    chroot "$root" lsinitramfs "${initrd#"$root"}" | grep -q 'sbin/fsck.ext4$' ||
        { echo "no fsck.ext4 in $initrd" >&2; exit 1; }
done
if [ "$flavor" = debian ]; then
    # Debian's raspi-firmware boots one generic kernel, named as our config.txt says.
    cp "$root"/boot/vmlinuz-* "$root/boot/firmware/vmlinuz"
    cp "$root"/boot/initrd.img-* "$root/boot/firmware/initrd.img"
fi
