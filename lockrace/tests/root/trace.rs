//! Root integration tests of `lockrace trace` against programs lockrace did not write: flock(1),
//! sqlite3, stress-ng, and a Python readers/writer fixture; plus how a trace ends (command exit
//! status, --duration, the traced pids exiting, SIGINT).
//!
//! These FAIL (never skip) when eBPF cannot load: the "Tracing" line never comes and the test
//! panics with lockrace's error. Each test is bounded to a few seconds.
use std::{
    collections::HashSet,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::read_json;

/// A running `lockrace trace`, its stderr read by a thread.
struct Tracer {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: Vec<String>,
    /// stdout, read by a thread so a long report never fills the pipe.
    stdout: std::thread::JoinHandle<String>,
}

impl Tracer {
    /// Start `lockrace trace ARGS` and wait until the programs are attached.
    fn start(args: &[&str]) -> Tracer {
        let mut child = Command::new(env!("CARGO_BIN_EXE_lockrace"))
            .arg("trace")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let err = child.stderr.take().unwrap();
        let mut out = child.stdout.take().unwrap();
        let stdout = std::thread::spawn(move || {
            use std::io::Read;
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut t = Tracer {
            child,
            lines: rx,
            stderr: Vec::new(),
            stdout,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match t.lines.recv_timeout(left) {
                Ok(line) => {
                    let done = line.starts_with("Tracing file locks of");
                    t.stderr.push(line);
                    if done {
                        return t;
                    }
                }
                Err(_) => {
                    let _ = t.child.kill();
                    let _ = t.child.wait();
                    panic!(
                        "lockrace trace {args:?} did not attach (eBPF must load as root): {:?} {}",
                        t.stderr,
                        t.stdout.join().unwrap_or_default()
                    );
                }
            }
        }
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }

    /// Wait for the end (at most `limit`); returns (exit code, stdout, stderr lines).
    fn finish(mut self, limit: Duration) -> (Option<i32>, String, Vec<String>) {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "lockrace trace did not end within {limit:?}: {:?}",
                    self.stderr
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stdout = self.stdout.join().unwrap();
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.stderr.push(l);
        }
        (status.code(), stdout, self.stderr)
    }
}

fn canonical(p: &Path) -> String {
    p.canonicalize().unwrap().to_string_lossy().into_owned()
}

/// Events of a JSONL file (the header and trailer meta lines skipped), in timestamp order.
fn events(p: &Path) -> Vec<Value> {
    let mut v: Vec<Value> = std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e.get("kind").is_some())
        .collect();
    v.sort_by_key(|e| e["ts_ns"].as_u64().unwrap());
    v
}

/// Releases of an exclusive lock that left waiters, counted from the raw events: an unlock by
/// the holder, or a grant to another owner (the kernel released the holder first; its unlock
/// event can come after the grant, see docs/EVENTS.md "Late unlock events").
fn releases_with_waiters(evs: &[Value], dev: u64, ino: u64) -> u64 {
    let mut waiting: HashSet<u64> = HashSet::new();
    let mut holder: Option<u64> = None;
    let mut n = 0;
    for e in evs {
        if e["kind"] != "flock_lock_inode" || e["dev"] != dev || e["ino"] != ino {
            continue;
        }
        let (tid, owner) = (e["tid"].as_u64().unwrap(), e["owner"].as_u64().unwrap());
        let ret = e["ret"].as_i64().unwrap();
        if e["lock_type"] == 2 {
            if ret == 0 && holder == Some(owner) {
                if !waiting.is_empty() {
                    n += 1;
                }
                holder = None;
            }
        } else if ret == 1 {
            waiting.insert(tid);
        } else if ret == 0 {
            if holder.is_some_and(|h| h != owner) && !waiting.is_empty() {
                n += 1;
            }
            holder = Some(owner);
            waiting.remove(&tid);
        } else {
            waiting.remove(&tid);
        }
    }
    n
}

fn diagnosis<'a>(doc: &'a Value, code: &str) -> Option<&'a Value> {
    doc["diagnosis"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["code"] == code)
}

