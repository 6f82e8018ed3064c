//! Seed images: what a golden host's OS, configuration and container images look like as an OCI
//! image ([`format`]), how ibu makes one on a seed host, and how a target reads one.

pub mod collect;
pub mod compat;
pub mod create;
pub mod fetch;
pub mod format;
pub mod inspect;
pub mod pack;
pub mod restore;
pub mod source;
pub mod status;
