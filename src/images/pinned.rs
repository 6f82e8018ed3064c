//! CRI-O's pinned images: which images the image cleanup must never remove.
//!
//! LCA asks CRI-O (`crictl images -o json`, the `pinned` flag). ibu reads the same configuration
//! CRI-O reads and applies CRI-O's rules itself, so it also works when CRI-O is stopped and in a
//! directory sysroot. The rules, from crio.conf(5), crio.conf.d(5) and CRI-O's implementation
//! (`CompileRegexpsForPinnedImages`, `UpdateFromPath`):
//!
//! * **Where**: `/etc/crio/crio.conf` first, then every file under `/etc/crio/crio.conf.d`,
//!   walked recursively in lexical order (CRI-O reads every file there, whatever its extension).
//!   Each file is TOML; the option lives in the `[crio.image]` table.
//! * **Precedence**: an option set in a later file replaces the earlier value; lists are *not*
//!   merged. `pinned_images = []` in a later file unpins everything pinned before.
//! * **The pause image**: CRI-O adds the configured `pause_image` to the pinned list.
//! * **Patterns**, all case-insensitive like CRI-O's `(?i)` regexps:
//!   - exact: the whole name must match;
//!   - glob, a trailing `*` (`quay.io/openshift/*`): documented as "a wildcard at the end". CRI-O
//!     compiles it to an *unanchored* regexp, so a name containing the text before the `*`
//!     anywhere is pinned. ibu follows CRI-O's behaviour, not the narrower reading: the cleanup
//!     must never delete an image CRI-O reports as pinned, and LCA relies on CRI-O's answer;
//!   - keyword, `*` at both ends (`*etcd*`): the text anywhere in the name.
//!
//!   A `*` anywhere else is a literal character (CRI-O quotes it), and `*` alone pins everything.
//!
//! What is matched: every name of the image (tags and digested names, which is what CRI-O
//! matches), and, as ibu's addition, its ID, so a pattern naming an image ID pins it too.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::facts::ImageFacts;

/// One `pinned_images` entry, classified the way CRI-O classifies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// The whole name, case-insensitively.
    Exact(String),
    /// `text*`: the name contains `text` (unanchored, as CRI-O compiles it).
    Glob(String),
    /// `*text*`: the name contains `text`.
    Keyword(String),
}

impl Pattern {
    /// Classify one pattern string. Matching text is kept lowercased.
    pub fn parse(pattern: &str) -> Pattern {
        let p = pattern.to_lowercase();
        if p.len() >= 2 && p.starts_with('*') && p.ends_with('*') {
            Pattern::Keyword(p[1..p.len() - 1].to_string())
        } else if p == "*" {
            // CRI-O would treat this as a keyword with an empty text; it matches everything.
            Pattern::Keyword(String::new())
        } else if let Some(prefix) = p.strip_suffix('*') {
            Pattern::Glob(prefix.to_string())
        } else {
            Pattern::Exact(p)
        }
    }

    /// Whether `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        let name = name.to_lowercase();
        match self {
            Pattern::Exact(p) => name == *p,
            Pattern::Glob(p) | Pattern::Keyword(p) => name.contains(p.as_str()),
        }
    }
}

/// Whether `name` matches any of `patterns` (pattern strings as configured).
pub fn matches_any(patterns: &[String], name: &str) -> bool {
    patterns
        .iter()
        .filter(|p| !p.is_empty())
        .any(|p| Pattern::parse(p).matches(name))
}

/// Whether `image` is pinned: one of its names or digested names, or its ID, matches.
pub fn is_pinned(patterns: &[String], image: &ImageFacts) -> bool {
    image
        .names
        .iter()
        .chain(&image.digests)
        .chain(std::iter::once(&image.id))
        .any(|n| matches_any(patterns, n))
}

/// The `[crio.image]` options ibu cares about from one file; absent means "not set here".
#[derive(Debug, Default, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    crio: CrioTable,
}

#[derive(Debug, Default, Deserialize)]
struct CrioTable {
    #[serde(default)]
    image: ImageTable,
}

#[derive(Debug, Default, Deserialize)]
struct ImageTable {
    pinned_images: Option<Vec<String>>,
    pause_image: Option<String>,
}

