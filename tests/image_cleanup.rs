//! The image cleanup against real podman storage on a real, small filesystem.
//!
//! Each test gets its own xfs filesystem in a 300 MiB sparse file on a loop device, mounted as
//! the sandbox's `/var/lib/containers`, with podman's **overlay** driver in
//! `<mount>/storage` — the same filesystem and driver as `/var/lib/containers` on RHCOS, so
//! statvfs, layer removal and freed blocks behave as on a node. (300 MiB because mkfs.xfs
//! refuses anything smaller; the file is sparse, so only what the images occupy is written.)
//! Images are built locally with buildah from random payloads (no registry is needed), with
//! `--timestamp` for distinct, known `Created` times; committing twice to one tag leaves the
//! first image dangling.
//!
//! Needs root, podman, buildah, mkfs.xfs and losetup. Without them the tests fail and say so:
//! CI installs them, and a silently skipped test proves nothing. The filesystem is mounted with
//! `tests/common`'s [`Mount`]; [`Env`]'s `Drop` first removes the containers and unmounts what
//! podman mounted inside it, so everything is released even when an assertion panics.

use std::ffi::OsString;
use std::io::Write;
use std::path::Path;
use std::process::Command;

mod common;

use common::{Mount, TestFs};
use ibu::facts::{ContainerFacts, containers, disks};
use ibu::images::cleanup::{self, Outcome};
use ibu::images::podman::Podman;
use ibu::paths::{Paths, Sandbox, SandboxDeployment};
use ibu::spec::ImageCleanup;

const MIB: usize = 1024 * 1024;

/// Run a command; panic with its stderr if it fails. Returns stdout.
fn run(program: &str, args: &[OsString]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e} (is it installed?)"));
    assert!(
        out.status.success(),
        "{program} {:?} failed ({}): {}",
        args,
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

/// Fail loudly when the machine cannot run these tests.
fn require_prerequisites() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "tests/image_cleanup.rs needs root (loop devices, mounts, podman storage); run as root"
    );
    for (tool, arg) in [
        ("podman", "--version"),
        ("buildah", "--version"),
        ("mkfs.xfs", "-V"),
        ("losetup", "--version"),
    ] {
        let ok = Command::new(tool)
            .arg(arg)
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            ok,
            "tests/image_cleanup.rs needs `{tool}` (podman, buildah, xfsprogs, util-linux)"
        );
    }
}

