//! Registry credentials from an authfile (containers-auth.json(5), docker's `config.json`).
//!
//! ibu reads the same file podman and skopeo use (`--authfile`), so an operator logs in once
//! with `podman login --authfile FILE` and every tool agrees. The format:
//!
//! ```json
//! {"auths": {"quay.io": {"auth": "base64(user:password)"},
//!            "registry.local:5000/team": {"username": "u", "password": "p"}}}
//! ```
//!
//! A key is a registry (`host[:port]`) or a registry with a namespace or repository path; the
//! most specific key wins, as containers-auth.json(5) specifies: for
//! `my-registry.local/namespace/user/image` the keys tried are `my-registry.local/namespace/user/image`,
//! `my-registry.local/namespace/user`, `my-registry.local/namespace`, `my-registry.local`.
//! Docker's own files also use keys with a scheme (`https://index.docker.io/v1/`); those are
//! normalised to their host, and Docker Hub's aliases (`index.docker.io`, `registry-1.docker.io`)
//! to `docker.io`, the name podman gives it.
//!
//! Credentials never appear in `Debug` output or error messages; errors name the file and the
//! key instead.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use serde::Deserialize;

use crate::spec::image_ref::ImageRef;

/// A user name and password for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    username: String,
    password: String,
}

impl Credentials {
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Credentials {
        Credentials {
            username: username.into(),
            password: password.into(),
        }
    }

    pub fn username(&self) -> &str {
        &self.username
    }

    pub fn password(&self) -> &str {
        &self.password
    }

