//! `containers.list`: the images a target precaches before it pivots into the seed's OS.
//!
//! Every named image in the seed's container storage, one pull-spec per line. A tagged name is
//! pinned to its digest (`repo:tag@sha256:...`) when the storage knows a digest for that
//! repository: a target pulls exactly the seed's image (by digest) even if the tag moved since,
//! and then gives it the tag, so workloads that name `repo:tag` find it; otherwise the name
//! (`repo:tag`) is used as is. Images without a name (dangling layers of rebuilt tags,
//! intermediate build images) cannot be pulled by anyone and are skipped.
//!
//! An image built on the seed itself (`localhost/...`) cannot be pulled by a target; it is
//! listed (the operator may push it under that name to a mirror) and warned about. So is an
//! image whose digest podman computed locally: it matches the registry's only if the image was
//! pushed without being recompressed.

use std::collections::{BTreeSet, HashSet};

use crate::facts::{ContainerFacts, ImageFacts};

/// The result: the sorted, unique pull-specs and the bytes of the images they name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainersList {
    pub specs: Vec<String>,
    /// Number of distinct images listed.
    pub images: u64,
    /// Sum of their sizes, each image once.
    pub bytes: u64,
    pub warnings: Vec<String>,
}

impl ContainersList {
    /// The content of `containers.list`: one pull-spec per line.
    pub fn file(&self) -> String {
        let mut out = String::new();
        for s in &self.specs {
            out.push_str(s);
            out.push('\n');
        }
        out
    }
}

/// Build the list from the container facts.
pub fn containers_list(facts: &ContainerFacts) -> ContainersList {
    let mut specs = BTreeSet::new();
    let mut counted = HashSet::new();
    let mut out = ContainersList::default();
    for image in &facts.images {
        let image_specs = pull_specs(image);
        if image_specs.is_empty() {
            continue;
        }
        if counted.insert(image.id.as_str()) {
            out.images += 1;
            out.bytes = out.bytes.saturating_add(image.size);
        }
        for s in image_specs {
            if s.starts_with("localhost/") {
                out.warnings.push(format!(
                    "image {s} was built on the seed host (localhost/); targets cannot pull it \
                     unless it is pushed to a registry they reach under that name"
                ));
            }
            specs.insert(s);
        }
    }
    out.specs = specs.into_iter().collect();
    out
}

/// The pull-specs of one image: each name, pinned to a digest of its repository when known.
/// An image with no name but with digests is listed by digest; a dangling image not at all.
pub fn pull_specs(image: &ImageFacts) -> Vec<String> {
    if image.dangling && image.names.is_empty() {
        return Vec::new();
    }
    if image.names.is_empty() {
        return image.digests.clone();
    }
    image
        .names
        .iter()
        .map(|name| {
            let repo = repository(name);
            match image
                .digests
                .iter()
                .find_map(|d| d.split_once('@').filter(|(r, _)| *r == repo))
            {
                // `repo:tag@digest`: the digest decides what is pulled, the tag what it is called.
                Some((_, digest)) if !name.contains('@') => format!("{name}@{digest}"),
                Some(_) => name.clone(),
                None => name.clone(),
            }
        })
        .collect()
}

/// The repository of `registry/repo:tag` or `registry/repo@digest` (a `:` after the last `/`
/// starts the tag; one before it belongs to a registry port).
fn repository(name: &str) -> &str {
    let name = name.split_once('@').map_or(name, |(r, _)| r);
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[last_slash..].find(':') {
        Some(i) => &name[..last_slash + i],
        None => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(id: &str, names: &[&str], digests: &[&str], size: u64, dangling: bool) -> ImageFacts {
        ImageFacts {
            id: id.into(),
            names: names.iter().map(|s| s.to_string()).collect(),
            digests: digests.iter().map(|s| s.to_string()).collect(),
            created: 0,
            size,
            dangling,
        }
    }

    #[test]
    fn repository_of_names() {
        for (name, repo) in [
            ("quay.io/a/b:1", "quay.io/a/b"),
            ("registry:5000/a/b:1", "registry:5000/a/b"),
            ("registry:5000/a/b", "registry:5000/a/b"),
            ("quay.io/a/b@sha256:00", "quay.io/a/b"),
            ("b:latest", "b"),
        ] {
            assert_eq!(repository(name), repo, "{name}");
        }
    }

    #[test]
    fn list_rules() {
        let d1 = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
        let facts = ContainerFacts {
            images: vec![
                // Two names in two repositories, a digest for one of them.
                image(
                    "a",
                    &["quay.io/x/app:1", "mirror:5000/x/app:1"],
                    &[&format!("quay.io/x/app@{d1}")],
                    100,
                    false,
                ),
                // Named without digest.
                image("b", &["quay.io/x/tool:2"], &[], 50, false),
                // Dangling.
                image("c", &[], &[], 1000, true),
                // Digest only.
                image("d", &[], &[&format!("quay.io/x/base@{d1}")], 10, false),
                // Same spec as image a: listed once.
                image("e", &["quay.io/x/tool:2"], &[], 7, false),
                image("f", &["localhost/built:1"], &[], 1, false),
            ],
            in_use: vec![],
            pinned_patterns: vec![],
        };
        let l = containers_list(&facts);
        assert_eq!(
            l.specs,
            [
                "localhost/built:1".to_string(),
                "mirror:5000/x/app:1".to_string(),
                format!("quay.io/x/app:1@{d1}"),
                format!("quay.io/x/base@{d1}"),
                "quay.io/x/tool:2".to_string(),
            ]
        );
        assert_eq!(l.images, 5);
        assert_eq!(l.bytes, 100 + 50 + 10 + 7 + 1);
        assert_eq!(l.warnings.len(), 1, "{:?}", l.warnings);
        assert!(l.warnings[0].contains("localhost/built:1"));
        assert_eq!(l.file().lines().count(), 5);
        assert!(l.file().ends_with("quay.io/x/tool:2\n"));
    }
}
