//! Upgrade, rollback and finalize end to end on real directory sysroots (real libostree, real
//! files, the real `ibu` binary), starting from the state Prep leaves: the pivot "reboot" is the
//! sandbox file naming the new deployment with a new boot id (see README, "Directory
//! sysroots"). Also: a kill before the marker of every step converges; the init monitor;
//! an uncontrolled return to the old stateroot; two nodes from one seed share no SSH key.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use assert_cmd::Command;
use common::{CommitSpec, Deploy, Deployed, TestSysroot};
use ibu::spec::Stage;
use ibu::status::store::{DeploymentRecord, Recorded, Target};
use ibu::status::{ConditionStatus, ConditionType, Reason, Timestamp};

const NEW: &str = "debian_1.1.0";

fn doc(stage: &str, extra: &str) -> String {
    format!(
        "apiVersion: lca.openshift.io/v1\nkind: ImageBasedUpgrade\nmetadata:\n  name: upgrade\n{extra}spec:\n  stage: {stage}\n  seedImageRef:\n    image: registry.example.com/seed:1.1.0\n    version: 1.1.0\n  extraManifests:\n  - name: em\n    namespace: openshift-lifecycle-agent\n  oadpContent:\n  - name: oadp\n    namespace: openshift-adp\n"
    )
}

const MACHINE_CONFIG: &str = "apiVersion: machineconfiguration.openshift.io/v1
kind: MachineConfig
metadata:
  name: app-config
  annotations:
    lca.openshift.io/apply-wave: \"1\"
spec:
  config:
    ignition:
      version: 3.2.0
    storage:
      files:
      - path: /etc/app.conf
        mode: 420
        contents:
          source: data:,greeting%3Dhello%0A
    systemd:
      units:
      - name: app.service
        enabled: true
        contents: |
          [Service]
          ExecStart=/bin/true
          [Install]
          WantedBy=multi-user.target
";

struct Scene {
    sr: TestSysroot,
    old: Deployed,
    new: Deployed,
}

fn write(p: &Path, text: &str) -> Result<()> {
    std::fs::create_dir_all(p.parent().context("parent")?)?;
    std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))
}

fn keygen(path: &Path, kind: &str) -> Result<()> {
    std::fs::create_dir_all(path.parent().context("parent")?)?;
    let sh = common::sh()?;
    common::run(xshell::cmd!(sh, "ssh-keygen -q -N '' -t {kind} -f {path}"))?;
    Ok(())
}

impl Scene {
    /// Old 1.0.0 booted in `debian`; 1.1.0 deployed in `debian_1.1.0` with an SSH host key baked
    /// into its commit (as Debian's openssh-server postinst leaves one); the node configured;
    /// Prep recorded as completed.
    fn new(hostname: &str) -> Result<Scene> {
        let baked = tempfile::tempdir()?;
        keygen(&baked.path().join("ssh_host_ecdsa_key"), "ecdsa")?;
        Scene::build(hostname, baked.path())
    }

    /// As [`Scene::new`], the new commit's baked SSH host key taken from `baked`.
    fn build(hostname: &str, baked: &Path) -> Result<Scene> {
        let mut sr = TestSysroot::new()?;
        sr.commit(CommitSpec::new("old", "1.0.0"))?;
        let mut spec = CommitSpec::new("new", "1.1.0");
        for f in ["ssh_host_ecdsa_key", "ssh_host_ecdsa_key.pub"] {
            spec = spec.file(format!("usr/etc/ssh/{f}"), std::fs::read(baked.join(f))?);
        }
        sr.commit(spec.mode("usr/etc/ssh/ssh_host_ecdsa_key", 0o600))?;
        let old = sr.deploy("debian", "old", &Deploy::new())?;
        let new = sr.deploy(
            NEW,
            "new",
            &Deploy::new().not_as_default().karg("ibu=1.1.0"),
        )?;
        sr.boot(&old)?;
        let s = Scene { sr, old, new };
        s.configure(hostname)?;
        Ok(s)
    }