/// A sandbox whose `/var/lib/containers` is a fresh xfs filesystem.
struct Env {
    paths: Paths,
    storage_args: Vec<OsString>,
    seed: u64,
    /// Declared before `dir`: fields drop in order, and the filesystem must go first.
    mount: Option<Mount>,
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        require_prerequisites();
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().to_path_buf();
        let paths = Paths {
            sandbox: Some(Sandbox::booted(SandboxDeployment {
                stateroot: "test".into(),
                checksum: "0".repeat(64),
                serial: 0,
            })),
            sysroot: root.clone(),
            sysroot_mount: root.clone(),
            boot: root.join("boot"),
            etc: root.join("etc"),
            var: root.join("var"),
            run: root.join("run"),
        };
        let mnt = paths.container_storage();
        std::fs::create_dir_all(&mnt).expect("mount point");
        std::fs::create_dir_all(&paths.run).expect("run dir");
        let mount = Mount::new(TestFs::Xfs { size_mib: 300 }, &mnt, &root)
            .expect("mounting an xfs filesystem on the sandbox's /var/lib/containers");
        let (groot, runroot) = paths.podman_storage().expect("sandbox storage");
        Env {
            storage_args: vec![
                "--root".into(),
                groot.into(),
                "--runroot".into(),
                runroot.into(),
            ],
            paths,
            seed: 0x9e37_79b9_7f4a_7c15,
            mount: Some(mount),
            dir,
        }
    }

    fn podman(&self, args: &[&str]) -> String {
        let mut a = Podman::global_args(&self.paths);
        a.extend(os(args));
        run("podman", &a)
    }

    fn buildah(&self, args: &[OsString]) -> String {
        let mut a = self.storage_args.clone();
        a.extend_from_slice(args);
        run("buildah", &a)
    }

    /// Build `name` from scratch with `mib` MiB of fresh random data, created at `created`.
    /// Returns the image ID.
    fn image(&mut self, name: &str, created: i64, mib: usize) -> String {
        let payload = self.dir.path().join("payload");
        let mut f = std::fs::File::create(&payload).expect("payload");
        let mut buf = vec![0u8; MIB];
        for _ in 0..mib {
            for chunk in buf.chunks_mut(8) {
                // xorshift64*: fresh, incompressible bytes per image, so no layer is shared.
                self.seed ^= self.seed >> 12;
                self.seed ^= self.seed << 25;
                self.seed ^= self.seed >> 27;
                let v = self.seed.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
                chunk.copy_from_slice(&v[..chunk.len()]);
            }
            f.write_all(&buf).expect("payload write");
        }
        drop(f);
        let ctr = self.buildah(&os(&["from", "scratch"]));
        self.buildah(
            &[
                os(&["copy", &ctr]),
                vec![payload.clone().into()],
                os(&["/payload"]),
            ]
            .concat(),
        );
        let id = self.buildah(&os(&[
            "commit",
            "-q",
            "--timestamp",
            &created.to_string(),
            &ctr,
            name,
        ]));
        self.buildah(&os(&["rm", &ctr]));
        std::fs::remove_file(&payload).expect("payload remove");
        id
    }

    fn write_etc(&self, rel: &str, text: &str) {
        let p = self.paths.etc.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("etc dir");
        std::fs::write(p, text).expect("etc file");
    }

    /// Write back what the image builds left in the page cache, so the usage the test starts
    /// from counts data on disk rather than xfs's reservations for delayed allocations (which
    /// are pessimistic until writeback). A node's images were written long before Prep.
    fn settle(&self) {
        let dir = std::fs::File::open(self.paths.container_storage()).expect("open mount");
        nix::unistd::syncfs(&dir).expect("syncfs");
    }

    fn facts(&self) -> ContainerFacts {
        containers::gather(&self.paths).expect("container facts")
    }

    fn image_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.facts().images.into_iter().map(|i| i.id).collect();
        ids.sort();
        ids
    }

    fn usage(&self) -> u8 {
        disks::usage(&self.paths.container_storage())
            .expect("statvfs")
            .used_percent()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Best effort: containers hold podman's global shared-memory locks.
        let mut a = Podman::global_args(&self.paths);
        a.extend(os(&["rm", "--all", "--force"]));
        let _ = Command::new("podman").args(&a).output();
        let mut a = self.storage_args.clone();
        a.extend(os(&["rm", "--all"]));
        let _ = Command::new("buildah").args(&a).output();

        // podman's overlay driver bind-mounts `<root>/overlay` onto itself: unmount what is
        // mounted inside the filesystem, deepest first, so that `Mount` can unmount it cleanly.
        let Some(mount) = &self.mount else { return };
        let target = mount.target().to_path_buf();
        let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut inner: Vec<_> = disks::parse_mountinfo(&text)
            .unwrap_or_default()
            .into_iter()
            .map(|m| m.mount_point)
            .filter(|p| p.starts_with(&target) && *p != target)
            .collect();
        inner.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
        for m in inner {
            if nix::mount::umount(&m).is_err() {
                let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}

fn cfg(on_prep: bool, threshold: u8) -> ImageCleanup {
    ImageCleanup {
        on_prep,
        disk_usage_threshold_percent: threshold,
    }
}

fn exists(env: &Env, id: &str) -> bool {
    env.image_ids().iter().any(|i| i == id)
}

#[test]
fn cleanup_removes_dangling_then_oldest_until_at_threshold_and_keeps_pinned_and_in_use() {
    let mut env = Env::new();
    const SIZE: usize = 8;

    // Kept: pinned three ways, used by a podman container, used by a buildah working container.
    // They are the oldest images, so an ordering bug would reach them first.
    let pinned_glob = env.image("quay.io/pinned/base:1", 1000, SIZE);
    let pinned_pause = env.image("example.com/pause:3.9", 1010, SIZE);
    let pinned_keyword = env.image("example.com/team/keepme-tool:2", 1020, SIZE);
    let in_use = env.image("example.com/inuse:1", 1030, SIZE);
    let external = env.image("example.com/building:1", 1040, SIZE);
    // Removable. The first app:1 and tool:1 become dangling when the tags move on.
    let dangling1 = env.image("example.com/app:1", 1100, SIZE);
    let dangling2 = env.image("example.com/tool:1", 1200, SIZE);
    let old = env.image("example.com/old:1", 1300, SIZE);
    let a = env.image("example.com/a:1", 1400, SIZE);
    let b = env.image("example.com/b:1", 1500, SIZE);
    let c = env.image("example.com/c:1", 1600, SIZE);
    let app = env.image("example.com/app:1", 1700, SIZE);
    let tool = env.image("example.com/tool:1", 1800, SIZE);
    env.podman(&["create", "--name", "user", "example.com/inuse:1", "/x"]);
    env.buildah(&os(&["from", "example.com/building:1"]));

    // crio.conf pins old:1 and sets the pause image; the drop-in's list replaces crio.conf's.
    env.write_etc(
        "crio/crio.conf",
        "[crio.image]\npause_image = \"example.com/pause:3.9\"\n\
         pinned_images = [\"example.com/old:1\"]\n",
    );
    env.write_etc(
        "crio/crio.conf.d/10-pins.conf",
        "[crio.image]\npinned_images = [\"quay.io/pinned/*\", \"*KEEPME*\"]\n",
    );

    let facts = env.facts();
    assert_eq!(facts.images.len(), 13);
    let order: Vec<&str> = cleanup::candidates(&facts)
        .iter()
        .map(|i| i.id.as_str())
        .collect();
    assert_eq!(
        order,
        [&dangling1, &dangling2, &old, &a, &b, &c, &app, &tool],
        "dangling first, then oldest"
    );
    assert!(facts.in_use.contains(&in_use) && facts.in_use.contains(&external));

    env.settle();
    let all = env.image_ids();
    let u0 = env.usage();
    assert!(u0 > 40, "the images fill the filesystem: {u0}%");

    // Disabled: nothing happens whatever the usage.
    let r = cleanup::run(&env.paths, &cfg(false, 0), &facts).unwrap();
    assert_eq!(r.outcome, Outcome::Disabled);
    assert_eq!(env.image_ids(), all);

    // At the threshold (not strictly above): nothing happens.
    let r = cleanup::run(&env.paths, &cfg(true, u0), &facts).unwrap();
    assert_eq!(r.outcome, Outcome::BelowThreshold, "{}", r.summary());
    assert!(r.removed.is_empty());
    assert_eq!(env.image_ids(), all);

    // Five images are ~17% of this filesystem: one batch is needed and enough. The margin is
    // small on purpose: right after `podman rmi`, xfs has often not yet released the last
    // image's blocks (a reading ~3 points too high), and only the cleanup waiting for the usage
    // to settle keeps it from deleting a second batch.
    let threshold = u0 - 15;
    let r = cleanup::run(&env.paths, &cfg(true, threshold), &facts).unwrap();
    println!("{}", r.summary());
    assert_eq!(r.outcome, Outcome::ReachedThreshold, "{}", r.summary());
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    assert_eq!(r.batches, 1);
    let removed: Vec<&str> = r.removed.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(removed, [&dangling1, &dangling2, &old, &a, &b]);
    assert_eq!(r.removed[2].names, ["example.com/old:1"]);
    assert!(
        r.bytes_freed >= 5 * SIZE as u64 * MIB as u64,
        "{}",
        r.bytes_freed
    );
    assert_eq!(r.before.used_percent(), u0);
    let u1 = env.usage();
    // xfs may still be releasing blocks in the background, so usage can only have dropped more.
    assert!(
        u1 <= r.after.used_percent(),
        "{u1}% vs {}%",
        r.after.used_percent()
    );
    assert!(
        u1 <= threshold,
        "stopped at or below the threshold: {u1}% vs {threshold}%"
    );
    assert!(u1 + 15 <= u0, "usage really dropped: {u0}% -> {u1}%");
    for kept in [
        &pinned_glob,
        &pinned_pause,
        &pinned_keyword,
        &in_use,
        &external,
        &c,
        &app,
        &tool,
    ] {
        assert!(exists(&env, kept), "{kept} must survive");
    }
    assert_eq!(env.image_ids().len(), 8);
    assert_eq!(
        r.summary(),
        format!(
            "container storage at {u0}% > {threshold}%: removed 5 images ({}); now {}%",
            ibu::humanize::bytes(r.bytes_freed),
            r.after.used_percent()
        )
    );

    // Run again with fresh facts: already below the threshold, nothing to do.
    let facts = env.facts();
    let r = cleanup::run(&env.paths, &cfg(true, threshold), &facts).unwrap();
    assert_eq!(r.outcome, Outcome::BelowThreshold);
    assert_eq!(env.image_ids().len(), 8);

    // An unreachable threshold: the remaining candidates go, the kept images stay, and running
    // out is a warning, not an error.
    let r = cleanup::run(&env.paths, &cfg(true, 0), &facts).unwrap();
    println!("{}", r.summary());
    assert_eq!(r.outcome, Outcome::OutOfCandidates);
    let removed: Vec<&str> = r.removed.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(removed, [&c, &app, &tool]);
    assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
    assert!(r.warnings[0].contains("still at"), "{:?}", r.warnings);
    assert_eq!((r.skipped_pinned, r.skipped_in_use), (3, 2));
    let mut kept = vec![pinned_glob, pinned_pause, pinned_keyword, in_use, external];
    kept.sort();
    assert_eq!(env.image_ids(), kept);
}

#[test]
fn images_that_vanish_or_become_used_after_the_facts_are_warnings() {
    let mut env = Env::new();
    let x1 = env.image("example.com/x1:1", 100, 1);
    let x2 = env.image("example.com/x2:1", 200, 1);
    let x3 = env.image("example.com/x3:1", 300, 1);
    let x4 = env.image("example.com/x4:1", 400, 1);
    // A multi-tag image: podman refuses removal by ID, so it is removed by its names.
    let x5 = env.image("example.com/x5:1", 500, 1);
    env.podman(&["tag", "example.com/x5:1", "example.com/x5:latest"]);
    let facts = env.facts();
    assert_eq!(cleanup::candidates(&facts).len(), 5);

    // Behind the facts' back: x2 is removed, x3 gets a container.
    env.podman(&["rmi", &x2]);
    env.podman(&["create", "--name", "late", "example.com/x3:1", "/x"]);

    let r = cleanup::run(&env.paths, &cfg(true, 0), &facts).unwrap();
    println!("{}\n{:#?}", r.summary(), r.warnings);
    assert_eq!(r.outcome, Outcome::OutOfCandidates);
    let removed: Vec<&str> = r.removed.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(removed, [&x1, &x4, &x5], "the rest of the batch still went");
    assert_eq!(r.warnings.len(), 2, "{:#?}", r.warnings);
    let w = &r.warnings[0];
    assert!(w.starts_with("podman rmi left 2 of 5 images"), "{w}");
    assert!(w.contains(&x2[..12]) && w.contains(&x3[..12]), "{w}");
    assert!(
        w.contains("image not known"),
        "podman's reason is kept: {w}"
    );
    assert!(
        w.contains("in use by a container"),
        "podman's reason is kept: {w}"
    );
    assert!(
        exists(&env, &x3),
        "podman refuses to remove an image a container uses"
    );
    assert_eq!(env.image_ids(), [x3]);
}

#[test]
fn unmeasurable_storage_is_the_only_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut paths = Paths::host();
    paths.var = dir.path().join("missing/var");
    let e = cleanup::run(&paths, &cfg(true, 50), &ContainerFacts::default()).unwrap_err();
    assert!(
        format!("{e:#}").contains("missing/var/lib/containers"),
        "{e:#}"
    );
    assert!(!Path::new(&paths.var).exists());
}

#[test]
fn the_environment_is_released_even_when_a_test_panics() {
    let mut seen = None;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut env = Env::new();
        env.image("example.com/doomed:1", 100, 1);
        env.podman(&["create", "--name", "doomed", "example.com/doomed:1", "/x"]);
        seen = Some(env.dir.path().to_path_buf());
        panic!("deliberate panic with the filesystem mounted");
    }));
    assert!(result.is_err());
    let dir = seen.expect("env was built");
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(
        !mountinfo.contains(dir.to_str().expect("utf-8 tempdir")),
        "mounts left under {}",
        dir.display()
    );
    let loops = run("losetup", &os(&["-a"]));
    assert!(
        !loops.contains(dir.to_str().expect("utf-8 path")),
        "loop device left: {loops}"
    );
    assert!(!dir.exists(), "temporary directory left");
}
