//! Snapshots of directory trees with every bit of metadata, to compare trees field by field
//! (archive round trips, "the host is left as it was" checks).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Every path below `root`, not following symlinks.
pub fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root).unwrap() {
        let path = entry.unwrap().path();
        let ft = std::fs::symlink_metadata(&path).unwrap().file_type();
        out.push(path.clone());
        if ft.is_dir() {
            out.extend(walk(&path));
        }
    }
    out
}

/// What is compared between trees, per path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snap {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: (i64, i64),
    pub rdev: u64,
    pub content: Option<Vec<u8>>,
    pub link: Option<PathBuf>,
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// The other names of the same inode (relative), for hard links.
    pub same_inode: Vec<PathBuf>,
}

pub fn xattrs_of(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut names = vec![0u8; 65536];
    let n = rustix::fs::llistxattr(path, &mut names[..]).unwrap_or(0);
    let mut out = BTreeMap::new();
    for name in names[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = String::from_utf8(name.to_vec()).unwrap();
        let mut value = vec![0u8; 65536];
        let m = rustix::fs::lgetxattr(path, name.as_str(), &mut value[..]).unwrap();
        out.insert(name, value[..m].to_vec());
    }
    out
}

/// Snapshot of every path below `root` (and of `root` itself as `""` when `with_root`).
pub fn snapshot(root: &Path, with_root: bool) -> BTreeMap<PathBuf, Snap> {
    let mut paths = walk(root);
    if with_root {
        paths.push(root.to_path_buf());
    }
    let mut inodes: BTreeMap<u64, Vec<PathBuf>> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for path in &paths {
        let md = std::fs::symlink_metadata(path).unwrap();
        let rel = path.strip_prefix(root).unwrap().to_path_buf();
        let ft = md.file_type();
        use std::os::unix::fs::FileTypeExt;
        let kind = if ft.is_file() {
            "file"
        } else if ft.is_dir() {
            "dir"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_char_device() {
            "char"
        } else if ft.is_block_device() {
            "block"
        } else if ft.is_fifo() {
            "fifo"
        } else {
            "socket"
        };
        if ft.is_file() && md.nlink() > 1 {
            inodes.entry(md.ino()).or_default().push(rel.clone());
        }
        out.insert(
            rel,
            Snap {
                kind,
                mode: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
                mtime: (md.mtime(), md.mtime_nsec()),
                rdev: md.rdev(),
                content: ft.is_file().then(|| std::fs::read(path).unwrap()),
                link: ft.is_symlink().then(|| std::fs::read_link(path).unwrap()),
                xattrs: xattrs_of(path),
                same_inode: Vec::new(),
            },
        );
    }
    for names in inodes.values() {
        for name in names {
            let mut others: Vec<PathBuf> = names.iter().filter(|n| *n != name).cloned().collect();
            others.sort();
            if let Some(s) = out.get_mut(name) {
                s.same_inode = others;
            }
        }
    }
    out
}

/// Compare two snapshots field by field, with a readable failure.
pub fn assert_same_trees(want: &BTreeMap<PathBuf, Snap>, got: &BTreeMap<PathBuf, Snap>) {
    let want_paths: Vec<_> = want.keys().collect();
    let got_paths: Vec<_> = got.keys().collect();
    assert_eq!(want_paths, got_paths, "the same paths");
    for (path, w) in want {
        let g = &got[path];
        let p = path.display();
        assert_eq!(w.kind, g.kind, "{p}: kind");
        assert_eq!(w.content, g.content, "{p}: content");
        assert_eq!(w.link, g.link, "{p}: symlink target");
        if w.kind != "symlink" {
            assert_eq!(
                format!("{:04o}", w.mode),
                format!("{:04o}", g.mode),
                "{p}: mode"
            );
        }
        assert_eq!((w.uid, w.gid), (g.uid, g.gid), "{p}: owner");
        assert_eq!(w.mtime, g.mtime, "{p}: mtime");
        assert_eq!(w.rdev, g.rdev, "{p}: device number");
        assert_eq!(w.xattrs, g.xattrs, "{p}: xattrs");
        assert_eq!(w.same_inode, g.same_inode, "{p}: hard links");
    }
}
