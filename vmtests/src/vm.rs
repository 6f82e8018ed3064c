//! One test VM: QEMU under TCG booting a qcow2 overlay of the pristine disk, provisioned by
//! Ignition, driven over SSH (QEMU user networking, a port on 127.0.0.1), watched through its
//! serial console (a log file per VM).
//!
//! Boots are recognised by the line `IBU-VM-BOOTED boot_id=... version=... ostree=...` that the
//! image's `ibu-vm-booted.service` prints on the serial console once multi-user.target is up.
//! A boot that makes no progress is a *hang* (seen about once in 84 boots under TCG here): the
//! VM is powered off and on again, and the hang is reported as such; a boot that ends in the
//! emergency shell or a panic is a *failure*.

use std::cell::RefCell;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::report;

/// How long things may take under TCG on a busy 2-core machine (boots take 20-30 s idle).
#[derive(Debug, Clone)]
pub struct Timeouts {
    /// A boot that shows no marker after this long is a hang.
    pub boot: Duration,
    /// A boot whose console is silent this long is a hang.
    pub stall: Duration,
    /// How many hung boots are retried (powered off and on) before giving up.
    pub hang_retries: u32,
    /// One command over SSH.
    pub command: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            boot: Duration::from_secs(600),
            stall: Duration::from_secs(240),
            hang_retries: 2,
            command: Duration::from_secs(300),
        }
    }
}

/// A boot the marker announced.
#[derive(Debug, Clone)]
pub struct Boot {
    pub boot_id: String,
    /// The OS version (os-release `IMAGE_VERSION`).
    pub version: String,
    /// The `ostree=` kernel argument: `/ostree/boot.N/<stateroot>/<checksum>/<serial>`.
    pub ostree: String,
    /// From power-on or reboot request to the marker.
    pub took: Duration,
}

impl Boot {
    pub fn stateroot(&self) -> &str {
        self.ostree.split('/').nth(3).unwrap_or("")
    }
}

/// The error of a boot that never came up and made no progress (as opposed to one that failed).
#[derive(Debug)]
pub struct Hang(pub String);

impl std::fmt::Display for Hang {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "hung boot: {}", self.0)
    }
}

impl std::error::Error for Hang {}

/// What a VM is made of.
pub struct VmSpec<'a> {
    pub name: &'a str,
    /// The pristine disk the overlay is made on.
    pub base_disk: &'a Path,
    /// The Ignition config (first boot).
    pub ignition: &'a serde_json::Value,
    /// The private SSH key whose public half the Ignition config gives root.
    pub ssh_key: &'a Path,
    /// Where its files go (overlay, console log, journal).
    pub dir: PathBuf,
    pub memory_mib: u32,
    pub cpus: u32,
    pub timeouts: Timeouts,
}

struct State {
    qemu: Option<Child>,
    boots: Vec<Boot>,
    hangs: u32,
}

pub struct Vm {
    pub name: String,
    pub dir: PathBuf,
    disk: PathBuf,
    config: PathBuf,
    console: PathBuf,
    ssh_key: PathBuf,
    ssh_port: u16,
    memory_mib: u32,
    cpus: u32,
    pub timeouts: Timeouts,
    state: RefCell<State>,
}

impl Vm {
    /// Make the VM's overlay and Ignition config; nothing runs yet.
    pub fn create(spec: VmSpec) -> Result<Vm> {
        let name = spec.name.to_string();
        fs_err::create_dir_all(&spec.dir)?;
        let disk = spec.dir.join("disk.qcow2");
        let config = spec.dir.join("config.ign");
        let status = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
            .arg(spec.base_disk)
            .arg(&disk)
            .status()
            .with_context(|| format!("VM {name}: running qemu-img"))?;
        if !status.success() {
            bail!(
                "VM {name}: qemu-img create {} over {} failed: {status}",
                disk.display(),
                spec.base_disk.display()
            );
        }
        fs_err::write(&config, serde_json::to_vec(spec.ignition)?)?;
        Ok(Vm {
            console: spec.dir.join("console.log"),
            ssh_port: free_port().with_context(|| format!("VM {name}: no free port"))?,
            ssh_key: spec.ssh_key.to_path_buf(),
            memory_mib: spec.memory_mib,
            cpus: spec.cpus,
            timeouts: spec.timeouts,
            dir: spec.dir,
            disk,
            config,
            name,
            state: RefCell::new(State {
                qemu: None,
                boots: Vec::new(),
                hangs: 0,
            }),
        })
    }

