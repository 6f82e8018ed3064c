//! `ibu` end to end on real directory sysroots: reconcile, status, plan, set-stage, validate.
//!
//! Every test drives the real binary against a sysroot made by the real `ostree` CLI and checks
//! the result on disk (deployments, stateroots, the state file), not only exit codes.

mod common;

use std::path::{Path, PathBuf};

use anyhow::Result;
use assert_cmd::Command;
use common::{CommitSpec, Deploy, TestFs, TestSysroot};
use ibu::spec::Stage;
use ibu::status::store::Recorded;
use ibu::status::{ConditionStatus, ConditionType, Reason, Timestamp};

const PREP: &str = "\
apiVersion: lca.openshift.io/v1
kind: ImageBasedUpgrade
metadata:
  name: upgrade
spec:
  stage: Prep   # the stage we want
  seedImageRef:
    image: registry.example.com/seed:1.1.0
    version: 1.1.0
";

struct Node {
    sr: TestSysroot,
    config: PathBuf,
    state: PathBuf,
}

impl Node {
    /// One stateroot `debian` running 1.0.0, booted.
    fn new() -> Result<Node> {
        let mut sr = TestSysroot::new()?;
        sr.commit(CommitSpec::new("old", "1.0.0"))?;
        let d = sr.deploy("debian", "old", &Deploy::new())?;
        sr.boot(&d)?;
        let paths = sr.paths()?;
        Ok(Node {
            config: paths.desired_file(),
            state: paths.state_file(),
            sr,
        })
    }

    /// As `new`, plus 1.1.0 deployed (not default) in `debian_1.1.0` and a leftover empty
    /// stateroot directory, as a half-made Prep would leave.
    fn with_new_stateroot() -> Result<Node> {
        let mut n = Node::new()?;
        n.sr.commit(CommitSpec::new("new", "1.1.0"))?;
        n.sr.deploy(
            "debian_1.1.0",
            "new",
            &Deploy::new().not_as_default().karg("ibu=1.1.0"),
        )?;
        std::fs::create_dir_all(n.sr.stateroot_dir("leftover"))?;
        Ok(n)
    }

    fn ibu(&self) -> Command {
        let mut c = Command::cargo_bin("ibu").unwrap();
        c.arg("--sysroot").arg(self.sr.path());
        c
    }

    fn reconcile(&self) -> i32 {
        let out = self.ibu().arg("reconcile").output().unwrap();
        out.status.code().unwrap_or(-1)
    }

    fn write_desired(&self, text: &str) {
        std::fs::create_dir_all(self.config.parent().unwrap()).unwrap();
        std::fs::write(&self.config, text).unwrap();
    }

    fn recorded(&self) -> Recorded {
        Recorded::load(&self.state).unwrap()
    }

    fn deployments(&self) -> Vec<(String, String)> {
        let facts = ibu::facts::ostree::gather(&self.sr.paths().unwrap()).unwrap();
        facts
            .deployments
            .iter()
            .map(|d| (d.stateroot.clone(), d.checksum.clone()))
            .collect()
    }

