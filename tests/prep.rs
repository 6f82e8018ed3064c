//! Prep end to end on directory sysroots, with a real seed in a real registry (htpasswd auth):
//! Idle → Prep → PrepCompleted → Idle (abort) restores the sysroot; every compatibility
//! failure; a hostile seed; interruption at every step boundary; disk full during the import.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use assert_cmd::Command;
use base64::Engine;
use common::seed::Scene;
use common::snapshot::snapshot;
use common::{CommitSpec, Deploy, RegistryOpts, TestFs, TestRegistry, TestSysroot};
use ibu::images::podman::Podman;
use ibu::spec::Stage;
use ibu::status::store::Recorded;
use ibu::status::{ConditionStatus, ConditionType, Reason};

const SEED_VERSION: &str = "4.16.3";
const USER: &str = "ibu";
const PASSWORD: &str = "s3cret-pull-pass";

/// A registry, a seed of the `Scene` seed host pushed to it, and two application images the
/// seed lists in its `containers.list`.
struct World {
    reg: TestRegistry,
    _creds: tempfile::TempDir,
    authfile: PathBuf,
    seed: String,
    apps: Vec<String>,
}

fn sh() -> xshell::Shell {
    common::sh().unwrap()
}

fn world() -> Result<World> {
    let reg = TestRegistry::start(RegistryOpts::new(Some((USER, PASSWORD)), false))?;
    let creds = tempfile::tempdir()?;
    let authfile = reg.authfile(creds.path());
    let s = Scene::new()?;
    s.configure_etc()?;
    s.configure_var()?;
    let sh = sh();
    let args = &Podman::global_args(&s.paths);
    let mut apps = vec![];
    for (name, body) in [("web", "web bits\n"), ("db", "db bits\n")] {
        let payload = s.work.path().join(name);
        std::fs::write(&payload, body)?;
        let ctr = common::run(xshell::cmd!(sh, "buildah {args...} from scratch"))?;
        let ctr = ctr.trim();
        let image = reg.image(&format!("apps/{name}:1.0"));
        common::run(xshell::cmd!(
            sh,
            "buildah {args...} copy {ctr} {payload} /app"
        ))?;
        common::run(xshell::cmd!(
            sh,
            "buildah {args...} commit --quiet {ctr} {image}"
        ))?;
        common::run(xshell::cmd!(sh, "buildah {args...} rm {ctr}"))?;
        common::run(xshell::cmd!(
            sh,
            "buildah {args...} push --quiet --tls-verify=false --authfile {authfile} {image}"
        ))?;
        // A seed host runs what it pulled from a registry: the registry's digests then name
        // the images in containers.list (a locally built image has a digest of its own).
        common::run(xshell::cmd!(sh, "podman {args...} rmi {image}"))?;
        common::run(xshell::cmd!(
            sh,
            "podman {args...} pull -q --tls-verify=false --authfile {authfile} {image}"
        ))?;
        apps.push(image);
    }
    let seed = reg.image(&format!("seeds/node:{SEED_VERSION}"));
    let out = Command::cargo_bin("ibu")?
        .arg("--sysroot")
        .arg(s.sr.path())
        .args([
            "-q",
            "seed",
            "create",
            "--image",
            &seed,
            "--tls-verify=false",
        ])
        .arg("--authfile")
        .arg(&authfile)
        .output()?;
    if !out.status.success() {
        bail!("seed create: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(World {
        reg,
        _creds: creds,
        authfile,
        seed,
        apps,
    })
}

/// A target node running 4.15.0, configured like the seed host where it must be (proxy,
/// container storage unit), trusting the test registry over plain HTTP, with the pull secret
/// in ibu's drop-in tree and a Prep desired state.
struct Target {
    sr: TestSysroot,
    paths: ibu::paths::Paths,
}

impl Target {
    fn new(w: &World) -> Result<Target> {
        Target::build(w, None, "4.15.0")
    }

