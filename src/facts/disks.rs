//! Disk facts: the container storage mount and the free space of the filesystems ibu writes to.
//!
//! LCA requires `/var/lib/containers` to be a filesystem of its own: it is shared by the old and
//! the new stateroot (the precached images must survive the pivot), and a Prep on a host where it
//! is just a directory of the root filesystem fails with "container storage mountpoint target not
//! found". ibu decides the same from the kernel's mount table (`/proc/self/mountinfo`), which is
//! the truth about what is mounted, and separately reports the `What=` of a
//! `var-lib-containers.mount` unit, which is what LCA compares between seed and target.
//!
//! Space numbers are `statvfs`, in the units `df` uses (`f_frsize` blocks).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::sys::statvfs::statvfs;

use super::{FsUsage, MountFacts, StorageFacts};
use crate::paths::Paths;

/// The unit that mounts container storage on OpenShift nodes and on ibu hosts.
pub const CONTAINER_STORAGE_UNIT: &str = "var-lib-containers.mount";

/// Observe container storage, the sysroot and `/boot`.
pub fn gather(paths: &Paths) -> Result<StorageFacts> {
    let container_storage_path = paths.container_storage();
    let mountinfo_path = Path::new("/proc/self/mountinfo");
    let text = std::fs::read_to_string(mountinfo_path)
        .with_context(|| format!("reading {}", mountinfo_path.display()))?;
    let mounts =
        parse_mountinfo(&text).with_context(|| format!("parsing {}", mountinfo_path.display()))?;

    let container_storage = match container_storage_path.canonicalize() {
        Ok(canon) => match find_mount(&mounts, &canon) {
            Some(m) => Some(MountFacts {
                mount_point: canon.clone(),
                source: m.source.clone(),
                fs_type: m.fs_type.clone(),
                options: m.options(),
                usage: usage(&canon)
                    .with_context(|| format!("container storage mount {}", canon.display()))?,
            }),
            None => None,
        },
        // No directory at all: certainly not a mount.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                    "resolving container storage {}",
                    container_storage_path.display()
                )
            });
        }
    };

    let container_storage_unit_what = unit_what(&unit_dirs(paths), CONTAINER_STORAGE_UNIT)?;

    Ok(StorageFacts {
        container_storage_path,
        container_storage,
        container_storage_unit_what,
        sysroot: usage(&paths.sysroot_mount)
            .with_context(|| format!("sysroot {}", paths.sysroot_mount.display()))?,
        boot: usage(&paths.boot).with_context(|| format!("boot {}", paths.boot.display()))?,
    })
}

/// `statvfs` of the filesystem holding `path` (a directory on the root filesystem gives the root
/// filesystem's numbers, which is the right answer for "how much can be written there").
pub fn usage(path: &Path) -> Result<FsUsage> {
    let s = statvfs(path).with_context(|| format!("statvfs {}", path.display()))?;
    // f_blocks, f_bfree and f_bavail count f_frsize units (what df multiplies by).
    Ok(FsUsage {
        block_size: s.fragment_size() as u64,
        blocks: s.blocks() as u64,
        blocks_free: s.blocks_free() as u64,
        blocks_available: s.blocks_available() as u64,
    })
}

/// One line of `/proc/self/mountinfo` (see proc(5)), with escapes decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    pub mount_id: u32,
    pub parent_id: u32,
    /// `major:minor` of the filesystem.
    pub dev: String,
    /// The directory of the filesystem mounted here (not `/` for bind mounts).
    pub root: PathBuf,
    pub mount_point: PathBuf,
    /// Per-mount options (`rw,relatime`).
    pub mount_options: String,
    /// Optional fields (`shared:1`, `master:2`, ...).
    pub optional: Vec<String>,
    pub fs_type: String,
    pub source: String,
    /// Per-superblock options (`rw,prjquota`).
    pub super_options: String,
}

impl MountInfo {
    /// Per-mount options followed by the superblock options not already listed: the one list
    /// that shows both `ro`/`nosuid` and filesystem features such as `prjquota`.
    pub fn options(&self) -> String {
        let mut out: Vec<&str> = Vec::new();
        for o in self
            .mount_options
            .split(',')
            .chain(self.super_options.split(','))
        {
            if !o.is_empty() && !out.contains(&o) {
                out.push(o);
            }
        }
        out.join(",")
    }
}

