//! Root integration tests of the fast probe set (`Probes::Fast`, BTF-typed tracepoints) and of
//! the per-program statistics every capture reads: real programs on the real kernel, real
//! workloads, real events.
//!
//! These FAIL (never skip) when eBPF cannot load: CI runs them as root through `cargo xtask
//! test`. On a kernel with BTF (`/sys/kernel/btf/vmlinux`) the fast set must load as itself,
//! not fall back to the classic programs.
use std::{
    io::{BufRead, BufReader, Write},
    process::{Child, Command, Stdio},
    sync::Mutex,
    thread::sleep,
    time::Duration,
};

use lockrace::{
    capture::{Capture, CaptureOptions, CaptureStats, Filter, Limits, Probes},
    events::{Event, Kind},
    jsonl::Collector,
};
use lockrace_common::{FAST_PROBES, k};

/// The tests filter on this process: one capture at a time, or they would see each other.
static ONE: Mutex<()> = Mutex::new(());

/// A python3 locker on PATH (POSIX fcntl locks through fcntl.lockf, whole file):
/// - `hold`: lock, print "locked", wait for a line on stdin, unlock;
/// - `wait`: print "requesting", lock (blocking), print "locked", unlock;
/// - `try`: three non-blocking attempts, printing "busy" for each refused one;
/// - `interrupt`: print "requesting", block until SIGUSR1 (whose handler raises), print
///   "interrupted".
const LOCKER: &str = r#"
import fcntl, os, signal, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
mode = sys.argv[2]
if mode == "try":
    for _ in range(3):
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            print("got", flush=True)
            fcntl.lockf(fd, fcntl.LOCK_UN)
        except OSError:
            print("busy", flush=True)
    sys.exit(0)
class Interrupted(Exception):
    pass
def on_usr1(sig, frame):
    raise Interrupted()
signal.signal(signal.SIGUSR1, on_usr1)
print("requesting", flush=True)
try:
    fcntl.lockf(fd, fcntl.LOCK_EX)
except Interrupted:
    print("interrupted", flush=True)
    sys.exit(0)
print("locked", flush=True)
if mode == "hold":
    sys.stdin.readline()
fcntl.lockf(fd, fcntl.LOCK_UN)
print("unlocked", flush=True)
"#;

struct Locker {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
}

