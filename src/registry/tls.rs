//! Which certificate authorities the client trusts.
//!
//! Registries for disconnected clusters usually have certificates from an in-house CA. podman
//! and skopeo trust, for a registry `host:port`, the system's CA bundle plus every `*.crt` in
//! `/etc/containers/certs.d/host:port/` (containers-certs.d(5)); skopeo's `--cert-dir DIR` reads
//! `DIR` instead of that directory. ibu does the same, so a node set up for podman pulls works
//! for ibu unchanged.
//!
//! The system bundle is read from the file `SSL_CERT_FILE` names, or the distribution's usual
//! place (Debian, Fedora/RHEL, SUSE); rustls gets the certificates directly (no OpenSSL). On a
//! system without a bundle, Mozilla's roots compiled into the binary (`webpki-roots`) stand in.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};

/// Where containers-certs.d(5) directories live.
pub const DEFAULT_CERTS_D: &str = "/etc/containers/certs.d";

/// System CA bundles, first found wins.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// The certificate directory for `host_port` under `certs_d`.
pub fn ca_dir_for(certs_d: &Path, host_port: &str) -> PathBuf {
    certs_d.join(host_port)
}

/// The CA certificates (`*.crt`, sorted) in `dir`; a missing directory holds none.
pub fn load_ca_dir(dir: &Path) -> Result<Vec<Certificate<'static>>> {
    let rd = match fs_err::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).context("reading the registry certificate directory"),
    };
    let mut files = Vec::new();
    for entry in rd {
        let path = entry
            .with_context(|| format!("listing {}", dir.display()))?
            .path();
        if path.extension().is_some_and(|e| e == "crt") {
            files.push(path);
        }
    }
    files.sort();
    let mut certs = Vec::new();
    for file in files {
        let pem = fs_err::read(&file).context("reading a registry CA certificate")?;
        let found = parse_certs(&pem)
            .with_context(|| format!("{} is not a PEM certificate file", file.display()))?;
        if found.is_empty() {
            anyhow::bail!("{} holds no PEM certificate", file.display());
        }
        certs.extend(found);
    }
    Ok(certs)
}

fn parse_certs(pem: &[u8]) -> Result<Vec<Certificate<'static>>> {
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(pem) {
        if let PemItem::Certificate(c) = item.map_err(|e| anyhow::anyhow!("{e}"))? {
            certs.push(c);
        }
    }
    Ok(certs)
}

/// The system's CA certificates, or `None` when the system has no bundle.
fn system_roots() -> Result<Option<Vec<Certificate<'static>>>> {
    let from_env = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
    let bundle = from_env.or_else(|| {
        SYSTEM_BUNDLES
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
    });
    let Some(bundle) = bundle else {
        return Ok(None);
    };
    let pem = fs_err::read(&bundle).context("reading the system CA bundle")?;
    let certs = parse_certs(&pem)
        .with_context(|| format!("parsing the system CA bundle {}", bundle.display()))?;
    Ok(Some(certs))
}

/// The TLS configuration: verification off (insecure registries, `--tls-verify=false`), or the
/// system roots plus `extra`.
pub fn tls_config(verify: bool, extra: Vec<Certificate<'static>>) -> Result<TlsConfig> {
    let builder = TlsConfig::builder();
    if !verify {
        return Ok(builder.disable_verification(true).build());
    }
    let roots = match system_roots()? {
        Some(mut system) => {
            system.extend(extra);
            RootCerts::from(system)
        }
        None if extra.is_empty() => RootCerts::WebPki,
        None => {
            tracing::warn!(
                "no system CA bundle found; trusting only the registry's CA certificates"
            );
            RootCerts::from(extra)
        }
    };
    Ok(builder.root_certs(roots).build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_ca_dir_is_empty_and_bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load_ca_dir(&dir.path().join("none")).unwrap().is_empty());
        std::fs::write(dir.path().join("client.cert"), "ignored").unwrap();
        assert!(load_ca_dir(dir.path()).unwrap().is_empty());
        std::fs::write(dir.path().join("ca.crt"), "not a certificate").unwrap();
        let e = format!("{:#}", load_ca_dir(dir.path()).unwrap_err());
        assert!(e.contains("ca.crt"), "{e}");
    }

    #[test]
    fn system_roots_load() {
        // Debian's bundle is there on the build machines; elsewhere, WebPki stands in.
        let cfg = tls_config(true, Vec::new()).unwrap();
        if Path::new(SYSTEM_BUNDLES[0]).is_file() {
            assert!(matches!(cfg.root_certs(), RootCerts::Specific(c) if c.len() > 10));
        }
        assert!(
            tls_config(false, Vec::new())
                .unwrap()
                .disable_verification()
        );
        assert_eq!(
            ca_dir_for(Path::new(DEFAULT_CERTS_D), "r:5000"),
            Path::new("/etc/containers/certs.d/r:5000")
        );
    }
}
