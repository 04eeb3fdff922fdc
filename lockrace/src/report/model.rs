//! The versioned report document: what `--json` writes, and what every other rendering is
//! built from. The whole schema is here, data only: the document, its locks, handoffs and
//! diagnoses, the `contention` object, and the `workload` object (a run's and each role's own
//! account, the handoff latency, the upgrade counts, the probe effect; the JSONL trailer
//! carries it too). Schema documented in docs/REPORT-SCHEMA.md; bump [`SCHEMA_VERSION`] on any
//! incompatible change (adding a field with a default is compatible).
//!
//! Invariants: this file imports nothing of lockrace (the code that fills a type lives with
//! its producer: `report::build`, `report::contention`, `workload::latency`, `workload::role`);
//! every list is bounded (see the analysis caps); kernel pointers are `#N` labels numbered in
//! the document, or hex strings with `raw_pointers` (JSON numbers lose precision above 2^53);
//! durations are integer nanoseconds.
use serde::{Deserialize, Serialize};

pub const SCHEMA_VERSION: u32 = 1;

#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct KernelInfo {
    pub release: String,
    /// The filelock field naming the probes resolved on this kernel (`fl_type (5.0-6.8 names)`
    /// or `type (6.9+ names)`); absent when nothing was traced.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub lock_field_names: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct CaptureInfo {
    /// Events decoded.
    pub events: u64,
    /// Records the kernel could not write (ring buffer full), summed over CPUs.
    pub dropped: u64,
    /// False when events were dropped or the capture was interrupted.
    pub complete: bool,
    /// The probe set attached (`full`, `lean`, `fast`; `lean` when `fast` fell back); absent
    /// in reports of recordings made before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probes: Option<String>,
    /// Every attached program's figures at the end of the capture, in attach order; absent
    /// when they are not known (recordings made before they were recorded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub programs: Vec<ProgramReport>,
    /// Runs the kernel skipped, summed over `programs` (`recursion_misses`): events the
    /// capture never saw (counted before lockrace's filter, so possibly of untraced tasks).
    /// Absent when `programs` is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missed: Option<u64>,
}

/// One attached eBPF program at the end of a capture (`BPF_OBJ_GET_INFO_BY_FD`).
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct ProgramReport {
    /// lockrace's name of the program (its ELF symbol, e.g. `fast_posix_lock`).
    pub name: String,
    /// Runs while BPF statistics were on (`--self-cost`); null when they were off.
    pub runs: Option<u64>,
    /// Times the kernel skipped the program because another BPF program was running on that
    /// CPU: each one an event lost. Null on kernels before 5.12, which do not count them.
    pub recursion_misses: Option<u64>,
    /// Mean nanoseconds per run while BPF statistics were on; null unless `--self-cost`.
    pub ns_per_run: Option<f64>,
}

/// What `lockrace trace` attached to and how the trace ended.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceInfo {
    /// What was traced: `` `CMD ARGS` ``, `pid 1234`, `processes locking FILE`, or
    /// `every process on this machine`.
    pub target: String,
    /// `command_exited`, `processes_exited`, `duration`, `interrupted` (SIGINT) or `terminated`
    /// (SIGTERM). The report covers the events up to that moment.
    pub ended_by: String,
    /// The command's exit code (128+N when signal N ended it); null without a command.
    pub command_exit_code: Option<i32>,
    /// Wall-clock time from attach to detach.
    pub traced_ns: u64,
    /// Lock requests still in progress when the trace ended: their outcome lies after it (they
    /// are cut by the trace's end, not lost).
    pub open_requests_at_end: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Document {
    pub schema_version: u32,
    pub lockrace_version: String,
    /// False when anything is missing (interrupted run, dropped events, dead peer).
    pub complete: bool,
    /// Why the document is incomplete, one line each.
    #[serde(default)]
    pub incomplete_reasons: Vec<String>,
    /// True when owners and blockers are the kernel's addresses (`--raw-pointers`); absent:
    /// they are `#N` labels, numbered in this document (no kernel address is written).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub raw_pointers: bool,
    pub kernel: KernelInfo,
    /// Null for untraced runs.
    pub capture: Option<CaptureInfo>,
    /// `lockrace trace` only: what was traced and how it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<TraceInfo>,
    /// Null when the events were not produced by `lockrace run`.
    pub workload: Option<WorkloadReport>,
    /// The answer in a few sentences, most important first (what the terminal prints first).
    #[serde(default)]
    pub verdict: Vec<String>,
    /// Analyzer counters; null when no events were analysed (untraced run).
    #[serde(default)]
    pub analysis: Option<AnalysisReport>,
    /// One entry per lock (inode, lock class, overlapping byte ranges).
    #[serde(default)]
    pub locks: Vec<LockReport>,
    /// Whoops explained by kernel events; null when not a traced `run`.
    #[serde(default)]
    pub whoops: Option<WhoopsReport>,
    #[serde(default)]
    pub diagnosis: Vec<Diagnosis>,
    /// The worst handoffs (unfair first, then longest-waiting), with short timelines.
    #[serde(default)]
    pub worst_handoffs: Vec<HandoffReport>,
    /// Tasks seen in the events (first 256 by tid), for names.
    #[serde(default)]
    pub tasks: Vec<TaskReport>,
}