impl Locker {
    fn spawn(path: &str, mode: &str) -> Locker {
        let mut child = Command::new("python3")
            .args(["-c", LOCKER, path, mode])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let out = BufReader::new(child.stdout.take().unwrap());
        Locker { child, out }
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        line.trim().to_string()
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn release(&mut self) {
        self.child
            .stdin
            .as_mut()
            .unwrap()
            .write_all(b"go\n")
            .unwrap();
    }

    fn wait_ok(&mut self) {
        assert!(self.child.wait().unwrap().success());
    }
}

fn start(options: CaptureOptions) -> Capture<Collector> {
    let limits = Limits {
        ring_buffer_bytes: 64 << 20,
        ..Limits::default()
    };
    Capture::start_options(
        &Filter {
            tgids: vec![std::process::id()],
            inodes: vec![],
        },
        &limits,
        options,
        Collector::new(true, None).unwrap(),
    )
    .unwrap_or_else(|e| panic!("eBPF capture must load on this kernel (run as root): {e:#}"))
}

fn fast(self_cost: bool) -> Capture<Collector> {
    let cap = start(CaptureOptions {
        probes: Probes::Fast,
        self_cost,
    });
    let (probes, attached) = cap.probes();
    assert_eq!(
        probes,
        Probes::Fast,
        "this kernel has BTF: the fast set must load, not fall back"
    );
    let expected: Vec<&str> = FAST_PROBES.iter().map(|p| p.program).collect();
    assert_eq!(attached, expected.as_slice());
    cap
}

fn stop(cap: Capture<Collector>) -> (Vec<Event>, CaptureStats) {
    let (sink, stats) = cap.stop().unwrap();
    assert_eq!(stats.dropped, 0, "no drops expected: {stats:?}");
    assert_eq!(stats.decode_errors, 0);
    assert_eq!(stats.untracked_tasks, 0);
    (sink.events.unwrap(), stats)
}

fn is_lock(e: &Event, pid: u32) -> bool {
    e.tgid == pid && e.kind == Kind::PosixLockInode
}

#[test]
fn a_blocked_waiter_shows_its_block_wakeup_switch_in_and_grant() {
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lockfile");
    let path = path.to_str().unwrap();
    let cap = fast(false);

    let mut holder = Locker::spawn(path, "hold");
    assert_eq!(holder.line(), "requesting");
    assert_eq!(holder.line(), "locked");
    let mut waiter = Locker::spawn(path, "wait");
    assert_eq!(waiter.line(), "requesting");
    sleep(Duration::from_millis(100));
    holder.release();
    assert_eq!(waiter.line(), "locked");
    holder.wait_ok();
    waiter.wait_ok();
    let (events, stats) = stop(cap);
    assert_eq!(stats.probes, Probes::Fast);
    let (h, w) = (holder.pid(), waiter.pid());
    let meta = std::fs::metadata(path).unwrap();
    let ino = std::os::unix::fs::MetadataExt::ino(&meta);

    // The holder: grant, then unlock, same owner, whole file, from python3.
    let hl: Vec<&Event> = events.iter().filter(|e| is_lock(e, h)).collect();
    assert!(hl.len() >= 2, "{hl:?}");
    let grant = hl[0].lock().unwrap();
    assert_eq!(
        (grant.lock_type, grant.ret, grant.ino),
        (k::F_WRLCK, 0, ino)
    );
    assert_eq!(grant.flags, k::FL_POSIX | k::FL_SLEEP);
    assert_eq!((grant.start, grant.end), (0, i64::MAX));
    assert_eq!(hl[0].comm.as_str(), "python3");
    let unlock_ev = hl
        .iter()
        .find(|e| e.lock().unwrap().lock_type == k::F_UNLCK)
        .expect("the holder's unlock");
    assert_eq!(unlock_ev.lock().unwrap().owner, grant.owner);
    assert_ne!(grant.owner, 0);

    // The waiter blocked (FILE_LOCK_DEFERRED with FL_SLEEP) under a blocker, on the same file.
    let block = events
        .iter()
        .find(|e| is_lock(e, w) && e.lock().unwrap().ret == k::FILE_LOCK_DEFERRED)
        .expect("the waiter's block");
    let b = block.lock().unwrap();
    assert_eq!((b.lock_type, b.ino, b.dev), (k::F_WRLCK, ino, grant.dev));
    assert_ne!(b.flags & k::FL_SLEEP, 0);
    assert_ne!(b.blocker, 0, "a blocked request names what it waits under");
    assert_ne!(b.owner, grant.owner, "two processes, two POSIX owners");
    // Switched out after blocking (it waits in do_lock_file_wait).
    assert!(
        events.iter().any(|e| e.kind == Kind::SchedSwitch
            && e.tid == w
            && e.ts_ns > block.ts_ns
            && e.sched().unwrap().prev_state != 0),
        "the blocked waiter's switch-out"
    );
    // The holder's unlock woke it: the wakeup comes before the unlock event, from the holder.
    let wake = events
        .iter()
        .find(|e| {
            e.kind == Kind::SchedWaking
                && e.sched().unwrap().target_tid == w
                && e.ts_ns > block.ts_ns
        })
        .expect("the waiter's wakeup");
    assert_eq!(wake.tid, unlock_ev.tid, "woken by the unlocking task");
    assert!(wake.ts_ns <= unlock_ev.ts_ns);
    assert_eq!(wake.sched().unwrap().target_comm.as_str(), "python3");
    // Switched in after the wakeup, then granted.
    let run = events
        .iter()
        .find(|e| {
            e.kind == Kind::SchedSwitch
                && e.sched().unwrap().target_tid == w
                && e.ts_ns >= wake.ts_ns
        })
        .expect("the woken waiter's switch-in");
    let granted = events
        .iter()
        .find(|e| {
            is_lock(e, w) && e.lock().unwrap().ret == 0 && e.lock().unwrap().lock_type == k::F_WRLCK
        })
        .expect("the waiter's grant");
    assert!(run.ts_ns <= granted.ts_ns);
    // fcntl_setlk is shipped only when it says something new: nothing here.
    assert!(
        !events.iter().any(|e| e.kind == Kind::FcntlSetlk),
        "no fcntl_setlk for calls posix_lock_inode decided"
    );
    // No syscall events, no sched_wakeup / migrate in the fast set.
    assert!(events.iter().all(|e| !matches!(
        e.kind,
        Kind::SysEnterFcntl | Kind::SysExitFcntl | Kind::SchedWakeup | Kind::SchedMigrateTask
    )));
    // Once granted it waits no more: no sched events of it after its unlock.
    let w_unlock = events
        .iter()
        .find(|e| is_lock(e, w) && e.lock().unwrap().lock_type == k::F_UNLCK)
        .expect("the waiter's unlock");
    assert!(
        !events.iter().any(|e| e.kind == Kind::SchedWaking
            && e.sched().unwrap().target_tid == w
            && e.ts_ns > w_unlock.ts_ns),
        "sched events are shipped for waiting tasks only"
    );
}

#[test]
fn refused_attempts_and_interrupted_waits_are_shipped() {
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lockfile");
    let path = path.to_str().unwrap();
    let cap = fast(false);

    let mut holder = Locker::spawn(path, "hold");
    assert_eq!(holder.line(), "requesting");
    assert_eq!(holder.line(), "locked");
    let mut poller = Locker::spawn(path, "try");
    for _ in 0..3 {
        assert_eq!(poller.line(), "busy");
    }
    poller.wait_ok();
    let mut victim = Locker::spawn(path, "interrupt");
    assert_eq!(victim.line(), "requesting");
    sleep(Duration::from_millis(100));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(victim.pid() as i32),
        nix::sys::signal::Signal::SIGUSR1,
    )
    .unwrap();
    assert_eq!(victim.line(), "interrupted");
    victim.wait_ok();
    holder.release();
    holder.wait_ok();
    let (events, _) = stop(cap);

