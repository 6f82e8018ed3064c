//! Precache against a real registry and real podman storage.
//!
//! Each test runs `docker-registry` with htpasswd auth and TLS ([`TestRegistry`]), pushes a few
//! small images built locally with buildah, and precaches into the container storage of a
//! directory sysroot whose `/var/lib/containers` is a tmpfs mount (podman gets `--root/--runroot`
//! inside the sandbox, so the machine's own images are never touched).
//!
//! What is observed, and how:
//! * "no pull happened" for a present image: the registry's access log (one line per request,
//!   `"GET /v2/<repo>/manifests/<ref> HTTP/1.1" <status>`) has no request for it after the mark
//!   taken just before precaching. Every pull starts with that manifest request, so no request
//!   means no pull.
//! * attempts: the number of manifest requests for an image, compared with what one direct
//!   `podman pull` of an equally unknown tag makes.
//! * concurrency: a watcher thread scans `/proc` every 2 ms for `podman ... pull` processes
//!   that use this sandbox's storage and records the most alive at once (counting only those
//!   still alive when a scan ends, since a scan is not a snapshot). Sampling can miss a moment
//!   but never invent one, so "at most N" is sound; each pull lives hundreds of milliseconds,
//!   so the bound is also seen being reached.
//!
//! Needs root, the `ostree` CLI, podman, buildah, skopeo, docker-registry, htpasswd, openssl.

mod common;

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use common::registry::write_authfile;
use common::{CommitSpec, Deploy, RegistryOpts, TestFs, TestRegistry, TestSysroot};
use ibu::facts::ContainerFacts;
use ibu::images::podman::{Podman, PullOptions};
use ibu::paths::Paths;
use ibu::precache::{self, PrecacheOptions, PrecacheReport};

const USER: &str = "precacher";
const PASSWORD: &str = "s3cret-Pa55";

/// A registry with images `precache/<name>:1`, and a sandbox with empty container storage.
struct Scene {
    paths: Paths,
    /// Manifest digest of each pushed image, by name.
    digests: HashMap<String, String>,
    auth_dir: tempfile::TempDir,
    // Declared last: the sysroot (with its mount) goes before the registry.
    _sr: TestSysroot,
    reg: TestRegistry,
}

impl Scene {
    fn new(names: &[&str]) -> Result<Scene> {
        let reg = TestRegistry::start(RegistryOpts::new(Some((USER, PASSWORD)), true))?;
        let auth_dir = tempfile::tempdir()?;
        let mut digests = HashMap::new();
        for name in names {
            let payload = format!("image {name}\n");
            let src = reg.buildah_image(name, &[("payload", payload.as_bytes())], &[])?;
            reg.push(&src, &format!("precache/{name}:1"), &[])?;
            let digest = skopeo_digest(&reg, auth_dir.path(), &format!("precache/{name}:1"))?;
            digests.insert(name.to_string(), digest);
        }
        let mut sr = TestSysroot::new()?;
        sr.commit(CommitSpec::new("os", "1.0.0"))?;
        let d = sr.deploy("debian", "os", &Deploy::new())?;
        sr.boot(&d)?;
        sr.mount_container_storage(TestFs::Tmpfs { size_mib: 256 })?;
        let paths = sr.paths()?;
        Ok(Scene {
            paths,
            digests,
            auth_dir,
            _sr: sr,
            reg,
        })
    }

    /// `HOST/precache/<name>:<tag>`.
    fn tag(&self, name: &str, tag: &str) -> String {
        self.reg.image(&format!("precache/{name}:{tag}"))
    }

    /// `HOST/precache/<name>@sha256:...`.
    fn digest(&self, name: &str) -> String {
        self.reg
            .image(&format!("precache/{name}@{}", self.digests[name]))
    }

    fn authfile(&self, password: &str) -> Result<PathBuf> {
        let dir = self.auth_dir.path().join(password);
        write_authfile(&dir, &self.reg.host(), USER, password)
    }