    fn old_etc(&self) -> PathBuf {
        self.sr.deployment_dir(&self.old).join("etc")
    }
    fn new_etc(&self) -> PathBuf {
        self.sr.deployment_dir(&self.new).join("etc")
    }
    fn var(&self, stateroot: &str) -> PathBuf {
        self.sr.stateroot_dir(stateroot).join("var")
    }

    fn configure(&self, hostname: &str) -> Result<()> {
        let etc = self.old_etc();
        let var = self.var("debian");
        write(&etc.join("hostname"), &format!("{hostname}\n"))?;
        let mid: String = format!("{:0>32}", hostname.len() * 7919)
            .chars()
            .take(32)
            .collect();
        write(&etc.join("machine-id"), &format!("{mid}\n"))?;
        keygen(&etc.join("ssh/ssh_host_ed25519_key"), "ed25519")?;
        write(
            &etc.join("NetworkManager/system-connections/lan.nmconnection"),
            "[connection]\nid=lan\n[ipv4]\naddress1=192.0.2.10/24\n",
        )?;
        write(&etc.join("environment"), "HTTPS_PROXY=http://proxy:3128\n")?;
        write(
            &var.join("roothome/.ssh/authorized_keys"),
            "ssh-ed25519 AAAA admin\n",
        )?;
        // Where Ignition writes root's keys.
        write(
            &var.join("roothome/.ssh/authorized_keys.d/ignition"),
            "ssh-ed25519 BBBB provisioned\n",
        )?;
        write(&var.join("usrlocal/bin/ibu"), "#!/bin/sh\n# ibu\n")?;
        write(&var.join("lib/app/data.txt"), "precious\n")?;
        let ibu = etc.join("ibu");
        write(&ibu.join("upgrade.yaml"), &doc("Upgrade", ""))?;
        write(
            &ibu.join("configmaps/openshift-lifecycle-agent/em.yaml"),
            &format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: em\n  namespace: openshift-lifecycle-agent\ndata:\n  mc.yaml: |\n{}",
                indent(MACHINE_CONFIG)
            ),
        )?;
        write(
            &ibu.join("configmaps/openshift-adp/oadp.yaml"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: oadp\n  namespace: openshift-adp\ndata:\n  app.yaml: |\n    apiVersion: ibu/v1\n    kind: NodeBackup\n    metadata:\n      name: app\n    spec:\n      paths: [/var/lib/app]\n",
        )?;
        // Health checks record when they ran, in the sysroot (the scripts run on this host).
        let log = self.sr.path().join("health.log");
        for kind in ["required", "wanted"] {
            let p = ibu.join(format!("health-check/{kind}.d/10-{kind}"));
            write(
                &p,
                &format!(
                    "#!/bin/sh\necho \"{kind} $IBU_HEALTH_PHASE\" >> {}\n",
                    log.display()
                ),
            )?;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))?;
        }
        self.prep_completed()
    }

    /// The state Prep leaves.
    fn prep_completed(&self) -> Result<()> {
        let mut d = ibu::spec::load::parse_str(&doc("Prep", ""), "test")?.desired;
        d.stage = Stage::Prep;
        let mut r = Recorded::default();
        let (g, digest) = r.next_generation(&d);
        let cx = ibu::status::conditions::Ctx {
            generation: g,
            now: Timestamp::now(),
        };
        r.generation = g;
        r.spec_digest = Some(digest);
        r.accepted = Some(d);
        r.status.reset_to_idle(cx);
        r.status
            .set_idle_in_progress(cx, Reason::InProgress, "In progress");
        r.status.set_prep_in_progress(cx, "In progress");
        r.status
            .set_prep_completed(cx, "Prep stage completed successfully");
        r.target = Some(Target {
            stateroot: NEW.into(),
            version: "1.1.0".into(),
            image: "registry.example.com/seed:1.1.0".into(),
            seed: None,
            deployment: Some(DeploymentRecord {
                checksum: self.new.checksum.clone(),
                serial: self.new.serial,
            }),
        });
        r.save(&self.var("debian").join("lib/ibu/state.yaml"))
    }

    fn ibu(&self) -> Command {
        let mut c = Command::cargo_bin("ibu").unwrap();
        c.arg("--sysroot").arg(self.sr.path());
        c
    }

    /// `ibu reconcile` until it stops asking to be run again.
    fn converge(&self, fault: Option<&str>) -> Result<(Option<i32>, String)> {
        let mut all = String::new();
        for _ in 0..40 {
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
        bail!("no convergence after 40 runs:\n{all}")
    }

    /// The state file of the booted stateroot.
    fn recorded(&self) -> Recorded {
        let p = self.sr.paths().unwrap().state_file();
        Recorded::load(&p).unwrap()
    }

    fn set_stage(&self, stage: &str) -> Result<()> {
        let p = self.sr.paths()?.desired_file();
        let text = std::fs::read_to_string(&p)?;
        let re = text.replace(
            &format!("stage: {}", current_stage(&text)),
            &format!("stage: {stage}"),
        );
        write(&p, &re)
    }

    fn order(&self) -> Result<Vec<String>> {
        let facts = ibu::facts::ostree::gather(&self.sr.paths()?)?;
        Ok(facts
            .deployments
            .iter()
            .map(|d| d.stateroot.clone())
            .collect())
    }

    fn stateroots(&self) -> Result<Vec<String>> {
        Ok(ibu::facts::ostree::gather(&self.sr.paths()?)?.stateroots)
    }

    fn health_log(&self) -> String {
        std::fs::read_to_string(self.sr.path().join("health.log")).unwrap_or_default()
    }
}

