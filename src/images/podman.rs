//! A thin wrapper around the `podman` CLI, for the image cleanup, the container facts and the
//! precache pulls.
//!
//! Why the CLI and not a library: podman is what owns `/var/lib/containers/storage` on the node
//! (together with CRI-O), its locking protocol is the contract, and LCA talks to it the same way.
//! Why a wrapper: every call must agree on where the storage is. On a booted host podman's own
//! defaults apply; for a directory sysroot ([`Paths::podman_storage`]) every call gets
//! `--root/--runroot` inside the sandbox, so a test can never touch the machine's real images.
//! `--log-level error` keeps podman's warnings out of the JSON we parse.
//!
//! Facts about podman 4.3's JSON (captured output is in `testdata/`, and the tests parse it):
//! `podman images` prints one row *per tag*, so an image with two names appears twice; `Names`
//! holds the tags and is omitted for an image without names; `RepoTags` is always `null`;
//! `Dangling` is omitted unless true; `Created` is Unix seconds. `podman ps -a --external` also
//! lists containers podman did not create (CRI-O's, buildah's working containers), each with its
//! `ImageID`.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use xshell::Shell;

use crate::facts::ImageFacts;
use crate::paths::Paths;

/// The podman binary, found on `PATH`.
const PODMAN: &str = "podman";

/// Runs podman against the container storage of one [`Paths`].
pub struct Podman {
    shell: Shell,
    global: Vec<OsString>,
}

/// What one `podman rmi` did. Partial success is normal: podman removes what it can and reports
/// the rest on stderr with a non-zero exit status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RmiOutcome {
    /// Full IDs of the images podman deleted (its `Deleted:` lines).
    pub deleted: Vec<String>,
    /// Names podman removed from images (its `Untagged:` lines).
    pub untagged: Vec<String>,
    /// podman exited 0: every reference given was removed.
    pub success: bool,
    /// podman's stderr, trimmed; empty on success.
    pub stderr: String,
}

/// How `podman pull` reaches the registry. The caller owns the authfile (written 0600, removed
/// after use); only its path is ever passed on or logged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullOptions {
    /// `--authfile`.
    pub authfile: Option<PathBuf>,
    /// `Some(false)`: `--tls-verify=false` (plain HTTP or an untrusted certificate).
    pub tls_verify: Option<bool>,
    /// `--cert-dir`: extra CA certificates (`*.crt`) for the registry.
    pub cert_dir: Option<PathBuf>,
}

/// Why one `podman pull` failed, told apart by what podman printed, because the two kinds
/// that a retry cannot fix must not be retried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PullError {
    /// The registry has no such tag or digest (or repository): `manifest unknown`,
    /// `name unknown`. Retrying cannot help.
    #[error("{image}: the registry has no such tag or digest: {stderr}")]
    ManifestUnknown { image: String, stderr: String },
    /// The registry refused the credentials (`unauthorized`, `authentication required`,
    /// `denied`). Retrying cannot help, and repeated failed logins can lock an account.
    #[error("{image}: the registry refused the credentials: {stderr}")]
    Unauthorized { image: String, stderr: String },
    /// Anything else podman reported (network, registry errors, storage): worth retrying.
    #[error("{image}: podman pull failed ({status}): {stderr}")]
    Failed {
        image: String,
        status: String,
        stderr: String,
    },
    /// podman could not be started at all.
    #[error("{image}: could not run podman pull: {reason}")]
    Spawn { image: String, reason: String },
}

impl PullError {
    /// Classify a failed `podman pull IMAGE` by its exit status and stderr.
    pub fn classify(image: &str, status: &str, stderr: &str) -> PullError {
        let image = image.to_string();
        let text = stderr.trim().to_string();
        let lower = text.to_ascii_lowercase();
        if lower.contains("manifest unknown") || lower.contains("name unknown") {
            PullError::ManifestUnknown {
                image,
                stderr: text,
            }
        } else if lower.contains("unauthorized")
            || lower.contains("authentication required")
            || lower.contains("invalid username/password")
            || lower.contains("denied:")
        {
            PullError::Unauthorized {
                image,
                stderr: text,
            }
        } else {
            PullError::Failed {
                image,
                status: status.to_string(),
                stderr: text,
            }
        }
    }

    /// `true` when another attempt cannot succeed (unknown manifest, refused credentials).
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            PullError::ManifestUnknown { .. } | PullError::Unauthorized { .. }
        )
    }
}

impl Podman {
    /// A podman for the container storage of `paths`.
    pub fn new(paths: &Paths) -> Result<Podman> {
        let shell = Shell::new().context("setting up a shell to run podman")?;
        // In a directory sysroot, the registry configuration is the sandbox's `/etc`, as it is
        // the booted deployment's on a host (where podman reads `/etc` anyway).
        if paths.is_sandbox() {
            let conf = paths.etc.join("containers/registries.conf");
            if conf.exists() {
                shell.set_var("CONTAINERS_REGISTRIES_CONF", conf);
            }
        }
        Ok(Podman {
            shell,
            global: Podman::global_args(paths),
        })
    }