    fn on(w: &World, fs: Option<TestFs>) -> Result<Target> {
        Target::build(w, fs, "4.15.0")
    }

    fn build(w: &World, fs: Option<TestFs>, running: &str) -> Result<Target> {
        let mut sr = match fs {
            Some(fs) => TestSysroot::new_on(fs)?,
            None => TestSysroot::new()?,
        };
        sr.commit(CommitSpec::new("old", running))?;
        let d = sr.deploy("debian", "old", &Deploy::new())?;
        sr.boot(&d)?;
        sr.mount_container_storage(TestFs::Tmpfs { size_mib: 128 })?;
        let paths = sr.paths()?;
        let etc = &paths.etc;
        common::seed::write(
            &etc.join("environment"),
            "HTTPS_PROXY=http://proxy.example.com:3128\n",
        )?;
        common::seed::write(
            &etc.join("systemd/system/var-lib-containers.mount"),
            "[Mount]\nWhat=/dev/disk/by-label/containers\nWhere=/var/lib/containers\n",
        )?;
        common::seed::write(
            &etc.join("containers/registries.conf"),
            &format!(
                "[[registry]]\nlocation = \"{}\"\ninsecure = true\n",
                w.reg.host()
            ),
        )?;
        let auth = std::fs::read(&w.authfile)?;
        let secret = etc.join("ibu/secrets/openshift-lifecycle-agent/seed-pull-secret.yaml");
        common::seed::write(
            &secret,
            &format!(
                "apiVersion: v1\nkind: Secret\nmetadata:\n  name: seed-pull-secret\n  namespace: openshift-lifecycle-agent\ntype: kubernetes.io/dockerconfigjson\ndata:\n  .dockerconfigjson: {}\n",
                base64::engine::general_purpose::STANDARD.encode(auth)
            ),
        )?;
        std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        let t = Target { sr, paths };
        t.desire(Stage::Idle, &w.seed, SEED_VERSION)?;
        Ok(t)
    }

    fn desire(&self, stage: Stage, image: &str, version: &str) -> Result<()> {
        common::seed::write(
            &self.paths.desired_file(),
            &format!(
                "apiVersion: lca.openshift.io/v1\nkind: ImageBasedUpgrade\nmetadata:\n  name: upgrade\nspec:\n  stage: {stage}\n  seedImageRef:\n    image: {image}\n    version: {version}\n    pullSecretRef:\n      name: seed-pull-secret\n"
            ),
        )
    }

    fn ibu(&self) -> Command {
        let mut c = Command::cargo_bin("ibu").unwrap();
        c.arg("--sysroot").arg(self.sr.path());
        c
    }

    /// Run `ibu reconcile` as systemd would: again while it exits 75. Returns the last code and
    /// everything it printed.
    fn converge(&self, fault: Option<&str>) -> Result<(Option<i32>, String)> {
        let mut all = String::new();
        for _ in 0..30 {
            let mut c = self.ibu();
            c.arg("reconcile");
            if let Some(f) = fault {
                c.env("IBU_FAULT", f);
            }
            let out = c.output()?;
            all.push_str(&String::from_utf8_lossy(&out.stderr));
            if out.status.code() != Some(75) {
                return Ok((out.status.code(), all));
            }
        }
        bail!("no convergence after 30 runs:\n{all}")
    }

    fn recorded(&self) -> Recorded {
        Recorded::load(&self.paths.state_file()).unwrap()
    }

    /// Deployments (stateroot, checksum, serial), stateroot directories and repo refs.
    fn layout(&self) -> Result<Layout> {
        let facts = ibu::facts::ostree::gather(&self.paths)?;
        let deployments = facts
            .deployments
            .iter()
            .map(|d| (d.stateroot.clone(), d.checksum.clone(), d.serial))
            .collect();
        let repo = self.sr.repo();
        let sh = sh();
        let refs = common::run(xshell::cmd!(sh, "ostree --repo={repo} refs"))?
            .lines()
            .map(str::to_string)
            .collect();
        Ok((deployments, facts.stateroots, refs))
    }

