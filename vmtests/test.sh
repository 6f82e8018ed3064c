#!/usr/bin/env bash
# Run every test of ibu on a Debian 12 machine, installing what they need first: formatting,
# lints, unit and integration tests of the whole workspace, then the VM scenarios in QEMU
# (vmtests/README.md; the images are cached outside the clone, the first build takes a while).
# Usage: sudo vmtests/test.sh        (root: tests mount filesystems and use podman storage)
#        IBU_VMTESTS_SCENARIOS="first-boot ..." picks the scenarios (default: the CI set);
#        IBU_VMTESTS_SCENARIOS=none skips the VMs.
set -euo pipefail
cd "$(dirname "$0")/.."

vmtests/setup-host.sh

echo "== cargo fmt --check" >&2
cargo fmt --all -- --check
echo "== cargo clippy" >&2
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test" >&2
cargo test --workspace --all-targets --locked

scenarios=${IBU_VMTESTS_SCENARIOS:-first-boot prep upgrade rollback}
if [ "$scenarios" != none ]; then
  echo "== VM scenarios: $scenarios" >&2
  # shellcheck disable=SC2086 # a list of names
  cargo run -p ibu-vmtests --release --locked -- run $scenarios
fi
