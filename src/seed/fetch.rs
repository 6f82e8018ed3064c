//! Reading a seed on a target: its metadata, and only the ostree objects the target lacks.
//!
//! The seed's `ostree-index.json` says where every object of the commit lies in the pack layers.
//! The target asks its own repository which objects it already has (an OS one version apart
//! shares most of them), fetches the rest with HTTP range requests — neighbouring objects
//! merged into one request, a whole pack streamed when most of it is needed — writes them into
//! a staging archive repository, and imports the commit from there with ostree's *untrusted*
//! pull, which verifies every object's checksum. Staged objects survive a crash, so a
//! restarted fetch continues where it stopped.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use cap_std::fs::Dir;
use ostree::gio;

use super::format::{
    ANNOTATION_ROLE, OstreeIndex, PATH_CONTAINERS_LIST, PATH_ETC_DELETIONS, PATH_INFO, PATH_ORIGIN,
    PATH_OSTREE_INDEX, PackIndex, PackedObject, ROLE_META, SeedInfo,
};
use super::source::SeedSource;
use crate::archive::{ExtractOptions, extract_staged};
use crate::oci::{Descriptor, ImageManifest};

/// Objects closer than this in a pack are fetched in one request (the gap is downloaded too).
/// About what one more round trip costs on a 100 Mbit/s link; the seed benchmark showed a
/// 256 KiB gap doubling the download for a typical OS update.
pub const MERGE_GAP_BYTES: u64 = 32 << 10;
/// A merged request never spans more than this.
pub const MAX_REQUEST_BYTES: u64 = 16 << 20;
/// When at least this share of a pack is needed, the whole pack is streamed instead.
pub const WHOLE_PACK_PERCENT: u64 = 75;

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
    /// Already staged by an earlier, interrupted fetch.
    pub staged_before: usize,
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

/// Create (or reuse) the staging archive repository.
fn staging_repo(dir: &Path) -> Result<ostree::Repo> {
    let repo = ostree::Repo::new(&gio::File::for_path(dir));
    if dir.join("config").exists() {
        repo.open(gio::Cancellable::NONE)
            .with_context(|| format!("opening staging repository {}", dir.display()))?;
    } else {
        crate::fsutil::create_dir_all(dir, 0o700)?;
        repo.create(ostree::RepoMode::Archive, gio::Cancellable::NONE)
            .with_context(|| format!("creating staging repository {}", dir.display()))?;
    }
    Ok(repo)
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

fn stage(staging: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let p = staging.join(object_path(name));
    if let Some(d) = p.parent() {
        crate::fsutil::create_dir_all(d, 0o755)?;
    }
    let tmp = p.with_extension("ibu-partial");
    std::fs::write(&tmp, bytes).with_context(|| format!("staging object {name}"))?;
    std::fs::rename(&tmp, &p).with_context(|| format!("staging object {name}"))
}

/// Fetch the objects of `index` the `target` repository lacks into `staging` (an archive
/// repository created if needed). `progress(done, total)` reports fetched objects.
pub fn fetch_objects(
    src: &dyn SeedSource,
    manifest: &ImageManifest,
    index: &OstreeIndex,
    target: &ostree::Repo,
    staging: &Path,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<FetchStats> {
    staging_repo(staging)?;
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
            } else if std::fs::metadata(staging.join(object_path(&o.object)))
                .is_ok_and(|m| m.len() == o.size)
            {
                stats.staged_before += 1;
            } else {
                needed.entry(p).or_default().push(o);
            }
        }
    }
    let total: usize = needed.values().map(Vec::len).sum();
    let mut done = 0;
    for (p, mut objs) in needed {
        let pack = &index.packs[p];
        let layer = pack_layer(manifest, pack)?;
        objs.sort_by_key(|o| o.offset);
        let need_bytes: u64 = objs.iter().map(|o| o.size).sum();
        if need_bytes * 100 >= layer.size * WHOLE_PACK_PERCENT {
            stream_pack(src, layer, &objs, staging)?;
            stats.whole_packs += 1;
        } else {
            for (start, end, members) in requests(&objs) {
                let mut got = src.ranges(layer, &[(start, end - start)])?;
                let buf = got.pop().ok_or_else(|| anyhow!("empty range response"))?;
                stats.range_requests += 1;
                for i in members {
                    let o = objs[i];
                    let from = (o.offset - start) as usize;
                    stage(staging, &o.object, &buf[from..from + o.size as usize])?;
                }
            }
        }
        for o in &objs {
            stats.fetched += 1;
            stats.fetched_bytes += o.size;
        }
        done += objs.len();
        progress(done, total);
    }
    Ok(stats)
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

/// Read a whole pack once, keeping the needed objects (sorted by offset).
fn stream_pack(
    src: &dyn SeedSource,
    layer: &Descriptor,
    objs: &[&PackedObject],
    staging: &Path,
) -> Result<()> {
    let mut r = src.open_layer(layer)?;
    let mut pos = 0u64;
    for o in objs {
        std::io::copy(&mut (&mut r).take(o.offset - pos), &mut std::io::sink())
            .with_context(|| format!("reading pack {}", layer.digest))?;
        let mut buf = vec![0; o.size as usize];
        r.read_exact(&mut buf)
            .with_context(|| format!("reading object {} from pack {}", o.object, layer.digest))?;
        stage(staging, &o.object, &buf)?;
        pos = o.offset + o.size;
    }
    // Read to the end so the blob digest is verified.
    std::io::copy(&mut r, &mut std::io::sink())
        .with_context(|| format!("verifying pack {}", layer.digest))?;
    Ok(())
}

/// Import `commit` from the staging archive repository into `target`, verifying every object
/// (ostree's untrusted local pull: objects already in `target` are not touched).
pub fn import(target: &ostree::Repo, staging: &Path, commit: &str) -> Result<()> {
    crate::repo::pull_local(target, staging, commit, true)
        .with_context(|| format!("importing commit {commit} from {}", staging.display()))
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