    fn new_deployment_dir(&self) -> Result<PathBuf> {
        let facts = ibu::facts::ostree::gather(&self.paths)?;
        let d = facts
            .deployments
            .iter()
            .find(|d| d.stateroot == "debian_4.16.3")
            .context("no deployment in debian_4.16.3")?;
        Ok(self
            .sr
            .stateroot_dir("debian_4.16.3")
            .join("deploy")
            .join(d.dirname()))
    }
}

/// Deployments (stateroot, checksum, serial), stateroot directories and repo refs.
type Layout = (Vec<(String, String, i32)>, Vec<String>, BTreeSet<String>);
/// Path, content and mode of each file in a snapshot.
type Files = Vec<(PathBuf, Option<Vec<u8>>, u32)>;

fn cond(r: &Recorded, k: ConditionType) -> (ConditionStatus, Reason, String) {
    let c = r.status.condition(k).unwrap_or_else(|| panic!("no {k:?}"));
    (c.status, c.reason, c.message.clone())
}

/// What a completed Prep must have produced on `t`.
fn assert_prepared(t: &Target, w: &World) -> Result<()> {
    let r = t.recorded();
    assert_eq!(
        cond(&r, ConditionType::PrepCompleted),
        (
            ConditionStatus::True,
            Reason::Completed,
            "Prep stage completed successfully".into()
        )
    );
    assert_eq!(
        r.status.valid_next_stages,
        vec![Stage::Idle, Stage::Upgrade]
    );
    let facts = ibu::facts::ostree::gather(&t.paths)?;
    assert_eq!(facts.deployments.len(), 2, "exactly one new deployment");
    let old = &facts.deployments[0];
    assert!(
        old.booted && old.default && old.stateroot == "debian",
        "the old OS still boots by default"
    );
    let new = &facts.deployments[1];
    assert_eq!(
        (new.stateroot.as_str(), new.version.as_deref()),
        ("debian_4.16.3", Some(SEED_VERSION))
    );
    assert!(!new.default && !new.booted);
    let kargs: Vec<&str> = new.kargs.split_whitespace().collect();
    assert!(
        kargs.contains(&"ibu=4.16.3") && kargs.contains(&"console=ttyS0,115200"),
        "{kargs:?}"
    );
    let etc = t.new_deployment_dir()?.join("etc");
    assert_eq!(
        std::fs::read_to_string(etc.join("motd"))?,
        "welcome to the golden image\n"
    );
    assert!(!etc.join("deleteme.conf").exists(), "etc.deletions applied");
    assert!(!etc.join("olddir").exists());
    assert_eq!(
        std::fs::read_to_string(etc.join("hostname"))?,
        "localhost\n",
        "site data stays the target's"
    );
    assert_eq!(
        std::fs::read_to_string(
            t.sr.stateroot_dir("debian_4.16.3")
                .join("var/home/alice/notes.txt")
        )?,
        "notes\n"
    );
    // The apps are precached.
    let podman = Podman::new(&t.paths)?;
    let names: Vec<String> = podman.images()?.into_iter().flat_map(|i| i.names).collect();
    for app in &w.apps {
        assert!(
            names.iter().any(|n| n == app),
            "{app} not precached: {names:?}"
        );
    }
    assert!(
        !t.paths.workspace().join("auth.json").exists(),
        "the authfile is removed after use"
    );
    Ok(())
}

