//! Synthetic OS trees for benchmarks: many files of varied sizes, half compressible text,
//! half incompressible bytes, deterministic so that two runs build the same commits.
#![allow(dead_code)]

use crate::common::CommitSpec;

/// Deterministic pseudo-random bytes (xorshift), half of the files compressible text.
pub fn content(seed: u64, len: usize, text: bool) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    const WORDS: [&str; 8] = [
        "ostree ", "seed ", "node ", "upgrade ", "kernel ", "etc ", "var ", "image ",
    ];
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        let r = next();
        if text {
            v.extend_from_slice(WORDS[(r % 8) as usize].as_bytes());
        } else {
            v.extend_from_slice(&r.to_le_bytes());
        }
    }
    v.truncate(len);
    v
}

/// An OS of `files` files; `generation` 1 changes every 10th file, drops 10 and adds 20.
pub fn os(name: &str, version: &str, files: usize, generation: u64) -> CommitSpec {
    let mut spec = CommitSpec::new(name, version).payload_bytes(0);
    for i in 0..files {
        if generation == 1 && i % 200 == 7 {
            continue; // removed in B
        }
        let changed = generation == 1 && i % 10 == 3;
        let size = 1024 + (i * 7919) % (128 * 1024);
        let seed = i as u64 * 31 + if changed { 1_000_003 } else { 0 };
        spec = spec.file(
            format!("usr/lib/bench/{:02}/f{i:05}", i % 64),
            content(seed, size, i % 2 == 0),
        );
    }
    if generation == 1 {
        for j in 0..20 {
            spec = spec.file(
                format!("usr/lib/bench/new/n{j:03}"),
                content(50_000 + j, 32 * 1024, false),
            );
        }
    }
    spec
}
