//! Typed registry errors: the failures a caller branches on, each with a message an operator
//! can act on.
//!
//! ibu runs unattended under systemd; its status and journal are all an operator sees. So a
//! wrong password says *which* registry and user, a missing CA says *where* the certificate
//! goes, and a dead registry names the `host:port` that refused. Callers branch on the variant:
//! [`RegistryError::RangeNotSupported`] → fetch the whole blob instead;
//! [`RegistryError::NotFound`] → the seed reference is wrong; [`RegistryError::Unauthorized`]
//! → credentials. Public methods return `anyhow::Error`s whose chain holds one of these; find it
//! with [`RegistryError::find`]. Messages never contain a password or token.

use std::fmt;
use std::path::{Path, PathBuf};

/// What was not found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotFoundKind {
    Manifest,
    Blob,
    Repository,
}

impl fmt::Display for NotFoundKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NotFoundKind::Manifest => "manifest",
            NotFoundKind::Blob => "blob",
            NotFoundKind::Repository => "repository",
        })
    }
}

/// Why a TLS handshake failed, as far as the fix differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsProblem {
    /// The certificate chain does not lead to a trusted CA.
    UnknownIssuer,
    /// The certificate does not name the host.
    WrongName,
    /// The certificate is expired or not yet valid.
    Expired,
    /// The server does not speak TLS at all (plain HTTP on that port).
    NotTls,
    Other,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The registry refused the credentials, or needs some and none were given.
    #[error("{}", unauthorized(.registry, .user.as_deref(), .authfile.as_deref()))]
    Unauthorized {
        registry: String,
        user: Option<String>,
        authfile: Option<PathBuf>,
    },

    /// Authenticated, but not allowed to pull (HTTP 403).
    #[error("registry {registry}: {} is not allowed to pull {repository}", user_phrase(.user.as_deref()))]
    Denied {
        registry: String,
        repository: String,
        user: Option<String>,
    },

    #[error("registry {registry}: {kind} {reference} not found")]
    NotFound {
        registry: String,
        kind: NotFoundKind,
        /// `registry/repo:tag`, `registry/repo@digest`, or the blob digest.
        reference: String,
    },

    /// The server answered a range request with the whole blob (HTTP 200).
    #[error(
        "registry {registry} does not support range requests on blob {digest} (it answered \
         with the whole blob)"
    )]
    RangeNotSupported { registry: String, digest: String },

    #[error("registry {registry}: {what} has digest {actual}, expected {expected}")]
    DigestMismatch {
        registry: String,
        /// `manifest REF` or `blob DIGEST`.
        what: String,
        expected: String,
        actual: String,
    },

    #[error("registry {registry}: blob {digest} has {actual} bytes, expected {expected}")]
    SizeMismatch {
        registry: String,
        digest: String,
        expected: u64,
        actual: u64,
    },

    /// An image index without a manifest for this machine.
    #[error(
        "registry {registry}: image index {reference} has no manifest for {wanted} (it has: {})",
        if available.is_empty() { "none".to_string() } else { available.join(", ") }
    )]
    NoPlatform {
        registry: String,
        reference: String,
        wanted: String,
        available: Vec<String>,
    },

    #[error("{}", tls(.endpoint, *.problem, .detail, .ca_dir))]
    Tls {
        /// `host:port` of the server whose handshake failed.
        endpoint: String,
        problem: TlsProblem,
        detail: String,
        /// Where a CA certificate for it would be read from.
        ca_dir: PathBuf,
    },

    /// Nothing answers at `endpoint` (refused, unresolvable, unreachable, timed out).
    #[error("cannot connect to registry {endpoint}: {detail}")]
    Unreachable { endpoint: String, detail: String },

    /// `registries.conf` blocks the image.
    #[error("pulling {reference} is blocked by {}", .config.display())]
    Blocked { reference: String, config: PathBuf },

    /// An HTTP status the operation does not expect.
    #[error("registry {registry}: {operation} failed with HTTP {status}{}", server_message(.message))]
    Status {
        registry: String,
        operation: String,
        status: u16,
        /// The registry's own explanation (its `errors[].message`), if any.
        message: String,
    },

    /// A malformed answer, or a transfer that broke off.
    #[error("registry {registry}: {detail}")]
    Protocol { registry: String, detail: String },
}

