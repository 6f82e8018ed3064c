//! OCI image layouts written by `ibu::oci::layout` and read back: verification, range reads at
//! recorded offsets, determinism, corruption, and `oci-archive` round trips.

mod archive_fixture;

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use archive_fixture::*;
use cap_std::fs::Dir;
use ibu::archive::{ExtractError, ExtractOptions, extract};
use ibu::oci::layout::{Compression, LayoutReader, LayoutWriter};
use ibu::oci::oci_archive;

fn tree(tmp: &Path) -> std::path::PathBuf {
    let t = tmp.join("tree");
    std::fs::create_dir(&t).unwrap();
    build_tree(&t);
    t
}

#[test]
fn layout_round_trip_and_range_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tree(tmp.path());
    let dir = tmp.path().join("layout");
    let built = seed_like_layout(&dir, &src, "seed");

    let reader = LayoutReader::open(&dir).unwrap();
    let (desc, manifest) = reader.manifest(Some("seed")).unwrap();
    assert_eq!(desc.digest, built.manifest.digest);
    assert_eq!(reader.manifest(None).unwrap().0, desc);
    assert!(reader.manifest(Some("other")).is_err());
    assert_eq!(manifest.layers, built.layers);
    let config = reader.config(&manifest).unwrap();
    assert_eq!(config.rootfs.diff_ids, built.diff_ids);
    for layer in &manifest.layers {
        reader.verify_blob(layer).unwrap();
    }
    // Pack layer: uncompressed, so blob digest == diff id.
    assert_eq!(
        manifest.layers[2].media_type,
        ibu::oci::MEDIA_TYPE_LAYER_TAR
    );
    assert_eq!(manifest.layers[2].digest, built.diff_ids[2]);

    // Range reads at the recorded offsets give the files' bytes.
    let mut blob = reader.open_blob(&manifest.layers[2]).unwrap();
    assert!(built.pack_records.len() > 5);
    for r in &built.pack_records {
        let rel = r
            .path
            .strip_prefix(ibu::seed::format::PREFIX_OSTREE_OBJECTS)
            .unwrap();
        let want = std::fs::read(src.join("etc").join(rel)).unwrap();
        blob.seek(SeekFrom::Start(r.offset)).unwrap();
        let mut got = vec![0u8; r.size as usize];
        blob.read_exact(&mut got).unwrap();
        assert_eq!(got, want, "{}", r.path.display());
    }

    // The etc layer extracts (digest verified while reading) to the original tree.
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let dest = Dir::open_ambient_dir(&out, cap_std::ambient_authority()).unwrap();
    let opts = ExtractOptions {
        strip_prefix: Some(ibu::seed::format::PREFIX_ETC.into()),
        allow_devices: true,
        allow_setid: true,
        ..ExtractOptions::default()
    };
    let report = extract(
        reader.open_layer(&manifest.layers[1]).unwrap(),
        &dest,
        &opts,
    )
    .unwrap();
    assert!(report.root_metadata);
    assert_same_trees(&snapshot(&src, true), &snapshot(&out, true));
}

#[test]
fn layouts_are_deterministic() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tree(tmp.path());
    let a = seed_like_layout(&tmp.path().join("a"), &src, "seed");
    let b = seed_like_layout(&tmp.path().join("b"), &src, "seed");
    assert_eq!(a.manifest, b.manifest);
    assert_eq!(a.layers, b.layers, "gzip layers are reproducible");
    assert_eq!(
        std::fs::read(tmp.path().join("a/index.json")).unwrap(),
        std::fs::read(tmp.path().join("b/index.json")).unwrap()
    );
    // oci-archive of the same layout twice: identical bytes.
    oci_archive::write(&tmp.path().join("a"), &tmp.path().join("a1.tar")).unwrap();
    oci_archive::write(&tmp.path().join("b"), &tmp.path().join("b1.tar")).unwrap();
    assert!(
        std::fs::read(tmp.path().join("a1.tar")).unwrap()
            == std::fs::read(tmp.path().join("b1.tar")).unwrap()
    );
}

#[test]
fn corruption_is_detected() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tree(tmp.path());
    let dir = tmp.path().join("layout");
    let built = seed_like_layout(&dir, &src, "seed");
    let reader = LayoutReader::open(&dir).unwrap();
    for layer in &built.layers {
        let path = dir
            .join("blobs/sha256")
            .join(layer.digest.trim_start_matches("sha256:"));
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x55;
        std::fs::write(&path, &bytes).unwrap();
        assert!(reader.verify_blob(layer).is_err(), "{}", layer.digest);
        let mut sink = Vec::new();
        let read = reader
            .open_layer(layer)
            .and_then(|mut r| r.read_to_end(&mut sink).map_err(Into::into));
        assert!(
            read.is_err(),
            "reading a corrupt layer fails: {}",
            layer.digest
        );
        bytes.push(0);
        std::fs::write(&path, &bytes).unwrap();
        let err = reader.open_blob(layer).unwrap_err();
        assert!(format!("{err:#}").contains("bytes"), "{err:#}");
    }
    // A descriptor whose digest is not a file name.
    let mut evil = built.layers[0].clone();
    evil.digest = "sha256:../../../etc/passwd".into();
    assert!(reader.open_blob(&evil).is_err());
}

