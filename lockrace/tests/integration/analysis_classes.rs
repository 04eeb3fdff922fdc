//! Hand-written kernel event sequences, one positive and one negative case per handoff class,
//! per diagnosis and per whoops cause.
use lockrace::analysis::synth::{Actor, Flavor, Script};
use lockrace::analysis::{
    Acquisition, Analysis, AnalysisInput, HandoffOutcome, LockSummary, RoleInput, WhoopsInput,
    analyze,
};
use lockrace_common::k::{F_RDLCK, F_WRLCK};

const S_OWNER: u64 = 0xffff_8881_0000_1000;
const C_OWNER: u64 = 0xffff_8881_0000_2000;
const N_OWNER: u64 = 0xffff_8881_0000_3000;

fn server() -> Actor {
    Actor::new(100, 100, 0, "server", S_OWNER, Flavor::Posix)
}
fn client() -> Actor {
    Actor::new(200, 200, 1, "client", C_OWNER, Flavor::Posix)
}
fn newcomer() -> Actor {
    Actor::new(300, 300, 1, "newcomer", N_OWNER, Flavor::Posix)
}

fn run(s: &Script) -> Analysis {
    analyze(&s.events, &AnalysisInput::default())
}

fn only_lock(a: &Analysis) -> &LockSummary {
    assert_eq!(a.locks.len(), 1, "expected one lock, got {:#?}", a.locks);
    &a.locks[0]
}

/// S holds, C blocks, S unlocks waking C, C runs and gets it.
fn fifo_script() -> Script {
    let (s_, c) = (server(), client());
    let mut s = Script::new();
    s.lock_now(&s_, F_WRLCK);
    s.lock_block(&c, F_WRLCK, s_.held);
    s.unlock(&s_, &[&c]);
    s.wait(5_000);
    s.run(&c);
    s.retry_grant(&c, F_WRLCK);
    s
}

/// S holds, C blocks, S unlocks waking C, S re-locks before C runs; C retries and re-blocks.
fn self_barge_script() -> Script {
    let (s_, c) = (server(), client());
    let mut s = Script::new();
    s.lock_now(&s_, F_WRLCK);
    s.lock_block(&c, F_WRLCK, s_.held);
    s.unlock(&s_, &[&c]);
    s.lock_now(&s_, F_WRLCK);
    s.wait(20_000);
    s.run(&c);
    s.retry_block(&c, F_WRLCK, s_.held);
    s
}

#[test]
fn fifo_positive() {
    let a = run(&fifo_script());
    let l = only_lock(&a);
    assert_eq!(l.handoffs.fifo, 1);
    assert_eq!(l.handoffs.decided(), 1);
    assert_eq!((l.requests, l.blocks, l.grants, l.releases), (2, 1, 2, 1));
    assert_eq!(l.spurious_wakes, 0);
    assert_eq!(l.block_order, vec![200]);
    assert_eq!(l.grant_order, vec![100, 200]);
    assert_eq!(l.wait.count(), 1);
    assert_eq!(l.wake_to_run.count(), 1);
    // The waking happened `step` before the unlock event, 5 µs + a few steps before the switch-in.
    let w2r = l.wake_to_run.max().unwrap();
    assert!((5_000..20_000).contains(&w2r), "wake-to-run {w2r}");
    assert!(a.incomplete.is_empty(), "{:?}", a.incomplete);
    let h = &a.worst_handoffs[0];
    assert_eq!(h.outcome, HandoffOutcome::Fifo);
    assert_eq!(h.wake_order, vec![200]);
    assert_eq!(h.next.unwrap().tid, 200);
}

#[test]
fn fifo_negative() {
    let a = run(&self_barge_script());
    assert_eq!(only_lock(&a).handoffs.fifo, 0);
}

#[test]
fn self_barge_positive() {
    let a = run(&self_barge_script());
    let l = only_lock(&a);
    assert_eq!(l.handoffs.self_barge, 1);
    assert_eq!(l.handoffs.decided(), 1);
    let h = &a.worst_handoffs[0];
    assert_eq!(h.outcome, HandoffOutcome::SelfBarge);
    assert_eq!(h.next.unwrap().tid, 100);
    assert_eq!(h.releaser.tid, 100);
    assert_eq!(h.waiters.len(), 1);
    assert!(h.waiters[0].woken);
}

#[test]
fn self_barge_negative() {
    let a = run(&fifo_script());
    assert_eq!(only_lock(&a).handoffs.self_barge, 0);
}

