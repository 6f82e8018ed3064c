//! `oci-archive`: an OCI image layout in one tar file, as skopeo's `oci-archive:<file>` transport
//! reads and writes it (the layout's files at the top of the archive: `oci-layout`,
//! `index.json`, `blobs/sha256/<hex>`).
//!
//! [`write()`] makes the archive deterministic (sorted, owner 0:0, modes 0644/0755, mtime 0) and
//! atomic (temporary file, fsync, rename). [`unpack`] treats the archive as hostile: it extracts
//! through [`archive::extract_staged`](crate::archive::extract_staged) — no owners, no xattrs,
//! no device nodes, no setuid files, all or nothing — and then opens the result as a layout.

use std::ffi::OsStr;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use cap_std::fs::Dir;

use super::layout::{INDEX_FILE, LayoutReader, OCI_LAYOUT_FILE, hex_of};
use crate::archive::{ExtractOptions, ExtractReport, Meta, TarBuilder, extract_staged};
use crate::fsutil;

/// Tar the layout in `layout_dir` into `out_file` (replaced atomically).
pub fn write(layout_dir: &Path, out_file: &Path) -> Result<()> {
    let dir = Dir::open_ambient_dir(layout_dir, cap_std::ambient_authority())
        .with_context(|| format!("opening OCI layout {}", layout_dir.display()))?;
    // Refuse to archive something that is not a readable layout.
    LayoutReader::from_dir(dir.try_clone()?)
        .with_context(|| format!("reading OCI layout {}", layout_dir.display()))?;

    let parent = out_file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = out_file
        .file_name()
        .with_context(|| format!("{} has no file name", out_file.display()))?;
    let tmp = parent.join(format!(
        ".{}.tmp.{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> Result<()> {
        let file =
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let mut tar = TarBuilder::new(BufWriter::with_capacity(1 << 20, file));
        let file_meta = Meta::root(0o644);
        let dir_meta = Meta::root(0o755);
        for top in [OCI_LAYOUT_FILE, INDEX_FILE] {
            add_file(&mut tar, &dir, Path::new(top), &file_meta)?;
        }
        tar.append_dir(Path::new("blobs"), &dir_meta)?;
        tar.append_dir(Path::new("blobs/sha256"), &dir_meta)?;
        for hex in blob_names(&dir)? {
            let path = PathBuf::from("blobs/sha256").join(&hex);
            add_file(&mut tar, &dir, &path, &file_meta)?;
        }
        let (out, _) = tar.finish()?;
        let file = out
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("flushing {}", tmp.display()))?;
        file.sync_all()
            .with_context(|| format!("syncing {}", tmp.display()))?;
        std::fs::rename(&tmp, out_file)
            .with_context(|| format!("renaming {} to {}", tmp.display(), out_file.display()))?;
        fsutil::sync_dir(parent)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("writing oci-archive {}", out_file.display()))
}

/// The blobs of the layout, sorted; temporary and foreign files are left out.
fn blob_names(dir: &Dir) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in dir
        .read_dir("blobs/sha256")
        .context("listing blobs/sha256")?
    {
        let entry = entry.context("listing blobs/sha256")?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if hex_of(&format!("sha256:{name}")).is_ok() && entry.file_type()?.is_file() {
            names.push(name.to_string());
        }
    }
    names.sort();
    Ok(names)
}

fn add_file<W: std::io::Write>(
    tar: &mut TarBuilder<W>,
    dir: &Dir,
    path: &Path,
    meta: &Meta,
) -> Result<()> {
    let file = dir
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let size = file
        .metadata()
        .with_context(|| format!("stat {}", path.display()))?
        .len();
    tar.append_file_data(path, meta, size, std::io::BufReader::new(file))?;
    Ok(())
}

/// Unpack the oci-archive `archive` into the new directory `dest` (which must not exist) and
/// open it as a layout. Nothing is left at `dest` if the archive is rejected.
pub fn unpack(archive: &Path, dest: &Path) -> Result<(LayoutReader, ExtractReport)> {
    let parent = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let Some(name) = dest.file_name() else {
        bail!("{} has no file name", dest.display());
    };
    let parent_dir = Dir::open_ambient_dir(parent, cap_std::ambient_authority())
        .with_context(|| format!("opening {}", parent.display()))?;
    let file = std::fs::File::open(archive)
        .with_context(|| format!("opening oci-archive {}", archive.display()))?;
    let opts = ExtractOptions {
        preserve_owner: false,
        preserve_xattrs: false,
        allow_devices: false,
        allow_setid: false,
        ..ExtractOptions::default()
    };
    let report = extract_staged(
        std::io::BufReader::with_capacity(1 << 20, file),
        &parent_dir,
        Path::new(OsStr::new(name)),
        &opts,
    )
    .with_context(|| format!("unpacking oci-archive {}", archive.display()))?;
    let layout = LayoutReader::open(dest)?;
    Ok((layout, report))
}
