//! The diagnoses `lockrace trace` adds, on hand-written kernel event sequences
//! (`analysis::synth`): `writer-starvation` and `polling-lock`, positive and negative, shared
//! readers that are no violation, and byte-range locks that stay distinct although the kernel
//! reports coalesced ranges.
use lockrace::analysis::contention::{POLLING_MIN_RETRIES, STARVATION_MIN_READERS};
use lockrace::analysis::synth::{Actor, Flavor, Script};
use lockrace::analysis::{AnalysisInput, Analyzer, LockSummary, analyze};
use lockrace::events::Kind;
use lockrace::report::model::Document;
use lockrace_common::k;

fn doc_of(s: &Script) -> Document {
    let a = analyze(&s.events, &AnalysisInput::default());
    let facts = lockrace::report::build::Facts {
        kernel_release: "test".into(),
        ..Default::default()
    };
    lockrace::report::build::document(facts, Some(&a))
}

fn codes(doc: &Document) -> Vec<&str> {
    doc.diagnosis.iter().map(|d| d.code.as_str()).collect()
}

fn summaries(s: &Script) -> Vec<LockSummary> {
    analyze(&s.events, &AnalysisInput::default()).locks
}

fn posix(tid: u32) -> Actor {
    Actor::new(
        tid,
        tid,
        tid % 2,
        &format!("p{tid}"),
        0xffff_8881_0000_0000 + u64::from(tid) * 0x1000,
        Flavor::Posix,
    )
}

/// A non-blocking request that is granted at once.
fn try_ok(s: &mut Script, a: &Actor, lock_type: u8) {
    s.enter(a, lock_type, false);
    s.lock_event(a, Kind::PosixLockInode, lock_type, 0, 0, false);
    s.lock_event(a, Kind::FcntlSetlk, lock_type, 0, 0, false);
    s.exit(a, 0);
}

/// Reader 1 holds a read lock, the writer blocks behind it, then `newer` readers arrive and are
/// granted while the writer waits; then everyone leaves and the writer gets it.
fn writer_behind_readers(newer: u32) -> Script {
    let mut s = Script::new();
    let first = posix(1);
    let w = posix(100);
    s.lock_now(&first, k::F_RDLCK);
    s.lock_block(&w, k::F_WRLCK, first.held);
    let readers: Vec<Actor> = (0..newer).map(|i| posix(2 + i)).collect();
    for r in &readers {
        s.wait(1_000_000);
        s.lock_now(r, k::F_RDLCK);
    }
    s.unlock(&first, &[&w]);
    s.run(&w);
    if readers.is_empty() {
        s.retry_grant(&w, k::F_WRLCK);
        return s;
    }
    s.retry_block(&w, k::F_WRLCK, readers[0].held);
    for r in &readers {
        s.unlock(r, &[&w]);
    }
    s.run(&w);
    s.retry_grant(&w, k::F_WRLCK);
    s
}

#[test]
fn a_writer_passed_by_a_stream_of_newer_readers_is_starved() {
    let n = STARVATION_MIN_READERS as u32 + 2;
    let s = writer_behind_readers(n);
    let doc = doc_of(&s);
    assert!(
        codes(&doc).contains(&"writer-starvation"),
        "{:?}",
        doc.diagnosis
    );
    let d = doc
        .diagnosis
        .iter()
        .find(|d| d.code == "writer-starvation")
        .unwrap();
    assert_eq!(d.evidence["readers_ahead"], u64::from(n));
    assert_eq!(d.evidence["writer"]["tid"], 100);
    assert_eq!(d.evidence["ended"], "granted");
    let c = doc.locks[0].contention.as_ref().unwrap();
    assert_eq!((c.writers_passed, c.starved_writers), (1, 1));
    assert_eq!(c.readers_ahead_of_writers, u64::from(n));
    // Shared readers held together are not a violation.
    assert_eq!(doc.locks[0].overlapping_grants, 0);
    assert!(!codes(&doc).contains(&"no-mutual-exclusion"));
    assert!(
        doc.verdict
            .iter()
            .any(|v| v.starts_with("Writer starvation")),
        "{:?}",
        doc.verdict
    );
}

