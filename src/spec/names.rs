//! Kubernetes object names, checked the way the API server checks them.
//!
//! On a node, a reference such as `extraManifests[0]: {name, namespace}` becomes a *file path*
//! in the drop-in tree (`/etc/ibu/configmaps/<namespace>/<name>.yaml`, see [`super::refs`]).
//! Accepting only what Kubernetes accepts (RFC 1123 labels and subdomains) keeps documents
//! portable between a cluster and a node, and it is also what makes that path safe: neither
//! form can contain `/`, start with `.`, or contain `..`.

/// Longest RFC 1123 subdomain (object names).
pub const MAX_SUBDOMAIN_LEN: usize = 253;
/// Longest RFC 1123 label (namespaces).
pub const MAX_LABEL_LEN: usize = 63;

fn is_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_LABEL_LEN
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Checks an object name (ConfigMap, Secret, the document itself): an RFC 1123 subdomain.
/// The error explains the rule and quotes the value.
pub fn check_object_name(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() <= MAX_SUBDOMAIN_LEN && s.split('.').all(is_label) {
        return Ok(());
    }
    Err(format!(
        "must be a lowercase RFC 1123 subdomain (a-z, 0-9, '-' and '.', starting and ending \
         with a letter or digit, at most {MAX_SUBDOMAIN_LEN} characters), got {s:?}"
    ))
}

/// Checks a namespace: an RFC 1123 label.
pub fn check_namespace(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if is_label(s) {
        return Ok(());
    }
    Err(format!(
        "must be a lowercase RFC 1123 label (a-z, 0-9 and '-', starting and ending with a \
         letter or digit, at most {MAX_LABEL_LEN} characters), got {s:?}"
    ))
}

/// Checks a key of a ConfigMap's or Secret's `data` (Kubernetes: `[-._a-zA-Z0-9]+`, not `.`
/// or `..`, at most 253 characters).
pub fn check_data_key(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= MAX_SUBDOMAIN_LEN
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid key {s:?}: keys consist of letters, digits, '-', '_' and '.' (at most \
             {MAX_SUBDOMAIN_LEN} characters)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names() {
        for ok in ["upgrade", "example-upgrade", "oadp-cm.v1", "a", "0abc"] {
            assert!(check_object_name(ok).is_ok(), "{ok}");
        }
        let long = "a".repeat(254);
        for bad in [
            "",
            "Upgrade",
            "-a",
            "a-",
            "a..b",
            ".a",
            "../x",
            "a/b",
            "<seed_pull_secret>",
            long.as_str(),
        ] {
            assert!(check_object_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn namespaces() {
        assert!(check_namespace("openshift-lifecycle-agent").is_ok());
        for bad in ["", "a.b", "A", "x/y", &"a".repeat(64)] {
            assert!(check_namespace(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn data_keys() {
        for ok in [".dockerconfigjson", "images.txt", "a_b-c"] {
            assert!(check_data_key(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a b"] {
            assert!(check_data_key(bad).is_err(), "{bad}");
        }
    }
}