#[test]
fn newcomer_barge_positive() {
    let (s_, c, n) = (server(), client(), newcomer());
    let mut s = Script::new();
    s.lock_now(&s_, F_WRLCK);
    s.lock_block(&c, F_WRLCK, s_.held);
    s.unlock(&s_, &[&c]);
    s.lock_now(&n, F_WRLCK);
    s.run(&c);
    s.retry_block(&c, F_WRLCK, n.held);
    let a = run(&s);
    let l = only_lock(&a);
    assert_eq!(l.handoffs.newcomer_barge, 1);
    assert_eq!(l.handoffs.self_barge, 0);
    assert_eq!(l.handoffs.fifo, 0);
}

#[test]
fn newcomer_barge_negative() {
    // The waiter gave up (signal) before the newcomer came: nobody was barged.
    let (s_, c, n) = (server(), client(), newcomer());
    let mut s = Script::new();
    s.lock_now(&s_, F_WRLCK);
    s.lock_block(&c, F_WRLCK, s_.held);
    s.unlock(&s_, &[&c]);
    s.run(&c);
    s.interrupted(&c, F_WRLCK);
    s.lock_now(&n, F_WRLCK);
    let a = run(&s);
    let l = only_lock(&a);
    assert_eq!(l.handoffs.newcomer_barge, 0);
    assert_eq!(l.handoffs.unresolved, 1);
    assert_eq!(l.errors, 1);
    assert!(run(&fifo_script()).locks[0].handoffs.newcomer_barge == 0);
}

/// The realistic reorder: C1 blocks; S barges while C1 is woken; C2 arrives and blocks directly
/// under S; C1 re-queues nested under C2; S's next unlock wakes C2, which gets the lock although
/// C1 has waited longer.
fn reorder_script() -> Script {
    let (s_, c1) = (server(), client());
    let c2 = Actor::new(201, 201, 1, "client2", 0xffff_8881_0000_2100, Flavor::Posix);
    let mut s = Script::new();
    s.lock_now(&s_, F_WRLCK);
    s.lock_block(&c1, F_WRLCK, s_.held);
    s.unlock(&s_, &[&c1]);
    s.lock_now(&s_, F_WRLCK);
    s.lock_block(&c2, F_WRLCK, s_.held);
    s.run(&c1);
    s.retry_block(&c1, F_WRLCK, c2.fl);
    s.unlock(&s_, &[&c2]);
    s.run(&c2);
    s.retry_grant(&c2, F_WRLCK);
    s
}

#[test]
fn waiter_reorder_positive() {
    let a = run(&reorder_script());
    let l = only_lock(&a);
    assert_eq!(l.handoffs.self_barge, 1, "{:?}", l.handoffs);
    assert_eq!(l.handoffs.waiter_reorder, 1, "{:?}", l.handoffs);
    assert_eq!(l.wake_inversions, 0);
    assert_eq!(l.block_order, vec![200, 201]);
    let reorder = a
        .worst_handoffs
        .iter()
        .find(|h| h.outcome == HandoffOutcome::WaiterReorder)
        .unwrap();
    assert_eq!(reorder.next.unwrap().tid, 201);
    assert_eq!(
        reorder
            .waiters
            .iter()
            .map(|w| w.task.tid)
            .collect::<Vec<_>>(),
        vec![200, 201]
    );
}

#[test]
fn waiter_reorder_negative() {
    // Two waiters, the older one gets it first.
    let (s_, c1) = (server(), client());
    let c2 = Actor::new(201, 201, 1, "client2", 0xffff_8881_0000_2100, Flavor::Posix);
    let mut s = Script::new();
    s.lock_now(&s_, F_WRLCK);
    s.lock_block(&c1, F_WRLCK, s_.held);
    s.lock_block(&c2, F_WRLCK, c1.fl);
    s.unlock(&s_, &[&c1]);
    s.run(&c1);
    s.retry_grant(&c1, F_WRLCK);
    let a = run(&s);
    let l = only_lock(&a);
    assert_eq!(l.handoffs.waiter_reorder, 0);
    assert_eq!(l.handoffs.fifo, 1);
}

/// Two readers wait (siblings under S's write lock); S's unlock wakes them in `order`.
fn readers_woken(order_c2_first: bool, gap: u64) -> Script {
    let s_ = server();
    let c1 = client();
    let c2 = Actor::new(201, 201, 0, "client2", 0xffff_8881_0000_2100, Flavor::Posix);
    let mut s = Script::new();
    s.lock_now(&s_, F_WRLCK);
    s.lock_block(&c1, F_RDLCK, s_.held);
    s.wait(gap);
    s.lock_block(&c2, F_RDLCK, s_.held);
    if order_c2_first {
        s.unlock(&s_, &[&c2, &c1]);
    } else {
        s.unlock(&s_, &[&c1, &c2]);
    }
    s.run(&c1);
    s.retry_grant(&c1, F_RDLCK);
    s.run(&c2);
    s.retry_grant(&c2, F_RDLCK);
    s
}

