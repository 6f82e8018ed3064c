//! The ImageBasedUpgrade examples of the product docs (and our v1 fixtures) read into the
//! expected `Desired`, and their references resolve against the fixture drop-in tree.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use ibu::spec::refs;
use ibu::spec::{
    ApiVersion, AutoRollback, DEFAULT_NAMESPACE, Desired, ImageCleanup, ObjectRef, SeedRef, Stage,
    load_file, parse_str,
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/desired")
        .join(name)
}

fn obj(namespace: &str, name: &str) -> ObjectRef {
    ObjectRef {
        name: name.into(),
        namespace: namespace.into(),
    }
}

fn docs_idle(seed: Option<SeedRef>, oadp: Vec<ObjectRef>) -> Desired {
    Desired {
        api_version: ApiVersion::V1Alpha1,
        name: "example-upgrade".into(),
        namespace: DEFAULT_NAMESPACE.into(),
        stage: Stage::Idle,
        seed,
        additional_images: None,
        extra_manifests: vec![],
        oadp_content: oadp,
        auto_rollback: AutoRollback::default(),
        image_cleanup: ImageCleanup::default(),
        manual_cleanup_done: false,
    }
}

/// A copy of the fixture drop-in tree with Secrets at mode 0600 (git cannot store it).
fn drop_in_tree() -> tempfile::TempDir {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            let target = to.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                copy(&e.path(), &target);
            } else {
                std::fs::copy(e.path(), &target).unwrap();
                let mode = if target.to_string_lossy().contains("/secrets/") {
                    0o600
                } else {
                    0o644
                };
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode)).unwrap();
            }
        }
    }
    let d = tempfile::tempdir().unwrap();
    copy(&fixture("etc-ibu"), d.path());
    d
}

fn assert_idle_warnings(warnings: &[String], fields: &[&str]) {
    assert_eq!(warnings.len(), fields.len(), "{warnings:#?}");
    for (w, f) in warnings.iter().zip(fields) {
        assert!(w.contains(&format!(": {f}: ")), "{w} should be about {f}");
        assert!(w.contains("only a warning while spec.stage is Idle"), "{w}");
        assert!(!w.contains('\n'));
    }
}

#[test]
fn docs_overview_example_is_an_idle_v1alpha1_document_with_placeholders() {
    let l = load_file(&fixture("docs-overview-idle.yaml")).unwrap();
    let seed = SeedRef {
        image: "<seed_container_image>".into(),
        version: "<target_version>".into(),
        pull_secret: Some(obj(DEFAULT_NAMESPACE, "<seed_pull_secret>")),
    };
    assert_eq!(
        l.desired,
        docs_idle(Some(seed), vec![obj("openshift-adp", "oadp-cm-example")])
    );
    assert_idle_warnings(
        &l.warnings,
        &[
            "spec.seedImageRef.image",
            "spec.seedImageRef.version",
            "spec.seedImageRef.pullSecretRef",
        ],
    );
    assert!(
        l.warnings[0].contains("(line 9, column 12)"),
        "{}",
        l.warnings[0]
    );
}

#[test]
fn docs_prepare_example_has_a_real_version() {
    let l = load_file(&fixture("docs-prepare-edit-cr.yaml")).unwrap();
    let seed = SeedRef {
        image: "<seed_container_image>".into(),
        version: "4.15.2".into(),
        pull_secret: Some(obj(DEFAULT_NAMESPACE, "<seed_pull_secret>")),
    };
    assert_eq!(
        l.desired,
        docs_idle(Some(seed), vec![obj("openshift-adp", "oadp-cm-example")])
    );
    assert_idle_warnings(
        &l.warnings,
        &["spec.seedImageRef.image", "spec.seedImageRef.pullSecretRef"],
    );
}

#[test]
fn docs_rollback_example_has_no_pull_secret() {
    let l = load_file(&fixture("docs-rollback-autorollback.yaml")).unwrap();
    let seed = SeedRef {
        image: "<seed_container_image>".into(),
        version: "4.15.2".into(),
        pull_secret: None,
    };
    assert_eq!(l.desired, docs_idle(Some(seed), vec![]));
    assert_idle_warnings(&l.warnings, &["spec.seedImageRef.image"]);
}

#[test]
fn docs_placeholders_are_errors_once_the_stage_needs_the_seed() {
    let text = std::fs::read_to_string(fixture("docs-prepare-edit-cr.yaml")).unwrap();
    let text = text.replace("stage: Idle", "stage: Prep");
    let e = parse_str(&text, "upgrade.yaml").unwrap_err();
    assert!(
        e.message.starts_with(
            "upgrade.yaml: spec.seedImageRef.image: \"<seed_container_image>\" is a placeholder; replace it"
        ),
        "{e}"
    );
    assert!(e.message.ends_with("(line 9, column 12)"), "{e}");
}

