//! ibu's VM test suite: OS images built from Debian packages (cached by input hash), a QEMU
//! harness, Ignition provisioning, and the scenarios. See vmtests/README.md.

pub mod butane;
pub mod guest;
pub mod harness;
pub mod http;
pub mod ignition;
pub mod image;
pub mod registry;
pub mod report;
pub mod results;
pub mod scenarios;
pub mod vm;
pub mod workloads;

use std::path::PathBuf;

/// The repository root (the workspace this crate belongs to).
pub fn repo_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}