#[test]
fn wake_inversion_positive() {
    let a = run(&readers_woken(true, 100_000));
    let l = only_lock(&a);
    assert_eq!(l.wake_inversions, 1);
    let ev = l.first_inversion.unwrap();
    assert_eq!((ev.first_woken, ev.later_woken), (201, 200));
    // Both readers got it: no conflict between them, so the handoff is FIFO.
    assert_eq!(l.handoffs.fifo, 1);
    assert_eq!(l.overlapping_grants, 0);
}

#[test]
fn wake_inversion_negative() {
    let a = run(&readers_woken(false, 100_000));
    let l = only_lock(&a);
    assert_eq!(l.wake_inversions, 0);
    assert_eq!(l.wake_order_ambiguous, 0);
    // Blocked within the clock margin: too close to call.
    let a = run(&readers_woken(true, 0));
    let l = only_lock(&a);
    assert_eq!(l.wake_inversions, 0);
    assert_eq!(l.wake_order_ambiguous, 1);
}

#[test]
fn spurious_wake_positive() {
    let a = run(&self_barge_script());
    let l = only_lock(&a);
    assert_eq!(l.spurious_wakes, 1);
    assert_eq!(l.blocks, 2);
    assert_eq!(l.blocked_requests, 1);
}

#[test]
fn spurious_wake_negative() {
    let a = run(&fifo_script());
    assert_eq!(only_lock(&a).spurious_wakes, 0);
}

/// The seed: OFD locks through one shared open file description: one owner for both roles.
fn shared_owner_script(lock_type: u8) -> Script {
    let s_ = Actor::new(100, 100, 0, "server", S_OWNER, Flavor::Ofd);
    let c = Actor::new(200, 200, 1, "client", S_OWNER, Flavor::Ofd);
    let mut s = Script::new();
    s.lock_now(&s_, lock_type);
    s.lock_now(&c, lock_type);
    s.unlock(&s_, &[]);
    s.unlock(&c, &[]);
    s.lock_now(&c, lock_type);
    s.lock_now(&s_, lock_type);
    s.unlock(&c, &[]);
    s
}

#[test]
fn overlapping_grants_positive() {
    let a = run(&shared_owner_script(F_WRLCK));
    let l = only_lock(&a);
    assert_eq!(l.overlapping_grants, 2);
    assert_eq!(l.blocks, 0);
    assert_eq!(l.owners.len(), 1);
    assert_eq!(l.owners[0].owner, S_OWNER);
    assert_eq!(l.owners[0].tgids, vec![100, 200]);
    assert_eq!(l.flavors.label(), "ofd");
    let ev = l.first_overlap.unwrap();
    assert_eq!(
        (ev.holder.tid, ev.grantee.tid, ev.owner),
        (100, 200, S_OWNER)
    );
    assert_eq!(a.stats.inconsistencies, 0);
}

#[test]
fn overlapping_grants_negative() {
    // Real exclusion (distinct owners) never overlaps.
    let a = run(&self_barge_script());
    assert_eq!(only_lock(&a).overlapping_grants, 0);
    // Two owners both granted a write lock means we missed a release: an inconsistency, not a
    // "no mutual exclusion" finding.
    let (s_, c) = (server(), client());
    let mut s = Script::new();
    s.lock_now(&s_, F_WRLCK);
    s.lock_now(&c, F_WRLCK);
    let a = run(&s);
    assert_eq!(only_lock(&a).overlapping_grants, 0);
    assert_eq!(a.stats.inconsistencies, 1);
    assert!(!a.incomplete.is_empty());
}

#[test]
fn shared_readers_are_not_a_violation() {
    let a = run(&shared_owner_script(F_RDLCK));
    assert_eq!(only_lock(&a).overlapping_grants, 0);
    // Distinct owners reading together: no overlap, no inconsistency.
    let (s_, c) = (server(), client());
    let mut s = Script::new();
    s.lock_now(&s_, F_RDLCK);
    s.lock_now(&c, F_RDLCK);
    s.unlock(&s_, &[]);
    s.unlock(&c, &[]);
    let a = run(&s);
    let l = only_lock(&a);
    assert_eq!(l.overlapping_grants, 0);
    assert_eq!(a.stats.inconsistencies, 0);
    assert_eq!(l.releases, 2);
}