    // Three refused F_SETLK attempts: EAGAIN, no FL_SLEEP.
    let refused: Vec<&Event> = events
        .iter()
        .filter(|e| is_lock(e, poller.pid()) && e.lock().unwrap().ret == -11)
        .collect();
    assert_eq!(refused.len(), 3, "{refused:?}");
    for e in &refused {
        let l = e.lock().unwrap();
        assert_eq!((l.flags & k::FL_SLEEP, l.lock_type), (0, k::F_WRLCK));
    }
    // Their fcntl_setlk (EAGAIN too) says nothing new: not shipped.
    assert!(
        !events
            .iter()
            .any(|e| e.kind == Kind::FcntlSetlk && e.tgid == poller.pid())
    );
    // The interrupted wait: a block, then fcntl_setlk with the error the wait ended with.
    let v = victim.pid();
    assert!(
        events
            .iter()
            .any(|e| is_lock(e, v) && e.lock().unwrap().ret == k::FILE_LOCK_DEFERRED)
    );
    let ended: Vec<&Event> = events
        .iter()
        .filter(|e| e.kind == Kind::FcntlSetlk && e.tgid == v)
        .collect();
    assert_eq!(ended.len(), 1, "{ended:?}");
    let ret = ended[0].lock().unwrap().ret;
    assert!(ret == -512 || ret == -4, "ERESTARTSYS or EINTR, got {ret}");
    // Its wakeup by the signal was shipped (it was waiting), and nothing after its end.
    assert!(events.iter().any(|e| e.kind == Kind::SchedWaking
        && e.sched().unwrap().target_tid == v
        && e.ts_ns <= ended[0].ts_ns));
}

/// `lockrace run --no-trace` as a child of this test process: the capture adopts it and the
/// roles it forks, exactly as a traced run's own capture does.
#[test]
fn kernel_grants_equal_the_roles_acquisitions_on_posix_reopen() {
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("run.json");
    let cap = fast(false);
    let out = Command::new(env!("CARGO_BIN_EXE_lockrace"))
        .args([
            "run",
            "--no-trace",
            "--lock",
            "posix",
            "--share",
            "reopen",
            "--iterations",
            "300",
            "--json",
        ])
        .arg(&json)
        .output()
        .unwrap();
    let (events, _) = stop(cap);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let roles = doc["workload"]["roles"].as_array().unwrap();
    assert_eq!(roles.len(), 2);
    let mut blocked = 0;
    for r in roles {
        let pid = r["pid"].as_u64().unwrap() as u32;
        let ino = r["memfd_ino"].as_u64().unwrap();
        let on_memfd = |e: &&Event| is_lock(e, pid) && e.lock().unwrap().ino == ino;
        let grants = events
            .iter()
            .filter(on_memfd)
            .filter(|e| e.lock().unwrap().ret == 0 && e.lock().unwrap().lock_type <= k::F_WRLCK)
            .count() as u64;
        assert_eq!(
            grants,
            r["acquisitions"].as_u64().unwrap(),
            "kernel grants != acquisitions for {r}"
        );
        blocked += events
            .iter()
            .filter(on_memfd)
            .filter(|e| e.lock().unwrap().ret == k::FILE_LOCK_DEFERRED)
            .count();
        assert!(
            events
                .iter()
                .any(|e| e.kind == Kind::SchedWaking && e.sched().unwrap().target_tid == pid),
            "the role {pid} blocked and was woken"
        );
    }
    assert!(blocked > 0, "the handoff blocks");
}

