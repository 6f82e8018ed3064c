//! A real registry for tests: Debian's `docker-registry` (distribution 2.8) on 127.0.0.1.
//!
//! ibu's registry client must work against what nodes meet, so the tests run the reference
//! implementation of the distribution API rather than a mock: htpasswd (bcrypt) auth, TLS with a
//! throw-away CA, filesystem storage in a temp dir. [`TestRegistry::start`] writes the config,
//! makes the htpasswd file (`htpasswd -Bbn`) and certificates (`openssl`: an EC CA and a server
//! certificate for `IP:127.0.0.1`), starts `docker-registry serve`, and waits until `GET /v2/`
//! answers. Images get there with skopeo ([`TestRegistry::push`],
//! [`TestRegistry::push_oci_layout`]) from OCI layouts built by [`layout`]. For what a stock
//! registry cannot be made to do (token servers, CDN redirects, broken servers), [`fake`] has a
//! scripted HTTP server.
//!
//! The registry process is killed and reaped on drop, also when a test panics; its log (one
//! line per request, with the client's address and port) is printed then, and is readable with
//! [`TestRegistry::log`]. Needs `docker-registry`, `htpasswd` (apache2-utils), `openssl` and
//! `skopeo`; without them a test fails and says which is missing.

pub mod fake;
pub mod layout;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine as _;

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
/// How long a registry may take to answer its first `GET /v2/`.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// What kind of registry to start.
#[derive(Debug, Clone, Default)]
pub struct RegistryOpts {
    /// `Some((user, password))`: htpasswd auth with that one user.
    pub auth: Option<(String, String)>,
    /// Serve HTTPS with a certificate from a throw-away CA (else plain HTTP).
    pub tls: bool,
}

impl RegistryOpts {
    pub fn new(auth: Option<(&str, &str)>, tls: bool) -> RegistryOpts {
        RegistryOpts {
            auth: auth.map(|(u, p)| (u.to_string(), p.to_string())),
            tls,
        }
    }
}

/// A running `docker-registry serve` on `127.0.0.1:<port>`.
pub struct TestRegistry {
    dir: tempfile::TempDir,
    child: Option<Child>,
    port: u16,
    opts: RegistryOpts,
    log: PathBuf,
}

