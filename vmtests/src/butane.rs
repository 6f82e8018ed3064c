//! A faithful translation of the subset of Butane (variant `fcos`, version 1.4.0) that ibu's
//! `ignition/` sources use, into Ignition spec 3.3.0 JSON.
//!
//! Debian has no `butane` binary, and Debian's Ignition (2.14) reads spec 3.3.0 (3.4.0 is still
//! experimental there), which is what Butane fcos 1.4.0 produces. What Butane does and this does
//! too:
//! - keys are Ignition's in snake case (`wipe_table` -> `wipeTable`, `size_mib` -> `sizeMiB`);
//! - `mode` is written in octal (`0755`) and becomes Ignition's decimal;
//! - `contents.inline` and `contents.local` (relative to the files directory, Butane's
//!   `--files-dir`; here the repository root) become `data:` URLs;
//! - `storage.filesystems[].with_mount_unit` adds the mount unit Butane generates.
//!
//! Anything else Butane accepts and this does not know is refused with its YAML path, so the
//! subset cannot silently drift.

use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use base64::Engine;
use serde_json::{Map, Value as Json};
use serde_yaml::Value as Yaml;

/// The Ignition spec version Butane fcos 1.4.0 produces.
pub const IGNITION_VERSION: &str = "3.3.0";

/// Translate a Butane document (`source`, named `name` in errors) into Ignition JSON. `files_dir`
/// resolves `contents.local`.
pub fn translate(name: &str, source: &str, files_dir: &Path) -> Result<Json> {
    let doc: Yaml = serde_yaml::from_str(source).with_context(|| format!("{name}: not YAML"))?;
    let Yaml::Mapping(top) = doc else {
        bail!("{name}: a Butane config is a mapping");
    };
    let mut out = Map::new();
    let mut units_from_mounts = Vec::new();
    for (key, value) in &top {
        let key = key_str(name, "", key)?;
        match key {
            "variant" => ensure!(
                value.as_str() == Some("fcos"),
                "{name}: variant must be fcos, got {value:?}"
            ),
            "version" => ensure!(
                value.as_str() == Some("1.4.0"),
                "{name}: version must be 1.4.0 (Ignition {IGNITION_VERSION}), got {value:?}"
            ),
            "storage" | "systemd" | "passwd" => {
                let ctx = Ctx { name, files_dir };
                let mut json = ctx.value(key, value)?;
                if key == "storage" {
                    units_from_mounts = ctx.mount_units(value)?;
                    strip_mount_sugar(&mut json);
                }
                out.insert(key.to_string(), json);
            }
            other => bail!("{name}: {other}: not supported by this Butane subset"),
        }
    }
    if !units_from_mounts.is_empty() {
        let systemd = out
            .entry("systemd")
            .or_insert_with(|| Json::Object(Map::new()));
        let units = systemd
            .as_object_mut()
            .context("systemd is not a mapping")?
            .entry("units")
            .or_insert_with(|| Json::Array(Vec::new()));
        let units = units
            .as_array_mut()
            .context("systemd.units is not a list")?;
        units.extend(units_from_mounts);
    }
    let mut ignition = Map::new();
    ignition.insert("version".into(), IGNITION_VERSION.into());
    let mut config = Map::new();
    config.insert("ignition".into(), Json::Object(ignition));
    config.extend(out);
    Ok(Json::Object(config))
}

struct Ctx<'a> {
    name: &'a str,
    files_dir: &'a Path,
}

