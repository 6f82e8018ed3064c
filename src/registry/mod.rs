//! A small, synchronous client for the OCI distribution API v2: what ibu needs to read a seed
//! image straight from its registry.
//!
//! A target never pulls the seed image. It reads the manifest and the config (the seed's labels
//! decide compatibility before anything large moves), then fetches only the ostree objects it
//! lacks, as HTTP range requests into the seed's uncompressed pack layers
//! ([`crate::seed::format`]). That needs range requests on blobs, which podman and skopeo do not
//! offer — hence this client. It deliberately behaves like them where they overlap, so a node
//! configured for podman pulls works for ibu unchanged:
//!
//! - **Credentials** from an authfile (containers-auth.json(5); [`AuthFile`]), anonymous first,
//!   then the registry's `WWW-Authenticate` challenge: Basic or the Bearer token flow.
//! - **TLS** by default, trusting the system CA bundle plus `*.crt` in
//!   `/etc/containers/certs.d/<host[:port]>/` (or [`ClientOptions::cert_dir`], skopeo's
//!   `--cert-dir`). Plain HTTP and unverified TLS only for a registry marked
//!   `insecure = true` in registries.conf ([`RegistriesConf`]) or with
//!   [`ClientOptions::tls_verify`] `= Some(false)` (skopeo's `--tls-verify=false`); like
//!   podman, an insecure registry is tried over HTTPS (unverified) first, then plain HTTP.
//! - **Verification**: a manifest named by digest, the config and every whole blob are checked
//!   against their digests ([`RegistryError::DigestMismatch`]).
//!
//! HTTP is ureq 3 with rustls (pure Rust, no OpenSSL to build or link; a blocking API fits
//! ibu's single-shot reconciler, no async runtime). Its agent pools connections, so the
//! thousands of range requests of one upgrade reuse a few keep-alive connections.
//! [`Client::bytes_downloaded`] counts every body byte received.
//!
//! Errors are `anyhow` errors whose chain holds a [`RegistryError`] when the caller may want to
//! branch (find it with [`RegistryError::find`]). Passwords and tokens appear in no message,
//! log line or `Debug` output.

mod auth;
mod blob;
mod challenge;
mod conf;
mod digest;
mod error;
mod http;
mod manifest;
mod tls;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

pub use auth::{AuthFile, Credentials};
pub use blob::BlobReader;
pub use challenge::{Challenge, parse_challenges};
pub use conf::{DEFAULT_REGISTRIES_CONF, DEFAULT_REGISTRIES_CONF_D, RegistriesConf, RegistryEntry};
pub use error::{NotFoundKind, RegistryError, TlsProblem};
pub use http::ByteCounter;
pub use manifest::{FetchedConfig, FetchedManifest};
pub use tls::DEFAULT_CERTS_D;

use crate::oci::{Descriptor, ImageManifest};
use crate::spec::image_ref::ImageRef;
use digest::Verifier;
use http::Transport;

/// Docker Hub's API host (its references say `docker.io`).
const DOCKER_HUB_API: &str = "registry-1.docker.io";
/// Connect (TCP + TLS) timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for a response's headers, and for each read of a body.
const IO_TIMEOUT: Duration = Duration::from_secs(120);
/// Idle keep-alive connections kept per host (callers may fetch from several threads).
const IDLE_PER_HOST: usize = 8;

/// How to reach and trust a registry.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Authfile with the credentials (containers-auth.json(5) or docker `config.json`);
    /// `None`: anonymous unless [`ClientOptions::credentials`] is set.
    pub authfile: Option<PathBuf>,
    /// Explicit credentials (skopeo's `--creds`); win over the authfile.
    pub credentials: Option<Credentials>,
    /// `Some(false)`: skopeo's `--tls-verify=false` (plain HTTP or unverified TLS);
    /// `Some(true)`: verified TLS even if registries.conf marks the registry insecure;
    /// `None`: as registries.conf says (verified TLS unless `insecure = true`).
    pub tls_verify: Option<bool>,
    /// A directory of `*.crt` CA certificates used *instead of* `certs_d/<host[:port]>`
    /// (skopeo's `--cert-dir`).
    pub cert_dir: Option<PathBuf>,
    /// The containers-certs.d(5) root.
    pub certs_d: PathBuf,
    /// containers-registries.conf(5) and its drop-in directory.
    pub registries_conf: PathBuf,
    pub registries_conf_d: Option<PathBuf>,
    /// OCI architecture to pick from an image index (`amd64`); `None`: this machine's.
    pub arch: Option<String>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            authfile: None,
            credentials: None,
            tls_verify: None,
            cert_dir: None,
            certs_d: PathBuf::from(DEFAULT_CERTS_D),
            registries_conf: PathBuf::from(DEFAULT_REGISTRIES_CONF),
            registries_conf_d: Some(PathBuf::from(DEFAULT_REGISTRIES_CONF_D)),
            arch: None,
        }
    }
}

