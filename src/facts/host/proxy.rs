//! Whether an HTTP(S) proxy is configured for the host's services.
//!
//! LCA refuses a seed whose cluster has a proxy when the target has none, or the reverse: a
//! proxy is baked into what the seed's services expect. ibu needs the same yes/no, decided by one
//! written rule instead of a cluster object:
//!
//! A proxy is configured when any of `HTTP_PROXY`, `HTTPS_PROXY`, `http_proxy`, `https_proxy`
//! ends up with a non-empty value in either
//! 1. `<etc>/environment` (`KEY=VALUE` lines, optional `export ` and quotes; the last assignment
//!    of a key wins), or
//! 2. systemd's manager environment: `DefaultEnvironment=` in the `[Manager]` section of
//!    `<etc>/systemd/system.conf`, then of `<etc>/systemd/system.conf.d/*.conf` in file-name order
//!    (assignments accumulate, a later one of the same key wins, an empty `DefaultEnvironment=`
//!    clears everything before it) — the environment every system service (the container runtime,
//!    the kubelet, ibu's own pulls) inherits.
//!
//! `NO_PROXY` alone is not a proxy. Only `/etc` is read: proxies are site configuration and
//! never shipped in `/usr`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};

/// The variables whose presence means "a proxy is configured".
pub const PROXY_VARS: [&str; 4] = ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"];

/// The proxy rule of this module's docs, applied to the configuration under `etc`.
pub fn proxy_configured(etc: &Path) -> Result<bool> {
    let env_file = etc.join("environment");
    if let Some(text) = read_optional(&env_file)? {
        let mut env = BTreeMap::new();
        for (k, v) in parse_environment_file(&text) {
            env.insert(k, v);
        }
        if has_proxy(&env) {
            return Ok(true);
        }
    }

    let mut manager = BTreeMap::new();
    let system_conf = etc.join("systemd/system.conf");
    if let Some(text) = read_optional(&system_conf)? {
        apply_default_environment(&mut manager, &text);
    }
    let dropin_dir = etc.join("systemd/system.conf.d");
    let mut dropins = Vec::new();
    match std::fs::read_dir(&dropin_dir) {
        Ok(entries) => {
            for entry in entries {
                let entry = entry.with_context(|| format!("listing {}", dropin_dir.display()))?;
                if entry.file_name().to_string_lossy().ends_with(".conf") {
                    dropins.push(entry.path());
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("listing {}", dropin_dir.display())),
    }
    dropins.sort();
    for p in dropins {
        if let Some(text) = read_optional(&p)? {
            apply_default_environment(&mut manager, &text);
        }
    }
    Ok(has_proxy(&manager))
}

fn read_optional(p: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(p) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
    }
}

fn has_proxy(env: &BTreeMap<String, String>) -> bool {
    PROXY_VARS
        .iter()
        .any(|k| env.get(*k).is_some_and(|v| !v.trim().is_empty()))
}

/// `KEY=VALUE` assignments of an environment file such as `/etc/environment`, in order.
/// Comments, blank lines and lines that are not assignments are skipped; `export ` is allowed;
/// one level of matching single or double quotes around the value is removed.
fn parse_environment_file(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line
            .strip_prefix("export ")
            .map(str::trim_start)
            .unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let k = k.trim();
        if !is_env_name(k) {
            continue;
        }
        let v = v.trim();
        let v = ['"', '\'']
            .iter()
            .find_map(|q| v.strip_prefix(*q).and_then(|s| s.strip_suffix(*q)))
            .unwrap_or(v);
        out.push((k.to_string(), v.to_string()));
    }
    out
}

fn is_env_name(k: &str) -> bool {
    !k.is_empty()
        && !k.starts_with(|c: char| c.is_ascii_digit())
        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Apply the `DefaultEnvironment=` lines of the `[Manager]` section of one systemd
/// configuration file to `env`, as systemd does: the value is a list of `KEY=VALUE` words
/// (double or single quotes group a word, a backslash escapes the next character), invalid words
/// are ignored, and an empty value clears the environment accumulated so far.
fn apply_default_environment(env: &mut BTreeMap<String, String>, text: &str) {
    let mut section = "";
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name;
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        if section != "Manager" || k.trim() != "DefaultEnvironment" {
            continue;
        }
        let words = split_words(v.trim());
        if words.is_empty() {
            env.clear();
        }
        for w in words {
            if let Some((name, value)) = w.split_once('=')
                && is_env_name(name)
            {
                env.insert(name.to_string(), value.to_string());
            }
        }
    }
}

