//! PAX extended header records (POSIX.1-2001 `pax` format): `"<len> <key>=<value>\n"`, where
//! `<len>` counts the whole record including itself.
//!
//! Keys ibu writes: `path` and `linkpath` (names that do not fit the ustar fields), `size`,
//! `uid`, `gid` (values too large for the octal fields), `mtime` (sub-second or out-of-range
//! times) and `SCHILY.xattr.<name>` (every extended attribute, raw value bytes, the convention of
//! GNU tar, libarchive, Go's archive/tar and so podman). Keys it reads on top of those the `tar`
//! crate handles: `mtime`, `SCHILY.xattr.*` and GNU tar's `RHT.security.selinux`.

use anyhow::{Context, Result, bail};

use super::meta::Mtime;

/// Prefix of the xattr records.
pub const XATTR_PREFIX: &str = "SCHILY.xattr.";
/// GNU tar's `--selinux` record (the label without the xattr name).
pub const RHT_SELINUX: &str = "RHT.security.selinux";

/// Append one record to `out`.
pub fn push_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    // The length field counts its own digits: find the fixed point.
    let rest = 1 + key.len() + 1 + value.len() + 1; // ' ' key '=' value '\n'
    let mut len = rest + 1;
    while rest + decimal_digits(len) != len {
        len = rest + decimal_digits(len);
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key.as_bytes());
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

fn decimal_digits(mut n: usize) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

/// Parse the records of a PAX extended header by their lengths (values are binary: an xattr value
/// may contain newlines, `=` or NUL, which a line-based parser gets wrong). Trailing NUL padding
/// is ignored.
pub fn parse_records(mut data: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    while !data.is_empty() {
        if data.iter().all(|b| *b == 0) {
            break;
        }
        let space = data
            .iter()
            .take(20)
            .position(|b| *b == b' ')
            .context("PAX record without a length")?;
        let len: usize = std::str::from_utf8(&data[..space])
            .ok()
            .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|t| t.parse().ok())
            .context("PAX record with a bad length")?;
        if len <= space + 2 || len > data.len() {
            bail!("PAX record length {len} out of range");
        }
        let record = &data[..len];
        if record[len - 1] != b'\n' {
            bail!("PAX record does not end with a newline");
        }
        let kv = &record[space + 1..len - 1];
        let eq = kv
            .iter()
            .position(|b| *b == b'=')
            .context("PAX record without `=`")?;
        if eq == 0 {
            bail!("PAX record with an empty key");
        }
        out.push((kv[..eq].to_vec(), kv[eq + 1..].to_vec()));
        data = &data[len..];
    }
    Ok(out)
}

/// PAX text form of an mtime: `secs[.fraction]`, the fraction without trailing zeros.
pub fn format_mtime(t: Mtime) -> String {
    if t.nanos == 0 {
        return t.secs.to_string();
    }
    // A negative time with a fraction is "-(whole).(frac)" counted away from zero.
    let (sign, whole, frac) = if t.secs < 0 {
        ("-", -(t.secs + 1), 1_000_000_000 - t.nanos)
    } else {
        ("", t.secs, t.nanos)
    };
    let frac = format!("{frac:09}");
    format!("{sign}{whole}.{}", frac.trim_end_matches('0'))
}

/// Parse a PAX time (`"1700000000.5"`, `"-1.25"`, `"12"`).
pub fn parse_mtime(value: &[u8]) -> Result<Mtime> {
    let text = std::str::from_utf8(value).context("PAX mtime is not text")?;
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        bail!("bad PAX mtime {text:?}");
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        bail!("bad PAX mtime {text:?}");
    }
    let whole: i64 = whole
        .parse()
        .with_context(|| format!("PAX mtime {text:?} out of range"))?;
    // Nanosecond precision is all a filesystem keeps; further digits are dropped.
    let mut nanos: u32 = 0;
    for (i, b) in frac.bytes().take(9).enumerate() {
        nanos += u32::from(b - b'0') * 10u32.pow(8 - i as u32);
    }
    Ok(match (negative, nanos) {
        (false, _) => Mtime { secs: whole, nanos },
        (true, 0) => Mtime {
            secs: -whole,
            nanos: 0,
        },
        (true, n) => Mtime {
            secs: -whole - 1,
            nanos: 1_000_000_000 - n,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_length_counts_itself() {
        for (key, value) in [
            ("path", "a".to_string()),
            ("path", "b".repeat(5)),
            ("path", "c".repeat(90)),
            ("path", "d".repeat(994)),
            ("path", "e".repeat(9990)),
        ] {
            let mut out = Vec::new();
            push_record(&mut out, key, value.as_bytes());
            let text = String::from_utf8(out.clone()).unwrap();
            let (len, _) = text.split_once(' ').unwrap();
            assert_eq!(len.parse::<usize>().unwrap(), out.len(), "{text:?}");
            // The tar crate parses what we write.
            let exts: Vec<_> = tar::PaxExtensions::new(&out)
                .map(|e| e.unwrap().value_bytes().to_vec())
                .collect();
            assert_eq!(exts, vec![value.as_bytes().to_vec()]);
        }
    }

    #[test]
    fn binary_values_parse_by_length() {
        let mut out = Vec::new();
        push_record(&mut out, "SCHILY.xattr.user.a", b"x\ny=z\0\n");
        push_record(&mut out, "path", b"a/b");
        let recs = parse_records(&out).unwrap();
        assert_eq!(
            recs,
            vec![
                (b"SCHILY.xattr.user.a".to_vec(), b"x\ny=z\0\n".to_vec()),
                (b"path".to_vec(), b"a/b".to_vec())
            ]
        );
        for bad in [
            &b"5 a=b\n"[..],
            b"x a=b\n",
            b"6 ab\n\n",
            b"99 a=b\n",
            b"6 a=bX",
        ] {
            assert!(
                parse_records(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn mtimes_round_trip() {
        for t in [
            Mtime::from_secs(0),
            Mtime::from_secs(1_700_000_000),
            Mtime {
                secs: 1_700_000_000,
                nanos: 123_456_789,
            },
            Mtime {
                secs: 5,
                nanos: 500_000_000,
            },
            Mtime::from_secs(-3),
            Mtime {
                secs: -2,
                nanos: 750_000_000,
            },
        ] {
            let text = format_mtime(t);
            assert_eq!(parse_mtime(text.as_bytes()).unwrap(), t, "{text}");
        }
        assert_eq!(
            format_mtime(Mtime {
                secs: 5,
                nanos: 500_000_000
            }),
            "5.5"
        );
        assert_eq!(
            format_mtime(Mtime {
                secs: -2,
                nanos: 750_000_000
            }),
            "-1.25"
        );
        assert!(parse_mtime(b"x").is_err());
        assert!(parse_mtime(b"1.x").is_err());
        assert!(parse_mtime(b"").is_err());
    }
}
