#!/usr/bin/env bash
# The pristine disk: GPT with a legacy-BIOS-bootable /boot (extlinux + gptmbr.bin) and the
# ostree root; the rest of the disk is left free for Ignition to create the varlibcontainers
# partition on the first boot. The commit is deployed as stateroot "debian" with Ignition's
# first-boot kernel arguments (ibu-vm-firstboot-done.service drops them after that boot).
# Usage: disk.sh REPO REF DISK INFO_ENV
set -euo pipefail
repo=${1:?}; ref=${2:?}; disk=${3:?}; info=${4:?}

disk_mib=12288
boot_start_mib=1
boot_mib=384
root_start_mib=$((boot_start_mib + boot_mib))
root_mib=6144
stateroot=debian

rm -f "$disk"
truncate -s "${disk_mib}M" "$disk"
sgdisk --clear \
  --new=1:${boot_start_mib}M:+${boot_mib}M --change-name=1:boot --typecode=1:8300 \
  --attributes=1:set:2 \
  --new=2:${root_start_mib}M:+${root_mib}M --change-name=2:root --typecode=2:8300 \
  "$disk" >/dev/null
dd if=/usr/lib/syslinux/mbr/gptmbr.bin of="$disk" bs=440 count=1 conv=notrunc status=none

# Partition scanning of loop devices does not work on this host: one loop device per partition.
mnt=$(mktemp -d /tmp/ibu-vm-disk.XXXXXX)
boot_dev=""; root_dev=""
cleanup() {
  set +e
  mountpoint -q "$mnt/boot" && umount "$mnt/boot"
  mountpoint -q "$mnt" && umount "$mnt"
  [ -n "$boot_dev" ] && losetup -d "$boot_dev"
  [ -n "$root_dev" ] && losetup -d "$root_dev"
  rmdir "$mnt"
}
trap cleanup EXIT
boot_dev=$(losetup --find --show --offset $((boot_start_mib << 20)) --sizelimit $((boot_mib << 20)) "$disk")
root_dev=$(losetup --find --show --offset $((root_start_mib << 20)) --sizelimit $((root_mib << 20)) "$disk")
# extlinux reads only ext4 without these features.
mkfs.ext4 -q -L boot -O ^64bit,^metadata_csum,^orphan_file "$boot_dev"
mkfs.ext4 -q -L root "$root_dev"
mount "$root_dev" "$mnt"
mkdir "$mnt/boot"
mount "$boot_dev" "$mnt/boot"

ostree admin init-fs "$mnt" >/dev/null
ostree admin --sysroot="$mnt" os-init "$stateroot" >/dev/null
ostree config --repo="$mnt/ostree/repo" set sysroot.bootloader syslinux
# ostree's syslinux backend rewrites loader/syslinux.cfg; extlinux reads syslinux/syslinux.cfg.
mkdir -p "$mnt/boot/loader.0" "$mnt/boot/syslinux"
ln -s loader.0 "$mnt/boot/loader"
printf 'PROMPT 0\nTIMEOUT 1\n' >"$mnt/boot/loader/syslinux.cfg"
ln -s ../loader/syslinux.cfg "$mnt/boot/syslinux/syslinux.cfg"
extlinux --install "$mnt/boot/syslinux" 2>/dev/null

ostree pull-local --repo="$mnt/ostree/repo" "$repo" "$ref" >/dev/null
ostree admin --sysroot="$mnt" deploy --os="$stateroot" \
  --karg=root=LABEL=root --karg=rw --karg=console=ttyS0,115200 \
  --karg=ignition.firstboot --karg=ignition.platform.id=qemu "$ref" >/dev/null
ostree admin --sysroot="$mnt" status
cat "$mnt/boot/syslinux/syslinux.cfg"

cat >"$info" <<INFO
# Written by vmtests/image/disk.sh
STATEROOT=$stateroot
COMMIT=$(ostree rev-parse --repo="$mnt/ostree/repo" "$ref")
DISK_MIB=$disk_mib
INFO
