//! Shared by the `archive_*` and `oci_*` tests (`mod archive_fixture;`): a tree with every kind
//! of file and metadata ibu must carry, a field-by-field snapshot of a tree to compare, and a
//! raw tar writer for archives the `tar` crate (rightly) refuses to write.
#![allow(dead_code)]

pub mod scene;

#[path = "../common/snapshot.rs"]
mod snapshot;
#[allow(unused_imports)]
pub use snapshot::{Snap, assert_same_trees, snapshot, walk, xattrs_of};

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Timespec, Timestamps, XattrFlags};

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A POSIX ACL (`system.posix_acl_access`) in the kernel's xattr format: `user::rw-`,
/// `user:1234:rw-`, `group::r--`, `mask::rw-`, `other::r--`.
pub fn acl_value() -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (0x01u16, 6u16, u32::MAX),
        (0x02, 6, 1234),
        (0x04, 4, u32::MAX),
        (0x10, 6, u32::MAX),
        (0x20, 4, u32::MAX),
    ] {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

/// `security.capability` v2 granting `cap_net_bind_service` (permitted).
pub fn capability_value() -> Vec<u8> {
    let mut v = vec![0u8; 20];
    v[..4].copy_from_slice(&0x0200_0001u32.to_le_bytes());
    v[4..8].copy_from_slice(&(1u32 << 10).to_le_bytes());
    v
}

pub const SELINUX_LABEL: &[u8] = b"system_u:object_r:etc_t:s0\0";

pub fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(path, name, value, XattrFlags::empty())
        .unwrap_or_else(|e| panic!("setting {name} on {}: {e}", path.display()));
}

/// Whether this machine lets root set `security.selinux` on files under `dir` (SELinux need not
/// be enabled: without an LSM claiming it the kernel stores it like any xattr).
pub fn selinux_xattrs_work(dir: &Path) -> bool {
    let probe = dir.join(".selinux-probe");
    std::fs::write(&probe, b"").unwrap();
    let ok = rustix::fs::lsetxattr(
        &probe,
        "security.selinux",
        SELINUX_LABEL,
        XattrFlags::empty(),
    )
    .is_ok();
    std::fs::remove_file(&probe).unwrap();
    ok
}