#[test]
fn disjoint_byte_ranges_are_distinct_locks() {
    let s_ = server().range(0, 9);
    let c = client().range(10, 19);
    let mut s = Script::new();
    s.lock_now(&s_, F_WRLCK);
    s.lock_now(&c, F_WRLCK);
    let a = run(&s);
    assert_eq!(a.locks.len(), 2);
    assert!(a.locks.iter().all(|l| l.overlapping_grants == 0));
    assert_eq!(a.stats.inconsistencies, 0);
    // A request bridging both ranges merges them into one lock.
    let n = newcomer().range(5, 15);
    let mut s2 = Script::new();
    s2.lock_now(&s_, F_WRLCK);
    s2.lock_now(&c, F_WRLCK);
    s2.lock_block(&n, F_WRLCK, s_.held);
    let a = run(&s2);
    assert_eq!(a.locks.len(), 1);
    assert_eq!((a.locks[0].key.start, a.locks[0].key.end), (0, 19));
    assert_eq!(a.locks[0].grants, 2);
}

#[test]
fn flock_and_posix_locks_on_one_file_are_separate() {
    let s_ = Actor::new(100, 100, 0, "server", S_OWNER, Flavor::Flock);
    let c = client();
    let mut s = Script::new();
    s.lock_now(&s_, F_WRLCK);
    s.lock_now(&c, F_WRLCK);
    let a = run(&s);
    assert_eq!(a.locks.len(), 2);
    assert_eq!(a.stats.inconsistencies, 0);
}

// ------------------------------------------------------------------ whoops causes

fn roles(s: &Script, whoops: &[(u32, usize)]) -> WhoopsInput {
    let mut out = Vec::new();
    for (name, tgid) in [("server", 100u32), ("client", 200u32)] {
        let acqs: Vec<Acquisition> = s
            .grants
            .iter()
            .filter(|g| g.0 == tgid)
            .enumerate()
            .map(|(i, g)| Acquisition {
                ts_ns: g.1 + 500,
                whoops: whoops.contains(&(tgid, i)),
            })
            .collect();
        out.push(RoleInput {
            name: name.into(),
            tgid,
            acquisitions: acqs,
        });
    }
    WhoopsInput {
        dev: s.dev,
        ino: s.ino,
        roles: out,
    }
}

fn run_whoops(s: &Script, whoops: &[(u32, usize)]) -> lockrace::analysis::WhoopsResult {
    let input = AnalysisInput {
        whoops: Some(roles(s, whoops)),
        ..Default::default()
    };
    analyze(&s.events, &input).whoops.unwrap()
}

#[test]
fn whoops_self_barge_positive_and_negative() {
    // Server's 2nd acquisition is the barging re-lock while the client was woken.
    let s = self_barge_script();
    let w = run_whoops(&s, &[(100, 1)]);
    assert_eq!((w.total, w.explained), (1, 1));
    assert_eq!(w.by_cause.self_barge, 1);
    assert_eq!(w.by_peer_state.woken_not_running, 1);
    assert!(w.mismatches.is_empty(), "{:?}", w.mismatches);
    // Server's 1st acquisition: the client was not waiting yet.
    let w = run_whoops(&s, &[(100, 0)]);
    assert_eq!(w.by_cause.self_barge, 0);
    assert_eq!(w.by_cause.peer_not_waiting, 1);
}

#[test]
fn whoops_peer_not_waiting_positive_and_negative() {
    let (s_, c) = (server(), client());
    let mut s = Script::new();
    s.lock_now(&s_, F_WRLCK);
    s.unlock(&s_, &[]);
    // The client is busy in its own code: the server takes the lock again.
    s.lock_now(&s_, F_WRLCK);
    s.unlock(&s_, &[]);
    s.lock_now(&c, F_WRLCK);
    let w = run_whoops(&s, &[(100, 1)]);
    assert_eq!(w.by_cause.peer_not_waiting, 1);
    assert_eq!(w.by_peer_state.not_in_request, 1);
    assert_eq!(w.explained, 1);
    // The client has entered fcntl but not reached the lock code yet: still not waiting.
    let (s_, c) = (server(), client());
    let mut s = Script::new();
    s.lock_now(&s_, F_WRLCK);
    s.unlock(&s_, &[]);
    s.enter(&c, F_WRLCK, true);
    s.lock_now(&s_, F_WRLCK);
    let w = run_whoops(&s, &[(100, 1)]);
    assert_eq!(w.by_cause.peer_not_waiting, 1);
    assert_eq!(w.by_peer_state.in_request_not_blocked, 1);
    // Negative: same whoops index in the barging script is not peer_not_waiting.
    let w = run_whoops(&self_barge_script(), &[(100, 1)]);
    assert_eq!(w.by_cause.peer_not_waiting, 0);
}

