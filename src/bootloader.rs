//! The trial boot: start the new stateroot **once**, keep the old one the default.
//!
//! A new stateroot that never reaches userspace (a kernel panic, a broken initramfs, a root
//! that does not mount) cannot roll itself back: nothing of ibu runs in it. The only part that
//! runs before it is the bootloader, so the bootloader must be told to try the new deployment
//! once and to start the old one on the boot after, unless ibu in the new stateroot has made
//! the new one the default by then (`CommitPivot`).
//!
//! **syslinux/extlinux** (ostree's `syslinux` backend, what the VM images use) has exactly that:
//! the *boot-once* record in its ADV (auxiliary data vector), which `extlinux --once=LABEL` sets
//! and `ldlinux` clears before it boots the label. ibu does both halves itself, because the
//! node need not have the `extlinux` tool:
//!
//! 1. ostree names every menu entry after the OS (`LABEL Debian GNU/Linux 12 (bookworm)
//!    (ostree:0)`), and syslinux matches a label by its first word, so no ostree entry can be
//!    named alone. ibu appends its own entry, `LABEL ibu-trial`, to the current
//!    `loader/syslinux.cfg`, with the new deployment's kernel, initramfs and arguments (from its
//!    boot entry) plus `panic=10 rd.shell=0 rd.emergency=reboot systemd.crash_reboot=1
//!    ibu.trial=1`: a kernel panic, a failed initramfs or a crashing PID 1 reboot instead of
//!    hanging. The next deployment write by ostree drops the entry (its kernel is under
//!    `/ostree/`, so ostree takes it for one of its own).
//! 2. ibu sets the ADV's boot-once tag to `ibu-trial` in `syslinux/ldlinux.sys` (the ADV is the
//!    file's last two 512-byte sectors; `extlinux --install` makes the file immutable, so the
//!    flag is lifted for the write and restored).
//! 3. ibu checkpoints `/boot`'s journal ([`crate::fsutil::checkpoint_journal`]): syslinux reads
//!    ext4 without replaying its journal, so until the kernel checkpoints it a menu renamed
//!    into place is invisible to syslinux, and a power cut then boots the old default.
//!
//! The old deployment stays first in ostree's list, so the menu's `DEFAULT` stays the old one.
//! If the new stateroot fails before ibu's `CommitPivot` runs in it, the next boot is the old
//! stateroot, where ibu finds itself in a new boot after the pivot reboot and reports Upgrade
//! failed "Uncontrolled rollback".
//!
//! Other bootloaders (GRUB, BLS-only, `none` in a directory sysroot) have no boot-once ibu can
//! drive here; there the pivot makes the new deployment the default, as LCA does, and a new
//! stateroot that never reaches userspace needs a human (GRUB's `next_entry` would be the
//! equivalent; not implemented).

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::paths::Paths;

/// The label of ibu's trial entry.
pub const TRIAL_LABEL: &str = "ibu-trial";
/// Kernel arguments added to the trial entry only.
pub const TRIAL_KARGS: &str =
    "panic=10 rd.shell=0 rd.emergency=reboot systemd.crash_reboot=1 ibu.trial=1";

const ADV_SIZE: usize = 512;
const ADV_MAGIC1: u32 = 0x5a2d_2fa5;
const ADV_MAGIC2: u32 = 0xa304_1767;
const ADV_MAGIC3: u32 = 0xdd28_bf64;
const ADV_BOOTONCE: u8 = 1;
const ADV_END: u8 = 0;

/// `boot/syslinux/ldlinux.sys`.
pub fn ldlinux(paths: &Paths) -> PathBuf {
    paths.boot.join("syslinux/ldlinux.sys")
}

/// `boot/loader/syslinux.cfg` (ostree's current menu; `boot/syslinux/syslinux.cfg` links here).
pub fn syslinux_cfg(paths: &Paths) -> PathBuf {
    paths.boot.join("loader/syslinux.cfg")
}

/// Can ibu boot a deployment once here? (extlinux with ostree's syslinux menu.)
pub fn boot_once_supported(paths: &Paths) -> bool {
    syslinux_cfg(paths).is_file()
        && std::fs::metadata(ldlinux(paths)).is_ok_and(|m| m.len() >= 2 * ADV_SIZE as u64)
}

