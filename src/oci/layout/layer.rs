//! [`LayerWriter`]: a layer blob streamed to a temporary file, hashed twice on the way (the
//! uncompressed stream gives the config's `diff_id`, the stored bytes give the blob digest), and
//! renamed to its digest when finished.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use super::digest_of;
use crate::archive::gzip;
use crate::fsutil;
use crate::oci::{Descriptor, MEDIA_TYPE_LAYER_GZIP, MEDIA_TYPE_LAYER_TAR};

/// How a layer blob is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// `application/vnd.oci.image.layer.v1.tar` (seed ostree packs: range-fetchable).
    None,
    /// `application/vnd.oci.image.layer.v1.tar+gzip` with [`gzip`]'s fixed settings.
    Gzip,
}

impl Compression {
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::None => MEDIA_TYPE_LAYER_TAR,
            Compression::Gzip => MEDIA_TYPE_LAYER_GZIP,
        }
    }
}

/// Hashes and counts what passes through to the file.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    len: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

enum Sink {
    Plain(Hashing<BufWriter<File>>),
    Gzip(flate2::write::GzEncoder<Hashing<BufWriter<File>>>),
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// A layer being written: streamed to a temporary file, hashed compressed and uncompressed,
/// renamed to its digest by [`finish`](LayerWriter::finish). Dropping it unfinished removes the
/// temporary file.
pub struct LayerWriter {
    sink: Option<Sink>,
    diff: Sha256,
    diff_len: u64,
    compression: Compression,
    tmp: PathBuf,
    blobs: PathBuf,
}

impl LayerWriter {
    pub(super) fn new(blobs: &Path, compression: Compression) -> Result<Self> {
        let tmp = blobs.join(format!(
            ".tmp-layer-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        let hashing = Hashing {
            inner: BufWriter::with_capacity(1 << 20, file),
            hasher: Sha256::new(),
            len: 0,
        };
        let sink = match compression {
            Compression::None => Sink::Plain(hashing),
            Compression::Gzip => Sink::Gzip(gzip::encoder(hashing)),
        };
        Ok(LayerWriter {
            sink: Some(sink),
            diff: Sha256::new(),
            diff_len: 0,
            compression,
            tmp,
            blobs: blobs.to_path_buf(),
        })
    }

    /// Bytes of uncompressed layer written so far.
    pub fn uncompressed_len(&self) -> u64 {
        self.diff_len
    }

    /// Complete the blob: flush, fsync, rename to `blobs/sha256/<digest>`. Returns its descriptor
    /// (no annotations) and the `sha256:` digest of the uncompressed stream (the diff ID).
    pub fn finish(mut self) -> Result<(Descriptor, String)> {
        let sink = self.sink.take().context("layer writer already finished")?;
        let hashing = match sink {
            Sink::Plain(h) => h,
            Sink::Gzip(g) => g.finish().context("finishing gzip stream")?,
        };
        let Hashing { inner, hasher, len } = hashing;
        let file = inner
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("flushing {}", self.tmp.display()))?;
        file.sync_all()
            .with_context(|| format!("syncing {}", self.tmp.display()))?;
        drop(file);
        let digest = digest_of(hasher);
        let diff_id = digest_of(std::mem::take(&mut self.diff));
        let dest = self.blobs.join(super::hex_of(&digest)?);
        std::fs::rename(&self.tmp, &dest)
            .with_context(|| format!("renaming layer to blob {digest}"))?;
        fsutil::sync_dir(&self.blobs)?;
        Ok((
            Descriptor {
                media_type: self.compression.media_type().to_string(),
                digest,
                size: len,
                annotations: BTreeMap::new(),
                platform: None,
            },
            diff_id,
        ))
    }
}

impl Write for LayerWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = match self.sink.as_mut() {
            Some(Sink::Plain(h)) => h.write(buf)?,
            Some(Sink::Gzip(g)) => g.write(buf)?,
            None => return Err(io::Error::other("layer writer already finished")),
        };
        self.diff.update(&buf[..n]);
        self.diff_len += n as u64;
        Ok(n)
    }

    /// A no-op for gzip layers: a deflate sync flush would put extra bytes into the stream
    /// wherever a caller happens to flush, and layer bytes must depend on the content alone. The
    /// blob is complete only after [`finish`](LayerWriter::finish) anyway.
    fn flush(&mut self) -> io::Result<()> {
        match self.sink.as_mut() {
            Some(Sink::Plain(h)) => h.flush(),
            Some(Sink::Gzip(_)) | None => Ok(()),
        }
    }
}

impl Drop for LayerWriter {
    fn drop(&mut self) {
        if self.sink.is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
