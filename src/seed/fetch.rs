//! Reading a seed on a target: its metadata, and only the ostree objects the target lacks.
//!
//! The seed's `ostree-index.json` says where every object of the commit lies in the pack layers.
//! The target asks its own repository which objects it already has (an OS one version apart
//! shares most of them), fetches the rest with HTTP range requests — neighbouring objects
//! merged into one request of at most [`MAX_REQUEST_BYTES`]; a registry without range support
//! gets whole-blob reads — and writes each straight into the target repository through
//! libostree with its expected checksum, so ostree verifies every object as it is written (a
//! wrong byte is an error, never a corrupt OS). Up to four writers run at once, each with its
//! own repository handle and transaction. The commit object goes in last, after everything it
//! references; every writer commits its transaction after each pack, so a crash keeps what was
//! fetched and the restarted fetch continues where it stopped. No staging copy: the bytes are
//! written once.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use cap_std::fs::Dir;
use ostree::{gio, glib};

use super::format::{
    ANNOTATION_ROLE, OstreeIndex, PATH_CONTAINERS_LIST, PATH_ETC_DELETIONS, PATH_INFO, PATH_ORIGIN,
    PATH_OSTREE_INDEX, PackIndex, PackedObject, ROLE_META, SeedInfo,
};
use super::source::SeedSource;
use crate::archive::{ExtractOptions, extract_staged};
use crate::oci::{Descriptor, ImageManifest};

/// Objects closer than this in a pack are fetched in one request (the gap is downloaded too), so
/// a pack needed whole is read in [`MAX_REQUEST_BYTES`] requests. Ranges are not covered by the
/// blob digest; every object is verified by its own checksum as ostree writes it, and the
/// commit's checksum is in the seed's label, which the manifest digest covers.
/// About what one more round trip costs on a 100 Mbit/s link; the seed benchmark showed a
/// 256 KiB gap doubling the download for a typical OS update.
pub const MERGE_GAP_BYTES: u64 = 32 << 10;
/// A merged request never spans more than this.
pub const MAX_REQUEST_BYTES: u64 = 16 << 20;

/// The seed's metadata layer, read into memory.
#[derive(Debug, Clone)]
pub struct SeedMeta {
    pub info: SeedInfo,
    pub index: OstreeIndex,
    pub containers: Vec<String>,
    pub deletions: Vec<String>,
    pub origin: String,
}

/// The layer of `manifest` with `role`.
pub fn layer_with_role<'m>(manifest: &'m ImageManifest, role: &str) -> Result<&'m Descriptor> {
    manifest
        .layers
        .iter()
        .find(|l| l.annotations.get(ANNOTATION_ROLE).map(String::as_str) == Some(role))
        .ok_or_else(|| anyhow!("the seed has no {role:?} layer (is it an ibu seed image?)"))
}

fn lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Fetch and read the metadata layer, extracting it safely under `workdir/meta`.
pub fn read_meta(
    src: &dyn SeedSource,
    manifest: &ImageManifest,
    workdir: &Path,
) -> Result<SeedMeta> {
    let layer = layer_with_role(manifest, ROLE_META)?;
    crate::fsutil::create_dir_all(workdir, 0o700)?;
    let parent = Dir::open_ambient_dir(workdir, cap_std::ambient_authority())
        .with_context(|| format!("opening {}", workdir.display()))?;
    let _ = parent.remove_dir_all("meta");
    let reader = src.open_layer(layer)?;
    extract_staged(
        reader,
        &parent,
        Path::new("meta"),
        &ExtractOptions {
            preserve_owner: false,
            preserve_xattrs: false,
            ..ExtractOptions::default()
        },
    )
    .with_context(|| format!("extracting the seed's metadata layer {}", layer.digest))?;
    parse_meta(&workdir.join("meta"))
}