#[test]
fn program_statistics_are_read_and_bpf_stats_restored() {
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let before = lockrace::capture::progstats::sysctl_value().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lockfile");
    let path = path.to_str().unwrap();

    // BPF_ENABLE_STATS keeps statistics on while its descriptor is open, without touching the
    // sysctl (which shows only its own setting): the runs counted below show they were on.
    let cap = fast(true);
    let mut holder = Locker::spawn(path, "hold");
    assert_eq!(holder.line(), "requesting");
    assert_eq!(holder.line(), "locked");
    let mut waiter = Locker::spawn(path, "wait");
    assert_eq!(waiter.line(), "requesting");
    sleep(Duration::from_millis(50));
    holder.release();
    assert_eq!(waiter.line(), "locked");
    holder.wait_ok();
    waiter.wait_ok();
    let (events, stats) = stop(cap);
    assert_eq!(
        lockrace::capture::progstats::sysctl_value().unwrap(),
        before,
        "BPF statistics restored after the capture"
    );
    let names: Vec<&str> = stats.programs.iter().map(|p| p.name.as_str()).collect();
    let expected: Vec<&str> = FAST_PROBES.iter().map(|p| p.program).collect();
    assert_eq!(names, expected);
    let posix = &stats.programs[0];
    let locks = events
        .iter()
        .filter(|e| e.kind == Kind::PosixLockInode)
        .count() as u64;
    // The program ran at least once per event it shipped (more: untraced tasks' locks).
    assert!(posix.runs.unwrap() >= locks, "{posix:?} vs {locks} events");
    assert!(posix.ns_per_run().unwrap() > 0.0);
    for p in &stats.programs {
        assert!(p.runs.is_some() && p.recursion_misses.is_some(), "{p:?}");
    }
    assert!(
        stats
            .programs
            .iter()
            .any(|p| p.name == "fast_switch" && p.runs > Some(0))
    );
    assert_eq!(
        stats.missed,
        stats
            .programs
            .iter()
            .filter_map(|p| p.recursion_misses)
            .sum::<u64>()
    );

    // Without --self-cost: misses are still read (the kernel always counts them), runs are not.
    let cap = start(CaptureOptions {
        probes: Probes::Full,
        self_cost: false,
    });
    let mut holder = Locker::spawn(path, "hold");
    assert_eq!(holder.line(), "requesting");
    assert_eq!(holder.line(), "locked");
    holder.release();
    holder.wait_ok();
    let (_, stats) = stop(cap);
    assert_eq!(
        stats.programs.len(),
        lockrace::capture::loader::PROGRAMS.len()
    );
    for p in &stats.programs {
        assert_eq!((p.runs, p.ns_per_run()), (None, None), "{p:?}");
        assert!(p.recursion_misses.is_some(), "{p:?}");
    }
    assert_eq!(
        lockrace::capture::progstats::sysctl_value().unwrap(),
        before
    );
}

