//! The `etc` layer on the target's disk: spooled (and so verified) before extraction, and read
//! back for the one thing extraction does not report — which directories the layer has entries
//! for.
//!
//! Why that matters: the seed's `etc` diff lists a directory only when the directory itself
//! changed (or is new); `ssh/sshd_config` modified in an unchanged `ssh` gives an entry for the
//! file alone. Extraction creates `ssh` in staging anyway (mode 0755, owned by ibu, mtime now),
//! and the merge must not give the target's `ssh` that made-up metadata. Only directories the
//! layer names get the seed's metadata.
//!
//! The listing reads the same bytes extraction accepted, with the same name rules: PAX `path`
//! (the last one) over a GNU long name over the header's name, PAX records parsed by length
//! ([`pax::parse_records`]), `.` and empty components dropped.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use cap_std::fs::Dir;

use super::fsops;
use crate::archive::pax;
use crate::oci::Descriptor;
use crate::seed::source::SeedSource;

/// Largest extension header read (as extraction allows).
const MAX_EXTENSION: u64 = 1 << 20;

/// Write the uncompressed stream of `layer` to the new file `name` of `dir`; reading it to the
/// end verifies the layer's digest. Returns the file, positioned at its start.
pub(super) fn spool(
    src: &dyn SeedSource,
    layer: &Descriptor,
    dir: &Dir,
    name: &str,
) -> Result<std::fs::File> {
    let mut file = fsops::create_new(dir, OsStr::new(name), 0o600)
        .with_context(|| format!("creating {name}"))?;
    let mut reader = src.open_layer(layer)?;
    std::io::copy(&mut reader, &mut file)
        .with_context(|| format!("downloading layer {} to {name}", layer.digest))?;
    file.seek(SeekFrom::Start(0))
        .with_context(|| format!("rewinding {name}"))?;
    Ok(file)
}

fn components(name: &[u8]) -> Vec<&[u8]> {
    name.split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect()
}

/// Paths (relative to `prefix`) of the directory entries of the tar stream `reader` under
/// `prefix`; the prefix itself is left out.
pub(super) fn explicit_dirs(reader: impl Read, prefix: &str) -> Result<HashSet<PathBuf>> {
    let prefix = components(prefix.as_bytes());
    let mut out = HashSet::new();
    let mut archive = tar::Archive::new(reader);
    let mut pax_path: Option<Vec<u8>> = None;
    let mut long_name: Option<Vec<u8>> = None;
    for entry in archive.entries().context("reading the layer")?.raw(true) {
        let mut entry = entry.context("reading the next layer entry")?;
        let ty = entry.header().entry_type();
        if ty.is_pax_local_extensions() || ty.is_gnu_longname() {
            if entry.size() > MAX_EXTENSION {
                bail!("extension header of {} bytes", entry.size());
            }
            let mut data = Vec::new();
            entry
                .read_to_end(&mut data)
                .context("reading an extension header")?;
            if ty.is_gnu_longname() {
                while data.last() == Some(&0) {
                    data.pop();
                }
                long_name = Some(data);
            } else {
                pax_path = pax::parse_records(&data)?
                    .into_iter()
                    .rev()
                    .find(|(k, _)| k == b"path")
                    .map(|(_, v)| v);
            }
            continue;
        }
        if ty.is_gnu_longlink() || ty.is_pax_global_extensions() {
            continue;
        }
        let name = pax_path
            .take()
            .or_else(|| long_name.take())
            .unwrap_or_else(|| entry.header().path_bytes().into_owned());
        long_name = None;
        if ty != tar::EntryType::Directory {
            continue;
        }
        let comps = components(&name);
        if comps.len() > prefix.len() && comps[..prefix.len()] == prefix[..] {
            out.insert(
                comps[prefix.len()..]
                    .iter()
                    .map(|c| OsStr::from_bytes(c))
                    .collect(),
            );
        }
    }
    Ok(out)
}

/// The relative path `rel` shown under `/etc`.
pub(super) fn shown(rel: &Path) -> String {
    format!("/etc/{}", rel.display())
}
