//! Container image references (`[docker://][registry[:port]/]repo[:tag][@digest]`).
//!
//! LCA's CRD only checks `^([a-z0-9]+://)?[\S]+$`, so a typo in the seed image is found when
//! the pull fails, minutes into Prep. ibu parses the full reference grammar of
//! `distribution/reference` up front, so `ibu validate` can say *what* is wrong:
//!
//! ```text
//! reference  := name [":" tag] ["@" digest]
//! name       := [domain "/"] path
//! domain     := host [":" port]          host: DNS name, IPv4, or [IPv6]
//! path       := component ("/" component)*
//! component  := [a-z0-9]+ (separator [a-z0-9]+)*      separator: "." | "_" | "__" | "-"+
//! tag        := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
//! digest     := algorithm ":" hex          sha256: 64 hex, sha512: 128 hex, others >= 32
//! ```
//!
//! As in docker, the first path component is a registry domain only if it contains `.` or `:`,
//! is `localhost`, or has uppercase letters. The only transport prefix accepted is `docker://`
//! (the one `podman pull` understands in LCA's `scheme://` form).

use std::fmt;

/// Longest `domain/path` docker accepts.
pub const MAX_NAME_LEN: usize = 255;

/// A parsed, validated image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// The reference exactly as written.
    pub original: String,
    /// `Some("docker")` when written with `docker://`.
    pub transport: Option<String>,
    /// Registry host with optional port (`quay.io`, `registry.local:5000`); `None` means docker's
    /// default registry.
    pub domain: Option<String>,
    /// Repository path (`openshift-kni/seed`).
    pub path: String,
    pub tag: Option<String>,
    /// `algorithm:hex`.
    pub digest: Option<String>,
}

/// Why a string is not an image reference; the message quotes the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference {input:?}: {reason}")]
pub struct ImageRefError {
    pub input: String,
    pub reason: String,
}

impl ImageRef {
    pub fn parse(s: &str) -> Result<ImageRef, ImageRefError> {
        parse(s).map_err(|reason| ImageRefError {
            input: s.to_string(),
            reason,
        })
    }

    /// `domain/path` (no tag, digest or transport).
    pub fn name(&self) -> String {
        match &self.domain {
            Some(d) => format!("{d}/{}", self.path),
            None => self.path.clone(),
        }
    }

    /// The reference without a transport prefix, as `podman pull` and `skopeo` take it after
    /// their own `docker://`.
    pub fn pull_spec(&self) -> String {
        let mut s = self.name();
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d);
        }
        s
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.original)
    }
}

impl std::str::FromStr for ImageRef {
    type Err = ImageRefError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageRef::parse(s)
    }
}

fn parse(s: &str) -> Result<ImageRef, String> {
    if s.is_empty() {
        return Err("empty image reference".into());
    }
    if let Some(c) = s.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("contains whitespace or control character {c:?}"));
    }
    let (transport, rest) = match s.split_once("://") {
        Some((scheme, rest)) => {
            if scheme.is_empty()
                || !scheme
                    .bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            {
                return Err(format!(
                    "malformed transport prefix {:?}",
                    format!("{scheme}://")
                ));
            }
            if scheme != "docker" {
                return Err(format!(
                    "unsupported transport \"{scheme}://\" (only docker:// or none)"
                ));
            }
            (Some(scheme.to_string()), rest)
        }
        None => (None, s),
    };
    if rest.is_empty() {
        return Err("missing repository name after the transport".into());
    }
    let (name_tag, digest) = match rest.split_once('@') {
        Some((n, d)) => {
            check_digest(d)?;
            (n, Some(d.to_string()))
        }
        None => (rest, None),
    };
    let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name_tag[last_slash..].rfind(':') {
        Some(i) => {
            let i = last_slash + i;
            let tag = &name_tag[i + 1..];
            check_tag(tag)?;
            (&name_tag[..i], Some(tag.to_string()))
        }
        None => (name_tag, None),
    };
    if name.is_empty() {
        return Err("missing repository name".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "repository name is {} characters long, at most {MAX_NAME_LEN} are allowed",
            name.len()
        ));
    }
    let (domain, path) = match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.bytes().any(|c| c.is_ascii_uppercase()) =>
        {
            check_domain(first)?;
            (Some(first.to_string()), rest)
        }
        _ => (None, name),
    };
    check_path(path)?;
    Ok(ImageRef {
        original: s.to_string(),
        transport,
        domain,
        path: path.to_string(),
        tag,
        digest,
    })
}