/// Parse mountinfo text. Each line is
/// `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS`;
/// ROOT, MOUNTPOINT and SOURCE escape space, tab, newline and backslash as `\ooo` octal.
pub fn parse_mountinfo(text: &str) -> Result<Vec<MountInfo>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        out.push(parse_mountinfo_line(line).with_context(|| format!("line {}: {line:?}", n + 1))?);
    }
    Ok(out)
}

fn parse_mountinfo_line(line: &str) -> Result<MountInfo> {
    let fields: Vec<&str> = line.split(' ').collect();
    let sep = fields
        .iter()
        .position(|f| *f == "-")
        .context("no \" - \" separator")?;
    if sep < 6 {
        anyhow::bail!("{sep} fields before the separator, expected at least 6");
    }
    let after = &fields[sep + 1..];
    if after.len() < 2 {
        anyhow::bail!("{} fields after the separator, expected 3", after.len());
    }
    let number = |i: usize, what: &str| -> Result<u32> {
        fields[i]
            .parse()
            .with_context(|| format!("{what} {:?} is not a number", fields[i]))
    };
    Ok(MountInfo {
        mount_id: number(0, "mount ID")?,
        parent_id: number(1, "parent ID")?,
        dev: fields[2].to_string(),
        root: PathBuf::from(unescape(fields[3])),
        mount_point: PathBuf::from(unescape(fields[4])),
        mount_options: fields[5].to_string(),
        optional: fields[6..sep].iter().map(|s| s.to_string()).collect(),
        fs_type: after[0].to_string(),
        source: unescape(after[1]),
        // Old kernels may omit super options for some filesystems.
        super_options: after.get(2).map(|s| s.to_string()).unwrap_or_default(),
    })
}

/// Decode the kernel's `\ooo` octal escapes; anything else stays as it is.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = b[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount visible at `mount_point`: the last one listed there (later mounts stack on top).
pub fn find_mount<'m>(mounts: &'m [MountInfo], mount_point: &Path) -> Option<&'m MountInfo> {
    mounts.iter().rev().find(|m| m.mount_point == mount_point)
}

/// Unit directories in systemd's precedence order (first wins).
///
/// On a host: `/etc/systemd/system`, `/run/systemd/system`, `/usr/lib/systemd/system`. In a
/// sandbox the same roles resolve into the sandbox: `etc` is the booted deployment's `etc`
/// (`paths.etc`), `run` is the sandbox's `run` (`paths.run`), and `usr` is the booted
/// deployment's `usr` — the sibling of its `etc`, because a booted host would see exactly that
/// deployment's `/usr`. Never the builder's own `/usr`, whose units say nothing about the sandbox.
fn unit_dirs(paths: &Paths) -> Vec<PathBuf> {
    let usr = match &paths.sandbox {
        Some(s) => paths
            .sysroot
            .join("ostree/deploy")
            .join(&s.booted.stateroot)
            .join("deploy")
            .join(format!("{}.{}", s.booted.checksum, s.booted.serial))
            .join("usr"),
        None => PathBuf::from("/usr"),
    };
    vec![
        paths.etc.join("systemd/system"),
        paths.run.join("systemd/system"),
        usr.join("lib/systemd/system"),
    ]
}