    fn stateroot_dirs(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.sr.path().join("ostree/deploy"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

fn cond(r: &Recorded, k: ConditionType) -> (ConditionStatus, Reason, String) {
    let c = r
        .status
        .condition(k)
        .unwrap_or_else(|| panic!("no {k:?}: {r:#?}"));
    (c.status, c.reason, c.message.clone())
}

fn bytes(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_default()
}

#[test]
fn fresh_node_converges_to_idle_and_a_rerun_changes_nothing() -> Result<()> {
    let n = Node::new()?;
    assert_eq!(n.reconcile(), 0);
    let r = n.recorded();
    assert_eq!(
        cond(&r, ConditionType::Idle),
        (ConditionStatus::True, Reason::Idle, "Idle".into())
    );
    assert_eq!(r.status.valid_next_stages, vec![Stage::Prep]);
    let before = bytes(&n.state);
    let mtime = std::fs::metadata(&n.state)?.modified()?;
    for _ in 0..3 {
        assert_eq!(n.reconcile(), 0);
    }
    assert_eq!(bytes(&n.state), before, "a converged run rewrote the state");
    assert_eq!(std::fs::metadata(&n.state)?.modified()?, mtime);
    Ok(())
}

#[test]
fn prep_without_separate_container_storage_fails_with_lcas_message() -> Result<()> {
    let n = Node::new()?;
    assert_eq!(n.reconcile(), 0);
    n.write_desired(PREP);
    let deployments = n.deployments();
    assert_eq!(n.reconcile(), 3, "blocked: Prep failed");
    let r = n.recorded();
    assert_eq!(
        cond(&r, ConditionType::PrepInProgress),
        (
            ConditionStatus::False,
            Reason::Failed,
            "container storage mountpoint target not found".into()
        )
    );
    assert_eq!(
        cond(&r, ConditionType::PrepCompleted),
        (ConditionStatus::False, Reason::Failed, "Prep failed".into())
    );
    assert_eq!(r.status.valid_next_stages, vec![Stage::Idle]);
    assert_eq!(r.status.observed_generation, 2);
    assert_eq!(n.deployments(), deployments, "host untouched");

    // Abort: Idle cleans up (nothing to remove here) and the node is Idle again.
    n.ibu().args(["set-stage", "Idle"]).assert().success();
    assert_eq!(n.reconcile(), 75, "the abort step ran");
    assert_eq!(n.reconcile(), 0);
    let r = n.recorded();
    assert_eq!(
        cond(&r, ConditionType::Idle),
        (ConditionStatus::True, Reason::Idle, "Idle".into())
    );
    assert_eq!(r.status.conditions.len(), 1);
    assert_eq!(n.deployments(), deployments);
    Ok(())
}

#[test]
fn prep_with_an_unreachable_registry_fails_clearly_and_changes_nothing() -> Result<()> {
    let mut n = Node::new()?;
    n.sr.mount_container_storage(TestFs::Tmpfs { size_mib: 64 })?;
    assert_eq!(n.reconcile(), 0);
    let deployments = n.deployments();
    // Nothing listens on this port.
    let port = common::registry::free_port()?;
    n.write_desired(&PREP.replace(
        "registry.example.com/seed:1.1.0",
        &format!("127.0.0.1:{port}/seed:1.1.0"),
    ));
    assert_eq!(n.reconcile(), 75, "checks passed, the seed inspection ran");
    let r = n.recorded();
    let checks: Vec<(&str, ibu::status::CheckResult)> = r
        .status
        .checks
        .iter()
        .map(|c| (c.name.as_str(), c.result))
        .collect();
    use ibu::status::CheckResult::*;
    assert_eq!(
        checks,
        vec![
            ("ContainerStorageMount", Passed),
            ("TargetVersion", Passed),
            ("FreeSpaceSysroot", Passed),
            ("FreeSpaceBoot", Passed),
        ]
    );
    let (st, why, msg) = cond(&r, ConditionType::PrepInProgress);
    assert_eq!((st, why), (ConditionStatus::False, Reason::Failed));
    assert!(
        msg.starts_with("failed to validate seed image info: "),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("127.0.0.1:{port}")),
        "names the registry: {msg}"
    );
    assert_eq!(r.status.last_step.as_ref().unwrap().name, "InspectSeed");
    assert_eq!(n.reconcile(), 3, "Prep failed: blocked");
    assert_eq!(n.deployments(), deployments, "host untouched");
    assert_eq!(n.stateroot_dirs(), ["debian"]);
    Ok(())
}

/// A recorded state of "Prep completed", as Prep will leave it.
fn prep_completed(n: &Node) -> Result<()> {
    let mut r = Recorded::default();
    let mut d = ibu::spec::load::parse_str(PREP, "test")?.desired;
    d.stage = Stage::Idle;
    let t = Timestamp::now();
    let (g, digest) = r.next_generation(&d);
    let cx = ibu::status::conditions::Ctx {
        generation: g,
        now: t,
    };
    r.generation = g;
    r.spec_digest = Some(digest);
    r.status.reset_to_idle(cx);
    r.status
        .set_idle_in_progress(cx, Reason::InProgress, "In progress");
    r.status.set_prep_in_progress(cx, "In progress");
    r.status
        .set_prep_completed(cx, "Prep stage completed successfully");
    r.target = Some(ibu::status::store::Target {
        stateroot: "debian_1.1.0".into(),
        version: "1.1.0".into(),
        image: "registry.example.com/seed:1.1.0".into(),
        seed: None,
        deployment: None,
    });
    r.save(&n.state)
}

#[test]
fn abort_after_prep_removes_every_other_stateroot() -> Result<()> {
    let n = Node::with_new_stateroot()?;
    prep_completed(&n)?;
    let booted = n.deployments()[0].clone();
    assert_eq!(n.deployments().len(), 2);
    assert_eq!(n.stateroot_dirs(), ["debian", "debian_1.1.0", "leftover"]);
    n.write_desired(&PREP.replace("stage: Prep", "stage: Idle"));
    assert_eq!(n.reconcile(), 75);
    assert_eq!(
        n.deployments(),
        vec![booted],
        "only the booted deployment is left"
    );
    assert_eq!(n.stateroot_dirs(), ["debian"]);
    let r = n.recorded();
    assert_eq!(
        cond(&r, ConditionType::Idle),
        (ConditionStatus::True, Reason::Idle, "Idle".into())
    );
    assert_eq!(r.target, None);
    assert_eq!(r.status.last_step.as_ref().unwrap().name, "Abort");
    assert_eq!(n.reconcile(), 0);
    // `ostree admin status` agrees, and the booted deployment still checks out.
    let sh = common::sh()?;
    let sysroot = n.sr.path();
    let status = common::run(xshell::cmd!(sh, "ostree admin --sysroot={sysroot} status"))?;
    assert!(!status.contains("debian_1.1.0"), "{status}");
    Ok(())
}

#[test]
fn failed_abort_waits_for_manual_cleanup_annotation() -> Result<()> {
    let n = Node::with_new_stateroot()?;
    prep_completed(&n)?;
    // An immutable file makes the leftover stateroot impossible to remove.
    let stuck = n.sr.stateroot_dir("leftover").join("stuck");
    std::fs::write(&stuck, b"x")?;
    let sh = common::sh()?;
    common::run(xshell::cmd!(sh, "chattr +i {stuck}"))?;
    let idle = PREP.replace("stage: Prep", "stage: Idle");
    n.write_desired(&idle);
    assert_eq!(n.reconcile(), 75);
    let r = n.recorded();
    let (st, reason, msg) = cond(&r, ConditionType::Idle);
    assert_eq!((st, reason), (ConditionStatus::False, Reason::AbortFailed));
    assert!(msg.contains("failed to remove stateroot leftover"), "{msg}");
    assert!(msg.ends_with(
        "Perform cleanup manually then add 'lca.openshift.io/manual-cleanup-done' annotation \
         to ibu CR to transition back to Idle"
    ));
    assert_eq!(r.status.valid_next_stages, Vec::<Stage>::new());
    assert_eq!(n.reconcile(), 3, "blocked until the annotation appears");
    // The operator cleans up and adds the annotation.
    common::run(xshell::cmd!(sh, "chattr -i {stuck}"))?;
    n.write_desired(&idle.replace(
        "  name: upgrade\n",
        "  name: upgrade\n  annotations:\n    lca.openshift.io/manual-cleanup-done: \"\"\n",
    ));
    assert_eq!(n.reconcile(), 75, "cleanup runs again to verify");
    assert_eq!(n.stateroot_dirs(), ["debian"]);
    assert_eq!(
        cond(&n.recorded(), ConditionType::Idle),
        (ConditionStatus::True, Reason::Idle, "Idle".into())
    );
    Ok(())
}

#[test]
fn invalid_transition_is_recorded_and_the_host_is_untouched() -> Result<()> {
    let n = Node::with_new_stateroot()?;
    assert_eq!(n.reconcile(), 0);
    let deployments = n.deployments();
    let dirs = n.stateroot_dirs();
    n.write_desired(&PREP.replace("stage: Prep", "stage: Upgrade"));
    assert_eq!(n.reconcile(), 3);
    assert_eq!(
        cond(&n.recorded(), ConditionType::UpgradeInProgress),
        (
            ConditionStatus::False,
            Reason::InvalidTransition,
            "Previous stage not succeeded".into()
        )
    );
    assert_eq!(n.deployments(), deployments);
    assert_eq!(n.stateroot_dirs(), dirs);
    Ok(())
}

#[test]
fn bad_desired_state_is_refused_and_changes_nothing() -> Result<()> {
    let n = Node::new()?;
    assert_eq!(n.reconcile(), 0);
    let state = bytes(&n.state);
    for (doc, fragment) in [
        ("spec: [unclosed", "not valid yaml"),
        (
            &*PREP.replace("  stage: Prep", "  stag: Prep"),
            "did you mean",
        ),
        ("\0\0\0binary", "binary"),
    ] {
        n.write_desired(doc);
        let out = n.ibu().arg("reconcile").output()?;
        assert_eq!(out.status.code(), Some(2), "{doc:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.to_lowercase().contains(fragment), "{doc:?}: {err}");
        assert_eq!(bytes(&n.state), state, "{doc:?} changed the state");
    }
    Ok(())
}

#[test]
fn seed_may_not_change_while_prep_is_in_progress() -> Result<()> {
    let n = Node::new()?;
    assert_eq!(n.reconcile(), 0);
    n.write_desired(PREP);
    assert_eq!(n.reconcile(), 3, "Prep failed (no container storage mount)");
    // Prep failed is not "in progress" in LCA's sense, but not Idle either: the rule applies.
    let state = bytes(&n.state);
    n.write_desired(&PREP.replace("seed:1.1.0", "other:1.1.0"));
    let out = n.ibu().arg("reconcile").output()?;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("can not change spec.seedImageRef while ibu is in progress"),
        "{err}"
    );
    assert_eq!(bytes(&n.state), state);
    Ok(())
}

#[test]
fn a_second_instance_is_refused() -> Result<()> {
    let n = Node::new()?;
    let paths = n.sr.paths()?;
    let _held = ibu::lock::InstanceLock::try_acquire(&paths.lock_file())?;
    let out = n.ibu().arg("reconcile").output()?;
    assert_eq!(out.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&out.stderr).contains("another ibu is running"));
    assert!(!n.state.exists(), "nothing recorded");
    Ok(())
}

#[test]
fn set_stage_keeps_comments_and_respects_valid_next_stages() -> Result<()> {
    let n = Node::new()?;
    n.write_desired(&PREP.replace("stage: Prep", "stage: Idle"));
    assert_eq!(n.reconcile(), 0);
    // Idle -> Upgrade is not a valid next stage: refused with LCA's API message.
    let out = n.ibu().args(["set-stage", "Upgrade"]).output()?;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("the stage transition is not permitted"));
    assert!(std::fs::read_to_string(&n.config)?.contains("stage: Idle   # the stage we want"));
    n.ibu().args(["set-stage", "Prep"]).assert().success();
    assert_eq!(
        std::fs::read_to_string(&n.config)?,
        PREP,
        "only the value changed"
    );
    // --force writes what the stage machine will then refuse.
    n.ibu()
        .args(["set-stage", "Rollback", "--force"])
        .assert()
        .success();
    assert!(std::fs::read_to_string(&n.config)?.contains("stage: Rollback   # the stage we want"));
    Ok(())
}

