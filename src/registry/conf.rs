//! The parts of containers-registries.conf(5) that decide how ibu may talk to a registry:
//! `insecure` (plain HTTP and unverified TLS allowed) and `blocked`.
//!
//! An operator who marked a registry insecure for podman expects ibu to reach it the same way,
//! so ibu reads the same files: `/etc/containers/registries.conf`, then the drop-ins in
//! `/etc/containers/registries.conf.d/*.conf` in name order, where a `[[registry]]` table with
//! the same prefix replaces the earlier one. Both formats are read:
//!
//! ```toml
//! [[registry]]                     # version 2
//! location = "registry.local:5000"  # prefix defaults to location
//! insecure = true
//!
//! [registries.insecure]            # version 1 (deprecated)
//! registries = ["registry.local:5000"]
//! ```
//!
//! The table used for an image is the one whose `prefix` is the longest match of the image
//! name (`host[:port][/namespace...][/repo][:tag|@digest]`, matched at a separator), or, when no
//! plain prefix matches, the longest `*.domain` wildcard matching the host. Location rewriting
//! and mirrors are *not* applied: ibu talks to the registry the image reference names.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// The system-wide file.
pub const DEFAULT_REGISTRIES_CONF: &str = "/etc/containers/registries.conf";
/// Its drop-in directory.
pub const DEFAULT_REGISTRIES_CONF_D: &str = "/etc/containers/registries.conf.d";

/// One `[[registry]]` table (or a v1 list entry), as far as ibu uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryEntry {
    pub prefix: String,
    pub insecure: bool,
    pub blocked: bool,
    /// The file it came from (for messages).
    pub source: PathBuf,
}

/// The merged registries configuration.
#[derive(Debug, Clone, Default)]
pub struct RegistriesConf {
    entries: Vec<RegistryEntry>,
}

#[derive(Deserialize)]
struct ConfFile {
    #[serde(default)]
    registry: Vec<RegistryTable>,
    #[serde(default)]
    registries: Option<V1Tables>,
}

#[derive(Deserialize)]
struct RegistryTable {
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    location: Option<String>,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    blocked: bool,
}

#[derive(Deserialize, Default)]
struct V1Tables {
    #[serde(default)]
    insecure: Option<V1List>,
    #[serde(default)]
    block: Option<V1List>,
}

#[derive(Deserialize, Default)]
struct V1List {
    #[serde(default)]
    registries: Vec<String>,
}