/// Analyzer counters (docs/REPORT-SCHEMA.md explains each).
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct AnalysisReport {
    pub events: u64,
    pub lock_events: u64,
    pub sched_events: u64,
    pub syscall_events: u64,
    /// Last event timestamp minus first.
    pub duration_ns: u64,
    pub reordered: u64,
    pub out_of_order: u64,
    pub syscalls: u64,
    pub unfinished_requests: u64,
    pub unfinished_blocked: u64,
    pub missing_exits: u64,
    pub missing_enters: u64,
    pub lock_events_outside_syscalls: u64,
    pub implicit_unlocks: u64,
    pub inconsistencies: u64,
    #[serde(default)]
    pub raced_releases: u64,
    pub unattributed_wakes: u64,
    pub unexpected_returns: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct HandoffCountsReport {
    pub fifo: u64,
    pub self_barge: u64,
    pub newcomer_barge: u64,
    pub waiter_reorder: u64,
    pub unresolved: u64,
}

/// Percentiles of a duration distribution (from log-linear buckets, within 6.25%; `max` exact).
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct Percentiles {
    pub count: u64,
    pub p50: Option<u64>,
    pub p90: Option<u64>,
    pub p99: Option<u64>,
    pub max: Option<u64>,
}

/// One power-of-two histogram bucket: `count` samples in `[lo_ns, hi_ns]`.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct HistBucket {
    pub lo_ns: u64,
    pub hi_ns: u64,
    pub count: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeReport {
    pub start: i64,
    /// Inclusive; null = to end of file.
    pub end: Option<i64>,
}

#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnerReport {
    /// The owner (`files_struct` for POSIX, `struct file` for OFD/flock): `#N`, or its kernel
    /// address in hex with `raw_pointers`.
    pub owner: String,
    pub tgids: Vec<u32>,
}

#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct LockReport {
    /// Short name used in messages: `major:minor/ino[range] (flock)`.
    pub name: String,
    /// `s_dev` as the kernel encodes it (major << 20 | minor).
    pub dev: u32,
    /// `major:minor`.
    pub device: String,
    pub ino: u64,
    pub path: Option<String>,
    /// Flavours seen: `posix`, `ofd`, `flock`, joined with `+`.
    pub kind: String,
    pub range: RangeReport,
    pub owners: Vec<OwnerReport>,
    pub owners_truncated: bool,
    pub requests: u64,
    pub blocks: u64,
    pub blocked_requests: u64,
    pub grants: u64,
    pub releases: u64,
    pub errors: u64,
    pub would_block: u64,
    pub handoffs: HandoffCountsReport,
    pub wake_inversions: u64,
    pub wake_order_ambiguous: u64,
    pub spurious_wakes: u64,
    pub overlapping_grants: u64,
    /// Tgids in the order their requests first blocked (first 1,000).
    pub block_order: Vec<u32>,
    /// Tgids in the order they were granted (first 1,000).
    pub grant_order: Vec<u32>,
    pub wait_ns: Percentiles,
    pub wake_to_run_ns: Percentiles,
    pub wait_histogram: Vec<HistBucket>,
    pub wake_to_run_histogram: Vec<HistBucket>,
    pub wakes: u64,
    pub wakes_same_cpu: u64,
    /// Busy attempts of non-blocking requests and writers passed by newer readers; absent when
    /// the lock had neither (report/contention.rs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contention: Option<ContentionReport>,
}

/// One task's non-blocking attempts on a lock.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct BusyTaskReport {
    pub tid: u32,
    pub tgid: u32,
    pub comm: String,
    /// Non-blocking requests.
    pub attempts: u64,
    /// Of which failed with EAGAIN.
    pub busy: u64,
    /// Attempts right after a busy one (the task polled).
    pub retries: u64,
    /// Most busy attempts in a row.
    pub longest_streak: u64,
}

