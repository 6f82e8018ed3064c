//! The workload images a node runs, made on the host and pushed to the run's registry: tiny
//! images from scratch holding Debian's static busybox (so a guest can run them: `httpd`, `sh`)
//! and a payload of their own. The seed VM pulls them (they become the seed's
//! `containers.list`); targets get them by precache.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::registry::Registry;

/// The applications and their payload sizes (MiB).
const APPS: &[(&str, usize)] = &[("web", 3), ("db", 5)];

/// Build and push the workload images; returns their references as guests name them.
pub fn publish(registry: &Registry, dir: &Path) -> Result<Vec<String>> {
    let storage = [
        "--root".to_string(),
        dir.join("root").display().to_string(),
        "--runroot".to_string(),
        dir.join("runroot").display().to_string(),
        "--storage-driver".to_string(),
        "vfs".to_string(),
    ];
    let busybox = Path::new("/bin/busybox");
    if !busybox.exists() {
        bail!("/bin/busybox is missing: install busybox-static (vmtests/setup-host.sh does)");
    }
    let mut refs = Vec::new();
    for (app, mib) in APPS {
        let payload = dir.join(format!("{app}.payload"));
        let mut bytes = vec![0u8; mib << 20];
        use std::io::Read;
        fs_err::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
        fs_err::write(&payload, &bytes)?;
        let host_ref = format!("{}/apps/{app}:1.0", registry.host_address());
        let ctr = buildah(&storage, &["from", "scratch"])?;
        let ctr = ctr.trim();
        buildah(&storage, &["copy", ctr, "/bin/busybox", "/bin/busybox"])?;
        buildah(
            &storage,
            &["copy", ctr, &payload.display().to_string(), "/srv/payload"],
        )?;
        buildah(
            &storage,
            &[
                "config",
                "--entrypoint",
                r#"["/bin/busybox","httpd","-f","-p","8080","-h","/srv"]"#,
                "--label",
                &format!("ibu-vmtests.app={app}"),
                ctr,
            ],
        )?;
        buildah(&storage, &["commit", "--quiet", ctr, &host_ref])?;
        buildah(&storage, &["rm", ctr])?;
        buildah(
            &storage,
            &[
                "push",
                "--quiet",
                "--tls-verify=false",
                "--authfile",
                &registry.host_authfile().display().to_string(),
                &host_ref,
            ],
        )?;
        refs.push(format!("{}/apps/{app}:1.0", registry.guest_address()));
    }
    Ok(refs)
}

fn buildah(storage: &[String], args: &[&str]) -> Result<String> {
    let out = Command::new("buildah")
        .args(storage)
        .args(args)
        .output()
        .with_context(|| format!("running buildah {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "buildah {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