#[test]
fn prep_then_abort_leaves_the_sysroot_as_it_was() -> Result<()> {
    let w = world()?;
    let t = Target::new(&w)?;
    // One of the apps is already there: precache must skip it.
    let sh = sh();
    let (args, authfile, app) = (&Podman::global_args(&t.paths), &w.authfile, &w.apps[0]);
    common::run(xshell::cmd!(
        sh,
        "podman {args...} pull -q --tls-verify=false --authfile {authfile} {app}"
    ))?;
    let (code, _) = t.converge(None)?;
    assert_eq!(code, Some(0));
    let before = t.layout()?;

    t.ibu().args(["set-stage", "Prep"]).assert().success();
    let (code, log) = t.converge(None)?;
    assert_eq!(code, Some(0), "{log}");
    assert!(
        !log.contains(PASSWORD),
        "the pull secret never appears in the logs"
    );
    assert_prepared(&t, &w)?;
    let r = t.recorded();
    assert_eq!(
        cond(&r, ConditionType::PrepInProgress).2,
        "Prep completed: total: 2 (pulled: 1, skipped: 1, failed: 0)"
    );
    let status = std::fs::read_to_string(t.paths.state_file())?;
    assert!(!status.contains(PASSWORD));

    t.ibu().args(["set-stage", "Idle"]).assert().success();
    let (code, log) = t.converge(None)?;
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(
        cond(&t.recorded(), ConditionType::Idle),
        (ConditionStatus::True, Reason::Idle, "Idle".into())
    );
    assert_eq!(
        t.layout()?,
        before,
        "deployments, stateroots and refs as before Prep"
    );
    assert!(!t.paths.workspace().exists(), "the workspace is gone");
    let podman = Podman::new(&t.paths)?;
    let names: Vec<String> = podman.images()?.into_iter().flat_map(|i| i.names).collect();
    assert!(names.contains(&w.apps[1]), "precached images are kept");
    Ok(())
}

#[test]
fn interruption_at_every_step_boundary_resumes_and_converges() -> Result<()> {
    let w = world()?;
    for step in [
        "InspectSeed",
        "FetchSeedMeta",
        "ImportOstree",
        "DeployStateroot",
        "RestoreVar",
        "RestoreEtc",
        "Precache",
    ] {
        let t = Target::new(&w)?;
        t.converge(None)?;
        t.ibu().args(["set-stage", "Prep"]).assert().success();
        let fault = format!("crash-before-record:{step}");
        let (code, log) = t.converge(Some(&fault))?;
        assert_eq!(
            code, None,
            "{step}: killed by the fault (a signal, no exit code): {log}"
        );
        assert!(
            log.contains(&format!("aborting at crash-before-record of {step}")),
            "{log}"
        );
        assert!(
            t.recorded().status.is_stage_in_progress(Stage::Prep),
            "{step}: still in progress"
        );
        let (code, log) = t.converge(None)?;
        assert_eq!(code, Some(0), "{step}: {log}");
        assert_prepared(&t, &w).with_context(|| format!("after a crash at {step}"))?;
    }
    Ok(())
}

#[test]
fn a_kill_in_the_middle_of_the_import_resumes() -> Result<()> {
    let w = world()?;
    let t = Target::new(&w)?;
    t.converge(None)?;
    t.ibu().args(["set-stage", "Prep"]).assert().success();
    // Run until the import is next, then kill it while it works.
    for _ in 0..10 {
        let r = t.recorded();
        if r.progress.done.contains("DeployStateroot") || r.progress.done.contains("FetchSeedMeta")
        {
            break;
        }
        t.ibu().arg("reconcile").output()?;
    }
    // An ostree transaction in the target repository means the import is writing objects.
    let tmp = t.sr.repo().join("tmp");
    let importing = || {
        std::fs::read_dir(&tmp).is_ok_and(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("staging-"))
        })
    };
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("ibu"))
        .arg("--sysroot")
        .arg(t.sr.path())
        .arg("reconcile")
        .spawn()?;
    let start = std::time::Instant::now();
    while !importing() && child.try_wait()?.is_none() && start.elapsed().as_secs() < 60 {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let _ = child.kill();
    child.wait()?;
    let (code, log) = t.converge(None)?;
    assert_eq!(code, Some(0), "{log}");
    assert_prepared(&t, &w)
}

