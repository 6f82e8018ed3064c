//! ibu: image-based upgrades for ostree hosts.
//!
//! A declarative, single-shot reconciler: each run reads the desired state
//! ([`spec`]), observes the host ([`facts`]), asks the pure planner ([`plan`]) for at most one
//! step, executes it, records the result ([`status`]) and exits.

pub mod facts;
pub mod fsutil;
pub mod lock;
pub mod paths;
pub mod schema;
pub mod spec;
pub mod status;
