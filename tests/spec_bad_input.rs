//! Bad and hostile desired documents: each is rejected with one line that names the YAML path
//! (and, where known, the line and column), and hostile ones are rejected quickly.

use std::time::{Duration, Instant};

use ibu::spec::load::MAX_DOCUMENT_BYTES;
use ibu::spec::{load_file, parse_str};

const V1: &str = "\
apiVersion: lca.openshift.io/v1
kind: ImageBasedUpgrade
metadata:
  name: upgrade
spec:
  stage: Prep
  seedImageRef:
    image: quay.io/example/seed:4.15.2
    version: 4.15.2
    pullSecretRef:
      name: seed-pull-secret
  autoRollbackOnFailure:
    initMonitorTimeoutSeconds: 1800
  extraManifests:
  - name: sno-extra-manifests
    namespace: openshift-lifecycle-agent
";

const V1ALPHA1: &str = "\
apiVersion: lca.openshift.io/v1alpha1
kind: ImageBasedUpgrade
metadata:
  name: example-upgrade
spec:
  stage: Prep
  seedImageRef:
    version: 4.15.2
    image: quay.io/example/seed:4.15.2
    pullSecretRef: seed-pull-secret
  additionalImages:
    name: \"\"
    namespace: \"\"
  autoRollbackOnFailure:
    disabledInitMonitor: \"true\"
  oadpContent:
  - name: oadp-cm-example
    namespace: openshift-adp
";

fn edit(base: &str, from: &str, to: &str) -> String {
    assert!(base.contains(from), "fixture has no {from:?}");
    base.replacen(from, to, 1)
}

fn with_annotation(key: &str, value: &str) -> String {
    edit(
        V1,
        "  name: upgrade\n",
        &format!("  name: upgrade\n  annotations:\n    {key}: {value}\n"),
    )
}

#[test]
fn the_bases_are_valid() {
    for base in [V1, V1ALPHA1] {
        let l = parse_str(base, "base.yaml").unwrap();
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    }
}