#[test]
fn a_few_newer_readers_are_counted_but_not_starvation() {
    let s = writer_behind_readers(STARVATION_MIN_READERS as u32 - 1);
    let doc = doc_of(&s);
    assert!(!codes(&doc).contains(&"writer-starvation"));
    let c = doc.locks[0].contention.as_ref().unwrap();
    assert_eq!((c.writers_passed, c.starved_writers), (1, 0));
}

#[test]
fn readers_granted_together_without_a_writer_are_fine() {
    let mut s = Script::new();
    let readers: Vec<Actor> = (1..=5).map(posix).collect();
    for r in &readers {
        s.lock_now(r, k::F_RDLCK);
    }
    for r in &readers {
        s.unlock(r, &[]);
    }
    let doc = doc_of(&s);
    assert!(doc.diagnosis.is_empty(), "{:?}", doc.diagnosis);
    assert_eq!(doc.locks[0].grants, 5);
    assert_eq!(doc.locks[0].overlapping_grants, 0);
    assert!(doc.locks[0].contention.is_none());
}

#[test]
fn readers_that_arrived_before_the_writer_blocked_do_not_pass_it() {
    let mut s = Script::new();
    let first = posix(1);
    let early: Vec<Actor> = (2..=6).map(posix).collect();
    let w = posix(100);
    s.lock_now(&first, k::F_RDLCK);
    // The early readers are inside their fcntl() before the writer blocks...
    for r in &early {
        s.enter(r, k::F_RDLCK, true);
    }
    s.lock_block(&w, k::F_WRLCK, first.held);
    // ... and granted after it.
    for r in &early {
        s.retry_grant(r, k::F_RDLCK);
    }
    let doc = doc_of(&s);
    assert!(!codes(&doc).contains(&"writer-starvation"));
    assert!(doc.locks[0].contention.is_none(), "{:?}", doc.locks[0]);
}

#[test]
fn a_still_waiting_writer_is_reported_as_such() {
    let mut s = Script::new();
    let first = posix(1);
    let w = posix(100);
    s.lock_now(&first, k::F_RDLCK);
    s.lock_block(&w, k::F_WRLCK, first.held);
    for i in 0..5 {
        s.wait(1_000_000);
        s.lock_now(&posix(2 + i), k::F_RDLCK);
    }
    let doc = doc_of(&s);
    let d = doc
        .diagnosis
        .iter()
        .find(|d| d.code == "writer-starvation")
        .expect("starved");
    assert_eq!(d.evidence["ended"], "still_waiting");
    assert!(d.message.contains("still waiting"), "{}", d.message);
}

#[test]
fn a_task_that_fails_sleeps_and_retries_is_polling() {
    let mut s = Script::new();
    let holder = posix(1);
    let poller = posix(2);
    s.lock_now(&holder, k::F_WRLCK);
    let fails = POLLING_MIN_RETRIES + 2;
    for _ in 0..fails {
        s.try_fail(&poller, k::F_WRLCK);
        s.wait(5_000_000);
    }
    s.unlock(&holder, &[]);
    try_ok(&mut s, &poller, k::F_WRLCK);
    let doc = doc_of(&s);
    let d = doc
        .diagnosis
        .iter()
        .find(|d| d.code == "polling-lock")
        .unwrap_or_else(|| panic!("{:?}", doc.diagnosis));
    assert_eq!(d.evidence["busy_attempts"], fails);
    assert_eq!(
        d.evidence["retries"], fails,
        "every failure was tried again"
    );
    assert_eq!(d.evidence["longest_streak"], fails);
    assert_eq!(d.evidence["streak_task"]["tid"], 2);
    let c = doc.locks[0].contention.as_ref().unwrap();
    assert_eq!(c.nonblocking_requests, fails + 1);
    assert_eq!(c.busy_tasks[0].tid, 2);
    assert_eq!(doc.locks[0].would_block, fails);
    // No queue, so no handoff to judge.
    assert_eq!(
        doc.locks[0].handoffs.fifo + doc.locks[0].handoffs.unresolved,
        0
    );
    assert!(
        doc.verdict[0].starts_with("Polled, not queued"),
        "{:?}",
        doc.verdict
    );
}

#[test]
fn one_failed_try_lock_is_a_busy_attempt_not_polling() {
    let mut s = Script::new();
    let holder = posix(1);
    let other = posix(2);
    s.lock_now(&holder, k::F_WRLCK);
    s.try_fail(&other, k::F_WRLCK);
    s.unlock(&holder, &[]);
    let doc = doc_of(&s);
    assert!(!codes(&doc).contains(&"polling-lock"));
    let c = doc.locks[0].contention.as_ref().unwrap();
    assert_eq!((c.busy_attempts, c.busy_retries), (1, 0));
}

