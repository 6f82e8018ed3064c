//! Round trips through `ibu::archive`: a tree with every kind of file and metadata is archived,
//! extracted into a fresh directory and compared field by field; recorded data offsets are
//! checked against the stream; the same tree always gives the same bytes.

mod archive_fixture;

use std::io::Read;
use std::path::Path;

use archive_fixture::*;
use cap_std::fs::Dir;
use ibu::archive::{
    BuildOptions, ExtractOptions, FileRecord, SpecialFiles, TarBuilder, extract, extract_staged,
};

fn open(path: &Path) -> Dir {
    Dir::open_ambient_dir(path, cap_std::ambient_authority()).unwrap()
}

fn archive_tree(dir: &Path, name: &str) -> (Vec<u8>, Vec<FileRecord>) {
    let opts = BuildOptions {
        special_files: SpecialFiles::Archive,
        ..BuildOptions::default()
    };
    let mut tar = TarBuilder::with_options(Vec::new(), opts);
    tar.append_tree(&open(dir), Path::new(name), |_| false)
        .unwrap();
    tar.finish().unwrap()
}

fn permissive() -> ExtractOptions {
    ExtractOptions {
        allow_devices: true,
        allow_setid: true,
        ..ExtractOptions::default()
    }
}

#[test]
fn tree_round_trips_with_all_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let xattrs = build_tree(&src);
    eprintln!("xattr namespaces exercised: {xattrs:?}");
    let (bytes, records) = archive_tree(&src, "");
    assert!(!records.is_empty());

    let dst = tmp.path().join("dst");
    std::fs::create_dir(&dst).unwrap();
    let report = extract(&bytes[..], &open(&dst), &permissive()).unwrap();
    assert_eq!(report.hardlinks, 2, "{report:?}");
    assert!(report.symlinks >= 6, "{report:?}");
    assert!(report.skipped.is_empty(), "{report:?}");
    assert_same_trees(&snapshot(&src, false), &snapshot(&dst, false));

    // The extracted copy has other inode numbers and was created in another order, yet archives
    // to the very same bytes: the archive depends on content and metadata only.
    let (again, _) = archive_tree(&dst, "");
    assert!(
        again == bytes,
        "re-archiving the extracted tree gives identical bytes"
    );
}

#[test]
fn prefixed_tree_round_trips_including_its_root() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("etc");
    std::fs::create_dir(&src).unwrap();
    build_tree(&src);
    std::fs::set_permissions(&src, std::os::unix::fs::PermissionsExt::from_mode(0o750)).unwrap();
    set_mtime(&src, 1_234_567_890, 42);

    let opts = BuildOptions {
        special_files: SpecialFiles::Archive,
        ..BuildOptions::default()
    };
    let mut tar = TarBuilder::with_options(Vec::new(), opts);
    tar.append_dir(Path::new("seed"), &ibu::archive::Meta::root(0o755))
        .unwrap();
    tar.append_tree(&open(&src), Path::new("seed/etc"), |_| false)
        .unwrap();
    tar.append_bytes(
        Path::new("seed/info.json"),
        &ibu::archive::Meta::root(0o644),
        b"{}",
    )
    .unwrap();
    let (bytes, _) = tar.finish().unwrap();

    // Staged extraction of only seed/etc/: the rest of the archive is skipped.
    let parent = tmp.path().join("out");
    std::fs::create_dir(&parent).unwrap();
    let opts = ExtractOptions {
        strip_prefix: Some("seed/etc".into()),
        outside_prefix: ibu::archive::OutsidePrefix::Skip,
        ..permissive()
    };
    let report = extract_staged(&bytes[..], &open(&parent), Path::new("etc"), &opts).unwrap();
    assert!(report.root_metadata);
    assert_eq!(report.skipped, vec!["seed/", "seed/info.json"]);
    assert_same_trees(&snapshot(&src, true), &snapshot(&parent.join("etc"), true));
    let names: Vec<_> = std::fs::read_dir(&parent)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec!["etc"], "no staging directory left behind");
}

#[test]
fn recorded_offsets_point_at_the_file_data() {
    let tmp = tempfile::tempdir().unwrap();
    build_tree(tmp.path());
    let (bytes, records) = archive_tree(tmp.path(), "root");
    for r in &records {
        let on_disk = std::fs::read(tmp.path().join(r.path.strip_prefix("root").unwrap())).unwrap();
        let at = r.offset as usize;
        assert_eq!(r.size as usize, on_disk.len(), "{}", r.path.display());
        assert_eq!(
            &bytes[at..at + on_disk.len()],
            &on_disk[..],
            "{}",
            r.path.display()
        );
    }
    // The tar crate, reading the stream, finds each file's data where the builder said.
    let mut ar = tar::Archive::new(&bytes[..]);
    let mut found = 0;
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        if e.header().entry_type() == tar::EntryType::Regular {
            let path = std::path::PathBuf::from(
                <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&e.path_bytes()),
            );
            let pos = e.raw_file_position();
            if let Some(r) = records.iter().find(|r| r.path == path) {
                assert_eq!(r.offset, pos, "{}", path.display());
                found += 1;
            }
            let mut sink = Vec::new();
            e.read_to_end(&mut sink).unwrap();
        }
    }
    assert!(
        found + 1 >= records.len(),
        "every UTF-8 named file was checked"
    );
}

