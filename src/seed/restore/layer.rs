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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::{Meta, TarBuilder};

    #[test]
    fn lists_directory_entries_below_the_prefix_with_long_names() {
        let long = format!("seed/etc/{}/{}", "d".repeat(120), "e".repeat(90));
        let mut tar = TarBuilder::new(Vec::new());
        for dir in ["seed", "seed/etc", "seed/etc/ssh", &long, "seed/etcetera"] {
            tar.append_dir(Path::new(dir), &Meta::root(0o755)).unwrap();
        }
        tar.append_bytes(Path::new("seed/etc/ssh/x"), &Meta::root(0o644), b"x")
            .unwrap();
        tar.append_bytes(Path::new(&format!("{long}/file")), &Meta::root(0o644), b"y")
            .unwrap();
        let (bytes, _) = tar.finish().unwrap();
        let got = explicit_dirs(&bytes[..], "seed/etc").unwrap();
        let want: HashSet<PathBuf> = [
            PathBuf::from("ssh"),
            PathBuf::from(long.strip_prefix("seed/etc/").unwrap()),
        ]
        .into();
        assert_eq!(got, want);
    }

    #[test]
    fn gnu_long_names_and_dot_components() {
        // A GNU `L` header carrying a long directory name, then `./seed/etc/a/` (ustar).
        let long = format!("seed/etc/{}/", "g".repeat(150));
        let mut out = Vec::new();
        let mut push = |name: &[u8], ty: tar::EntryType, data: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.as_gnu_mut().unwrap().name[..name.len().min(100)]
                .copy_from_slice(&name[..name.len().min(100)]);
            h.set_entry_type(ty);
            h.set_size(data.len() as u64);
            h.set_mode(0o755);
            h.set_cksum();
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(data);
            out.resize(out.len().div_ceil(512) * 512, 0);
        };
        let mut data = long.as_bytes().to_vec();
        data.push(0);
        push(b"././@LongLink", tar::EntryType::GNULongName, &data);
        push(b"truncated", tar::EntryType::Directory, b"");
        push(b"./seed/etc/a/", tar::EntryType::Directory, b"");
        out.extend_from_slice(&[0; 1024]);
        let got = explicit_dirs(&out[..], "seed/etc").unwrap();
        let want: HashSet<PathBuf> = [PathBuf::from("g".repeat(150)), PathBuf::from("a")].into();
        assert_eq!(got, want);
    }
}