#[test]
fn blocking_waiters_are_not_polling() {
    let mut s = Script::new();
    let a = posix(1);
    let b = posix(2);
    for _ in 0..5 {
        s.lock_now(&a, k::F_WRLCK);
        s.lock_block(&b, k::F_WRLCK, a.held);
        s.unlock(&a, &[&b]);
        s.run(&b);
        s.retry_grant(&b, k::F_WRLCK);
        s.unlock(&b, &[]);
    }
    let doc = doc_of(&s);
    assert!(!codes(&doc).contains(&"polling-lock"));
    assert!(doc.locks[0].contention.is_none());
    assert_eq!(doc.locks[0].handoffs.fifo, 5);
}

/// sqlite's pattern: single bytes (pending 0x40000000, reserved 0x40000001) and the shared range
/// after them, locked with F_SETLK. The kernel coalesces an owner's adjacent write locks and
/// reports the merged range in the grant event; the requested range keeps them apart.
#[test]
fn adjacent_byte_locks_stay_distinct_despite_kernel_coalescing() {
    const PENDING: i64 = 0x4000_0000;
    let mut s = Script::new();
    let a = posix(1);
    let pending = a.range(PENDING, PENDING);
    let reserved = a.range(PENDING + 1, PENDING + 1);
    let shared = a.range(PENDING + 2, PENDING + 511);
    try_ok(&mut s, &pending, k::F_WRLCK);
    // Reserved, granted: the kernel reports pending+reserved merged.
    s.enter(&reserved, k::F_WRLCK, false);
    let merged = a.range(PENDING, PENDING + 1);
    s.lock_event(&merged, Kind::PosixLockInode, k::F_WRLCK, 0, 0, false);
    s.exit(&reserved, 0);
    // Exclusive on the shared range: merged with both.
    s.enter(&shared, k::F_WRLCK, false);
    let all = a.range(PENDING, PENDING + 511);
    s.lock_event(&all, Kind::PosixLockInode, k::F_WRLCK, 0, 0, false);
    s.exit(&shared, 0);
    // Another process polls the reserved byte.
    let b = posix(2).range(PENDING + 1, PENDING + 1);
    for _ in 0..4 {
        s.try_fail(&b, k::F_WRLCK);
    }
    let locks = summaries(&s);
    let ranges: Vec<(i64, i64)> = locks.iter().map(|l| (l.key.start, l.key.end)).collect();
    assert_eq!(
        ranges,
        vec![
            (PENDING, PENDING),
            (PENDING + 1, PENDING + 1),
            (PENDING + 2, PENDING + 511)
        ]
    );
    assert_eq!(locks[1].contention.busy, 4);
    assert_eq!(locks[1].contention.retries, 3);
    assert_eq!(locks[0].contention.busy + locks[2].contention.busy, 0);
}

/// A request whose range is not relative to the file start (lockf: SEEK_CUR) keeps the range
/// the kernel reported.
#[test]
fn ranges_from_the_current_position_fall_back_to_the_event() {
    let mut s = Script::new();
    let a = posix(1).range(10, 19);
    s.enter(&a, k::F_WRLCK, true);
    // Patch the entry to SEEK_CUR with a meaningless start.
    if let Some(e) = s.events.last_mut()
        && let lockrace::events::Data::Syscall(sc) = &mut e.data
    {
        sc.l_whence = 1;
        sc.l_start = 0;
    }
    s.lock_event(&a, Kind::PosixLockInode, k::F_WRLCK, 0, 0, true);
    s.exit(&a, 0);
    let locks = summaries(&s);
    assert_eq!((locks[0].key.start, locks[0].key.end), (10, 19));
}