/// The writer wait passed by the most newer readers.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct WriterWaitReport {
    pub writer: TaskReport,
    pub first_block_ts_ns: u64,
    /// First block -> grant, error, or the end of the events.
    pub waited_ns: u64,
    /// `granted`, `failed`, or `still_waiting` (when the events ended).
    pub ended: String,
    /// Read grants to requests that arrived after the writer blocked, during its wait.
    pub readers_ahead: u64,
}

/// Polling and writer starvation on one lock (docs/REPORT-SCHEMA.md).
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct ContentionReport {
    /// Non-blocking requests (`F_SETLK`, `F_OFD_SETLK`, `LOCK_NB`).
    pub nonblocking_requests: u64,
    /// Of which failed with EAGAIN: the lock was taken.
    pub busy_attempts: u64,
    /// Busy attempts tried again by the same task.
    pub busy_retries: u64,
    /// Most busy attempts in a row by one task, and that task.
    pub busy_longest_streak: u64,
    pub busy_streak_task: Option<TaskReport>,
    /// Per task, most busy first (first 16).
    pub busy_tasks: Vec<BusyTaskReport>,
    pub busy_tasks_truncated: bool,
    /// Read grants that passed a waiting writer which blocked before the reader arrived.
    pub readers_ahead_of_writers: u64,
    /// Writer waits passed by at least one newer reader.
    pub writers_passed: u64,
    /// Writer waits passed by at least 3 newer readers.
    pub starved_writers: u64,
    pub worst_writer_wait: Option<WriterWaitReport>,
}

#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct WhoopsCauses {
    pub self_barge: u64,
    pub peer_not_waiting: u64,
    pub no_exclusion: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct RoleWhoopsReport {
    pub role: String,
    pub tgid: u32,
    pub acquisitions: u64,
    pub grants: u64,
    pub whoops: u64,
    pub explained: u64,
    pub by_cause: WhoopsCauses,
}

#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct WhoopsExampleReport {
    pub role: String,
    pub index: u64,
    pub acquisition_ts_ns: u64,
    pub grant_ts_ns: u64,
    pub cause: String,
}

/// What the other side was doing at the explained whoops grants.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerStates {
    pub not_in_request: u64,
    pub in_request_not_blocked: u64,
    pub blocked: u64,
    pub woken_not_running: u64,
    pub running_not_retried: u64,
    pub shared_owner: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct WhoopsReport {
    pub total: u64,
    pub explained: u64,
    pub by_cause: WhoopsCauses,
    #[serde(default)]
    pub by_peer_state: PeerStates,
    pub roles: Vec<RoleWhoopsReport>,
    pub mismatches: Vec<String>,
    pub examples: Vec<WhoopsExampleReport>,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

/// One finding: a stable `code`, a one-line `message`, and the numbers behind it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Diagnosis {
    pub code: String,
    pub severity: Severity,
    pub message: String,
    pub evidence: serde_json::Value,
}

#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskReport {
    pub tid: u32,
    pub tgid: u32,
    pub comm: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct WaiterReport {
    pub tid: u32,
    pub tgid: u32,
    pub comm: String,
    pub first_block_ts_ns: u64,
    /// `read` or `write`.
    pub want: String,
    /// Already woken when the release happened.
    pub woken: bool,
}

#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct TimelineItem {
    pub ts_ns: u64,
    /// Since the first item of the timeline.
    pub dt_ns: u64,
    pub tid: u32,
    pub cpu: u32,
    /// `released`, `woke`, `ran`, `reblocked`, `granted`, `failed`.
    pub event: String,
    pub text: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct HandoffReport {
    /// Index into `locks`.
    pub lock: usize,
    pub release_ts_ns: u64,
    pub releaser: TaskReport,
    pub releaser_cpu: u32,
    /// `fifo`, `self_barge`, `newcomer_barge`, `waiter_reorder` or `unresolved`.
    pub outcome: String,
    pub waiters: Vec<WaiterReport>,
    pub waiters_total: usize,
    pub wake_order: Vec<u32>,
    pub next: Option<TaskReport>,
    pub grant_ts_ns: Option<u64>,
    pub oldest_wait_ns: u64,
    pub timeline: Vec<TimelineItem>,
    pub timeline_truncated: bool,
    /// What each task was doing around the handoff (blocked, runnable, holding), derived from
    /// the waiters and the timeline; what the HTML timeline draws. Empty in reports written
    /// before it existed.
    #[serde(default)]
    pub spans: Vec<SpanReport>,
    /// The wakeups in the timeline, waker -> wakee.
    #[serde(default)]
    pub wakeups: Vec<WakeupReport>,
}

