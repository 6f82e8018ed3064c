//! The run's container registry: Debian's `docker-registry` on the host's loopback with
//! htpasswd authentication, as a node would meet a private registry. Guests reach it through
//! QEMU user networking at `10.0.2.2:<port>`, over plain HTTP (their `registries.conf.d`
//! marks it insecure), with a pull secret. The host pushes the workload images there; the seed
//! VM pushes its seed there; target VMs pull both.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine as _;

use crate::http::HOST_FROM_GUEST;
use crate::report;
use crate::vm::{die_with_parent, free_port};

pub const USER: &str = "ibu-vmtests";

pub struct Registry {
    pub port: u16,
    password: String,
    dir: PathBuf,
    child: Child,
}

impl Registry {
    /// Start a registry with its storage and credentials under `dir`.
    pub fn start(dir: &Path) -> Result<Registry> {
        fs_err::create_dir_all(dir.join("data"))?;
        let port = free_port()?;
        let password = random_hex(16)?;
        let htpasswd = Command::new("htpasswd")
            .args(["-Bbn", USER, &password])
            .output()
            .context("running htpasswd (apache2-utils)")?;
        if !htpasswd.status.success() {
            bail!(
                "htpasswd failed: {}",
                String::from_utf8_lossy(&htpasswd.stderr)
            );
        }
        fs_err::write(dir.join("htpasswd"), &htpasswd.stdout)?;
        let config = format!(
            "version: 0.1\n\
             storage: {{filesystem: {{rootdirectory: {data}}}, delete: {{enabled: true}}}}\n\
             http: {{addr: \"127.0.0.1:{port}\"}}\n\
             auth: {{htpasswd: {{realm: ibu-vmtests, path: {htpasswd}}}}}\n\
             log: {{level: warn}}\n",
            data = dir.join("data").display(),
            htpasswd = dir.join("htpasswd").display(),
        );
        fs_err::write(dir.join("config.yml"), config)?;
        let log = fs_err::File::create(dir.join("registry.log"))?;
        let mut cmd = Command::new("docker-registry");
        cmd.arg("serve")
            .arg(dir.join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?.into_parts().0)
            .stderr(log.into_parts().0);
        die_with_parent(&mut cmd);
        let child = cmd.spawn().context("starting docker-registry")?;
        let mut registry = Registry {
            port,
            password,
            dir: dir.to_path_buf(),
            child,
        };
        registry.wait_ready()?;
        write_private(
            &dir.join("auth.json"),
            &registry.authfile(&registry.host_address()),
        )?;
        report::note(&format!(
            "registry: docker-registry on 127.0.0.1:{port} (htpasswd), {} for guests",
            registry.guest_address()
        ));
        Ok(registry)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let started = Instant::now();
        loop {
            // Unauthenticated: 401 means it is up and asks for credentials.
            let out = Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
                .arg(format!("http://{}/v2/", self.host_address()))
                .output()
                .context("running curl")?;
            if out.stdout == b"401" {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "docker-registry exited ({status}): {}",
                    crate::image::tail_lines(&self.dir.join("registry.log"), 10)
                );
            }
            if started.elapsed() > Duration::from_secs(20) {
                bail!(
                    "docker-registry on {} is not up after 20 s",
                    self.host_address()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// How the host names it.
    pub fn host_address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// How guests name it (and so how image references in seeds name it).
    pub fn guest_address(&self) -> String {
        format!("{HOST_FROM_GUEST}:{}", self.port)
    }

    /// A containers-auth.json for the registry under the name `address`.
    pub fn authfile(&self, address: &str) -> String {
        let auth =
            base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{}", self.password));
        format!("{{\"auths\":{{\"{address}\":{{\"auth\":\"{auth}\"}}}}}}\n")
    }

    /// The host's authfile (0600, in the run directory).
    pub fn host_authfile(&self) -> PathBuf {
        self.dir.join("auth.json")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A file only its owner can read (credentials).
pub fn write_private(path: &Path, contents: &str) -> Result<()> {
    use fs_err::os::unix::fs::OpenOptionsExt;
    use std::io::Write;
    let mut f = fs_err::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(contents.as_bytes())?;
    Ok(())
}

fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    use std::io::Read;
    fs_err::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}
