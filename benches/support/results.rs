//! Shared by the benchmarks: statistics and the committed results file `benches/RESULTS.md`.
#![allow(dead_code)]

use std::time::Duration;

use anyhow::{Context, Result};

pub struct Stats {
    pub median: Duration,
    pub p10: Duration,
    pub p90: Duration,
}

impl Stats {
    pub fn of(samples: &mut [Duration]) -> Stats {
        samples.sort();
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
        Stats {
            median: at(0.5),
            p10: at(0.1),
            p90: at(0.9),
        }
    }
    pub fn median_ms(&self) -> String {
        ms(self.median)
    }
    pub fn p10_ms(&self) -> String {
        ms(self.p10)
    }
    pub fn p90_ms(&self) -> String {
        ms(self.p90)
    }
}

pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Replace (or append) the section `name` of `benches/RESULTS.md`.
pub fn write_section(name: &str, what: &str, command: &str, body: &str) -> Result<()> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/RESULTS.md");
    let text = std::fs::read_to_string(path).unwrap_or_else(|_| {
        "# Benchmark results\n\nEach section is rewritten by the command it names. Machine: see \
         each section.\n"
            .to_string()
    });
    let begin = format!("<!-- begin {name} -->");
    let end = format!("<!-- end {name} -->");
    let machine = machine();
    let section = format!(
        "{begin}\n## {name}\n\n{what}\n\nCommand: `{command}`\n\nMachine: {machine}\n\n{body}{end}"
    );
    let new = match (text.find(&begin), text.find(&end)) {
        (Some(b), Some(e)) if e > b => {
            format!("{}{section}{}", &text[..b], &text[e + end.len()..])
        }
        _ => format!("{}\n{section}\n", text.trim_end()),
    };
    std::fs::write(path, new).with_context(|| format!("writing {path}"))
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let date = chrono::Utc::now().format("%Y-%m-%d");
    format!("{cpus} CPUs ({model}), measured {date}")
}
