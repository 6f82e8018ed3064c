//! What the harness tells its reader: one line per step with the time since the start of the
//! run and the step's own duration.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::Result;

fn start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// Start the clock (the first call of anything here does too).
pub fn init() {
    start();
}

fn stamp() -> String {
    format!("[{:7.1}s]", start().elapsed().as_secs_f64())
}

/// A line of information.
pub fn note(msg: &str) {
    eprintln!("{} {msg}", stamp());
}

/// Run one step of a scenario: `-> what` when it starts, `ok what (1.2s)` or `FAILED what` when
/// it ends.
pub fn step<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    eprintln!("{} -> {what}", stamp());
    let t = Instant::now();
    let r = f();
    match &r {
        Ok(_) => eprintln!("{}    ok {what} ({})", stamp(), secs(t.elapsed())),
        Err(e) => eprintln!(
            "{}    FAILED {what} ({}): {e:#}",
            stamp(),
            secs(t.elapsed())
        ),
    }
    r
}

/// The first `n` characters of `s`.
pub fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

pub fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// Terminal escape sequences (systemd colours its console lines) make logs hard to read.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        if c == '\r' || (c.is_control() && c != '\n' && c != '\t') {
            continue;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn strips_colours() {
        assert_eq!(
            super::strip_ansi("[\u{1b}[0;32m  OK  \u{1b}[0m] Started x.\r\n"),
            "[  OK  ] Started x.\n"
        );
    }
}