/// One stretch of a task's state around a handoff.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct SpanReport {
    pub tid: u32,
    /// `blocked` (queued on the lock), `runnable` (woken, waiting for a CPU), `woken` (woken
    /// before the release, when it ran is not in the record) or `holding` (owns the lock).
    pub state: String,
    /// Null: it began before what the record shows (the releaser's holding span).
    pub start_ts_ns: Option<u64>,
    /// Null: it was still going when the record ended.
    pub end_ts_ns: Option<u64>,
}

/// A wakeup of a waiter: `waker_tid` (on `waker_cpu`) woke `wakee_tid`, aimed at `target_cpu`.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct WakeupReport {
    pub ts_ns: u64,
    pub waker_tid: u32,
    pub wakee_tid: u32,
    pub waker_cpu: u32,
    pub target_cpu: i32,
}

// The `workload` object: what `lockrace run` (and each role) said about itself. The roles
// print a `RoleReport` with `--json`; `run` reads them back and adds the run's own figures.

/// One role's own account of a run (what it printed with `--json`).
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct RoleReport {
    pub role: String,
    pub pid: u32,
    pub iterations: u64,
    /// Lock grants the role received (turns + whoops).
    pub acquisitions: u64,
    pub whoops: u64,
    /// Times the role entered the critical section while the other side was inside.
    pub overlaps: u64,
    pub elapsed_ns: u64,
    /// The memfd's device as the kernel encodes `s_dev`: `(major << 20) | minor`.
    #[serde(default)]
    pub memfd_dev: u64,
    /// The memfd's inode number.
    #[serde(default)]
    pub memfd_ino: u64,
    /// How long the turn took to reach this role (p50/p99 of `now - the other's stamp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff_latency: Option<HandoffLatency>,
    /// `--scenario upgrade`: what this role saw of the upgrades.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<UpgradeCounts>,
}

/// The `workload` object of the JSON report.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct WorkloadReport {
    pub lock: String,
    pub share: String,
    pub iterations: u64,
    pub roles: Vec<RoleReport>,
    /// Traced runs with a baseline: untraced vs traced whoops per handoff.
    #[serde(default)]
    pub probe_effect: Option<ProbeEffect>,
    /// `eventfd` or `futex` (then `lock` and `share` are `none`); absent for file locks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<String>,
    /// `upgrade` or `mixed` when the run was a scenario.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scenario: Option<String>,
}

/// What one role saw of the upgrades.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct UpgradeCounts {
    pub rounds: u64,
    /// Rounds in which the client was granted the exclusive lock before the server's upgrade
    /// returned (server: the client had it already when the upgrade returned; client: the
    /// upgrade had not returned when it got the lock).
    pub stolen: u64,
    /// Client: rounds in which its non-blocking upgrade was refused (the server's pending
    /// upgrade still held a conflicting lock).
    #[serde(default)]
    pub refused: u64,
}

/// The `handoff_latency` object of a role's report.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct HandoffLatency {
    /// Handoffs measured (the role's turns, minus the server's first).
    pub samples: u64,
    pub p50_ns: Option<u64>,
    pub p99_ns: Option<u64>,
    pub max_ns: Option<u64>,
    /// Non-empty buckets as `[index, count]` (`analysis::hist` numbering), for exact merges.
    #[serde(default)]
    pub buckets: Vec<[u64; 2]>,
}

/// How much tracing moved the race: untraced vs traced whoops per handoff.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
pub struct ProbeEffect {
    pub untraced_whoops_per_handoff: f64,
    pub traced_whoops_per_handoff: f64,
    /// traced / untraced (1.0: the probes did not move the race). Null when untraced is 0.
    pub ratio: Option<f64>,
}

impl Document {
    pub fn new(kernel_release: String) -> Self {
        Document {
            schema_version: SCHEMA_VERSION,
            lockrace_version: env!("CARGO_PKG_VERSION").to_string(),
            complete: true,
            incomplete_reasons: Vec::new(),
            raw_pointers: false,
            kernel: KernelInfo {
                release: kernel_release,
                lock_field_names: String::new(),
            },
            capture: None,
            trace: None,
            workload: None,
            verdict: Vec::new(),
            analysis: None,
            locks: Vec::new(),
            whoops: None,
            diagnosis: Vec::new(),
            worst_handoffs: Vec::new(),
            tasks: Vec::new(),
        }
    }

    pub fn mark_incomplete(&mut self, why: impl Into<String>) {
        self.complete = false;
        let why = why.into();
        if !self.incomplete_reasons.contains(&why) {
            self.incomplete_reasons.push(why);
        }
    }
}