    fn pull_options(&self, password: &str) -> Result<PullOptions> {
        Ok(PullOptions {
            authfile: Some(self.authfile(password)?),
            tls_verify: None,
            cert_dir: Some(self.reg.ca_dir()),
        })
    }

    fn options(&self, password: &str, concurrency: usize) -> Result<PrecacheOptions> {
        Ok(PrecacheOptions {
            pull: self.pull_options(password)?,
            concurrency,
            attempts: 5,
            backoff: Duration::from_millis(50),
        })
    }

    /// podman with this sandbox's storage.
    fn podman(&self, args: &[&str]) -> Result<String> {
        let mut a = Podman::global_args(&self.paths);
        a.extend(args.iter().map(OsString::from));
        let out = Command::new("podman")
            .args(&a)
            .output()
            .context("running podman")?;
        if !out.status.success() {
            bail!(
                "podman {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Pull `spec` into the sandbox directly with podman (the test's own setup).
    fn prepull(&self, spec: &str) -> Result<()> {
        Podman::new(&self.paths)?
            .pull(spec, &self.pull_options(PASSWORD)?)
            .with_context(|| format!("pre-pulling {spec}"))
    }

    /// What is in the sandbox's storage now.
    fn facts(&self) -> Result<ContainerFacts> {
        Ok(ContainerFacts {
            images: Podman::new(&self.paths)?.images()?,
            ..ContainerFacts::default()
        })
    }

    /// Where the registry log ends now.
    fn mark(&self) -> usize {
        self.reg.log().len()
    }

    /// `(reference, status)` of the manifest requests for `precache/<name>` since `mark`.
    fn manifest_requests(&self, mark: usize, name: &str) -> Vec<(String, u16)> {
        let log = self.reg.log();
        let prefix = format!("/v2/precache/{name}/manifests/");
        log.get(mark..)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                // Access log: ... "GET /v2/precache/a/manifests/1 HTTP/1.1" 200 ...
                let (_, rest) = l.split_once("\"GET ").or_else(|| l.split_once("\"HEAD "))?;
                let (uri, after) = rest.split_once(" HTTP/")?;
                let reference = uri.strip_prefix(&prefix)?;
                let status = after.split_once("\" ")?.1.split(' ').next()?.parse().ok()?;
                Some((reference.to_string(), status))
            })
            .collect()
    }

    /// Any request at all for `precache/<name>` since `mark`.
    fn any_requests(&self, mark: usize, name: &str) -> usize {
        let needle = format!(" /v2/precache/{name}/");
        self.reg
            .log()
            .get(mark..)
            .unwrap_or_default()
            .matches(&needle)
            .count()
    }
}

fn skopeo_digest(reg: &TestRegistry, auth_dir: &std::path::Path, repo_tag: &str) -> Result<String> {
    let authfile = write_authfile(auth_dir, &reg.host(), USER, PASSWORD)?;
    let out = Command::new("skopeo")
        .arg("inspect")
        .arg("--authfile")
        .arg(&authfile)
        .arg("--cert-dir")
        .arg(reg.ca_dir())
        .args(["--format", "{{.Digest}}"])
        .arg(format!("docker://{}", reg.image(repo_tag)))
        .output()
        .context("running skopeo inspect")?;
    if !out.status.success() {
        bail!(
            "skopeo inspect {repo_tag}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Run precache, collecting every progress report.
fn run_precache(
    scene: &Scene,
    wanted: &[String],
    opts: &PrecacheOptions,
) -> Result<(PrecacheReport, Vec<PrecacheReport>)> {
    let mut seen = Vec::new();
    let report = precache::precache(&scene.paths, wanted, opts, &mut |r| seen.push(r.clone()))?;
    Ok((report, seen))
}

/// Progress only moves forward, and its last word is the report.
fn assert_progress(seen: &[PrecacheReport], report: &PrecacheReport) {
    assert!(!seen.is_empty());
    for pair in seen.windows(2) {
        assert!(pair[1].done() > pair[0].done(), "{seen:#?}");
        assert!(pair[1].pulled >= pair[0].pulled, "{seen:#?}");
        assert!(pair[1].failed >= pair[0].failed, "{seen:#?}");
        assert_eq!(pair[1].skipped, pair[0].skipped);
    }
    let last = seen.last().map(PrecacheReport::summary);
    assert_eq!(last, Some(report.summary()));
    assert_eq!(report.done(), report.total);
}

#[test]
fn present_images_are_skipped_missing_ones_pulled_unknown_tag_fails_once() -> Result<()> {
    let scene = Scene::new(&["a", "b", "c", "d", "e"])?;
    // Present beforehand: a by tag, b by digest, and a under Docker Hub's name for busybox.
    scene.prepull(&scene.tag("a", "1"))?;
    scene.prepull(&scene.digest("b"))?;
    scene.podman(&[
        "tag",
        &scene.tag("a", "1"),
        "docker.io/library/busybox:latest",
    ])?;

    let wanted: Vec<String> = vec![
        scene.tag("a", "1"),
        format!("docker://{}", scene.tag("a", "1")), // the same image again
        scene.digest("b"),
        // b is present by digest only: its tag is not a name podman has, so it is pulled
        scene.tag("b", "1"),
        // present as docker.io/library/busybox:latest; there is no internet, so a pull
        // would fail: skipping it is the only way to succeed
        "busybox".into(),
        scene.tag("c", "1"),
        scene.digest("d"),
        scene.tag("e", "1"),
        scene.tag("c", "nope"),
    ];
    let mark = scene.mark();
    let (report, seen) = run_precache(&scene, &wanted, &scene.options(PASSWORD, 3)?)?;

    assert_eq!(
        report.summary(),
        "total: 8 (pulled: 4, skipped: 3, failed: 1)",
        "{report:#?}"
    );
    assert_progress(&seen, &report);
    assert_eq!(
        seen.len(),
        1 + 5,
        "once after the check, then once per pull"
    );

    // Present images: not a single request reached the registry for a; for b only its tag.
    assert_eq!(
        scene.any_requests(mark, "a"),
        0,
        "a was pulled:\n{}",
        scene.reg.log()
    );
    let b: Vec<String> = scene
        .manifest_requests(mark, "b")
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(b, ["1"], "b's digest must not be requested");

    // The unknown tag: one attempt, as many manifest requests as one podman pull makes.
    let nope = scene.manifest_requests(mark, "c");
    let nope: Vec<_> = nope.iter().filter(|(r, _)| r == "nope").collect();
    let baseline_mark = scene.mark();
    let direct =
        Podman::new(&scene.paths)?.pull(&scene.tag("c", "nope2"), &scene.pull_options(PASSWORD)?);
    assert!(
        direct.as_ref().is_err_and(|e| e.is_permanent()),
        "{direct:?}"
    );
    let one_pull = scene.manifest_requests(baseline_mark, "c").len();
    assert!(one_pull >= 1);
    assert_eq!(nope.len(), one_pull, "retried an unknown tag: {nope:?}");
    assert!(nope.iter().all(|(_, status)| *status == 404));
    let failure = &report.failures[0];
    assert_eq!(failure.image, scene.tag("c", "nope"));
    assert!(
        failure.error.contains("no such tag or digest"),
        "{}",
        failure.error
    );
    assert!(
        failure.error.contains("manifest unknown"),
        "{}",
        failure.error
    );
    assert!(
        failure.error.ends_with("(1 attempt, not retried)"),
        "{}",
        failure.error
    );

    // Everything but the unknown tag is in storage now.
    let after = precache::missing(&wanted, &scene.facts()?);
    let still: Vec<&str> = after.to_pull.iter().map(|w| w.image).collect();
    assert_eq!(still, [scene.tag("c", "nope")]);
    Ok(())
}

#[test]
fn a_wrong_password_fails_every_missing_pull_clearly_and_once() -> Result<()> {
    let scene = Scene::new(&["a", "c", "d", "e"])?;
    scene.prepull(&scene.tag("a", "1"))?;
    let wanted: Vec<String> = vec![
        scene.tag("a", "1"),
        scene.tag("c", "1"),
        scene.tag("d", "1"),
        scene.digest("e"),
    ];
    let mark = scene.mark();
    let wrong = "not-the-password";
    let (report, seen) = run_precache(&scene, &wanted, &scene.options(wrong, 10)?)?;
    assert_eq!(
        report.summary(),
        "total: 4 (pulled: 0, skipped: 1, failed: 3)"
    );
    assert_progress(&seen, &report);
    let mut failed: Vec<&str> = report.failures.iter().map(|f| f.image.as_str()).collect();
    failed.sort();
    let mut expected = wanted[1..].to_vec();
    expected.sort();
    assert_eq!(failed, expected);
    for f in &report.failures {
        assert!(f.error.contains("refused the credentials"), "{}", f.error);
        assert!(f.error.contains("authentication required"), "{}", f.error);
        assert!(f.error.ends_with("(1 attempt, not retried)"), "{}", f.error);
        assert!(!f.error.contains(wrong) && !f.error.contains(PASSWORD));
    }
    for name in ["c", "d", "e"] {
        let requests = scene.manifest_requests(mark, name);
        assert_eq!(requests.len(), 1, "{name}: {requests:?}");
        assert_eq!(requests[0].1, 401);
    }
    assert_eq!(scene.any_requests(mark, "a"), 0);
    Ok(())
}

#[test]
fn no_more_pulls_run_at_once_than_allowed() -> Result<()> {
    let names = ["p1", "p2", "p3", "p4", "p5", "p6"];
    let scene = Scene::new(&names)?;
    let wanted: Vec<String> = names.iter().map(|n| scene.tag(n, "1")).collect();
    let (root, _) = scene.paths.podman_storage().context("sandbox storage")?;
    let root = root.to_string_lossy().into_owned();

    let stop = Arc::new(AtomicBool::new(false));
    let max = Arc::new(AtomicUsize::new(0));
    let watcher = {
        let (stop, max) = (stop.clone(), max.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                max.fetch_max(podman_pulls_using(&root), Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let result = run_precache(&scene, &wanted, &scene.options(PASSWORD, 2)?);
    stop.store(true, Ordering::SeqCst);
    watcher.join().expect("watcher thread");
    let (report, seen) = result?;

    assert_eq!(
        report.summary(),
        "total: 6 (pulled: 6, skipped: 0, failed: 0)"
    );
    assert_progress(&seen, &report);
    let max = max.load(Ordering::SeqCst);
    assert!(max <= 2, "{max} podman pulls at once with concurrency 2");
    assert_eq!(max, 2, "the two workers never pulled at the same time");
    Ok(())
}

/// How many `podman ... pull ...` processes using storage `root`, started by this test
/// process, are alive together now.
///
/// Only children of this process count: podman forks helpers, and a forked child carries
/// podman's command line until it execs. A scan of `/proc` is not a snapshot either: a pull can
/// exit and the next one start while the scan runs, and both would be seen. So the scan only
/// collects candidates, and a candidate counts if it is still there when the scan is over: all
/// the counted ones were alive at that moment.
fn podman_pulls_using(root: &str) -> usize {
    let me = std::process::id().to_string();
    let is_pull = |pid: &str| {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        // pid (comm) state ppid ...; comm may contain spaces, so split after the last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1));
        if ppid != Some(me.as_str()) {
            return false;
        }
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            return false;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        args.first().is_some_and(|a| a.ends_with(b"podman"))
            && args.contains(&b"pull".as_slice())
            && args.contains(&root.as_bytes())
    };
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let candidates: Vec<String> = dir
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.bytes().all(|b| b.is_ascii_digit()))
        .filter(|pid| is_pull(pid))
        .collect();
    candidates.iter().filter(|pid| is_pull(pid)).count()
}
