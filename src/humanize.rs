//! Numbers for people: sizes in binary units, durations in the largest sensible unit.

/// `1536` → `"1.5 KiB"`, `0` → `"0 B"`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// `90` → `"1m30s"`, `3600` → `"1h0m0s"` (Go's `time.Duration` style, which LCA's messages use).
pub fn duration_secs(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn bytes() {
        for (n, want) in [
            (0, "0 B"),
            (1023, "1023 B"),
            (1536, "1.5 KiB"),
            (5 * 1024 * 1024, "5.0 MiB"),
            (3 * 1024_u64.pow(3) / 2, "1.5 GiB"),
        ] {
            assert_eq!(super::bytes(n), want);
        }
    }

    #[test]
    fn durations() {
        for (n, want) in [
            (0, "0s"),
            (59, "59s"),
            (90, "1m30s"),
            (1800, "30m0s"),
            (3661, "1h1m1s"),
        ] {
            assert_eq!(super::duration_secs(n), want);
        }
    }
}