fn check_domain(d: &str) -> Result<(), String> {
    let (host, port) = if let Some(v6) = d.strip_prefix('[') {
        let Some((addr, after)) = v6.split_once(']') else {
            return Err(format!("registry {d:?}: unclosed '[' in IPv6 address"));
        };
        if addr.is_empty() || !addr.bytes().all(|c| c.is_ascii_hexdigit() || c == b':') {
            return Err(format!("registry {d:?}: malformed IPv6 address"));
        }
        match after {
            "" => (None, None),
            p if p.starts_with(':') => (None, Some(&p[1..])),
            _ => return Err(format!("registry {d:?}: unexpected text after ']'")),
        }
    } else {
        match d.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(d), None),
        }
    };
    if let Some(host) = host {
        let component_ok = |c: &str| {
            let b = c.as_bytes();
            !b.is_empty()
                && b.iter().all(|x| x.is_ascii_alphanumeric() || *x == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        };
        if host.is_empty() || !host.split('.').all(component_ok) {
            return Err(format!(
                "registry host {host:?} is not a valid host name (letters, digits and '-', \
                 dot-separated)"
            ));
        }
    }
    if let Some(port) = port {
        let valid = !port.is_empty()
            && port.len() <= 5
            && port.bytes().all(|c| c.is_ascii_digit())
            && port.parse::<u32>().is_ok_and(|p| (1..=65535).contains(&p));
        if !valid {
            return Err(format!(
                "registry port {port:?} is not a number from 1 to 65535"
            ));
        }
    }
    Ok(())
}

fn check_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("missing repository path after the registry".into());
    }
    if path.bytes().any(|c| c.is_ascii_uppercase()) {
        return Err(format!("repository path {path:?} must be lowercase"));
    }
    for comp in path.split('/') {
        if comp.is_empty() {
            return Err(format!("repository path {path:?} has an empty component"));
        }
        if let Some(c) = comp.chars().find(|c| {
            !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
        }) {
            return Err(format!(
                "repository path component {comp:?} contains {c:?} (allowed: a-z, 0-9, '.', '_', '-')"
            ));
        }
        let b = comp.as_bytes();
        let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
            return Err(format!(
                "repository path component {comp:?} must start and end with a letter or digit"
            ));
        }
        // Separators between alphanumeric runs: ".", "_", "__", or one or more "-".
        let mut i = 0;
        while i < b.len() {
            if alnum(b[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < b.len() && !alnum(b[i]) {
                i += 1;
            }
            let sep = &comp[start..i];
            let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|c| c == b'-');
            if !ok {
                return Err(format!(
                    "repository path component {comp:?} has separator {sep:?} (allowed: '.', '_', \
                     '__', or dashes)"
                ));
            }
        }
    }
    Ok(())
}

fn check_tag(tag: &str) -> Result<(), String> {
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let b = tag.as_bytes();
    if b.is_empty() {
        return Err("empty tag after ':'".into());
    }
    if b.len() > 128 {
        return Err(format!(
            "tag is {} characters long, at most 128 are allowed",
            b.len()
        ));
    }
    if !word(b[0]) {
        return Err(format!(
            "tag {tag:?} must start with a letter, digit or '_'"
        ));
    }
    if let Some(c) = tag
        .chars()
        .find(|&c| !(c.is_ascii() && (word(c as u8) || c == '.' || c == '-')))
    {
        return Err(format!(
            "tag {tag:?} contains {c:?} (allowed: A-Z, a-z, 0-9, '_', '.', '-')"
        ));
    }
    Ok(())
}

