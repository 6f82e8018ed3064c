//! Test support shared by the integration tests (`mod common;`).
//!
//! Integration tests run ibu against **real directory sysroots** made by the real `ostree` CLI,
//! not against hand-made directory trees: libostree decides what a deployment, a boot entry and
//! an origin look like, and a fixture that imitates them would test the imitation. A small
//! sysroot with two stateroots builds in a fraction of a second.
//!
//! - [`TestSysroot`] builds one: `ostree admin init-fs`, `sysroot.bootloader none`, commits of
//!   small "bootable" trees ([`CommitSpec`]), `ostree admin os-init` and `ostree admin deploy`
//!   ([`Deploy`]), then names the deployment that plays "booted" in the sandbox file
//!   ([`TestSysroot::boot`]). [`TestSysroot::standard`] is the usual two-stateroot scene.
//! - [`seed::Scene`] is a configured seed host for the seed collection tests.
//! - [`TestSysroot::mount_container_storage`] mounts a real filesystem ([`TestFs`]) on the
//!   sandbox's `/var/lib/containers`; [`Mount`] unmounts on drop.
//! - [`TestRegistry`] runs a real registry (`docker-registry` with htpasswd auth, TLS or plain
//!   HTTP) and pushes images into it with skopeo; see [`registry`].
//!
//! Requirements: root (deployments get the immutable attribute, mounts need `CAP_SYS_ADMIN`), the
//! `ostree` CLI, and for [`TestFs::Xfs`] `mkfs.xfs` and a free loop device. Everything is removed
//! when the [`TestSysroot`] is dropped (mounts first, then the immutable bits, then the files).
//! A test process that is killed (not one that fails: a panic unwinds and drops) leaves its
//! mounts behind; find them with `grep ibu-sysroot- /proc/self/mountinfo` and `umount` them.
#![allow(dead_code)]

pub mod mount;
pub mod registry;
pub mod seed;
pub mod snapshot;
pub mod sysroot;

#[allow(unused_imports)]
pub use mount::{Mount, TestFs};
#[allow(unused_imports)]
pub use registry::{RegistryOpts, TestRegistry};
#[allow(unused_imports)]
pub use sysroot::{Commit, CommitSpec, Deploy, Deployed, Standard, TestSysroot};

use anyhow::{Context, Result, bail};

/// Run an xshell command quietly, capturing its output; on failure the error carries the command
/// line, the exit status and stderr (the tools here explain themselves on stderr). Returns stdout.
pub fn run(cmd: xshell::Cmd<'_>) -> Result<String> {
    let shown = cmd.to_string();
    let out = cmd
        .quiet()
        .ignore_status()
        .output()
        .with_context(|| format!("starting {shown}"))?;
    if !out.status.success() {
        bail!(
            "`{shown}` failed with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout).with_context(|| format!("output of `{shown}` is not UTF-8"))
}

/// A shell for [`run`] and `xshell::cmd!`.
pub fn sh() -> Result<xshell::Shell> {
    xshell::Shell::new().context("creating an xshell shell")
}
