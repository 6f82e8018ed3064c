//! ibu's registry client against a real registry (distribution 2.8, `docker-registry`) with
//! htpasswd auth, over TLS with a throw-away CA and over plain HTTP marked insecure.
//!
//! Each test starts its own registry ([`common::TestRegistry`]), pushes an image made here as an
//! OCI layout with an *uncompressed* tar layer (skopeo, `--preserve-digests`), and reads it back
//! with [`ibu::registry::Client`]: manifest by tag and by digest, config labels, a streamed and
//! verified blob, byte ranges compared with the local layer file, the byte counter, and the
//! errors an operator meets (wrong password, unknown tag, registry down, unknown CA). The host's
//! own `/etc/containers` configuration is never read: every test points the client at files in
//! its temp dir.
//!
//! Needs `docker-registry`, `htpasswd`, `openssl`, `skopeo` and `tar` (vmtests/setup-host.sh).

mod common;

use std::io::Read;
use std::path::Path;

use common::registry::layout::{ImageSpec, Layout, LayoutImage, pseudo_random};
use common::registry::write_authfile;
use common::{RegistryOpts, TestRegistry};
use ibu::oci::MEDIA_TYPE_DOCKER_MANIFEST;
use ibu::registry::{Client, ClientOptions, NotFoundKind, RegistryError, TlsProblem};
use ibu::seed::format::LABEL_FORMAT_VERSION;
use ibu::spec::image_ref::ImageRef;

const USER: &str = "ibu";
const PASSWORD: &str = "s3cret-Pw";

/// A registry with one pushed image, and client options that see only the test's files.
struct Scene {
    reg: TestRegistry,
    dir: tempfile::TempDir,
    image: LayoutImage,
    layer: Vec<u8>,
    opts: ClientOptions,
}

