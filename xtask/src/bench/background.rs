//! A tracer (bpftrace, perf record) running in the background while the workload runs: started,
//! waited for until it is attached, then stopped with SIGINT the way a user stops it.
//!
//! Invariants: the child is always reaped (SIGINT, then SIGKILL after a grace period), also
//! when starting fails; its stdout and stderr are drained continuously by two threads, so a
//! chatty tracer never blocks on a full pipe; stdout is counted line by line rather than kept
//! (a tracer printing every event writes millions of lines), except for its last lines.
use std::{
    io::{BufRead, BufReader, Read},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Result, anyhow};

use crate::cmd;

/// How many of the last stdout lines are kept (count() maps are printed at exit).
const TAIL_LINES: usize = 64;

/// What a tracer's stdout carried.
#[derive(Debug, Default, Clone)]
pub struct Output {
    pub lines: u64,
    pub tail: Vec<String>,
}

pub struct Background {
    shown: String,
    child: Option<Child>,
    stdout: Option<JoinHandle<Output>>,
    stderr: Option<JoinHandle<String>>,
}

/// What a stopped tracer left.
#[derive(Debug)]
pub struct Stopped {
    pub status: Option<ExitStatus>,
    pub stdout: Output,
    pub stderr: String,
    /// CPU seconds the tracer had used when it was asked to stop (its consumer's cost).
    pub cpu_s: Option<f64>,
}

/// utime + stime of /proc/PID/stat, in clock ticks (fields 14 and 15; the name in parentheses
/// may hold spaces, so fields are counted after its closing parenthesis).
pub fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14, stime 15.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn cpu_s(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| stat_cpu_ticks(&stat).map(|t| t as f64 / hz as f64))?
}

fn drain_stdout(r: impl Read, ready: mpsc::Sender<()>, marker: Option<String>) -> Output {
    let mut out = Output::default();
    let mut sent = marker.is_none();
    let mut buf = Vec::with_capacity(256);
    let mut reader = BufReader::with_capacity(1 << 16, r);
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return out,
            Ok(_) => {}
        }
        out.lines += 1;
        let line = String::from_utf8_lossy(&buf);
        if !sent && marker.as_deref().is_some_and(|m| line.contains(m)) {
            let _ = ready.send(());
            sent = true;
        }
        if out.tail.len() == TAIL_LINES {
            out.tail.remove(0);
        }
        out.tail.push(line.trim_end().to_string());
    }
}

impl Background {
    /// Start `cmd`, wait until `marker` appears on its stdout (or, without a marker, just
    /// start), then let it settle for `settle` (attaching continues after the banner).
    pub fn start(
        mut cmd: Command,
        marker: Option<&str>,
        settle: Duration,
        timeout: Duration,
    ) -> Result<Background> {
        let shown = cmd::display(&cmd);
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| anyhow!("cannot run `{shown}`: {e}"))?;
        let (tx, rx) = mpsc::channel();
        let marker_owned = marker.map(str::to_string);
        let stdout = child
            .stdout
            .take()
            .map(|o| std::thread::spawn(move || drain_stdout(o, tx, marker_owned)));
        let stderr = child.stderr.take().map(|mut e| {
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = e.read_to_string(&mut s);
                s
            })
        });
        let mut bg = Background {
            shown,
            child: Some(child),
            stdout,
            stderr,
        };
        if marker.is_some() {
            let deadline = Instant::now() + timeout;
            loop {
                if rx.recv_timeout(Duration::from_millis(100)).is_ok() {
                    break;
                }
                let exited = bg.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
                if exited.is_some() || Instant::now() >= deadline {
                    let stopped = bg.stop();
                    return Err(anyhow!(
                        "`{}` did not attach ({}): {}",
                        stopped.0,
                        stopped
                            .1
                            .status
                            .map_or("timed out".to_string(), cmd::describe),
                        cmd::stderr_tail(&stopped.1.stderr, 3)
                    ));
                }
            }
        }
        std::thread::sleep(settle);
        Ok(bg)
    }

    /// SIGINT, up to 20 s to finish (perf writes its file then), SIGKILL; reaped.
    pub fn stop(mut self) -> (String, Stopped) {
        let mut status = None;
        let mut cpu = None;
        if let Some(mut child) = self.child.take() {
            cpu = cpu_s(child.id());
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Ok(Some(st)) = child.try_wait() {
                    status = Some(st);
                    break;
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    status = child.wait().ok();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let stdout = self
            .stdout
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        let stderr = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        (
            std::mem::take(&mut self.shown),
            Stopped {
                status,
                stdout,
                stderr,
                cpu_s: cpu,
            },
        )
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_for_the_marker_counts_lines_and_stops_with_sigint() {
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "trap 'echo \"@n: 3\"; exit 0' INT; echo one; echo Attaching 3 probes...; \
             while :; do sleep 0.01; done",
        ]);
        let bg = Background::start(
            cmd,
            Some("Attaching"),
            Duration::ZERO,
            Duration::from_secs(10),
        )
        .unwrap();
        let (_, s) = bg.stop();
        assert!(s.status.is_some_and(|st| st.success()), "{s:?}");
        assert_eq!(s.stdout.lines, 3);
        assert_eq!(s.stdout.tail.last().map(String::as_str), Some("@n: 3"));
        assert!(s.cpu_s.is_some());
    }

    #[test]
    fn cpu_ticks_come_after_the_name() {
        let stat = "4242 (bpf (trace) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 31 0 0 20 0";
        assert_eq!(stat_cpu_ticks(stat), Some(281));
        assert_eq!(stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn a_tracer_that_exits_before_attaching_is_an_error_with_its_stderr() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo 'ERROR: no such tracepoint' >&2; exit 1"]);
        let err = Background::start(
            cmd,
            Some("Attaching"),
            Duration::ZERO,
            Duration::from_secs(10),
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(err.contains("did not attach (exit status 1)"), "{err}");
        assert!(err.contains("ERROR: no such tracepoint"), "{err}");
    }
}
