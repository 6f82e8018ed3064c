#!/usr/bin/env bash
# Prep and abort on directory sysroots made with the real ostree CLI, with a real registry.
#
# A seed host running OS 1.1.0 makes a seed with `ibu seed create` and pushes it to Debian's
# docker-registry on 127.0.0.1 (htpasswd auth). A target running OS 1.0.0, with a separate
# (loop-mounted xfs) /var/lib/containers past the cleanup threshold, is asked for Prep towards
# 1.1.0: ibu checks, cleans up images, imports only the ostree objects it lacks, deploys the new
# stateroot (not default), restores /etc and /var, precaches the seed's images, and reports
# PrepCompleted. Then `stage: Idle` aborts and the sysroot is as before. `ibu status` at each point.
#
# Directory sysroots have no booted deployment: `.ibu-sandbox.yaml` names the one that plays
# "booted" (README, "Directory sysroots"). The same job on real boots is vmtests' demo.
#
# Usage: sudo vmtests/demo-sysroot.sh
set -euo pipefail
cd "$(dirname "$0")/.."

vmtests/setup-host.sh
cargo build --release --locked --bin ibu
ibu="$PWD/target/release/ibu"

work=$(mktemp -d /var/tmp/ibu-demo.XXXXXX)
mounts=()
loops=()
registry_pid=""
runroots=()
cleanup() {
  set +e
  [ -n "$registry_pid" ] && kill "$registry_pid" 2>/dev/null && wait "$registry_pid" 2>/dev/null
  for m in "${mounts[@]}"; do umount -R "$m" 2>/dev/null; done
  for l in "${loops[@]}"; do losetup -d "$l" 2>/dev/null; done
  for r in "${runroots[@]}"; do rm -rf "$r"; done
  chattr -R -i "$work"/*/ostree/deploy 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
converge() { # run `ibu reconcile` the way systemd does: again while it exits 75
  local rc=75
  while [ "$rc" -eq 75 ]; do
    set +e; "$ibu" --sysroot "$1" reconcile; rc=$?; set -e
    echo "   ibu reconcile exited $rc"
  done
}

# An OS tree: a kernel, 48 MiB of shared payload, and what differs between versions.
os_tree() { # DIR VERSION
  local dir=$1 version=$2
  mkdir -p "$dir/usr/lib/modules/6.1.0" "$dir/usr/etc/app" "$dir/usr/share/payload" "$dir/usr/bin"
  cp "$work/kernel" "$dir/usr/lib/modules/6.1.0/vmlinuz"
  cp "$work/initramfs" "$dir/usr/lib/modules/6.1.0/initramfs.img"
  cp "$work"/payload/* "$dir/usr/share/payload/"
  printf 'ID=debian\nPRETTY_NAME="Demo OS %s"\nVERSION_ID=%s\n' "$version" "$version" >"$dir/usr/etc/os-release"
  printf 'listen = 8080\nversion = %s\n' "$version" >"$dir/usr/etc/app/app.conf"
  printf '#!/bin/sh\necho demo app %s\n' "$version" >"$dir/usr/bin/demo-app"
  chmod 0755 "$dir/usr/bin/demo-app"
  if [ "$version" = 1.1.0 ]; then # the new release changes 4 of 48 payload files and adds a tool
    for i in 1 2 3 4; do head -c 1M /dev/urandom >"$dir/usr/share/payload/part$i"; done
    printf '#!/bin/sh\necho new in 1.1.0\n' >"$dir/usr/bin/demo-new-tool"
  fi
}

# A sysroot in DIR booted into stateroot debian at VERSION; prints the commit.
make_sysroot() { # DIR VERSION
  local sysroot=$1 version=$2 tree="$work/tree-$2" commit
  mkdir -p "$sysroot"
  ostree admin init-fs "$sysroot" >/dev/null
  ostree config --repo="$sysroot/ostree/repo" set sysroot.bootloader none
  ostree admin --sysroot="$sysroot" os-init debian >/dev/null
  os_tree "$tree" "$version"
  commit=$(ostree commit --repo="$sysroot/ostree/repo" --branch=demo/os --tree=dir="$tree" \
    --add-metadata-string=version="$version" --subject "OS $version")
  ostree admin --sysroot="$sysroot" deploy --os=debian --karg=root=LABEL=root \
    --karg=console=ttyS0,115200 demo/os >/dev/null
  cat >"$sysroot/.ibu-sandbox.yaml" <<EOF
# the deployment that plays "booted" in this directory sysroot (ibu's documented test seam)
booted:
  stateroot: debian
  checksum: $commit
  serial: 0
EOF
  # how both hosts mount their container storage (compared by Prep's checks, as LCA does)
  local etc="$sysroot/ostree/deploy/debian/deploy/$commit.0/etc"
  mkdir -p "$etc/systemd/system"
  printf '[Mount]\nWhat=/dev/disk/by-partlabel/varlibcontainers\nWhere=/var/lib/containers\nType=xfs\n' \
    >"$etc/systemd/system/var-lib-containers.mount"
  echo "$commit"
}

# A loop-mounted xfs of SIZE at the sysroot's /var/lib/containers.
container_storage() { # SYSROOT SIZE
  local target="$1/ostree/deploy/debian/var/lib/containers" img loop
  img="$work/$(basename "$1")-containers.img"
  mkdir -p "$target"
  truncate -s "$2" "$img"
  mkfs.xfs -q "$img"
  loop=$(losetup -f --show "$img")
  loops+=("$loop")
  mount "$loop" "$target"
  mounts+=("$target")
}

head -c 4M /dev/urandom >"$work/kernel"
head -c 8M /dev/urandom >"$work/initramfs"
mkdir -p "$work/payload"
for i in $(seq 1 48); do head -c 1M /dev/urandom >"$work/payload/part$i"; done

say "a registry on 127.0.0.1 with htpasswd auth (Debian's docker-registry)"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
registry="127.0.0.1:$port"
mkdir -p "$work/registry/data"
htpasswd -Bbn demo demo-pass >"$work/registry/htpasswd"
cat >"$work/registry/config.yml" <<EOF
version: 0.1
storage: {filesystem: {rootdirectory: $work/registry/data}, delete: {enabled: true}}
http: {addr: "$registry"}
auth: {htpasswd: {realm: ibu-demo, path: $work/registry/htpasswd}}
log: {level: error}
EOF
docker-registry serve "$work/registry/config.yml" >"$work/registry/log" 2>&1 &
registry_pid=$!
for _ in $(seq 50); do
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://$registry/v2/" || true)
  [ "$code" = 401 ] && break
  sleep 0.2
done
[ "$code" = 401 ] || { cat "$work/registry/log"; echo "registry did not start" >&2; exit 1; }
auth=$(printf 'demo:demo-pass' | base64 -w0)
(umask 077; printf '{"auths":{"%s":{"auth":"%s"}}}\n' "$registry" "$auth" >"$work/auth.json")
echo "registry at $registry"

say "the seed host: OS 1.1.0 configured by its admin, with two application images"
seed_sysroot="$work/seed"
seed_commit=$(make_sysroot "$seed_sysroot" 1.1.0)
container_storage "$seed_sysroot" 300M
seed_etc="$seed_sysroot/ostree/deploy/debian/deploy/$seed_commit.0/etc"
printf 'listen = 9090\n' >"$seed_etc/app/app.conf"     # changed from the OS default
printf 'Welcome to the fleet\n' >"$seed_etc/motd"       # added
echo seed-host >"$seed_etc/hostname"                    # site data: never enters a seed
mkdir -p "$seed_sysroot/ostree/deploy/debian/var/lib/demo-app"
echo "state the workloads need" >"$seed_sysroot/ostree/deploy/debian/var/lib/demo-app/data"
mapfile -t seed_podman < <("$ibu" --sysroot "$seed_sysroot" internals podman-args)
runroots+=("${seed_podman[3]}")
for app in web db; do
  ctr=$(buildah "${seed_podman[@]}" from scratch)
  head -c 2M /dev/urandom >"$work/$app.bin"
  buildah "${seed_podman[@]}" copy "$ctr" "$work/$app.bin" /app >/dev/null
  buildah "${seed_podman[@]}" commit --quiet "$ctr" "$registry/apps/$app:1.0" >/dev/null
  buildah "${seed_podman[@]}" rm "$ctr" >/dev/null
  buildah "${seed_podman[@]}" push --quiet --tls-verify=false --authfile "$work/auth.json" "$registry/apps/$app:1.0"
  # a seed host runs what it pulled, so the registry's digests name its images
  podman "${seed_podman[@]}" rmi -f "$registry/apps/$app:1.0" >/dev/null
  podman "${seed_podman[@]}" pull -q --tls-verify=false --authfile "$work/auth.json" "$registry/apps/$app:1.0" >/dev/null
done
podman "${seed_podman[@]}" images

say "ibu seed create: the seed image, pushed with the authfile"
seed_image="$registry/seeds/node:1.1.0"
"$ibu" --sysroot "$seed_sysroot" seed create --image "$seed_image" --authfile "$work/auth.json" --tls-verify=false
"$ibu" --sysroot "$seed_sysroot" seed status

say "the target: OS 1.0.0, container storage at 70%, the pull secret as a drop-in"
sysroot="$work/target"
make_sysroot "$sysroot" 1.0.0 >/dev/null
container_storage "$sysroot" 300M
etc="$(ls -d "$sysroot"/ostree/deploy/debian/deploy/*.0)/etc"
mkdir -p "$etc/containers" "$etc/ibu/secrets/openshift-lifecycle-agent"
printf '[[registry]]\nlocation = "%s"\ninsecure = true\n' "$registry" >"$etc/containers/registries.conf"
(umask 077; cat >"$etc/ibu/secrets/openshift-lifecycle-agent/seed-pull-secret.yaml" <<EOF
apiVersion: v1
kind: Secret
metadata:
  name: seed-pull-secret
  namespace: openshift-lifecycle-agent
type: kubernetes.io/dockerconfigjson
data:
  .dockerconfigjson: $(base64 -w0 <"$work/auth.json")
EOF
)
mapfile -t podman_args < <("$ibu" --sysroot "$sysroot" internals podman-args)
runroots+=("${podman_args[3]}")
for i in 1 2 3 4 5 6; do
  ctr=$(buildah "${podman_args[@]}" from scratch)
  head -c 24M /dev/urandom >"$work/old.bin"
  buildah "${podman_args[@]}" copy "$ctr" "$work/old.bin" /payload >/dev/null
  buildah "${podman_args[@]}" commit --quiet --timestamp $((1700000000 + i * 3600)) "$ctr" "localhost/old$i:latest" >/dev/null
  buildah "${podman_args[@]}" rm "$ctr" >/dev/null
done
podman "${podman_args[@]}" create --name in-use localhost/old1:latest /payload >/dev/null
head -c 20M /dev/urandom >"$sysroot/ostree/deploy/debian/var/lib/containers/other-data"
df -h "$sysroot/ostree/deploy/debian/var/lib/containers" | tail -1
cat >"$etc/ibu/upgrade.yaml" <<EOF
# yaml-language-server: \$schema=$PWD/schemas/imagebasedupgrade.schema.json
apiVersion: lca.openshift.io/v1
kind: ImageBasedUpgrade
metadata:
  name: upgrade
  annotations:
    image-cleanup.lca.openshift.io/disk-usage-threshold-percent: "40"
spec:
  stage: Idle   # ibu set-stage edits this line and keeps the comments
  seedImageRef:
    image: $seed_image
    version: 1.1.0
    pullSecretRef:
      name: seed-pull-secret
EOF
converge "$sysroot"
ostree admin --sysroot="$sysroot" status >"$work/before"
ostree --repo="$sysroot/ostree/repo" refs | sort >>"$work/before"
ls "$sysroot/ostree/deploy" >>"$work/before"
"$ibu" --sysroot "$sysroot" status

say "stage: Prep (ibu seed inspect first: the seed against this host, labels only)"
"$ibu" --sysroot "$sysroot" seed inspect "$seed_image" --authfile "$work/auth.json" --tls-verify=false --version 1.1.0
"$ibu" --sysroot "$sysroot" set-stage Prep
"$ibu" --sysroot "$sysroot" plan
converge "$sysroot"
"$ibu" --sysroot "$sysroot" status
ostree admin --sysroot="$sysroot" status
new_etc="$(ls -d "$sysroot"/ostree/deploy/debian_1.1.0/deploy/*.0)/etc"
echo "new deployment's /etc/app/app.conf: $(cat "$new_etc/app/app.conf")"
echo "new deployment's /etc/motd: $(cat "$new_etc/motd")"
echo "new stateroot's /var/lib/demo-app/data: $(cat "$sysroot/ostree/deploy/debian_1.1.0/var/lib/demo-app/data")"
podman "${podman_args[@]}" images
"$ibu" --sysroot "$sysroot" status -o json | python3 -c '
import json, sys
doc = json.load(sys.stdin)
done = {c["type"]: c for c in doc["status"]["conditions"]}
c = done.get("PrepCompleted", {})
assert c.get("status") == "True", f"PrepCompleted is not True: {c}"
print("PrepCompleted:", c["message"], "| validNextStages:", doc["status"]["validNextStages"])
'

say "stage: Idle aborts: the new stateroot, its objects and ibu's workspace go; images stay"
"$ibu" --sysroot "$sysroot" set-stage Idle
converge "$sysroot"
"$ibu" --sysroot "$sysroot" status
ostree admin --sysroot="$sysroot" status >"$work/after"
ostree --repo="$sysroot/ostree/repo" refs | sort >>"$work/after"
ls "$sysroot/ostree/deploy" >>"$work/after"
if diff -u "$work/before" "$work/after"; then
  echo "deployments, refs and stateroots are as before Prep"
else
  echo "the sysroot differs from before Prep" >&2
  exit 1
fi