#[test]
fn docs_example_with_its_comments_enabled() {
    let l = load_file(&fixture("v1alpha1-autorollback-uncommented.yaml")).unwrap();
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    assert_eq!(
        l.desired,
        Desired {
            api_version: ApiVersion::V1Alpha1,
            name: "example-upgrade".into(),
            namespace: DEFAULT_NAMESPACE.into(),
            stage: Stage::Prep,
            seed: Some(SeedRef {
                image: "quay.io/example/seed-container-image:4.15.2".into(),
                version: "4.15.2".into(),
                pull_secret: Some(obj(DEFAULT_NAMESPACE, "seed-pull-secret")),
            }),
            additional_images: Some(obj(DEFAULT_NAMESPACE, "additional-images")),
            extra_manifests: vec![obj(DEFAULT_NAMESPACE, "sno-extra-manifests")],
            oadp_content: vec![obj("openshift-adp", "oadp-cm-example")],
            auto_rollback: AutoRollback {
                init_monitor_timeout_seconds: 1800,
                init_monitor: false,
                post_reboot_config: false,
                upgrade_completion: false,
            },
            image_cleanup: ImageCleanup::default(),
            manual_cleanup_done: false,
        }
    );
    let tree = drop_in_tree();
    assert_eq!(refs::check(tree.path(), &l.desired), Vec::<String>::new());
    let images =
        refs::additional_images(tree.path(), &obj(DEFAULT_NAMESPACE, "additional-images")).unwrap();
    assert_eq!(images.len(), 2);
}

#[test]
fn v1_with_every_annotation() {
    let l = load_file(&fixture("v1-all-annotations.yaml")).unwrap();
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    assert_eq!(
        l.desired,
        Desired {
            api_version: ApiVersion::V1,
            name: "upgrade".into(),
            namespace: DEFAULT_NAMESPACE.into(),
            stage: Stage::Upgrade,
            seed: Some(SeedRef {
                image: "docker://quay.io/example/seed-container-image:4.15.2".into(),
                version: "4.15.2".into(),
                pull_secret: Some(obj(DEFAULT_NAMESPACE, "seed-pull-secret")),
            }),
            additional_images: None,
            extra_manifests: vec![obj(DEFAULT_NAMESPACE, "sno-extra-manifests")],
            oadp_content: vec![obj("openshift-adp", "oadp-cm-example")],
            auto_rollback: AutoRollback {
                init_monitor_timeout_seconds: 600,
                init_monitor: false,
                post_reboot_config: false,
                upgrade_completion: false,
            },
            image_cleanup: ImageCleanup {
                on_prep: false,
                disk_usage_threshold_percent: 65,
            },
            manual_cleanup_done: true,
        }
    );
    let tree = drop_in_tree();
    assert_eq!(refs::check(tree.path(), &l.desired), Vec::<String>::new());
    let ps = refs::pull_secret(tree.path(), &obj(DEFAULT_NAMESPACE, "seed-pull-secret")).unwrap();
    assert_eq!(ps.registries, vec!["quay.io".to_string()]);
}

#[test]
fn v1_oc_get_output_ignores_status_with_a_warning() {
    let l = load_file(&fixture("v1-oc-get-output.yaml")).unwrap();
    assert_eq!(l.warnings.len(), 1, "{:?}", l.warnings);
    assert!(
        l.warnings[0].contains(": status: ignored"),
        "{}",
        l.warnings[0]
    );
    assert_eq!(l.desired.stage, Stage::Upgrade);
    assert_eq!(l.desired.api_version, ApiVersion::V1);
    let seed = l.desired.seed.as_ref().unwrap();
    assert_eq!(seed.version, "4.15.2");
    assert_eq!(seed.pull_secret, None);
    let tree = drop_in_tree();
    assert_eq!(refs::check(tree.path(), &l.desired), Vec::<String>::new());
}

#[test]
fn v1_ibgu_spec_with_placeholder_secret() {
    let l = load_file(&fixture("v1-ibgu-ibuspec.yaml")).unwrap();
    assert_eq!(l.desired.seed.as_ref().unwrap().version, "4.20.0-rc.1");
    assert_idle_warnings(&l.warnings, &["spec.seedImageRef.pullSecretRef.name"]);
    let tree = drop_in_tree();
    let problems = refs::check(tree.path(), &l.desired);
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(problems[0].contains("invalid reference: name must be a lowercase RFC 1123"));
}