#[test]
fn whoops_no_exclusion_positive_and_negative() {
    let s = shared_owner_script(F_WRLCK);
    // Client's first grant (server holds, same owner) and server's second.
    let w = run_whoops(&s, &[(200, 0), (100, 1)]);
    assert_eq!((w.total, w.explained), (2, 2));
    assert_eq!(w.by_cause.no_exclusion, 2);
    let w = run_whoops(&self_barge_script(), &[(100, 1)]);
    assert_eq!(w.by_cause.no_exclusion, 0);
}

#[test]
fn whoops_count_mismatch_is_reported_not_fatal() {
    let s = self_barge_script();
    let mut input = roles(&s, &[(100, 1)]);
    input.roles[0].acquisitions.push(Acquisition {
        ts_ns: u64::MAX / 2,
        whoops: true,
    });
    let a = analyze(
        &s.events,
        &AnalysisInput {
            whoops: Some(input),
            ..Default::default()
        },
    );
    let w = a.whoops.as_ref().unwrap();
    assert_eq!(w.total, 2);
    assert!(w.explained < w.total);
    assert_eq!(w.mismatches.len(), 1);
    assert!(
        a.incomplete
            .iter()
            .any(|r| r.contains("whoops correlation"))
    );
}

/// The unlock's tracepoint fires after the kernel drops its lock: a waiter woken on the same CPU
/// preempts the releaser, retries and logs its grant before the releaser logs the unlock.
#[test]
fn grant_logged_before_the_unlock_that_enabled_it() {
    use lockrace::analysis::synth::Flavor::Flock;
    for flavor in [Flavor::Posix, Flock] {
        let s_ = Actor::new(100, 100, 0, "server", S_OWNER, flavor);
        let c = Actor::new(200, 200, 0, "client", C_OWNER, flavor);
        let mut s = Script::new();
        s.lock_now(&s_, F_WRLCK);
        s.lock_block(&c, F_WRLCK, s_.held);
        s.enter(&s_, lockrace_common::k::F_UNLCK, true);
        s.waking(&s_, &c);
        s.switch(&s_, c.tid, 256, 0);
        s.retry_grant(&c, F_WRLCK);
        s.lock_event(
            &s_,
            if flavor == Flock {
                lockrace::events::Kind::FlockLockInode
            } else {
                lockrace::events::Kind::PosixLockInode
            },
            lockrace_common::k::F_UNLCK,
            0,
            0,
            false,
        );
        s.exit(&s_, 0);
        let a = run(&s);
        let l = only_lock(&a);
        assert_eq!(a.stats.inconsistencies, 0, "{flavor:?}");
        assert_eq!(a.stats.raced_releases, 1, "{flavor:?}");
        assert_eq!(l.releases, 1, "{flavor:?}");
        assert_eq!(l.handoffs.fifo, 1, "{flavor:?}: {:?}", l.handoffs);
        assert_eq!(a.worst_handoffs[0].wake_order, vec![200]);
        assert!(a.incomplete.is_empty(), "{:?}", a.incomplete);
    }
}

#[test]
fn late_close_unlock_is_a_race_not_a_missed_release() {
    let (s_, c) = (server(), client());
    let mut s = Script::new();
    s.lock_now(&s_, F_WRLCK);
    // The client is granted, then the server's close() drops its lock (no syscall traced).
    s.lock_now(&c, F_WRLCK);
    s.lock_event(
        &s_,
        lockrace::events::Kind::PosixLockInode,
        lockrace_common::k::F_UNLCK,
        0,
        0,
        false,
    );
    let a = run(&s);
    assert_eq!(a.stats.inconsistencies, 0);
    assert_eq!(a.stats.raced_releases, 1);
    assert_eq!(a.stats.implicit_unlocks, 1);
    // Too late to be the race: a missed release.
    let mut s = Script::new();
    s.lock_now(&s_, F_WRLCK);
    s.lock_now(&c, F_WRLCK);
    s.wait(1_000_000);
    s.lock_event(
        &s_,
        lockrace::events::Kind::PosixLockInode,
        lockrace_common::k::F_UNLCK,
        0,
        0,
        false,
    );
    let a = run(&s);
    assert_eq!(a.stats.inconsistencies, 1);
}