impl TestRegistry {
    /// Start a registry and wait until it answers. A port taken between choosing it and the
    /// registry binding it is retried with another.
    pub fn start(opts: RegistryOpts) -> Result<TestRegistry> {
        for tool in [REGISTRY_BIN, "/usr/bin/htpasswd", "/usr/bin/openssl"] {
            if !Path::new(tool).exists() {
                bail!("{tool} is missing (vmtests/setup-host.sh installs it)");
            }
        }
        let dir = tempfile::Builder::new()
            .prefix("ibu-registry-")
            .tempdir()
            .context("creating the registry's temp dir")?;
        if let Some((user, password)) = &opts.auth {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .context("running htpasswd")?;
            if !out.status.success() {
                bail!("htpasswd failed: {}", String::from_utf8_lossy(&out.stderr));
            }
            std::fs::write(dir.path().join("htpasswd"), out.stdout)?;
        }
        if opts.tls {
            make_certificates(dir.path())?;
        }
        let mut reg = TestRegistry {
            log: dir.path().join("registry.log"),
            dir,
            child: None,
            port: 0,
            opts,
        };
        let mut last = None;
        for _ in 0..5 {
            match reg.spawn() {
                Ok(()) => return Ok(reg),
                Err(e) if reg.log().contains("address already in use") => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no free port")))
    }

    fn spawn(&mut self) -> Result<()> {
        self.stop();
        self.port = free_port()?;
        let d = self.dir.path();
        let mut config = format!(
            "version: 0.1\n\
             log:\n  level: info\n  formatter: text\n\
             storage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: ibu-test-{port}\n",
            root = d.join("data").display(),
            port = self.port,
        );
        if self.opts.tls {
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                d.join("server.crt").display(),
                d.join("server.key").display()
            ));
        }
        if self.opts.auth.is_some() {
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: ibu-test\n    path: {}\n",
                d.join("htpasswd").display()
            ));
        }
        let config_path = d.join("config.yml");
        std::fs::write(&config_path, config)?;
        let log = std::fs::File::create(&self.log)?;
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {REGISTRY_BIN}"))?;
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<()> {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(2)))
            .tls_config(
                ureq::tls::TlsConfig::builder()
                    .disable_verification(true)
                    .build(),
            )
            .build()
            .new_agent();
        let url = format!("{}/v2/", self.url());
        let start = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "docker-registry exited with {status} before answering; its log:\n{}",
                    self.log()
                );
            }
            if let Ok(resp) = agent.get(&url).call()
                && matches!(resp.status().as_u16(), 200 | 401)
            {
                return Ok(());
            }
            if start.elapsed() > START_TIMEOUT {
                bail!(
                    "docker-registry did not answer {url} within {START_TIMEOUT:?}; its log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `https://127.0.0.1:PORT` or `http://...`.
    pub fn url(&self) -> String {
        let scheme = if self.opts.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.host())
    }

    /// `127.0.0.1:PORT/<repo_tag>`.
    pub fn image(&self, repo_tag: &str) -> String {
        format!("{}/{repo_tag}", self.host())
    }

    /// The registry process's id (while running).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn opts(&self) -> &RegistryOpts {
        &self.opts
    }

    /// A scratch directory inside the registry's temp dir (removed with it).
    pub fn scratch(&self, name: &str) -> Result<PathBuf> {
        let p = self.dir.path().join("scratch").join(name);
        std::fs::create_dir_all(&p)?;
        Ok(p)
    }

    /// Write `dir/auth.json` with the registry's credentials (containers-auth.json format).
    /// Panics when the registry has no auth or the file cannot be written (a test helper).
    pub fn authfile(&self, dir: &Path) -> PathBuf {
        let (user, password) = self
            .opts
            .auth
            .as_ref()
            .expect("authfile() of a test registry without auth");
        write_authfile(dir, &self.host(), user, password)
            .unwrap_or_else(|e| panic!("writing an authfile in {}: {e:#}", dir.display()))
    }

    /// A directory holding the registry's CA certificate as `ca.crt` (for `--cert-dir`).
    pub fn ca_dir(&self) -> PathBuf {
        self.dir.path().join("ca")
    }

    /// A registries.conf marking this registry `insecure = true`, in `dir`.
    pub fn insecure_registries_conf(&self, dir: &Path) -> Result<PathBuf> {
        let path = dir.join("registries.conf");
        std::fs::write(
            &path,
            format!(
                "[[registry]]\nlocation = \"{}\"\ninsecure = true\n",
                self.host()
            ),
        )?;
        Ok(path)
    }

    /// `skopeo copy --preserve-digests SOURCE docker://HOST/REPO_TAG` with this registry's
    /// credentials and CA (or `--dest-tls-verify=false` for plain HTTP). `--preserve-digests`
    /// keeps the blobs byte for byte: without it, skopeo may compress uncompressed layers on the
    /// way to a registry, and a seed's pack layers must stay uncompressed.
    pub fn push(&self, source: &str, repo_tag: &str, extra: &[&str]) -> Result<()> {
        let mut args = vec!["--preserve-digests"];
        args.extend_from_slice(extra);
        self.push_raw(source, repo_tag, &args)
    }

    /// `skopeo copy ARGS SOURCE docker://HOST/REPO_TAG` with this registry's credentials and CA.
    pub fn push_raw(&self, source: &str, repo_tag: &str, args: &[&str]) -> Result<()> {
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "--quiet"]);
        if self.opts.auth.is_some() {
            let auth_dir = self.scratch("skopeo-auth")?;
            cmd.arg("--authfile").arg(self.authfile(&auth_dir));
        }
        if self.opts.tls {
            cmd.arg("--dest-cert-dir").arg(self.ca_dir());
        } else {
            cmd.arg("--dest-tls-verify=false");
        }
        cmd.args(args)
            .arg(source)
            .arg(format!("docker://{}", self.image(repo_tag)));
        let out = cmd.output().context("running skopeo (is it installed?)")?;
        if !out.status.success() {
            bail!(
                "skopeo copy {source} to {} failed: {}\nregistry log:\n{}",
                self.image(repo_tag),
                String::from_utf8_lossy(&out.stderr).trim(),
                self.log()
            );
        }
        Ok(())
    }

    /// Build a one-layer image from `files` (path → content) with `labels` using buildah, in a
    /// private vfs container storage inside the registry's temp dir (the host's storage is not
    /// touched). Returns the skopeo source to [`TestRegistry::push`] it from:
    /// `containers-storage:[vfs@ROOT+RUNROOT]localhost/NAME:latest`.
    pub fn buildah_image(
        &self,
        name: &str,
        files: &[(&str, &[u8])],
        labels: &[(&str, &str)],
    ) -> Result<String> {
        let store = self.scratch("storage")?;
        let (root, run) = (store.join("root"), store.join("run"));
        let buildah = |args: &[&str]| -> Result<String> {
            let out = Command::new("buildah")
                .arg("--root")
                .arg(&root)
                .arg("--runroot")
                .arg(&run)
                .args(["--storage-driver", "vfs"])
                .args(args)
                .output()
                .context("running buildah (is it installed?)")?;
            if !out.status.success() {
                bail!(
                    "buildah {} failed: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        };
        let container = buildah(&["from", "scratch"])?;
        let src = self.scratch(&format!("buildah-{name}"))?;
        for (path, content) in files {
            let file = src.join(path);
            std::fs::create_dir_all(file.parent().unwrap_or(&src))?;
            std::fs::write(&file, content)?;
        }
        let src_str = src.display().to_string();
        buildah(&["copy", &container, &src_str, "/"])?;
        for (k, v) in labels {
            buildah(&["config", "--label", &format!("{k}={v}"), &container])?;
        }
        let image = format!("localhost/{name}:latest");
        buildah(&["commit", "--quiet", &container, &image])?;
        buildah(&["rm", &container])?;
        Ok(format!(
            "containers-storage:[vfs@{}+{}]{image}",
            root.display(),
            run.display()
        ))
    }

    /// Push the image tagged `tag` in the OCI layout `layout` as `repo_tag`.
    pub fn push_oci_layout(&self, layout: &Path, tag: &str, repo_tag: &str) -> Result<()> {
        self.push(&format!("oci:{}:{tag}", layout.display()), repo_tag, &[])
    }

    /// The file in the registry's filesystem storage holding blob `digest` (to corrupt it).
    pub fn blob_data_path(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// The registry's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Client ports (`remoteaddr`) of the requests the registry logged whose URI contains
    /// `uri_part` and whose User-Agent starts with `agent` (ibu's is `ibu/<version>`), in
    /// order: distinct ports are distinct TCP connections.
    pub fn client_ports(&self, uri_part: &str, agent: &str) -> Vec<u16> {
        let agent = format!("http.request.useragent={agent}");
        self.log()
            .lines()
            .filter(|l| l.contains("response completed") && l.contains(uri_part))
            .filter(|l| l.contains(&agent) || l.contains(&agent.replace('=', "=\"")))
            .filter_map(|l| {
                let addr = l.split("http.request.remoteaddr=").nth(1)?;
                let addr = addr.trim_start_matches('"');
                let port = addr.split(['"', ' ']).next()?.rsplit(':').next()?;
                port.parse().ok()
            })
            .collect()
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!(
                "---- registry {} log ({}) ----\n{}",
                self.host(),
                self.log.display(),
                self.log()
            );
        }
    }
}

/// Write `dir/auth.json` holding `user:password` for `registry`.
pub fn write_authfile(dir: &Path, registry: &str, user: &str, password: &str) -> Result<PathBuf> {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let json = serde_json::json!({ "auths": { registry: { "auth": auth } } });
    std::fs::create_dir_all(dir)?;
    let path = dir.join("auth.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&json)?)?;
    Ok(path)
}

/// A port nobody listens on right now.
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding a free port")?;
    Ok(l.local_addr()?.port())
}

/// An EC CA (`ca/ca.crt`) and a server certificate for `IP:127.0.0.1` and `DNS:localhost`
/// (`server.crt`, `server.key`) in `dir`.
fn make_certificates(dir: &Path) -> Result<()> {
    let ca_dir = dir.join("ca");
    std::fs::create_dir_all(&ca_dir)?;
    let ext = dir.join("server.ext");
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )?;
    let p = |name: &str| dir.join(name).display().to_string();
    let ca_crt = ca_dir.join("ca.crt").display().to_string();
    let steps: [Vec<String>; 3] = [
        [
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=ibu test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([p("ca.key"), "-out".into(), ca_crt.clone()])
        .collect(),
        [
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([p("server.key"), "-out".into(), p("server.csr")])
        .collect(),
        ["x509", "-req", "-days", "2", "-CAcreateserial", "-in"]
            .iter()
            .map(|s| s.to_string())
            .chain([
                p("server.csr"),
                "-CA".into(),
                ca_crt.clone(),
                "-CAkey".into(),
                p("ca.key"),
                "-extfile".into(),
                p("server.ext"),
                "-out".into(),
                p("server.crt"),
            ])
            .collect(),
    ];
    for args in steps {
        let out = Command::new("openssl")
            .args(&args)
            .current_dir(dir)
            .output()
            .context("running openssl")?;
        if !out.status.success() {
            bail!(
                "openssl {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    Ok(())
}
