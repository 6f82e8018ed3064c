//! What every scenario gets: the images, the ibu binary under test, a per-run SSH key, a
//! directory for its logs, and `provision` to bring up a VM with Ignition. The runner collects
//! diagnostics from the scenario's VMs when it fails and shuts them down in any case.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::Value as Json;
use sha2::Digest;

use crate::http::FileServer;
use crate::ignition::{self, RunConfig};
use crate::image::Images;
use crate::registry::Registry;
use crate::report;
use crate::scenarios::node::NodeKeys;
use crate::vm::{Hang, Timeouts, Vm, VmSpec};

/// A scenario: a name for the command line, a sentence for `list`, and the function.
pub struct Scenario {
    pub name: &'static str,
    pub about: &'static str,
    pub run: fn(&Harness) -> Result<()>,
}

pub struct Harness {
    pub repo: PathBuf,
    pub images: Images,
    /// The ibu binary under test, injected into each VM by Ignition.
    pub ibu: PathBuf,
    /// This scenario's directory (one subdirectory per VM).
    pub dir: PathBuf,
    pub timeouts: Timeouts,
    ssh_key: PathBuf,
    ssh_public_key: String,
    ibu_url: String,
    ibu_sha512: String,
    vms: RefCell<Vec<Rc<Vm>>>,
    /// What the run's scenarios share (the registry, the seed once made).
    pub shared: Rc<Shared>,
}

/// Which OS a VM's disk has deployed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Os {
    /// 1.0.0: what targets run.
    Old,
    /// 1.1.0: what the seed VM runs.
    New,
}

/// A seed in the run's registry, made by `ibu seed create` on a seed VM.
#[derive(Debug, Clone)]
pub struct Seed {
    /// As guests name it.
    pub image: String,
    pub version: String,
    /// The workload images the seed VM had (its `containers.list`), as guests name them.
    pub workloads: Vec<String>,
    /// The seed VM's key material (in the seed: every target's new stateroot starts with it).
    pub keys: NodeKeys,
}

/// Started lazily by the first scenario that needs them; shared by the run's scenarios.
pub struct Shared {
    dir: PathBuf,
    registry: RefCell<Option<Rc<Registry>>>,
    workloads: RefCell<Option<Vec<String>>>,
    pub seed: RefCell<Option<Seed>>,
    /// The key material of the nodes this run upgraded from the seed, in order.
    pub upgraded: RefCell<Vec<NodeKeys>>,
}

impl Shared {
    /// The run's registry (started on first use).
    pub fn registry(&self) -> Result<Rc<Registry>> {
        if let Some(r) = self.registry.borrow().as_ref() {
            return Ok(r.clone());
        }
        let r = Rc::new(report::step(
            "a registry on the host (docker-registry, htpasswd)",
            || Registry::start(&self.dir.join("registry")),
        )?);
        *self.registry.borrow_mut() = Some(r.clone());
        Ok(r)
    }

    /// The workload images, built and pushed on first use.
    pub fn workloads(&self) -> Result<Vec<String>> {
        if let Some(w) = self.workloads.borrow().as_ref() {
            return Ok(w.clone());
        }
        let registry = self.registry()?;
        let dir = self.dir.join("workloads");
        fs_err::create_dir_all(&dir)?;
        let w = report::step("workload images built on the host and pushed", || {
            crate::workloads::publish(&registry, &dir)
        })?;
        *self.workloads.borrow_mut() = Some(w.clone());
        Ok(w)
    }
}

impl Harness {
    /// Provision a VM on the old OS; see [`Harness::provision_os`].
    pub fn provision(&self, name: &str, extra: Vec<Json>) -> Result<Rc<Vm>> {
        self.provision_os(name, Os::Old, extra)
    }

    /// Provision a VM from a pristine disk: ibu's shipped Ignition configs, the run's SSH key
    /// and ibu binary, then `extra` configs (see `ignition::files_config`), and wait for the
    /// first boot to be up.
    pub fn provision_os(&self, name: &str, os: Os, extra: Vec<Json>) -> Result<Rc<Vm>> {
        let config = ignition::vm_config(
            &self.repo,
            &RunConfig {
                ssh_public_key: &self.ssh_public_key,
                ibu_url: &self.ibu_url,
                ibu_sha512: &self.ibu_sha512,
                extra,
            },
        )?;
        let vm = Rc::new(Vm::create(VmSpec {
            name,
            base_disk: match os {
                Os::Old => &self.images.disk,
                Os::New => &self.images.disk_new,
            },
            ignition: &config,
            ssh_key: &self.ssh_key,
            dir: self.dir.join(name),
            memory_mib: 2048,
            cpus: 2,
            timeouts: self.timeouts.clone(),
        })?);
        self.vms.borrow_mut().push(vm.clone());
        report::step(&format!("VM {name}: first boot (Ignition)"), || {
            vm.power_on()
        })?;
        Ok(vm)
    }

