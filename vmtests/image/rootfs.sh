#!/usr/bin/env bash
# Bootstrap the root filesystems of both OS versions with one mmdebstrap run:
# packages.txt, the common overlay and the initramfs, then a copy for "old", then
# new-packages.txt on top for "new".
# Usage: rootfs.sh OLD_DIR NEW_DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
old=${1:?}; new=${2:?}
mirror=${IBU_VM_DEBIAN_MIRROR:-http://deb.debian.org/debian}

# Debian's kernel hooks would build an initramfs in /boot on every kernel or dracut trigger;
# customize.sh builds the one ostree boots, once. (/etc/kernel/postinst.d/dracut honours INITRD.)
export INITRD=No

list() { sed -e 's/#.*//' "$1" | xargs | tr ' ' ','; }

mmdebstrap --variant=apt --mode=root --format=directory \
  --include="$(list "$here/packages.txt")" \
  --customize-hook="'$here/customize.sh' \"\$1\"" \
  --customize-hook="cp -ax \"\$1\" '$old'" \
  --customize-hook="chroot \"\$1\" apt-get install -y -q --no-install-recommends $(list "$here/new-packages.txt" | tr ',' ' ')" \
  bookworm "$new" "$mirror"