#[test]
fn flock_loops_grants_equal_iterations_and_handoffs_add_up() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lockfile");
    std::fs::write(&file, b"").unwrap();
    let json = dir.path().join("r.json");
    let evs = dir.path().join("e.jsonl");
    let f = file.to_str().unwrap();
    let tracer = Tracer::start(&[
        "--path",
        f,
        "--json",
        json.to_str().unwrap(),
        "--events",
        evs.to_str().unwrap(),
    ]);
    // Four shells, each counting its own iterations for 3 s.
    let script = format!(
        "n=0; end=$(( $(date +%s%N) + 3000000000 )); \
         while [ $(date +%s%N) -lt $end ]; do flock -x '{f}' -c 'sleep 0.005'; n=$((n+1)); done; \
         echo $n"
    );
    let shells: Vec<Child> = (0..4)
        .map(|_| {
            Command::new("sh")
                .args(["-c", &script])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let iterations: u64 = shells
        .into_iter()
        .map(|s| {
            let out = s.wait_with_output().unwrap();
            assert!(out.status.success());
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    std::thread::sleep(Duration::from_millis(100));
    tracer.signal(nix::sys::signal::Signal::SIGINT);
    let (code, stdout, stderr) = tracer.finish(Duration::from_secs(20));
    assert_eq!(code, Some(130), "{stderr:?}");
    assert!(
        stderr.iter().any(|l| l.contains("Detaching... done")),
        "{stderr:?}"
    );

    let doc = read_json(&json);
    assert_eq!(doc["capture"]["dropped"], 0, "{}", doc["capture"]);
    assert_eq!(doc["complete"], true, "{}", doc["incomplete_reasons"]);
    assert_eq!(doc["trace"]["ended_by"], "interrupted");
    let locks = doc["locks"].as_array().unwrap();
    let mine: Vec<&Value> = locks
        .iter()
        .filter(|l| l["path"] == canonical(&file))
        .collect();
    assert_eq!(mine.len(), 1, "one flock lock on the file: {locks:?}");
    let l = mine[0];
    assert_eq!(l["kind"], "flock");
    assert!(
        l["blocks"].as_u64().unwrap() > 0,
        "four loops must block: {l}"
    );
    assert_eq!(
        l["grants"].as_u64().unwrap(),
        iterations,
        "kernel grants vs the shells' own count"
    );
    let h = &l["handoffs"];
    let classes: u64 = [
        "fifo",
        "self_barge",
        "newcomer_barge",
        "waiter_reorder",
        "unresolved",
    ]
    .iter()
    .map(|c| h[c].as_u64().unwrap())
    .sum();
    let expected = releases_with_waiters(
        &events(&evs),
        l["dev"].as_u64().unwrap(),
        l["ino"].as_u64().unwrap(),
    );
    assert!(expected > 0);
    assert_eq!(
        classes, expected,
        "handoff classes {h} vs releases with waiters counted from the events"
    );
    assert!(stdout.contains(&canonical(&file)), "{stdout}");
    eprintln!(
        "flock: {iterations} iterations, {} blocks, handoffs {h}",
        l["blocks"]
    );
}

/// Four sqlite3 writers, BEGIN IMMEDIATE with a busy timeout: sqlite polls its POSIX byte locks.
const SQLITE_SCRIPT: &str = r#"
db="$1"
for w in 1 2 3 4; do
  ( i=0; while [ $i -lt 60 ]; do
      echo "BEGIN IMMEDIATE; INSERT INTO t VALUES($w); COMMIT;"; i=$((i+1)); done
  ) | sqlite3 -cmd '.timeout 5000' "$db" &
done
wait
exit 3
"#;

#[test]
fn sqlite_writers_poll_byte_range_locks_and_the_exit_status_propagates() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("test.db");
    let made = Command::new("sqlite3")
        .args([db.to_str().unwrap(), "CREATE TABLE t(x);"])
        .status()
        .unwrap();
    assert!(made.success());
    let json = dir.path().join("r.json");
    let tracer = Tracer::start(&[
        "--json",
        json.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        SQLITE_SCRIPT,
        "sh",
        db.to_str().unwrap(),
    ]);
    let (code, stdout, stderr) = tracer.finish(Duration::from_secs(60));
    assert_eq!(code, Some(3), "the script's exit status: {stderr:?}");
    let rows = Command::new("sqlite3")
        .args([db.to_str().unwrap(), "SELECT count(*) FROM t;"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&rows.stdout).trim(), "240");

    let doc = read_json(&json);
    assert_eq!(doc["trace"]["ended_by"], "command_exited");
    assert_eq!(doc["trace"]["command_exit_code"], 3);
    let path = canonical(&db);
    let locks: Vec<&Value> = doc["locks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["path"] == path)
        .collect();
    assert!(
        locks.len() >= 2,
        "sqlite's byte-range locks are distinct locks: {:?}",
        doc["locks"]
    );
    for l in &locks {
        assert!(l["kind"].as_str().unwrap().contains("posix"), "{l}");
        assert!(l["range"]["start"].as_i64().unwrap() >= 0x4000_0000, "{l}");
    }
    let pending = 0x4000_0000i64;
    assert!(
        locks
            .iter()
            .any(|l| l["range"]["start"] == pending && l["range"]["end"] == pending),
        "the pending byte alone: {locks:?}"
    );
    let busy: u64 = locks
        .iter()
        .filter_map(|l| l.get("contention"))
        .map(|c| c["busy_attempts"].as_u64().unwrap())
        .sum();
    assert!(busy > 0, "busy attempts: {locks:?}");
    let d = diagnosis(&doc, "polling-lock").unwrap_or_else(|| panic!("{}", doc["diagnosis"]));
    assert_eq!(d["evidence"]["path"], path.as_str());
    assert!(d["evidence"]["retries"].as_u64().unwrap() >= 3);
    assert!(stdout.contains("Polled, not queued"), "{stdout}");
    assert!(stdout.contains(&path), "{stdout}");
    eprintln!(
        "sqlite: {} locks, {busy} busy attempts; {}",
        locks.len(),
        d["message"]
    );
}

#[test]
fn stress_ng_fcntl_is_captured_and_drops_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let tracer = Tracer::start(&[
        "--json",
        json.to_str().unwrap(),
        "--",
        "stress-ng",
        "--fcntl",
        "2",
        "--timeout",
        "3",
        "--temp-path",
        dir.path().to_str().unwrap(),
    ]);
    let (code, stdout, stderr) = tracer.finish(Duration::from_secs(60));
    assert_eq!(code, Some(0), "stress-ng's exit status: {stderr:?}");
    let doc = read_json(&json);
    let cap = &doc["capture"];
    let events = cap["events"].as_u64().unwrap();
    let dropped = cap["dropped"].as_u64().unwrap();
    assert!(events > 10_000, "{cap}");
    // Whatever the count, the report states it.
    assert!(
        stdout.contains(&format!("{events} events captured, {dropped} dropped")),
        "{stdout}"
    );
    if dropped > 0 {
        assert_eq!(doc["complete"], false);
        assert!(diagnosis(&doc, "events-dropped").is_some());
    } else {
        assert_eq!(doc["capture"]["complete"], true, "{}", doc["capture"]);
    }
    eprintln!("stress-ng: {events} events, {dropped} dropped");
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[test]
fn a_writer_behind_a_stream_of_readers_is_diagnosed_as_starved() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("shared");
    std::fs::write(&file, b"").unwrap();
    let json = dir.path().join("r.json");
    let tracer = Tracer::start(&[
        "--json",
        json.to_str().unwrap(),
        "--",
        "python3",
        fixture("readers_writer.py").to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    let (code, stdout, stderr) = tracer.finish(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{stderr:?}");
    let doc = read_json(&json);
    let d = diagnosis(&doc, "writer-starvation")
        .unwrap_or_else(|| panic!("{}\n{stdout}", doc["diagnosis"]));
    let ahead = d["evidence"]["readers_ahead"].as_u64().unwrap();
    assert!(ahead >= 3, "{d}");
    assert!(
        d["evidence"]["waited_ns"].as_u64().unwrap() > 100_000_000,
        "{d}"
    );
    assert_eq!(d["evidence"]["path"], canonical(&file).as_str());
    // The readers held together: no violation.
    assert!(diagnosis(&doc, "no-mutual-exclusion").is_none());
    let line = stdout
        .lines()
        .find(|l| l.starts_with("writer waited"))
        .unwrap_or("");
    eprintln!(
        "readers/writer: {line}; {} readers ahead; {}",
        ahead, d["message"]
    );
}

#[test]
fn sigint_detaches_and_writes_the_final_report() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let tracer = Tracer::start(&["--json", json.to_str().unwrap(), "--", "sleep", "30"]);
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    tracer.signal(nix::sys::signal::Signal::SIGINT);
    let (code, stdout, stderr) = tracer.finish(Duration::from_secs(15));
    assert_eq!(code, Some(130), "{stderr:?}");
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert!(
        stderr.iter().any(|l| l == "Detaching... done"),
        "{stderr:?}"
    );
    assert!(stdout.contains("ended by interrupted"), "{stdout}");
    let doc = read_json(&json);
    assert_eq!(doc["trace"]["ended_by"], "interrupted");
    assert_eq!(
        doc["complete"], true,
        "nothing was lost: {}",
        doc["incomplete_reasons"]
    );
}

#[test]
fn duration_ends_the_trace() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let tracer = Tracer::start(&[
        "--duration",
        "1",
        "--json",
        json.to_str().unwrap(),
        "--",
        "sleep",
        "30",
    ]);
    let t0 = Instant::now();
    let (code, _, stderr) = tracer.finish(Duration::from_secs(15));
    assert_eq!(code, Some(0), "{stderr:?}");
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(6), "--duration 1 took {took:?}");
    assert_eq!(read_json(&json)["trace"]["ended_by"], "duration");
}

#[test]
fn a_pid_trace_ends_when_the_process_exits_and_follows_its_children() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f");
    std::fs::write(&file, b"").unwrap();
    let json = dir.path().join("r.json");
    // Waits for the trace to attach (a line on stdin), then forks flock(1) twice, then exits.
    // The holds last long enough for the reader thread to find the file in /proc/PID/fd (a
    // process that exits first leaves its lock named `major:minor/ino`).
    let mut target = Command::new("sh")
        .args([
            "-c",
            "read go; flock \"$1\" -c 'sleep 0.2'; flock -s \"$1\" -c 'sleep 0.2'",
            "sh",
            file.to_str().unwrap(),
        ])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = target.id().to_string();
    let tracer = Tracer::start(&["--pid", &pid, "--json", json.to_str().unwrap()]);
    {
        use std::io::Write;
        let mut stdin = target.stdin.take().unwrap();
        writeln!(stdin, "go").unwrap();
    }
    let (code, _, stderr) = tracer.finish(Duration::from_secs(15));
    target.wait().unwrap();
    assert_eq!(code, Some(0), "{stderr:?}");
    let doc = read_json(&json);
    assert_eq!(doc["trace"]["ended_by"], "processes_exited");
    let l = doc["locks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["path"] == canonical(&file))
        .unwrap_or_else(|| panic!("the children's flock lock, named: {}", doc["locks"]));
    assert_eq!(l["grants"], 2, "{l}");
}

#[test]
fn interval_tables_perfetto_and_events_stream_while_tracing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f");
    std::fs::write(&file, b"").unwrap();
    let (perfetto, evs) = (dir.path().join("p.json"), dir.path().join("e.jsonl"));
    let f = file.to_str().unwrap();
    let script = format!(
        "for i in 1 2 3 4 5 6 7 8; do flock '{f}' -c 'sleep 0.05' & flock '{f}' -c 'sleep 0.05'; wait; done; sleep 0.5"
    );
    let tracer = Tracer::start(&[
        "--interval",
        "0.5",
        "--perfetto",
        perfetto.to_str().unwrap(),
        "--events",
        evs.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        &script,
    ]);
    let (code, stdout, stderr) = tracer.finish(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{stderr:?}");
    let tables = stdout.lines().filter(|l| l.starts_with("--- +")).count();
    assert!(tables >= 2, "interval tables: {stdout}");
    assert!(
        stdout.contains(&format!("{} (flock)", canonical(&file))),
        "the table names the file: {stdout}"
    );
    let trace: Value = serde_json::from_str(&std::fs::read_to_string(&perfetto).unwrap()).unwrap();
    let n = trace["traceEvents"].as_array().unwrap().len();
    assert!(n > 10, "perfetto events: {n}");
    let lines = events(&evs);
    assert!(
        lines
            .iter()
            .filter(|e| e["kind"] == "flock_lock_inode")
            .count()
            >= 32,
        "16 locks and 16 unlocks at least"
    );
    // The events file ends with its trailer and re-analyses offline.
    let text = std::fs::read_to_string(&evs).unwrap();
    let last = text.lines().last().unwrap();
    assert!(last.contains("lockrace_trailer"), "{last}");
    let offline = Command::new(env!("CARGO_BIN_EXE_lockrace"))
        .args(["report", evs.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        offline.status.success(),
        "{}",
        String::from_utf8_lossy(&offline.stderr)
    );
}

#[test]
fn without_a_target_the_whole_machine_is_traced_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f");
    std::fs::write(&file, b"").unwrap();
    let json = dir.path().join("r.json");
    let tracer = Tracer::start(&["--duration", "1.5", "--json", json.to_str().unwrap()]);
    // A process lockrace knows nothing about.
    let st = Command::new("flock")
        .args([file.to_str().unwrap(), "-c", "sleep 0.2"])
        .status()
        .unwrap();
    assert!(st.success());
    let (code, _, stderr) = tracer.finish(Duration::from_secs(15));
    assert_eq!(code, Some(0), "{stderr:?}");
    let warnings: Vec<&String> = stderr.iter().filter(|l| l.contains("warning")).collect();
    assert_eq!(warnings.len(), 1, "{stderr:?}");
    assert!(
        warnings[0].contains("every file lock on this machine"),
        "{warnings:?}"
    );
    let doc = read_json(&json);
    assert_eq!(doc["trace"]["target"], "every process on this machine");
    assert!(
        doc["locks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["path"] == canonical(&file) && l["grants"] == 1),
        "{}",
        doc["locks"]
    );
}
