use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::*;
use crate::spec::{ApiVersion, AutoRollback, ImageCleanup, SeedRef, Stage};

const NS: &str = "openshift-lifecycle-agent";
const SECRET_VALUE: &str = "c3VwZXItc2VjcmV0LXRva2Vu"; // "super-secret-token"

fn put(dir: &Path, rel: &str, text: &str, mode: u32) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn r(ns: &str, name: &str) -> ObjectRef {
    ObjectRef {
        name: name.into(),
        namespace: ns.into(),
    }
}

fn cm(ns: &str, name: &str, body: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {ns}\n{body}")
}

fn pull_secret_yaml(name: &str, json: &str) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(json);
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {NS}\n\
         type: kubernetes.io/dockerconfigjson\ndata:\n  .dockerconfigjson: {b64}\n"
    )
}

#[test]
fn config_map_is_read_with_data_and_binary_data() {
    let d = tempfile::tempdir().unwrap();
    put(
        d.path(),
        "configmaps/openshift-adp/oadp-cm.yaml",
        &cm(
            "openshift-adp",
            "oadp-cm",
            "data:\n  a.yaml: |\n    kind: Backup\nbinaryData:\n  b.bin: AAEC\n",
        ),
        0o644,
    );
    let c = config_map(d.path(), &r("openshift-adp", "oadp-cm")).unwrap();
    assert_eq!(c.data["a.yaml"], "kind: Backup\n");
    assert_eq!(c.binary_data["b.bin"], vec![0u8, 1, 2]);
    assert!(c.path.ends_with("configmaps/openshift-adp/oadp-cm.yaml"));
}