impl RegistriesConf {
    /// Load `main` and then the `*.conf` files of `dropin_dir` in name order; missing files and
    /// directories are fine (an unconfigured host has neither).
    pub fn load(main: &Path, dropin_dir: Option<&Path>) -> Result<RegistriesConf> {
        let mut conf = RegistriesConf::default();
        let mut files = vec![main.to_path_buf()];
        if let Some(dir) = dropin_dir {
            match fs_err::read_dir(dir) {
                Ok(rd) => {
                    let mut dropins = Vec::new();
                    for entry in rd {
                        let path = entry
                            .with_context(|| format!("listing {}", dir.display()))?
                            .path();
                        if path.extension().is_some_and(|e| e == "conf") && path.is_file() {
                            dropins.push(path);
                        }
                    }
                    dropins.sort();
                    files.extend(dropins);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).context("reading the registries.conf drop-in directory"),
            }
        }
        for file in files {
            match fs_err::read_to_string(&file) {
                Ok(text) => conf.merge(&text, &file)?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).context("reading registries.conf"),
            }
        }
        Ok(conf)
    }

    /// Merge one file's text; `source` names it in messages.
    pub fn merge(&mut self, text: &str, source: &Path) -> Result<()> {
        let file: ConfFile = toml::from_str(text)
            .with_context(|| format!("{} is not a valid registries.conf", source.display()))?;
        let mut add =
            |entry: RegistryEntry| match self.entries.iter_mut().find(|e| e.prefix == entry.prefix)
            {
                Some(old) => *old = entry,
                None => self.entries.push(entry),
            };
        for t in file.registry {
            let prefix = match (t.prefix, t.location) {
                (Some(p), _) if !p.is_empty() => p,
                (_, Some(l)) if !l.is_empty() => l,
                _ => bail!(
                    "{}: a [[registry]] table has neither prefix nor location",
                    source.display()
                ),
            };
            add(RegistryEntry {
                prefix,
                insecure: t.insecure,
                blocked: t.blocked,
                source: source.to_path_buf(),
            });
        }
        if let Some(v1) = file.registries {
            let insecure = v1.insecure.unwrap_or_default().registries;
            let blocked = v1.block.unwrap_or_default().registries;
            let mut hosts: Vec<&String> = insecure.iter().chain(&blocked).collect();
            hosts.sort();
            hosts.dedup();
            for host in hosts {
                add(RegistryEntry {
                    prefix: host.clone(),
                    insecure: insecure.contains(host),
                    blocked: blocked.contains(host),
                    source: source.to_path_buf(),
                });
            }
        }
        Ok(())
    }

    /// The table that applies to `reference` (`host[:port]/path[:tag][@digest]`).
    pub fn find(&self, reference: &str) -> Option<&RegistryEntry> {
        let plain = self
            .entries
            .iter()
            .filter(|e| !e.prefix.starts_with("*."))
            .filter(|e| prefix_matches(&e.prefix, reference))
            .max_by_key(|e| e.prefix.len());
        plain.or_else(|| {
            let host = host_of(reference);
            self.entries
                .iter()
                .filter(|e| {
                    e.prefix
                        .strip_prefix('*')
                        .is_some_and(|suffix| host.ends_with(suffix))
                })
                .max_by_key(|e| e.prefix.len())
        })
    }
}

/// Does `prefix` match `reference` at a separator? A bare `host[:port]` prefix must be followed
/// by `/`; a prefix with a path may also be followed by a tag or digest.
fn prefix_matches(prefix: &str, reference: &str) -> bool {
    let Some(rest) = reference.strip_prefix(prefix) else {
        return false;
    };
    match rest.chars().next() {
        None => true,
        Some('/') => true,
        Some(':' | '@') => prefix.contains('/'),
        Some(_) => false,
    }
}

