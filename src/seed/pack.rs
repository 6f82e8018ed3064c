//! Ostree objects into seed pack layers, with the index of where each object's bytes lie.
//!
//! Objects are written in object-name order into uncompressed tar layers of about
//! [`PACK_TARGET_BYTES`] each (an object is never split). The tar writer reports the byte offset
//! of every file's data in the layer, which becomes the seed's `ostree-index.json`: a target
//! fetches an object with one range request at that offset.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use cap_std::fs::Dir;

use crate::archive::{Meta, TarBuilder};
use crate::oci::Descriptor;
use crate::oci::layout::{Compression, LayoutWriter};
use crate::seed::collect::ExportedObject;
use crate::seed::format::{
    ANNOTATION_ROLE, PREFIX_OSTREE_OBJECTS, PackIndex, PackedObject, ROLE_OSTREE_PACK,
};

/// The path of an exported object inside a pack layer.
fn archive_path(o: &ExportedObject) -> Result<PathBuf> {
    let rel = o
        .path
        .strip_prefix("objects")
        .with_context(|| format!("object path {} is not under objects/", o.path.display()))?;
    Ok(Path::new(PREFIX_OSTREE_OBJECTS).join(rel))
}

/// A written pack layer.
#[derive(Debug, Clone)]
pub struct Pack {
    pub descriptor: Descriptor,
    pub diff_id: String,
    pub index: PackIndex,
}

/// Write `objects` (read from the archive repository `repo`) into pack layers of `layout`.
/// `first_layer` is the manifest position the first pack will take.
pub fn write_packs(
    layout: &LayoutWriter,
    repo: &Dir,
    objects: &[ExportedObject],
    first_layer: usize,
    target_bytes: u64,
) -> Result<Vec<Pack>> {
    let mut packs = Vec::new();
    let mut start = 0;
    while start < objects.len() {
        // Take objects until the pack would pass the target (at least one per pack).
        let mut end = start;
        let mut bytes = 0u64;
        while end < objects.len() && (end == start || bytes + objects[end].size <= target_bytes) {
            bytes += objects[end].size;
            end += 1;
        }
        let layer = first_layer + packs.len();
        packs.push(write_pack(layout, repo, &objects[start..end], layer)?);
        tracing::debug!(layer, objects = end - start, bytes, "ostree pack written");
        start = end;
    }
    Ok(packs)
}

fn write_pack(
    layout: &LayoutWriter,
    repo: &Dir,
    objects: &[ExportedObject],
    layer: usize,
) -> Result<Pack> {
    let writer = layout.layer(Compression::None)?;
    let mut tar = TarBuilder::new(writer);
    let meta = Meta::root(0o644);
    let mut packed = Vec::with_capacity(objects.len());
    for o in objects {
        let f = repo
            .open(&o.path)
            .with_context(|| format!("opening ostree object {}", o.path.display()))?;
        let actual = f
            .metadata()
            .with_context(|| format!("stat ostree object {}", o.path.display()))?
            .len();
        if actual != o.size {
            bail!(
                "ostree object {} changed while packing ({} bytes, expected {})",
                o.name,
                actual,
                o.size
            );
        }
        let rec = tar
            .append_file_data(&archive_path(o)?, &meta, o.size, f)
            .with_context(|| format!("packing ostree object {}", o.name))?;
        packed.push(PackedObject {
            object: o.name.clone(),
            offset: rec.offset,
            size: rec.size,
        });
    }
    let (writer, _) = tar.finish()?;
    let (mut descriptor, diff_id) = writer.finish()?;
    descriptor
        .annotations
        .insert(ANNOTATION_ROLE.into(), ROLE_OSTREE_PACK.into());
    Ok(Pack {
        index: PackIndex {
            layer,
            digest: descriptor.digest.clone(),
            objects: packed,
        },
        descriptor,
        diff_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, SeekFrom};

    #[test]
    fn packs_split_by_size_and_offsets_point_at_the_bytes() {
        let d = tempfile::tempdir().unwrap();
        let repo = d.path().join("repo");
        let mut objects = vec![];
        for i in 0..7u8 {
            let name = format!("{:02x}{}", i, "e".repeat(62));
            let rel = PathBuf::from(format!("objects/{}/{}.filez", &name[..2], &name[2..]));
            std::fs::create_dir_all(repo.join(rel.parent().unwrap())).unwrap();
            let body = vec![i; 3000 + i as usize];
            std::fs::write(repo.join(&rel), &body).unwrap();
            objects.push(ExportedObject {
                name: format!("{name}.filez"),
                path: rel,
                size: body.len() as u64,
            });
        }
        let layout = LayoutWriter::create(&d.path().join("layout")).unwrap();
        let dir = Dir::open_ambient_dir(&repo, cap_std::ambient_authority()).unwrap();
        let packs = write_packs(&layout, &dir, &objects, 3, 10_000).unwrap();
        assert_eq!(packs.len(), 3, "3 objects of ~3 KB per 10 KB pack");
        assert_eq!(
            packs.iter().map(|p| p.index.layer).collect::<Vec<_>>(),
            [3, 4, 5]
        );
        for p in &packs {
            assert_eq!(p.descriptor.annotations[ANNOTATION_ROLE], ROLE_OSTREE_PACK);
            assert_eq!(p.descriptor.media_type, crate::oci::MEDIA_TYPE_LAYER_TAR);
            let hex = p.descriptor.digest.strip_prefix("sha256:").unwrap();
            let mut blob =
                std::fs::File::open(d.path().join("layout/blobs/sha256").join(hex)).unwrap();
            for o in &p.index.objects {
                let mut buf = vec![0; o.size as usize];
                blob.seek(SeekFrom::Start(o.offset)).unwrap();
                blob.read_exact(&mut buf).unwrap();
                let i = u8::from_str_radix(&o.object[..2], 16).unwrap();
                assert_eq!(buf, vec![i; 3000 + i as usize], "{}", o.object);
            }
        }
        let all: Vec<&str> = packs
            .iter()
            .flat_map(|p| p.index.objects.iter().map(|o| o.object.as_str()))
            .collect();
        assert_eq!(all.len(), 7);
    }
}