pub fn set_mtime(path: &Path, secs: i64, nanos: i64) {
    let t = Timespec {
        tv_sec: secs,
        tv_nsec: nanos,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &Timestamps {
            last_access: t,
            last_modification: t,
        },
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Build the test tree in `root` (which exists). As root it also has foreign owners (one too
/// large for the ustar field), `trusted.*`, `security.*` and ACL xattrs, a device node and a
/// fifo. Returns the xattr names it could set, for the record.
pub fn build_tree(root: &Path) -> Vec<String> {
    let root_user = is_root();
    let p = |s: &str| root.join(s);
    let mut xattrs = vec!["user.*".to_string()];
    std::fs::create_dir_all(p("etc/sub/deeper")).unwrap();
    std::fs::create_dir_all(p("var/tmp")).unwrap();
    std::fs::create_dir(p("empty")).unwrap();
    std::fs::write(p("etc/hosts"), b"127.0.0.1 localhost\n").unwrap();
    std::fs::write(p("etc/empty-file"), b"").unwrap();
    std::fs::write(
        p("etc/sub/deeper/data.bin"),
        (0..=255u8).cycle().take(70_000).collect::<Vec<_>>(),
    )
    .unwrap();
    std::fs::write(p("var/tmp/scratch"), b"scratch").unwrap();
    std::fs::write(p("etc/setuid-tool"), b"#!/bin/sh\n").unwrap();
    chmod(&p("etc/setuid-tool"), 0o4755);
    std::fs::write(p("etc/setgid-tool"), b"#!/bin/sh\n").unwrap();
    chmod(&p("etc/setgid-tool"), 0o2711);
    std::fs::create_dir(p("sticky")).unwrap();
    chmod(&p("sticky"), 0o1777);
    std::fs::create_dir(p("setgid-dir")).unwrap();
    chmod(&p("setgid-dir"), 0o2775);
    std::fs::write(p("etc/private"), b"secret").unwrap();
    chmod(&p("etc/private"), 0o600);
    std::fs::write(p("etc/readonly"), b"ro").unwrap();
    chmod(&p("etc/readonly"), 0o444);
    // Hard links: three names, one in another directory.
    std::fs::write(p("etc/linked"), b"one inode, three names").unwrap();
    std::fs::hard_link(p("etc/linked"), p("etc/linked-2")).unwrap();
    std::fs::hard_link(p("etc/linked"), p("etc/sub/linked-3")).unwrap();
    // Symlinks: relative, absolute, dangling, pointing up and out (never followed).
    symlink("hosts", p("etc/hosts-link")).unwrap();
    symlink("/usr/share/zoneinfo/UTC", p("etc/localtime")).unwrap();
    symlink("does-not-exist", p("etc/dangling")).unwrap();
    symlink("../../../../..", p("etc/up-and-out")).unwrap();
    symlink("sub", p("etc/sub-link")).unwrap();
    // Long names: a 100+ byte component and a path past the ustar name/prefix split.
    let long_component = "L".repeat(120);
    std::fs::write(p(&format!("etc/{long_component}")), b"long").unwrap();
    let deep = format!(
        "etc/{}/{}/{}",
        "a".repeat(90),
        "b".repeat(90),
        "c".repeat(90)
    );
    std::fs::create_dir_all(p(&deep)).unwrap();
    std::fs::write(p(&format!("{deep}/{}", "f".repeat(100))), b"deep").unwrap();
    // A long symlink target (PAX linkpath).
    symlink("t".repeat(150), p("etc/long-target")).unwrap();
    // Non-UTF-8 name.
    std::fs::write(root.join(OsStr::from_bytes(b"etc/latin1-\xe9")), b"e acute").unwrap();
    // xattrs anyone may set.
    set_xattr(&p("etc/hosts"), "user.origin", b"seed");
    set_xattr(&p("etc/hosts"), "user.binary", b"\0\x01\xff=\n");
    set_xattr(&p("etc/sub"), "user.dir", b"on a directory");
    set_xattr(&p("etc/linked"), "user.linked", b"shared by all names");

    if root_user {
        chown(&p("etc/private"), 1234, 5678);
        chown(&p("etc/sub"), 1000, 1000);
        chown(&p("etc/hosts-link"), 4321, 8765);
        // Too large for the 7-digit octal field: goes to PAX uid/gid.
        chown(&p("etc/readonly"), 3_000_000, 4_000_000);
        // chown clears setuid: the setuid file keeps root and its bit.
        set_xattr(&p("etc/hosts"), "trusted.overlay.test", b"t");
        set_xattr(&p("etc/localtime"), "trusted.on-symlink", b"s");
        xattrs.push("trusted.*".into());
        if selinux_xattrs_work(root) {
            set_xattr(&p("etc/hosts"), "security.selinux", SELINUX_LABEL);
            set_xattr(
                &p("etc/sub"),
                "security.selinux",
                b"system_u:object_r:etc_t:s0\0",
            );
            set_xattr(
                &p("etc/localtime"),
                "security.selinux",
                b"system_u:object_r:locale_t:s0\0",
            );
            xattrs.push("security.selinux".into());
        }
        std::fs::write(p("etc/capable"), b"#!/bin/sh\n").unwrap();
        chmod(&p("etc/capable"), 0o755);
        set_xattr(
            &p("etc/capable"),
            "security.capability",
            &capability_value(),
        );
        xattrs.push("security.capability".into());
        std::fs::write(p("etc/acl-file"), b"acl").unwrap();
        set_xattr(&p("etc/acl-file"), "system.posix_acl_access", &acl_value());
        set_xattr(&p("setgid-dir"), "system.posix_acl_default", &acl_value());
        xattrs.push("system.posix_acl_access".into());
        xattrs.push("system.posix_acl_default".into());
        rustix::fs::mknodat(
            rustix::fs::CWD,
            p("dev-null"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o666),
            rustix::fs::makedev(1, 3),
        )
        .unwrap();
        chmod(&p("dev-null"), 0o666);
    }
    rustix::fs::mknodat(
        rustix::fs::CWD,
        p("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o640),
        0,
    )
    .unwrap();
    chmod(&p("fifo"), 0o640);

    // Mtimes last (children first so directory times stick): whole seconds, nanoseconds, before
    // the epoch, far future.
    let mut all: Vec<PathBuf> = walk(root);
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for (i, path) in all.iter().enumerate() {
        let (secs, nanos) = match i % 4 {
            0 => (1_700_000_000 + i as i64, 0),
            1 => (1_600_000_000 + i as i64, 123_456_789),
            2 => (-86_400 * 365 + i as i64, 500_000_000),
            _ => (9_000_000_000 + i as i64, 1),
        };
        set_mtime(path, secs, nanos);
    }
    xattrs
}

/// A tar stream written header by header, for archives no well-behaved writer produces.
#[derive(Default)]
pub struct RawTar {
    pub bytes: Vec<u8>,
}

fn octal(field: &mut [u8], value: u64) {
    let s = format!("{value:0width$o}\0", width = field.len() - 1);
    field.copy_from_slice(s.as_bytes());
}

impl RawTar {
    pub fn new() -> Self {
        Self::default()
    }

    /// A ustar header (name up to 100 bytes, link name up to 100 bytes) followed by `data`.
    pub fn entry(
        &mut self,
        name: &[u8],
        typeflag: u8,
        mode: u32,
        link: &[u8],
        data: &[u8],
    ) -> &mut Self {
        self.entry_dev(name, typeflag, mode, link, data, (0, 0))
    }

    pub fn entry_dev(
        &mut self,
        name: &[u8],
        typeflag: u8,
        mode: u32,
        link: &[u8],
        data: &[u8],
        dev: (u64, u64),
    ) -> &mut Self {
        let mut h = [0u8; 512];
        let n = name.len().min(100);
        h[..n].copy_from_slice(&name[..n]);
        octal(&mut h[100..108], u64::from(mode));
        octal(&mut h[108..116], 0);
        octal(&mut h[116..124], 0);
        octal(&mut h[124..136], data.len() as u64);
        octal(&mut h[136..148], 1_700_000_000);
        h[156] = typeflag;
        let l = link.len().min(100);
        h[157..157 + l].copy_from_slice(&link[..l]);
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        octal(&mut h[329..337], dev.0);
        octal(&mut h[337..345], dev.1);
        h[148..156].fill(b' ');
        let sum: u64 = h.iter().map(|b| u64::from(*b)).sum();
        let cks = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(cks.as_bytes());
        self.bytes.extend_from_slice(&h);
        self.bytes.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.bytes.extend(std::iter::repeat_n(0u8, pad));
        self
    }

    /// A PAX extended header applying to the next entry.
    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let mut data = Vec::new();
        for (k, v) in records {
            let rest = k.len() + v.len() + 3;
            let mut len = rest + 1;
            while rest + len.to_string().len() != len {
                len = rest + len.to_string().len();
            }
            data.extend_from_slice(format!("{len} {k}=").as_bytes());
            data.extend_from_slice(v);
            data.push(b'\n');
        }
        self.entry(b"PaxHeaders/x", b'x', 0o644, b"", &data)
    }

    pub fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.entry(name.as_bytes(), b'0', 0o644, b"", data)
    }

    pub fn dir(&mut self, name: &str) -> &mut Self {
        self.entry(name.as_bytes(), b'5', 0o755, b"", b"")
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.entry(name.as_bytes(), b'2', 0o777, target.as_bytes(), b"")
    }

    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.entry(name.as_bytes(), b'1', 0o644, target.as_bytes(), b"")
    }

    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.bytes);
        out.extend_from_slice(&[0u8; 1024]);
        out
    }
}