fn current_stage(text: &str) -> String {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("stage: "))
        .unwrap_or_default()
        .to_string()
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("    {l}\n")).collect()
}

fn cond(r: &Recorded, k: ConditionType) -> (ConditionStatus, Reason, String) {
    let c = r
        .status
        .condition(k)
        .unwrap_or_else(|| panic!("no {k:?}: {r:#?}"));
    (c.status, c.reason, c.message.clone())
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Everything the pre-pivot steps must have produced, before the reboot.
fn assert_pivot_ready(s: &Scene) -> Result<()> {
    let (old_etc, new_etc, new_var) = (s.old_etc(), s.new_etc(), s.var(NEW));
    for f in [
        "hostname",
        "machine-id",
        "ssh/ssh_host_ed25519_key",
        "ssh/ssh_host_ed25519_key.pub",
        "NetworkManager/system-connections/lan.nmconnection",
        "environment",
        "ibu/upgrade.yaml",
    ] {
        assert_eq!(
            read(&new_etc.join(f)),
            read(&old_etc.join(f)),
            "{f} carried"
        );
    }
    let secret_mode = std::fs::metadata(new_etc.join("ssh/ssh_host_ed25519_key"))?
        .permissions()
        .mode();
    assert_eq!(secret_mode & 0o777, 0o600, "key mode kept");
    for f in [
        "roothome/.ssh/authorized_keys",
        "roothome/.ssh/authorized_keys.d/ignition",
        "usrlocal/bin/ibu",
    ] {
        assert_eq!(
            read(&new_var.join(f)),
            read(&s.var("debian").join(f)),
            "{f} carried"
        );
    }
    // The seed's baked key is gone, replaced by one of this node's own.
    let baked = read(
        &s.sr
            .deployment_dir(&s.new)
            .join("usr/etc/ssh/ssh_host_ecdsa_key"),
    );
    let now = read(&new_etc.join("ssh/ssh_host_ecdsa_key"));
    assert_ne!(now, baked, "the seed's ECDSA host key was regenerated");
    assert!(now.contains("PRIVATE KEY"));
    let ws = new_var.join("lib/ibu/workspace");
    assert!(ws.join("identity.yaml").exists());
    assert!(
        ws.join("manifests/1/000-MachineConfig-app-config.yaml")
            .exists()
    );
    assert_eq!(
        read(&ws.join("backup/unset/openshift-adp_oadp_app/paths/0/data.txt")),
        "precious\n"
    );
    let units = new_etc.join("systemd/system");
    assert!(units.join("ibu-init-monitor.timer").exists());
    assert!(
        std::fs::symlink_metadata(units.join("timers.target.wants/ibu-init-monitor.timer"))?
            .file_type()
            .is_symlink()
    );
    assert!(read(&units.join("ibu-init-monitor.timer.d/timeout.conf")).contains("OnBootSec=1800s"));
    let copy = Recorded::load(&new_var.join("lib/ibu/state.yaml"))?;
    assert!(
        copy.status.is_stage_in_progress(Stage::Upgrade),
        "the new stateroot's state copy"
    );
    assert!(copy.progress.done.contains("SaveState"));
    // Boot order: the new deployment first (no boot-once here), the old one kept after it.
    assert_eq!(s.order()?, [NEW, "debian"]);
    let req = ibu::reboot::read_request(s.sr.path())?.context("a reboot was requested")?;
    assert_eq!(
        req.message,
        "ibu: upgrade, rebooting into stateroot debian_1.1.0"
    );
    let r = s.recorded();
    assert_eq!(r.status.valid_next_stages, vec![Stage::Idle]);
    assert!(r.status.is_stage_in_progress(Stage::Upgrade));
    Ok(())
}

/// Everything a completed upgrade must show, in the new stateroot.
fn assert_upgraded(s: &Scene) -> Result<()> {
    let r = s.recorded();
    assert_eq!(
        cond(&r, ConditionType::UpgradeCompleted),
        (
            ConditionStatus::True,
            Reason::Completed,
            "Upgrade completed".into()
        )
    );
    assert_eq!(
        r.status.valid_next_stages,
        vec![Stage::Idle, Stage::Rollback]
    );
    let (etc, var) = (s.new_etc(), s.var(NEW));
    assert_eq!(
        read(&etc.join("app.conf")),
        "greeting=hello\n",
        "the MachineConfig's file"
    );
    assert!(
        std::fs::symlink_metadata(etc.join("systemd/system/multi-user.target.wants/app.service"))?
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        read(&var.join("lib/app/data.txt")),
        "precious\n",
        "the backup restored"
    );
    assert!(
        !etc.join("systemd/system/ibu-init-monitor.timer").exists(),
        "monitor removed"
    );
    assert!(
        !etc.join("systemd/system/timers.target.wants/ibu-init-monitor.timer")
            .exists()
    );
    assert!(
        s.health_log().contains("required post-pivot"),
        "{}",
        s.health_log()
    );
    assert!(s.health_log().contains("wanted pre-pivot"));
    Ok(())
}

/// Converge with `fault`; when the fault killed ibu (no exit code), converge again without.
fn converge_through(s: &Scene, fault: Option<&str>) -> Result<(Option<i32>, String)> {
    let (code, log) = s.converge(fault)?;
    if code.is_some() {
        return Ok((code, log));
    }
    assert!(
        log.contains("IBU_FAULT: aborting at crash-before-record"),
        "{log}"
    );
    let (code, more) = s.converge(None)?;
    Ok((code, log + &more))
}

/// Upgrade from the Prep state through the pivot "reboot" to UpgradeCompleted.
fn upgrade(s: &Scene, fault: Option<&str>) -> Result<()> {
    let (code, before) = converge_through(s, fault)?;
    assert_eq!(code, Some(4), "waiting for the reboot: {before}");
    assert_pivot_ready(s)?;
    s.sr.reboot_into(&s.new, 40)?;
    let (code, after) = converge_through(s, fault)?;
    assert_eq!(code, Some(0), "{after}");
    if let Some(f) = fault {
        let step = f.trim_start_matches("crash-before-record:");
        let hit = format!("aborting at crash-before-record of {step}");
        assert!(
            before.contains(&hit) || after.contains(&hit),
            "the fault never hit {step}"
        );
    }
    assert_upgraded(s)
}

#[test]
fn upgrade_then_finalize_keeps_the_identity_and_removes_the_old_stateroot() -> Result<()> {
    let s = Scene::new("node-a")?;
    upgrade(&s, None)?;
    let out = s.ibu().arg("status").output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Upgrade completed"), "{text}");
    s.set_stage("Idle")?;
    let (code, log) = s.converge(None)?;
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(
        cond(&s.recorded(), ConditionType::Idle),
        (ConditionStatus::True, Reason::Idle, "Idle".into())
    );
    assert_eq!(s.stateroots()?, [NEW]);
    assert_eq!(s.order()?, [NEW]);
    assert!(
        !s.var(NEW).join("lib/ibu/workspace").exists(),
        "backups, manifests, records gone"
    );
    assert_eq!(read(&s.new_etc().join("hostname")), "node-a\n");
    Ok(())
}

#[test]
fn a_kill_before_the_marker_of_every_step_converges() -> Result<()> {
    for step in [
        "HealthChecks",
        "Backup",
        "CarryIdentity",
        "RegenerateCrypto",
        "StageManifests",
        "WriteAutoRollback",
        "SaveState",
        "Pivot",
        "Reboot",
        "CommitPivot",
        "ApplyIdentity",
        "ApplyManifests",
        "RestoreBackups",
        "PostPivotHealthChecks",
        "FinishUpgrade",
    ] {
        let s = Scene::new("node-k")?;
        upgrade(&s, Some(&format!("crash-before-record:{step}")))
            .with_context(|| format!("killed before the marker of {step}"))?;
    }
    Ok(())
}

#[test]
fn manual_rollback_then_idle_removes_the_new_stateroot() -> Result<()> {
    let s = Scene::new("node-r")?;
    upgrade(&s, None)?;
    s.set_stage("Rollback")?;
    let (code, log) = s.converge(None)?;
    assert_eq!(code, Some(4), "waiting for the rollback reboot: {log}");
    assert_eq!(
        s.order()?,
        ["debian", NEW],
        "the old deployment is the default again"
    );
    let req = ibu::reboot::read_request(s.sr.path())?.context("reboot")?;
    assert_eq!(
        req.message,
        "ibu: rollback, rebooting into stateroot debian"
    );
    // The old stateroot got the state and the desired stage.
    assert!(read(&s.old_etc().join("ibu/upgrade.yaml")).contains("stage: Rollback"));
    s.sr.reboot_into(&s.old, 30)?;
    let (code, log) = s.converge(None)?;
    assert_eq!(code, Some(0), "{log}");
    let r = s.recorded();
    assert_eq!(
        cond(&r, ConditionType::RollbackCompleted),
        (
            ConditionStatus::True,
            Reason::Completed,
            "Rollback completed".into()
        )
    );
    assert_eq!(r.status.valid_next_stages, vec![Stage::Idle]);
    s.set_stage("Idle")?;
    let (code, log) = s.converge(None)?;
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(s.stateroots()?, ["debian"]);
    assert_eq!(read(&s.old_etc().join("hostname")), "node-r\n");
    Ok(())
}

#[test]
fn the_init_monitor_rolls_back_a_slow_upgrade() -> Result<()> {
    let s = Scene::new("node-m")?;
    let (code, log) = s.converge(None)?;
    assert_eq!(code, Some(4), "{log}");
    // The new stateroot comes up, but ibu first runs 31 minutes after boot (the monitor's timer
    // fires then).
    s.sr.reboot_into(&s.new, 1860)?;
    let (code, log) = s.converge(None)?;
    assert_eq!(code, Some(4), "waiting for the rollback reboot: {log}");
    let msg = "Rollback due to LCA Init Monitor timeout, after 30m0s";
    assert_eq!(
        cond(&s.recorded(), ConditionType::UpgradeInProgress),
        (ConditionStatus::False, Reason::Failed, msg.into())
    );
    assert_eq!(s.order()?, ["debian", NEW]);
    s.sr.reboot_into(&s.old, 30)?;
    let (code, log) = s.converge(None)?;
    assert_eq!(code, Some(3), "blocked: Upgrade failed, Idle next: {log}");
    let r = s.recorded();
    assert_eq!(cond(&r, ConditionType::UpgradeInProgress).2, msg);
    assert_eq!(r.status.valid_next_stages, vec![Stage::Idle]);
    s.set_stage("Idle")?;
    let (code, log) = s.converge(None)?;
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(s.stateroots()?, ["debian"]);
    Ok(())
}

#[test]
fn a_failing_post_pivot_step_rolls_back() -> Result<()> {
    let s = Scene::new("node-f")?;
    // A manifest kind nobody can apply on a node fails its wave after the pivot.
    let cm = s
        .old_etc()
        .join("ibu/configmaps/openshift-lifecycle-agent/em.yaml");
    write(
        &cm,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: em\ndata:\n  x.yaml: |\n    apiVersion: v1\n    kind: Namespace\n    metadata:\n      name: app\n",
    )?;
    let (code, log) = s.converge(None)?;
    assert_eq!(code, Some(4), "{log}");
    s.sr.reboot_into(&s.new, 40)?;
    let (code, log) = s.converge(None)?;
    assert_eq!(code, Some(4), "{log}");
    let (st, why, msg) = cond(&s.recorded(), ConditionType::UpgradeInProgress);
    assert_eq!((st, why), (ConditionStatus::False, Reason::Failed));
    assert!(
        msg.starts_with("Rollback due to postpivot failure: ")
            && msg.contains("no way to apply Namespace app"),
        "{msg}"
    );
    s.sr.reboot_into(&s.old, 30)?;
    let (code, _) = s.converge(None)?;
    assert_eq!(code, Some(3));
    assert_eq!(cond(&s.recorded(), ConditionType::UpgradeInProgress).2, msg);
    Ok(())
}

#[test]
fn booting_the_old_stateroot_after_the_pivot_is_an_uncontrolled_rollback() -> Result<()> {
    let s = Scene::new("node-u")?;
    let (code, log) = s.converge(None)?;
    assert_eq!(code, Some(4), "{log}");
    s.sr.reboot_into(&s.old, 30)?;
    let (code, log) = s.converge(None)?;
    assert_eq!(code, Some(3), "{log}");
    let r = s.recorded();
    assert_eq!(
        cond(&r, ConditionType::UpgradeInProgress),
        (
            ConditionStatus::False,
            Reason::Failed,
            "Uncontrolled rollback".into()
        )
    );
    assert_eq!(r.status.valid_next_stages, vec![Stage::Idle]);
    s.set_stage("Idle")?;
    let (code, log) = s.converge(None)?;
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(s.stateroots()?, ["debian"]);
    assert_eq!(s.order()?, ["debian"]);
    Ok(())
}

#[test]
fn two_nodes_upgraded_from_one_seed_share_no_ssh_host_key() -> Result<()> {
    // One seed: both new commits carry the same baked host key.
    let baked = tempfile::tempdir()?;
    keygen(&baked.path().join("ssh_host_ecdsa_key"), "ecdsa")?;
    let a = Scene::build("node-1", baked.path())?;
    let b = Scene::build("node-2", baked.path())?;
    for s in [&a, &b] {
        let (code, log) = s.converge(None)?;
        assert_eq!(code, Some(4), "{log}");
    }
    for key in ["ssh_host_ecdsa_key", "ssh_host_ed25519_key"] {
        let ka = read(&a.new_etc().join("ssh").join(key));
        let kb = read(&b.new_etc().join("ssh").join(key));
        assert_ne!(ka, kb, "{key} differs between the nodes");
    }
    Ok(())
}