/// Rewrite the seed's config labels (as a differently built seed would have them) and push the
/// result under `tag`.
fn relabel(w: &World, tag: &str, edit: &dyn Fn(&mut serde_json::Value)) -> Result<String> {
    let dir = tempfile::tempdir()?;
    let layout = dir.path().join("layout");
    let (src, authfile) = (format!("docker://{}", w.seed), &w.authfile);
    let dst = format!("oci:{}:x", layout.display());
    let sh = sh();
    common::run(xshell::cmd!(
        sh,
        "skopeo copy --quiet --preserve-digests --src-tls-verify=false --authfile {authfile} {src} {dst}"
    ))?;
    let blob = |d: &str| {
        layout
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json"))?)?;
    let mdesc = index["manifests"][0]["digest"]
        .as_str()
        .context("index")?
        .to_string();
    let mut manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(blob(&mdesc))?)?;
    let cdesc = manifest["config"]["digest"]
        .as_str()
        .context("config")?
        .to_string();
    let mut config: serde_json::Value = serde_json::from_slice(&std::fs::read(blob(&cdesc))?)?;
    let label = ibu::seed::format::LABEL_SEED_INFO;
    let mut info: serde_json::Value = serde_json::from_str(
        config["config"]["Labels"][label]
            .as_str()
            .context("label")?,
    )?;
    edit(&mut info);
    config["config"]["Labels"][label] = serde_json::Value::String(info.to_string());
    let cbytes = serde_json::to_vec(&config)?;
    let cdig = ibu::oci::sha256_digest(&cbytes);
    std::fs::write(blob(&cdig), &cbytes)?;
    manifest["config"]["digest"] = cdig.into();
    manifest["config"]["size"] = cbytes.len().into();
    let mbytes = serde_json::to_vec(&manifest)?;
    let mdig = ibu::oci::sha256_digest(&mbytes);
    std::fs::write(blob(&mdig), &mbytes)?;
    let mut index = index;
    index["manifests"][0]["digest"] = mdig.into();
    index["manifests"][0]["size"] = mbytes.len().into();
    std::fs::write(layout.join("index.json"), serde_json::to_vec(&index)?)?;
    let image = w.reg.image(&format!("seeds/node:{tag}"));
    let dst = format!("docker://{image}");
    common::run(xshell::cmd!(
        sh,
        "skopeo copy --quiet --preserve-digests --dest-tls-verify=false --authfile {authfile} oci:{layout}:x {dst}"
    ))?;
    Ok(image)
}

#[test]
fn every_compatibility_failure_stops_prep_before_anything_is_pulled() -> Result<()> {
    let w = world()?;
    type Edit = fn(&mut serde_json::Value);
    let relabeled: Vec<(&str, Edit, &str)> = vec![
        (
            "arch",
            |i| i["architecture"] = "aarch64".into(),
            "seed architecture aarch64, this host",
        ),
        (
            "cpus",
            |i| i["cpu_topology"]["threads"] = 512.into(),
            "CPU count differs: seed",
        ),
        (
            "ipfam",
            |i| i["ip_family"] = "IPv6".into(),
            "seed IP family IPv6, this host",
        ),
        (
            "fips",
            |i| i["has_fips"] = true.into(),
            "seed image has FIPS enabled but the cluster being upgraded does not",
        ),
        (
            "noproxy",
            |i| i["has_proxy"] = false.into(),
            "seed image does not have a proxy but the cluster being upgraded does",
        ),
        (
            "storage",
            |i| i["container_storage_mountpoint_target"] = "/dev/sdz".into(),
            "container storage mountpoint target mismatch: seed=/dev/sdz, cluster=/dev/disk/by-label/containers",
        ),
        (
            "huge",
            |i| i["sizes"]["deployment_bytes"] = (1u64 << 50).into(),
            "not enough free space on /sysroot for the seed",
        ),
    ];
    let mut cases: Vec<(String, String, String)> = vec![];
    for (tag, edit, msg) in relabeled {
        cases.push((
            relabel(&w, tag, &edit)?,
            SEED_VERSION.to_string(),
            msg.to_string(),
        ));
    }
    cases.push((
        w.seed.clone(),
        "4.16.4".into(),
        "spec.seedImageRef.version is 4.16.4 but the seed is version 4.16.3".into(),
    ));
    for (image, version, msg) in cases {
        let t = Target::new(&w)?;
        t.converge(None)?;
        let before = t.layout()?;
        t.desire(Stage::Prep, &image, &version)?;
        let (code, log) = t.converge(None)?;
        assert_eq!(code, Some(3), "{msg}: blocked\n{log}");
        let (st, why, m) = cond(&t.recorded(), ConditionType::PrepInProgress);
        assert_eq!((st, why), (ConditionStatus::False, Reason::Failed), "{msg}");
        assert!(m.contains(&msg), "{msg}: {m}");
        assert_eq!(t.layout()?, before, "{msg}: nothing imported or deployed");
    }
    // A host already running a newer OS than the seed: refused by the first checks.
    let t = Target::build(&w, None, "4.17.0")?;
    t.converge(None)?;
    t.desire(Stage::Prep, &w.seed, SEED_VERSION)?;
    let (code, _) = t.converge(None)?;
    assert_eq!(code, Some(3));
    assert_eq!(
        cond(&t.recorded(), ConditionType::PrepInProgress).2,
        "seed OCP version (4.16.3) must be higher than current OCP version (4.17.0)"
    );
    Ok(())
}

