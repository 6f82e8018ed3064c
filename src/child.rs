//! Waiting for another program with a time limit.
//!
//! ibu bounds the time of the programs it runs on a node's behalf (health-check drop-ins,
//! `systemctl is-system-running --wait`): a check that never ends must not stall the
//! reconciler. On the deadline the child is killed *and reaped*, so no zombie is left behind
//! in a long-lived `ibu` and the caller never reads the status of a process that is still
//! running. Output the caller wants is drained on its own thread ([`last_line_of`]): a child
//! that fills a pipe nobody reads blocks forever and would look like a timeout.

use std::io::{self, Read};
use std::process::{Child, ExitStatus};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// How often a running child is looked at, at most.
const POLL_MAX: Duration = Duration::from_millis(200);

/// Wait for `child` to exit, at most `max`. `Some(status)` when it exited; `None` when it was
/// still running at the deadline, and has then been killed and reaped.
pub fn wait_with_deadline(child: &mut Child, max: Duration) -> io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + max;
    // Short checks end in milliseconds: start polling fast, back off to POLL_MAX.
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        let now = Instant::now();
        if now >= deadline {
            // kill() fails only when the child has already been reaped, which it has not;
            // wait() reaps it whether the kill or its own exit ended it.
            let _ = child.kill();
            child.wait()?;
            return Ok(None);
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(POLL_MAX);
    }
}

/// The last non-empty line a child writes to `pipe`, read on a thread of its own so the child
/// never blocks on a full pipe. Call the returned function after the child has exited: it
/// waits at most `linger` for the end of the output, because a grandchild the child left
/// running may hold the pipe open; then it gives what was read so far.
pub fn last_line_of(mut pipe: impl Read + Send + 'static) -> impl FnOnce(Duration) -> String {
    let last = Arc::new(Mutex::new(String::new()));
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let seen = Arc::clone(&last);
    std::thread::spawn(move || {
        let mut line = LastLine::default();
        let mut buf = [0u8; 8192];
        loop {
            let ended = match pipe.read(&mut buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(0) | Err(_) => true,
                Ok(n) => {
                    line.feed(&buf[..n]);
                    false
                }
            };
            if ended {
                // A last line without its newline counts too.
                line.feed(b"\n");
            }
            if let Some(l) = line.take_changed()
                && let Ok(mut shared) = seen.lock()
            {
                *shared = l;
            }
            if ended {
                break;
            }
        }
        // Nobody may be waiting any more; the thread ends either way.
        let _ = done_tx.send(());
    });
    move |linger| {
        let _ = done_rx.recv_timeout(linger);
        last.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

/// The last non-blank line of a byte stream, in bounded memory: any bytes (not only UTF-8),
/// and a line longer than [`LastLine::MAX`] keeps its end.
#[derive(Default)]
struct LastLine {
    current: Vec<u8>,
    last: Option<String>,
    changed: bool,
}

impl LastLine {
    const MAX: usize = 4096;

    fn feed(&mut self, bytes: &[u8]) {
        for chunk in bytes.split_inclusive(|b| *b == b'\n') {
            let (text, ended) = match chunk.strip_suffix(b"\n") {
                Some(t) => (t, true),
                None => (chunk, false),
            };
            self.current.extend_from_slice(text);
            if self.current.len() > Self::MAX {
                self.current.drain(..self.current.len() - Self::MAX);
            }
            if ended {
                let l = String::from_utf8_lossy(&self.current).trim().to_string();
                if !l.is_empty() {
                    self.last = Some(l);
                    self.changed = true;
                }
                self.current.clear();
            }
        }
    }

    fn take_changed(&mut self) -> Option<String> {
        std::mem::take(&mut self.changed)
            .then(|| self.last.clone())
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    fn sh(script: &str) -> Child {
        Command::new("sh")
            .args(["-c", script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    #[test]
    fn exit_within_the_limit_gives_its_status() {
        let mut c = sh("exit 3");
        let status = wait_with_deadline(&mut c, Duration::from_secs(10)).unwrap();
        assert_eq!(status.and_then(|s| s.code()), Some(3));
    }

    #[test]
    fn a_child_past_the_limit_is_killed_and_reaped() {
        let mut c = sh("exec sleep 30");
        let started = Instant::now();
        assert_eq!(
            wait_with_deadline(&mut c, Duration::from_millis(200)).unwrap(),
            None
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        // Reaped, not a zombie: the pid is gone.
        let pid = nix::unistd::Pid::from_raw(c.id() as i32);
        assert_eq!(
            nix::sys::signal::kill(pid, None),
            Err(nix::errno::Errno::ESRCH)
        );
    }

    #[test]
    fn a_full_pipe_does_not_block_the_child() {
        // 1 MiB on stderr: far more than a pipe holds.
        let mut c =
            sh("head -c 1048576 /dev/zero | tr '\\0' x >&2; echo >&2; echo 'the end' >&2; exit 1");
        let last = last_line_of(c.stderr.take().unwrap());
        let status = wait_with_deadline(&mut c, Duration::from_secs(20)).unwrap();
        assert_eq!(status.and_then(|s| s.code()), Some(1));
        assert_eq!(last(Duration::from_secs(5)), "the end");
    }

    #[test]
    fn a_grandchild_holding_the_pipe_does_not_hold_the_reader() {
        let mut c = sh("echo 'checked' >&2; sleep 5 & exit 0");
        let last = last_line_of(c.stderr.take().unwrap());
        let status = wait_with_deadline(&mut c, Duration::from_secs(10)).unwrap();
        assert!(status.is_some_and(|s| s.success()));
        let started = Instant::now();
        assert_eq!(last(Duration::from_millis(300)), "checked");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn last_line_takes_any_bytes_in_bounded_memory() {
        let mut l = LastLine::default();
        l.feed(b"first\nsec");
        l.feed(b"ond\n\n  \n");
        assert_eq!(l.take_changed().as_deref(), Some("second"));
        assert_eq!(l.take_changed(), None);
        l.feed(b"bad \xff byte\n");
        assert_eq!(l.take_changed().as_deref(), Some("bad \u{fffd} byte"));
        l.feed(&vec![b'y'; 100_000]);
        l.feed(b"END\n");
        let long = l.take_changed().unwrap();
        assert_eq!(long.len(), LastLine::MAX);
        assert!(long.ends_with("yyyEND"));
    }
}
