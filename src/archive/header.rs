//! Encoding of one entry's header blocks: an optional PAX extended header (`x`) followed by a
//! POSIX ustar header.
//!
//! Values that fit the ustar fields go there (octal, as every reader understands); names longer
//! than the ustar name/prefix split, numbers too large for the octal fields, sub-second mtimes and
//! every xattr go to PAX records. Fields that depend on when or by whom the archive was made are
//! never written: no atime or ctime, no user or group names (owners are numeric, so extraction
//! never maps a name through the target's passwd file), the PAX header itself has mode 0644,
//! owner 0 and mtime 0.

use anyhow::{Result, bail};

use super::meta::{EntryKind, Meta};
use super::pax;

pub(crate) const BLOCK: u64 = 512;
/// Largest value of the 8-byte octal fields (mode, uid, gid, device numbers).
const MAX_OCTAL_8: u64 = 0o7_777_777;
/// Largest value of the 12-byte octal fields (size, mtime).
const MAX_OCTAL_12: u64 = 0o77_777_777_777;

/// Bytes of zero padding after `len` bytes of data.
pub(crate) fn padding(len: u64) -> u64 {
    (BLOCK - len % BLOCK) % BLOCK
}

/// The header blocks for an entry named `path` (relative, `/`-separated, no trailing slash)
/// whose data is `size` bytes (0 unless a regular file).
pub(crate) fn encode(path: &[u8], kind: &EntryKind, meta: &Meta, size: u64) -> Result<Vec<u8>> {
    if path.is_empty() {
        bail!("empty entry name");
    }
    let mut name = path.to_vec();
    if matches!(kind, EntryKind::Dir) {
        name.push(b'/');
    }
    let mut records = Vec::new();
    let mut header = tar::Header::new_ustar();

    let (ustar_prefix, ustar_name) = match split_ustar(&name) {
        Some(split) => split,
        None => {
            pax::push_record(&mut records, "path", &name);
            (&[][..], &name[..name.len().min(100)])
        }
    };

    let link: Option<&[u8]> = match kind {
        EntryKind::Symlink { target } | EntryKind::Hardlink { target } => {
            let bytes = target.as_os_str().as_encoded_bytes();
            if bytes.is_empty() {
                bail!("empty link target");
            }
            Some(bytes)
        }
        _ => None,
    };
    if let Some(link) = link
        && link.len() > 100
    {
        pax::push_record(&mut records, "linkpath", link);
    }

    if size > MAX_OCTAL_12 {
        pax::push_record(&mut records, "size", size.to_string().as_bytes());
    }
    let uid = u64::from(meta.uid);
    if uid > MAX_OCTAL_8 {
        pax::push_record(&mut records, "uid", uid.to_string().as_bytes());
    }
    let gid = u64::from(meta.gid);
    if gid > MAX_OCTAL_8 {
        pax::push_record(&mut records, "gid", gid.to_string().as_bytes());
    }
    let mtime_fits = meta.mtime.secs >= 0 && meta.mtime.secs as u64 <= MAX_OCTAL_12;
    if !mtime_fits || meta.mtime.nanos != 0 {
        pax::push_record(
            &mut records,
            "mtime",
            pax::format_mtime(meta.mtime).as_bytes(),
        );
    }
    for (key, value) in &meta.xattrs {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            bail!("xattr name {key:?} cannot be archived");
        }
        pax::push_record(&mut records, &format!("{}{key}", pax::XATTR_PREFIX), value);
    }

    let mut out = Vec::with_capacity(3 * BLOCK as usize);
    if !records.is_empty() {
        let mut x = tar::Header::new_ustar();
        let base = name
            .strip_suffix(b"/")
            .unwrap_or(&name)
            .rsplit(|b| *b == b'/')
            .next()
            .unwrap_or_default();
        let mut xname = b"PaxHeaders/".to_vec();
        xname.extend_from_slice(&base[..base.len().min(100 - xname.len())]);
        set_bytes(&mut x, Field::Name, &xname);
        x.set_mode(0o644);
        x.set_uid(0);
        x.set_gid(0);
        x.set_mtime(0);
        x.set_size(records.len() as u64);
        x.set_entry_type(tar::EntryType::XHeader);
        zero_devices(&mut x)?;
        x.set_cksum();
        out.extend_from_slice(x.as_bytes());
        out.extend_from_slice(&records);
        out.resize(out.len() + padding(records.len() as u64) as usize, 0);
    }

    set_bytes(&mut header, Field::Name, ustar_name);
    set_bytes(&mut header, Field::Prefix, ustar_prefix);
    if let Some(link) = link {
        set_bytes(&mut header, Field::Link, &link[..link.len().min(100)]);
    }
    header.set_mode(meta.mode & 0o7777);
    // Values too large for octal also go into the header, base-256 encoded (the `tar` crate does
    // that for them): readers that frame entries by the header size alone — ibu's extraction
    // among them — then agree with those that read the PAX record.
    header.set_uid(uid);
    header.set_gid(gid);
    header.set_size(size);
    header.set_mtime(if mtime_fits {
        meta.mtime.secs as u64
    } else {
        0
    });
    header.set_entry_type(match kind {
        EntryKind::File => tar::EntryType::Regular,
        EntryKind::Dir => tar::EntryType::Directory,
        EntryKind::Symlink { .. } => tar::EntryType::Symlink,
        EntryKind::Hardlink { .. } => tar::EntryType::Link,
        EntryKind::CharDevice { .. } => tar::EntryType::Char,
        EntryKind::BlockDevice { .. } => tar::EntryType::Block,
        EntryKind::Fifo => tar::EntryType::Fifo,
    });
    match kind {
        EntryKind::CharDevice { major, minor } | EntryKind::BlockDevice { major, minor } => {
            if u64::from(*major) > MAX_OCTAL_8 || u64::from(*minor) > MAX_OCTAL_8 {
                bail!("device number {major}:{minor} does not fit a tar header");
            }
            header.set_device_major(*major)?;
            header.set_device_minor(*minor)?;
        }
        _ => zero_devices(&mut header)?,
    }
    header.set_cksum();
    out.extend_from_slice(header.as_bytes());
    Ok(out)
}