/// A client for one image's repository on one registry.
pub struct Client {
    transport: Transport,
    /// The tag or digest the image reference names (`latest` when neither).
    reference: String,
    /// OCI architecture picked from image indexes.
    arch: String,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = &self.transport;
        f.debug_struct("Client")
            .field("origin", &t.origin)
            .field("registry", &t.registry)
            .field("repository", &t.repository)
            .field("reference", &self.reference)
            .field("user", &t.creds.as_ref().map(Credentials::username))
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Resolve credentials and TLS policy for `image`'s registry and check that it answers
    /// (`GET /v2/`), which also learns its authentication challenge and, for an insecure
    /// registry, whether it speaks HTTPS or plain HTTP.
    pub fn new(image: &ImageRef, opts: &ClientOptions) -> Result<Client> {
        let registry = auth::registry_key(image);
        let qualified = auth::qualified_name(image);
        let repository = qualified
            .strip_prefix(&format!("{registry}/"))
            .unwrap_or(&image.path)
            .to_string();
        let api_host = match image.domain.as_deref() {
            Some(d) if registry != auth::DOCKER_HUB => d.to_string(),
            _ => DOCKER_HUB_API.to_string(),
        };
        let reference = image
            .digest
            .clone()
            .or_else(|| image.tag.clone())
            .unwrap_or_else(|| "latest".to_string());

        let conf = RegistriesConf::load(&opts.registries_conf, opts.registries_conf_d.as_deref())?;
        let full_ref = match (&image.tag, &image.digest) {
            (_, Some(d)) => format!("{qualified}@{d}"),
            (Some(t), None) => format!("{qualified}:{t}"),
            (None, None) => qualified.clone(),
        };
        let entry = conf.find(&full_ref);
        if let Some(e) = entry.filter(|e| e.blocked) {
            return Err(RegistryError::Blocked {
                reference: image.to_string(),
                config: e.source.clone(),
            }
            .into());
        }
        let insecure = match opts.tls_verify {
            Some(verify) => !verify,
            None => entry.is_some_and(|e| e.insecure),
        };

        let creds = match (&opts.credentials, &opts.authfile) {
            (Some(c), _) => Some(c.clone()),
            (None, Some(path)) => AuthFile::load(path)
                .and_then(|f| f.lookup(image))
                .with_context(|| format!("credentials for registry {registry}"))?,
            (None, None) => None,
        };

        let ca_dir = opts
            .cert_dir
            .clone()
            .unwrap_or_else(|| tls::ca_dir_for(&opts.certs_d, &registry));
        let extra_cas = if insecure {
            Vec::new()
        } else {
            tls::load_ca_dir(&ca_dir)
                .with_context(|| format!("CA certificates for registry {registry}"))?
        };
        let tls_config = tls::tls_config(!insecure, extra_cas)?;
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .max_redirects_will_error(false)
            .user_agent(concat!("ibu/", env!("CARGO_PKG_VERSION")))
            .tls_config(tls_config)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_recv_response(Some(IO_TIMEOUT))
            .timeout_per_read(Some(IO_TIMEOUT))
            .max_idle_connections_per_host(IDLE_PER_HOST)
            .build()
            .new_agent();
        let counter = ByteCounter::default();
        let transport = |scheme: &str| {
            Transport::new(
                agent.clone(),
                format!("{scheme}://{api_host}"),
                registry.clone(),
                repository.clone(),
                creds.clone(),
                opts.authfile.clone(),
                opts.cert_dir.clone(),
                opts.certs_d.clone(),
                counter.clone(),
            )
        };

        let https = transport("https");
        let transport = match https.ping() {
            Ok(()) => https,
            Err(e) if insecure && falls_back_to_http(&e) => {
                tracing::debug!(registry, error = %e, "insecure registry: HTTPS failed, trying HTTP");
                let http = transport("http");
                http.ping()?;
                http
            }
            Err(e) => return Err(e.into()),
        };
        tracing::debug!(
            origin = transport.origin,
            repository,
            "registry client ready"
        );
        let arch = match &opts.arch {
            Some(a) => a.clone(),
            None => this_arch(),
        };
        Ok(Client {
            transport,
            reference,
            arch,
        })
    }