/// The pinned patterns in effect for `etc` (the booted deployment's `/etc`): the last
/// `pinned_images` set, plus the last `pause_image` set. Missing files or directories mean
/// nothing is configured; a file that cannot be read or parsed is an error, because guessing
/// could delete an image that is meant to stay.
pub fn read(etc: &Path) -> Result<Vec<String>> {
    let crio = etc.join("crio");
    let mut files = Vec::new();
    let main = crio.join("crio.conf");
    if main.exists() {
        files.push(main);
    }
    drop_in_files(&crio.join("crio.conf.d"), &mut files)?;

    let mut pinned: Vec<String> = Vec::new();
    let mut pause: Option<String> = None;
    for file in &files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading CRI-O configuration {}", file.display()))?;
        let conf: ConfigFile = toml::from_str(&text)
            .with_context(|| format!("parsing CRI-O configuration {}", file.display()))?;
        if let Some(list) = conf.crio.image.pinned_images {
            pinned = list.into_iter().filter(|p| !p.is_empty()).collect();
        }
        if let Some(p) = conf.crio.image.pause_image {
            pause = Some(p);
        }
    }
    if let Some(p) = pause.filter(|p| !p.is_empty())
        && !pinned.contains(&p)
    {
        pinned.push(p);
    }
    Ok(pinned)
}

