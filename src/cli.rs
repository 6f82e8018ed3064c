//! The command line: `ibu reconcile | status | plan | validate | set-stage`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};

use crate::facts::{Live, Observe};
use crate::paths::Paths;
use crate::plan;
use crate::reconcile::{self, Exit};
use crate::spec::Stage;
use crate::status::Timestamp;
use crate::status::store::Recorded;

#[derive(Debug, Parser)]
#[command(
    name = "ibu",
    version,
    about = "Image-based upgrades for ostree hosts: a declarative, single-shot reconciler"
)]
pub struct Cli {
    /// Operate on the ostree sysroot in DIR instead of the booted host (as `ostree admin
    /// --sysroot`). DIR/.ibu-sandbox.yaml names the deployment that counts as booted.
    #[arg(long, global = true, value_name = "DIR")]
    pub sysroot: Option<PathBuf>,
    /// The desired-state file [default: /etc/ibu/upgrade.yaml of the booted deployment].
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// More output (-v debug, -vv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only warnings and errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Human,
    Yaml,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Take at most one step towards the desired state, record it, and exit (run by systemd).
    Reconcile,
    /// Show where the node is, what ibu is doing, and what comes next.
    Status {
        #[arg(short, long, value_enum, default_value = "human")]
        output: Format,
    },
    /// Show the steps ibu would take from here; changes nothing.
    Plan,
    /// Check a desired-state document and the ConfigMaps/Secrets it references.
    Validate {
        /// The document [default: the desired-state file].
        file: Option<PathBuf>,
    },
    /// Set spec.stage in the desired-state file (keeps comments; atomic).
    SetStage {
        stage: Stage,
        /// Write even if the stage is not a valid next stage.
        #[arg(long)]
        force: bool,
    },
    /// Make and read seed images.
    #[command(subcommand)]
    Seed(SeedCommand),
    #[command(hide = true, subcommand)]
    Internals(Internals),
}

/// How to reach a registry (as skopeo's options).
#[derive(Debug, clap::Args)]
pub struct RegistryArgs {
    /// containers-auth.json with the registry's credentials (file mode 0600).
    #[arg(long, value_name = "FILE")]
    pub authfile: Option<PathBuf>,
    /// Verify the registry's TLS certificate (false: also allow plain HTTP).
    #[arg(long, value_name = "BOOL")]
    pub tls_verify: Option<bool>,
    /// Directory with extra CA certificates (*.crt) for the registry.
    #[arg(long, value_name = "DIR")]
    pub cert_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum SeedCommand {
    /// Make a seed image of this (seed) host.
    Create {
        /// Push to this image reference.
        #[arg(
            long,
            value_name = "REF",
            conflicts_with = "output",
            required_unless_present = "output"
        )]
        image: Option<String>,
        /// Write to oci:DIR or oci-archive:FILE instead of a registry.
        #[arg(long, value_name = "DEST")]
        output: Option<String>,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Show a seed's info and check it against this host, without pulling it.
    Inspect {
        /// An image reference, oci:DIR or oci-archive:FILE.
        seed: String,
        /// The version the seed must be (like spec.seedImageRef.version).
        #[arg(long)]
        version: Option<String>,
        #[arg(short, long, value_enum, default_value = "human")]
        output: Format,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Show the status of the last `ibu seed create` (SeedGenerator conditions).
    Status,
}

#[derive(Debug, Subcommand)]
pub enum Internals {
    /// Print a JSON Schema.
    Schema {
        #[arg(value_enum)]
        of: SchemaOf,
    },
    /// Print the storage options ibu passes to podman/buildah here, one per line (scripts and
    /// tests use them to share ibu's container storage in a directory sysroot).
    PodmanArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SchemaOf {
    Desired,
    Status,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        <Format as ValueEnum>::from_str(s, true)
    }
}

/// `ibu reconcile`: one pass. Under systemd a wait ends without polling: by the event the
/// planner named (systemd finishing its startup, then one more pass at once) or by
/// ibu-retry.timer starting ibu again later. (The timer call was found missing by the VM
/// scenario upgrade-power-cut: nothing else would have run ibu until the init monitor rolled the
/// upgrade back. The startup wait was added for the upgrade's downtime: the timer's 30 s were
/// most of the margin over a plain reboot.)
fn reconcile_cmd(paths: &Paths, config: &Path) -> Result<u8> {
    let mut ended = reconcile::run(paths, config)?;
    if paths.sandbox.is_some() || !crate::systemd::under_systemd() {
        return Ok(ended.exit() as u8);
    }
    if let reconcile::Ended::Waiting {
        wake_on: plan::WakeOn::SystemStarted,
        max_secs,
    } = ended
    {
        match crate::systemd::wait_for_startup(std::time::Duration::from_secs(max_secs)) {
            Ok(true) => {
                tracing::info!("systemd has finished starting: looking again");
                ended = reconcile::run(paths, config)?;
            }
            Ok(false) => tracing::info!("systemd is still starting after {max_secs}s"),
            Err(e) => tracing::warn!("{e:#}"),
        }
    }
    if let reconcile::Ended::Waiting { .. } = ended
        && let Err(e) = crate::systemd::arm_retry_timer()
    {
        tracing::warn!("{e:#}: ibu runs again only when something else starts it");
    }
    Ok(ended.exit() as u8)
}

/// Entry point for `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    crate::logging::init(if cli.quiet { -1 } else { cli.verbose as i8 });
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(Exit::Error as u8)
        }
    }
}

