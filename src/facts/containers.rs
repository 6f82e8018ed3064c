//! Container storage facts: the images, which of them containers use, and CRI-O's pins.
//!
//! Gathered through podman (see [`crate::images::podman`]) against the storage of the given
//! [`Paths`], and from CRI-O's configuration under the booted deployment's `/etc`. All three
//! parts are needed together: a list of images without the in-use and pinned information would
//! make every image look removable, so any part failing fails the whole group rather than
//! returning something partial.

use anyhow::{Context, Result};

use super::ContainerFacts;
use crate::images::{pinned, podman::Podman};
use crate::paths::Paths;

/// Read the images, the images used by any container, and the pinned patterns.
pub fn gather(paths: &Paths) -> Result<ContainerFacts> {
    let podman = Podman::new(paths)?;
    let images = podman.images().context("listing container images")?;
    let in_use = podman
        .container_image_ids()
        .context("listing the images containers use")?;
    let pinned_patterns = pinned::read(&paths.etc).context("reading CRI-O's pinned images")?;
    Ok(ContainerFacts {
        images,
        in_use,
        pinned_patterns,
    })
}