/// A long trace of many short-lived processes (a `--path` trace of flock(1) loops): idle tasks
/// are forgotten, the ones the report cites keep their names.
#[test]
fn idle_tasks_are_pruned_and_cited_names_survive() {
    let mut s = Script::new();
    let poller = posix(7);
    let holder = posix(8);
    s.lock_now(&holder, k::F_WRLCK);
    for _ in 0..4 {
        s.try_fail(&poller, k::F_WRLCK);
    }
    s.unlock(&holder, &[]);
    for i in 0..200 {
        let a = posix(1000 + i);
        s.lock_now(&a, k::F_WRLCK);
        s.unlock(&a, &[]);
    }
    let mut an = Analyzer::new(&AnalysisInput::default());
    an.extend(&s.events);
    an.advance(s.now + 10_000_000);
    let before = an.footprint().tasks;
    assert!(before >= 202, "{before}");
    let pruned = an.prune_tasks(s.now + 1);
    assert_eq!(pruned, before);
    assert_eq!(an.footprint().tasks, 0);
    let a = an.finish();
    assert_eq!(a.locks[0].grants, 201);
    assert_eq!(
        a.comm_of(7),
        Some("p7"),
        "the busy task is cited: its name is kept"
    );
    assert_eq!(a.comm_of(1100), None, "an uncited task is forgotten");
}

/// `--path` traces see flock(1) processes without their syscalls: a waiter woken on the
/// releaser's CPU can log its grant before the releaser's unlock event. The release is applied
/// at the grant, so the release that had a waiter is still a (fifo) handoff.
#[test]
fn a_late_unlock_without_syscalls_still_makes_a_handoff() {
    let flock = |tid: u32| {
        Actor::new(
            tid,
            tid,
            0,
            "flock",
            0xffff_8882_0000_0000 + u64::from(tid) * 0x1000,
            Flavor::Flock,
        )
    };
    let (h, w) = (flock(1), flock(2));
    let mut s = Script::new();
    s.lock_event(&h, Kind::FlockLockInode, k::F_WRLCK, 0, 0, true);
    s.lock_event(
        &w,
        Kind::FlockLockInode,
        k::F_WRLCK,
        k::FILE_LOCK_DEFERRED,
        h.held,
        true,
    );
    s.wait(1_000_000);
    s.lock_event(&w, Kind::FlockLockInode, k::F_WRLCK, 0, 0, true);
    s.lock_event(&h, Kind::FlockLockInode, k::F_UNLCK, 0, 0, false);
    let a = analyze(&s.events, &AnalysisInput::default());
    let l = &a.locks[0];
    assert_eq!((l.grants, l.releases), (2, 1));
    assert_eq!(l.handoffs.fifo, 1, "{:?}", l.handoffs);
    assert_eq!((a.stats.raced_releases, a.stats.inconsistencies), (1, 0));
    assert!(a.incomplete.is_empty(), "{:?}", a.incomplete);

    // The same with the unlock lost: still a handoff, but the missing release is reported.
    s.events.pop();
    let a = analyze(&s.events, &AnalysisInput::default());
    assert_eq!(a.locks[0].handoffs.fifo, 1);
    assert_eq!(a.stats.inconsistencies, 1);
    assert!(!a.incomplete.is_empty());
}

/// sqlite3 writers recorded with `--probes fast` (no syscall records, so no asked range): the
/// kernel traces each grant after coalescing it with the owner's adjacent locks of the same type,
/// yet the pending, reserved and shared bytes stay three locks, as with the full probe set, and
/// every granted lock event is counted once.
#[test]
fn sqlite_byte_locks_stay_distinct_without_syscall_records() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/real/sqlite_writers_fast.jsonl"
    );
    let (events, _) = lockrace::jsonl::reader::read_events(std::path::Path::new(path)).unwrap();
    assert!(
        !events.iter().any(|e| e.kind.name().starts_with("sys_")),
        "the fixture is a fast-set recording"
    );
    let locks = analyze(&events, &AnalysisInput::default()).locks;
    let ranges: Vec<(i64, i64)> = locks.iter().map(|l| (l.key.start, l.key.end)).collect();
    const PENDING: i64 = 0x4000_0000;
    assert_eq!(
        ranges,
        vec![
            (PENDING, PENDING),
            (PENDING + 1, PENDING + 1),
            (PENDING + 2, PENDING + 511)
        ]
    );
    let granted = events
        .iter()
        .filter(|e| e.kind == Kind::PosixLockInode)
        .filter_map(|e| e.lock())
        .filter(|l| l.ret == 0 && l.lock_type != k::F_UNLCK)
        .count() as u64;
    assert_eq!(locks.iter().map(|l| l.grants).sum::<u64>(), granted);
    for l in &locks {
        assert!(l.grants > 0 && l.overlapping_grants == 0, "{l:?}");
    }
}