#[test]
fn synthesized_entries_and_determinism() {
    let build = || {
        let mut tar = TarBuilder::new(Vec::new());
        let mut meta = ibu::archive::Meta::root(0o640);
        meta.uid = 1000;
        meta.gid = 1000;
        meta.mtime = ibu::archive::Mtime {
            secs: 1_700_000_000,
            nanos: 5,
        };
        meta.xattrs.insert("user.a".into(), b"1".to_vec());
        tar.append_dir(Path::new("d"), &ibu::archive::Meta::root(0o755))
            .unwrap();
        let rec = tar.append_bytes(Path::new("d/f"), &meta, b"hello").unwrap();
        tar.append_symlink(
            Path::new("d/l"),
            Path::new("f"),
            &ibu::archive::Meta::root(0o777),
        )
        .unwrap();
        let (bytes, records) = tar.finish().unwrap();
        assert_eq!(records, vec![rec]);
        bytes
    };
    let a = build();
    assert_eq!(a, build());
    assert_eq!(a.len() % 512, 0);

    // Reproducible gzip too.
    let gz = |data: &[u8]| {
        let mut e = ibu::archive::gzip::encoder(Vec::new());
        std::io::Write::write_all(&mut e, data).unwrap();
        e.finish().unwrap()
    };
    assert_eq!(gz(&a), gz(&a));

    // A builder refuses names it would not extract.
    let mut tar = TarBuilder::new(Vec::new());
    let m = ibu::archive::Meta::root(0o644);
    assert!(tar.append_bytes(Path::new("../x"), &m, b"").is_err());
    assert!(tar.append_bytes(Path::new("/abs"), &m, b"").is_err());
    tar.append_bytes(Path::new("dup"), &m, b"").unwrap();
    assert!(tar.append_bytes(Path::new("dup"), &m, b"").is_err());
}

#[test]
fn exclusion_per_path_api_and_special_file_policy() {
    let tmp = tempfile::tempdir().unwrap();
    build_tree(tmp.path());
    let root = open(tmp.path());

    // Exclude var/tmp/* (keep var/tmp itself) and the fifo is refused by default.
    let mut tar = TarBuilder::new(Vec::new());
    let err = tar
        .append_tree(&root, Path::new(""), |e| e.path().starts_with("var/tmp/"))
        .unwrap_err();
    assert!(format!("{err:#}").contains("fifo"), "{err:#}");

    let opts = BuildOptions {
        special_files: SpecialFiles::Skip,
        ..BuildOptions::default()
    };
    let mut tar = TarBuilder::with_options(Vec::new(), opts);
    tar.append_tree(&root, Path::new(""), |e| {
        e.path().parent() == Some(Path::new("var/tmp"))
    })
    .unwrap();
    assert!(tar.skipped().iter().any(|p| p == Path::new("fifo")));
    let (bytes, _) = tar.finish().unwrap();
    let names = list(&bytes);
    assert!(names.contains(&"var/tmp/".to_string()), "{names:?}");
    assert!(
        !names.iter().any(|n| n.starts_with("var/tmp/s")),
        "{names:?}"
    );

    // Explicit paths, parents resolved without following symlinks.
    let mut tar = TarBuilder::new(Vec::new());
    tar.append_path(&root, Path::new("etc/hosts"), Path::new("seed/etc/hosts"))
        .unwrap();
    tar.append_path(
        &root,
        Path::new("etc/hosts-link"),
        Path::new("seed/etc/hosts-link"),
    )
    .unwrap();
    let err = tar
        .append_path(&root, Path::new("etc/sub-link/deeper"), Path::new("x"))
        .unwrap_err();
    assert!(format!("{err:#}").contains("sub-link"), "{err:#}");
    let (bytes, records) = tar.finish().unwrap();
    assert_eq!(list(&bytes), vec!["seed/etc/hosts", "seed/etc/hosts-link"]);
    assert_eq!(records.len(), 1);
}

fn list(bytes: &[u8]) -> Vec<String> {
    let mut ar = tar::Archive::new(bytes);
    ar.entries()
        .unwrap()
        .map(|e| String::from_utf8_lossy(&e.unwrap().path_bytes()).into_owned())
        .collect()
}