/// Parse a metadata layer already extracted at `meta` (by [`read_meta`]).
pub fn parse_meta(meta: &Path) -> Result<SeedMeta> {
    let read = |p: &str| {
        std::fs::read_to_string(meta.join(p))
            .with_context(|| format!("the seed's metadata layer has no readable {p}"))
    };
    let info: SeedInfo =
        serde_json::from_str(&read(PATH_INFO)?).context("parsing seed/info.json")?;
    let index: OstreeIndex = serde_json::from_str(&read(PATH_OSTREE_INDEX)?)
        .context("parsing seed/ostree-index.json")?;
    if index.commit != info.ostree_commit {
        bail!(
            "seed metadata disagrees with itself: index commit {} but info commit {}",
            index.commit,
            info.ostree_commit
        );
    }
    Ok(SeedMeta {
        info,
        index,
        containers: lines(&read(PATH_CONTAINERS_LIST)?),
        deletions: lines(&read(PATH_ETC_DELETIONS)?),
        origin: read(PATH_ORIGIN)?,
    })
}

/// What a fetch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchStats {
    pub objects: usize,
    /// Already in the target repository.
    pub present: usize,
    pub fetched: usize,
    /// Bytes of the fetched objects (what was needed).
    pub fetched_bytes: u64,
    /// Bytes of all the commit's objects in the seed (what LCA would download).
    pub total_bytes: u64,
    pub range_requests: usize,
    pub whole_packs: usize,
}

fn object_type(name: &str) -> Result<(&str, ostree::ObjectType)> {
    let (csum, ext) = name
        .split_once('.')
        .ok_or_else(|| anyhow!("malformed object name {name:?} in the seed index"))?;
    let t = match ext {
        "commit" => ostree::ObjectType::Commit,
        "commitmeta" => ostree::ObjectType::CommitMeta,
        "dirtree" => ostree::ObjectType::DirTree,
        "dirmeta" => ostree::ObjectType::DirMeta,
        "filez" | "file" => ostree::ObjectType::File,
        other => bail!("unknown object type {other:?} of {name} in the seed index"),
    };
    if csum.len() != 64
        || !csum
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        bail!("malformed object checksum in {name:?} in the seed index");
    }
    Ok((csum, t))
}

/// `objects/ab/cdef….filez` of an object in an archive repository.
pub fn object_path(name: &str) -> PathBuf {
    PathBuf::from(format!("objects/{}/{}", &name[..2], &name[2..]))
}

/// Merge needed objects of one pack (sorted by offset) into requests.
fn requests(objects: &[&PackedObject]) -> Vec<(u64, u64, Vec<usize>)> {
    let mut out: Vec<(u64, u64, Vec<usize>)> = Vec::new();
    for (i, o) in objects.iter().enumerate() {
        match out.last_mut() {
            Some((start, end, members))
                if o.offset >= *end
                    && o.offset - *end <= MERGE_GAP_BYTES
                    && o.offset + o.size - *start <= MAX_REQUEST_BYTES =>
            {
                *end = o.offset + o.size;
                members.push(i);
            }
            _ => out.push((o.offset, o.offset + o.size, vec![i])),
        }
    }
    out
}

/// The GVariant type of each metadata object.
fn metadata_type(t: ostree::ObjectType) -> &'static str {
    match t {
        ostree::ObjectType::Commit => "(a{sv}aya(say)sstayay)",
        ostree::ObjectType::DirTree => "(a(say)a(sayay))",
        ostree::ObjectType::DirMeta => "(uuua(ayay))",
        _ => "a{sv}",
    }
}

/// Write one object, in archive format, into `repo`, verifying its checksum.
fn write_object(repo: &ostree::Repo, name: &str, bytes: Vec<u8>) -> Result<()> {
    let (csum, t) = object_type(name)?;
    let data = glib::Bytes::from_owned(bytes);
    let r = match t {
        ostree::ObjectType::File => {
            let stream = filez_to_content_stream(data.as_ref())
                .with_context(|| format!("reading archive object {name}"))?;
            let length = stream.len() as u64;
            let input = gio::MemoryInputStream::from_bytes(&glib::Bytes::from_owned(stream));
            repo.write_content(Some(csum), &input, length, gio::Cancellable::NONE)
                .map(|_| ())
        }
        _ => {
            let ty = glib::VariantTy::new(metadata_type(t))
                .map_err(|e| anyhow!("internal: variant type: {e}"))?;
            let v = glib::Variant::from_bytes_with_type(&data, ty);
            repo.write_metadata(t, Some(csum), &v, gio::Cancellable::NONE)
                .map(|_| ())
        }
    };
    r.with_context(|| format!("writing object {name} (checksum verified by ostree)"))
}