#[test]
fn plan_and_status_change_nothing() -> Result<()> {
    let n = Node::with_new_stateroot()?;
    assert_eq!(n.reconcile(), 0);
    n.write_desired(PREP);
    let state = bytes(&n.state);
    let out = n.ibu().arg("plan").output()?;
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Desired stage: Prep"), "{text}");
    assert!(
        text.contains("container storage mountpoint target not found"),
        "{text}"
    );
    let out = n.ibu().arg("status").output()?;
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("* debian 1.0.0 (booted, default)"), "{text}");
    assert!(text.contains("  debian_1.1.0 1.1.0"), "{text}");
    assert!(
        text.contains("Stateroots: debian, debian_1.1.0, leftover"),
        "{text}"
    );
    let out = n.ibu().args(["status", "-o", "json"]).output()?;
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(doc["kind"], "ImageBasedUpgrade");
    assert_eq!(doc["spec"]["stage"], "Prep");
    assert_eq!(doc["status"]["conditions"][0]["type"], "Idle");
    assert_eq!(doc["status"]["validNextStages"][0], "Prep");
    let out = n.ibu().args(["status", "-o", "yaml"]).output()?;
    let y: serde_yaml::Value = serde_yaml::from_slice(&out.stdout)?;
    assert_eq!(y["apiVersion"], "lca.openshift.io/v1");
    assert_eq!(bytes(&n.state), state, "plan/status wrote the state");
    Ok(())
}