    /// The value of an `Authorization: Basic ...` header.
    pub(crate) fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The registry key Docker Hub goes by in authfiles and registries.conf.
pub const DOCKER_HUB: &str = "docker.io";

/// `domain/path` of an image as authfiles and registries.conf name it: Docker Hub as
/// `docker.io`, its official images under `library/`.
pub fn qualified_name(image: &ImageRef) -> String {
    let domain = registry_key(image);
    let path = if domain == DOCKER_HUB && !image.path.contains('/') {
        format!("library/{}", image.path)
    } else {
        image.path.clone()
    };
    format!("{domain}/{path}")
}

/// The registry part of an image as authfiles name it (`docker.io` for Docker Hub).
pub fn registry_key(image: &ImageRef) -> String {
    match image.domain.as_deref() {
        None => DOCKER_HUB.to_string(),
        Some(d) => normalize_registry(d).to_string(),
    }
}

fn normalize_registry(host: &str) -> &str {
    match host {
        "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB,
        other => other,
    }
}

/// Normalise an `auths` key: a key with a scheme (docker's legacy `https://host/v1/` form) is
/// cut to its host; Docker Hub's aliases become `docker.io`.
pub fn normalize_key(key: &str) -> String {
    let stripped = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"));
    let key = match stripped {
        Some(rest) => rest.split('/').next().unwrap_or(rest),
        None => key.trim_end_matches('/'),
    };
    match key.split_once('/') {
        Some((host, path)) => format!("{}/{path}", normalize_registry(host)),
        None => normalize_registry(key).to_string(),
    }
}

#[derive(Deserialize, Default)]
struct AuthFileJson {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
}

#[derive(Deserialize, Default, Clone)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// A parsed authfile.
pub struct AuthFile {
    path: PathBuf,
    /// Normalised key → (original key, entry).
    entries: BTreeMap<String, (String, AuthEntry)>,
    cred_helpers: BTreeMap<String, String>,
}

impl fmt::Debug for AuthFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthFile")
            .field("path", &self.path)
            .field("keys", &self.entries.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl AuthFile {
    /// Read and parse `path`.
    pub fn load(path: &Path) -> Result<AuthFile> {
        let text = fs_err::read_to_string(path).context("reading the registry authfile")?;
        AuthFile::parse(&text, path)
    }

    /// Parse authfile text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<AuthFile> {
        let json: AuthFileJson = serde_json::from_str(text).with_context(|| {
            format!(
                "authfile {} is not valid containers-auth.json (expected {{\"auths\": {{...}}}})",
                path.display()
            )
        })?;
        let mut entries: BTreeMap<String, (String, AuthEntry)> = BTreeMap::new();
        for (key, entry) in json.auths {
            let norm = normalize_key(&key);
            // When two keys normalise alike, the one written in normal form wins.
            let keep_old = entries.get(&norm).is_some_and(|(old, _)| *old == norm);
            if !keep_old {
                entries.insert(norm, (key, entry));
            }
        }
        let cred_helpers = json
            .cred_helpers
            .into_iter()
            .map(|(k, v)| (normalize_key(&k), v))
            .collect();
        Ok(AuthFile {
            path: path.to_path_buf(),
            entries,
            cred_helpers,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The credentials for `image`, most specific key first; `None` when no key matches (the
    /// client then tries anonymous access).
    pub fn lookup(&self, image: &ImageRef) -> Result<Option<Credentials>> {
        let name = qualified_name(image);
        for key in lookup_keys(&name) {
            let Some((original, entry)) = self.entries.get(&key) else {
                continue;
            };
            if let Some(creds) = self.decode(original, entry)? {
                return Ok(Some(creds));
            }
        }
        let registry = registry_key(image);
        if let Some(helper) = self.cred_helpers.get(&registry) {
            bail!(
                "authfile {} delegates the credentials of {registry} to the credential helper \
                 docker-credential-{helper}, which ibu does not run; write them into the authfile \
                 (podman login --authfile {} {registry})",
                self.path.display(),
                self.path.display()
            );
        }
        Ok(None)
    }

    fn decode(&self, key: &str, entry: &AuthEntry) -> Result<Option<Credentials>> {
        let bad = |why: &str| {
            anyhow::anyhow!("authfile {}: the entry {key:?} {why}", self.path.display())
        };
        if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|_| bad("has an \"auth\" value that is not base64"))?;
            let raw = String::from_utf8(raw)
                .map_err(|_| bad("has an \"auth\" value that is not UTF-8 user:password"))?;
            let (user, password) = raw
                .split_once(':')
                .ok_or_else(|| bad("has an \"auth\" value that is not base64 of user:password"))?;
            return Ok(Some(Credentials::new(user, password)));
        }
        match (&entry.username, &entry.password) {
            (Some(u), Some(p)) if !u.is_empty() => Ok(Some(Credentials::new(u, p))),
            (Some(u), None) if !u.is_empty() => Err(bad("has a \"username\" but no \"password\"")),
            _ => Ok(None),
        }
    }
}

/// The keys to try for `domain/path`, most specific first.
fn lookup_keys(name: &str) -> Vec<String> {
    let mut keys = vec![name.to_string()];
    let mut cur = name;
    while let Some((parent, _)) = cur.rsplit_once('/') {
        keys.push(parent.to_string());
        cur = parent;
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn img(s: &str) -> ImageRef {
        ImageRef::parse(s).unwrap()
    }

    fn file(json: &str) -> AuthFile {
        AuthFile::parse(json, Path::new("/run/ibu/auth.json")).unwrap()
    }

    #[test]
    fn most_specific_key_wins() {
        let f = file(&format!(
            r#"{{"auths": {{
                "my-registry.local/foo/bar/image": {{"auth": "{}"}},
                "my-registry.local/foo": {{"auth": "{}"}},
                "my-registry.local": {{"auth": "{}"}}
            }}}}"#,
            b64("image:1"),
            b64("foo:2"),
            b64("host:3")
        ));
        let user = |r: &str| f.lookup(&img(r)).unwrap().map(|c| c.username().to_string());
        assert_eq!(
            user("my-registry.local/foo/bar/image:v1").as_deref(),
            Some("image")
        );
        assert_eq!(
            user("my-registry.local/foo/bar/other").as_deref(),
            Some("foo")
        );
        assert_eq!(user("my-registry.local/foo/x@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef").as_deref(), Some("foo"));
        assert_eq!(user("my-registry.local/foobar/x").as_deref(), Some("host"));
        assert_eq!(user("other.local/foo/x"), None);
        // A port is part of the registry key.
        assert_eq!(user("my-registry.local:5000/foo/x"), None);
    }

