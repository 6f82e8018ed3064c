//! Which wanted images are already in container storage, decided from one listing.
//!
//! LCA pulls every image of `containers.list` even when it is present, and asks
//! `podman image exists` afterwards; each question is a podman process (tens of milliseconds),
//! each needless pull a registry round trip. ibu lists the storage once
//! (`podman images --format json`) and answers every question from that list, so the check for
//! a hundred images costs one podman run (see `benches/precache.rs`).
//!
//! The answers must be podman's, so references are compared in the normalised form
//! containers/image gives them (`reference.ParseNormalizedNamed` + `TagNameOnly`), on both
//! sides — the wanted pull-specs and the names and digests in storage:
//!
//! * no registry domain (the first component has no `.` or `:`, is not `localhost` and has no
//!   uppercase letter) means Docker Hub, `docker.io`; `index.docker.io` is `docker.io` too;
//! * on Docker Hub a one-component path is an official image, `library/<name>`;
//! * `localhost` (and `localhost:PORT`) is a registry domain like any other, so `localhost/app`
//!   is not Docker Hub's `library/localhost/app`, and is exactly what podman stores for a
//!   locally built `app`;
//! * no tag and no digest means `:latest`;
//! * a reference with a digest is looked up by `repo@digest` only, tag or not (libimage drops
//!   the tag of a tagged-and-digested reference the same way), and matches an image whose
//!   repo digests — or, for an image pulled by digest, whose names — contain exactly that;
//! * a transport prefix `docker://` is dropped.
//!
//! A tag is taken as present when an image carries that name, even if the tag has moved in the
//! registry since: the seed's list names what the seed cluster ran, and `podman image exists`
//! (LCA's own check) answers the same. Domains are compared as written, as containers/image
//! does. Short names are *not* resolved through `registries.conf` search registries: precache
//! pulls the normalised, fully qualified name, so the question asked is about that name.

use std::collections::HashSet;

use crate::facts::{ContainerFacts, ImageFacts};
use crate::spec::{ImageRef, ImageRefError};

/// Docker Hub as normalised references name it.
const DOCKER_HUB: &str = "docker.io";
/// Docker Hub's legacy name, normalised to [`DOCKER_HUB`].
const DOCKER_HUB_LEGACY: &str = "index.docker.io";
/// Docker Hub's namespace for one-component ("official") image names.
const OFFICIAL_NAMESPACE: &str = "library";
/// The tag of a reference that has neither tag nor digest.
const DEFAULT_TAG: &str = "latest";

/// The normalised pull-spec of `r`: `domain/path:tag` or, when it has a digest,
/// `domain/path@algorithm:hex`. Two references naming the same image in storage have the same
/// normalised form, and it is what precache passes to `podman pull`.
pub fn normalized(r: &ImageRef) -> String {
    let domain = match r.domain.as_deref() {
        None | Some(DOCKER_HUB_LEGACY) => DOCKER_HUB,
        Some(d) => d,
    };
    let mut s = String::with_capacity(domain.len() + r.path.len() + 80);
    s.push_str(domain);
    s.push('/');
    if domain == DOCKER_HUB && !r.path.contains('/') {
        s.push_str(OFFICIAL_NAMESPACE);
        s.push('/');
    }
    s.push_str(&r.path);
    match (&r.digest, &r.tag) {
        (Some(d), _) => {
            s.push('@');
            s.push_str(d);
        }
        (None, t) => {
            s.push(':');
            s.push_str(t.as_deref().unwrap_or(DEFAULT_TAG));
        }
    }
    s
}

/// Parse and normalise one pull-spec (see [`normalized`]).
pub fn normalize(spec: &str) -> Result<String, ImageRefError> {
    ImageRef::parse(spec).map(|r| normalized(&r))
}

/// Everything the images in storage can be found by: their names and repo digests, each
/// normalised. Built once from one listing, then asked per wanted image.
#[derive(Debug, Clone, Default)]
pub struct Present {
    refs: HashSet<String>,
}

impl Present {
    pub fn of(images: &[ImageFacts]) -> Present {
        let refs = images
            .iter()
            .flat_map(|i| i.names.iter().chain(&i.digests))
            // podman only stores names it could parse; anything else could not match anyway.
            .filter_map(|n| normalize(n).ok())
            .collect();
        Present { refs }
    }

    /// Whether the image `normalized_spec` (a [`normalized`] pull-spec) is in storage.
    pub fn contains(&self, normalized_spec: &str) -> bool {
        self.refs.contains(normalized_spec)
    }
}

