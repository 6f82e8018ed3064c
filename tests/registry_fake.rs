//! The registry client against small scripted HTTP servers, for what a stock `docker-registry`
//! cannot be made to do: the Bearer token flow (it would need a token server signing JWTs),
//! redirects of blob GETs to another host (a CDN or object store), a server that ignores
//! `Range`, and servers that send wrong bytes. The real-registry tests are `tests/registry.rs`.
//!
//! A [`Fake`] (`tests/common/registry/fake.rs`) is a thread-per-connection HTTP/1.1 server on
//! 127.0.0.x with keep-alive that records every request; the "CDN" listens on 127.0.0.2,
//! another origin than the registry on 127.0.0.1. Every test also checks that no password, token or credential header shows up in
//! what the client logged (all `tracing` and `log` records of this test binary are captured).

mod common;

use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use base64::Engine as _;
use ibu::oci::{
    Descriptor, ImageManifest, MEDIA_TYPE_CONFIG, MEDIA_TYPE_LAYER_TAR, MEDIA_TYPE_MANIFEST,
    sha256_digest,
};
use ibu::registry::{Client, ClientOptions, Credentials, RegistryError};
use ibu::spec::image_ref::ImageRef;

use common::registry::fake::{Fake, Req, Resp, blob_response};

const USER: &str = "robot";
const PASSWORD: &str = "pw-Very-Secret";
const TOKEN: &str = "tok-SECRET";

// ---- an image ----

struct Image {
    manifest: ImageManifest,
    manifest_bytes: Vec<u8>,
    manifest_digest: String,
    config: Vec<u8>,
    layer: Vec<u8>,
}

fn image() -> Image {
    let config = br#"{"architecture":"amd64","os":"linux","config":{"Labels":{"k":"v"}},"rootfs":{"type":"layers","diff_ids":[]}}"#.to_vec();
    let layer: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let desc = |media_type: &str, bytes: &[u8]| Descriptor {
        media_type: media_type.into(),
        digest: sha256_digest(bytes),
        size: bytes.len() as u64,
        annotations: Default::default(),
        platform: None,
    };
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(MEDIA_TYPE_MANIFEST.into()),
        config: desc(MEDIA_TYPE_CONFIG, &config),
        layers: vec![desc(MEDIA_TYPE_LAYER_TAR, &layer)],
        annotations: Default::default(),
    };
    let manifest_bytes = serde_json::to_vec(&manifest).unwrap();
    Image {
        manifest_digest: sha256_digest(&manifest_bytes),
        manifest,
        manifest_bytes,
        config,
        layer,
    }
}