fn run(cli: Cli) -> Result<u8> {
    let paths = Paths::for_sysroot(cli.sysroot.as_deref())?;
    let config = cli.config.clone().unwrap_or_else(|| paths.desired_file());
    match cli.command {
        Command::Reconcile => reconcile_cmd(&paths, &config),
        Command::Status { output } => status(&paths, &config, output),
        Command::Plan => plan_cmd(&paths, &config),
        Command::Validate { file } => validate(&paths, file.as_deref().unwrap_or(&config)),
        Command::SetStage { stage, force } => set_stage(&paths, &config, stage, force),
        Command::Seed(cmd) => seed(&paths, cmd),
        Command::Internals(Internals::Schema { of }) => {
            let v = match of {
                SchemaOf::Desired => crate::schema::desired_schema(),
                SchemaOf::Status => crate::schema::status_schema(),
            };
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(0)
        }
        Command::Internals(Internals::PodmanArgs) => {
            if let Some((root, runroot)) = paths.podman_storage() {
                println!(
                    "--root\n{}\n--runroot\n{}",
                    root.display(),
                    runroot.display()
                );
            }
            Ok(0)
        }
    }
}

fn status(paths: &Paths, config: &Path, output: Format) -> Result<u8> {
    let recorded = Recorded::load(&paths.state_file())?;
    let desired = reconcile::load_desired(config).map_err(|e| e.to_string());
    match output {
        Format::Human => {
            let facts = Live::new(paths);
            let planned = match &desired {
                Ok((d, _)) => {
                    plan::plan(d, &recorded, &facts, Timestamp::now()).map_err(|e| format!("{e:#}"))
                }
                Err(e) => Err(e.clone()),
            };
            let next = planned
                .as_ref()
                .map(|p| (&p.decision, p.upcoming.as_slice()))
                .map_err(|e| e.clone());
            let ostree = facts.ostree().map_err(|e| format!("{e:#}"));
            let view = crate::render::View {
                desired: desired.as_ref().map(|(d, _)| d).map_err(|e| e.clone()),
                recorded: &recorded,
                next,
                ostree,
            };
            print!("{}", crate::render::human(&view));
        }
        Format::Yaml | Format::Json => {
            let doc =
                crate::render::document(config, desired.as_ref().ok().map(|(d, _)| d), &recorded)?;
            if matches!(output, Format::Yaml) {
                print!("{}", serde_yaml::to_string(&doc)?);
            } else {
                println!("{}", serde_json::to_string_pretty(&doc)?);
            }
        }
    }
    Ok(0)
}

fn plan_cmd(paths: &Paths, config: &Path) -> Result<u8> {
    let (desired, warnings) = match reconcile::load_desired(config) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(Exit::InvalidInput as u8);
        }
    };
    for w in warnings {
        eprintln!("warning: {w}");
    }
    let recorded = Recorded::load(&paths.state_file())?;
    let facts = Live::new(paths);
    let p = match plan::plan(&desired, &recorded, &facts, Timestamp::now()) {
        Ok(p) => p,
        Err(e) => {
            if let Some(r) = e.downcast_ref::<plan::SpecRejected>() {
                eprintln!("error: {}: {r}", config.display());
                return Ok(Exit::InvalidInput as u8);
            }
            return Err(e);
        }
    };
    println!(
        "Desired stage: {} (generation {})",
        desired.stage, p.recorded.generation
    );
    println!("State: {}", crate::render::state_line(&p.recorded));
    match &p.decision {
        plan::Decision::Run(step) => {
            println!("Next step: {} — {}", step.name(), step.describe());
            for s in &p.upcoming {
                println!("Then: {s}");
            }
        }
        plan::Decision::Wait {
            reason,
            retry_after_secs,
            wake_on,
        } => println!(
            "Waiting ({}): {reason}",
            crate::render::wake_text(*wake_on, *retry_after_secs)
        ),
        plan::Decision::Blocked { reason } => println!("Blocked: {reason}"),
        plan::Decision::Converged { summary } => println!("Converged: {summary}"),
    }
    Ok(0)
}