impl RegistryError {
    /// The registry error in an `anyhow` chain, if any.
    pub fn find(err: &anyhow::Error) -> Option<&RegistryError> {
        err.chain().find_map(|e| {
            e.downcast_ref::<RegistryError>().or_else(|| {
                e.downcast_ref::<std::io::Error>()
                    .and_then(RegistryError::from_io)
            })
        })
    }

    /// The registry error inside an `io::Error` (as [`super::BlobReader`] reports them).
    pub fn from_io(err: &std::io::Error) -> Option<&RegistryError> {
        err.get_ref()
            .and_then(|e| e.downcast_ref::<RegistryError>())
    }

    pub(crate) fn into_io(self) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidData, self)
    }
}

fn user_phrase(user: Option<&str>) -> String {
    match user {
        Some(u) => format!("user {u:?}"),
        None => "an anonymous client".to_string(),
    }
}

fn unauthorized(registry: &str, user: Option<&str>, authfile: Option<&Path>) -> String {
    match (user, authfile) {
        (Some(u), _) => format!(
            "registry {registry}: authentication failed for user {u:?} (wrong user name or \
             password?)"
        ),
        (None, Some(f)) => format!(
            "registry {registry}: authentication required, and authfile {} has no credentials \
             for it (podman login --authfile {} {registry})",
            f.display(),
            f.display()
        ),
        (None, None) => format!(
            "registry {registry}: authentication required, and no authfile with credentials was \
             given"
        ),
    }
}

fn tls(endpoint: &str, problem: TlsProblem, detail: &str, ca_dir: &Path) -> String {
    let ca = ca_dir.display();
    match problem {
        TlsProblem::UnknownIssuer => format!(
            "registry {endpoint}: TLS certificate verification failed: the certificate is signed \
             by an unknown authority ({detail}); put the CA certificate that signed it (PEM, in a \
             file named *.crt) in {ca}/ or pass another directory as the cert dir (like skopeo \
             --cert-dir), or use --tls-verify=false to skip verification"
        ),
        TlsProblem::WrongName => format!(
            "registry {endpoint}: TLS certificate verification failed: the certificate is not \
             valid for this host name ({detail}); use the name or address the certificate was \
             issued for, or --tls-verify=false to skip verification"
        ),
        TlsProblem::Expired => format!(
            "registry {endpoint}: TLS certificate verification failed: the certificate is \
             expired or not yet valid ({detail}); check the registry's certificate and this \
             host's clock"
        ),
        TlsProblem::NotTls => format!(
            "registry {endpoint}: the server does not speak TLS on this port ({detail}); if it \
             serves plain HTTP, mark it insecure = true in registries.conf or use \
             --tls-verify=false"
        ),
        TlsProblem::Other => format!("registry {endpoint}: TLS handshake failed: {detail}"),
    }
}

fn server_message(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

/// The `host:port` of a URL's authority, with the scheme's default port made explicit.
pub(crate) fn endpoint_of(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("https", url));
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let has_port = match authority.rfind(']') {
        Some(i) => authority[i..].contains(':'),
        None => authority.contains(':'),
    };
    if has_port {
        authority.to_string()
    } else if scheme == "http" {
        format!("{authority}:80")
    } else {
        format!("{authority}:443")
    }
}

/// Turn a transport failure of a request to `url` into a registry error. `ca_dir` is where a CA
/// for that host would be read from.
pub(crate) fn classify(err: ureq::Error, url: &str, ca_dir: &Path) -> RegistryError {
    let endpoint = endpoint_of(url);
    let unreachable = |detail: String| RegistryError::Unreachable {
        endpoint: endpoint.clone(),
        detail,
    };
    match err {
        ureq::Error::Io(io) => {
            if let Some(tls_err) = io.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
                return tls_error(&endpoint, tls_err, ca_dir);
            }
            use std::io::ErrorKind as K;
            let detail = match io.kind() {
                K::ConnectionRefused => format!(
                    "connection refused (is the registry running and listening on {endpoint}?)"
                ),
                K::TimedOut => "connection timed out".to_string(),
                K::HostUnreachable | K::NetworkUnreachable => {
                    format!("{endpoint} is unreachable ({io})")
                }
                K::ConnectionReset | K::ConnectionAborted | K::UnexpectedEof => {
                    format!("the connection was closed by the server ({io})")
                }
                _ => io.to_string(),
            };
            unreachable(detail)
        }
        ureq::Error::Rustls(tls_err) => tls_error(&endpoint, &tls_err, ca_dir),
        ureq::Error::HostNotFound => {
            unreachable("the host name does not resolve (DNS lookup failed)".to_string())
        }
        ureq::Error::ConnectionFailed => unreachable("the connection failed".to_string()),
        ureq::Error::Timeout(t) => unreachable(format!("timed out ({t})")),
        ureq::Error::Tls(msg) => RegistryError::Tls {
            endpoint,
            problem: TlsProblem::Other,
            detail: msg.to_string(),
            ca_dir: ca_dir.to_path_buf(),
        },
        other => RegistryError::Protocol {
            registry: endpoint,
            detail: format!(
                "request to {} failed: {other}",
                super::http::without_query(url)
            ),
        },
    }
}

