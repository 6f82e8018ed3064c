//! `ibu seed create` → a real registry with htpasswd auth over TLS → read back on a target:
//! the ostree commit, the `/etc` difference and its deletions, `/var`, the image list and the
//! origin round-trip byte for byte; site data stays out; a wrong password is a clear error and
//! leaves the seed host as it was.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use assert_cmd::Command;
use cap_std::fs::Dir;
use common::seed::Scene;
use common::snapshot::{Snap, snapshot};
use common::{CommitSpec, Deploy, RegistryOpts, TestFs, TestRegistry, TestSysroot};
use ibu::archive::{ExtractOptions, extract};
use ibu::images::podman::Podman;
use ibu::registry::{Client, ClientOptions};
use ibu::seed::collect::Collected;
use ibu::seed::fetch::{self, layer_with_role};
use ibu::seed::format::{LABEL_SEED_INFO, ROLE_ETC, ROLE_VAR, SeedInfo};
use ibu::seed::source::{RegistrySource, SeedSource};
use ibu::spec::ImageRef;

/// A seed host with a configured /etc and /var and one image in its container storage.
fn seed_host() -> Result<Scene> {
    let s = Scene::new()?;
    s.configure_etc()?;
    s.configure_var()?;
    let sh = common::sh()?;
    let args = &Podman::global_args(&s.paths);
    let payload = s.work.path().join("payload");
    std::fs::write(&payload, b"application bits\n")?;
    let ctr = common::run(xshell::cmd!(sh, "buildah {args...} from scratch"))?;
    let ctr = ctr.trim();
    common::run(xshell::cmd!(
        sh,
        "buildah {args...} copy {ctr} {payload} /app"
    ))?;
    common::run(xshell::cmd!(
        sh,
        "buildah {args...} commit --quiet {ctr} registry.example.com/apps/web:1.0"
    ))?;
    common::run(xshell::cmd!(sh, "buildah {args...} rm {ctr}"))?;
    Ok(s)
}

fn ibu(sysroot: &Path) -> Command {
    let mut c = Command::cargo_bin("ibu").unwrap();
    c.arg("--sysroot").arg(sysroot);
    c
}

/// Snapshot of a tree without the paths under `skip` (relative).
fn snap_without(root: &Path, skip: &[&str]) -> BTreeMap<PathBuf, Snap> {
    let mut s = snapshot(root, false);
    s.retain(|p, _| !skip.iter().any(|k| p.starts_with(k)));
    s
}

fn extract_layer(
    src: &dyn SeedSource,
    role: &str,
    manifest: &ibu::oci::ImageManifest,
    dest: &Path,
) -> Result<()> {
    let layer = layer_with_role(manifest, role)?;
    std::fs::create_dir_all(dest)?;
    let dir = Dir::open_ambient_dir(dest, cap_std::ambient_authority())?;
    extract(
        src.open_layer(layer)?,
        &dir,
        &ExtractOptions {
            strip_prefix: Some(PathBuf::from(format!("seed/{role}"))),
            ..ExtractOptions::default()
        },
    )
    .with_context(|| format!("extracting the {role} layer"))?;
    Ok(())
}

/// The expected content of a layer: the collected entries, snapshotted from the seed host.
fn expected(root: &Path, entries: &[PathBuf]) -> BTreeMap<PathBuf, Snap> {
    let all = snapshot(root, false);
    entries
        .iter()
        .map(|p| (p.clone(), all[p].clone()))
        .collect()
}