/// What [`seed_like_layout`] built.
pub struct BuiltLayout {
    pub manifest: ibu::oci::Descriptor,
    pub layers: Vec<ibu::oci::Descriptor>,
    pub diff_ids: Vec<String>,
    /// Data records of the uncompressed pack layer.
    pub pack_records: Vec<ibu::archive::FileRecord>,
}

/// A seed-shaped OCI layout in `dir`: a gzip `meta` layer, a gzip `etc` layer holding `tree`
/// under `seed/etc/`, and an uncompressed `ostree-pack` layer holding `tree/etc` under
/// `seed/ostree/objects/`, named `ref_name`.
pub fn seed_like_layout(dir: &Path, tree: &Path, ref_name: &str) -> BuiltLayout {
    use ibu::archive::{BuildOptions, Meta, SpecialFiles, TarBuilder};
    use ibu::oci::layout::{Compression, LayoutWriter};
    use ibu::seed::format as f;

    let layout = LayoutWriter::create(dir).unwrap();
    let tree_dir = cap_std::fs::Dir::open_ambient_dir(tree, cap_std::ambient_authority()).unwrap();
    let special = BuildOptions {
        special_files: SpecialFiles::Archive,
        ..BuildOptions::default()
    };
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    let mut add = |desc: ibu::oci::Descriptor, diff_id: String, role: &str| {
        let mut desc = desc;
        desc.annotations
            .insert(f::ANNOTATION_ROLE.to_string(), role.to_string());
        layers.push(desc);
        diff_ids.push(diff_id);
    };

    // meta
    let mut tar = TarBuilder::new(layout.layer(Compression::Gzip).unwrap());
    tar.append_dir(Path::new("seed"), &Meta::root(0o755))
        .unwrap();
    tar.append_bytes(
        Path::new(f::PATH_CONTAINERS_LIST),
        &Meta::root(0o644),
        b"quay.io/x/y@sha256:00\n",
    )
    .unwrap();
    let (w, _) = tar.finish().unwrap();
    let (d, id) = w.finish().unwrap();
    add(d, id, f::ROLE_META);

    // etc
    let mut tar = TarBuilder::with_options(layout.layer(Compression::Gzip).unwrap(), special);
    tar.append_dir(Path::new("seed"), &Meta::root(0o755))
        .unwrap();
    tar.append_tree(&tree_dir, Path::new(f::PREFIX_ETC), |_| false)
        .unwrap();
    let (w, _) = tar.finish().unwrap();
    let (d, id) = w.finish().unwrap();
    add(d, id, f::ROLE_ETC);

    // ostree pack (uncompressed, offsets recorded)
    let etc = tree_dir.open_dir("etc").unwrap();
    let mut tar = TarBuilder::new(layout.layer(Compression::None).unwrap());
    tar.append_tree(&etc, Path::new(f::PREFIX_OSTREE_OBJECTS), |_| false)
        .unwrap();
    let (w, pack_records) = tar.finish().unwrap();
    let (d, id) = w.finish().unwrap();
    add(d, id, f::ROLE_OSTREE_PACK);

    let config = ibu::oci::ImageConfig {
        created: Some("2024-01-01T00:00:00Z".into()),
        architecture: "amd64".into(),
        os: "linux".into(),
        config: ibu::oci::ContainerConfig {
            labels: [(f::LABEL_FORMAT_VERSION.to_string(), "1".to_string())].into(),
        },
        rootfs: ibu::oci::RootFs {
            kind: "layers".into(),
            diff_ids: diff_ids.clone(),
        },
        history: Vec::new(),
    };
    let config = layout
        .add_json_blob(ibu::oci::MEDIA_TYPE_CONFIG, &config)
        .unwrap();
    let manifest = ibu::oci::ImageManifest {
        schema_version: 2,
        media_type: Some(ibu::oci::MEDIA_TYPE_MANIFEST.into()),
        config,
        layers: layers.clone(),
        annotations: Default::default(),
    };
    let manifest = layout.finish(&manifest, ref_name).unwrap();
    BuiltLayout {
        manifest,
        layers,
        diff_ids,
        pack_records,
    }
}