#[test]
fn config_map_problems_name_the_file_and_field() {
    let d = tempfile::tempdir().unwrap();
    let rr = r("ns", "x");
    let e = config_map(d.path(), &rr).unwrap_err();
    assert!(matches!(e, RefError::NotFound { .. }));
    assert!(
        e.to_string()
            .contains("configmaps/ns/x.yaml does not exist"),
        "{e}"
    );

    let cases = [
        (
            cm("ns", "y", "data: {}\n"),
            "metadata.name: \"y\" does not match the file name",
        ),
        (
            cm("other", "x", "data: {}\n"),
            "metadata.namespace: \"other\" does not match the directory",
        ),
        (
            cm("ns", "x", "dat: {}\n"),
            "dat: unknown field; did you mean \"data\"? (line 6, column 1)",
        ),
        (
            cm("ns", "x", "data: {k: 1}\n"),
            "data.k: invalid type: integer `1`, expected a string",
        ),
        (
            cm("ns", "x", "binaryData: {k: \"!!\"}\n"),
            "binaryData[\"k\"]: not valid base64",
        ),
        (
            cm("ns", "x", "data: {k: a}\nbinaryData: {k: AA==}\n"),
            "in both data and binaryData",
        ),
        (cm("ns", "x", "data: {\"a/b\": x}\n"), "invalid key \"a/b\""),
        (
            "apiVersion: v2\nkind: ConfigMap\n".to_string(),
            "apiVersion: must be \"v1\"",
        ),
        (
            "apiVersion: v1\nkind: Secret\n".to_string(),
            "kind: must be \"ConfigMap\"",
        ),
        (
            "- a\n".to_string(),
            "must be a ConfigMap (a YAML mapping), got a list",
        ),
        ("a: [\n".to_string(), "is not valid YAML"),
    ];
    for (text, want) in cases {
        put(d.path(), "configmaps/ns/x.yaml", &text, 0o644);
        let e = config_map(d.path(), &rr).unwrap_err().to_string();
        assert!(e.contains(want), "{text:?}\n  got: {e}\n want: {want}");
        assert!(e.starts_with("ConfigMap ns/x: "), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }
}

#[test]
fn references_that_would_escape_the_tree_are_refused() {
    let d = tempfile::tempdir().unwrap();
    for (ns, name) in [
        ("..", "x"),
        ("ns", "../../etc/shadow"),
        ("ns", "<seed_pull_secret>"),
        ("", "x"),
    ] {
        let e = config_map(d.path(), &r(ns, name)).unwrap_err();
        assert!(matches!(e, RefError::InvalidName { .. }), "{e}");
        let e = secret(d.path(), &r(ns, name)).unwrap_err();
        assert!(matches!(e, RefError::InvalidName { .. }), "{e}");
    }
}

#[test]
fn additional_images_use_lca_precache_format() {
    let d = tempfile::tempdir().unwrap();
    put(
        d.path(),
        "configmaps/ns/imgs.yaml",
        &cm(
            "ns",
            "imgs",
            "data:\n  images.txt: |\n    # extra images\n    quay.io/a/b:1\n\n    registry.local:5000/c@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n",
        ),
        0o644,
    );
    let imgs = additional_images(d.path(), &r("ns", "imgs")).unwrap();
    assert_eq!(imgs.len(), 2);
    assert_eq!(imgs[0].to_string(), "quay.io/a/b:1");
    put(
        d.path(),
        "configmaps/ns/imgs.yaml",
        &cm(
            "ns",
            "imgs",
            "data:\n  images.txt: |\n    quay.io/a/b:1\n    Bad/Image\n",
        ),
        0o644,
    );
    let e = additional_images(d.path(), &r("ns", "imgs"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("line 2: invalid image reference \"Bad/Image\""),
        "{e}"
    );
    put(
        d.path(),
        "configmaps/ns/imgs.yaml",
        &cm("ns", "imgs", "data:\n  other: x\n"),
        0o644,
    );
    let e = additional_images(d.path(), &r("ns", "imgs"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("has no data key \"images.txt\""), "{e}");
}

#[test]
fn pull_secret_is_validated_without_echoing_it() {
    let d = tempfile::tempdir().unwrap();
    let json = r#"{"auths":{"quay.io":{"auth":"c3VwZXItc2VjcmV0LXRva2Vu"}}}"#;
    put(
        d.path(),
        &format!("secrets/{NS}/ps.yaml"),
        &pull_secret_yaml("ps", json),
        0o600,
    );
    let ps = pull_secret(d.path(), &r(NS, "ps")).unwrap();
    assert_eq!(ps.registries, vec!["quay.io".to_string()]);
    assert_eq!(ps.dockerconfigjson.expose(), json.as_bytes());
    let dbg = format!(
        "{ps:?} {} {:?}",
        ps.dockerconfigjson,
        secret(d.path(), &r(NS, "ps")).unwrap()
    );
    assert!(
        !dbg.contains(SECRET_VALUE) && !dbg.contains("auths"),
        "{dbg}"
    );
    assert!(
        dbg.contains("<redacted>") && dbg.contains(".dockerconfigjson"),
        "{dbg}"
    );

    for (json, want) in [
        (
            r#"{"auths": [c3VwZXItc2VjcmV0LXRva2Vu"#,
            "is not valid JSON (line 1, column 12)",
        ),
        (
            r#"{"credsStore": "c3VwZXItc2VjcmV0LXRva2Vu"}"#,
            "has no \"auths\" object",
        ),
    ] {
        put(
            d.path(),
            &format!("secrets/{NS}/ps.yaml"),
            &pull_secret_yaml("ps", json),
            0o600,
        );
        let e = pull_secret(d.path(), &r(NS, "ps")).unwrap_err().to_string();
        assert!(e.contains(want), "{e}");
        assert!(!e.contains(SECRET_VALUE), "{e}");
    }
    let other = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: ps}}\nstringData:\n  token: {SECRET_VALUE}\n"
    );
    put(d.path(), &format!("secrets/{NS}/ps.yaml"), &other, 0o600);
    let e = pull_secret(d.path(), &r(NS, "ps")).unwrap_err().to_string();
    assert!(
        e.contains("has no key \".dockerconfigjson\" (keys: token)"),
        "{e}"
    );
}