fn check_digest(d: &str) -> Result<(), String> {
    let Some((algo, hex)) = d.split_once(':') else {
        return Err(format!(
            "digest {d:?} must be algorithm:hex, e.g. sha256:<64 hex digits>"
        ));
    };
    let algo_ok = !algo.is_empty()
        && algo.split(['+', '.', '_', '-']).all(|c| {
            let b = c.as_bytes();
            !b.is_empty() && b[0].is_ascii_alphabetic() && b.iter().all(u8::is_ascii_alphanumeric)
        });
    if !algo_ok {
        return Err(format!("digest algorithm {algo:?} is malformed"));
    }
    if !hex.bytes().all(|c| c.is_ascii_hexdigit()) || hex.is_empty() {
        return Err(format!(
            "digest {d:?}: the part after ':' must be hexadecimal"
        ));
    }
    let want = match algo {
        "sha256" => Some(64),
        "sha512" => Some(128),
        _ => None,
    };
    match want {
        Some(n) if hex.len() != n => Err(format!(
            "digest {d:?}: {algo} needs {n} hex digits, got {}",
            hex.len()
        )),
        Some(_) if hex.bytes().any(|c| c.is_ascii_uppercase()) => {
            Err(format!("digest {d:?}: {algo} hex digits must be lowercase"))
        }
        None if hex.len() < 32 => Err(format!(
            "digest {d:?}: at least 32 hex digits are required, got {}",
            hex.len()
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn valid_references() {
        let digest_ref = format!("quay.io/a/b@{SHA}");
        let tag_digest = format!("quay.io/a/b:v1@{SHA}");
        // (input, domain, path, tag, digest?)
        type Case<'a> = (&'a str, Option<&'a str>, &'a str, Option<&'a str>, bool);
        let cases: Vec<Case> = vec![
            (
                "quay.io/openshift-kni/seed:4.15.2",
                Some("quay.io"),
                "openshift-kni/seed",
                Some("4.15.2"),
                false,
            ),
            (
                "docker://quay.io/user/lca-seed:4.15.0",
                Some("quay.io"),
                "user/lca-seed",
                Some("4.15.0"),
                false,
            ),
            ("busybox", None, "busybox", None, false),
            (
                "library/busybox:latest",
                None,
                "library/busybox",
                Some("latest"),
                false,
            ),
            ("localhost/seed", Some("localhost"), "seed", None, false),
            (
                "localhost:5000/seed:v1",
                Some("localhost:5000"),
                "seed",
                Some("v1"),
                false,
            ),
            (
                "registry.example.com:5000/a/b/c:tag_1.0-rc",
                Some("registry.example.com:5000"),
                "a/b/c",
                Some("tag_1.0-rc"),
                false,
            ),
            (
                "[fd00::1]:5000/seed:1",
                Some("[fd00::1]:5000"),
                "seed",
                Some("1"),
                false,
            ),
            (
                "192.168.1.10:5000/seed",
                Some("192.168.1.10:5000"),
                "seed",
                None,
                false,
            ),
            (
                "quay.io/a__b/c-d--e/f.g:x",
                Some("quay.io"),
                "a__b/c-d--e/f.g",
                Some("x"),
                false,
            ),
            (&digest_ref, Some("quay.io"), "a/b", None, true),
            (&tag_digest, Some("quay.io"), "a/b", Some("v1"), true),
            (
                "quay.io/seed/image:4.20.0-rc.1",
                Some("quay.io"),
                "seed/image",
                Some("4.20.0-rc.1"),
                false,
            ),
        ];
        for (input, domain, path, tag, has_digest) in cases {
            let r = ImageRef::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.domain.as_deref(), domain, "{input}");
            assert_eq!(r.path, path, "{input}");
            assert_eq!(r.tag.as_deref(), tag, "{input}");
            assert_eq!(r.digest.is_some(), has_digest, "{input}");
            assert_eq!(r.to_string(), input);
        }
    }

    #[test]
    fn pull_spec_drops_transport() {
        let r = ImageRef::parse("docker://quay.io/a/b:1").unwrap();
        assert_eq!(r.transport.as_deref(), Some("docker"));
        assert_eq!(r.pull_spec(), "quay.io/a/b:1");
        assert_eq!(r.name(), "quay.io/a/b");
    }

    #[test]
    fn invalid_references_say_why() {
        let long_tag = format!("a:{}", "t".repeat(129));
        let cases: Vec<(&str, &str)> = vec![
            ("", "empty image reference"),
            ("quay.io/a b", "whitespace"),
            ("<seed_container_image>", "contains '<'"),
            ("quay.io/Openshift/seed", "must be lowercase"),
            ("quay.io//seed", "empty component"),
            ("quay.io/seed:", "empty tag"),
            ("quay.io/seed:-x", "must start with"),
            ("quay.io/seed:a+b", "contains '+'"),
            (&long_tag, "at most 128"),
            ("quay.io/seed@sha256:abc", "needs 64 hex digits"),
            ("quay.io/seed@sha256", "algorithm:hex"),
            ("quay.io/seed@sha256:XYZ", "hexadecimal"),
            ("quay.io/seed@md5:0123456789abcdef", "at least 32"),
            ("quay.io:99999/seed", "port"),
            ("quay.io:/seed", "port"),
            ("oci://quay.io/seed", "unsupported transport"),
            ("HTTP://quay.io/seed", "malformed transport"),
            ("docker://", "missing repository name"),
            ("quay.io/", "missing repository path"),
            ("quay.io/a..b", "separator \"..\""),
            ("quay.io/a_-b", "separator"),
            ("quay.io/-a", "start and end"),
            ("-bad.io/a", "not a valid host"),
            ("[fd00::1/a", "unclosed"),
            (":tag", "missing repository name"),
        ];
        for (input, want) in cases {
            let e = ImageRef::parse(input).expect_err(input).to_string();
            assert!(e.contains(want), "{input:?}: {e}");
            assert!(e.starts_with("invalid image reference"), "{e}");
            assert!(!e.contains('\n'));
        }
    }

    #[test]
    fn uppercase_first_component_is_a_domain() {
        // docker treats it as a registry host, whose name is then validated.
        let r = ImageRef::parse("Registry/seed").unwrap();
        assert_eq!(r.domain.as_deref(), Some("Registry"));
    }

    #[test]
    fn name_length_limit() {
        let long = format!("quay.io/{}", "a".repeat(250));
        let e = ImageRef::parse(&long).unwrap_err().to_string();
        assert!(e.contains("at most 255"), "{e}");
    }
}