#[test]
fn validate_checks_documents_and_their_references() -> Result<()> {
    let n = Node::new()?;
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/desired");
    // The fixture drop-in tree: ConfigMaps, and a Secret that must be 0600.
    let sh = common::sh()?;
    let (from, to) = (
        fixtures.join("etc-ibu/."),
        n.config.parent().unwrap().to_path_buf(),
    );
    std::fs::create_dir_all(&to)?;
    common::run(xshell::cmd!(sh, "cp -a {from} {to}"))?;
    let secret = to.join("secrets/openshift-lifecycle-agent/seed-pull-secret.yaml");
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    let out = n
        .ibu()
        .arg("validate")
        .arg(fixtures.join("v1-all-annotations.yaml"))
        .output()?;
    assert_eq!(
        out.status.code(),
        Some(2),
        "a world-readable Secret is refused"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"));
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    for doc in ["docs-prepare-edit-cr.yaml", "v1-all-annotations.yaml"] {
        let out = n.ibu().arg("validate").arg(fixtures.join(doc)).output()?;
        assert!(
            out.status.success(),
            "{doc}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("valid"));
    }
    // Prep with a pull secret that is not in the drop-in tree: refused, naming the reference.
    let with_secret = PREP.replace(
        "    version: 1.1.0\n",
        "    version: 1.1.0\n    pullSecretRef:\n      name: other-pull-secret\n",
    );
    n.write_desired(&with_secret);
    let out = n.ibu().arg("validate").output()?;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("other-pull-secret"), "{err}");
    // The same document at Idle only warns.
    n.write_desired(&with_secret.replace("stage: Prep", "stage: Idle"));
    let out = n.ibu().arg("validate").output()?;
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("warning"));
    Ok(())
}