/// `What=` of `unit` as systemd would load it from `dirs` (highest precedence first): the unit
/// file from the first directory holding it (a link to `/dev/null` masks it: `None`), then its
/// `<unit>.d/*.conf` drop-ins from all directories, ordered by file name, a drop-in in a
/// higher-precedence directory hiding one of the same name below it. The last assignment wins
/// and an empty `What=` clears it.
fn unit_what(dirs: &[PathBuf], unit: &str) -> Result<Option<String>> {
    let Some(main) = dirs
        .iter()
        .map(|d| d.join(unit))
        .find(|p| p.symlink_metadata().is_ok())
    else {
        return Ok(None);
    };
    if is_masked(&main) {
        return Ok(None);
    }
    let mut files = vec![main];
    let mut dropins: Vec<(String, PathBuf)> = Vec::new();
    for d in dirs {
        let dir = d.join(format!("{unit}.d"));
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
        };
        for entry in entries {
            let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".conf") && !dropins.iter().any(|(n, _)| *n == name) {
                dropins.push((name, entry.path()));
            }
        }
    }
    dropins.sort();
    files.extend(
        dropins
            .into_iter()
            .map(|(_, p)| p)
            .filter(|p| !is_masked(p)),
    );
    let mut what = None;
    for f in &files {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("reading unit file {}", f.display()))?;
        if let Some(w) = parse_unit_what(&text) {
            what = (!w.is_empty()).then_some(w);
        }
    }
    Ok(what)
}

fn is_masked(p: &Path) -> bool {
    std::fs::read_link(p).is_ok_and(|t| t == Path::new("/dev/null"))
}

