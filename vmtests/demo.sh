#!/usr/bin/env bash
# The main job, end to end in QEMU VMs: a seed VM running OS 1.1.0 makes a seed with
# `ibu seed create` and pushes it to Debian's docker-registry on the host (htpasswd auth); a
# target VM running OS 1.0.0, provisioned by Ignition (shared xfs /var/lib/containers, ibu's
# binary and units, the desired state and the pull secret), is asked for `stage: Prep` by
# editing one field of /etc/ibu/upgrade.yaml; ibu converges by itself to PrepCompleted (the new
# stateroot deployed beside the running one, the seed's images precached); then `stage: Upgrade`:
# ibu reboots the node into the new stateroot by itself and completes the upgrade there
# (UpgradeCompleted), keeping the node's identity and a workload's data; `stage: Idle`
# finalizes (the old stateroot removed). Every step is checked on the real node.
#
# The images are built on the first run (about 6-9 minutes) and cached in /var/cache/ibu-vmtests;
# the demo itself takes about 13 minutes under TCG. Logs: target/vmtests/runs/<time>/.
# Usage: sudo vmtests/demo.sh          (the same on directory sysroots in 25 s: demo-sysroot.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

vmtests/setup-host.sh
exec cargo run -p ibu-vmtests --release --locked -- run upgrade