    /// The serial console's log.
    pub fn console_log(&self) -> &Path {
        &self.console
    }

    /// Boots seen so far, first to last.
    pub fn boots(&self) -> Vec<Boot> {
        self.state.borrow().boots.clone()
    }

    /// Hung boots seen so far (each retried).
    pub fn hangs(&self) -> u32 {
        self.state.borrow().hangs
    }

    pub fn is_running(&self) -> bool {
        let mut st = self.state.borrow_mut();
        match st.qemu.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Power on and wait until the OS is up.
    pub fn power_on(&self) -> Result<Boot> {
        self.boot_with_watchdog(None, false, false, |vm| vm.spawn_qemu())
    }

    /// Cut the power (QEMU is killed: no shutdown, no flush in the guest).
    pub fn power_off(&self) -> Result<()> {
        let mut st = self.state.borrow_mut();
        if let Some(mut child) = st.qemu.take() {
            let _ = child.kill();
            child
                .wait()
                .with_context(|| format!("VM {}: waiting for QEMU to exit", self.name))?;
        }
        Ok(())
    }

    /// `systemctl reboot` in the guest, then wait for a boot with a new boot id.
    pub fn reboot(&self) -> Result<Boot> {
        let previous = self.current_boot_id();
        self.boot_with_watchdog(previous, false, false, |vm| {
            // The connection may drop before ssh sees the exit status.
            let _ = vm.ssh_output("systemctl reboot", Duration::from_secs(30));
            Ok(())
        })
    }

    /// A reboot the guest does by itself after `trigger` (ibu's pivot): wait for a boot with a
    /// new boot id. The console is quiet while the guest works towards the reboot, so the
    /// watchdog's silence limit starts only with the reboot's first console output; the boot
    /// limit bounds the whole wait.
    pub fn expect_reboot(&self, trigger: impl Fn(&Vm) -> Result<()>) -> Result<Boot> {
        let previous = self.current_boot_id();
        self.boot_with_watchdog(previous, true, false, trigger)
    }

    /// [`Vm::expect_reboot`] through a boot that is meant to fail (a kernel panic, the
    /// initramfs giving up) and restart by itself: the failure is not the end of the wait, a
    /// marker of a later boot is.
    pub fn expect_reboot_through_failure(
        &self,
        trigger: impl Fn(&Vm) -> Result<()>,
    ) -> Result<Boot> {
        let previous = self.current_boot_id();
        self.boot_with_watchdog(previous, true, true, trigger)
    }

    fn current_boot_id(&self) -> Option<String> {
        self.state.borrow().boots.last().map(|b| b.boot_id.clone())
    }

    /// Start the boot with `kick` and wait for the marker of a boot other than `previous`;
    /// a hang powers the VM off and on again, up to `hang_retries` times.
    fn boot_with_watchdog(
        &self,
        previous: Option<String>,
        quiet_start: bool,
        failure_expected: bool,
        kick: impl Fn(&Vm) -> Result<()>,
    ) -> Result<Boot> {
        let mut power_cycled = false;
        loop {
            let offset = fs_err::metadata(&self.console).map_or(0, |m| m.len());
            let started = Instant::now();
            if power_cycled {
                self.spawn_qemu()?;
            } else {
                kick(self)?;
            }
            let quiet = quiet_start && !power_cycled;
            match self.wait_for_marker(
                offset,
                previous.as_deref(),
                started,
                quiet,
                failure_expected,
            ) {
                Ok(boot) => {
                    report::note(&format!(
                        "VM {}: booted {} ({}) in {}",
                        self.name,
                        boot.version,
                        boot.ostree,
                        report::secs(boot.took)
                    ));
                    self.state.borrow_mut().boots.push(boot.clone());
                    return Ok(boot);
                }
                Err(e)
                    if e.downcast_ref::<Hang>().is_some()
                        && let Some(prev) = previous.as_deref()
                        && !power_cycled
                        && self.still_in_boot(prev) =>
                {
                    // Not a hung boot: no reboot happened at all (the guest, or ibu in it, never
                    // asked for one). Power cycling would hide that; fail with the guest's journal.
                    return Err(anyhow!(
                        "VM {}: no reboot: still up in boot {prev} after {} ({e}); {}",
                        self.name,
                        report::secs(started.elapsed()),
                        self.why_no_reboot()
                    ));
                }
                Err(e) if e.downcast_ref::<Hang>().is_some() => {
                    let hangs = {
                        let mut st = self.state.borrow_mut();
                        st.hangs += 1;
                        st.hangs
                    };
                    report::note(&format!(
                        "VM {}: {e}; console tail:\n{}",
                        self.name,
                        self.console_tail(25)
                    ));
                    if hangs > self.timeouts.hang_retries {
                        return Err(
                            e.context(format!("VM {}: {hangs} hung boots, giving up", self.name))
                        );
                    }
                    report::note(&format!(
                        "VM {}: power cycle after the hang ({hangs}/{})",
                        self.name, self.timeouts.hang_retries
                    ));
                    self.power_off()?;
                    power_cycled = true;
                }
                Err(e) => {
                    return Err(e.context(format!(
                        "VM {}: boot failed (console: {})",
                        self.name,
                        self.console.display()
                    )));
                }
            }
        }
    }

    /// Is the guest up over SSH, still in boot `boot_id`?
    fn still_in_boot(&self, boot_id: &str) -> bool {
        self.ssh_output(
            "cat /proc/sys/kernel/random/boot_id",
            Duration::from_secs(30),
        )
        .is_ok_and(|o| o.code == 0 && o.stdout.trim() == boot_id)
    }

    /// What the guest says about its state and ibu's last words, on one line (CI shows the
    /// last lines of a run only; the full journal follows in the diagnostics).
    fn why_no_reboot(&self) -> String {
        let out = self.ssh_output(
            "echo \"system $(systemctl is-system-running); failed units: $(systemctl --failed \
             --no-legend --plain | cut -d' ' -f1 | tr '\\n' ' ')\"; \
             journalctl -u ibu.service -n 6 -o cat --no-pager",
            Duration::from_secs(60),
        );
        match out {
            Ok(o) => o
                .stdout
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(" | "),
            Err(e) => format!("(guest state unknown: {e:#})"),
        }
    }

    fn spawn_qemu(&self) -> Result<()> {
        let mut st = self.state.borrow_mut();
        if st.qemu.is_some() {
            bail!("VM {}: already running", self.name);
        }
        let qemu_log = fs_err::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("qemu.log"))?;
        let qemu_err = qemu_log.try_clone()?;
        let console_sock = self.dir.join("console.sock");
        let _ = std::fs::remove_file(&console_sock);
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-name", &format!("ibu-vm-{}", self.name)])
            // /dev/kvm exists on this machine but hangs: TCG only.
            .args([
                "-accel",
                "tcg",
                "-nodefaults",
                "-no-user-config",
                "-display",
                "none",
            ])
            .args(["-m", &self.memory_mib.to_string()])
            .args(["-smp", &self.cpus.to_string()])
            .arg("-drive")
            .arg(format!(
                "file={},if=none,id=root,format=qcow2,discard=unmap",
                self.disk.display()
            ))
            // /dev/disk/by-id/virtio-ibu-root in the guest.
            .args(["-device", "virtio-blk-pci,drive=root,serial=ibu-root"])
            .arg("-chardev")
            .arg(format!(
                "socket,id=console,path={},server=on,wait=off,logfile={},logappend=on",
                console_sock.display(),
                self.console.display()
            ))
            .args(["-serial", "chardev:console"])
            .arg("-nic")
            .arg(format!(
                "user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:{}-:22",
                self.ssh_port
            ))
            .arg("-fw_cfg")
            .arg(format!(
                "name=opt/com.coreos/config,file={}",
                self.config.display()
            ))
            .stdin(Stdio::null())
            .stdout(qemu_log.into_parts().0)
            .stderr(qemu_err.into_parts().0);
        die_with_parent(&mut cmd);
        let child = cmd
            .spawn()
            .with_context(|| format!("VM {}: starting qemu-system-x86_64", self.name))?;
        st.qemu = Some(child);
        Ok(())
    }

