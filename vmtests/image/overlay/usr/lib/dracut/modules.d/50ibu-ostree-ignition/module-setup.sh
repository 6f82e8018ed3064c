#!/bin/bash
# Glue between Ignition's dracut module (Debian's `ignition` package) and ostree's: on the
# first boot, Ignition writes into the deployment that ostree-prepare-root made /sysroot, with
# the stateroot's /var mounted where the booted system will have it.
check() { return 255; }   # only when asked for (dracut.conf.d/90-ibu-vm.conf)
depends() { echo ignition ostree; }
install() {
    # Debian's 30ignition (2.14 with dracut 059) links its units into
    # ignition-*.target.requires/ with ln_r "../unit", which dracut turns into dangling links
    # (../../../../../../unit). Point them at the units.
    local link
    for link in "$initdir$systemdsystemunitdir"/ignition-*.target.requires/*; do
        [ -L "$link" ] && [ ! -e "$link" ] && ln -sfn "../${link##*/}" "$link"
    done
    inst_multiple readlink dirname mountpoint install tr sed tail
    # systemd-networkd is in the initramfs (Ignition's module needs "network"); configure it
    # for the first boot only.
    inst_simple "$moddir/10-ibu-vm-firstboot.network" /etc/systemd/network/10-ibu-vm-firstboot.network
    inst_script "$moddir/ibu-ostree-ignition-var.sh" /usr/sbin/ibu-ostree-ignition-var
    inst_script "$moddir/setfiles-noop.sh" /usr/sbin/setfiles
    inst_simple "$moddir/ibu-ostree-ignition-var.service" \
        "$systemdsystemunitdir/ibu-ostree-ignition-var.service"
    # First boot only, like Ignition's own units on a disk install.
    mkdir -p "$initdir/$systemdsystemunitdir/ignition-diskful.target.requires"
    ln_r "$systemdsystemunitdir/ibu-ostree-ignition-var.service" \
        "$systemdsystemunitdir/ignition-diskful.target.requires/ibu-ostree-ignition-var.service"
}