/// The last `What=` in the `[Mount]` section of one unit file, `Some("")` for an empty one.
fn parse_unit_what(text: &str) -> Option<String> {
    let mut section = String::new();
    let mut what = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
            continue;
        }
        if section != "Mount" {
            continue;
        }
        if let Some((k, v)) = line.split_once('=')
            && k.trim() == "What"
        {
            what = Some(v.trim().to_string());
        }
    }
    what
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines() {
        struct Case {
            line: &'static str,
            mount_point: &'static str,
            root: &'static str,
            source: &'static str,
            fs_type: &'static str,
            optional: &'static [&'static str],
            options: &'static str,
        }
        let cases = [
            Case {
                line: "22 1 253:0 / / rw,relatime shared:1 - xfs /dev/vda4 rw,seclabel,prjquota",
                mount_point: "/",
                root: "/",
                source: "/dev/vda4",
                fs_type: "xfs",
                optional: &["shared:1"],
                options: "rw,relatime,seclabel,prjquota",
            },
            Case {
                line: "42 27 7:0 / /tmp/exp/m rw,relatime - xfs /dev/loop0 rw,inode64,noquota",
                mount_point: "/tmp/exp/m",
                root: "/",
                source: "/dev/loop0",
                fs_type: "xfs",
                optional: &[],
                options: "rw,relatime,inode64,noquota",
            },
            Case {
                line: "99 22 0:50 / /mnt/with\\040space\\011tab rw shared:5 master:3 - tmpfs my\\134src rw,size=1024k",
                mount_point: "/mnt/with space\ttab",
                root: "/",
                source: "my\\src",
                fs_type: "tmpfs",
                optional: &["shared:5", "master:3"],
                options: "rw,size=1024k",
            },
            Case {
                line: "100 22 253:0 /ostree/deploy/os/var /var rw,relatime - ext4 /dev/vda2 rw",
                mount_point: "/var",
                root: "/ostree/deploy/os/var",
                source: "/dev/vda2",
                fs_type: "ext4",
                optional: &[],
                options: "rw,relatime",
            },
            Case {
                line: "101 22 0:60 / /weird\\\\x\\9 rw - fuse.x - rw",
                mount_point: "/weird\\\\x\\9",
                root: "/",
                source: "-",
                fs_type: "fuse.x",
                optional: &[],
                options: "rw",
            },
        ];
        for c in cases {
            let m = parse_mountinfo_line(c.line).unwrap();
            assert_eq!(m.mount_point, Path::new(c.mount_point), "{}", c.line);
            assert_eq!(m.root, Path::new(c.root), "{}", c.line);
            assert_eq!(m.source, c.source, "{}", c.line);
            assert_eq!(m.fs_type, c.fs_type, "{}", c.line);
            assert_eq!(m.optional, c.optional, "{}", c.line);
            assert_eq!(m.options(), c.options, "{}", c.line);
        }
    }

    #[test]
    fn mountinfo_rejects_malformed_lines() {
        for line in [
            "22 1 253:0 / / rw,relatime",
            "x 1 253:0 / / rw - xfs /dev/vda rw",
            "22 1 253:0 / - xfs /dev/vda rw",
            "22 1 253:0 / / rw -",
        ] {
            assert!(parse_mountinfo_line(line).is_err(), "{line}");
        }
        let all = parse_mountinfo("1 0 8:1 / / rw - ext4 /dev/sda1 rw\n\nbad\n").unwrap_err();
        assert!(format!("{all:#}").contains("line 3"), "{all:#}");
    }

    #[test]
    fn topmost_mount_wins() {
        let mounts = parse_mountinfo(
            "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n\
             2 1 0:40 / /var/lib/containers rw - tmpfs tmpfs rw\n\
             3 2 7:1 / /var/lib/containers rw - xfs /dev/loop1 rw,prjquota\n",
        )
        .unwrap();
        assert_eq!(
            find_mount(&mounts, Path::new("/var/lib/containers")).map(|m| m.mount_id),
            Some(3)
        );
        assert!(find_mount(&mounts, Path::new("/var/lib")).is_none());
    }

    #[test]
    fn unit_what_values() {
        let cases: &[(&str, Option<&str>)] = &[
            (
                "[Unit]\nDescription=x\n[Mount]\nWhat=/dev/disk/by-label/containers\nWhere=/var/lib/containers\n",
                Some("/dev/disk/by-label/containers"),
            ),
            (
                "[Mount]\n# What=/dev/no\nWhat = /dev/a \nWhat=/dev/b\n",
                Some("/dev/b"),
            ),
            ("[Unit]\nWhat=/dev/not-mount\n", None),
            ("[Mount]\nWhat=\n", Some("")),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_unit_what(text).as_deref(), *want, "{text:?}");
        }
    }

    #[test]
    fn unit_precedence_dropins_and_masking() {
        let d = tempfile::tempdir().unwrap();
        let etc = d.path().join("etc");
        let run = d.path().join("run");
        let usr = d.path().join("usr");
        for dir in [&etc, &run, &usr] {
            std::fs::create_dir_all(dir).unwrap();
        }
        let dirs = vec![etc.clone(), run.clone(), usr.clone()];
        let unit = CONTAINER_STORAGE_UNIT;
        assert_eq!(unit_what(&dirs, unit).unwrap(), None);

        std::fs::write(usr.join(unit), "[Mount]\nWhat=/dev/usr\n").unwrap();
        assert_eq!(unit_what(&dirs, unit).unwrap().as_deref(), Some("/dev/usr"));

        std::fs::write(etc.join(unit), "[Mount]\nWhat=/dev/etc\n").unwrap();
        assert_eq!(unit_what(&dirs, unit).unwrap().as_deref(), Some("/dev/etc"));

        // Drop-ins: sorted by name across directories; etc hides a same-named one in usr.
        let usr_d = usr.join(format!("{unit}.d"));
        let etc_d = etc.join(format!("{unit}.d"));
        std::fs::create_dir_all(&usr_d).unwrap();
        std::fs::create_dir_all(&etc_d).unwrap();
        std::fs::write(usr_d.join("10-a.conf"), "[Mount]\nWhat=/dev/usr-10\n").unwrap();
        assert_eq!(
            unit_what(&dirs, unit).unwrap().as_deref(),
            Some("/dev/usr-10")
        );
        std::fs::write(etc_d.join("10-a.conf"), "[Mount]\nWhat=/dev/etc-10\n").unwrap();
        std::fs::write(usr_d.join("20-b.conf"), "[Unit]\nDescription=no what\n").unwrap();
        assert_eq!(
            unit_what(&dirs, unit).unwrap().as_deref(),
            Some("/dev/etc-10")
        );

        // Masked in etc: no unit at all.
        std::fs::remove_file(etc.join(unit)).unwrap();
        std::os::unix::fs::symlink("/dev/null", etc.join(unit)).unwrap();
        assert_eq!(unit_what(&dirs, unit).unwrap(), None);
    }

    #[test]
    fn unescape_octal() {
        assert_eq!(unescape("a\\040b"), "a b");
        assert_eq!(unescape("\\134"), "\\");
        assert_eq!(unescape("tail\\04"), "tail\\04");
        assert_eq!(unescape("\\777x"), "\\777x");
    }
}