    /// The options every podman call needs for `paths`: `--root/--runroot` for a directory
    /// sysroot (nothing on a booted host) and `--log-level error`. Public so that other podman
    /// users in ibu (seed pull, precache) address the same storage.
    pub fn global_args(paths: &Paths) -> Vec<OsString> {
        let mut args = Vec::new();
        if let Some((root, runroot)) = paths.podman_storage() {
            args.push("--root".into());
            args.push(root.into_os_string());
            args.push("--runroot".into());
            args.push(runroot.into_os_string());
        }
        args.push("--log-level".into());
        args.push("error".into());
        args
    }

    /// Every image in the storage, one entry per image ID.
    pub fn images(&self) -> Result<Vec<ImageFacts>> {
        let out = self.read(&["images", "--format", "json"])?;
        parse_images(&out).context("parsing the output of `podman images --format json`")
    }

    /// IDs of the images used by any container in the storage, running or stopped, including
    /// containers podman did not create (CRI-O's pods, buildah working containers). Sorted,
    /// without duplicates.
    pub fn container_image_ids(&self) -> Result<Vec<String>> {
        let out = self.read(&["ps", "--all", "--external", "--format", "json"])?;
        parse_container_image_ids(&out)
            .context("parsing the output of `podman ps --all --external --format json`")
    }