/// A kernel without BTF: the fast set falls back to the lean classic programs with one notice,
/// and the capture still records (here through `lockrace record`, the env switches being the
/// measurement hooks: `LOCKRACE_PROBES` selects the set, `LOCKRACE_BTF` hides the BTF).
#[test]
fn without_btf_the_fast_set_falls_back_to_the_classic_programs_with_a_notice() {
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("e.jsonl");
    let lockfile = dir.path().join("lockfile");
    let out = Command::new(env!("CARGO_BIN_EXE_lockrace"))
        .env("LOCKRACE_PROBES", "fast")
        .env("LOCKRACE_BTF", dir.path().join("no-such-btf"))
        .args(["record", "--events"])
        .arg(&events)
        .args(["--", "python3", "-c", LOCKER])
        .arg(&lockfile)
        .arg("wait")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let notices: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("the fast probes cannot run here"))
        .collect();
    assert_eq!(notices.len(), 1, "{stderr}");
    assert!(
        notices[0].starts_with("lockrace: the fast probes cannot run here (this kernel has no BTF")
            && notices[0].ends_with("using the classic tracepoints of --probes lean"),
        "{}",
        notices[0]
    );
    let text = std::fs::read_to_string(&events).unwrap();
    let kinds: Vec<String> = text
        .lines()
        .filter_map(|l| lockrace::events::from_json(l).ok())
        .map(|e| e.kind.name().to_string())
        .collect();
    // The lean set: lock decisions, no syscall brackets, no fcntl_setlk.
    assert_eq!(
        kinds.iter().filter(|k| *k == "posix_lock_inode").count(),
        2,
        "{kinds:?}"
    );
    assert!(
        !kinds
            .iter()
            .any(|k| k.starts_with("sys_") || k == "fcntl_setlk"),
        "{kinds:?}"
    );
}

/// `run --probes fast --self-cost` from the command line: the report names the set, has one
/// entry per attached fast program with its runs and cost, sums the misses, keeps the handoff's
/// figures exact, and leaves the BPF statistics sysctl as it found it. Then the same through
/// `record --self-cost` and an offline `report`: the recording's trailer carries the figures.
#[test]
fn self_cost_figures_reach_the_run_report_and_the_offline_report() {
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let before = lockrace::capture::progstats::sysctl_value().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("run.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lockrace"))
        .args(["run", "--probes", "fast", "--self-cost", "--no-baseline"])
        .args([
            "--lock",
            "posix",
            "--share",
            "reopen",
            "--iterations",
            "300",
        ])
        .args(["--json", json.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        lockrace::capture::progstats::sysctl_value().unwrap(),
        before,
        "BPF statistics restored after the run"
    );
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let cap = &doc["capture"];
    assert_eq!(cap["probes"], "fast", "{cap}");
    let programs = cap["programs"].as_array().unwrap();
    let names: Vec<&str> = programs
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    let expected: Vec<&str> = FAST_PROBES.iter().map(|p| p.program).collect();
    assert_eq!(names, expected);
    let mut misses = 0;
    for p in programs {
        assert!(p["runs"].is_u64(), "{p}");
        misses += p["recursion_misses"].as_u64().unwrap();
    }
    assert_eq!(cap["missed"].as_u64(), Some(misses), "{cap}");
    let posix = &programs[0];
    assert_eq!(posix["name"], "fast_posix_lock");
    // Every grant of the two roles is one run at least (the kernel counts all tasks' runs).
    let grants: u64 = doc["whoops"]["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["grants"].as_u64().unwrap())
        .sum();
    assert!(grants >= 600, "{}", doc["whoops"]);
    assert!(
        posix["runs"].as_u64().unwrap() >= grants,
        "{posix} vs {grants} grants"
    );
    assert!(posix["ns_per_run"].as_f64().unwrap() > 0.0, "{posix}");
    assert!(
        stdout.contains("Probes: the fast set, ")
            && stdout.contains("cost per run: fast_posix_lock "),
        "{stdout}"
    );

    // record --self-cost, then report: the figures come back from the trailer.
    let events = dir.path().join("ev.jsonl");
    let lockfile = dir.path().join("lockfile");
    let script = format!(
        "import fcntl, os\nfd = os.open({:?}, os.O_RDWR | os.O_CREAT)\nfor _ in range(20):\n    \
         fcntl.lockf(fd, fcntl.LOCK_EX)\n    fcntl.lockf(fd, fcntl.LOCK_UN)\n",
        lockfile.to_str().unwrap()
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lockrace"))
        .args(["record", "--probes", "fast", "--self-cost", "--events"])
        .arg(&events)
        .args(["--", "python3", "-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lockrace"))
        .arg("report")
        .arg(&events)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = report
        .lines()
        .find(|l| l.contains("Probes: the fast set, "))
        .unwrap_or_else(|| panic!("no Probes line in the offline report:\n{report}"));
    assert!(line.contains("cost per run: fast_posix_lock "), "{line}");
    assert_eq!(
        lockrace::capture::progstats::sysctl_value().unwrap(),
        before,
        "BPF statistics restored after the recording"
    );
}