    #[test]
    fn password_may_contain_colons_and_fields_work() {
        let f = file(&format!(
            r#"{{"auths": {{"127.0.0.1:5000": {{"auth": "{}"}},
                 "quay.io": {{"username": "robot", "password": "p:w"}} }}}}"#,
            b64("ibu:pa:ss")
        ));
        let c = f
            .lookup(&img("127.0.0.1:5000/ibu/seed:1"))
            .unwrap()
            .unwrap();
        assert_eq!((c.username(), c.password()), ("ibu", "pa:ss"));
        let c = f.lookup(&img("quay.io/a/b")).unwrap().unwrap();
        assert_eq!((c.username(), c.password()), ("robot", "p:w"));
        assert_eq!(c.basic_header(), format!("Basic {}", b64("robot:p:w")));
    }

    #[test]
    fn docker_hub_normalisation() {
        let f = file(&format!(
            r#"{{"auths": {{"https://index.docker.io/v1/": {{"auth": "{}"}}}}}}"#,
            b64("hub:x")
        ));
        for r in [
            "busybox",
            "docker.io/library/busybox",
            "index.docker.io/user/app:1",
        ] {
            let c = f.lookup(&img(r)).unwrap();
            assert_eq!(
                c.map(|c| c.username().to_string()).as_deref(),
                Some("hub"),
                "{r}"
            );
        }
        assert_eq!(qualified_name(&img("busybox")), "docker.io/library/busybox");
        assert_eq!(
            qualified_name(&img("docker.io/user/app")),
            "docker.io/user/app"
        );
        assert_eq!(
            normalize_key("http://registry.local:5000"),
            "registry.local:5000"
        );
        assert_eq!(
            normalize_key("registry-1.docker.io/library"),
            "docker.io/library"
        );
    }

    #[test]
    fn normal_form_key_beats_legacy_alias() {
        let f = file(&format!(
            r#"{{"auths": {{"docker.io": {{"auth": "{}"}},
                 "https://index.docker.io/v1/": {{"auth": "{}"}}}}}}"#,
            b64("new:x"),
            b64("old:x")
        ));
        let c = f.lookup(&img("busybox")).unwrap().unwrap();
        assert_eq!(c.username(), "new");
    }

    #[test]
    fn empty_entries_and_helpers() {
        // podman writes `{}` for registries whose credentials live in a helper.
        let f = file(
            r#"{"auths": {"quay.io": {}}, "credHelpers": {"registry.example.com": "secretservice"}}"#,
        );
        assert!(f.lookup(&img("quay.io/a/b")).unwrap().is_none());
        let e = f
            .lookup(&img("registry.example.com/a"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("docker-credential-secretservice"), "{e}");
        assert!(file("{}").lookup(&img("quay.io/a")).unwrap().is_none());
    }

    #[test]
    fn broken_entries_name_the_key_not_the_secret() {
        let f = file(r#"{"auths": {"quay.io": {"auth": "!!!notbase64"}}}"#);
        let e = format!("{:#}", f.lookup(&img("quay.io/a")).unwrap_err());
        assert!(
            e.contains("/run/ibu/auth.json") && e.contains("\"quay.io\""),
            "{e}"
        );
        assert!(!e.contains("!!!notbase64"), "{e}");

        let f = file(&format!(
            r#"{{"auths": {{"quay.io": {{"auth": "{}"}}}}}}"#,
            b64("nocolon")
        ));
        let e = format!("{:#}", f.lookup(&img("quay.io/a")).unwrap_err());
        assert!(e.contains("user:password") && !e.contains("nocolon"), "{e}");

        let e = AuthFile::parse("[1]", Path::new("/x.json")).unwrap_err();
        assert!(format!("{e:#}").contains("/x.json"));
    }

    #[test]
    fn debug_never_shows_secrets() {
        let c = Credentials::new("ibu", "s3cret");
        let d = format!("{c:?}");
        assert!(d.contains("ibu") && !d.contains("s3cret"), "{d}");
        let f = file(&format!(
            r#"{{"auths": {{"q.io": {{"auth": "{}"}}}}}}"#,
            b64("u:s3cret")
        ));
        let d = format!("{f:?}");
        assert!(
            !d.contains("s3cret") && !d.contains(&b64("u:s3cret")),
            "{d}"
        );
    }
}