#[test]
fn a_seed_round_trips_through_a_registry_with_auth_and_tls() -> Result<()> {
    let s = seed_host()?;
    let reg = TestRegistry::start(RegistryOpts::new(Some(("ibu", "s3cret")), true))?;
    let creds = tempfile::tempdir()?;
    let authfile = reg.authfile(creds.path());
    let ca = reg.ca_dir();
    let image = reg.image("seeds/node:4.16.3");

    // What collection finds, for comparison (into its own work directory).
    let want: Collected = s.collect()?;

    ibu(s.sr.path())
        .args(["seed", "create", "--image", &image])
        .arg("--authfile")
        .arg(&authfile)
        .arg("--cert-dir")
        .arg(&ca)
        .assert()
        .success();
    let status = std::fs::read_to_string(s.paths.state_dir().join("seedgen.yaml"))?;
    assert!(status.contains("Seed Generation completed"), "{status}");
    assert!(
        !ibu::seed::create::workdir(&s.paths).exists(),
        "work directory removed"
    );

    let client = Client::new(
        &ImageRef::parse(&image)?,
        &ClientOptions {
            authfile: Some(authfile.clone()),
            cert_dir: Some(ca.clone()),
            ..ClientOptions::default()
        },
    )?;
    let src = RegistrySource {
        client,
        reference: image.clone(),
    };
    let (manifest, _) = src.manifest()?;
    let config = src.config(&manifest)?;
    let label: SeedInfo = serde_json::from_str(&config.config.labels[LABEL_SEED_INFO])?;
    let mut want_info = want.info.clone();
    want_info.created = label.created.clone();
    assert_eq!(label, want_info, "seed info label");
    assert_eq!(label.version, "4.16.3");

    let work = tempfile::tempdir()?;
    let meta = fetch::read_meta(&src, &manifest, work.path())?;
    assert_eq!(meta.info, label);
    assert_eq!(meta.containers, want.containers);
    assert!(
        meta.containers
            .iter()
            .any(|c| c.starts_with("registry.example.com/apps/web")),
        "{:?}",
        meta.containers
    );
    let deletions: Vec<String> = want
        .etc_deletions
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    assert_eq!(meta.deletions, deletions);
    assert!(
        meta.deletions.contains(&"/etc/olddir".to_string()),
        "{deletions:?}"
    );
    assert_eq!(meta.origin, want.origin);

    // The ostree commit into a target that runs another OS.
    let mut target = TestSysroot::new()?;
    target.commit(CommitSpec::new("old", "4.15.0"))?;
    let d = target.deploy("debian", "old", &Deploy::new())?;
    target.boot(&d)?;
    let repo = ostree::Repo::new_for_path(target.repo());
    repo.open(ostree::gio::Cancellable::NONE)?;
    let stats = fetch::fetch_objects(&src, &manifest, &meta.index, &repo, &mut |_, _| {})?;
    assert_eq!(stats.objects, want.ostree.objects.len());
    assert!(stats.fetched > 0);
    fetch::verify_complete(&repo, &meta.info.ostree_commit)?;
    let sh = common::sh()?;
    let (seed_repo, target_repo, commit) =
        (s.sr.repo(), target.repo(), meta.info.ostree_commit.clone());
    let seed_ls = common::run(xshell::cmd!(
        sh,
        "ostree --repo={seed_repo} ls -R -C {commit}"
    ))?;
    let target_ls = common::run(xshell::cmd!(
        sh,
        "ostree --repo={target_repo} ls -R -C {commit}"
    ))?;
    assert_eq!(seed_ls, target_ls, "the commit's tree, with every checksum");
    common::run(xshell::cmd!(sh, "ostree --repo={target_repo} fsck"))?;

    // /etc and /var, every entry with all its metadata.
    let etc_out = work.path().join("etc");
    extract_layer(&src, ROLE_ETC, &manifest, &etc_out)?;
    let etc_paths: Vec<PathBuf> = want
        .etc
        .iter()
        .filter(|e| e.kind != ibu::seed::collect::Kind::Special)
        .map(|e| e.path.clone())
        .collect();
    let got = snapshot(&etc_out, false);
    let want_etc = expected(&want.etc_dir, &etc_paths);
    for (p, w) in &want_etc {
        let g = got
            .get(p)
            .unwrap_or_else(|| panic!("etc/{} missing from the seed", p.display()));
        assert_eq!(
            (w.kind, &w.content, &w.link, w.uid, w.gid, &w.xattrs),
            (g.kind, &g.content, &g.link, g.uid, g.gid, &g.xattrs),
            "etc/{}",
            p.display()
        );
        if w.kind != "symlink" {
            assert_eq!(w.mode, g.mode, "etc/{} mode", p.display());
        }
    }
    for excluded in [
        "hostname",
        "machine-id",
        "ssh/ssh_host_ed25519_key",
        "NetworkManager/system-connections/eth0.nmconnection",
        "ibu/upgrade.yaml",
        "containers/auth.json",
        "shadow-",
    ] {
        assert!(
            !etc_out.join(excluded).exists(),
            "etc/{excluded} must not travel"
        );
    }
    assert!(etc_out.join("motd").exists() && etc_out.join("newdir/sub/y.link").is_symlink());

    let var_out = work.path().join("var");
    extract_layer(&src, ROLE_VAR, &manifest, &var_out)?;
    let var_paths: Vec<PathBuf> = want
        .var
        .iter()
        .filter(|e| e.kind != ibu::seed::collect::Kind::Special)
        .map(|e| e.path.clone())
        .collect();
    let got = snapshot(&var_out, false);
    for (p, w) in &expected(&want.var_dir, &var_paths) {
        let g = got
            .get(p)
            .unwrap_or_else(|| panic!("var/{} missing from the seed", p.display()));
        assert_eq!(
            (w.kind, &w.content, &w.link, w.uid, w.gid, &w.xattrs),
            (g.kind, &g.content, &g.link, g.uid, g.gid, &g.xattrs),
            "var/{}",
            p.display()
        );
    }
    for excluded in [
        "tmp/scratch",
        "log/journal",
        "lib/ibu/state.yaml",
        "roothome/.ssh/authorized_keys",
        "roothome/.bash_history",
        "home/alice/.ssh/id_ed25519",
        "lib/containers/storage/marker",
    ] {
        assert!(
            !var_out.join(excluded).exists(),
            "var/{excluded} must not travel"
        );
    }
    assert_eq!(
        std::fs::read_to_string(var_out.join("home/alice/notes.txt"))?,
        "notes\n"
    );
    Ok(())
}

