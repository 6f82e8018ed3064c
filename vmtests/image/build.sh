#!/usr/bin/env bash
# Build the VM test images into OUT (a new, empty directory; the harness renames it into the
# cache when this succeeds):
#   OUT/repo       ostree archive repository: ibu-vm/old (1.0.0) and ibu-vm/new (1.1.0)
#   OUT/disk.raw   the pristine disk: GPT, extlinux, /boot, the ostree root with 1.0.0 deployed
#                  as stateroot "debian", never booted (the first boot runs Ignition)
#   OUT/disk-new.raw  the same with 1.1.0 deployed (what the seed VM boots)
#   OUT/info.env   what the harness needs to know about the disk (info-new.env: the new one)
# Usage: build.sh OUT       (root; needs the packages of vmtests/setup-host.sh)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: build.sh OUT}
mkdir -p "$out"
out=$(cd "$out" && pwd)
work="$out/work"
mkdir -p "$work"

step() { printf '[image %4ds] %s\n' "$SECONDS" "$*" >&2; }

step "rootfs of both versions (mmdebstrap)"
"$here/rootfs.sh" "$work/old" "$work/new"

ostree init --repo="$out/repo" --mode=archive
for version in old new; do
  step "ostree tree and commit: $version ($(cat "$here/versions/$version/version"))"
  "$here/commit.sh" "$work/$version" "$here/versions/$version" "$out/repo" "ibu-vm/$version"
  rm -rf "${work:?}/$version"
done

step "pristine disk: old OS (targets)"
"$here/disk.sh" "$out/repo" ibu-vm/old "$out/disk.raw" "$out/info.env"
step "pristine disk: new OS (the seed VM)"
"$here/disk.sh" "$out/repo" ibu-vm/new "$out/disk-new.raw" "$out/info-new.env"
rmdir "$work"
step "done"
