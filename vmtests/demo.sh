#!/usr/bin/env bash
# The main job, as far as ibu goes today, on a directory sysroot made with the real ostree CLI:
# a node running OS 1.0.0 with a separate (loop-mounted xfs) /var/lib/containers holding real
# podman images is asked for Prep towards 1.1.0; ibu runs its checks and the image cleanup, then
# stops where stateroot setup will be; then Idle aborts. `ibu status` is shown at each point.
#
# Usage: sudo vmtests/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."

vmtests/setup-host.sh
cargo build --release --locked
ibu="$PWD/target/release/ibu"

work=$(mktemp -d /var/tmp/ibu-demo.XXXXXX)
storage=""
podman_args=()
cleanup() {
  set +e
  if [ -n "$storage" ]; then
    podman "${podman_args[@]}" rm -af >/dev/null 2>&1
    umount -R "$storage" 2>/dev/null
  fi
  [ -n "${loopdev:-}" ] && losetup -d "$loopdev" 2>/dev/null
  [ "${#podman_args[@]}" -eq 4 ] && rm -rf "${podman_args[3]}"
  chattr -R -i "$work/sysroot/ostree/deploy" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "a directory sysroot running OS 1.0.0 (stateroot debian)"
sysroot="$work/sysroot"
mkdir -p "$sysroot"
ostree admin init-fs "$sysroot" >/dev/null
ostree config --repo="$sysroot/ostree/repo" set sysroot.bootloader none
ostree admin --sysroot="$sysroot" os-init debian >/dev/null
tree="$work/tree"
mkdir -p "$tree/usr/lib/modules/6.1.0/" "$tree/usr/etc" "$tree/usr/bin"
head -c 4M /dev/urandom >"$tree/usr/lib/modules/6.1.0/vmlinuz"
head -c 8M /dev/urandom >"$tree/usr/lib/modules/6.1.0/initramfs.img"
printf 'ID=debian\nPRETTY_NAME="Demo OS 1.0.0"\nVERSION_ID=1.0.0\n' >"$tree/usr/etc/os-release"
commit=$(ostree commit --repo="$sysroot/ostree/repo" --branch=demo/os --tree=dir="$tree" \
  --add-metadata-string=version=1.0.0 --subject "OS 1.0.0")
ostree admin --sysroot="$sysroot" deploy --os=debian --karg=root=LABEL=root demo/os >/dev/null
cat >"$sysroot/.ibu-sandbox.yaml" <<EOF
# the deployment that plays "booted" in this directory sysroot (ibu's documented test seam)
booted:
  stateroot: debian
  checksum: $commit
  serial: 0
EOF
ostree admin --sysroot="$sysroot" status

say "a separate xfs /var/lib/containers with real images, past the cleanup threshold"
storage="$sysroot/ostree/deploy/debian/var/lib/containers"
mkdir -p "$storage"
truncate -s 300M "$work/containers.img"
mkfs.xfs -q "$work/containers.img"
loopdev=$(losetup -f --show "$work/containers.img")
mount "$loopdev" "$storage"
# The same --root/--runroot ibu uses for this sysroot.
mapfile -t podman_args < <("$ibu" --sysroot "$sysroot" internals podman-args)
for i in 1 2 3 4 5 6; do
  ctr=$(buildah "${podman_args[@]}" from scratch)
  head -c 24M /dev/urandom >"$work/payload"
  buildah "${podman_args[@]}" copy "$ctr" "$work/payload" /payload >/dev/null
  buildah "${podman_args[@]}" commit --quiet --timestamp $((1700000000 + i * 3600)) "$ctr" "localhost/app$i:latest" >/dev/null
  buildah "${podman_args[@]}" rm "$ctr" >/dev/null
done
podman "${podman_args[@]}" create --name in-use localhost/app1:latest /payload >/dev/null
head -c 20M /dev/urandom >"$storage/other-data"
df -h "$storage" | tail -1
podman "${podman_args[@]}" images

say "Idle: ibu converges on a fresh node"
"$ibu" --sysroot "$sysroot" reconcile || true
"$ibu" --sysroot "$sysroot" status

say "Prep towards 1.1.0 (desired state edited, then ibu runs until it stops asking to)"
mkdir -p "$sysroot/ostree/deploy/debian/deploy/$commit.0/etc/ibu"
cat >"$sysroot/ostree/deploy/debian/deploy/$commit.0/etc/ibu/upgrade.yaml" <<'EOF'
# yaml-language-server: $schema=../../schemas/imagebasedupgrade.schema.json
apiVersion: lca.openshift.io/v1
kind: ImageBasedUpgrade
metadata:
  name: upgrade
  annotations:
    image-cleanup.lca.openshift.io/disk-usage-threshold-percent: "40"
spec:
  stage: Idle
  seedImageRef:
    image: registry.example.com/demo/seed:1.1.0
    version: 1.1.0
EOF
"$ibu" --sysroot "$sysroot" set-stage Prep
"$ibu" --sysroot "$sysroot" plan
rc=75
while [ "$rc" -eq 75 ]; do
  set +e; "$ibu" --sysroot "$sysroot" reconcile; rc=$?; set -e
  echo "ibu reconcile exited $rc"
done
"$ibu" --sysroot "$sysroot" status
df -h "$storage" | tail -1
podman "${podman_args[@]}" images

say "Idle again: abort"
"$ibu" --sysroot "$sysroot" set-stage Idle
rc=75
while [ "$rc" -eq 75 ]; do
  set +e; "$ibu" --sysroot "$sysroot" reconcile; rc=$?; set -e
  echo "ibu reconcile exited $rc"
done
"$ibu" --sysroot "$sysroot" status -o yaml