#[test]
fn a_hostile_seed_is_rejected_and_writes_nothing_outside_the_new_stateroot() -> Result<()> {
    let w = world()?;
    // The seed's etc layer carries an entry that climbs out of /etc.
    let dir = tempfile::tempdir()?;
    let layout = dir.path().join("layout");
    let (src, authfile) = (format!("docker://{}", w.seed), &w.authfile);
    let dst = format!("oci:{}:x", layout.display());
    let sh = sh();
    common::run(xshell::cmd!(
        sh,
        "skopeo copy --quiet --preserve-digests --src-tls-verify=false --authfile {authfile} {src} {dst}"
    ))?;
    let hostile = hostile_etc_layer()?;
    let image = replace_layer(&layout, "etc", &hostile, &w, "hostile")?;
    let t = Target::new(&w)?;
    t.converge(None)?;
    let outside = |t: &Target| -> Result<Files> {
        let snap = snapshot(t.sr.path(), false);
        Ok(snap
            .into_iter()
            .filter(|(p, _)| {
                // What Prep may legitimately write: the new stateroot, the repository, boot
                // entries, ibu's state and workspace, container storage.
                let s = p.to_string_lossy();
                !(s.starts_with("ostree/deploy/debian_4.16.3")
                    || s.starts_with("ostree/repo")
                    || s.starts_with("boot")
                    || s.starts_with("ostree/boot")
                    || s.starts_with("ostree/deploy/debian/var/lib/ibu")
                    || s.starts_with("ostree/deploy/debian/var/lib/containers")
                    || s.starts_with("run"))
            })
            .map(|(p, s)| (p, s.content, s.mode))
            .collect())
    };
    t.desire(Stage::Prep, &image, SEED_VERSION)?;
    let before = outside(&t)?;
    let (code, log) = t.converge(None)?;
    assert_eq!(code, Some(3), "{log}");
    let (_, why, msg) = cond(&t.recorded(), ConditionType::PrepInProgress);
    assert_eq!(why, Reason::Failed);
    assert!(
        msg.contains("escape") || msg.contains(".."),
        "names the entry: {msg}"
    );
    assert_eq!(
        t.recorded().status.last_step.as_ref().unwrap().name,
        "RestoreEtc"
    );
    let after = outside(&t)?;
    let changed: Vec<&PathBuf> = after
        .iter()
        .filter(|a| !before.contains(a))
        .map(|a| &a.0)
        .chain(before.iter().filter(|b| !after.contains(b)).map(|b| &b.0))
        .collect();
    assert!(
        changed.is_empty(),
        "written outside the new stateroot: {changed:?}"
    );
    assert!(!Path::new("/tmp/ibu-hostile-escape").exists());
    // Abort removes what Prep made.
    t.ibu().args(["set-stage", "Idle"]).assert().success();
    let (code, log) = t.converge(None)?;
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(t.layout()?.1, vec!["debian".to_string()]);
    Ok(())
}

