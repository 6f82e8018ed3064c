#!/usr/bin/env bash
# Run every test of ibu on a Debian 12 machine, installing what they need first.
# Usage: sudo vmtests/test.sh        (root: tests mount filesystems and use podman storage)
set -euo pipefail
cd "$(dirname "$0")/.."

vmtests/setup-host.sh

echo "== cargo fmt --check" >&2
cargo fmt --all -- --check
echo "== cargo clippy" >&2
cargo clippy --all-targets --locked -- -D warnings
echo "== cargo test" >&2
cargo test --all-targets --locked