impl Ctx<'_> {
    /// Translate a value at YAML path `path`: keys to camel case, sugar to Ignition.
    fn value(&self, path: &str, value: &Yaml) -> Result<Json> {
        Ok(match value {
            Yaml::Null => Json::Null,
            Yaml::Bool(b) => Json::Bool(*b),
            Yaml::Number(n) => {
                if path.ends_with(".mode") {
                    Json::from(octal_mode(self.name, path, n)?)
                } else if let Some(i) = n.as_i64() {
                    Json::from(i)
                } else {
                    bail!("{}: {path}: not an integer: {n}", self.name)
                }
            }
            // serde_yaml (YAML 1.2) reads `0755` as a string.
            Yaml::String(s) if path.ends_with(".mode") => {
                Json::from(octal_mode_str(self.name, path, s)?)
            }
            Yaml::String(s) => Json::String(s.clone()),
            Yaml::Sequence(items) => Json::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| self.value(&format!("{path}[{i}]"), v))
                    .collect::<Result<_>>()?,
            ),
            Yaml::Mapping(m) => {
                let mut out = Map::new();
                for (k, v) in m {
                    let k = key_str(self.name, path, k)?;
                    let here = format!("{path}.{k}");
                    if path.ends_with(".contents") && (k == "inline" || k == "local") {
                        ensure!(
                            !m.contains_key("source"),
                            "{}: {here}: only one of source, inline, local",
                            self.name
                        );
                        let bytes = self.contents(&here, k, v)?;
                        out.insert("source".into(), data_url(&bytes).into());
                        continue;
                    }
                    out.insert(camel(k), self.value(&here, v)?);
                }
                Json::Object(out)
            }
            Yaml::Tagged(_) => bail!("{}: {path}: YAML tags are not supported", self.name),
        })
    }

    fn contents(&self, path: &str, kind: &str, v: &Yaml) -> Result<Vec<u8>> {
        let s = v
            .as_str()
            .with_context(|| format!("{}: {path}: must be a string", self.name))?;
        if kind == "inline" {
            return Ok(s.as_bytes().to_vec());
        }
        ensure!(
            !s.starts_with('/') && !s.split('/').any(|c| c == ".."),
            "{}: {path}: {s:?} must be relative to the files directory, without ..",
            self.name
        );
        let file = self.files_dir.join(s);
        fs_err::read(&file).with_context(|| format!("{}: {path}", self.name))
    }

    /// Butane's `with_mount_unit: true` on a filesystem: a `<path>.mount` unit, required by
    /// local-fs.target, after the device's fsck (what Butane 0.16+ generates for fcos).
    fn mount_units(&self, storage: &Yaml) -> Result<Vec<Json>> {
        let Some(filesystems) = storage.get("filesystems").and_then(Yaml::as_sequence) else {
            return Ok(Vec::new());
        };
        let mut units = Vec::new();
        for (i, fs) in filesystems.iter().enumerate() {
            if fs.get("with_mount_unit").and_then(Yaml::as_bool) != Some(true) {
                continue;
            }
            let field = |k: &str| {
                fs.get(k).and_then(Yaml::as_str).with_context(|| {
                    format!(
                        "{}: storage.filesystems[{i}].{k}: needed by with_mount_unit",
                        self.name
                    )
                })
            };
            let (device, path, format) = (field("device")?, field("path")?, field("format")?);
            let options: Vec<&str> = match fs.get("mount_options") {
                Some(Yaml::Sequence(o)) => o.iter().filter_map(Yaml::as_str).collect(),
                _ => Vec::new(),
            };
            let device_unit = systemd_escape_path(device);
            let mut contents = format!(
                "# Generated by Butane\n[Unit]\n\
                 Requires=systemd-fsck@{device_unit}.service\n\
                 After=systemd-fsck@{device_unit}.service\n\n\
                 [Mount]\nWhere={path}\nWhat={device}\nType={format}\n"
            );
            if !options.is_empty() {
                contents.push_str(&format!("Options={}\n", options.join(",")));
            }
            contents.push_str("\n[Install]\nRequiredBy=local-fs.target\n");
            let mut unit = Map::new();
            unit.insert("contents".into(), contents.into());
            unit.insert("enabled".into(), true.into());
            unit.insert(
                "name".into(),
                format!("{}.mount", systemd_escape_path(path)).into(),
            );
            units.push(Json::Object(unit));
        }
        Ok(units)
    }
}

/// Remove the Butane-only `withMountUnit` from translated filesystems.
fn strip_mount_sugar(storage: &mut Json) {
    if let Some(fss) = storage.get_mut("filesystems").and_then(Json::as_array_mut) {
        for fs in fss {
            if let Some(o) = fs.as_object_mut() {
                o.remove("withMountUnit");
            }
        }
    }
}

fn key_str<'a>(name: &str, path: &str, k: &'a Yaml) -> Result<&'a str> {
    k.as_str()
        .with_context(|| format!("{name}: {path}: keys must be strings, got {k:?}"))
}

/// `wipe_table` -> `wipeTable`; `size_mib` -> `sizeMiB` (Ignition spells MiB so).
pub fn camel(snake: &str) -> String {
    let mut out = String::new();
    for (i, part) in snake.split('_').enumerate() {
        if i == 0 {
            out.push_str(part);
        } else if part == "mib" {
            out.push_str("MiB");
        } else {
            let mut c = part.chars();
            if let Some(first) = c.next() {
                out.extend(first.to_uppercase());
                out.push_str(c.as_str());
            }
        }
    }
    out
}