/// Serve `/v2/ibu/seed/...` of `img` (no auth: the caller checks that first).
fn serve_image(req: &Req, img: &Image) -> Resp {
    let p = req.path();
    if p == "/v2/ibu/seed/manifests/v1"
        || p == format!("/v2/ibu/seed/manifests/{}", img.manifest_digest)
    {
        return Resp::new(200)
            .header("Content-Type", MEDIA_TYPE_MANIFEST)
            .body(&img.manifest_bytes);
    }
    if p == format!("/v2/ibu/seed/blobs/{}", img.manifest.config.digest) {
        return Resp::new(200).body(&img.config);
    }
    if p == format!("/v2/ibu/seed/blobs/{}", img.manifest.layers[0].digest) {
        return blob_response(req, &img.layer);
    }
    Resp::new(404).body(br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#)
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

fn opts(dir: &std::path::Path, creds: Option<(&str, &str)>) -> ClientOptions {
    ClientOptions {
        credentials: creds.map(|(u, p)| Credentials::new(u, p)),
        // Plain HTTP: the client tries HTTPS first, gets a 400, and falls back.
        tls_verify: Some(false),
        certs_d: dir.join("certs.d"),
        registries_conf: dir.join("registries.conf"),
        registries_conf_d: None,
        ..ClientOptions::default()
    }
}

fn client_for(fake: &Fake, creds: Option<(&str, &str)>) -> anyhow::Result<Client> {
    let dir = tempfile::tempdir().unwrap();
    let image = ImageRef::parse(&format!("{}/ibu/seed:v1", fake.addr)).unwrap();
    Client::new(&image, &opts(dir.path(), creds))
}

// ---- log capture ----

fn logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
    static INIT: OnceLock<()> = OnceLock::new();
    let buffer = LOGS.get_or_init(|| Mutex::new(Vec::new()));
    INIT.get_or_init(|| {
        struct W;
        impl Write for W {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                logs().lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        // Also installs the `log` → `tracing` bridge, so ureq's records land here too.
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(|| W)
            .with_ansi(false)
            .init();
    });
    buffer
}

/// Nothing logged so far, no error and no Debug output holds a secret. (`SHOW_LOGS=1` prints
/// the captured log.)
fn assert_no_secrets(texts: &[String]) {
    let logged = String::from_utf8_lossy(&logs().lock().unwrap()).into_owned();
    assert!(logged.contains("registry GET"), "nothing was logged");
    if std::env::var_os("SHOW_LOGS").is_some() {
        eprintln!("{logged}");
    }
    let secrets = [
        PASSWORD.to_string(),
        TOKEN.to_string(),
        basic(USER, PASSWORD),
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}")),
        "sig=SIGNATURE".to_string(),
    ];
    for s in &secrets {
        assert!(!logged.contains(s.as_str()), "the log holds {s:?}");
        for t in texts {
            assert!(!t.contains(s.as_str()), "{t:?} holds {s:?}");
        }
    }
}

// ---- tests ----

#[test]
fn bearer_token_flow_is_cached_and_renewed() {
    logs();
    let img = Arc::new(image());
    let tokens_issued = Arc::new(AtomicUsize::new(0));
    let valid = Arc::new(Mutex::new(String::new()));
    let realm = Arc::new(OnceLock::<String>::new());
    let (t, v, r, i) = (
        tokens_issued.clone(),
        valid.clone(),
        realm.clone(),
        img.clone(),
    );
    let fake = Fake::start("127.0.0.1", move |req| {
        let challenge = format!(
            r#"Bearer realm="{}",service="fake registry",scope="repository:ibu/seed:pull""#,
            r.get().unwrap()
        );
        if req.path() == "/token" {
            if req.header("authorization") != Some(&basic(USER, PASSWORD)) {
                return Resp::new(401);
            }
            assert_eq!(req.query("service").as_deref(), Some("fake registry"));
            assert_eq!(
                req.query("scope").as_deref(),
                Some("repository:ibu/seed:pull")
            );
            let n = t.fetch_add(1, Ordering::SeqCst) + 1;
            let token = format!("{TOKEN}-{n}");
            *v.lock().unwrap() = token.clone();
            // Token servers answer with `token`, OAuth-style ones with `access_token`.
            let body = if n % 2 == 1 {
                format!(r#"{{"token":"{token}","expires_in":300}}"#)
            } else {
                format!(r#"{{"access_token":"{token}"}}"#)
            };
            return Resp::new(200).body(body.as_bytes());
        }
        let want = format!("Bearer {}", v.lock().unwrap());
        if req.header("authorization") != Some(want.as_str()) {
            return Resp::new(401).header("WWW-Authenticate", &challenge);
        }
        if req.path() == "/v2/" {
            return Resp::new(200).body(b"{}");
        }
        serve_image(req, &i)
    });
    realm.set(format!("{}/token", fake.url())).unwrap();

    let client = client_for(&fake, Some((USER, PASSWORD))).unwrap();
    let m = client.manifest().unwrap();
    assert_eq!(m.digest, img.manifest_digest);
    let labels = client.config(&m.manifest).unwrap().config.config.labels;
    assert_eq!(labels["k"], "v");
    let parts = client
        .blob_ranges(&img.manifest.layers[0].digest, &[(10, 20), (1000, 5)])
        .unwrap();
    assert_eq!(parts[0], img.layer[10..30]);
    assert_eq!(
        tokens_issued.load(Ordering::SeqCst),
        1,
        "the token is cached"
    );

    // The server forgets the token (expiry, revocation): one 401, a new token, a retry.
    *valid.lock().unwrap() = "revoked".into();
    assert_eq!(client.manifest().unwrap().digest, img.manifest_digest);
    assert_eq!(tokens_issued.load(Ordering::SeqCst), 2);
    assert_eq!(client.manifest().unwrap().digest, img.manifest_digest);
    assert_eq!(tokens_issued.load(Ordering::SeqCst), 2);

    // A wrong password is refused by the token server.
    let bad = client_for(&fake, Some((USER, "wrong"))).unwrap();
    let e = bad.manifest().unwrap_err();
    assert!(matches!(
        RegistryError::find(&e),
        Some(RegistryError::Unauthorized { user: Some(u), .. }) if u == USER
    ));
    let host = fake.addr.to_string();
    assert!(
        format!("{e:#}").contains(&format!(
            "registry {host}: authentication failed for user \"robot\""
        )),
        "{e:#}"
    );
    assert_no_secrets(&[format!("{e:#}"), format!("{e:?}"), format!("{client:?}")]);
}

#[test]
fn redirected_blobs_keep_range_and_never_get_credentials() {
    logs();
    let img = Arc::new(image());
    let i = img.clone();
    let cdn = Fake::start("127.0.0.2", move |req| {
        if req.path().starts_with("/cdn/") {
            blob_response(req, &i.layer)
        } else {
            Resp::new(404)
        }
    });
    let cdn_url = cdn.url();
    let i = img.clone();
    let registry = Fake::start("127.0.0.1", move |req| {
        if req.header("authorization") != Some(&basic(USER, PASSWORD)) {
            return Resp::new(401).header("WWW-Authenticate", r#"Basic realm="fake""#);
        }
        let layer = format!("/v2/ibu/seed/blobs/{}", i.manifest.layers[0].digest);
        if req.path() == layer {
            // Object stores answer with a signed URL on another host.
            return Resp::new(307).header(
                "Location",
                &format!(
                    "{cdn_url}/cdn/{}?sig=SIGNATURE",
                    i.manifest.layers[0].digest
                ),
            );
        }
        if req.path() == "/v2/ibu/seed/manifests/moved" {
            // A relative redirect stays on the registry and keeps the credentials.
            return Resp::new(302).header("Location", "/v2/ibu/seed/manifests/v1");
        }
        if req.path() == "/v2/" {
            return Resp::new(200);
        }
        serve_image(req, &i)
    });

    let client = client_for(&registry, Some((USER, PASSWORD))).unwrap();
    let layer = &img.manifest.layers[0];
    let parts = client
        .blob_ranges(&layer.digest, &[(0, 100), (150_000, 50_000)])
        .unwrap();
    assert_eq!(parts[0], img.layer[..100]);
    assert_eq!(parts[1], img.layer[150_000..]);
    let mut whole = Vec::new();
    client
        .blob_reader(layer)
        .unwrap()
        .read_to_end(&mut whole)
        .unwrap();
    assert_eq!(whole, img.layer);

    let at_cdn = cdn.seen();
    assert_eq!(at_cdn.len(), 3, "{at_cdn:?}");
    for req in &at_cdn {
        assert_eq!(
            req.header("authorization"),
            None,
            "credentials leaked to the CDN"
        );
        assert_eq!(req.query("sig").as_deref(), Some("SIGNATURE"));
    }
    assert_eq!(at_cdn[0].header("range"), Some("bytes=0-99"));
    assert_eq!(at_cdn[1].header("range"), Some("bytes=150000-199999"));
    assert_eq!(at_cdn[2].header("range"), None);
    let blob_gets: Vec<Req> = registry
        .seen()
        .into_iter()
        .filter(|r| r.path().contains("/blobs/"))
        .collect();
    assert!(
        blob_gets
            .iter()
            .all(|r| r.header("authorization").is_some())
    );
    assert_eq!(blob_gets[0].header("range"), Some("bytes=0-99"));

    let image = ImageRef::parse(&format!("{}/ibu/seed:moved", registry.addr)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let moved = Client::new(&image, &opts(dir.path(), Some((USER, PASSWORD)))).unwrap();
    assert_eq!(moved.manifest().unwrap().digest, img.manifest_digest);
    assert_no_secrets(&[format!("{client:?}")]);
}

#[test]
fn a_server_ignoring_range_is_range_not_supported() {
    logs();
    let img = Arc::new(image());
    let i = img.clone();
    let fake = Fake::start("127.0.0.1", move |req| {
        let layer = format!("/v2/ibu/seed/blobs/{}", i.manifest.layers[0].digest);
        if req.path() == layer {
            return Resp::new(200).body(&i.layer);
        }
        if req.path() == "/v2/" {
            return Resp::new(200);
        }
        serve_image(req, &i)
    });
    let client = client_for(&fake, None).unwrap();
    let layer = &img.manifest.layers[0];
    let before = client.bytes_downloaded();
    let e = client.blob_ranges(&layer.digest, &[(5, 10)]).unwrap_err();
    assert!(
        matches!(RegistryError::find(&e), Some(RegistryError::RangeNotSupported { digest, .. }) if *digest == layer.digest),
        "{e:#}"
    );
    assert!(
        client.bytes_downloaded() - before < layer.size,
        "the ignored range's whole blob must not be downloaded"
    );
    // The caller's fallback: the whole blob, verified.
    let n = std::io::copy(
        &mut client.blob_reader(layer).unwrap(),
        &mut std::io::sink(),
    )
    .unwrap();
    assert_eq!(n, layer.size);
}

#[test]
fn wrong_sizes_and_digests_are_caught() {
    logs();
    let img = Arc::new(image());
    let i = img.clone();
    let fake = Fake::start("127.0.0.1", move |req| {
        let p = req.path();
        if p == "/v2/" {
            return Resp::new(200);
        }
        if p == format!("/v2/ibu/seed/blobs/{}", i.manifest.layers[0].digest) {
            return Resp::new(200).body(&i.layer[1..]); // one byte short
        }
        if p == format!("/v2/ibu/seed/blobs/{}", i.manifest.config.digest) {
            let mut c = i.config.clone();
            c[0] = b' '; // same size, other digest
            return Resp::new(200).body(&c);
        }
        if p == "/v2/ibu/seed/manifests/lying" {
            return Resp::new(200)
                .header("Content-Type", MEDIA_TYPE_MANIFEST)
                .header("Docker-Content-Digest", &sha256_digest(b"other"))
                .body(&i.manifest_bytes);
        }
        if p.starts_with("/v2/ibu/seed/manifests/sha256:") {
            // Whatever digest is asked for, the same bytes come back.
            return Resp::new(200)
                .header("Content-Type", MEDIA_TYPE_MANIFEST)
                .body(&i.manifest_bytes);
        }
        serve_image(req, &i)
    });
    let client = client_for(&fake, None).unwrap();

    let e = client.blob_reader(&img.manifest.layers[0]).unwrap_err();
    assert!(
        matches!(RegistryError::find(&e), Some(RegistryError::SizeMismatch { expected, actual, .. }) if *expected == 200_000 && *actual == 199_999),
        "{e:#}"
    );
    let e = client.config(&img.manifest).unwrap_err();
    assert!(
        matches!(
            RegistryError::find(&e),
            Some(RegistryError::DigestMismatch { .. })
        ),
        "{e:#}"
    );

    let dir = tempfile::tempdir().unwrap();
    let other = sha256_digest(b"another manifest");
    for reference in [format!("ibu/seed@{other}"), "ibu/seed:lying".to_string()] {
        let image = ImageRef::parse(&format!("{}/{reference}", fake.addr)).unwrap();
        let e = Client::new(&image, &opts(dir.path(), None))
            .unwrap()
            .manifest()
            .unwrap_err();
        match RegistryError::find(&e) {
            Some(RegistryError::DigestMismatch { actual, .. }) => {
                assert_eq!(*actual, img.manifest_digest)
            }
            other => panic!("{reference}: {other:?}"),
        }
    }
}