/// A kernel to boot: what a boot entry names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub linux: String,
    pub initrd: Option<String>,
    pub options: String,
}

/// `text` with ibu's trial entry (any previous one replaced) at the end.
pub fn with_trial_entry(text: &str, e: &Entry) -> String {
    let mut out = without_trial_entry(text);
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&format!("LABEL {TRIAL_LABEL}\n\tKERNEL {}\n", e.linux));
    if let Some(i) = &e.initrd {
        out.push_str(&format!("\tINITRD {i}\n"));
    }
    out.push_str(&format!("\tAPPEND {} {TRIAL_KARGS}\n", e.options));
    out
}

/// `text` without ibu's trial entry.
pub fn without_trial_entry(text: &str) -> String {
    let mut out = String::new();
    let mut skipping = false;
    for line in text.lines() {
        if let Some(label) = line.trim_start().strip_prefix("LABEL ") {
            skipping = label.trim() == TRIAL_LABEL;
        } else if !line.starts_with(['\t', ' ']) && !line.trim().is_empty() {
            // A top-level directive ends a label block.
            skipping = false;
        }
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Arm the trial boot of `entry`: the menu entry, then the boot-once record.
pub fn arm_trial(paths: &Paths, entry: &Entry) -> Result<()> {
    let cfg = syslinux_cfg(paths);
    let real = cfg
        .canonicalize()
        .with_context(|| format!("resolving {}", cfg.display()))?;
    let text =
        std::fs::read_to_string(&real).with_context(|| format!("reading {}", real.display()))?;
    let new = with_trial_entry(&text, entry);
    if new != text {
        crate::fsutil::write_atomic(&real, new.as_bytes(), 0o644)?;
    }
    set_boot_once(&ldlinux(paths), Some(TRIAL_LABEL))?;
    // syslinux does not replay ext4's journal: without this, a power cut before the kernel
    // checkpoints it leaves syslinux the menu without `ibu-trial` (found by the VM scenario
    // `upgrade-power-cut`: the boot-once was consumed, the label not found, the old default
    // booted).
    if !crate::fsutil::checkpoint_journal(&paths.boot)? {
        tracing::warn!(
            boot = %paths.boot.display(),
            "/boot is on the root filesystem and not ext4: its journal cannot be flushed for \
             the bootloader; a power cut in the next seconds may boot the old stateroot"
        );
    }
    Ok(())
}

/// Clear the boot-once record if it names ibu's trial entry (abort, commit, rollback).
pub fn disarm_trial(paths: &Paths) -> Result<()> {
    let ld = ldlinux(paths);
    if !boot_once_supported(paths) {
        return Ok(());
    }
    if boot_once(&ld)?.as_deref() == Some(TRIAL_LABEL) {
        set_boot_once(&ld, None)?;
    }
    Ok(())
}

fn get32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// syslinux's `syslinux_validate_adv`: the first valid copy of the two.
fn valid_adv(both: &[u8]) -> Option<[u8; ADV_SIZE]> {
    for copy in both.chunks(ADV_SIZE).take(2) {
        if copy.len() == ADV_SIZE
            && get32(copy, 0) == ADV_MAGIC1
            && get32(copy, ADV_SIZE - 4) == ADV_MAGIC3
        {
            let sum = (4..ADV_SIZE - 4)
                .step_by(4)
                .fold(0u32, |s, i| s.wrapping_add(get32(copy, i)));
            if sum == ADV_MAGIC2 {
                let mut a = [0u8; ADV_SIZE];
                a.copy_from_slice(copy);
                return Some(a);
            }
        }
    }
    None
}

/// The tags of an ADV's data area (after the two header words, before the tail word).
fn tags(adv: &[u8; ADV_SIZE]) -> Vec<(u8, Vec<u8>)> {
    let data = &adv[8..ADV_SIZE - 4];
    let mut out = Vec::new();
    let mut i = 0;
    while i + 2 <= data.len() {
        let (tag, len) = (data[i], data[i + 1] as usize);
        if tag == ADV_END || i + 2 + len > data.len() {
            break;
        }
        out.push((tag, data[i + 2..i + 2 + len].to_vec()));
        i += 2 + len;
    }
    out
}

/// syslinux's `cleanup_adv`: an ADV holding `tags`, checksummed, both copies.
fn encode(tags: &[(u8, Vec<u8>)]) -> Result<Vec<u8>> {
    let mut a = [0u8; ADV_SIZE];
    let mut i = 8;
    for (tag, v) in tags {
        if v.len() > 255 || i + 2 + v.len() > ADV_SIZE - 4 {
            bail!("syslinux ADV: no room for tag {tag}");
        }
        a[i] = *tag;
        a[i + 1] = v.len() as u8;
        a[i + 2..i + 2 + v.len()].copy_from_slice(v);
        i += 2 + v.len();
    }
    put32(&mut a, 0, ADV_MAGIC1);
    put32(&mut a, ADV_SIZE - 4, ADV_MAGIC3);
    let sum = (8..ADV_SIZE - 4)
        .step_by(4)
        .fold(0u32, |s, i| s.wrapping_add(get32(&a, i)));
    put32(&mut a, 4, ADV_MAGIC2.wrapping_sub(sum));
    let mut both = a.to_vec();
    both.extend_from_slice(&a);
    Ok(both)
}

fn read_adv(file: &Path) -> Result<(u64, Vec<u8>)> {
    let mut f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let len = f
        .metadata()
        .with_context(|| format!("stat {}", file.display()))?
        .len();
    if len < 2 * ADV_SIZE as u64 {
        bail!("{} is too small to hold a syslinux ADV", file.display());
    }
    let at = len - 2 * ADV_SIZE as u64;
    f.seek(SeekFrom::Start(at))
        .with_context(|| format!("seeking in {}", file.display()))?;
    let mut buf = vec![0u8; 2 * ADV_SIZE];
    f.read_exact(&mut buf)
        .with_context(|| format!("reading the ADV of {}", file.display()))?;
    Ok((at, buf))
}

/// The boot-once label in `ldlinux.sys`'s ADV, if any.
pub fn boot_once(file: &Path) -> Result<Option<String>> {
    let (_, buf) = read_adv(file)?;
    Ok(valid_adv(&buf).and_then(|a| {
        tags(&a)
            .into_iter()
            .find(|(t, _)| *t == ADV_BOOTONCE)
            .map(|(_, v)| String::from_utf8_lossy(&v).into_owned())
    }))
}

/// Set (or with `None` clear) the boot-once label, keeping the ADV's other tags. Written in
/// place (syslinux reads the ADV by sector), synced, the immutable flag lifted meanwhile.
pub fn set_boot_once(file: &Path, label: Option<&str>) -> Result<()> {
    let (at, buf) = read_adv(file)?;
    let mut t: Vec<(u8, Vec<u8>)> = valid_adv(&buf)
        .map(|a| tags(&a))
        .unwrap_or_default()
        .into_iter()
        .filter(|(tag, _)| *tag != ADV_BOOTONCE)
        .collect();
    if let Some(l) = label {
        t.push((ADV_BOOTONCE, l.as_bytes().to_vec()));
    }
    let data = encode(&t)?;
    if data == buf {
        return Ok(());
    }
    with_mutable(file, || {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(file)
            .with_context(|| format!("opening {} for writing", file.display()))?;
        f.seek(SeekFrom::Start(at))
            .with_context(|| format!("seeking in {}", file.display()))?;
        f.write_all(&data)
            .with_context(|| format!("writing the ADV of {}", file.display()))?;
        f.sync_all()
            .with_context(|| format!("syncing {}", file.display()))
    })
}

/// Run `f` with the file's immutable attribute cleared, restoring it after.
fn with_mutable(file: &Path, f: impl FnOnce() -> Result<()>) -> Result<()> {
    use rustix::fs::IFlags;
    let h = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let flags = rustix::fs::ioctl_getflags(&h).ok();
    let immutable = flags.is_some_and(|fl| fl.contains(IFlags::IMMUTABLE));
    if let (true, Some(fl)) = (immutable, flags) {
        rustix::fs::ioctl_setflags(&h, fl - IFlags::IMMUTABLE)
            .with_context(|| format!("clearing the immutable attribute of {}", file.display()))?;
    }
    let r = f();
    if let (true, Some(fl)) = (immutable, flags) {
        rustix::fs::ioctl_setflags(&h, fl)
            .with_context(|| format!("restoring the immutable attribute of {}", file.display()))?;
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_ldlinux(dir: &Path) -> PathBuf {
        let p = dir.join("ldlinux.sys");
        // Code, then an ADV as `extlinux --install` leaves it: valid, no tags.
        let mut bytes = vec![0x90u8; 4096];
        bytes.extend(encode(&[]).unwrap());
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn adv_checksum_is_syslinuxs() {
        let both = encode(&[(ADV_BOOTONCE, b"x".to_vec())]).unwrap();
        let sum = (4..ADV_SIZE - 4)
            .step_by(4)
            .fold(0u32, |s, i| s.wrapping_add(get32(&both, i)));
        assert_eq!(sum, ADV_MAGIC2);
        assert_eq!(&both[..ADV_SIZE], &both[ADV_SIZE..]);
        assert!(valid_adv(&both).is_some());
        let mut bad = both.clone();
        bad[20] ^= 1;
        bad[ADV_SIZE + 20] ^= 1;
        assert!(valid_adv(&bad).is_none());
    }

    #[test]
    fn boot_once_round_trip_keeps_other_tags_and_the_code() {
        let d = tempfile::tempdir().unwrap();
        let p = fake_ldlinux(d.path());
        let code = std::fs::read(&p).unwrap()[..4096].to_vec();
        assert_eq!(boot_once(&p).unwrap(), None);
        // A menu-save tag (2) set by someone else stays.
        let (at, _) = read_adv(&p).unwrap();
        let mut f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.seek(SeekFrom::Start(at)).unwrap();
        f.write_all(&encode(&[(2, b"menu".to_vec())]).unwrap())
            .unwrap();
        drop(f);
        set_boot_once(&p, Some(TRIAL_LABEL)).unwrap();
        assert_eq!(boot_once(&p).unwrap().as_deref(), Some(TRIAL_LABEL));
        let (_, buf) = read_adv(&p).unwrap();
        let t = tags(&valid_adv(&buf).unwrap());
        assert!(t.contains(&(2, b"menu".to_vec())), "{t:?}");
        set_boot_once(&p, None).unwrap();
        assert_eq!(boot_once(&p).unwrap(), None);
        let after = std::fs::read(&p).unwrap();
        assert_eq!(&after[..4096], &code[..], "only the ADV sectors change");
        assert_eq!(after.len(), 4096 + 2 * ADV_SIZE);
    }

    #[test]
    fn an_invalid_adv_is_replaced() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("ldlinux.sys");
        std::fs::write(&p, vec![0u8; 3 * ADV_SIZE]).unwrap();
        assert_eq!(boot_once(&p).unwrap(), None);
        set_boot_once(&p, Some("ibu-trial")).unwrap();
        assert_eq!(boot_once(&p).unwrap().as_deref(), Some("ibu-trial"));
    }

    #[test]
    fn trial_entry_is_appended_once_and_removed() {
        let cfg = "PROMPT 0\nDEFAULT Debian GNU/Linux 12 (ostree:0)\nLABEL Debian GNU/Linux 12 (ostree:0)\n\tKERNEL /ostree/debian-a/vmlinuz\n\tAPPEND root=LABEL=root ostree=/ostree/boot.1/debian/a/0\n";
        let e = Entry {
            linux: "/ostree/debian_1.1.0-b/vmlinuz".into(),
            initrd: Some("/ostree/debian_1.1.0-b/initramfs.img".into()),
            options: "root=LABEL=root ostree=/ostree/boot.1/debian_1.1.0/b/0".into(),
        };
        let once = with_trial_entry(cfg, &e);
        assert_eq!(with_trial_entry(&once, &e), once, "idempotent");
        assert!(once.starts_with(cfg));
        assert!(once.ends_with(&format!(
            "LABEL ibu-trial\n\tKERNEL /ostree/debian_1.1.0-b/vmlinuz\n\tINITRD /ostree/debian_1.1.0-b/initramfs.img\n\tAPPEND root=LABEL=root ostree=/ostree/boot.1/debian_1.1.0/b/0 {TRIAL_KARGS}\n"
        )));
        assert_eq!(without_trial_entry(&once), cfg);
    }
}