    /// Remove `images` with one `podman rmi` (never `--force`: an image a container uses must
    /// stay). Each image is named by [`rmi_args`]. `Err` only when podman could not be run at
    /// all; podman refusing some of the images is reported in the [`RmiOutcome`].
    pub fn rmi(&self, images: &[&ImageFacts]) -> Result<RmiOutcome> {
        let refs: Vec<String> = images.iter().flat_map(|i| rmi_args(i)).collect();
        if refs.is_empty() {
            return Ok(RmiOutcome {
                success: true,
                ..RmiOutcome::default()
            });
        }
        let output = self
            .shell
            .cmd(PODMAN)
            .args(&self.global)
            .arg("rmi")
            .args(&refs)
            .quiet()
            .ignore_status()
            .output()
            .with_context(|| format!("running podman rmi {}", refs.join(" ")))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let (deleted, untagged) = parse_rmi_stdout(&stdout);
        Ok(RmiOutcome {
            deleted,
            untagged,
            success: output.status.success(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }

    /// `podman pull --quiet IMAGE` into this storage. `--quiet` leaves only errors on stderr,
    /// which become the [`PullError`]'s message, trimmed.
    /// `podman tag SOURCE NAME`: one more name for an image in storage.
    pub fn tag(&self, source: &str, name: &str) -> Result<()> {
        let out = self
            .shell
            .cmd(PODMAN)
            .args(&self.global)
            .args(["tag", source, name])
            .quiet()
            .ignore_status()
            .output()
            .with_context(|| format!("running podman tag {source} {name}"))?;
        if !out.status.success() {
            anyhow::bail!(
                "podman tag {source} {name}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    pub fn pull(&self, image: &str, opts: &PullOptions) -> Result<(), PullError> {
        let mut args: Vec<OsString> = vec!["pull".into(), "--quiet".into()];
        if let Some(a) = &opts.authfile {
            args.push("--authfile".into());
            args.push(a.into());
        }
        if let Some(v) = opts.tls_verify {
            args.push(format!("--tls-verify={v}").into());
        }
        if let Some(c) = &opts.cert_dir {
            args.push("--cert-dir".into());
            args.push(c.into());
        }
        args.push(image.into());
        tracing::debug!(image, "running podman pull");
        let output = self
            .shell
            .cmd(PODMAN)
            .args(&self.global)
            .args(&args)
            .quiet()
            .ignore_status()
            .output()
            .map_err(|e| PullError::Spawn {
                image: image.to_string(),
                reason: e.to_string(),
            })?;
        if output.status.success() {
            return Ok(());
        }
        Err(PullError::classify(
            image,
            &output.status.to_string(),
            &String::from_utf8_lossy(&output.stderr),
        ))
    }

    /// Run podman with `args`, return stdout; a failure names the command and carries stderr.
    /// Run `podman <global options> ARGS`; its stdout, or an error with its stderr.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        self.read(args)
    }

    fn read(&self, args: &[&str]) -> Result<String> {
        let what = format!("podman {}", args.join(" "));
        tracing::debug!(command = %what, "running podman");
        let output = self
            .shell
            .cmd(PODMAN)
            .args(&self.global)
            .args(args)
            .quiet()
            .ignore_status()
            .output()
            .with_context(|| format!("running {what}"))?;
        if !output.status.success() {
            bail!(
                "{what} failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        String::from_utf8(output.stdout).with_context(|| format!("{what} printed non-UTF-8"))
    }
}

/// The references `podman rmi` gets for one image.
///
/// The ID when the image has at most one name: an ID cannot be moved to another image between
/// listing and removing, so there is no race. An image with several names cannot be removed by
/// ID without `--force` (podman: "unable to delete image by ID with more than one tag"), so it
/// is removed by all its names instead; removing the last name deletes the image.
pub fn rmi_args(image: &ImageFacts) -> Vec<String> {
    if image.names.len() > 1 {
        image.names.clone()
    } else {
        vec![image.id.clone()]
    }
}

/// One row of `podman images --format json` (podman 4.3); unknown fields are ignored.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ImageRow {
    id: String,
    #[serde(default)]
    names: Option<Vec<String>>,
    /// `null` in podman 4.3; read in case a later podman fills it.
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    #[serde(default)]
    repo_digests: Option<Vec<String>>,
    #[serde(default)]
    created: i64,
    #[serde(default)]
    size: i64,
    #[serde(default)]
    dangling: bool,
}

/// Parse `podman images --format json`, merging the per-tag rows of one image. Order of first
/// appearance is kept; names and digests keep podman's order without duplicates.
pub fn parse_images(json: &str) -> Result<Vec<ImageFacts>> {
    let rows: Vec<ImageRow> = serde_json::from_str(json)?;
    let mut images: Vec<ImageFacts> = Vec::new();
    for row in rows {
        let idx = match images.iter().position(|i| i.id == row.id) {
            Some(idx) => idx,
            None => {
                images.push(ImageFacts {
                    id: row.id.clone(),
                    names: Vec::new(),
                    digests: Vec::new(),
                    created: row.created,
                    size: u64::try_from(row.size).unwrap_or(0),
                    dangling: row.dangling,
                });
                images.len() - 1
            }
        };
        let image = &mut images[idx];
        let names = row.names.into_iter().flatten();
        let tags = row.repo_tags.into_iter().flatten();
        for name in names.chain(tags) {
            push_unique(&mut image.names, name);
        }
        for digest in row.repo_digests.into_iter().flatten() {
            push_unique(&mut image.digests, digest);
        }
    }
    Ok(images)
}

/// One row of `podman ps --all --external --format json` (podman 4.3).
#[derive(Deserialize)]
struct ContainerRow {
    #[serde(rename = "ImageID", default)]
    image_id: String,
}

/// Parse `podman ps --format json` into the sorted, unique image IDs of the containers.
pub fn parse_container_image_ids(json: &str) -> Result<Vec<String>> {
    let rows: Vec<ContainerRow> = serde_json::from_str(json)?;
    let mut ids: Vec<String> = rows
        .into_iter()
        .map(|r| r.image_id)
        .filter(|id| !id.is_empty())
        .collect();
    ids.sort();
    ids.dedup();
    Ok(ids)
}

/// Split `podman rmi` stdout into deleted image IDs and untagged names.
pub fn parse_rmi_stdout(stdout: &str) -> (Vec<String>, Vec<String>) {
    let mut deleted = Vec::new();
    let mut untagged = Vec::new();
    for line in stdout.lines() {
        if let Some(id) = line.strip_prefix("Deleted:") {
            deleted.push(id.trim().to_string());
        } else if let Some(name) = line.strip_prefix("Untagged:") {
            untagged.push(name.trim().to_string());
        }
    }
    (deleted, untagged)
}

fn push_unique(v: &mut Vec<String>, s: String) {
    if !v.contains(&s) {
        v.push(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    const IMAGES: &str = include_str!("testdata/podman-4.3-images.json");
    const PS: &str = include_str!("testdata/podman-4.3-ps-external.json");
    const RMI_STDOUT: &str = include_str!("testdata/podman-4.3-rmi.stdout");

    #[test]
    fn parses_real_podman_images_output() {
        let images = parse_images(IMAGES).unwrap();
        // Five rows, four images: the image with two tags is listed once per tag.
        assert_eq!(images.len(), 4);
        let debug = &images[1];
        assert_eq!(
            debug.id,
            "b71431dd0ebedaf768c6e3135eea6bca68c6274c539a78a5dce06a6851cc4bce"
        );
        assert_eq!(
            debug.names,
            [
                "registry.example.com/tools/debug:2",
                "registry.example.com/tools/debug:latest"
            ]
        );
        assert_eq!(
            debug.digests,
            [
                "registry.example.com/tools/debug@sha256:de7a255117e0e5b98d5ca6e79fa413f2fc33c3aab3256402a0d6f404642d43b2"
            ]
        );
        assert_eq!(debug.created, 1_700_000_200);
        assert_eq!(debug.size, 6928);
        assert!(!debug.dangling);

        let dangling = &images[3];
        assert!(dangling.dangling);
        assert!(dangling.names.is_empty());
        assert!(dangling.digests.is_empty());
        assert_eq!(dangling.created, 1_700_000_000);
        assert_eq!(images.iter().filter(|i| i.dangling).count(), 1);
    }

    #[test]
    fn parses_empty_and_rejects_garbage() {
        assert!(parse_images("[]").unwrap().is_empty());
        assert!(parse_container_image_ids("[]").unwrap().is_empty());
        assert!(parse_images("Error: something").is_err());
        assert!(
            parse_images(r#"[{"Names": ["x"]}]"#).is_err(),
            "Id is required"
        );
    }

    #[test]
    fn parses_real_podman_ps_output_including_external_containers() {
        let ids = parse_container_image_ids(PS).unwrap();
        assert_eq!(
            ids,
            [
                // podman create
                "770868fe5928040aab02c3220ad4a834c65cecc05b1c6b743c48fdc8035a8518",
                // buildah working container (external)
                "c29cdef64c5d4c9e3a60af400def0acdf2f17c7d4c67bbbe237ec5581d396312",
            ]
        );
    }

    #[test]
    fn parses_real_rmi_output() {
        let (deleted, untagged) = parse_rmi_stdout(RMI_STDOUT);
        assert_eq!(
            deleted,
            ["f2c01c0506b0690668f6696a1646733cd64905bc422be53ae1cba75e1e9dce81"]
        );
        assert!(untagged.is_empty());
        let (d, u) = parse_rmi_stdout("Untagged: a:1\nUntagged: b:2\nDeleted: abc\n");
        assert_eq!(d, ["abc"]);
        assert_eq!(u, ["a:1", "b:2"]);
    }

    #[test]
    fn rmi_names_multi_tag_images_by_name_and_others_by_id() {
        let images = parse_images(IMAGES).unwrap();
        assert_eq!(rmi_args(&images[0]), [images[0].id.clone()]);
        assert_eq!(rmi_args(&images[1]), images[1].names);
        assert_eq!(rmi_args(&images[3]), [images[3].id.clone()]);
    }

    #[test]
    fn pull_errors_are_classified_by_podmans_message() {
        // Real podman 4.3 messages (against docker-registry 2.8).
        let unknown = "Error: initializing source docker://127.0.0.1:5599/t/x:nope: reading \
                       manifest nope in 127.0.0.1:5599/t/x: manifest unknown: manifest unknown\n";
        let e = PullError::classify("127.0.0.1:5599/t/x:nope", "exit status: 125", unknown);
        assert!(matches!(e, PullError::ManifestUnknown { .. }), "{e:?}");
        assert!(e.is_permanent());
        assert!(
            e.to_string()
                .starts_with("127.0.0.1:5599/t/x:nope: the registry has no such")
        );
        assert!(e.to_string().ends_with("manifest unknown"), "trimmed: {e}");

        let unauthorized = "Error: initializing source docker://127.0.0.1:5599/t/x:1: reading \
                            manifest 1 in 127.0.0.1:5599/t/x: unauthorized: authentication required";
        let e = PullError::classify("127.0.0.1:5599/t/x:1", "exit status: 125", unauthorized);
        assert!(matches!(e, PullError::Unauthorized { .. }), "{e:?}");
        assert!(e.is_permanent());

        let refused = "Error: initializing source docker://127.0.0.1:5598/t/x:1: pinging container \
                       registry 127.0.0.1:5598: Get \"http://127.0.0.1:5598/v2/\": dial tcp \
                       127.0.0.1:5598: connect: connection refused";
        let e = PullError::classify("127.0.0.1:5598/t/x:1", "exit status: 125", refused);
        assert!(matches!(e, PullError::Failed { .. }), "{e:?}");
        assert!(!e.is_permanent());
        assert!(e.to_string().contains("(exit status: 125)"), "{e}");
    }

    #[test]
    fn global_args_follow_paths() {
        let mut paths = Paths::host();
        assert_eq!(Podman::global_args(&paths), ["--log-level", "error"]);
        paths.sandbox = Some(crate::paths::Sandbox::booted(
            crate::paths::SandboxDeployment {
                stateroot: "os".into(),
                checksum: "abc".into(),
                serial: 0,
            },
        ));
        paths.var = PathBuf::from("/s/var");
        let (_, runroot) = paths.podman_storage().unwrap();
        assert_eq!(
            Podman::global_args(&paths),
            [
                "--root",
                "/s/var/lib/containers/storage",
                "--runroot",
                runroot.to_str().unwrap(),
                "--log-level",
                "error"
            ]
        );
    }
}
