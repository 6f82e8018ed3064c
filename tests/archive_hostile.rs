//! Hostile archives, part 1: names and links that try to reach outside the destination. Each
//! must be rejected with a clear reason, and nothing may be written outside the destination —
//! nor, for the rejected entry, inside it.

mod archive_fixture;

use std::path::PathBuf;

use archive_fixture::scene::{Scene, opts};
use archive_fixture::*;
use cap_std::fs::Dir;
use ibu::archive::{ExtractOptions, OutsidePrefix, Reason, extract};

#[test]
fn parent_components_and_absolute_names() {
    let s = Scene::new();
    let cases: Vec<(String, Reason)> = vec![
        ("../escape".into(), Reason::ParentComponent),
        ("../outside/secret".into(), Reason::ParentComponent),
        ("a/../../x".into(), Reason::ParentComponent),
        ("a/b/../c".into(), Reason::ParentComponent),
        ("/abs/path".into(), Reason::AbsolutePath),
        (format!("{}/secret", s.outside_abs()), Reason::AbsolutePath),
    ];
    for (name, want) in cases {
        let bytes = RawTar::new()
            .pax(&[("path", name.as_bytes())])
            .file("x", b"pwned")
            .finish();
        assert_eq!(s.rejected(&bytes, &opts(), &name), want, "{name}");
        assert!(s.dest_names().is_empty(), "{name}: nothing written in dest");
    }
    // A NUL byte smuggled into a PAX path.
    let bytes = RawTar::new()
        .pax(&[("path", b"ok\0/../../x")])
        .file("x", b"")
        .finish();
    assert_eq!(s.rejected(&bytes, &opts(), "ok"), Reason::NulInName);
}

#[test]
fn symlinks_are_never_written_through() {
    type Case = fn(&Scene) -> (String, String);
    let cases: Vec<Case> = vec![
        |s| ("/".into(), format!("link/{}/pwned", s.outside_rel())),
        |_| ("../../../../../../..".into(), "link/pwned".into()),
        |s| (s.outside_abs(), "link/pwned".into()),
        |_| ("../outside".into(), "link/secret".into()),
        |_| (".".into(), "link/x".into()),
    ];
    for case in cases {
        let s = Scene::new();
        let link = "link";
        let (target, victim) = case(&s);
        let bytes = RawTar::new()
            .symlink(link, &target)
            .pax(&[("path", victim.as_bytes())])
            .file("x", b"pwned")
            .finish();
        let why = s.rejected(&bytes, &opts(), &victim);
        assert_eq!(
            why,
            Reason::ThroughSymlink {
                component: "link".into()
            },
            "{target}"
        );
        // The symlink itself was extracted (as a symlink, harmless), nothing else.
        assert_eq!(s.dest_names(), vec![PathBuf::from("link")]);
    }

    // A directory entry through a symlink, or naming it.
    let s = Scene::new();
    let bytes = RawTar::new()
        .symlink("link", &s.outside_abs())
        .dir("link/")
        .finish();
    assert_eq!(s.rejected(&bytes, &opts(), "link/"), Reason::Duplicate);
    // The same against a symlink that was already there.
    let s = Scene::new();
    std::os::unix::fs::symlink(s.outside_abs(), s.dest().join("pre")).unwrap();
    let bytes = RawTar::new().dir("pre/").file("pre/x", b"pwned").finish();
    assert_eq!(s.rejected(&bytes, &opts(), "pre/"), Reason::Exists);
    let bytes = RawTar::new().file("pre/x", b"pwned").finish();
    assert_eq!(
        s.rejected(&bytes, &opts(), "pre/x"),
        Reason::ThroughSymlink {
            component: "pre".into()
        }
    );
    let bytes = RawTar::new()
        .dir("sub/")
        .symlink("sub/l", "/")
        .dir("sub/l/etc/")
        .finish();
    let s = Scene::new();
    assert_eq!(
        s.rejected(&bytes, &opts(), "sub/l/etc"),
        Reason::ThroughSymlink {
            component: "sub/l".into()
        }
    );
    // A file named like an existing (dangling) symlink is not created through it.
    let s = Scene::new();
    let bytes = RawTar::new()
        .symlink("dangling", &format!("{}/new-file", s.outside_abs()))
        .file("dangling", b"pwned")
        .finish();
    assert_eq!(s.rejected(&bytes, &opts(), "dangling"), Reason::Duplicate);
    assert!(!s.tmp.path().join("outside/new-file").exists());
}

#[test]
fn hardlinks_stay_inside() {
    let s = Scene::new();
    let abs_secret = format!("{}/secret", s.outside_abs());
    let cases: Vec<(Vec<u8>, &str, &str)> = vec![
        (
            RawTar::new().hardlink("h", "../outside/secret").finish(),
            "h",
            "`..`",
        ),
        (
            RawTar::new().hardlink("h", "/etc/passwd").finish(),
            "h",
            "absolute",
        ),
        (
            RawTar::new().hardlink("h", &abs_secret).finish(),
            "h",
            "absolute",
        ),
        (
            RawTar::new()
                .symlink("l", &s.outside_abs())
                .hardlink("h", "l/secret")
                .finish(),
            "h",
            "not an earlier entry",
        ),
        (
            RawTar::new()
                .hardlink("h", "later")
                .file("later", b"x")
                .finish(),
            "h",
            "not an earlier entry",
        ),
        (
            RawTar::new().dir("d/").hardlink("h", "d").finish(),
            "h",
            "is a directory",
        ),
        (RawTar::new().hardlink("h", "").finish(), "h", ""),
    ];
    for (bytes, entry, why) in cases {
        let s = Scene::new();
        let reason = s.rejected(&bytes, &opts(), entry);
        match &reason {
            Reason::HardlinkTarget { why: w, .. } => assert!(w.contains(why), "{reason}"),
            Reason::EmptyLinkTarget => assert_eq!(why, ""),
            other => panic!("unexpected {other}"),
        }
    }
    // With a prefix, a link to something outside it is refused too.
    let s = Scene::new();
    let bytes = RawTar::new()
        .file("seed/var/f", b"x")
        .hardlink("seed/etc/h", "seed/var/f")
        .finish();
    let o = ExtractOptions {
        strip_prefix: Some("seed/etc".into()),
        outside_prefix: OutsidePrefix::Skip,
        ..opts()
    };
    assert!(matches!(
        s.rejected(&bytes, &o, "seed/etc/h"),
        Reason::HardlinkTarget { .. }
    ));
    // A hardlink to a symlink links the symlink itself (linkat does not follow it).
    let s = Scene::new();
    let bytes = RawTar::new()
        .symlink("l", &format!("{}/secret", s.outside_abs()))
        .hardlink("h", "l")
        .finish();
    let dest = Dir::open_ambient_dir(s.dest(), cap_std::ambient_authority()).unwrap();
    extract(&bytes[..], &dest, &opts()).unwrap();
    assert!(
        std::fs::symlink_metadata(s.dest().join("h"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        std::fs::read(s.tmp.path().join("outside/secret")).unwrap(),
        b"untouched"
    );

    // A good hardlink works.
    let s = Scene::new();
    let bytes = RawTar::new().file("a", b"same").hardlink("b", "a").finish();
    let dest = Dir::open_ambient_dir(s.dest(), cap_std::ambient_authority()).unwrap();
    let report = extract(&bytes[..], &dest, &opts()).unwrap();
    assert_eq!(report.hardlinks, 1);
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(s.dest().join("a")).unwrap().ino(),
        std::fs::metadata(s.dest().join("b")).unwrap().ino()
    );
}
