//! Interoperability with the real tools: skopeo and podman read ibu's OCI layouts and
//! oci-archives, GNU tar reads ibu's layers (xattrs included) and ibu extracts GNU tar's PAX
//! archives. Each test is skipped, saying so, when its tool is not installed (CI installs them:
//! vmtests/setup-host.sh).

mod archive_fixture;

use std::path::{Path, PathBuf};
use std::process::Command;

use archive_fixture::*;
use cap_std::fs::Dir;
use ibu::archive::{BuildOptions, ExtractOptions, SpecialFiles, TarBuilder, extract};
use ibu::oci::layout::LayoutReader;
use ibu::oci::oci_archive;

fn have(tool: &str) -> bool {
    let found = Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("SKIPPED: {tool} is not installed");
    }
    found
}

/// Run a command; panic with its stderr if it fails; return stdout.
fn run(cmd: &mut Command) -> String {
    let shown = format!("{cmd:?}");
    let out = cmd.output().unwrap_or_else(|e| panic!("{shown}: {e}"));
    assert!(
        out.status.success(),
        "{shown} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn tree(tmp: &Path) -> PathBuf {
    let t = tmp.join("tree");
    std::fs::create_dir(&t).unwrap();
    build_tree(&t);
    t
}

#[test]
fn skopeo_reads_layouts_and_archives() {
    if !have("skopeo") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tree(tmp.path());
    let dir = tmp.path().join("layout");
    let built = seed_like_layout(&dir, &src, "seed");
    let layout_ref = format!("oci:{}:seed", dir.display());

    // skopeo sees our manifest byte for byte.
    let raw = run(Command::new("skopeo").args(["inspect", "--raw", &layout_ref]));
    assert_eq!(
        ibu::oci::sha256_digest(raw.as_bytes()),
        built.manifest.digest
    );
    let inspect: serde_json::Value =
        serde_json::from_str(&run(Command::new("skopeo").args(["inspect", &layout_ref]))).unwrap();
    let layers: Vec<&str> = inspect["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    let want: Vec<&str> = built.layers.iter().map(|l| l.digest.as_str()).collect();
    assert_eq!(layers, want);
    assert_eq!(
        inspect["Labels"][ibu::seed::format::LABEL_FORMAT_VERSION],
        "1"
    );

    // skopeo copies it to an oci-archive, which ibu unpacks, with the same manifest — with
    // --preserve-digests. Without it skopeo gzips the uncompressed ostree pack layer (and drops
    // the layer's annotations), which would defeat range fetches: seeds must be pushed with it.
    let recompressed = tmp.path().join("recompressed.tar");
    run(Command::new("skopeo").args([
        "copy",
        "--quiet",
        &layout_ref,
        &format!("oci-archive:{}", recompressed.display()),
    ]));
    let (r, _) = oci_archive::unpack(&recompressed, &tmp.path().join("recompressed")).unwrap();
    let (_, m) = r.manifest(None).unwrap();
    assert_eq!(m.layers[2].media_type, ibu::oci::MEDIA_TYPE_LAYER_GZIP);
    let skopeo_tar = tmp.path().join("from-skopeo.tar");
    run(Command::new("skopeo").args([
        "copy",
        "--quiet",
        "--preserve-digests",
        &layout_ref,
        &format!("oci-archive:{}", skopeo_tar.display()),
    ]));
    let (reader, _) = oci_archive::unpack(&skopeo_tar, &tmp.path().join("unpacked")).unwrap();
    let (desc, manifest) = reader.manifest(None).unwrap();
    assert_eq!(desc.digest, built.manifest.digest);
    for l in &manifest.layers {
        reader.verify_blob(l).unwrap();
    }

    // ibu's oci-archive is accepted by skopeo, and copying out of it verifies every blob.
    let ours = tmp.path().join("ours.tar");
    oci_archive::write(&dir, &ours).unwrap();
    let archive_ref = format!("oci-archive:{}:seed", ours.display());
    let raw = run(Command::new("skopeo").args(["inspect", "--raw", &archive_ref]));
    assert_eq!(
        ibu::oci::sha256_digest(raw.as_bytes()),
        built.manifest.digest
    );
    let copy = tmp.path().join("copy");
    run(Command::new("skopeo").args([
        "copy",
        "--quiet",
        "--preserve-digests",
        &archive_ref,
        &format!("oci:{}:again", copy.display()),
    ]));
    let again = LayoutReader::open(&copy).unwrap();
    let (d2, _) = again.manifest(Some("again")).unwrap();
    assert_eq!(d2.digest, built.manifest.digest);
}

#[test]
fn podman_pulls_the_layout_and_shows_the_files() {
    if !have("podman") {
        return;
    }
    if !is_root() {
        eprintln!("SKIPPED: podman image mount needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tree(tmp.path());
    // podman names an image pulled from `oci:<dir>` after the directory, which must then be a
    // valid (lowercase) repository name; and it refuses long runroot paths. So: a short,
    // lowercase private directory.
    let store = tempfile::Builder::new()
        .prefix("ibu-pm")
        .rand_bytes(0)
        .suffix(&format!("-{}", std::process::id()))
        .tempdir_in("/tmp")
        .unwrap();
    let dir = store.path().join("layout");
    seed_like_layout(&dir, &src, "seed");
    let podman = || {
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(store.path().join("root"))
            .arg("--runroot")
            .arg(store.path().join("run"))
            .args([
                "--storage-driver",
                "vfs",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "none",
            ]);
        c
    };
    let out = run(podman().args(["pull", "--quiet", &format!("oci:{}:seed", dir.display())]));
    let id = out.trim().lines().last().unwrap().to_string();
    let mounted = PathBuf::from(run(podman().args(["image", "mount", &id])).trim());
    let result = std::panic::catch_unwind(|| {
        let etc = mounted.join("seed/etc");
        assert_eq!(
            std::fs::read(etc.join("etc/hosts")).unwrap(),
            std::fs::read(src.join("etc/hosts")).unwrap()
        );
        assert!(mounted.join("seed/containers.list").is_file());
        let snap_src = snapshot(&src, false);
        let snap_pod = snapshot(&etc, false);
        let mut differences = Vec::new();
        for (path, want) in &snap_src {
            let Some(got) = snap_pod.get(path) else {
                differences.push(format!("{}: missing", path.display()));
                continue;
            };
            assert_eq!(want.kind, got.kind, "{}", path.display());
            assert_eq!(want.content, got.content, "{}", path.display());
            assert_eq!(want.link, got.link, "{}", path.display());
            if want.kind != "symlink" {
                assert_eq!(want.mode, got.mode, "{}: mode", path.display());
            }
            assert_eq!(
                (want.uid, want.gid),
                (got.uid, got.gid),
                "{}: owner",
                path.display()
            );
            if want.xattrs != got.xattrs {
                differences.push(format!(
                    "{}: xattrs {:?} -> {:?}",
                    path.display(),
                    want.xattrs.keys().collect::<Vec<_>>(),
                    got.xattrs.keys().collect::<Vec<_>>()
                ));
            }
            if want.mtime != got.mtime {
                differences.push(format!(
                    "{}: mtime {:?} -> {:?}",
                    path.display(),
                    want.mtime,
                    got.mtime
                ));
            }
        }
        // user.* xattrs must survive podman's extraction.
        assert_eq!(
            got_xattr(&etc.join("etc/hosts"), "user.origin").as_deref(),
            Some(&b"seed"[..])
        );
        eprintln!("podman: differences from the source tree: {differences:#?}");
    });
    let _ = podman().args(["image", "unmount", &id]).output();
    let _ = podman().args(["rmi", "--force", &id]).output();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

fn got_xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    xattrs_of(path).remove(name)
}

#[test]
fn gnu_tar_reads_our_layers_with_xattrs() {
    if !have("tar") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tree(tmp.path());
    let opts = BuildOptions {
        special_files: SpecialFiles::Archive,
        ..BuildOptions::default()
    };
    let mut tar = TarBuilder::with_options(Vec::new(), opts);
    let dir = Dir::open_ambient_dir(&src, cap_std::ambient_authority()).unwrap();
    tar.append_tree(&dir, Path::new(""), |_| false).unwrap();
    let (bytes, _) = tar.finish().unwrap();
    let layer = tmp.path().join("layer.tar");
    std::fs::write(&layer, &bytes).unwrap();

    let listing = run(Command::new("tar").arg("-tvf").arg(&layer));
    assert!(listing.contains("etc/hosts-link -> hosts"), "{listing}");
    assert!(listing.contains(&"L".repeat(120)), "long names");
    assert!(
        listing.contains(&"f".repeat(100)),
        "names past the ustar split"
    );

    let out = tmp.path().join("gnu");
    std::fs::create_dir(&out).unwrap();
    run(Command::new("tar")
        .args([
            "--xattrs",
            "--xattrs-include=*",
            "--acls",
            "--selinux",
            "-xpf",
        ])
        .arg(&layer)
        .arg("-C")
        .arg(&out));
    let want = snapshot(&src, false);
    let got = snapshot(&out, false);
    let mut differences = Vec::new();
    for (path, w) in &want {
        let g = &got[path];
        let p = path.display();
        assert_eq!(w.kind, g.kind, "{p}");
        assert_eq!(w.content, g.content, "{p}");
        assert_eq!(w.link, g.link, "{p}");
        assert_eq!(w.same_inode, g.same_inode, "{p}: hard links");
        if is_root() {
            assert_eq!((w.uid, w.gid), (g.uid, g.gid), "{p}: owner");
        }
        if w.kind == "file" || w.kind == "dir" {
            assert_eq!(
                w.xattrs
                    .iter()
                    .filter(|(k, _)| k.starts_with("user."))
                    .collect::<Vec<_>>(),
                g.xattrs
                    .iter()
                    .filter(|(k, _)| k.starts_with("user."))
                    .collect::<Vec<_>>(),
                "{p}: user xattrs"
            );
        }
        if w.kind == "file" {
            assert_eq!(w.mtime, g.mtime, "{p}: mtime with nanoseconds");
        }
        if w.xattrs != g.xattrs {
            differences.push(format!(
                "{p}: {:?} -> {:?}",
                w.xattrs.keys().collect::<Vec<_>>(),
                g.xattrs.keys().collect::<Vec<_>>()
            ));
        }
        if w.kind != "symlink" && w.mode != g.mode {
            differences.push(format!("{p}: mode {:o} -> {:o}", w.mode, g.mode));
        }
    }
    eprintln!("GNU tar: differences from the source tree: {differences:#?}");
}

#[test]
fn gnu_tar_pax_archives_extract_with_ibu() {
    if !have("tar") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tree(tmp.path());
    let archive = tmp.path().join("gnu.tar");
    run(Command::new("tar")
        .args([
            "--format=posix",
            "--xattrs",
            "--xattrs-include=*",
            "--acls",
            "-cf",
        ])
        .arg(&archive)
        .arg("-C")
        .arg(&src)
        .arg("."));
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let dest = Dir::open_ambient_dir(&out, cap_std::ambient_authority()).unwrap();
    let opts = ExtractOptions {
        allow_devices: true,
        allow_setid: true,
        ..ExtractOptions::default()
    };
    let report = extract(std::fs::File::open(&archive).unwrap(), &dest, &opts).unwrap();
    assert!(report.root_metadata, "GNU tar archives `./`");
    let want = snapshot(&src, false);
    let got = snapshot(&out, false);
    for (path, w) in &want {
        let g = &got[path];
        let p = path.display();
        assert_eq!(w.kind, g.kind, "{p}");
        assert_eq!(w.content, g.content, "{p}");
        assert_eq!(w.link, g.link, "{p}");
        assert_eq!(w.same_inode, g.same_inode, "{p}");
        if w.kind != "symlink" {
            assert_eq!(w.mode, g.mode, "{p}: mode");
        }
        assert_eq!((w.uid, w.gid), (g.uid, g.gid), "{p}: owner");
        assert_eq!(w.mtime, g.mtime, "{p}: mtime");
        // GNU tar does not archive xattrs of symlinks.
        if w.kind != "symlink" {
            assert_eq!(w.xattrs, g.xattrs, "{p}: xattrs");
        }
    }
}