/// Turn an archive-format content object (`.filez`) into ostree's content stream.
///
/// Both start with a 4-byte big-endian header length, 4 bytes of padding and a GVariant
/// header: `(tuuuusa(ayay))` (size, uid, gid, mode, rdev, symlink target, xattrs) in the archive,
/// `(uuuusa(ayay))` in the stream; the archive's content is raw-deflate compressed, the
/// stream's is not. (libostree's `content_stream_parse` would do this, but its Rust binding
/// cannot represent the missing content stream of a symlink.) ostree recomputes the checksum
/// from the stream when it writes it, so a mistake here can only fail, never corrupt.
fn filez_to_content_stream(bytes: &[u8]) -> Result<Vec<u8>> {
    if bytes.len() < 8 {
        bail!("truncated ({} bytes)", bytes.len());
    }
    let hlen = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    let header = bytes
        .get(8..8 + hlen)
        .ok_or_else(|| anyhow!("header of {hlen} bytes does not fit"))?;
    let ty = glib::VariantTy::new("(tuuuusa(ayay))").map_err(|e| anyhow!("{e}"))?;
    let v = glib::Variant::from_bytes_with_type(&glib::Bytes::from(header), ty);
    if !v.is_normal_form() {
        bail!("malformed header");
    }
    let size = u64::from_be(v.child_value(0).get::<u64>().unwrap_or_default());
    let fields: Vec<glib::Variant> = (1..7).map(|i| v.child_value(i)).collect();
    let file_header = glib::Variant::tuple_from_iter(fields);
    let fh = file_header.data();
    let mut out = Vec::with_capacity(8 + fh.len() + size as usize);
    out.extend_from_slice(&(fh.len() as u32).to_be_bytes());
    out.extend_from_slice(&[0u8; 4]);
    out.extend_from_slice(fh);
    let before = out.len();
    // Exactly `size` bytes: libostree's writer does not always end the deflate stream with a
    // final block, so reading to the end would fail on a good object.
    flate2::read::DeflateDecoder::new(&bytes[8 + hlen..])
        .take(size)
        .read_to_end(&mut out)
        .context("inflating the content")?;
    if (out.len() - before) as u64 != size {
        bail!(
            "content is {} bytes, the header says {size}",
            out.len() - before
        );
    }
    Ok(out)
}

enum Msg {
    Object(String, Vec<u8>),
    /// Commit the transaction so far (and start a new one); answer with the outcome.
    Checkpoint(std::sync::mpsc::SyncSender<Result<()>>),
}

/// Writes objects into a repository with a few threads — inflating and checksumming content
/// is CPU work that ostree's own pull spreads over threads too. Each thread has its own
/// repository handle and transaction (ostree stages each transaction in its own directory);
/// a checkpoint commits them all, so an interrupted import keeps what was written. The commit
/// object is kept back and written last, after everything it references.
struct Writers {
    senders: Vec<std::sync::mpsc::SyncSender<Msg>>,
    next: usize,
    deferred: Vec<(String, Vec<u8>)>,
}

impl Writers {
    fn put(&mut self, name: &str, bytes: Vec<u8>) -> Result<()> {
        if name.ends_with(".commit") || name.ends_with(".commitmeta") {
            self.deferred.push((name.to_string(), bytes));
            return Ok(());
        }
        let i = self.next % self.senders.len();
        self.next += 1;
        self.senders[i]
            .send(Msg::Object(name.to_string(), bytes))
            .map_err(|_| anyhow!("an object writer stopped"))
    }

    fn checkpoint(&self) -> Result<()> {
        let mut answers = Vec::new();
        for s in &self.senders {
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            s.send(Msg::Checkpoint(tx))
                .map_err(|_| anyhow!("an object writer stopped"))?;
            answers.push(rx);
        }
        for rx in answers {
            rx.recv()
                .map_err(|_| anyhow!("an object writer stopped"))??;
        }
        Ok(())
    }
}