/// One wanted image: as written in the list, and normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted<'a> {
    /// The pull-spec as the caller wrote it (what reports and logs name).
    pub image: &'a str,
    /// The [`normalized`] pull-spec (what is matched and pulled).
    pub pull_spec: String,
}

/// A wanted entry that is not an image reference at all; it cannot be matched or pulled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid<'a> {
    pub image: &'a str,
    pub error: ImageRefError,
}

/// The wanted images sorted by what precache must do with them. Each distinct image (by
/// normalised pull-spec; invalid entries by their text) is in exactly one list, once, in the
/// order of its first appearance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Missing<'a> {
    /// Not in storage: to pull.
    pub to_pull: Vec<Wanted<'a>>,
    /// Already in storage: skipped without contacting the registry.
    pub present: Vec<Wanted<'a>>,
    /// Not parseable as image references.
    pub invalid: Vec<Invalid<'a>>,
    /// Entries dropped because an earlier entry named the same image.
    pub duplicates: usize,
}

impl Missing<'_> {
    /// How many wanted images were skipped as present.
    pub fn skipped(&self) -> usize {
        self.present.len()
    }

    /// Distinct wanted images (duplicates counted once).
    pub fn total(&self) -> usize {
        self.to_pull.len() + self.present.len() + self.invalid.len()
    }
}