fn tls_error(endpoint: &str, err: &rustls::Error, ca_dir: &Path) -> RegistryError {
    use rustls::CertificateError as C;
    let problem = match err {
        rustls::Error::InvalidCertificate(c) => match c {
            C::UnknownIssuer => TlsProblem::UnknownIssuer,
            C::NotValidForName | C::NotValidForNameContext { .. } => TlsProblem::WrongName,
            C::Expired
            | C::ExpiredContext { .. }
            | C::NotValidYet
            | C::NotValidYetContext { .. } => TlsProblem::Expired,
            _ => TlsProblem::Other,
        },
        rustls::Error::InvalidMessage(_) => TlsProblem::NotTls,
        _ => TlsProblem::Other,
    };
    RegistryError::Tls {
        endpoint: endpoint.to_string(),
        problem,
        detail: err.to_string(),
        ca_dir: ca_dir.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_name_host_and_port() {
        assert_eq!(endpoint_of("https://quay.io/v2/"), "quay.io:443");
        assert_eq!(endpoint_of("http://quay.io/v2/"), "quay.io:80");
        assert_eq!(endpoint_of("https://127.0.0.1:5000/v2/x"), "127.0.0.1:5000");
        assert_eq!(endpoint_of("https://[fd00::1]/v2/"), "[fd00::1]:443");
        assert_eq!(endpoint_of("https://[fd00::1]:5000?x"), "[fd00::1]:5000");
    }

    #[test]
    fn unauthorized_messages() {
        let e = RegistryError::Unauthorized {
            registry: "127.0.0.1:5000".into(),
            user: Some("ibu".into()),
            authfile: Some("/run/auth.json".into()),
        };
        assert_eq!(
            e.to_string(),
            "registry 127.0.0.1:5000: authentication failed for user \"ibu\" (wrong user name \
             or password?)"
        );
        let e = RegistryError::Unauthorized {
            registry: "quay.io".into(),
            user: None,
            authfile: Some("/run/auth.json".into()),
        };
        assert!(
            e.to_string()
                .contains("authfile /run/auth.json has no credentials")
        );
    }

    #[test]
    fn tls_unknown_ca_says_where_the_ca_goes() {
        let e = tls_error(
            "127.0.0.1:5000",
            &rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
            Path::new("/etc/containers/certs.d/127.0.0.1:5000"),
        );
        let m = e.to_string();
        assert!(m.contains("/etc/containers/certs.d/127.0.0.1:5000/"), "{m}");
        assert!(m.contains("--tls-verify=false"), "{m}");
        assert!(m.contains("unknown authority"), "{m}");
    }

    #[test]
    fn finds_errors_through_context_and_io() {
        let e = anyhow::Error::new(RegistryError::RangeNotSupported {
            registry: "r".into(),
            digest: "sha256:x".into(),
        })
        .context("fetching objects");
        assert!(matches!(
            RegistryError::find(&e),
            Some(RegistryError::RangeNotSupported { .. })
        ));
        let io = RegistryError::SizeMismatch {
            registry: "r".into(),
            digest: "d".into(),
            expected: 1,
            actual: 2,
        }
        .into_io();
        let e = anyhow::Error::new(io).context("reading layer");
        assert!(matches!(
            RegistryError::find(&e),
            Some(RegistryError::SizeMismatch { .. })
        ));
    }
}