    /// The registry as the image reference names it (`127.0.0.1:5000`, `docker.io`).
    pub fn registry(&self) -> &str {
        &self.transport.registry
    }

    /// The repository path (`ibu/seed`; `library/busybox` on Docker Hub).
    pub fn repository(&self) -> &str {
        &self.transport.repository
    }

    /// `https://host[:port]` or, for an insecure registry that does not speak TLS, `http://...`.
    pub fn origin(&self) -> &str {
        &self.transport.origin
    }

    /// The user whose credentials are used, if any.
    pub fn user(&self) -> Option<&str> {
        self.transport.creds.as_ref().map(Credentials::username)
    }

    /// Resolve the image reference (tag or digest) to an image manifest. An image index (or
    /// Docker manifest list) resolves to its `linux/<arch>` manifest. A manifest named by digest
    /// is verified against it; a manifest named by tag against the registry's
    /// `Docker-Content-Digest`, when sent.
    pub fn manifest(&self) -> Result<FetchedManifest> {
        manifest::resolve(&self.transport, &self.reference, &self.arch)
    }

    /// The image configuration of `manifest` (the seed's labels), verified against its digest.
    pub fn config(&self, manifest: &ImageManifest) -> Result<FetchedConfig> {
        manifest::config(&self.transport, manifest)
    }

    /// A streaming reader over the blob `desc` that verifies its size and digest by EOF.
    pub fn blob_reader(&self, desc: &Descriptor) -> Result<BlobReader> {
        let t = &self.transport;
        let verifier = Verifier::new(&desc.digest)
            .map_err(|e| anyhow::anyhow!("registry {}: cannot verify a blob: {e}", t.registry))?;
        let resp = blob::get_blob(t, &desc.digest, &[])?;
        let length = resp
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if let Some(actual) = length.filter(|&l| l != desc.size) {
            return Err(RegistryError::SizeMismatch {
                registry: t.registry.clone(),
                digest: desc.digest.clone(),
                expected: desc.size,
                actual,
            }
            .into());
        }
        Ok(BlobReader::new(
            t.body_reader(resp),
            verifier,
            desc.size,
            t.registry.clone(),
        ))
    }

    /// The bytes of each `(offset, len)` range of blob `digest`, fetched with `Range` requests
    /// one after another over the pooled connection(s). Coalescing neighbouring ranges is the
    /// caller's business. A server that ignores `Range` yields
    /// [`RegistryError::RangeNotSupported`]: fall back to [`Client::blob_reader`].
    pub fn blob_ranges(&self, digest: &str, ranges: &[(u64, u64)]) -> Result<Vec<Vec<u8>>> {
        Ok(blob::fetch_ranges(&self.transport, digest, ranges)?)
    }

    /// Bytes of response bodies downloaded so far (manifests, configs, blobs, ranges, tokens,
    /// error bodies), including what open [`BlobReader`]s read.
    pub fn bytes_downloaded(&self) -> u64 {
        self.transport.counter.get()
    }

    /// The counter behind [`Client::bytes_downloaded`], to watch from elsewhere.
    pub fn byte_counter(&self) -> ByteCounter {
        self.transport.counter.clone()
    }

    /// HTTP requests sent so far (including redirect hops and token requests).
    pub fn requests_sent(&self) -> u64 {
        self.transport.requests()
    }
}

/// After which HTTPS failures an insecure registry is tried over plain HTTP.
fn falls_back_to_http(e: &RegistryError) -> bool {
    matches!(
        e,
        RegistryError::Tls { .. }
            | RegistryError::Unreachable { .. }
            | RegistryError::Protocol { .. }
            | RegistryError::Status { .. }
    )
}

/// This machine's OCI architecture (`uname -m`, mapped: `x86_64` → `amd64`).
fn this_arch() -> String {
    let machine = nix::sys::utsname::uname()
        .ok()
        .and_then(|u| u.machine().to_str().map(str::to_string))
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    crate::oci::oci_arch(&machine).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_and_readers_cross_threads() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>() {}
        send_sync::<Client>();
        send::<BlobReader>();
        send_sync::<RegistryError>();
    }

    #[test]
    fn options_debug_hides_the_password() {
        let opts = ClientOptions {
            credentials: Some(Credentials::new("ibu", "s3cret")),
            ..ClientOptions::default()
        };
        let d = format!("{opts:?}");
        assert!(d.contains("ibu") && !d.contains("s3cret"), "{d}");
    }

    #[test]
    fn this_machine_has_an_oci_arch() {
        let arch = this_arch();
        assert!(
            !arch.is_empty() && arch != "x86_64" && arch != "aarch64",
            "{arch}"
        );
    }
}