/// One writer thread: objects into `repo_path` until the channel closes. The first error is
/// kept and reported at the next checkpoint; later objects are dropped.
fn writer(repo_path: &Path, rx: std::sync::mpsc::Receiver<Msg>) -> Result<()> {
    let repo = ostree::Repo::new_for_path(repo_path);
    repo.open(gio::Cancellable::NONE)
        .with_context(|| format!("opening {}", repo_path.display()))?;
    repo.prepare_transaction(gio::Cancellable::NONE)
        .context("starting an ostree transaction")?;
    let mut failed: Option<anyhow::Error> = None;
    for msg in rx {
        match msg {
            Msg::Object(name, bytes) => {
                if failed.is_none()
                    && let Err(e) = write_object(&repo, &name, bytes)
                {
                    failed = Some(e);
                }
            }
            Msg::Checkpoint(ack) => {
                let r = match failed.take() {
                    Some(e) => Err(e),
                    None => repo
                        .commit_transaction(gio::Cancellable::NONE)
                        .map(|_| ())
                        .context("committing the ostree transaction")
                        .and_then(|()| {
                            repo.prepare_transaction(gio::Cancellable::NONE)
                                .map(|_| ())
                                .context("starting an ostree transaction")
                        }),
                };
                let _ = ack.send(r);
            }
        }
    }
    let _ = repo.abort_transaction(gio::Cancellable::NONE);
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Fetch the objects of `index` the `target` repository lacks and write them into it.
/// `progress(done, total)` reports written objects.
pub fn fetch_objects(
    src: &dyn SeedSource,
    manifest: &ImageManifest,
    index: &OstreeIndex,
    target: &ostree::Repo,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<FetchStats> {
    let mut stats = FetchStats::default();
    let mut needed: BTreeMap<usize, Vec<&PackedObject>> = BTreeMap::new();
    for (p, pack) in index.packs.iter().enumerate() {
        for o in &pack.objects {
            stats.objects += 1;
            stats.total_bytes += o.size;
            let (csum, t) = object_type(&o.object)?;
            let have = target
                .has_object(t, csum, gio::Cancellable::NONE)
                .with_context(|| {
                    format!("looking up object {} in the target repository", o.object)
                })?;
            if have {
                stats.present += 1;
            } else {
                needed.entry(p).or_default().push(o);
            }
        }
    }
    let total: usize = needed.values().map(Vec::len).sum();
    if total == 0 {
        return Ok(stats);
    }
    let repo_path = gio::prelude::FileExt::path(&target.path())
        .context("the target repository has no local path")?;
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 4);
    std::thread::scope(|scope| -> Result<FetchStats> {
        let mut handles = Vec::new();
        let mut senders = Vec::new();
        for _ in 0..workers {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Msg>(64);
            let p = repo_path.clone();
            handles.push(scope.spawn(move || writer(&p, rx)));
            senders.push(tx);
        }
        let mut sink = Writers {
            senders,
            next: 0,
            deferred: Vec::new(),
        };
        let result = (|| -> Result<()> {
            let mut done = 0;
            for (p, mut objs) in needed {
                let pack = &index.packs[p];
                let layer = pack_layer(manifest, pack)?;
                objs.sort_by_key(|o| o.offset);
                for (start, end, members) in requests(&objs) {
                    let buf = match src.ranges(layer, &[(start, end - start)]) {
                        Ok(mut got) => got.pop().ok_or_else(|| anyhow!("empty range response"))?,
                        Err(e)
                            if crate::registry::RegistryError::find(&e).is_some_and(|r| {
                                matches!(
                                    r,
                                    crate::registry::RegistryError::RangeNotSupported { .. }
                                )
                            }) =>
                        {
                            // A registry (or proxy) that ignores Range: read the pack once.
                            stream_pack(src, layer, &objs, &mut sink)?;
                            stats.whole_packs += 1;
                            break;
                        }
                        Err(e) => return Err(e),
                    };
                    stats.range_requests += 1;
                    for i in members {
                        let o = objs[i];
                        let from = (o.offset - start) as usize;
                        sink.put(&o.object, buf[from..from + o.size as usize].to_vec())?;
                    }
                }
                for o in &objs {
                    stats.fetched += 1;
                    stats.fetched_bytes += o.size;
                }
                sink.checkpoint()?;
                done += objs.len();
                progress(done, total);
            }
            Ok(())
        })();
        let deferred = std::mem::take(&mut sink.deferred);
        drop(sink);
        let mut first_err = result.err();
        for h in handles {
            let r = h.join().map_err(|_| anyhow!("an object writer panicked"))?;
            if let (Err(e), None) = (r, &first_err) {
                first_err = Some(e);
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        // Everything the commit references is in: now the commit itself.
        target
            .prepare_transaction(gio::Cancellable::NONE)
            .context("starting an ostree transaction")?;
        let r = deferred
            .into_iter()
            .try_for_each(|(name, bytes)| write_object(target, &name, bytes))
            .and_then(|()| {
                target
                    .commit_transaction(gio::Cancellable::NONE)
                    .map(|_| ())
                    .context("committing the ostree transaction")
            });
        if r.is_err() {
            let _ = target.abort_transaction(gio::Cancellable::NONE);
        }
        r.map(|()| stats)
    })
}

fn pack_layer<'m>(manifest: &'m ImageManifest, pack: &PackIndex) -> Result<&'m Descriptor> {
    let layer = manifest.layers.get(pack.layer).ok_or_else(|| {
        anyhow!(
            "seed index names layer {} but the manifest has {}",
            pack.layer,
            manifest.layers.len()
        )
    })?;
    if layer.digest != pack.digest {
        bail!(
            "seed index says layer {} is {} but the manifest says {}",
            pack.layer,
            pack.digest,
            layer.digest
        );
    }
    Ok(layer)
}

/// Read a whole pack once, keeping the needed objects (sorted by offset): for sources that
/// cannot serve ranges.
fn stream_pack(
    src: &dyn SeedSource,
    layer: &Descriptor,
    objs: &[&PackedObject],
    sink: &mut Writers,
) -> Result<()> {
    let mut r = src.open_layer(layer)?;
    let mut pos = 0u64;
    for o in objs {
        std::io::copy(&mut (&mut r).take(o.offset - pos), &mut std::io::sink())
            .with_context(|| format!("reading pack {}", layer.digest))?;
        let mut buf = vec![0; o.size as usize];
        r.read_exact(&mut buf)
            .with_context(|| format!("reading object {} from pack {}", o.object, layer.digest))?;
        sink.put(&o.object, buf)?;
        pos = o.offset + o.size;
    }
    // Read to the end so the blob digest is verified.
    std::io::copy(&mut r, &mut std::io::sink())
        .with_context(|| format!("verifying pack {}", layer.digest))?;
    Ok(())
}

/// Check that `commit` and everything it references is now in `target` (a seed whose index
/// left an object out is refused here, not at boot).
pub fn verify_complete(target: &ostree::Repo, commit: &str) -> Result<()> {
    let reachable = target
        .traverse_commit(commit, 0, gio::Cancellable::NONE)
        .with_context(|| format!("walking commit {commit}"))?;
    let mut missing = 0usize;
    for o in &reachable {
        if !target.has_object(o.object_type(), o.checksum(), gio::Cancellable::NONE)? {
            missing += 1;
        }
    }
    if missing > 0 {
        bail!(
            "commit {commit} is incomplete after the import: {missing} objects missing (the seed's index does not cover its commit)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(offset: u64, size: u64) -> PackedObject {
        PackedObject {
            object: "x".into(),
            offset,
            size,
        }
    }

    #[test]
    fn neighbours_merge_far_ones_do_not() {
        let a = obj(0, 100);
        let b = obj(612, 100); // gap 512: merged
        let c = obj(612 + 100 + MERGE_GAP_BYTES + 1, 10); // gap too big
        let d = obj(c.offset + 10, MAX_REQUEST_BYTES); // would make the request too long
        let r = requests(&[&a, &b, &c, &d]);
        assert_eq!(
            r,
            vec![
                (0, 712, vec![0, 1]),
                (c.offset, c.offset + 10, vec![2]),
                (d.offset, d.offset + MAX_REQUEST_BYTES, vec![3]),
            ]
        );
    }

    #[test]
    fn object_names_are_validated() {
        let good = format!("{}.filez", "a".repeat(64));
        assert!(matches!(
            object_type(&good).unwrap().1,
            ostree::ObjectType::File
        ));
        for bad in [
            "nodot",
            "../../etc.filez",
            &format!("{}.exe", "a".repeat(64)),
            &format!("{}.commit", "A".repeat(64)),
        ] {
            assert!(object_type(bad).is_err(), "{bad}");
        }
        assert_eq!(
            object_path(&good),
            PathBuf::from(format!("objects/aa/{}.filez", "a".repeat(62)))
        );
    }
}