/// Split on unquoted whitespace; quotes group and are removed, backslash escapes one character.
fn split_words(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (_, '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
                in_word = true;
            }
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_files() {
        let cases: &[(&str, &[(&str, &str)])] = &[
            (
                "HTTP_PROXY=http://p:3128\n",
                &[("HTTP_PROXY", "http://p:3128")],
            ),
            (
                "# c\n\nexport https_proxy=\"http://p:3128\"\nNO_PROXY='a,b'\n",
                &[("https_proxy", "http://p:3128"), ("NO_PROXY", "a,b")],
            ),
            ("  PATH = /usr/bin \n", &[("PATH", "/usr/bin")]),
            ("not an assignment\n1X=y\nA-B=c\n=v\n", &[]),
            ("HTTP_PROXY=\n", &[("HTTP_PROXY", "")]),
        ];
        for (text, want) in cases {
            let got = parse_environment_file(text);
            let want: Vec<(String, String)> = want
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            assert_eq!(got, want, "{text:?}");
        }
    }

    #[test]
    fn default_environment() {
        type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)]);
        let cases: &[Case] = &[
            (
                &["[Manager]\nDefaultEnvironment=HTTP_PROXY=http://p:3128 NO_PROXY=.local\n"],
                &[("HTTP_PROXY", "http://p:3128"), ("NO_PROXY", ".local")],
            ),
            (
                &["[Manager]\nDefaultEnvironment=\"HTTPS_PROXY=http://u:p w@p:3128\" 'A=b c'\n"],
                &[("A", "b c"), ("HTTPS_PROXY", "http://u:p w@p:3128")],
            ),
            (
                &[
                    "[Manager]\n#DefaultEnvironment=HTTP_PROXY=x\n;DefaultEnvironment=HTTP_PROXY=y\n",
                ],
                &[],
            ),
            (&["[Journal]\nDefaultEnvironment=HTTP_PROXY=x\n"], &[]),
            (
                &["[Manager]\nDefaultEnvironment=A=1\nDefaultEnvironment=B=2 A=3\n"],
                &[("A", "3"), ("B", "2")],
            ),
            (
                &[
                    "[Manager]\nDefaultEnvironment=HTTP_PROXY=x\n",
                    "[Manager]\nDefaultEnvironment=\nDefaultEnvironment=C=4\n",
                ],
                &[("C", "4")],
            ),
            (
                &["[Manager]\nDefaultEnvironment=noequals 9X=1 A\\ B=c\n"],
                &[],
            ),
            (
                &["[Manager]\nDefaultEnvironment=X=a\\ b\n"],
                &[("X", "a b")],
            ),
        ];
        for (files, want) in cases {
            let mut env = BTreeMap::new();
            for f in *files {
                apply_default_environment(&mut env, f);
            }
            let want: BTreeMap<String, String> = want
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            assert_eq!(env, want, "{files:?}");
        }
    }

    #[test]
    fn proxy_rule_over_files() {
        let d = tempfile::tempdir().unwrap();
        let etc = d.path();
        assert!(!proxy_configured(etc).unwrap(), "no files, no proxy");

        std::fs::write(etc.join("environment"), "NO_PROXY=.local\nhttp_proxy=\n").unwrap();
        assert!(!proxy_configured(etc).unwrap(), "NO_PROXY and empty values");

        std::fs::create_dir_all(etc.join("systemd/system.conf.d")).unwrap();
        std::fs::write(
            etc.join("systemd/system.conf"),
            "[Manager]\nDefaultEnvironment=HTTPS_PROXY=http://p:3128\n",
        )
        .unwrap();
        assert!(proxy_configured(etc).unwrap(), "system.conf");

        std::fs::write(
            etc.join("systemd/system.conf.d/50-reset.conf"),
            "[Manager]\nDefaultEnvironment=\n",
        )
        .unwrap();
        assert!(!proxy_configured(etc).unwrap(), "a drop-in clears it");

        std::fs::write(
            etc.join("systemd/system.conf.d/60-proxy.conf"),
            "[Manager]\nDefaultEnvironment=https_proxy=http://q:8080\n",
        )
        .unwrap();
        std::fs::write(
            etc.join("systemd/system.conf.d/70-ignored.txt"),
            "[Manager]\n",
        )
        .unwrap();
        assert!(proxy_configured(etc).unwrap(), "a later drop-in sets it");

        std::fs::remove_dir_all(etc.join("systemd")).unwrap();
        std::fs::write(
            etc.join("environment"),
            "export HTTP_PROXY=\"http://p:3128\"\n",
        )
        .unwrap();
        assert!(proxy_configured(etc).unwrap(), "/etc/environment");
    }
}