/// An etc layer whose entry `seed/etc/../../../../../../tmp/ibu-hostile-escape` climbs out.
fn hostile_etc_layer() -> Result<Vec<u8>> {
    let name = b"seed/etc/../../../../../../tmp/ibu-hostile-escape";
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name);
    let octal = |f: &mut [u8], v: u64| {
        let s = format!("{v:0w$o}\0", w = f.len() - 1);
        f.copy_from_slice(s.as_bytes());
    };
    octal(&mut h[100..108], 0o644);
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], 4);
    octal(&mut h[136..148], 0);
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| *b as u32).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    let mut tar = h.to_vec();
    let mut data = b"pwnd".to_vec();
    data.resize(512, 0);
    tar.extend_from_slice(&data);
    tar.extend_from_slice(&[0u8; 1024]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &tar)?;
    Ok(gz.finish()?)
}

/// Replace the layer with `role` in the layout by `blob` (gzip tar) and push under `tag`.
fn replace_layer(layout: &Path, role: &str, blob: &[u8], w: &World, tag: &str) -> Result<String> {
    let blobs = layout.join("blobs/sha256");
    let path = |d: &str| blobs.join(d.trim_start_matches("sha256:"));
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json"))?)?;
    let mdesc = index["manifests"][0]["digest"]
        .as_str()
        .context("index")?
        .to_string();
    let mut manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(path(&mdesc))?)?;
    let cdesc = manifest["config"]["digest"]
        .as_str()
        .context("config")?
        .to_string();
    let mut config: serde_json::Value = serde_json::from_slice(&std::fs::read(path(&cdesc))?)?;
    let layers = manifest["layers"].as_array().context("layers")?.clone();
    let pos = layers
        .iter()
        .position(|l| l["annotations"][ibu::seed::format::ANNOTATION_ROLE] == role)
        .context("role")?;
    let digest = ibu::oci::sha256_digest(blob);
    std::fs::write(path(&digest), blob)?;
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(blob), &mut raw)?;
    let diff_id = ibu::oci::sha256_digest(&raw);
    manifest["layers"][pos]["digest"] = digest.into();
    manifest["layers"][pos]["size"] = blob.len().into();
    config["rootfs"]["diff_ids"][pos] = diff_id.into();
    let cbytes = serde_json::to_vec(&config)?;
    let cdig = ibu::oci::sha256_digest(&cbytes);
    std::fs::write(path(&cdig), &cbytes)?;
    manifest["config"]["digest"] = cdig.into();
    manifest["config"]["size"] = cbytes.len().into();
    let mbytes = serde_json::to_vec(&manifest)?;
    let mdig = ibu::oci::sha256_digest(&mbytes);
    std::fs::write(path(&mdig), &mbytes)?;
    let mut index = index;
    index["manifests"][0]["digest"] = mdig.into();
    index["manifests"][0]["size"] = mbytes.len().into();
    std::fs::write(layout.join("index.json"), serde_json::to_vec(&index)?)?;
    let image = w.reg.image(&format!("seeds/node:{tag}"));
    let (authfile, dst) = (&w.authfile, format!("docker://{image}"));
    let sh = sh();
    common::run(xshell::cmd!(
        sh,
        "skopeo copy --quiet --preserve-digests --dest-tls-verify=false --authfile {authfile} oci:{layout}:x {dst}"
    ))?;
    Ok(image)
}