#[test]
fn bad_documents_are_rejected_with_a_one_line_message_naming_the_path() {
    let threshold = "image-cleanup.lca.openshift.io/disk-usage-threshold-percent";
    let threshold_path = format!("metadata.annotations[\"{threshold}\"]");
    // (document, the YAML path the message must start with after the origin, a fragment)
    #[rustfmt::skip]
    let cases: Vec<(String, &str, &str)> = vec![
        // unknown fields, with suggestions or the list of valid fields
        (edit(V1, "  stage: Prep", "  stag: Prep"), "spec.stag", "unknown field; did you mean \"stage\"? (line 6, column 3)"),
        (edit(V1, "    version:", "    verison:"), "spec.seedImageRef.verison", "did you mean \"version\"?"),
        (edit(V1, "    pullSecretRef:", "    pullSecret:"), "spec.seedImageRef.pullSecret", "did you mean \"pullSecretRef\"?"),
        (edit(V1, "    namespace: openshift", "    namespce: openshift"), "spec.extraManifests[0].namespce", "did you mean \"namespace\"?"),
        (edit(V1, "  name: upgrade", "  name: upgrade\n  labls: {}"), "metadata.labls", "did you mean \"labels\"?"),
        (edit(V1, "spec:\n", "spec:\n  frobnicate: true\n"), "spec.frobnicate", "unknown field; valid fields here: autoRollbackOnFailure, extraManifests, oadpContent, seedImageRef, stage"),
        (edit(V1, "kind: ImageBasedUpgrade\n", "kind: ImageBasedUpgrade\nstage: Prep\n"), "stage", "it belongs under spec: (spec.stage)"),
        (edit(V1, "spec:\n", "spec:\n  annotations: {}\n"), "spec.annotations", "it belongs under metadata: (metadata.annotations)"),
        // fields of the other API generation
        (edit(V1, "spec:\n", "spec:\n  additionalImages: {name: x, namespace: y}\n"), "spec.additionalImages", "removed in lca.openshift.io/v1"),
        (edit(V1, "  autoRollbackOnFailure:\n", "  autoRollbackOnFailure:\n    disabledInitMonitor: \"true\"\n"), "spec.autoRollbackOnFailure.disabledInitMonitor", "not in lca.openshift.io/v1; use the annotation metadata.annotations[\"auto-rollback-on-failure.lca.openshift.io/init-monitor\"]: \"Disabled\""),
        (edit(V1, "  autoRollbackOnFailure:\n", "  autoRollbackOnFailure:\n    disabledForPostRebootConfig: true\n"), "spec.autoRollbackOnFailure.disabledForPostRebootConfig", "auto-rollback-on-failure.lca.openshift.io/post-reboot-config"),
        (edit(V1, "  autoRollbackOnFailure:\n", "  autoRollbackOnFailure:\n    disabledForUpgradeCompletion: true\n"), "spec.autoRollbackOnFailure.disabledForUpgradeCompletion", "auto-rollback-on-failure.lca.openshift.io/upgrade-completion"),
        (edit(V1, "    pullSecretRef:\n      name: seed-pull-secret", "    pullSecretRef: seed-pull-secret"), "spec.seedImageRef.pullSecretRef", "lca.openshift.io/v1 takes a reference, not a plain name; write `pullSecretRef: {name: seed-pull-secret}`"),
        // wrong types
        (edit(V1, "Seconds: 1800", "Seconds: abc"), "spec.autoRollbackOnFailure.initMonitorTimeoutSeconds", "invalid type: string \"abc\", expected an integer (line 13, column 32)"),
        (edit(V1, "  extraManifests:\n  - name: sno-extra-manifests\n    namespace: openshift-lifecycle-agent\n", "  extraManifests: sno-extra-manifests\n"), "spec.extraManifests", "expected a list"),
        (edit(V1ALPHA1, "disabledInitMonitor: \"true\"", "disabledInitMonitor: \"yes\""), "spec.autoRollbackOnFailure.disabledInitMonitor", "expected true or false (or the strings \"true\" / \"false\")"),
        (edit(V1, "  - name: sno-extra-manifests\n    namespace: openshift-lifecycle-agent\n", "  - name: sno-extra-manifests\n"), "spec.extraManifests[0].namespace", "missing (required)"),
        (with_annotation(threshold, "60"), &threshold_path, "invalid type: integer `60`, expected a string (label and annotation values are strings; quote the value)"),
        // out of range
        (edit(V1, "Seconds: 1800", "Seconds: -5"), "spec.autoRollbackOnFailure.initMonitorTimeoutSeconds", "must be >= 0, got -5 (line 13, column 32)"),
        (with_annotation(threshold, "\"101\""), &threshold_path, "must be an integer from 0 to 100, got \"101\""),
        (with_annotation(threshold, "\"-1\""), &threshold_path, "must be an integer from 0 to 100, got \"-1\""),
        (with_annotation(threshold, "\"50.5\""), &threshold_path, "must be an integer from 0 to 100"),
        (with_annotation(threshold, "\"+50\""), &threshold_path, "must be an integer from 0 to 100"),
        (with_annotation(threshold, "abc"), &threshold_path, "must be an integer from 0 to 100, got \"abc\""),
        // seed reference
        (edit(V1, "quay.io/example/seed:4.15.2", "quay.io/Example/seed:4.15.2"), "spec.seedImageRef.image", "invalid image reference \"quay.io/Example/seed:4.15.2\": repository path \"Example/seed\" must be lowercase (line 8, column 12)"),
        (edit(V1, "quay.io/example/seed:4.15.2", "\"\""), "spec.seedImageRef.image", "missing or empty"),
        (edit(V1, "quay.io/example/seed:4.15.2", "quay.io/example/seed@sha256:abc"), "spec.seedImageRef.image", "sha256 needs 64 hex digits, got 3"),
        (edit(V1, "quay.io/example/seed:4.15.2", "oci://quay.io/seed"), "spec.seedImageRef.image", "unsupported transport \"oci://\""),
        (edit(V1, "version: 4.15.2", "version: 4.15"), "spec.seedImageRef.version", "must be a semantic version like \"4.15.2\", got \"4.15\""),
        (edit(V1, "version: 4.15.2", "version: v4.15.2"), "spec.seedImageRef.version", "must be a semantic version like \"4.15.2\", got \"v4.15.2\""),
        (edit(V1, "    version: 4.15.2\n", ""), "spec.seedImageRef.version", "missing or empty"),
        (edit(V1, "      name: seed-pull-secret", "      name: Seed_Pull"), "spec.seedImageRef.pullSecretRef.name", "Secret name must be a lowercase RFC 1123 subdomain"),
        (edit(V1ALPHA1, "pullSecretRef: seed-pull-secret", "pullSecretRef: <seed_pull_secret>"), "spec.seedImageRef.pullSecretRef", "\"<seed_pull_secret>\" is a placeholder; replace it"),
        (edit(V1, "  seedImageRef:\n    image: quay.io/example/seed:4.15.2\n    version: 4.15.2\n    pullSecretRef:\n      name: seed-pull-secret\n", ""), "spec.seedImageRef", "missing; spec.stage Prep needs the seed image and its version"),
        (edit(&edit(V1, "  seedImageRef:\n    image: quay.io/example/seed:4.15.2\n    version: 4.15.2\n    pullSecretRef:\n      name: seed-pull-secret\n", ""), "stage: Prep", "stage: Upgrade"), "spec.seedImageRef", "spec.stage Upgrade needs"),
        (edit(&edit(V1, "  seedImageRef:\n    image: quay.io/example/seed:4.15.2\n    version: 4.15.2\n    pullSecretRef:\n      name: seed-pull-secret\n", "  seedImageRef: {}\n"), "stage: Prep", "stage: Rollback"), "spec.seedImageRef", "spec.stage Rollback needs"),
        // references
        (edit(V1, "  - name: sno-extra-manifests", "  - name: ../../etc/shadow"), "spec.extraManifests[0].name", "must be a lowercase RFC 1123 subdomain"),
        (edit(V1ALPHA1, "  oadpContent:\n  - name: oadp-cm-example\n    namespace: openshift-adp", "  oadpContent:\n  - name: oadp-cm-example\n    namespace: Openshift_ADP"), "spec.oadpContent[0].namespace", "must be a lowercase RFC 1123 label"),
        (edit(V1ALPHA1, "    name: \"\"\n    namespace: \"\"", "    name: extra-images\n    namespace: \"\""), "spec.additionalImages.namespace", "missing or empty; required when additionalImages.name is set"),
        // header
        (edit(V1, "kind: ImageBasedUpgrade", "kind: SeedGenerator"), "kind", "expected ImageBasedUpgrade, got \"SeedGenerator\"; ibu reads only ImageBasedUpgrade documents"),
        (edit(V1, "kind: ImageBasedUpgrade", "kind: imagebasedupgrade"), "kind", "kinds are case-sensitive"),
        (edit(V1, "kind: ImageBasedUpgrade\n", ""), "kind", "missing; expected ImageBasedUpgrade"),
        (edit(V1, "apiVersion: lca.openshift.io/v1\n", ""), "apiVersion", "missing; expected lca.openshift.io/v1 or lca.openshift.io/v1alpha1"),
        (edit(V1, "lca.openshift.io/v1\n", "lca.openshift.io/v2\n"), "apiVersion", "unsupported apiVersion \"lca.openshift.io/v2\"; expected lca.openshift.io/v1 or lca.openshift.io/v1alpha1"),
        (edit(V1, "lca.openshift.io/v1\n", "v1\n"), "apiVersion", "unsupported apiVersion \"v1\""),
        (edit(V1, "  name: upgrade", "  name: example-upgrade"), "metadata.name", "ibu is a singleton, metadata.name must be 'upgrade', got \"example-upgrade\""),
        (edit(V1, "metadata:\n  name: upgrade\n", ""), "metadata.name", "ibu is a singleton, metadata.name must be 'upgrade', but it is missing"),
        (edit(V1ALPHA1, "  name: example-upgrade\n", "  namespace: openshift-lifecycle-agent\n"), "metadata.name", "missing; every object needs a name"),
        (edit(V1, "  name: upgrade\n", "  name: upgrade\n  namespace: Not_A_Namespace\n"), "metadata.namespace", "must be a lowercase RFC 1123 label"),
        // stage
        (edit(V1, "stage: Prep", "stage: Prepp"), "spec.stage", "unknown stage \"Prepp\"; did you mean \"Prep\"? (expected one of Idle, Prep, Upgrade, Rollback) (line 6, column 10)"),
        (edit(V1, "stage: Prep", "stage: prep"), "spec.stage", "did you mean \"Prep\"?"),
        (edit(V1, "stage: Prep", "stage: Finish"), "spec.stage", "unknown stage \"Finish\" (expected one of Idle, Prep, Upgrade, Rollback)"),
        (edit(V1, "  stage: Prep\n", ""), "spec.stage", "missing; expected one of Idle, Prep, Upgrade, Rollback"),
        (edit(V1, "stage: Prep", "stage: [Prep]"), "spec.stage", "must be a string, got a list"),
        (V1[..V1.find("spec:").unwrap()].to_string(), "spec", "missing; an ImageBasedUpgrade needs at least spec.stage"),
        // YAML structure
        (edit(V1, "  stage: Prep\n", "  stage: Prep\n  stage: Idle\n"), "spec.stage", "duplicate key (it appears more than once in the same mapping) (line 7, column 3)"),
        (edit(V1, "  stage: Prep", "  stage: !custom Prep"), "spec.stage", "YAML tags (like !foo or !!binary) are not supported"),
        (edit(V1, "  stage: Prep", "  stage: Prep\n  7: x"), "spec", "mapping keys must be strings, got number 7; quote the key"),
    ];
    let mut failures = Vec::new();
    for (doc, path, fragment) in &cases {
        let e = match parse_str(doc, "upgrade.yaml") {
            Ok(_) => {
                failures.push(format!("accepted, wanted {path}: {fragment}"));
                continue;
            }
            Err(e) => e,
        };
        let m = &e.message;
        let ok = m.starts_with(&format!("upgrade.yaml: {path}: "))
            && m.contains(fragment)
            && !m.contains('\n')
            && e.path.as_deref() == Some(*path);
        if !ok {
            failures.push(format!("wanted {path}: …{fragment}…\n         got {m}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n  {}",
        failures.len(),
        cases.len(),
        failures.join("\n  ")
    );
}

#[test]
fn document_level_problems_are_one_line_without_a_path() {
    #[rustfmt::skip]
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"".to_vec(), "upgrade.yaml: is empty; expected a YAML document"),
        (b"# nothing\n".to_vec(), "is empty"),
        (b"- a\n- b\n".to_vec(), "the document must be a mapping (an ImageBasedUpgrade), got a list"),
        (b"just a string\n".to_vec(), "got a string"),
        (format!("{V1}---\n{V1}").into_bytes(), "contains more than one YAML document"),
        (b"apiVersion: [\n".to_vec(), "is not valid YAML: "),
        (b"a: \"unterminated\n".to_vec(), "is not valid YAML: "),
        (b"\x7fELF\x02\x01\x01\0\0\0\0".to_vec(), "contains a NUL byte at offset 7: this looks like a binary file, not YAML"),
        (b"apiVersion: \xc3\x28\n".to_vec(), "is not UTF-8 text (invalid byte 0xc3 at offset 12)"),
        (b"apiVersion: v1\x1b[0m\n".to_vec(), "contains control character U+001B"),
    ];
    for (doc, fragment) in cases {
        let e = ibu::spec::load::parse_bytes(&doc, "upgrade.yaml").unwrap_err();
        assert!(
            e.message.contains(fragment),
            "{:?}: {}",
            String::from_utf8_lossy(&doc),
            e.message
        );
        assert!(e.message.starts_with("upgrade.yaml: "), "{}", e.message);
        assert!(!e.message.contains('\n'), "{}", e.message);
        assert_eq!(e.path, None, "{}", e.message);
    }
}

#[test]
fn warnings_for_things_that_are_accepted_but_probably_not_meant() {
    let doc = with_annotation(
        "auto-rollback-on-failure.lca.openshift.io/init-montor",
        "Disabled",
    );
    let l = parse_str(&doc, "u.yaml").unwrap();
    assert_eq!(l.warnings.len(), 1, "{:?}", l.warnings);
    assert!(l.warnings[0].starts_with("u.yaml: metadata.annotations[\"auto-rollback-on-failure.lca.openshift.io/init-montor\"]: unknown annotation, ignored; did you mean \"auto-rollback-on-failure.lca.openshift.io/init-monitor\"?"), "{}", l.warnings[0]);
    assert!(l.desired.auto_rollback.init_monitor);

    let doc = with_annotation("image-cleanup.lca.openshift.io/on-prep", "disabled");
    let l = parse_str(&doc, "u.yaml").unwrap();
    assert!(l.warnings[0].contains("value \"disabled\" is not \"Disabled\" (the only value that counts), so image cleanup stays enabled"), "{:?}", l.warnings);
    assert!(l.desired.image_cleanup.on_prep);

    let doc = with_annotation("image-cleanup.lca.openshlft.io/on-prep", "Disabled");
    let l = parse_str(&doc, "u.yaml").unwrap();
    assert!(
        l.warnings[0].contains("did you mean \"image-cleanup.lca.openshift.io/on-prep\"?"),
        "{:?}",
        l.warnings
    );

    // Other annotations, in LCA's domains or not, are nobody's business.
    for key in [
        "lca.openshift.io/trigger-reconcile",
        "lca.openshift.io/recert-image",
        "example.com/on-prep",
    ] {
        let doc = with_annotation(key, "x");
        assert!(
            parse_str(&doc, "u.yaml").unwrap().warnings.is_empty(),
            "{key}"
        );
    }

    let doc = edit(
        V1,
        "    namespace: openshift-lifecycle-agent\n",
        "    namespace: openshift-lifecycle-agent\n  - name: sno-extra-manifests\n    namespace: openshift-lifecycle-agent\n",
    );
    let l = parse_str(&doc, "u.yaml").unwrap();
    assert!(l.warnings[0].contains("spec.extraManifests[1]: ConfigMap openshift-lifecycle-agent/sno-extra-manifests is listed more than once"), "{:?}", l.warnings);
    assert_eq!(l.desired.extra_manifests.len(), 1);
}

#[test]
fn lenient_where_the_docs_are() {
    // Booleans for the v1alpha1 disabled* fields, numbers for the version, `{name}` for the
    // v1alpha1 pull secret, and annotations in v1alpha1 too.
    let doc = edit(
        V1ALPHA1,
        "disabledInitMonitor: \"true\"",
        "disabledInitMonitor: true\n    disabledForUpgradeCompletion: \"false\"",
    );
    let doc = edit(
        &doc,
        "pullSecretRef: seed-pull-secret",
        "pullSecretRef: {name: seed-pull-secret}",
    );
    let doc = edit(
        &doc,
        "  name: example-upgrade\n",
        "  name: example-upgrade\n  annotations:\n    auto-rollback-on-failure.lca.openshift.io/upgrade-completion: Disabled\n",
    );
    let l = parse_str(&doc, "u.yaml").unwrap();
    let ar = &l.desired.auto_rollback;
    assert!(!ar.init_monitor && !ar.upgrade_completion && ar.post_reboot_config);
    assert_eq!(
        l.desired.seed.unwrap().pull_secret.unwrap().name,
        "seed-pull-secret"
    );
    // Windows line endings and a byte-order mark, as some editors write them.
    let crlf = format!("\u{feff}{}", V1.replace('\n', "\r\n"));
    assert_eq!(
        parse_str(&crlf, "u").unwrap().desired,
        parse_str(V1, "u").unwrap().desired
    );
    // 0 means the default.
    let doc = edit(V1, "Seconds: 1800", "Seconds: 0");
    assert_eq!(
        parse_str(&doc, "u")
            .unwrap()
            .desired
            .auto_rollback
            .init_monitor_timeout_seconds,
        1800
    );
}

/// Hostile inputs must be refused by a guard, not after minutes of parsing. The bound only
/// catches that pathological case (tests share the CPU; it is not a performance claim); the
/// assertions on the error say which guard fired.
fn quickly<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let r = f();
    let took = t.elapsed();
    assert!(took < Duration::from_secs(20), "{what} took {took:?}");
    r
}

