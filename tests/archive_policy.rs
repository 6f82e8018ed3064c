//! Hostile archives, part 2: policy (devices, setuid, capabilities), over-long names,
//! replacements and duplicates, unsupported entries, prefixes, and staged (all-or-nothing)
//! extraction.

mod archive_fixture;

use std::path::{Path, PathBuf};

use archive_fixture::scene::{Scene, opts};
use archive_fixture::*;
use cap_std::fs::Dir;
use ibu::archive::{ExtractError, ExtractOptions, OutsidePrefix, Reason, extract, extract_staged};

#[test]
fn policy_devices_setuid_capabilities() {
    let s = Scene::new();
    let chr = RawTar::new()
        .dir("dev/")
        .entry_dev(b"dev/mem", b'3', 0o600, b"", b"", (1, 1))
        .finish();
    assert_eq!(
        s.rejected(&chr, &opts(), "dev/mem"),
        Reason::DeviceNotAllowed
    );
    assert_eq!(
        s.dest_names(),
        vec![PathBuf::from("dev")],
        "the entry before it stays"
    );
    let s = Scene::new();
    let blk = RawTar::new()
        .entry_dev(b"sda", b'4', 0o600, b"", b"", (8, 0))
        .finish();
    assert_eq!(s.rejected(&blk, &opts(), "sda"), Reason::DeviceNotAllowed);
    let fifo = RawTar::new().entry(b"fifo", b'6', 0o600, b"", b"").finish();
    assert_eq!(s.rejected(&fifo, &opts(), "fifo"), Reason::DeviceNotAllowed);

    // Rejected before anything is written for the entry: not even its missing parents.
    let suid = RawTar::new()
        .entry(b"new/dir/su", b'0', 0o4755, b"", b"#!")
        .finish();
    assert_eq!(
        s.rejected(&suid, &opts(), "new/dir/su"),
        Reason::SetIdNotAllowed { mode: 0o4755 }
    );
    assert!(s.dest_names().is_empty(), "{:?}", s.dest_names());
    let sgid = RawTar::new().entry(b"sg", b'0', 0o2755, b"", b"").finish();
    assert_eq!(
        s.rejected(&sgid, &opts(), "sg"),
        Reason::SetIdNotAllowed { mode: 0o2755 }
    );
    let cap = RawTar::new()
        .pax(&[("SCHILY.xattr.security.capability", &capability_value())])
        .file("ping", b"")
        .finish();
    assert_eq!(
        s.rejected(&cap, &opts(), "ping"),
        Reason::CapabilityNotAllowed
    );

    // Setgid and sticky directories are fine; devices and setuid with the options.
    let ok = RawTar::new()
        .entry(b"shared/", b'5', 0o2775, b"", b"")
        .entry(b"tmp/", b'5', 0o1777, b"", b"")
        .finish();
    let dest = Dir::open_ambient_dir(s.dest(), cap_std::ambient_authority()).unwrap();
    extract(&ok[..], &dest, &opts()).unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &str| {
        std::fs::metadata(s.dest().join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("shared"), 0o2775);
    assert_eq!(mode("tmp"), 0o1777);
    if is_root() {
        let s = Scene::new();
        let dest = Dir::open_ambient_dir(s.dest(), cap_std::ambient_authority()).unwrap();
        let all = ExtractOptions {
            allow_devices: true,
            allow_setid: true,
            ..opts()
        };
        let bytes = RawTar::new()
            .entry_dev(b"null", b'3', 0o666, b"", b"", (1, 3))
            .entry(b"su", b'0', 0o4755, b"", b"#!")
            .finish();
        let report = extract(&bytes[..], &dest, &all).unwrap();
        assert_eq!((report.specials, report.files), (1, 1));
        let su = std::fs::metadata(s.dest().join("su")).unwrap();
        assert_eq!(su.permissions().mode() & 0o7777, 0o4755);
    }
}

#[test]
fn over_long_names() {
    let s = Scene::new();
    let long_component = "n".repeat(300);
    let bytes = RawTar::new()
        .pax(&[("path", long_component.as_bytes())])
        .file("x", b"")
        .finish();
    assert_eq!(
        s.rejected(&bytes, &opts(), "nnnn"),
        Reason::NameTooLong { len: 300 }
    );
    let deep = vec!["d".repeat(250); 20].join("/");
    let bytes = RawTar::new()
        .pax(&[("path", deep.as_bytes())])
        .file("x", b"")
        .finish();
    assert!(matches!(
        s.rejected(&bytes, &opts(), "dddd"),
        Reason::PathTooLong { .. }
    ));
    // A GNU long name header too.
    let bytes = RawTar::new()
        .entry(
            b"././@LongLink",
            b'L',
            0o644,
            b"",
            long_component.as_bytes(),
        )
        .file("x", b"")
        .finish();
    assert!(matches!(
        s.rejected(&bytes, &opts(), "nnnn"),
        Reason::NameTooLong { .. }
    ));
    // An absurdly large extension header is refused before it is read.
    let bytes = RawTar::new()
        .entry(b"PaxHeaders/x", b'x', 0o644, b"", &vec![b'a'; 2 << 20])
        .file("x", b"")
        .finish();
    assert!(matches!(
        s.rejected(&bytes, &opts(), "extension header"),
        Reason::BadPax(_)
    ));
    assert!(s.dest_names().is_empty());
}

#[test]
fn replacing_and_duplicates() {
    let cases: Vec<(&str, Vec<u8>, &str, Reason)> = vec![
        (
            "file then dir",
            RawTar::new().file("x", b"1").dir("x/").finish(),
            "x/",
            Reason::Duplicate,
        ),
        (
            "dir then file",
            RawTar::new().dir("x/").file("x", b"1").finish(),
            "x",
            Reason::Duplicate,
        ),
        (
            "file then child",
            RawTar::new().file("x", b"1").file("x/y", b"2").finish(),
            "x/y",
            Reason::NotADirectory {
                component: "x".into(),
            },
        ),
        (
            "duplicate file",
            RawTar::new().file("f", b"1").file("f", b"2").finish(),
            "f",
            Reason::Duplicate,
        ),
        (
            "duplicate via ./",
            RawTar::new().file("f", b"1").file("./f", b"2").finish(),
            "./f",
            Reason::Duplicate,
        ),
        (
            "duplicate dir",
            RawTar::new().dir("d/").dir("d/").finish(),
            "d/",
            Reason::Duplicate,
        ),
        (
            "symlink then file",
            RawTar::new().symlink("s", "t").file("s", b"").finish(),
            "s",
            Reason::Duplicate,
        ),
        (
            "root replaced",
            RawTar::new().file(".", b"").finish(),
            ".",
            Reason::ReplacesRoot,
        ),
        (
            "file with a slash",
            RawTar::new().file("f/", b"").finish(),
            "f/",
            Reason::TrailingSlash,
        ),
    ];
    for (label, bytes, entry, want) in cases {
        let s = Scene::new();
        let why = s.rejected(&bytes, &opts(), entry);
        assert_eq!(why, want, "{label}");
        // The first version is intact.
        if label == "duplicate file" {
            assert_eq!(std::fs::read(s.dest().join("f")).unwrap(), b"1");
        }
    }
    // Something already in the destination is never replaced.
    let s = Scene::new();
    std::fs::write(s.dest().join("keep"), b"mine").unwrap();
    let bytes = RawTar::new().file("keep", b"theirs").finish();
    assert_eq!(s.rejected(&bytes, &opts(), "keep"), Reason::Exists);
    assert_eq!(std::fs::read(s.dest().join("keep")).unwrap(), b"mine");
}

#[test]
fn unsupported_entries_and_prefix_policy() {
    let s = Scene::new();
    let sparse = RawTar::new()
        .entry(b"sparse", b'S', 0o644, b"", b"")
        .finish();
    assert!(matches!(
        s.rejected(&sparse, &opts(), "sparse"),
        Reason::UnsupportedType { .. }
    ));
    let pax_sparse = RawTar::new()
        .pax(&[("GNU.sparse.major", b"1")])
        .file("sp", b"")
        .finish();
    assert!(matches!(
        s.rejected(&pax_sparse, &opts(), "sp"),
        Reason::UnsupportedType { .. }
    ));
    let global = RawTar::new()
        .entry(b"pax_global_header", b'g', 0o644, b"", b"13 path=/etc\n")
        .file("x", b"")
        .finish();
    assert!(matches!(
        s.rejected(&global, &opts(), "pax_global_header"),
        Reason::UnsupportedType { .. }
    ));
    let size_lie = RawTar::new()
        .pax(&[("size", b"999999")])
        .file("x", b"abc")
        .finish();
    assert!(matches!(
        s.rejected(&size_lie, &opts(), "x"),
        Reason::BadPax(_)
    ));

    // Prefix: rejected by default, skipped on request.
    let bytes = RawTar::new()
        .dir("seed/")
        .dir("seed/etc/")
        .file("seed/etc/hosts", b"h")
        .file("seed/var/log", b"l")
        .finish();
    let o = ExtractOptions {
        strip_prefix: Some("seed/etc/".into()),
        ..opts()
    };
    assert!(matches!(
        s.rejected(&bytes, &o, "seed/var/log"),
        Reason::OutsidePrefix { .. }
    ));
    let s = Scene::new();
    let dest = Dir::open_ambient_dir(s.dest(), cap_std::ambient_authority()).unwrap();
    let o = ExtractOptions {
        outside_prefix: OutsidePrefix::Skip,
        ..o
    };
    let report = extract(&bytes[..], &dest, &o).unwrap();
    assert_eq!(report.skipped, vec!["seed/", "seed/var/log"]);
    assert_eq!(s.dest_names(), vec![PathBuf::from("hosts")]);
}

#[test]
fn staged_extraction_leaves_nothing_behind() {
    let s = Scene::new();
    let parent = Dir::open_ambient_dir(s.tmp.path(), cap_std::ambient_authority()).unwrap();
    let bytes = RawTar::new()
        .file("good", b"fine")
        .dir("sub/")
        .file("sub/more", b"fine too")
        .file("../escape", b"pwned")
        .finish();
    let before = s.everything_outside_dest();
    let err = extract_staged(&bytes[..], &parent, Path::new("staged"), &opts()).unwrap_err();
    assert!(ExtractError::find(&err).is_some(), "{err:#}");
    assert_eq!(
        before,
        s.everything_outside_dest(),
        "no staging directory, no `staged`"
    );
    assert!(!s.tmp.path().join("staged").exists());

    // A truncated archive is an error too, and also leaves nothing.
    let good = RawTar::new().file("f", &[7u8; 5000]).finish();
    let err = extract_staged(&good[..1500], &parent, Path::new("staged"), &opts()).unwrap_err();
    assert!(
        ExtractError::find(&err).is_none(),
        "an I/O error, not a rejection: {err:#}"
    );
    assert_eq!(before, s.everything_outside_dest());

    // The existing destination is refused.
    let err = extract_staged(&good[..], &parent, Path::new("outside"), &opts()).unwrap_err();
    assert!(format!("{err:#}").contains("already exists"), "{err:#}");

    // And a good archive lands whole.
    let report = extract_staged(&good[..], &parent, Path::new("staged"), &opts()).unwrap();
    assert_eq!(report.files, 1);
    assert_eq!(
        std::fs::read(s.tmp.path().join("staged/f")).unwrap(),
        vec![7u8; 5000]
    );
}