/// The host (without port) of `host[:port]/...`; `[v6]` hosts keep their brackets.
fn host_of(reference: &str) -> &str {
    let domain = reference.split('/').next().unwrap_or(reference);
    if domain.starts_with('[') {
        return domain
            .split_once(']')
            .map_or(domain, |(h, _)| &domain[..=h.len()]);
    }
    domain.split(':').next().unwrap_or(domain)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(text: &str) -> RegistriesConf {
        let mut c = RegistriesConf::default();
        c.merge(text, Path::new("/etc/containers/registries.conf"))
            .unwrap();
        c
    }

    fn insecure(c: &RegistriesConf, r: &str) -> bool {
        c.find(r).is_some_and(|e| e.insecure)
    }

    #[test]
    fn location_and_prefix_matching() {
        let c = conf(
            r#"
            unqualified-search-registries = ["quay.io"]
            [[registry]]
            location = "127.0.0.1:5000"
            insecure = true

            [[registry]]
            prefix = "registry.local/team"
            location = "elsewhere.local/mirror"
            insecure = true

            [[registry]]
            prefix = "registry.local/team/secure"
            insecure = false
            "#,
        );
        assert!(insecure(&c, "127.0.0.1:5000/ibu/seed:v1"));
        assert!(!insecure(&c, "127.0.0.1:50001/ibu/seed"));
        assert!(!insecure(&c, "127.0.0.1/ibu/seed"));
        assert!(insecure(&c, "registry.local/team/seed:1"));
        assert!(!insecure(&c, "registry.local/teamx/seed"));
        // Longest prefix wins.
        assert!(!insecure(&c, "registry.local/team/secure:1"));
        assert!(insecure(&c, "registry.local/team/secure2"));
        assert!(!insecure(&c, "quay.io/a/b"));
    }

    #[test]
    fn prefix_with_repository_matches_tags_and_digests() {
        let c = conf("[[registry]]\nprefix = \"r.io/a/b\"\ninsecure = true\n");
        assert!(insecure(&c, "r.io/a/b"));
        assert!(insecure(&c, "r.io/a/b:tag"));
        assert!(insecure(&c, "r.io/a/b@sha256:00"));
        assert!(insecure(&c, "r.io/a/b/c"));
        assert!(!insecure(&c, "r.io/a/bc"));
        // A bare host prefix does not match a longer port.
        let c = conf("[[registry]]\nlocation = \"r.io\"\ninsecure = true\n");
        assert!(!insecure(&c, "r.io:5000/a"));
    }

    #[test]
    fn wildcards_match_subdomains_after_plain_prefixes() {
        let c = conf(
            r#"
            [[registry]]
            prefix = "*.example.com"
            insecure = true
            [[registry]]
            location = "secure.example.com"
            "#,
        );
        assert!(insecure(&c, "a.example.com/x"));
        assert!(insecure(&c, "a.b.example.com:5000/x"));
        assert!(!insecure(&c, "example.com/x"));
        assert!(!insecure(&c, "secure.example.com/x"));
    }

    #[test]
    fn v1_lists_and_blocked() {
        let c = conf(
            r#"
            [registries.search]
            registries = ["quay.io"]
            [registries.insecure]
            registries = ["registry.local:5000"]
            [registries.block]
            registries = ["bad.io", "registry.local:5000"]
            "#,
        );
        let e = c.find("registry.local:5000/a").unwrap();
        assert!(e.insecure && e.blocked);
        let e = c.find("bad.io/a").unwrap();
        assert!(!e.insecure && e.blocked);
        assert!(c.find("quay.io/a").is_none());
    }

    #[test]
    fn dropins_override_by_prefix_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("registries.conf");
        let d = dir.path().join("registries.conf.d");
        std::fs::create_dir(&d).unwrap();
        std::fs::write(
            &main,
            "[[registry]]\nlocation = \"r.local\"\ninsecure = true\n",
        )
        .unwrap();
        std::fs::write(
            d.join("20-secure.conf"),
            "[[registry]]\nlocation = \"r.local\"\ninsecure = false\n",
        )
        .unwrap();
        std::fs::write(
            d.join("10-other.conf"),
            "[[registry]]\nlocation = \"o.local\"\ninsecure = true\n",
        )
        .unwrap();
        std::fs::write(d.join("ignored.txt"), "not toml [").unwrap();
        let c = RegistriesConf::load(&main, Some(&d)).unwrap();
        assert!(!insecure(&c, "r.local/a"));
        assert!(insecure(&c, "o.local/a"));
        assert!(
            c.find("r.local/a")
                .unwrap()
                .source
                .ends_with("20-secure.conf")
        );

        // Nothing configured at all is fine.
        let c = RegistriesConf::load(
            &dir.path().join("none.conf"),
            Some(&dir.path().join("nodir")),
        )
        .unwrap();
        assert!(c.find("r.local/a").is_none());
    }

    #[test]
    fn bad_files_are_named() {
        let mut c = RegistriesConf::default();
        let e = c.merge("[[registry]]\ninsecure = true\n", Path::new("/etc/x.conf"));
        assert!(format!("{:#}", e.unwrap_err()).contains("/etc/x.conf: a [[registry]] table"));
        let e = c
            .merge("[[registry]\n", Path::new("/etc/y.conf"))
            .unwrap_err();
        assert!(format!("{e:#}").contains("/etc/y.conf is not a valid registries.conf"));
    }

    #[test]
    fn hosts() {
        assert_eq!(host_of("a.b:5000/x"), "a.b");
        assert_eq!(host_of("[fd00::1]:5000/x"), "[fd00::1]");
        assert_eq!(host_of("a.b"), "a.b");
    }
}