#[test]
fn secret_values_never_appear_in_errors() {
    let d = tempfile::tempdir().unwrap();
    let head = format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: s, namespace: {NS}}}\n");
    for body in [
        format!("data:\n  k: {SECRET_VALUE}!!\n"), // not base64
        format!("data:\n  k: [{SECRET_VALUE}]\n"), // wrong type
        format!("data: {SECRET_VALUE}\n"),         // not a mapping
        format!("stringData:\n  k: {{a: {SECRET_VALUE}}}\n"), // wrong type
        format!("strinData:\n  k: {SECRET_VALUE}\n"), // unknown field
        format!("data:\n  k: {SECRET_VALUE}\n  k: {SECRET_VALUE}\n"), // duplicate key
        format!("data:\n  k: \"{SECRET_VALUE}\n"), // broken YAML
    ] {
        put(
            d.path(),
            &format!("secrets/{NS}/s.yaml"),
            &format!("{head}{body}"),
            0o600,
        );
        let e = secret(d.path(), &r(NS, "s")).unwrap_err();
        let text = format!("{e} {e:?}");
        assert!(!text.contains(SECRET_VALUE), "{body:?}: {text}");
        assert!(!text.contains("super-secret"), "{body:?}: {text}");
    }
}

#[test]
fn secret_data_and_string_data_merge() {
    let d = tempfile::tempdir().unwrap();
    let text = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: s}}\ndata:\n  a: {SECRET_VALUE}\n  b: eA==\nstringData:\n  b: plain\n"
    );
    put(d.path(), &format!("secrets/{NS}/s.yaml"), &text, 0o400);
    let s = secret(d.path(), &r(NS, "s")).unwrap();
    assert_eq!(s.get("a").unwrap().expose(), b"super-secret-token");
    assert_eq!(s.get("b").unwrap().expose(), b"plain");
    assert_eq!(s.type_, "Opaque");
}

#[test]
fn secret_files_readable_by_others_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let rel = format!("secrets/{NS}/ps.yaml");
    for mode in [0o644, 0o640, 0o604, 0o660] {
        put(
            d.path(),
            &rel,
            &pull_secret_yaml("ps", "{\"auths\":{}}"),
            mode,
        );
        let e = pull_secret(d.path(), &r(NS, "ps")).unwrap_err();
        assert!(matches!(e, RefError::Insecure { .. }), "{e}");
        let e = e.to_string();
        assert!(e.contains(&format!("is mode {mode:04o}")), "{e}");
        assert!(
            e.contains(&format!("chmod 600 {}", d.path().join(&rel).display())),
            "{e}"
        );
    }
}

#[test]
fn secret_files_owned_by_others_are_refused() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to chown");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let rel = format!("secrets/{NS}/ps.yaml");
    put(
        d.path(),
        &rel,
        &pull_secret_yaml("ps", "{\"auths\":{}}"),
        0o600,
    );
    std::os::unix::fs::chown(d.path().join(&rel), Some(65534), Some(65534)).unwrap();
    let e = pull_secret(d.path(), &r(NS, "ps")).unwrap_err().to_string();
    assert!(e.contains("owned by uid 65534"), "{e}");
    assert!(e.contains("chown root:root"), "{e}");
}

#[test]
fn check_lists_every_unresolvable_reference() {
    let d = tempfile::tempdir().unwrap();
    put(
        d.path(),
        "configmaps/openshift-adp/ok.yaml",
        &cm("openshift-adp", "ok", "data: {}\n"),
        0o644,
    );
    let desired = Desired {
        api_version: ApiVersion::V1Alpha1,
        name: "upgrade".into(),
        namespace: NS.into(),
        stage: Stage::Prep,
        seed: Some(SeedRef {
            image: "quay.io/a/b:1".into(),
            version: "4.15.2".into(),
            pull_secret: Some(r(NS, "missing-ps")),
        }),
        additional_images: Some(r(NS, "imgs")),
        extra_manifests: vec![r(NS, "em")],
        oadp_content: vec![r("openshift-adp", "ok"), r("openshift-adp", "gone")],
        auto_rollback: AutoRollback::default(),
        image_cleanup: ImageCleanup::default(),
        manual_cleanup_done: false,
    };
    let problems = check(d.path(), &desired);
    assert_eq!(problems.len(), 4, "{problems:#?}");
    assert!(problems[0].starts_with(
        "spec.seedImageRef.pullSecretRef: Secret openshift-lifecycle-agent/missing-ps: "
    ));
    assert!(problems[1].starts_with("spec.additionalImages: ConfigMap"));
    assert!(problems[2].starts_with("spec.extraManifests: ConfigMap openshift-lifecycle-agent/em"));
    assert!(
        problems[3].contains("openshift-adp/gone"),
        "{}",
        problems[3]
    );
    assert!(problems.iter().all(|p| p.contains("does not exist")));
}
