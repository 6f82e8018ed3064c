#!/usr/bin/env bash
# Turn a Debian root filesystem into an ostree tree (the layout vm-facts.md describes) with a
# version's overlay, and commit it.
# Usage: commit.sh ROOT VERSION_DIR REPO BRANCH
set -euo pipefail
root=${1:?}; vdir=${2:?}; repo=${3:?}; branch=${4:?}
version=$(cat "$vdir/version")

cp -a "$vdir/overlay/." "$root/"
# The version file: os-release's IMAGE_ID/IMAGE_VERSION (the commit's "version" is the same).
printf 'IMAGE_ID=ibu-vm\nIMAGE_VERSION=%s\n' "$version" >>"$root/usr/lib/os-release"

cd "$root"
# Kernel and initramfs live in /usr/lib/modules/$kver; /boot belongs to the bootloader.
rm -rf boot/* boot/.[!.]* 2>/dev/null || true
# /etc is /usr/etc in a commit; ostree merges it into each deployment's /etc.
mv etc usr/etc
# /var is per stateroot; tmpfiles.d recreates what the links below point to.
rm -rf var && mkdir var
rm -rf home opt srv mnt root media usr/local
ln -s var/home home
ln -s var/opt opt
ln -s var/srv srv
ln -s var/mnt mnt
ln -s var/roothome root
ln -s run/media media
ln -s ../var/usrlocal usr/local
mkdir -p sysroot
ln -s sysroot/ostree ostree
# API filesystems are mounted at boot; commits hold no device nodes.
for d in dev proc sys run tmp; do rm -rf "$d" && mkdir "$d"; done
chmod 1777 tmp
cd - >/dev/null

ostree commit --repo="$repo" --branch="$branch" --tree=dir="$root" \
  --add-metadata-string=version="$version" --subject="ibu VM test OS $version" \
  --no-xattrs --link-checkout-speedup >/dev/null
echo "$branch: $(ostree rev-parse --repo="$repo" "$branch") version $version"
