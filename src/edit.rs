//! Editing the desired-state file in place, keeping the user's comments and layout.
//!
//! `ibu set-stage` is the node's `oc patch ... '{"spec": {"stage": ...}}'`. Re-serialising the
//! YAML would drop every comment (and the docs' examples are full of commented-out options), so
//! the edit replaces only the value of `spec.stage` in the text. The result is re-parsed and
//! must say the new stage, or nothing is written.

use anyhow::{Result, bail};

use crate::spec::Stage;

/// Leading spaces of a line.
fn indent(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

/// A line that carries no YAML content.
fn is_blank_or_comment(line: &str) -> bool {
    let t = line.trim();
    t.is_empty() || t.starts_with('#')
}

/// The value part of `key: value  # comment` split from its comment.
fn split_comment(rest: &str) -> (&str, &str) {
    // A `#` starts a comment only after whitespace; stage values never contain quotes with '#'.
    // Keep the whitespace between value and comment with the comment.
    match rest.find(" #") {
        Some(i) => {
            let value = rest[..i].trim_end();
            (value, &rest[value.len()..])
        }
        None => (rest, ""),
    }
}

/// Return `text` with `spec.stage` set to `stage`. Block-style YAML only: a flow-style `spec`
/// (`spec: {stage: Idle}`) is refused rather than rewritten.
pub fn set_stage_in_text(text: &str, stage: Stage) -> Result<String> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let spec_at = lines.iter().position(|l| {
        let t = l.trim_end();
        indent(t) == 0
            && (t == "spec:" || t.starts_with("spec:") && t[5..].trim_start().starts_with('#'))
    });
    let mut out: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
    match spec_at {
        None => {
            if lines
                .iter()
                .any(|l| indent(l) == 0 && l.starts_with("spec:"))
            {
                bail!("spec is written in flow style; edit spec.stage by hand");
            }
            if !text.is_empty() && !text.ends_with('\n') {
                out.push("\n".into());
            }
            out.push(format!("spec:\n  stage: {stage}\n"));
        }
        Some(i) => {
            let body: Vec<usize> = (i + 1..lines.len())
                .take_while(|&j| is_blank_or_comment(lines[j]) || indent(lines[j]) > 0)
                .collect();
            let child_indent = body
                .iter()
                .find(|&&j| !is_blank_or_comment(lines[j]))
                .map(|&j| indent(lines[j]))
                .unwrap_or(2);
            let stage_line = body.iter().copied().find(|&j| {
                let l = lines[j];
                indent(l) == child_indent && l.trim_start().starts_with("stage:")
            });
            match stage_line {
                Some(j) => {
                    let l = lines[j];
                    let nl = if l.ends_with('\n') { "\n" } else { "" };
                    let rest = &l.trim_end_matches('\n')[child_indent + "stage:".len()..];
                    let (_, comment) = split_comment(rest);
                    out[j] = format!("{}stage: {stage}{comment}{nl}", " ".repeat(child_indent));
                }
                None => {
                    out.insert(
                        i + 1,
                        format!("{}stage: {stage}\n", " ".repeat(child_indent)),
                    );
                }
            }
        }
    }
    Ok(out.concat())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_only_the_stage_value() {
        let doc = "\
apiVersion: lca.openshift.io/v1alpha1
kind: ImageBasedUpgrade
metadata:
  name: example-upgrade
spec:
  stage: Idle   # the desired stage
  seedImageRef:
    version: 4.15.2
    image: quay.io/x/seed:4.15.2
  autoRollbackOnFailure: {}
#    disabledForPostRebootConfig: \"true\"
  oadpContent:
  - name: oadp-cm-example
    namespace: openshift-adp
";
        let got = set_stage_in_text(doc, Stage::Prep).unwrap();
        assert_eq!(got, doc.replace("stage: Idle   #", "stage: Prep   #"));
    }

    #[test]
    fn nested_stage_keys_are_not_touched() {
        let doc = "spec:\n  seedImageRef:\n    stage: nope\n  stage: Idle\n";
        assert_eq!(
            set_stage_in_text(doc, Stage::Upgrade).unwrap(),
            "spec:\n  seedImageRef:\n    stage: nope\n  stage: Upgrade\n"
        );
    }

    #[test]
    fn inserts_a_missing_stage_and_a_missing_spec() {
        assert_eq!(
            set_stage_in_text("spec:\n    seedImageRef: {}\n", Stage::Prep).unwrap(),
            "spec:\n    stage: Prep\n    seedImageRef: {}\n"
        );
        assert_eq!(
            set_stage_in_text("kind: ImageBasedUpgrade", Stage::Idle).unwrap(),
            "kind: ImageBasedUpgrade\nspec:\n  stage: Idle\n"
        );
    }

    #[test]
    fn flow_style_is_refused() {
        let e = set_stage_in_text("spec: {stage: Idle}\n", Stage::Prep).unwrap_err();
        assert!(e.to_string().contains("flow style"), "{e}");
    }
}