fn validate(paths: &Paths, file: &Path) -> Result<u8> {
    let loaded = match crate::spec::load::load_file(file) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(Exit::InvalidInput as u8);
        }
    };
    for w in &loaded.warnings {
        eprintln!("warning: {w}");
    }
    // References are used from Prep on; while Idle a missing one is only a warning.
    let missing = crate::spec::refs::check(&paths.config_dir(), &loaded.desired);
    let idle = loaded.desired.stage == Stage::Idle;
    for m in &missing {
        eprintln!("{}: {m}", if idle { "warning" } else { "error" });
    }
    if !missing.is_empty() && !idle {
        return Ok(Exit::InvalidInput as u8);
    }
    println!(
        "{}: valid ({}, stage {})",
        file.display(),
        loaded.desired.api_version.as_str(),
        loaded.desired.stage
    );
    Ok(0)
}

fn set_stage(paths: &Paths, config: &Path, stage: Stage, force: bool) -> Result<u8> {
    let recorded = Recorded::load(&paths.state_file())?;
    let valid = &recorded.status.valid_next_stages;
    let current = reconcile::load_desired(config).ok().map(|(d, _)| d.stage);
    if !force
        && current != Some(stage)
        && !recorded.status.conditions.is_empty()
        && !valid.contains(&stage)
    {
        let v: Vec<&str> = valid.iter().map(|s| s.as_str()).collect();
        eprintln!(
            "error: {} (valid next stages: {}; --force writes it anyway)",
            crate::stage::MSG_TRANSITION_NOT_PERMITTED,
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(", ")
            }
        );
        return Ok(Exit::InvalidInput as u8);
    }
    let text = match std::fs::read_to_string(config) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            "apiVersion: lca.openshift.io/v1\nkind: ImageBasedUpgrade\nmetadata:\n  name: upgrade\n"
                .to_string()
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", config.display())),
    };
    let edited = crate::edit::set_stage_in_text(&text, stage)?;
    match crate::spec::load::parse_str(&edited, &config.display().to_string()) {
        Ok(l) if l.desired.stage == stage => {}
        Ok(l) => bail!(
            "internal: edited document says stage {}, not {stage}",
            l.desired.stage
        ),
        Err(e) => {
            eprintln!("error: the document would be invalid with stage {stage}: {e}");
            return Ok(Exit::InvalidInput as u8);
        }
    }
    let mode = std::fs::metadata(config)
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777)
        .unwrap_or(0o644);
    if let Some(dir) = config.parent() {
        crate::fsutil::create_dir_all(dir, 0o755)?;
    }
    crate::fsutil::write_atomic(config, edited.as_bytes(), mode)?;
    println!("{}: spec.stage = {stage}", config.display());
    Ok(0)
}

impl RegistryArgs {
    fn client_options(&self) -> crate::registry::ClientOptions {
        crate::registry::ClientOptions {
            authfile: self.authfile.clone(),
            tls_verify: self.tls_verify,
            cert_dir: self.cert_dir.clone(),
            ..crate::registry::ClientOptions::default()
        }
    }
}

fn seed(paths: &Paths, cmd: SeedCommand) -> Result<u8> {
    use crate::seed::create::{Output, PushOptions};
    match cmd {
        SeedCommand::Create {
            image,
            output,
            registry,
        } => {
            let dest = image
                .or(output)
                .context("--image or --output is required")?;
            let out = match Output::parse(&dest) {
                Ok(o) => o,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    return Ok(Exit::InvalidInput as u8);
                }
            };
            let push = PushOptions {
                authfile: registry.authfile,
                tls_verify: registry.tls_verify,
                cert_dir: registry.cert_dir,
            };
            let c = crate::seed::create::create(paths, &out, &push)?;
            println!(
                "Seed {} {} ({}, {} layers, {}) in {:.1}s",
                c.output,
                c.manifest_digest,
                c.info.version,
                c.layers,
                crate::humanize::bytes(c.image_bytes),
                c.seconds
            );
            Ok(0)
        }
        SeedCommand::Inspect {
            seed,
            version,
            output,
            registry,
        } => {
            let scratch = tempfile::Builder::new()
                .prefix("ibu-inspect-")
                .tempdir()
                .context("creating a scratch directory")?;
            let src = crate::seed::inspect::open_source(
                &seed,
                &registry.client_options(),
                scratch.path(),
            )?;
            let i = crate::seed::inspect::inspect(paths, src.as_ref(), version.as_deref())?;
            match output {
                Format::Human => print!("{}", crate::seed::inspect::render(&i)),
                Format::Yaml => print!("{}", serde_yaml::to_string(&i)?),
                Format::Json => println!("{}", serde_json::to_string_pretty(&i)?),
            }
            Ok(if i.compatible { 0 } else { Exit::Blocked as u8 })
        }
        SeedCommand::Status => {
            let p = paths.state_dir().join("seedgen.yaml");
            match std::fs::read_to_string(&p) {
                Ok(t) => {
                    print!("{t}");
                    Ok(0)
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    println!("no seed has been created on this host");
                    Ok(0)
                }
                Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
            }
        }
    }
}
