//! ibu: image-based upgrades for ostree hosts.
//!
//! A declarative, single-shot reconciler: each run reads the desired state
//! ([`spec`]), observes the host ([`facts`]), asks the pure planner ([`plan`]) for at most one
//! step, executes it, records the result ([`status`]) and exits.

pub mod archive;
pub mod backup;
pub mod bootloader;
pub mod checks;
pub mod child;
pub mod cli;
pub mod edit;
pub mod facts;
pub mod fsutil;
pub mod humanize;
pub mod images;
pub mod lock;
pub mod logging;
pub mod manifests;
pub mod oci;
pub mod paths;
pub mod plan;
pub mod precache;
pub mod reboot;
pub mod reconcile;
pub mod registry;
pub mod render;
pub mod repo;
pub mod schema;
pub mod seed;
pub mod spec;
pub mod stage;
pub mod stateroot;
pub mod status;
pub mod steps;
pub mod sysroot;
pub mod systemd;
