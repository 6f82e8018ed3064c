use super::*;
use std::time::{Duration, Instant};

/// The guards turn inputs that cost minutes (or unbounded memory) into an early error; the
/// bound only catches that pathological case, it is not a performance claim (tests share the
/// CPU with everything else; benchmarks measure speed). The assertions that matter are on
/// which guard fired.
fn fast<T>(f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let r = f();
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "took {:?}",
        t.elapsed()
    );
    r
}

#[test]
fn path_display() {
    let p = YamlPath::root()
        .key("metadata")
        .key("annotations")
        .key("image-cleanup.lca.openshift.io/on-prep");
    assert_eq!(
        p.to_string(),
        "metadata.annotations[\"image-cleanup.lca.openshift.io/on-prep\"]"
    );
    let p = YamlPath::dotted("spec.oadpContent").index(2).key("name");
    assert_eq!(p.to_string(), "spec.oadpContent[2].name");
}

#[test]
fn parses_a_plain_document() {
    let v = parse("a: 1\nb: [x, {c: null}]\n").unwrap();
    assert_eq!(v["b"][1]["c"], Value::Null);
}

#[test]
fn duplicate_keys_are_rejected_with_their_line() {
    let e = parse("spec:\n  stage: Idle\n  stage: Prep\n").unwrap_err();
    assert_eq!(e.path.as_ref().unwrap().to_string(), "spec.stage");
    assert!(e.message.contains("duplicate key"), "{e:?}");
    assert_eq!(e.location, Some((3, 3)));
}

#[test]
fn multiple_documents_are_rejected() {
    let e = parse("a: 1\n---\nb: 2\n").unwrap_err();
    assert!(e.message.contains("more than one YAML document"), "{e:?}");
}

#[test]
fn leading_document_marker_is_fine() {
    assert!(parse("---\na: 1\n").is_ok());
}

#[test]
fn empty_documents_are_rejected() {
    for t in ["", "# just a comment\n", "---\n", "~\n"] {
        let e = parse(t).unwrap_err();
        assert!(e.message.contains("is empty"), "{t:?}: {e:?}");
    }
}

#[test]
fn tags_merge_keys_and_odd_keys_are_rejected() {
    let e = parse("a: !foo bar\n").unwrap_err();
    assert!(e.message.contains("tags"), "{e:?}");
    let e = parse("base: &b {x: 1}\nc:\n  <<: *b\n").unwrap_err();
    assert!(e.message.contains("merge keys"), "{e:?}");
    let e = parse("1: x\n").unwrap_err();
    assert!(e.message.contains("keys must be strings"), "{e:?}");
    let e = parse("? [a]\n: x\n").unwrap_err();
    assert!(e.message.contains("keys must be strings"), "{e:?}");
}

#[test]
fn syntax_errors_name_a_line() {
    let e = parse("a: [1, 2\nb: 3\n").unwrap_err();
    assert!(e.message.starts_with("is not valid YAML"), "{e:?}");
    assert!(e.message.contains("line"), "{e:?}");
    assert!(!e.render().contains('\n'));
}

#[test]
fn billion_laughs_is_rejected_quickly() {
    let mut s = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..10 {
        let refs = vec![format!("*a{}", i - 1); 10].join(", ");
        s.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    let e = fast(|| parse(&s)).unwrap_err();
    assert!(
        e.message.contains("alias expansion") || e.message.contains("repetition"),
        "{e:?}"
    );
}

#[test]
fn one_wide_anchor_referenced_often_is_rejected_quickly() {
    // Passes serde_yaml's own jump limit (few aliases, many events) but would expand to
    // 30 million nodes.
    let wide = vec!["x"; 30_000].join(", ");
    let mut s = format!("w: &w [{wide}]\nrefs:\n");
    for _ in 0..1000 {
        s.push_str("- *w\n");
    }
    assert!(s.len() < MAX_DOCUMENT_BYTES);
    let e = fast(|| parse(&s)).unwrap_err();
    assert!(e.message.contains("alias expansion"), "{e:?}");
}

#[test]
fn deep_nesting_is_rejected_quickly() {
    let n = 200_000;
    let s = format!("{}{}", "[".repeat(n), "]".repeat(n));
    let e = fast(|| parse(&s)).unwrap_err();
    assert!(
        e.message.contains("nests deeper") || e.message.contains("recursion"),
        "{e:?}"
    );
    let mut s = String::new();
    for i in 0..100 {
        s.push_str(&" ".repeat(i));
        s.push_str("a:\n");
    }
    let e = fast(|| parse(&s)).unwrap_err();
    assert!(e.message.contains("nests deeper"), "{e:?}");
}

#[test]
fn huge_flat_documents_are_rejected_quickly() {
    let s = format!("[{}]", vec!["a"; 500_000].join(","));
    let e = fast(|| parse(&s)).unwrap_err();
    assert!(e.message.contains("more than 100000 YAML nodes"), "{e:?}");
}

#[test]
fn deep_flow_mappings_are_rejected_quickly() {
    // libyaml's scanner is quadratic in flow depth: without the streaming pre-scan this
    // input takes minutes.
    let s = "{a: ".repeat(250_000);
    let e = fast(|| parse(&s)).unwrap_err();
    assert!(e.message.contains("nests deeper than 64"), "{e:?}");
    assert_eq!(e.location, Some((1, 257)));
}

#[test]
fn binary_and_non_utf8_are_rejected() {
    let e = decode(b"apiVersion: v1\n\0\0\0").unwrap_err();
    assert!(e.message.contains("NUL byte at offset 15"), "{e:?}");
    let e = decode(b"a: \xff\xfe\n").unwrap_err();
    assert!(e.message.contains("not UTF-8"), "{e:?}");
    assert!(e.message.contains("0xff at offset 3"), "{e:?}");
    let e = decode(b"a: b\nc: \x07\n").unwrap_err();
    assert!(e.message.contains("U+0007"), "{e:?}");
    assert_eq!(e.location, Some((2, 4)));
    assert_eq!(decode("\u{feff}a: 1\n".as_bytes()).unwrap(), "a: 1\n");
    assert!(decode(b"a:\tb\r\n").is_ok());
}

#[test]
fn reading_stops_at_the_limit() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("big");
    std::fs::write(&p, vec![b'a'; 2048]).unwrap();
    let (f, _) = open_regular(&p).unwrap();
    assert!(matches!(
        read_limited(f, 1024),
        Err(ReadError::TooLarge(1024))
    ));
    let (f, _) = open_regular(&p).unwrap();
    assert_eq!(read_limited(f, 4096).unwrap().len(), 2048);
    let e = open_regular(d.path()).unwrap_err().to_string();
    assert!(e.contains("directory"), "{e}");
}

#[test]
fn fifo_does_not_hang() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("fifo");
    nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let e = fast(|| open_regular(&p)).unwrap_err().to_string();
    assert!(e.contains("FIFO"), "{e}");
}

#[test]
fn locate_finds_keys_and_values() {
    let text = "a:\n  b: 1\n  list:\n  - x\n  - {c: 2}\n";
    let p = YamlPath::dotted("a.b");
    assert_eq!(locate(text, &p, true), Some((2, 3)));
    assert_eq!(locate(text, &p, false), Some((2, 6)));
    let p = YamlPath::dotted("a.list").index(1).key("c");
    assert_eq!(locate(text, &p, true), Some((5, 6)));
    assert_eq!(locate(text, &YamlPath::dotted("a.nope"), true), None);
}

#[test]
fn one_line_collapses_breaks() {
    assert_eq!(one_line("a\n  b\r\nc"), "a b c");
}