impl Scene {
    /// A registry with auth, TLS or not, holding `ibu/seed:v1`.
    fn new(tls: bool) -> Scene {
        let reg = TestRegistry::start(RegistryOpts::new(Some((USER, PASSWORD)), tls)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut layout = Layout::create(&dir.path().join("layout")).unwrap();
        let image = layout
            .add_image(
                Some("v1"),
                &ImageSpec {
                    arch: "amd64",
                    labels: &[(LABEL_FORMAT_VERSION, "1"), ("dev.ibu.test", "yes")],
                    files: &[
                        (
                            "seed/ostree/objects/aa/big.filez",
                            pseudo_random(1, 1_500_000),
                        ),
                        ("seed/ostree/objects/bb/small.dirtree", b"dirtree".to_vec()),
                        (
                            "seed/ostree/objects/cc/mid.filez",
                            pseudo_random(2, 600_000),
                        ),
                    ],
                },
            )
            .unwrap();
        reg.push_oci_layout(&layout.dir, "v1", "ibu/seed:v1")
            .unwrap();
        let layer = std::fs::read(&image.layer_file).unwrap();
        let opts = isolated_opts(dir.path(), &reg, true);
        Scene {
            reg,
            dir,
            image,
            layer,
            opts,
        }
    }

    fn image_ref(&self, suffix: &str) -> ImageRef {
        ImageRef::parse(&self.reg.image(suffix)).unwrap()
    }

    fn client(&self) -> Client {
        Client::new(&self.image_ref("ibu/seed:v1"), &self.opts).unwrap()
    }
}

/// Options reading nothing from the host: registries.conf and certs.d inside `dir`, the
/// registry's authfile, its CA as `--cert-dir` when `with_ca` and it serves TLS.
fn isolated_opts(dir: &Path, reg: &TestRegistry, with_ca: bool) -> ClientOptions {
    let auth_dir = dir.join("auth");
    ClientOptions {
        authfile: Some(reg.authfile(&auth_dir)),
        cert_dir: (with_ca && reg.opts().tls).then(|| reg.ca_dir()),
        certs_d: dir.join("certs.d"),
        registries_conf: dir.join("registries.conf"),
        registries_conf_d: None,
        ..ClientOptions::default()
    }
}

fn registry_error(e: &anyhow::Error) -> &RegistryError {
    RegistryError::find(e).unwrap_or_else(|| panic!("no RegistryError in {e:#}"))
}

#[test]
fn tls_with_auth_manifest_config_blob_and_ranges() {
    let s = Scene::new(true);
    let client = s.client();
    assert!(client.origin().starts_with("https://"), "{client:?}");
    assert_eq!(client.user(), Some(USER));

    // Manifest by tag, then by digest: the bytes skopeo pushed, unchanged.
    let by_tag = client.manifest().unwrap();
    assert_eq!(by_tag.digest, s.image.manifest_digest);
    assert_eq!(by_tag.manifest, s.image.manifest);
    assert_eq!(by_tag.media_type, ibu::oci::MEDIA_TYPE_MANIFEST);
    assert_eq!(by_tag.index_digest, None);
    let digest_ref = s.image_ref(&format!("ibu/seed@{}", s.image.manifest_digest));
    let by_digest = Client::new(&digest_ref, &s.opts)
        .unwrap()
        .manifest()
        .unwrap();
    assert_eq!(by_digest.raw, by_tag.raw);
    assert_eq!(by_digest.digest, s.image.manifest_digest);

    // Config labels without pulling the image.
    let config = client.config(&by_tag.manifest).unwrap();
    assert_eq!(config.config.config.labels[LABEL_FORMAT_VERSION], "1");
    assert_eq!(config.config.config.labels["dev.ibu.test"], "yes");
    assert_eq!(config.digest, s.image.manifest.config.digest);
    assert_eq!(ibu::oci::sha256_digest(&config.raw), config.digest);

    // The layer stayed uncompressed on the way (skopeo --preserve-digests).
    let layer = s.image.layer();
    assert_eq!(layer.media_type, ibu::oci::MEDIA_TYPE_LAYER_TAR);
    assert_eq!(layer.size, s.layer.len() as u64);

    // Stream the whole blob: same bytes, digest checked at EOF.
    let before = client.bytes_downloaded();
    let mut got = Vec::new();
    client
        .blob_reader(layer)
        .unwrap()
        .read_to_end(&mut got)
        .unwrap();
    assert!(
        got == s.layer,
        "streamed blob differs from the local layer file"
    );
    assert_eq!(client.bytes_downloaded() - before, layer.size);

    // Ranges: each equals the same slice of the local layer file.
    let n = s.layer.len() as u64;
    let mut ranges = vec![(0, 512), (1000, 100), (n / 2, 4096), (n - 10, 10), (7, 0)];
    ranges.extend((0..16).map(|i| (i * 97_003 % (n - 300), 300)));
    let before = client.bytes_downloaded();
    let parts = client.blob_ranges(&layer.digest, &ranges).unwrap();
    let downloaded = client.bytes_downloaded() - before;
    assert_eq!(parts.len(), ranges.len());
    for ((off, len), part) in ranges.iter().zip(&parts) {
        let (a, b) = (*off as usize, (*off + *len) as usize);
        assert!(part[..] == s.layer[a..b], "range {off}+{len} differs");
    }
    let wanted: u64 = ranges.iter().map(|r| r.1).sum();
    assert_eq!(downloaded, wanted, "only the ranges' bytes are downloaded");
    assert!(
        downloaded * 100 < n,
        "{downloaded} bytes for ranges of a {n}-byte blob"
    );

    // Keep-alive: the whole-blob GET and the 20 range requests shared one TCP connection (two,
    // should the pool have dropped one).
    let ports = s
        .reg
        .client_ports(&format!("/blobs/{}", layer.digest), "ibu/");
    eprintln!("client ports of the blob requests: {ports:?}");
    let mut distinct = ports.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert!(
        ports.len() >= 21,
        "registry logged {} blob requests",
        ports.len()
    );
    assert!(
        distinct.len() <= 3,
        "blob requests used connections {distinct:?}"
    );
}

#[test]
fn plain_http_marked_insecure_in_registries_conf() {
    let s = Scene::new(false);
    // Secure by default: TLS to a plain HTTP port fails and says what to do.
    let e = Client::new(&s.image_ref("ibu/seed:v1"), &s.opts).unwrap_err();
    match registry_error(&e) {
        RegistryError::Tls { problem, .. } => assert_eq!(*problem, TlsProblem::NotTls, "{e:#}"),
        other => panic!("{other:?}"),
    }
    let msg = format!("{e:#}");
    eprintln!("message: {msg}");
    assert!(
        msg.contains("insecure = true") && msg.contains("--tls-verify=false"),
        "{msg}"
    );

    // insecure = true in registries.conf: HTTPS is tried, then plain HTTP.
    let mut opts = s.opts.clone();
    opts.registries_conf = s.reg.insecure_registries_conf(s.dir.path()).unwrap();
    let client = Client::new(&s.image_ref("ibu/seed:v1"), &opts).unwrap();
    assert!(client.origin().starts_with("http://"), "{client:?}");
    let m = client.manifest().unwrap();
    assert_eq!(m.digest, s.image.manifest_digest);
    let labels = client.config(&m.manifest).unwrap().config.config.labels;
    assert_eq!(labels[LABEL_FORMAT_VERSION], "1");
    let parts = client
        .blob_ranges(&s.image.layer().digest, &[(100, 50), (2000, 1)])
        .unwrap();
    assert!(parts[0] == s.layer[100..150] && parts[1] == s.layer[2000..2001]);

    // The same with tls_verify = false instead (skopeo --tls-verify=false).
    let mut opts = s.opts.clone();
    opts.tls_verify = Some(false);
    let client = Client::new(&s.image_ref("ibu/seed:v1"), &opts).unwrap();
    assert!(client.origin().starts_with("http://"));
    assert_eq!(client.manifest().unwrap().digest, s.image.manifest_digest);
}

#[test]
fn unknown_ca_is_explained_and_certs_d_fixes_it() {
    let s = Scene::new(true);
    let opts = isolated_opts(s.dir.path(), &s.reg, false);
    let e = Client::new(&s.image_ref("ibu/seed:v1"), &opts).unwrap_err();
    match registry_error(&e) {
        RegistryError::Tls { problem, .. } => {
            assert_eq!(*problem, TlsProblem::UnknownIssuer, "{e:#}")
        }
        other => panic!("{other:?}"),
    }
    let msg = format!("{e:#}");
    eprintln!("message: {msg}");
    let ca_dir = opts.certs_d.join(s.reg.host());
    assert!(msg.contains(&format!("{}/", ca_dir.display())), "{msg}");
    assert!(
        msg.contains("--tls-verify=false") && msg.contains("unknown authority"),
        "{msg}"
    );
    assert!(msg.contains(&s.reg.host()), "{msg}");

    // Put the CA where the message says: certs.d/<host:port>/ca.crt.
    std::fs::create_dir_all(&ca_dir).unwrap();
    std::fs::copy(s.reg.ca_dir().join("ca.crt"), ca_dir.join("ca.crt")).unwrap();
    let client = Client::new(&s.image_ref("ibu/seed:v1"), &opts).unwrap();
    assert_eq!(client.manifest().unwrap().digest, s.image.manifest_digest);

    // tls_verify = false: HTTPS without verification.
    let mut opts = isolated_opts(s.dir.path(), &s.reg, false);
    opts.certs_d = s.dir.path().join("empty-certs.d");
    opts.tls_verify = Some(false);
    let client = Client::new(&s.image_ref("ibu/seed:v1"), &opts).unwrap();
    assert!(client.origin().starts_with("https://"));
    assert_eq!(client.manifest().unwrap().digest, s.image.manifest_digest);
}

#[test]
fn wrong_or_missing_credentials_are_unauthorized() {
    let s = Scene::new(true);
    let mut opts = s.opts.clone();
    let bad_dir = s.dir.path().join("bad-auth");
    opts.authfile = Some(write_authfile(&bad_dir, &s.reg.host(), USER, "wrong-Pw").unwrap());
    let client = Client::new(&s.image_ref("ibu/seed:v1"), &opts).unwrap();
    let e = client.manifest().unwrap_err();
    assert!(
        matches!(registry_error(&e), RegistryError::Unauthorized { user: Some(u), .. } if u == USER)
    );
    let msg = format!("{e:#}");
    eprintln!("message: {msg}");
    assert!(
        msg.contains(&format!(
            "registry {}: authentication failed for user \"ibu\" (wrong user name or password?)",
            s.reg.host()
        )),
        "{msg}"
    );
    assert!(!msg.contains("wrong-Pw") && !format!("{e:?}").contains("wrong-Pw"));
    assert!(!format!("{client:?}").contains("wrong-Pw"));

    // An authfile without an entry for this registry: anonymous, then a clear refusal.
    let other_dir = s.dir.path().join("other-auth");
    opts.authfile = Some(write_authfile(&other_dir, "quay.io", "x", "y").unwrap());
    let e = Client::new(&s.image_ref("ibu/seed:v1"), &opts)
        .unwrap()
        .manifest()
        .unwrap_err();
    assert!(matches!(
        registry_error(&e),
        RegistryError::Unauthorized { user: None, .. }
    ));
    assert!(
        format!("{e:#}").contains("has no credentials for it"),
        "{e:#}"
    );

    opts.authfile = None;
    let e = Client::new(&s.image_ref("ibu/seed:v1"), &opts)
        .unwrap()
        .blob_ranges(&s.image.layer().digest, &[(0, 1)])
        .unwrap_err();
    assert!(format!("{e:#}").contains("no authfile"), "{e:#}");
}

#[test]
fn unknown_tags_repositories_and_blobs_are_not_found() {
    let s = Scene::new(true);
    let host = s.reg.host();
    let e = Client::new(&s.image_ref("ibu/seed:nope"), &s.opts)
        .unwrap()
        .manifest()
        .unwrap_err();
    assert!(matches!(
        registry_error(&e),
        RegistryError::NotFound {
            kind: NotFoundKind::Manifest,
            ..
        }
    ));
    assert_eq!(
        format!("{e:#}"),
        format!("registry {host}: manifest {host}/ibu/seed:nope not found")
    );

    let e = Client::new(&s.image_ref("ibu/other:v1"), &s.opts)
        .unwrap()
        .manifest()
        .unwrap_err();
    assert!(
        matches!(registry_error(&e), RegistryError::NotFound { kind, .. } if *kind == NotFoundKind::Repository || *kind == NotFoundKind::Manifest),
        "{e:#}"
    );
    assert!(
        format!("{e:#}").contains(&format!("{host}/ibu/other")),
        "{e:#}"
    );

    let client = s.client();
    let missing = ibu::oci::sha256_digest(b"no such blob");
    let e = client.blob_ranges(&missing, &[(0, 10)]).unwrap_err();
    assert!(matches!(
        registry_error(&e),
        RegistryError::NotFound {
            kind: NotFoundKind::Blob,
            ..
        }
    ));
    assert!(format!("{e:#}").contains(&missing), "{e:#}");
    let mut desc = s.image.layer().clone();
    desc.digest = missing;
    assert!(client.blob_reader(&desc).is_err());
}

#[test]
fn registry_down_names_host_and_port() {
    let reg = TestRegistry::start(RegistryOpts::new(None, false)).unwrap();
    let host = reg.host();
    drop(reg);
    let dir = tempfile::tempdir().unwrap();
    let opts = ClientOptions {
        certs_d: dir.path().join("certs.d"),
        registries_conf: dir.path().join("registries.conf"),
        registries_conf_d: None,
        ..ClientOptions::default()
    };
    let image = ImageRef::parse(&format!("{host}/ibu/seed:v1")).unwrap();
    let e = Client::new(&image, &opts).unwrap_err();
    assert!(
        matches!(registry_error(&e), RegistryError::Unreachable { .. }),
        "{e:#}"
    );
    let msg = format!("{e:#}");
    eprintln!("message: {msg}");
    assert!(
        msg.contains(&format!("cannot connect to registry {host}")),
        "{msg}"
    );
    assert!(msg.contains("connection refused"), "{msg}");

    // Insecure: HTTPS then HTTP are tried; the error still names host:port.
    let opts = ClientOptions {
        tls_verify: Some(false),
        ..opts
    };
    let msg = format!("{:#}", Client::new(&image, &opts).unwrap_err());
    assert!(
        msg.contains(&host) && msg.contains("connection refused"),
        "{msg}"
    );
}

#[test]
fn the_registry_process_is_reaped_even_when_a_test_panics() {
    let pid = std::sync::Mutex::new(None);
    let result = std::panic::catch_unwind(|| {
        let reg = TestRegistry::start(RegistryOpts::new(None, false)).unwrap();
        *pid.lock().unwrap() = reg.pid();
        panic!("a failing test");
    });
    assert!(result.is_err());
    let pid = pid.lock().unwrap().expect("the registry ran");
    // Killed and waited for: not even a zombie is left.
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "process {pid} is still there"
    );
}

