#!/bin/bash
# ibu-ostree-ignition-var mount|umount — in the initramfs, after ostree-prepare-root.
set -euo pipefail
case "${1:-}" in
mount)
    if mountpoint -q /sysroot/var; then exit 0; fi
    # ostree=/ostree/boot.N/<stateroot>/<checksum>/<serial> links (relative) to the deployment.
    karg=$(tr ' ' '\n' </proc/cmdline | sed -n 's/^ostree=//p' | tail -n 1)
    deployment=$(readlink -f "/sysroot/sysroot$karg")
    var="$(dirname "$(dirname "$deployment")")/var"
    if [ ! -d "$var" ]; then
        echo "ibu-ostree-ignition-var: no stateroot /var at $var (ostree=$karg)" >&2
        exit 1
    fi
    mount --bind "$var" /sysroot/var
    # What tmpfiles.d creates at boot, needed earlier by Ignition: root's home (~/.ssh) and
    # /usr/local (a link to /var/usrlocal) for files like /usr/local/bin/ibu.
    install -d -m 0700 /sysroot/var/roothome
    install -d -m 0755 /sysroot/var/usrlocal /sysroot/var/usrlocal/bin
    echo "ibu-ostree-ignition-var: $var mounted on /sysroot/var for Ignition"
    ;;
umount)
    if mountpoint -q /sysroot/var; then umount /sysroot/var; fi
    ;;
*)
    echo "usage: $0 mount|umount" >&2
    exit 2
    ;;
esac