#[test]
fn a_wrong_password_is_a_clear_error_and_leaves_the_host_as_it_was() -> Result<()> {
    let s = seed_host()?;
    let reg = TestRegistry::start(RegistryOpts::new(Some(("ibu", "s3cret")), false))?;
    let creds = tempfile::tempdir()?;
    let authfile = common::registry::write_authfile(creds.path(), &reg.host(), "ibu", "wrong")?;
    // ibu's own state directory is where the failure is reported; everything else must stay.
    let before = snap_without(s.sr.path(), &["ostree/deploy/debian/var/lib/ibu", "run"]);
    let out = ibu(s.sr.path())
        .args(["seed", "create", "--image", &reg.image("seeds/node:4.16.3")])
        .arg("--authfile")
        .arg(&authfile)
        .arg("--tls-verify=false")
        .output()?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("wrong user name or password"), "{err}");
    assert!(
        !err.contains("wrong\""),
        "the password never appears: {err}"
    );
    let status = std::fs::read_to_string(s.paths.state_dir().join("seedgen.yaml"))?;
    assert!(status.contains("Seed generation failed"), "{status}");
    assert!(!ibu::seed::create::workdir(&s.paths).exists());
    let after = snap_without(s.sr.path(), &["ostree/deploy/debian/var/lib/ibu", "run"]);
    // podman keeps its own bookkeeping in the container storage (its database, created on first
    // use, and lock files rewritten on every call); nothing else may change.
    let podman_own = |p: &PathBuf| {
        let s = p.to_string_lossy();
        s.ends_with(".lock")
            || s.contains("var/lib/containers/storage/libpod")
            || s.ends_with("var/lib/containers/storage")
    };
    let keys = |m: &BTreeMap<PathBuf, Snap>| -> Vec<PathBuf> {
        m.keys().filter(|p| !podman_own(p)).cloned().collect()
    };
    let (kb, ka) = (keys(&before), keys(&after));
    let added: Vec<_> = ka.iter().filter(|p| !before.contains_key(*p)).collect();
    let removed: Vec<_> = kb.iter().filter(|p| !after.contains_key(*p)).collect();
    assert!(
        added.is_empty() && removed.is_empty(),
        "added {added:?}, removed {removed:?}"
    );
    for p in &kb {
        let (b, a) = (&before[p], &after[p]);
        assert_eq!(
            (b.kind, &b.content, b.mode, b.mtime, &b.xattrs),
            (a.kind, &a.content, a.mode, a.mtime, &a.xattrs),
            "{}",
            p.display()
        );
    }
    Ok(())
}