    fn qemu_exited(&self) -> Option<ExitStatus> {
        let mut st = self.state.borrow_mut();
        let status = st.qemu.as_mut().and_then(|c| c.try_wait().ok().flatten());
        if status.is_some() {
            st.qemu = None;
        }
        status
    }

    fn wait_for_marker(
        &self,
        offset: u64,
        previous: Option<&str>,
        started: Instant,
        quiet_start: bool,
        failure_expected: bool,
    ) -> Result<Boot> {
        let mut last_len = offset;
        let mut last_progress = Instant::now();
        let mut quiet = quiet_start;
        loop {
            let text = read_from(&self.console, offset);
            if let Some(boot) = find_marker(&text, previous, started.elapsed()) {
                return Ok(boot);
            }
            if let Some(why) = failed_boot(&text).filter(|_| !failure_expected) {
                bail!("the guest {why}");
            }
            if let Some(status) = self.qemu_exited() {
                let log = crate::image::tail_lines(&self.dir.join("qemu.log"), 10);
                bail!("QEMU exited ({status}) before the OS was up: {log}");
            }
            let len = offset + text.len() as u64;
            if len != last_len {
                last_len = len;
                last_progress = Instant::now();
                quiet = false;
            }
            if !quiet && last_progress.elapsed() > self.timeouts.stall {
                return Err(anyhow!(Hang(format!(
                    "no console output for {}",
                    report::secs(last_progress.elapsed())
                ))));
            }
            if started.elapsed() > self.timeouts.boot {
                return Err(anyhow!(Hang(format!(
                    "not up after {}",
                    report::secs(started.elapsed())
                ))));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The last `n` lines of the serial console, readable.
    pub fn console_tail(&self, n: usize) -> String {
        let text = report::strip_ansi(&read_from(&self.console, 0));
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Run a shell command as root in the guest; its stdout if it exits 0, else an error with
    /// its exit code and stderr.
    pub fn ssh(&self, command: &str) -> Result<String> {
        let out = self.ssh_output(command, self.timeouts.command)?;
        if out.code != 0 {
            bail!(
                "VM {}: `{command}` exited {}: {}{}",
                self.name,
                out.code,
                out.stderr.trim(),
                if out.stderr.trim().is_empty() {
                    out.stdout.trim()
                } else {
                    ""
                }
            );
        }
        Ok(out.stdout)
    }

    /// Run a shell command as root in the guest, whatever its exit code (255: ssh failed).
    pub fn ssh_output(&self, command: &str, timeout: Duration) -> Result<Output> {
        let mut cmd = Command::new("ssh");
        cmd.arg("-i")
            .arg(&self.ssh_key)
            .args(["-p", &self.ssh_port.to_string()])
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "LogLevel=ERROR",
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=20",
                "-o",
                "ServerAliveInterval=10",
                "-o",
                "ServerAliveCountMax=6",
                "root@127.0.0.1",
                "--",
                command,
            ]);
        run_with_timeout(cmd, timeout).with_context(|| format!("VM {}: ssh `{command}`", self.name))
    }

    /// Poll `check` every `every` until it returns `Some`, for at most `timeout`.
    pub fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        every: Duration,
        mut check: impl FnMut() -> Result<Option<T>>,
    ) -> Result<T> {
        let start = Instant::now();
        loop {
            let last = check();
            match last {
                Ok(Some(v)) => return Ok(v),
                Ok(None) if start.elapsed() < timeout => {}
                Err(_) if start.elapsed() < timeout => {}
                Ok(None) => bail!(
                    "VM {}: timed out after {} waiting for {what}",
                    self.name,
                    report::secs(timeout)
                ),
                Err(e) => {
                    return Err(e.context(format!(
                        "VM {}: timed out after {} waiting for {what}",
                        self.name,
                        report::secs(timeout)
                    )));
                }
            }
            std::thread::sleep(every);
        }
    }

    /// Type a command on the serial console (a shell there: the emergency shell of a failed
    /// boot, or the autologin root shell) and return what the console printed within `wait`.
    /// For when SSH is not there; output and prompt are interleaved with console messages.
    pub fn console_command(&self, command: &str, wait: Duration) -> Result<String> {
        use std::io::Write;
        let sock = self.dir.join("console.sock");
        let mut stream = std::os::unix::net::UnixStream::connect(&sock)
            .with_context(|| format!("VM {}: connecting to {}", self.name, sock.display()))?;
        let offset = fs_err::metadata(&self.console).map_or(0, |m| m.len());
        // Enter first: the emergency shell asks for it ("Press Enter for maintenance").
        stream.write_all(b"\r")?;
        std::thread::sleep(Duration::from_secs(2));
        stream.write_all(format!("{command}\r").as_bytes())?;
        std::thread::sleep(wait);
        Ok(report::strip_ansi(&read_from(&self.console, offset)))
    }

    /// The guest's journal and state, saved to the VM's directory; a readable summary back.
    pub fn collect_diagnostics(&self) -> String {
        let mut summary = format!(
            "--- VM {}: serial console (last 40 lines of {}) ---\n{}\n",
            self.name,
            self.console.display(),
            self.console_tail(40)
        );
        if !self.is_running() {
            summary.push_str("(VM not running: no journal)\n");
            return summary;
        }
        if failed_boot(&read_from(&self.console, 0)).is_some() {
            // No SSH in the initramfs: ask its emergency shell on the console.
            let cmd = "journalctl -b --no-pager -o short-monotonic -p warning | tail -n 40";
            match self.console_command(cmd, Duration::from_secs(45)) {
                Ok(out) => summary.push_str(&format!(
                    "--- VM {}: journal from the emergency shell ---\n{out}\n",
                    self.name
                )),
                Err(e) => summary.push_str(&format!("(no journal from the console: {e:#})\n")),
            }
            return summary;
        }
        let journal = self.dir.join("journal.txt");
        match self.ssh_output(
            "journalctl --no-pager -o short-monotonic -b",
            Duration::from_secs(120),
        ) {
            Ok(out) if out.code == 0 => {
                let _ = fs_err::write(&journal, &out.stdout);
                // The harness's own SSH logins are noise here.
                let lines: Vec<&str> = out
                    .stdout
                    .lines()
                    .filter(|l| !l.contains(" sshd["))
                    .collect();
                summary.push_str(&format!(
                    "--- VM {}: journal of this boot (last 60 lines; all in {}) ---\n{}\n",
                    self.name,
                    journal.display(),
                    lines[lines.len().saturating_sub(60)..].join("\n")
                ));
            }
            Ok(out) => summary.push_str(&format!(
                "(journal not readable: exit {}: {})\n",
                out.code,
                out.stderr.trim()
            )),
            Err(e) => summary.push_str(&format!("(journal not readable: {e:#})\n")),
        }
        summary
    }

    /// Delete the overlay (the logs stay).
    pub fn discard_disk(&self) {
        let _ = std::fs::remove_file(&self.disk);
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Some(mut child) = self.state.get_mut().qemu.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(self.dir.join("console.sock"));
    }
}

/// The output of a command run in the guest.
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Result<Output> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().context("spawning")?;
    let mut out_pipe = child.stdout.take().context("no stdout")?;
    let mut err_pipe = child.stderr.take().context("no stderr")?;
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out_pipe.read_to_end(&mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err_pipe.read_to_end(&mut v);
        v
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            bail!("timed out after {}", report::secs(timeout));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    Ok(Output {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    })
}

fn read_from(path: &Path, offset: u64) -> String {
    use std::io::{Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    if f.seek(SeekFrom::Start(offset)).is_err() {
        return String::new();
    }
    let mut v = Vec::new();
    let _ = f.read_to_end(&mut v);
    String::from_utf8_lossy(&v).into_owned()
}

/// The first marker line in `text` of a boot other than `previous`.
fn find_marker(text: &str, previous: Option<&str>, took: Duration) -> Option<Boot> {
    for line in text.lines() {
        let Some(rest) = line.split("IBU-VM-BOOTED ").nth(1) else {
            continue;
        };
        let field = |k: &str| {
            rest.split_whitespace()
                .find_map(|w| w.strip_prefix(k).map(str::to_string))
        };
        let (Some(boot_id), Some(version), Some(ostree)) =
            (field("boot_id="), field("version="), field("ostree="))
        else {
            continue;
        };
        if previous == Some(boot_id.as_str()) {
            continue;
        }
        return Some(Boot {
            boot_id,
            version,
            ostree,
            took,
        });
    }
    None
}

/// Console lines that mean the boot failed for good (no point waiting).
fn failed_boot(text: &str) -> Option<&'static str> {
    const FATAL: &[(&str, &str)] = &[
        ("Kernel panic", "panicked"),
        ("You are in emergency mode", "is in the emergency shell"),
        ("Entering emergency mode", "is in the emergency shell"),
        (
            "Cannot open access to console, the root account is locked",
            "is in the emergency shell",
        ),
        (
            "dracut Warning: Unable to process initqueue",
            "failed in the initramfs",
        ),
        ("Boot error", "found no bootable entry"),
    ];
    FATAL
        .iter()
        .find(|(needle, _)| text.contains(needle))
        .map(|(_, why)| *why)
}

pub(crate) fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// QEMU must not outlive the harness, whatever kills the harness.
pub(crate) fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe; nothing else runs between fork and
    // exec.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_marker_of_a_new_boot() {
        let text = "noise\r\nIBU-VM-BOOTED boot_id=aaa version=1.0.0 ostree=/ostree/boot.1/debian/abc/0\r\n\
                    more\nIBU-VM-BOOTED boot_id=bbb version=1.1.0 ostree=/ostree/boot.0/debian_1.1.0/def/0\n";
        let b = find_marker(text, None, Duration::ZERO).unwrap();
        assert_eq!((b.boot_id.as_str(), b.stateroot()), ("aaa", "debian"));
        let b = find_marker(text, Some("aaa"), Duration::ZERO).unwrap();
        assert_eq!(
            (b.version.as_str(), b.stateroot()),
            ("1.1.0", "debian_1.1.0")
        );
        assert!(find_marker(text, Some("bbb"), Duration::ZERO).is_some());
        assert!(find_marker("IBU-VM-BOOTED boot_id=", None, Duration::ZERO).is_none());
    }

    #[test]
    fn tells_failed_boots() {
        assert!(failed_boot("...\nYou are in emergency mode. After logging in").is_some());
        assert!(failed_boot("[  OK  ] Reached target Multi-User System.").is_none());
    }
}
