//! `vmtests`: build the VM images, run scenarios in QEMU, generate ibu's Ignition configs.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

use ibu_vmtests::harness::{Run, Verdict};
use ibu_vmtests::{ignition, image, repo_root, report, scenarios};

#[derive(Parser)]
#[command(
    name = "vmtests",
    about = "ibu's VM test suite (QEMU/TCG, Debian ostree images, Ignition)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the images (or find them in the cache, $IBU_VMTESTS_CACHE or /var/cache/ibu-vmtests).
    Build {
        /// Rebuild even if the cache has them.
        #[arg(long)]
        force: bool,
    },
    /// Run scenarios (names from `list`, or `all`).
    Run {
        #[arg(required = true)]
        scenarios: Vec<String>,
        /// The ibu binary to test (default: `cargo build --release -p ibu` and use that).
        #[arg(long, env = "IBU_VMTESTS_IBU")]
        ibu: Option<PathBuf>,
        /// Keep the VM disks of passed scenarios (under target/vmtests/runs/).
        #[arg(long)]
        keep_disks: bool,
    },
    /// List the scenarios.
    List,
    /// Generate ibu's Ignition configs and MachineConfigs from ignition/*.bu.
    Ignition {
        /// Only check that the generated files are up to date and valid.
        #[arg(long)]
        check: bool,
    },
}

fn main() -> ExitCode {
    report::init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vmtests: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let repo = repo_root();
    match cli.command {
        Command::List => {
            for s in scenarios::ALL {
                println!("{:<14} {}", s.name, s.about);
            }
        }
        Command::Ignition { check } => {
            ignition::write_or_check(&repo, !check)?;
            for g in ignition::generate(&repo)? {
                if g.path.extension().is_some_and(|e| e == "ign") {
                    ignition::validate_file(&repo.join(&g.path))?;
                    println!("{}: valid", g.path.display());
                }
            }
        }
        Command::Build { force } => {
            need_root("building the images")?;
            let images = image::ensure(&repo, force)?;
            println!("{}", images.dir.display());
        }
        Command::Run {
            scenarios: names,
            ibu,
            keep_disks,
        } => {
            let selected = select(&names)?;
            let t = Instant::now();
            if std::env::var_os("IBU_VMTESTS_IMAGES").is_none()
                && !image::cache_root().join(image::input_key(&repo)?).exists()
            {
                need_root("building the images")?;
            }
            let images = image::ensure(&repo, false)?;
            report::note(&format!("images ready ({})", report::secs(t.elapsed())));
            let ibu = match ibu {
                Some(p) => p,
                None => build_ibu(&repo)?,
            };
            let dir = repo.join("target/vmtests/runs").join(timestamp());
            let run = Run::prepare(&repo, images, ibu, dir.clone(), keep_disks)?;
            report::note(&format!("run directory {}", dir.display()));
            let attempts: Vec<Vec<_>> = selected.iter().map(|s| run.scenario_attempts(s)).collect();
            eprintln!();
            let mut summary = String::new();
            for o in attempts.iter().flatten() {
                let boots: Vec<String> = o.boots.iter().map(|b| format!("{b:.0}s")).collect();
                summary.push_str(&format!(
                    "{:<8} {:<14} {:>6.0}s  boots: {}{}\n",
                    format!("{:?}", o.verdict).to_uppercase(),
                    if o.attempt == 1 {
                        o.name.to_string()
                    } else {
                        format!("{} #{}", o.name, o.attempt)
                    },
                    o.seconds,
                    boots.join(" "),
                    if o.hangs > 0 {
                        format!("  hung boots: {}", o.hangs)
                    } else {
                        String::new()
                    }
                ));
                // The reason again, so that the last lines of a long log say why.
                if let Some(e) = &o.error {
                    summary.push_str(&format!("         {}\n", report::truncate(e, 1500)));
                }
            }
            eprint!("{summary}");
            let _ = fs_err::write(dir.join("summary.txt"), &summary);
            // A scenario counts by its last attempt.
            let passed = attempts
                .iter()
                .filter(|a| a.last().is_some_and(|o| o.verdict == Verdict::Passed))
                .count();
            let failed = attempts.len() - passed;
            // The plain closing line CI reads.
            println!("vmtests: {passed} passed, {failed} failed");
            if failed > 0 {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn select(names: &[String]) -> Result<Vec<&'static ibu_vmtests::harness::Scenario>> {
    if names.iter().any(|n| n == "all") {
        return Ok(scenarios::ALL.iter().collect());
    }
    names
        .iter()
        .map(|n| {
            scenarios::find(n).with_context(|| {
                let known: Vec<&str> = scenarios::ALL.iter().map(|s| s.name).collect();
                format!("no scenario {n:?}; known: {}", known.join(", "))
            })
        })
        .collect()
}

/// Build ibu (release) and return the binary's path.
fn build_ibu(repo: &std::path::Path) -> Result<PathBuf> {
    let t = Instant::now();
    let sh = xshell::Shell::new()?;
    sh.change_dir(repo);
    xshell::cmd!(sh, "cargo build --release --locked -p ibu --bin ibu")
        .quiet()
        .run()
        .context("building ibu")?;
    let bin = repo.join("target/release/ibu");
    report::note(&format!(
        "ibu under test: {} (cargo build {})",
        bin.display(),
        report::secs(t.elapsed())
    ));
    Ok(bin)
}

fn need_root(what: &str) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("{what} needs root (mmdebstrap, loop devices, mounts): run with sudo");
    }
    Ok(())
}

fn timestamp() -> String {
    let out = std::process::Command::new("date")
        .arg("+%Y%m%d-%H%M%S")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    if out.is_empty() {
        format!("{}", std::process::id())
    } else {
        out
    }
}