fn zero_devices(h: &mut tar::Header) -> Result<()> {
    h.set_device_major(0)?;
    h.set_device_minor(0)?;
    Ok(())
}

enum Field {
    Name,
    Prefix,
    Link,
}

/// Copy raw name bytes into a ustar field (the caller made sure they fit).
fn set_bytes(h: &mut tar::Header, field: Field, bytes: &[u8]) {
    if let Some(u) = h.as_ustar_mut() {
        let dst: &mut [u8] = match field {
            Field::Name => &mut u.name,
            Field::Prefix => &mut u.prefix,
            Field::Link => &mut u.linkname,
        };
        dst.fill(0);
        let n = bytes.len().min(dst.len());
        dst[..n].copy_from_slice(&bytes[..n]);
    }
}

/// Split a name into ustar (prefix, name) if it fits: name up to 100 bytes, or a prefix up to
/// 155 bytes and a non-empty name up to 100 bytes separated at a `/`.
fn split_ustar(name: &[u8]) -> Option<(&[u8], &[u8])> {
    if name.len() <= 100 {
        return Some((&[], name));
    }
    if name.len() > 256 {
        return None;
    }
    // The shortest prefix that leaves a name of at most 100 bytes (directories end in '/', which
    // stays with the name part).
    let body = name.strip_suffix(b"/").unwrap_or(name);
    let start = name.len().saturating_sub(101);
    (start..body.len())
        .find(|&i| body[i] == b'/')
        .filter(|&i| i <= 155 && i > 0 && name.len() - i - 1 <= 100 && i + 1 < body.len())
        .map(|i| (&name[..i], &name[i + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ustar_split() {
        assert_eq!(split_ustar(b"a/b"), Some((&b""[..], &b"a/b"[..])));
        let long = format!("{}/{}", "p".repeat(120), "n".repeat(60));
        let (p, n) = split_ustar(long.as_bytes()).unwrap();
        assert_eq!(p.len(), 120);
        assert_eq!(n.len(), 60);
        // A single long component cannot be split.
        assert_eq!(split_ustar("x".repeat(150).as_bytes()), None);
        // A prefix over 155 bytes cannot be used.
        let deep = format!("{}/{}", "p".repeat(160), "n".repeat(20));
        assert_eq!(split_ustar(deep.as_bytes()), None);
    }

    #[test]
    fn large_numbers_go_to_pax_and_base256_header_fields() {
        let mut meta = Meta::root(0o644);
        meta.uid = 3_000_000;
        meta.mtime = super::super::meta::Mtime { secs: -5, nanos: 0 };
        let size = 9u64 << 30;
        let bytes = encode(b"big", &EntryKind::File, &meta, size).unwrap();
        let records = &bytes[512..];
        let text = String::from_utf8_lossy(records);
        assert!(text.contains(" size=9663676416\n"), "{text}");
        assert!(text.contains(" uid=3000000\n"), "{text}");
        assert!(text.contains(" mtime=-5\n"), "{text}");
        let main = tar::Header::from_byte_slice(&bytes[bytes.len() - 512..]);
        // Readers that frame by the header alone see the same size (base-256 encoded).
        assert_eq!(main.entry_size().unwrap(), size);
        assert_eq!(main.uid().unwrap(), 3_000_000);
        assert_eq!(main.mtime().unwrap(), 0);
    }

    #[test]
    fn long_names_go_to_pax_and_the_crate_reads_them() {
        let name = format!("{}/{}", "d".repeat(200), "f".repeat(150));
        let mut meta = Meta::root(0o644);
        meta.xattrs.insert("user.k".into(), b"v\0\xff".to_vec());
        let mut bytes = encode(name.as_bytes(), &EntryKind::File, &meta, 3).unwrap();
        bytes.extend_from_slice(b"abc");
        bytes.resize(bytes.len() + padding(3) as usize + 1024, 0);
        let mut ar = tar::Archive::new(&bytes[..]);
        let mut e = ar.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(&*e.path_bytes(), name.as_bytes());
        let exts: Vec<(String, Vec<u8>)> = e
            .pax_extensions()
            .unwrap()
            .unwrap()
            .map(|x| {
                let x = x.unwrap();
                (x.key().unwrap().to_string(), x.value_bytes().to_vec())
            })
            .collect();
        assert!(exts.contains(&("SCHILY.xattr.user.k".into(), b"v\0\xff".to_vec())));
    }
}