#[test]
fn disk_full_during_the_import_fails_clean_and_abort_restores_the_sysroot() -> Result<()> {
    // A seed whose OS is far bigger than the target's sysroot filesystem.
    let reg = TestRegistry::start(RegistryOpts::new(Some((USER, PASSWORD)), false))?;
    let creds = tempfile::tempdir()?;
    let authfile = reg.authfile(creds.path());
    let mut seed_host = TestSysroot::new()?;
    let mut spec = common::seed::seed_commit().payload_bytes(0);
    for i in 0..64u32 {
        // Incompressible, so the archive objects are as big as the files.
        let mut x = u64::from(i) * 0x9E37_79B9 + 1;
        let data: Vec<u8> = (0..(1 << 20))
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        spec = spec.file(format!("usr/share/big/f{i:02}"), data);
    }
    seed_host.commit(spec)?;
    let d = seed_host.deploy("debian", "seed", &Deploy::new())?;
    seed_host.boot(&d)?;
    seed_host.mount_container_storage(TestFs::Tmpfs { size_mib: 64 })?;
    let etc = seed_host.deployment_dir(&d).join("etc");
    common::seed::write(
        &etc.join("environment"),
        "HTTPS_PROXY=http://proxy.example.com:3128\n",
    )?;
    common::seed::write(
        &etc.join("systemd/system/var-lib-containers.mount"),
        "[Mount]\nWhat=/dev/disk/by-label/containers\nWhere=/var/lib/containers\n",
    )?;
    let seed = reg.image(&format!("seeds/big:{SEED_VERSION}"));
    Command::cargo_bin("ibu")?
        .arg("--sysroot")
        .arg(seed_host.path())
        .args([
            "-q",
            "seed",
            "create",
            "--image",
            &seed,
            "--tls-verify=false",
        ])
        .arg("--authfile")
        .arg(&authfile)
        .assert()
        .success();
    let w = World {
        reg,
        _creds: creds,
        authfile,
        seed: seed.clone(),
        apps: vec![],
    };
    // The target's sysroot is its own 160 MiB tmpfs: the checks pass (the seed needs about
    // 70 MiB), then something else fills the disk before the import, which then runs out.
    let t = Target::on(&w, Some(TestFs::Tmpfs { size_mib: 160 }))?;
    t.converge(None)?;
    let before = t.layout()?;
    t.desire(Stage::Prep, &w.seed, SEED_VERSION)?;
    for _ in 0..10 {
        if t.recorded().progress.done.contains("FetchSeedMeta") {
            break;
        }
        t.ibu().arg("reconcile").output()?;
    }
    assert!(
        t.recorded().progress.done.contains("FetchSeedMeta"),
        "the import is next"
    );
    let filler = t.sr.path().join("filler");
    let st = nix::sys::statvfs::statvfs(t.sr.path())?;
    let free = st.blocks_available() * st.fragment_size();
    std::fs::write(&filler, vec![0u8; (free - (8 << 20)) as usize])?;
    let (code, log) = t.converge(None)?;
    assert_eq!(code, Some(3), "{log}");
    let (_, why, msg) = cond(&t.recorded(), ConditionType::PrepInProgress);
    assert_eq!(why, Reason::Failed);
    // ostree refuses to eat its min-free-space reserve before the kernel says ENOSPC.
    let m = msg.to_lowercase();
    assert!(
        m.contains("no space left") || m.contains("min-free-space"),
        "{msg}"
    );
    assert_eq!(
        t.recorded().status.last_step.as_ref().unwrap().name,
        "ImportOstree"
    );
    std::fs::remove_file(&filler)?;
    t.ibu().args(["set-stage", "Idle"]).assert().success();
    let (code, log) = t.converge(None)?;
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(t.layout()?, before, "the sysroot is as before Prep");
    let st = nix::sys::statvfs::statvfs(t.sr.path())?;
    assert!(
        st.blocks_available() * st.fragment_size() > free - (4 << 20),
        "the space is given back"
    );
    Ok(())
}
