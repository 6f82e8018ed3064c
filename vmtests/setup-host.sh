#!/usr/bin/env bash
# Install what ibu's build, tests and demo need on a Debian 12 machine. Idempotent: installs only
# what is missing. Needs root (re-runs itself with sudo if it can).
set -euo pipefail

packages=(
  # build: libostree through the ostree crate
  pkg-config libglib2.0-dev libostree-dev
  # ostree sysroots, container storage, registries
  ostree podman buildah skopeo uidmap fuse-overlayfs
  docker-registry apache2-utils
  # filesystems for container storage tests and VM disks
  xfsprogs e2fsprogs gdisk util-linux tar attr
  # test registries use TLS certificates made by openssl
  openssl
  # the VM tests' workload images hold a static busybox
  busybox-static
  # unit files are checked with systemd-analyze
  systemd
  # Ignition configs are validated with ignition-validate
  ignition
  # benchmarks
  hyperfine
  # the VM tests: images (mmdebstrap, ostree, extlinux, GPT), QEMU, SSH into the guests
  mmdebstrap gpg ostree-boot extlinux syslinux-common qemu-system-x86 qemu-utils openssh-client
)

if [ "$(id -u)" -ne 0 ]; then
  exec sudo --preserve-env=PATH "$0" "$@"
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup-host: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup-host: cargo not found; install Rust (https://rustup.rs) first" >&2
  exit 1
fi