#[test]
fn inspect_checks_a_seed_against_a_host_without_pulling_it() -> Result<()> {
    let s = seed_host()?;
    let out = tempfile::tempdir()?;
    let archive = out.path().join("seed.tar");
    ibu(s.sr.path())
        .args(["seed", "create", "--output"])
        .arg(format!("oci-archive:{}", archive.display()))
        .assert()
        .success();

    // A target on 4.15.0 configured like the seed (proxy, container storage unit).
    let mut t = TestSysroot::new()?;
    t.commit(CommitSpec::new("old", "4.15.0"))?;
    let d = t.deploy("debian", "old", &Deploy::new())?;
    t.boot(&d)?;
    t.mount_container_storage(TestFs::Tmpfs { size_mib: 64 })?;
    let etc = t.deployment_dir(&d).join("etc");
    common::seed::write(
        &etc.join("environment"),
        "HTTPS_PROXY=http://proxy.example.com:3128\n",
    )?;
    common::seed::write(
        &etc.join("systemd/system/var-lib-containers.mount"),
        "[Mount]\nWhat=/dev/disk/by-label/containers\nWhere=/var/lib/containers\n",
    )?;
    let spec = format!("oci-archive:{}", archive.display());
    let o = ibu(t.path())
        .args(["seed", "inspect", &spec, "--version", "4.16.3"])
        .output()?;
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(text.contains("Compatibility with this host: yes"), "{text}");
    assert!(text.contains("Version:   4.16.3"), "{text}");

    // Without the proxy the target is not compatible, in LCA's words.
    std::fs::remove_file(etc.join("environment"))?;
    let o = ibu(t.path())
        .args(["seed", "inspect", &spec, "-o", "json"])
        .output()?;
    assert_eq!(o.status.code(), Some(3));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    assert_eq!(j["compatible"], false);
    let proxy = j["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "Proxy")
        .unwrap();
    assert_eq!(
        proxy["message"],
        "seed image has a proxy but the cluster being upgraded does not, this combination is not supported"
    );
    Ok(())
}

#[test]
fn a_killed_creation_leaves_only_its_work_directory_and_the_next_run_clears_it() -> Result<()> {
    // A seed host big enough that creation takes a while to kill in the middle of.
    let mut big = TestSysroot::new()?;
    let mut spec = CommitSpec::new("big", "4.16.3").payload_bytes(0);
    for i in 0..400u32 {
        spec = spec.file(
            format!("usr/lib/big/f{i:04}"),
            vec![(i % 251) as u8; 64 * 1024 + i as usize],
        );
    }
    big.commit(spec)?;
    let d = big.deploy("debian", "big", &Deploy::new())?;
    big.boot(&d)?;
    big.mount_container_storage(TestFs::Tmpfs { size_mib: 64 })?;
    let paths = big.paths()?;
    let ibu_state = "ostree/deploy/debian/var/lib/ibu";
    let before = snap_without(big.path(), &[ibu_state, "run"]);
    let out = tempfile::tempdir()?;
    let dest = out.path().join("layout");
    let work = ibu::seed::create::workdir(&paths);
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("ibu"))
        .arg("--sysroot")
        .arg(big.path())
        .args(["-q", "seed", "create", "--output"])
        .arg(format!("oci:{}", dest.display()))
        .spawn()?;
    // Kill it once it has started writing its work directory.
    let t = std::time::Instant::now();
    while !work.join("ostree/objects").exists() {
        assert!(
            t.elapsed().as_secs() < 60,
            "creation never started exporting"
        );
        if child.try_wait()?.is_some() {
            anyhow::bail!("creation finished before it could be killed; make the seed bigger");
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill()?;
    child.wait()?;
    assert!(work.exists(), "SIGKILL leaves the work directory");
    assert!(
        !dest.exists() || common::seed::is_empty_dir(&dest)?,
        "no half-written output"
    );
    let after = snap_without(big.path(), &[ibu_state, "run"]);
    let changed: Vec<_> = before
        .iter()
        .filter(|(p, b)| {
            let s = p.to_string_lossy();
            // ibu creates its state directory in var/lib (the parent's mtime changes) and podman
            // its storage in the container mount; nothing else may change.
            !(s.ends_with(".lock")
                || s.contains("var/lib/containers")
                || s == "ostree/deploy/debian/var/lib")
                && after.get(*p).is_none_or(|a| {
                    (a.kind, &a.content, a.mode, a.mtime) != (b.kind, &b.content, b.mode, b.mtime)
                })
        })
        .map(|(p, _)| p.clone())
        .collect();
    assert!(
        changed.is_empty(),
        "changed outside ibu's state dir: {changed:?}"
    );
    // The next run removes the leftovers first and completes.
    ibu(big.path())
        .args(["seed", "create", "--output"])
        .arg(format!("oci:{}", dest.display()))
        .assert()
        .success();
    assert!(!work.exists());
    assert!(dest.join("index.json").exists());
    Ok(())
}
