#!/usr/bin/env bash
# Inside mmdebstrap (ROOT has /proc, /sys and /dev mounted): the parts common to both versions.
# Usage: customize.sh ROOT
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=${1:?}

cp -a "$here/overlay/." "$root/"
systemctl --root="$root" enable ibu-vm-booted.service ibu-vm-firstboot-done.service \
  systemd-networkd.service ssh.service ibu-vm-ssh-keygen.service
# openssh-server made host keys at install: every VM of the image would share them. Each node
# makes its own at first boot (ibu-vm-ssh-keygen.service).
rm -f "$root"/etc/ssh/ssh_host_*
# No machine id: systemd then treats the first boot as such and applies presets, which is how
# Ignition's "enabled: true" units get enabled.
rm -f "$root/etc/machine-id" "$root/var/lib/dbus/machine-id"
# ...but on a first boot systemd-firstboot would ask for a timezone on the console and block
# sysinit (and with it udev) until it gives up. Ignition configures the node instead.
systemctl --root="$root" mask systemd-firstboot.service

# The initramfs where ostree wants it: /usr/lib/modules/$kver/initramfs.img (+ vmlinuz).
kver=$(ls "$root/usr/lib/modules")
chroot "$root" dracut --quiet --force --no-hostonly --kver "$kver" "/usr/lib/modules/$kver/initramfs.img"
cp "$root/boot/vmlinuz-$kver" "$root/usr/lib/modules/$kver/vmlinuz"