#[test]
fn hostile_files_are_rejected_quickly() {
    let d = tempfile::tempdir().unwrap();

    // A sparse 10 GiB file: only MAX_DOCUMENT_BYTES + 1 bytes are read.
    let big = d.path().join("big.yaml");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(10 << 30)
        .unwrap();
    let e = quickly("10 GiB file", || load_file(&big)).unwrap_err();
    assert!(
        e.message
            .ends_with("big.yaml: is larger than the 1 MiB limit for this file"),
        "{e}"
    );

    // Just over the limit, as text.
    let over = format!("{V1}#{}\n", "x".repeat(MAX_DOCUMENT_BYTES));
    let e = quickly("oversized text", || parse_str(&over, "u")).unwrap_err();
    assert!(e.message.contains("larger than the 1 MiB limit"), "{e}");

    // Binary garbage (a pseudo-random 1 MiB blob).
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let garbage: Vec<u8> = (0..MAX_DOCUMENT_BYTES)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    let e = quickly("garbage", || ibu::spec::load::parse_bytes(&garbage, "u")).unwrap_err();
    assert!(
        e.message.contains("NUL byte") || e.message.contains("not UTF-8"),
        "{e}"
    );

    // Billion laughs.
    let mut bomb = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..12 {
        bomb.push_str(&format!(
            "a{i}: &a{i} [{}]\n",
            vec![format!("*a{}", i - 1); 10].join(", ")
        ));
    }
    let e = quickly("billion laughs", || parse_str(&bomb, "u")).unwrap_err();
    assert!(
        e.message.contains("alias expansion") || e.message.contains("repetition limit"),
        "{e}"
    );

    // One wide anchor referenced many times (passes serde_yaml's own alias limit).
    let wide = vec!["x"; 20_000].join(",");
    let mut bomb = format!("w: &w [{wide}]\nr:\n");
    for _ in 0..2_000 {
        bomb.push_str("- *w\n");
    }
    let e = quickly("wide anchor", || parse_str(&bomb, "u")).unwrap_err();
    assert!(e.message.contains("alias expansion bomb"), "{e}");

    // Deep nesting, flow and block.
    for deep in [
        "[".repeat(500_000),
        "{a: ".repeat(250_000),
        (0..400).map(|i| format!("{}a:\n", " ".repeat(i))).collect(),
    ] {
        let e = quickly("deep nesting", || parse_str(&deep, "u")).unwrap_err();
        assert!(e.message.contains("nests deeper than 64 levels"), "{e}");
    }

    // A FIFO would block a plain open.
    let fifo = d.path().join("fifo.yaml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let e = quickly("fifo", || load_file(&fifo)).unwrap_err();
    assert!(e.message.contains("is not a regular file (a FIFO)"), "{e}");

    let e = load_file(d.path()).unwrap_err();
    assert!(e.message.contains("a directory"), "{e}");
}