/// Files under `dir`, recursively, in the order CRI-O applies them (lexical by name within each
/// directory, a subdirectory's files at the subdirectory's place).
fn drop_in_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(e).with_context(|| format!("listing CRI-O drop-ins in {}", dir.display()));
        }
    };
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        paths.push(entry.path());
    }
    paths.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    for path in paths {
        let meta = std::fs::symlink_metadata(&path)
            .with_context(|| format!("inspecting {}", path.display()))?;
        if meta.is_dir() {
            drop_in_files(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_table() {
        // (pattern, name, pinned)
        let table: &[(&str, &str, bool)] = &[
            // exact: whole name, case-insensitive
            ("quay.io/ocp/pause:4.16", "quay.io/ocp/pause:4.16", true),
            ("quay.io/ocp/pause:4.16", "QUAY.io/ocp/Pause:4.16", true),
            ("quay.io/ocp/pause:4.16", "quay.io/ocp/pause:4.16.1", false),
            (
                "quay.io/ocp/pause:4.16",
                "mirror/quay.io/ocp/pause:4.16",
                false,
            ),
            ("quay.io/ocp/pause", "quay.io/ocp/pause:latest", false),
            // glob: trailing *
            ("quay.io/openshift/*", "quay.io/openshift/etcd:1", true),
            ("quay.io/openshift/*", "quay.io/openshift/", true),
            ("quay.io/openshift/*", "Quay.IO/OpenShift/etcd:1", true),
            ("quay.io/openshift/*", "quay.io/other/etcd:1", false),
            ("quay.io/openshift/*", "quay.io/openshif", false),
            // CRI-O's regexp is unanchored: the prefix may appear anywhere
            (
                "quay.io/openshift/*",
                "mirror.local/quay.io/openshift/x:1",
                true,
            ),
            // keyword: * at both ends
            ("*etcd*", "quay.io/openshift/etcd:4.16", true),
            ("*etcd*", "etcd", true),
            ("*ETCD*", "quay.io/etcd-operator:1", true),
            ("*etcd*", "quay.io/openshift/kube-apiserver:4.16", false),
            // a * elsewhere is literal, like CRI-O's quoted regexp
            ("*quay.io", "quay.io", false),
            ("*quay.io", "*quay.io", true),
            ("quay.io/*/etcd", "quay.io/x/etcd", false),
            ("quay.io/*/etcd*", "quay.io/*/etcd:1", true),
            // regexp metacharacters are literal
            ("registry.io/a+b*", "registry.io/a+b:1", true),
            ("registry.io/a+b*", "registry.io/aab:1", false),
            // degenerate patterns
            ("*", "anything", true),
            ("**", "anything", true),
            ("", "anything", false),
        ];
        for (pattern, name, want) in table {
            assert_eq!(
                matches_any(&[pattern.to_string()], name),
                *want,
                "pattern {pattern:?} vs name {name:?}"
            );
        }
    }

    #[test]
    fn classification() {
        assert_eq!(Pattern::parse("A:1"), Pattern::Exact("a:1".into()));
        assert_eq!(Pattern::parse("a/*"), Pattern::Glob("a/".into()));
        assert_eq!(Pattern::parse("*a*"), Pattern::Keyword("a".into()));
        assert_eq!(Pattern::parse("*"), Pattern::Keyword(String::new()));
        assert_eq!(Pattern::parse("*a"), Pattern::Exact("*a".into()));
    }

    fn image(id: &str, names: &[&str], digests: &[&str]) -> ImageFacts {
        ImageFacts {
            id: id.into(),
            names: names.iter().map(|s| s.to_string()).collect(),
            digests: digests.iter().map(|s| s.to_string()).collect(),
            created: 0,
            size: 0,
            dangling: names.is_empty(),
        }
    }

    #[test]
    fn image_is_pinned_by_any_name_digest_or_id() {
        let pins = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let img = image("abc123", &["a/x:1", "b/y:2"], &["a/x@sha256:ff"]);
        assert!(is_pinned(&pins(&["b/y:2"]), &img));
        assert!(is_pinned(&pins(&["a/x@sha256:ff"]), &img));
        assert!(is_pinned(&pins(&["abc123"]), &img));
        assert!(is_pinned(&pins(&["*y:*"]), &img));
        assert!(!is_pinned(&pins(&["c/*", "abc"]), &img));
        assert!(!is_pinned(&[], &img));
        let dangling = image("def456", &[], &[]);
        assert!(!is_pinned(&pins(&["a/*"]), &dangling));
        assert!(is_pinned(&pins(&["def456"]), &dangling));
    }

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn nothing_configured() {
        let d = tempfile::tempdir().unwrap();
        assert!(read(d.path()).unwrap().is_empty());
        write(
            d.path(),
            "crio/crio.conf",
            "[crio.runtime]\nlog_level = \"info\"\n",
        );
        assert!(read(d.path()).unwrap().is_empty());
    }

    #[test]
    fn later_files_replace_earlier_lists() {
        let d = tempfile::tempdir().unwrap();
        let etc = d.path();
        write(
            etc,
            "crio/crio.conf",
            "[crio.image]\npause_image = \"quay.io/ocp/pause:1\"\npinned_images = [\"main/*\"]\n",
        );
        assert_eq!(read(etc).unwrap(), ["main/*", "quay.io/ocp/pause:1"]);

        write(
            etc,
            "crio/crio.conf.d/20-b.conf",
            "[crio.image]\npinned_images = [\"b/*\", \"*kw*\"]\n",
        );
        write(
            etc,
            "crio/crio.conf.d/10-a.conf",
            "[crio.image]\npinned_images = [\"a/*\"]\npause_image = \"quay.io/ocp/pause:2\"\n",
        );
        // 20-b is applied after 10-a and replaces its list; the pause image comes from 10-a.
        assert_eq!(read(etc).unwrap(), ["b/*", "*kw*", "quay.io/ocp/pause:2"]);

        // A later file that does not mention pinned_images leaves it alone.
        write(
            etc,
            "crio/crio.conf.d/30-c",
            "[crio.runtime]\nlog_level = \"debug\"\n",
        );
        assert_eq!(read(etc).unwrap(), ["b/*", "*kw*", "quay.io/ocp/pause:2"]);

        // CRI-O walks subdirectories in place and reads files whatever their extension.
        write(
            etc,
            "crio/crio.conf.d/40-d/x.toml",
            "[crio.image]\npinned_images = []\n",
        );
        assert_eq!(read(etc).unwrap(), ["quay.io/ocp/pause:2"]);
    }

    #[test]
    fn broken_configuration_is_an_error_naming_the_file() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "crio/crio.conf.d/10-bad.conf",
            "[crio.image]\npinned_images = \"not-a-list\"\n",
        );
        let e = format!("{:#}", read(d.path()).unwrap_err());
        assert!(e.contains("10-bad.conf"), "{e}");
        write(d.path(), "crio/crio.conf.d/10-bad.conf", "[crio.image\n");
        let e = format!("{:#}", read(d.path()).unwrap_err());
        assert!(e.contains("parsing CRI-O configuration"), "{e}");
    }
}