#[test]
fn writer_edge_cases() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("l");
    let layout = LayoutWriter::create(&dir).unwrap();
    assert!(
        LayoutWriter::create(&dir).is_err(),
        "not on a non-empty directory"
    );

    // An unfinished layer leaves no temporary file.
    let mut w = layout.layer(Compression::Gzip).unwrap();
    w.write_all(b"partial").unwrap();
    drop(w);
    let blobs: Vec<_> = std::fs::read_dir(dir.join("blobs/sha256"))
        .unwrap()
        .collect();
    assert!(blobs.is_empty(), "{blobs:?}");

    // Canonical JSON blobs: same value, same digest, compact.
    let a = layout
        .add_json_blob(
            "application/json",
            &serde_json::json!({"b": 1, "a": [1, 2]}),
        )
        .unwrap();
    let b = layout
        .add_json_blob(
            "application/json",
            &serde_json::json!({"b": 1, "a": [1, 2]}),
        )
        .unwrap();
    assert_eq!(a, b);
    assert_eq!(
        std::fs::read(
            dir.join("blobs/sha256")
                .join(a.digest.trim_start_matches("sha256:"))
        )
        .unwrap(),
        br#"{"a":[1,2],"b":1}"#
    );

    // Diff id and digest of a plain layer are the same; of a gzip layer they differ.
    let mut w = layout.layer(Compression::None).unwrap();
    w.write_all(&[0u8; 1024]).unwrap();
    let (plain, diff) = w.finish().unwrap();
    assert_eq!(plain.digest, diff);
    assert_eq!(plain.size, 1024);
    let mut w = layout.layer(Compression::Gzip).unwrap();
    w.write_all(&[0u8; 1024]).unwrap();
    let (gz, gz_diff) = w.finish().unwrap();
    assert_eq!(gz_diff, diff);
    assert_ne!(gz.digest, diff);

    // A manifest must refer to blobs of the layout, and the ref name must be valid.
    let missing = ibu::oci::ImageManifest {
        schema_version: 2,
        media_type: Some(ibu::oci::MEDIA_TYPE_MANIFEST.into()),
        config: a.clone(),
        layers: vec![ibu::oci::Descriptor {
            digest: ibu::oci::sha256_digest(b"nope"),
            ..plain.clone()
        }],
        annotations: Default::default(),
    };
    let err = LayoutWriter::create(&tmp.path().join("m")).unwrap();
    assert!(err.finish(&missing, "x").is_err());
    let ok = ibu::oci::ImageManifest {
        layers: vec![plain],
        ..missing
    };
    assert!(
        LayoutWriter::create(&dir.join("../n"))
            .unwrap()
            .finish(&ok, "bad name!")
            .is_err()
    );
    let desc = layout.finish(&ok, "v1").unwrap();
    assert_eq!(desc.annotations["org.opencontainers.image.ref.name"], "v1");
    assert!(!dir.join("index.json.tmp").exists());
}

#[test]
fn oci_archive_round_trip_and_hostile_archive() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tree(tmp.path());
    let dir = tmp.path().join("layout");
    let built = seed_like_layout(&dir, &src, "seed");
    let archive = tmp.path().join("seed.tar");
    oci_archive::write(&dir, &archive).unwrap();
    let (reader, report) = oci_archive::unpack(&archive, &tmp.path().join("unpacked")).unwrap();
    assert_eq!(report.files as usize, 2 + built.layers.len() + 2);
    let (desc, manifest) = reader.manifest(Some("seed")).unwrap();
    assert_eq!(desc.digest, built.manifest.digest);
    for l in &manifest.layers {
        reader.verify_blob(l).unwrap();
    }

    // A hostile oci-archive is refused and leaves nothing.
    let bad = tmp.path().join("bad.tar");
    std::fs::write(
        &bad,
        RawTar::new()
            .file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)
            .symlink("blobs", "/")
            .file("blobs/etc/x", b"pwned")
            .finish(),
    )
    .unwrap();
    let err = oci_archive::unpack(&bad, &tmp.path().join("bad")).unwrap_err();
    assert!(ExtractError::find(&err).is_some(), "{err:#}");
    assert!(!tmp.path().join("bad").exists());
    let names: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(names.is_empty(), "no staging leftovers: {names:?}");
}
