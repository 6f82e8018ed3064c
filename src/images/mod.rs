//! Container images on the node: listing them, CRI-O's pinned patterns, and freeing space.
//!
//! Before Prep pulls a multi-gigabyte seed and precaches its images, LCA deletes unused images
//! when `/var/lib/containers` is fuller than a threshold, because a Prep that runs out of space
//! halfway leaves a half-written stateroot behind. ibu keeps that behaviour (see
//! `reference/lca-behaviour.md` §4 step 5) and splits it the way the rest of ibu is split:
//!
//! * [`podman`] is the only place that runs podman: the right storage flags for a booted host or
//!   a directory sysroot, JSON parsing, and error messages that carry podman's own stderr.
//! * [`pinned`] reads CRI-O's `pinned_images` the way CRI-O does and matches names against them;
//!   pure, so every pattern rule has a table test.
//! * [`cleanup`] picks the removal candidates (pure) and runs the batched deletion (the step
//!   executor), returning a report instead of failing Prep.
//!
//! Gathering the facts ([`crate::facts::containers`]) uses all three; nothing here decides *when*
//! to clean up, that is the planner's job.

pub mod cleanup;
pub mod pinned;
pub mod podman;