    /// The sha256 of the ibu binary under test.
    pub fn ibu_sha256(&self) -> Result<String> {
        Ok(hex(&sha2::Sha256::digest(fs_err::read(&self.ibu)?)))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// How a scenario ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Passed,
    Failed,
    /// A boot hung more often than the watchdog retries (not a failure of ibu).
    Hung,
}

pub struct Outcome {
    pub name: &'static str,
    /// 1, or 2 when the scenario was run again after a hung boot.
    pub attempt: u32,
    pub verdict: Verdict,
    pub seconds: f64,
    pub hangs: u32,
    pub boots: Vec<f64>,
    /// Why it failed, the whole error chain on one line (none when it passed).
    pub error: Option<String>,
}

/// Everything a run shares between its scenarios.
pub struct Run {
    pub repo: PathBuf,
    pub images: Images,
    pub ibu: PathBuf,
    pub dir: PathBuf,
    pub timeouts: Timeouts,
    pub ssh_key: PathBuf,
    pub ssh_public_key: String,
    /// Serves the ibu binary under test to the guests' Ignition.
    pub files: FileServer,
    pub ibu_sha512: String,
    /// Keep the VM disks of passed scenarios too.
    pub keep_disks: bool,
    pub shared: Rc<Shared>,
}

impl Run {
    /// A run directory with a fresh SSH key pair.
    pub fn prepare(
        repo: &Path,
        images: Images,
        ibu: PathBuf,
        dir: PathBuf,
        keep_disks: bool,
    ) -> Result<Run> {
        fs_err::create_dir_all(&dir)?;
        let ssh_key = dir.join("id_ed25519");
        let status = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "ibu-vmtests", "-f"])
            .arg(&ssh_key)
            .status()
            .context("running ssh-keygen")?;
        if !status.success() {
            bail!("ssh-keygen for {} failed: {status}", ssh_key.display());
        }
        let ssh_public_key = fs_err::read_to_string(ssh_key.with_extension("pub"))?;
        let binary = fs_err::read(&ibu)?;
        let ibu_sha512 = hex(&sha2::Sha512::digest(&binary));
        let files = FileServer::start([("ibu".to_string(), binary)].into())?;
        let shared = Rc::new(Shared {
            dir: dir.clone(),
            registry: RefCell::new(None),
            workloads: RefCell::new(None),
            seed: RefCell::new(None),
            upgraded: RefCell::new(Vec::new()),
        });
        Ok(Run {
            shared,
            repo: repo.to_path_buf(),
            images,
            ibu,
            dir,
            timeouts: Timeouts::default(),
            ssh_key,
            ssh_public_key,
            files,
            ibu_sha512,
            keep_disks,
        })
    }

    /// Run a scenario. One that did not pass after a hung boot (a TCG hang: see `vm.rs`; a
    /// hang of the trial boot even makes the node fall back to its old stateroot, as it
    /// should) is run once more on fresh VMs. Both attempts are reported.
    pub fn scenario_attempts(&self, s: &Scenario) -> Vec<Outcome> {
        let first = self.scenario(s, 1);
        if first.verdict == Verdict::Passed || first.hangs == 0 {
            return vec![first];
        }
        report::note(&format!(
            "=== scenario {} did not pass after {} hung boot(s): once more, on fresh VMs",
            s.name, first.hangs
        ));
        let second = self.scenario(s, 2);
        vec![first, second]
    }

    /// Run one scenario; failures are reported with the console tail and the guest journal.
    fn scenario(&self, s: &Scenario, attempt: u32) -> Outcome {
        report::note(&format!("=== scenario {}: {}", s.name, s.about));
        let h = Harness {
            repo: self.repo.clone(),
            images: self.images.clone(),
            ibu: self.ibu.clone(),
            dir: self.dir.join(if attempt == 1 {
                s.name.to_string()
            } else {
                format!("{}.{attempt}", s.name)
            }),
            timeouts: self.timeouts.clone(),
            ssh_key: self.ssh_key.clone(),
            ssh_public_key: self.ssh_public_key.clone(),
            ibu_url: self.files.url("ibu"),
            ibu_sha512: self.ibu_sha512.clone(),
            vms: RefCell::new(Vec::new()),
            shared: self.shared.clone(),
        };
        let started = Instant::now();
        let result = (s.run)(&h);
        let seconds = started.elapsed().as_secs_f64();
        let vms = h.vms.take();
        let hangs = vms.iter().map(|v| v.hangs()).sum();
        let boots = vms
            .iter()
            .flat_map(|v| v.boots())
            .map(|b| b.took.as_secs_f64())
            .collect();
        let verdict = match &result {
            Ok(()) => Verdict::Passed,
            Err(e) if e.chain().any(|c| c.downcast_ref::<Hang>().is_some()) => Verdict::Hung,
            Err(_) => Verdict::Failed,
        };
        match &result {
            Ok(()) => {
                report::note(&format!("=== scenario {}: PASSED in {seconds:.0}s", s.name));
                if !self.keep_disks {
                    vms.iter().for_each(|v| v.discard_disk());
                }
            }
            Err(e) => {
                report::note(&format!(
                    "=== scenario {}: {} after {seconds:.0}s: {e:#}",
                    s.name,
                    if verdict == Verdict::Hung {
                        "HUNG"
                    } else {
                        "FAILED"
                    }
                ));
                for vm in &vms {
                    eprintln!("{}", vm.collect_diagnostics());
                }
                report::note(&format!("logs: {}", h.dir.display()));
            }
        }
        // Dropping the VMs powers them off.
        drop(vms);
        Outcome {
            name: s.name,
            attempt,
            verdict,
            seconds,
            hangs,
            boots,
            error: result.err().map(|e| format!("{e:#}")),
        }
    }
}