#[test]
fn corrupt_blob_in_storage_fails_its_digest() {
    let s = Scene::new(false);
    let mut opts = s.opts.clone();
    opts.tls_verify = Some(false);
    let client = Client::new(&s.image_ref("ibu/seed:v1"), &opts).unwrap();
    let layer = s.image.layer();
    // Flip one byte of the blob in the registry's storage (same size).
    let path = s.reg.blob_data_path(&layer.digest);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[5000] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();

    let mut reader = client.blob_reader(layer).unwrap();
    let mut sink = Vec::new();
    let e = reader.read_to_end(&mut sink).unwrap_err();
    match RegistryError::from_io(&e) {
        Some(RegistryError::DigestMismatch {
            expected, actual, ..
        }) => {
            assert_eq!(expected, &layer.digest);
            assert_eq!(actual, &ibu::oci::sha256_digest(&bytes));
        }
        other => panic!("{other:?}: {e}"),
    }
    // Ranges are not verifiable against the blob digest: they return the bytes as stored.
    let part = client.blob_ranges(&layer.digest, &[(5000, 1)]).unwrap();
    assert_eq!(part[0], [bytes[5000]]);
}

#[test]
fn image_index_resolves_to_the_wanted_architecture() {
    let reg = TestRegistry::start(RegistryOpts::new(Some((USER, PASSWORD)), true)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut layout = Layout::create(&dir.path().join("layout")).unwrap();
    let images: Vec<LayoutImage> = ["amd64", "arm64", "s390x"]
        .iter()
        .enumerate()
        .map(|(i, arch)| {
            let content = pseudo_random(i as u64 + 10, 1000);
            layout
                .add_image(
                    None,
                    &ImageSpec {
                        arch,
                        labels: &[("arch", arch)],
                        files: &[("f", content)],
                    },
                )
                .unwrap()
        })
        .collect();
    let index_digest = layout.add_index("multi", &images).unwrap();
    reg.push(
        &format!("oci:{}:multi", layout.dir.display()),
        "ibu/multi:v1",
        &["--all"],
    )
    .unwrap();
    let image = ImageRef::parse(&reg.image("ibu/multi:v1")).unwrap();
    let base = isolated_opts(dir.path(), &reg, true);

    for (i, arch) in ["amd64", "arm64", "s390x"].iter().enumerate() {
        let opts = ClientOptions {
            arch: Some(arch.to_string()),
            ..base.clone()
        };
        let client = Client::new(&image, &opts).unwrap();
        let m = client.manifest().unwrap();
        assert_eq!(m.digest, images[i].manifest_digest, "{arch}");
        assert_eq!(m.index_digest.as_deref(), Some(index_digest.as_str()));
        let config = client.config(&m.manifest).unwrap().config;
        assert_eq!(config.config.labels["arch"], *arch);
    }

    // This machine's architecture by default.
    let m = Client::new(&image, &base).unwrap().manifest().unwrap();
    let machine = nix::sys::utsname::uname().unwrap();
    let arch = ibu::oci::oci_arch(machine.machine().to_str().unwrap()).to_string();
    assert_eq!(m.manifest.config.digest, {
        let i = ["amd64", "arm64", "s390x"].iter().position(|a| *a == arch);
        images[i.expect("test machine is amd64, arm64 or s390x")]
            .manifest
            .config
            .digest
            .clone()
    });

    let opts = ClientOptions {
        arch: Some("riscv64".into()),
        ..base
    };
    let e = Client::new(&image, &opts).unwrap().manifest().unwrap_err();
    assert!(matches!(
        registry_error(&e),
        RegistryError::NoPlatform { .. }
    ));
    let msg = format!("{e:#}");
    eprintln!("message: {msg}");
    assert!(
        msg.contains("linux/riscv64") && msg.contains("linux/amd64, linux/arm64, linux/s390x"),
        "{msg}"
    );
}

#[test]
fn docker_schema2_manifests_are_read() {
    let s = Scene::new(true);
    let source = format!("oci:{}:v1", s.dir.path().join("layout").display());
    s.reg
        .push_raw(&source, "ibu/docker:v1", &["--format", "v2s2"])
        .unwrap();
    let client = Client::new(&s.image_ref("ibu/docker:v1"), &s.opts).unwrap();
    let m = client.manifest().unwrap();
    assert_eq!(m.media_type, MEDIA_TYPE_DOCKER_MANIFEST);
    assert_eq!(ibu::oci::sha256_digest(&m.raw), m.digest);
    let config = client.config(&m.manifest).unwrap();
    assert_eq!(config.config.config.labels[LABEL_FORMAT_VERSION], "1");
    // Whatever skopeo made of the layer, it streams and verifies.
    let layer = &m.manifest.layers[0];
    let n = std::io::copy(
        &mut client.blob_reader(layer).unwrap(),
        &mut std::io::sink(),
    )
    .unwrap();
    assert_eq!(n, layer.size);
}

#[test]
fn image_built_with_buildah_is_read_without_pulling() {
    let reg = TestRegistry::start(RegistryOpts::new(Some((USER, PASSWORD)), true)).unwrap();
    let hello = pseudo_random(7, 100_000);
    let source = reg
        .buildah_image(
            "seed",
            &[("seed/info.json", b"{}"), ("seed/data.bin", &hello)],
            &[(LABEL_FORMAT_VERSION, "1")],
        )
        .unwrap();
    reg.push(&source, "ibu/built:v1", &[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let image = ImageRef::parse(&reg.image("ibu/built:v1")).unwrap();
    let client = Client::new(&image, &isolated_opts(dir.path(), &reg, true)).unwrap();
    let m = client.manifest().unwrap();
    let config = client.config(&m.manifest).unwrap().config;
    assert_eq!(config.config.labels[LABEL_FORMAT_VERSION], "1");
    // The layer is an uncompressed tar holding the file: find its bytes by range.
    let layer = &m.manifest.layers[0];
    assert_eq!(layer.media_type, ibu::oci::MEDIA_TYPE_LAYER_TAR, "{m:?}");
    let mut tar = Vec::new();
    client
        .blob_reader(layer)
        .unwrap()
        .read_to_end(&mut tar)
        .unwrap();
    let at = tar
        .windows(64)
        .position(|w| w == &hello[..64])
        .expect("the file's bytes are in the layer");
    let part = client
        .blob_ranges(&layer.digest, &[(at as u64, hello.len() as u64)])
        .unwrap();
    assert!(part[0] == hello);
}