/// Which of `wanted` are not in the storage that `facts` lists (only `facts.images` is read).
pub fn missing<'a>(wanted: &'a [String], facts: &ContainerFacts) -> Missing<'a> {
    let present = Present::of(&facts.images);
    let mut seen: HashSet<String> = HashSet::with_capacity(wanted.len());
    let mut out = Missing::default();
    for image in wanted {
        let image = image.as_str();
        match ImageRef::parse(image) {
            Ok(r) => {
                let pull_spec = normalized(&r);
                if !seen.insert(pull_spec.clone()) {
                    out.duplicates += 1;
                } else if present.contains(&pull_spec) {
                    out.present.push(Wanted { image, pull_spec });
                } else {
                    out.to_pull.push(Wanted { image, pull_spec });
                }
            }
            Err(error) => {
                // `@` cannot start a normalised pull-spec, so this key never meets a valid one.
                if seen.insert(format!("@{image}")) {
                    out.invalid.push(Invalid { image, error });
                } else {
                    out.duplicates += 1;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn image(id: &str, names: &[&str], digests: &[&str]) -> ImageFacts {
        ImageFacts {
            id: id.into(),
            names: names.iter().map(|s| s.to_string()).collect(),
            digests: digests.iter().map(|s| s.to_string()).collect(),
            created: 0,
            size: 0,
            dangling: false,
        }
    }

    /// What podman 4.3 lists after pulls, `podman tag` and a local build.
    fn storage() -> ContainerFacts {
        ContainerFacts {
            images: vec![
                // podman pull busybox (stored fully qualified, with its repo digest)
                image(
                    "a",
                    &[
                        "docker.io/library/busybox:latest",
                        "docker.io/library/busybox:1.36",
                    ],
                    &[&format!("docker.io/library/busybox@{D1}")],
                ),
                // podman pull quay.io/team/app@D2: named by digest, no tag
                image(
                    "b",
                    &[&format!("quay.io/team/app@{D2}")],
                    &[&format!("quay.io/team/app@{D2}")],
                ),
                // buildah commit app → localhost/app:latest
                image("c", &["localhost/app:latest"], &[]),
                // a registry with a port, a user image on Docker Hub
                image(
                    "d",
                    &["registry.local:5000/ns/tool:v2", "docker.io/someone/tool:3"],
                    &[],
                ),
                // dangling: no names, nothing can match it
                image("e", &[], &[]),
            ],
            ..ContainerFacts::default()
        }
    }

    #[test]
    fn normalisation_table() {
        let cases: Vec<(String, String)> = [
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            ("library/busybox", "docker.io/library/busybox:latest"),
            ("docker.io/busybox", "docker.io/library/busybox:latest"),
            ("index.docker.io/busybox:1", "docker.io/library/busybox:1"),
            ("index.docker.io/team/x", "docker.io/team/x:latest"),
            ("docker://busybox", "docker.io/library/busybox:latest"),
            ("someone/tool", "docker.io/someone/tool:latest"),
            ("localhost/app", "localhost/app:latest"),
            ("localhost:5000/app:1", "localhost:5000/app:1"),
            // a one-component name is a repository, never a domain
            ("localhost", "docker.io/library/localhost:latest"),
            ("quay.io/team/app", "quay.io/team/app:latest"),
            (
                "registry.local:5000/ns/tool:v2",
                "registry.local:5000/ns/tool:v2",
            ),
            ("[fd00::1]:5000/seed", "[fd00::1]:5000/seed:latest"),
            // a domain-less name with a dot in a later component is still Docker Hub
            ("team/app.v2", "docker.io/team/app.v2:latest"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .chain([
            (
                format!("busybox@{D1}"),
                format!("docker.io/library/busybox@{D1}"),
            ),
            // the tag of a tagged-and-digested reference is dropped
            (
                format!("quay.io/team/app:v1@{D2}"),
                format!("quay.io/team/app@{D2}"),
            ),
        ])
        .collect();
        for (input, want) in cases {
            assert_eq!(normalize(&input).unwrap(), want, "{input}");
            // Normalising is idempotent: storage names go through the same function.
            assert_eq!(normalize(&want).unwrap(), want, "{want}");
        }
    }

    #[test]
    fn presence_table() {
        let facts = storage();
        // (wanted, present?)
        let cases: Vec<(String, bool)> = vec![
            ("busybox".into(), true),
            ("busybox:latest".into(), true),
            ("docker.io/library/busybox:1.36".into(), true),
            ("library/busybox:1.36".into(), true),
            ("index.docker.io/library/busybox".into(), true),
            ("docker://docker.io/busybox".into(), true),
            ("busybox:1.37".into(), false),
            (format!("busybox@{D1}"), true),
            (format!("docker.io/library/busybox:1.36@{D1}"), true),
            // a digest the image does not have, under a tag it does have: by digest, missing
            (format!("busybox:latest@{D2}"), false),
            // pulled by digest: present by digest, but it has no tag
            (format!("quay.io/team/app@{D2}"), true),
            ("quay.io/team/app".into(), false),
            // the same digest in another repository is another image reference
            (format!("quay.io/other/app@{D2}"), false),
            // localhost: stored as localhost/app, which Docker Hub's `app` is not
            ("localhost/app".into(), true),
            ("localhost/app:latest".into(), true),
            ("app".into(), false),
            ("localhost:5000/app".into(), false),
            ("registry.local:5000/ns/tool:v2".into(), true),
            ("registry.local/ns/tool:v2".into(), false),
            ("registry.local:5000/ns/tool".into(), false),
            ("someone/tool:3".into(), true),
            ("docker.io/someone/tool:3".into(), true),
            ("tool:3".into(), false),
        ];
        for (wanted, present) in cases {
            let list = vec![wanted.clone()];
            let m = missing(&list, &facts);
            assert_eq!(m.skipped(), usize::from(present), "{wanted}: {m:?}");
            assert_eq!(m.to_pull.len(), usize::from(!present), "{wanted}: {m:?}");
            assert!(m.invalid.is_empty());
        }
    }

    #[test]
    fn duplicates_count_once_and_order_is_kept() {
        let wanted: Vec<String> = vec![
            "quay.io/team/new:1".into(),
            "busybox".into(),
            "docker.io/library/busybox:latest".into(),
            "docker://quay.io/team/new:1".into(),
            "Not An Image".into(),
            "Not An Image".into(),
            "quay.io/team/other".into(),
            "quay.io/team/other:latest".into(),
        ];
        let m = missing(&wanted, &storage());
        assert_eq!(m.total(), 4);
        assert_eq!(m.duplicates, 4);
        assert_eq!(m.skipped(), 1);
        assert_eq!(m.present[0].image, "busybox", "first spelling is kept");
        let pulls: Vec<(&str, &str)> = m
            .to_pull
            .iter()
            .map(|w| (w.image, w.pull_spec.as_str()))
            .collect();
        assert_eq!(
            pulls,
            [
                ("quay.io/team/new:1", "quay.io/team/new:1"),
                ("quay.io/team/other", "quay.io/team/other:latest"),
            ]
        );
        assert_eq!(m.invalid.len(), 1);
        assert_eq!(m.invalid[0].image, "Not An Image");
        assert!(m.invalid[0].error.to_string().contains("whitespace"));
    }

    #[test]
    fn empty_storage_and_empty_list() {
        let none = ContainerFacts::default();
        let wanted = vec!["busybox".to_string()];
        assert_eq!(missing(&wanted, &none).to_pull.len(), 1);
        let m = missing(&[], &storage());
        assert_eq!(m, Missing::default());
        assert_eq!(m.total(), 0);
    }

    #[test]
    fn storage_names_podman_could_not_have_written_are_ignored() {
        let facts = ContainerFacts {
            images: vec![image("x", &["<none>:<none>", "Bad Name"], &["garbage"])],
            ..ContainerFacts::default()
        };
        let wanted = vec!["busybox".to_string()];
        assert_eq!(missing(&wanted, &facts).to_pull.len(), 1);
    }
}