/// Butane's `mode: 0755` is octal. YAML 1.2 reads it as the integer 755: take its digits as
/// octal, as Butane (go-yaml) does.
fn octal_mode(name: &str, path: &str, n: &serde_yaml::Number) -> Result<u32> {
    let digits = n
        .as_u64()
        .with_context(|| format!("{name}: {path}: not a mode: {n}"))?
        .to_string();
    u32::from_str_radix(&digits, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .with_context(|| format!("{name}: {path}: {n} is not an octal mode like 0644"))
}

fn octal_mode_str(name: &str, path: &str, s: &str) -> Result<u32> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    u32::from_str_radix(digits, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .with_context(|| format!("{name}: {path}: {s} is not an octal mode like 0644"))
}

/// A `data:` URL of `bytes`, as Ignition fetches them.
pub fn data_url(bytes: &[u8]) -> String {
    format!(
        "data:;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// `systemd-escape --path`: `/var/lib/containers` -> `var-lib-containers`,
/// `/dev/disk/by-partlabel/x` -> `dev-disk-by\x2dpartlabel-x`.
pub fn systemd_escape_path(path: &str) -> String {
    let trimmed = path.trim_matches('/');
    let mut out = String::new();
    for (i, b) in trimmed.bytes().enumerate() {
        match b {
            b'/' => out.push('-'),
            b'.' if i == 0 => out.push_str("\\x2e"),
            b if b.is_ascii_alphanumeric() || b == b':' || b == b'_' || b == b'.' => {
                out.push(b as char)
            }
            b => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_become_ignition_camel_case() {
        assert_eq!(camel("wipe_table"), "wipeTable");
        assert_eq!(camel("start_mib"), "startMiB");
        assert_eq!(camel("size_mib"), "sizeMiB");
        assert_eq!(camel("ssh_authorized_keys"), "sshAuthorizedKeys");
        assert_eq!(camel("path"), "path");
    }

    #[test]
    fn escapes_paths_like_systemd() {
        assert_eq!(
            systemd_escape_path("/var/lib/containers"),
            "var-lib-containers"
        );
        assert_eq!(
            systemd_escape_path("/dev/disk/by-partlabel/varlibcontainers"),
            "dev-disk-by\\x2dpartlabel-varlibcontainers"
        );
    }

    #[test]
    fn translates_modes_contents_and_mount_units() {
        let src = r#"
variant: fcos
version: 1.4.0
storage:
  files:
    - path: /etc/x
      mode: 0640
      contents:
        inline: "hi\n"
  filesystems:
    - device: /dev/disk/by-partlabel/data
      format: xfs
      path: /var/data
      mount_options: [defaults, prjquota]
      with_mount_unit: true
"#;
        let j = translate("t.bu", src, Path::new(".")).unwrap();
        assert_eq!(j["ignition"]["version"], "3.3.0");
        assert_eq!(j["storage"]["files"][0]["mode"], 0o640);
        assert_eq!(
            j["storage"]["files"][0]["contents"]["source"],
            "data:;base64,aGkK"
        );
        assert_eq!(
            j["storage"]["filesystems"][0]["mountOptions"][1],
            "prjquota"
        );
        assert!(
            j["storage"]["filesystems"][0]
                .get("withMountUnit")
                .is_none()
        );
        let unit = &j["systemd"]["units"][0];
        assert_eq!(unit["name"], "var-data.mount");
        let contents = unit["contents"].as_str().unwrap();
        assert!(contents.contains("What=/dev/disk/by-partlabel/data\n"));
        assert!(contents.contains("Options=defaults,prjquota\n"));
        assert!(contents.contains("RequiredBy=local-fs.target\n"));
    }

    #[test]
    fn refuses_what_it_does_not_know() {
        let e = translate(
            "t.bu",
            "variant: fcos\nversion: 1.4.0\nkernel_arguments: {}\n",
            Path::new("."),
        )
        .unwrap_err();
        assert!(e.to_string().contains("kernel_arguments"), "{e}");
        let e = translate(
            "t.bu",
            "variant: openshift\nversion: 4.14.0\n",
            Path::new("."),
        )
        .unwrap_err();
        assert!(e.to_string().contains("variant"), "{e}");
        let src =
            "variant: fcos\nversion: 1.4.0\nstorage:\n  files:\n    - path: /x\n      mode: 0899\n";
        let e = translate("t.bu", src, Path::new(".")).unwrap_err();
        assert!(e.to_string().contains("octal"), "{e}");
    }
}
