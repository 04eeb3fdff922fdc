//! Unit tests of the state machine's steps on small hand-built event sequences
//! (`analysis::synth::Script`), looking at the state itself: the open handoff of a lock and how
//! `resolve_handoff` classifies the grant that follows a release (the barging classification),
//! when it leaves a handoff open, and that a decision is final. (tests/integration/
//! analysis_classes.rs checks the same classes through the public `Analysis`.)
use lockrace_common::k;

use super::*;
use crate::analysis::synth::{Actor, Flavor, Script};

fn actor(tid: u32, cpu: u32, name: &str) -> Actor {
    Actor::new(tid, tid, cpu, name, 0xa000 + u64::from(tid), Flavor::Posix)
}

/// A holds the lock (tid 10), B waits for it (tid 11), C is a bystander (tid 12).
fn actors() -> (Actor, Actor, Actor) {
    (actor(10, 0, "a"), actor(11, 1, "b"), actor(12, 0, "c"))
}

/// Every event of `s` straight into the state machine (no reorder buffer: the script is in
/// order), then `check` on the state.
fn after(s: &Script, check: impl FnOnce(&Core<'_>)) {
    let mut a = Analyzer::new(&AnalysisInput::default());
    for e in &s.events {
        a.core.process(e);
    }
    check(&a.core);
}

/// The one lock group of these scripts.
fn the_lock<'c>(c: &'c Core<'_>) -> &'c LockState {
    assert_eq!(
        c.locks.iter().filter(|l| l.merged_into.is_none()).count(),
        1,
        "one lock group expected"
    );
    &c.locks[resolve(&c.locks, 0)]
}

fn open<'c>(c: &'c Core<'_>) -> &'c OpenHandoff {
    the_lock(c)
        .open
        .as_deref()
        .expect("a release with a waiter opens a handoff")
}

/// A takes the lock, B blocks under it, A unlocks and wakes B: the handoff is open.
fn released_with_b_woken() -> (Script, Actor, Actor, Actor) {
    let (a, b, c) = actors();
    let mut s = Script::new();
    s.lock_now(&a, k::F_WRLCK);
    s.lock_block(&b, k::F_WRLCK, a.held);
    s.unlock(&a, &[&b]);
    (s, a, b, c)
}

#[test]
fn a_release_with_a_waiter_opens_an_undecided_handoff() {
    let (s, a, b, _) = released_with_b_woken();
    after(&s, |c| {
        let o = open(c);
        assert!(!o.resolved);
        assert_eq!(o.rec.outcome, HandoffOutcome::Unresolved);
        assert_eq!(o.rec.releaser.tid, a.tid);
        assert_eq!(o.pending.iter().map(|p| p.tid).collect::<Vec<_>>(), [b.tid]);
        assert_eq!(o.rec.wake_order, [b.tid]);
        assert!(
            o.rec.waiters[0].woken,
            "B was woken before the release event"
        );
        assert_eq!(the_lock(c).sum.handoffs, HandoffCounts::default());
    });
}

#[test]
fn the_releaser_taking_the_lock_back_while_its_waiter_waits_is_a_self_barge() {
    let (mut s, a, b, _) = released_with_b_woken();
    s.lock_now(&a, k::F_WRLCK); // before B got a CPU
    let grant_ts = s.now - 2 * s.step; // lock event, then fcntl_setlk and exit
    after(&s, |c| {
        let o = open(c);
        assert!(o.resolved);
        assert_eq!(o.rec.outcome, HandoffOutcome::SelfBarge);
        assert_eq!(o.rec.next.map(|n| n.tid), Some(a.tid));
        assert_eq!(o.rec.grant_ts, Some(grant_ts));
        let first_block = o.pending[0].first_block;
        assert_eq!(o.rec.oldest_wait_ns, grant_ts - first_block);
        assert_eq!(the_lock(c).sum.handoffs.self_barge, 1);
        assert!(o.rec.timeline.iter().any(|t| t.tid == a.tid
            && t.what
                == TimelineWhat::Granted {
                    outcome: Some(HandoffOutcome::SelfBarge)
                }));
    });
    // The woken waiter then runs, retries and blocks again: the decision stands.
    s.run(&b);
    s.retry_block(&b, k::F_WRLCK, a.held);
    after(&s, |c| {
        assert_eq!(open(c).rec.outcome, HandoffOutcome::SelfBarge);
        assert_eq!(the_lock(c).sum.handoffs.self_barge, 1);
        assert_eq!(the_lock(c).sum.handoffs.total(), 1);
    });
}

#[test]
fn a_task_that_was_not_waiting_taking_the_lock_is_a_newcomer_barge() {
    let (mut s, _, b, c) = released_with_b_woken();
    s.lock_now(&c, k::F_WRLCK);
    after(&s, |core| {
        let o = open(core);
        assert_eq!(o.rec.outcome, HandoffOutcome::NewcomerBarge);
        assert_eq!(o.rec.next.map(|n| n.tid), Some(c.tid));
        assert_eq!(o.pending[0].tid, b.tid);
        assert_eq!(the_lock(core).sum.handoffs.newcomer_barge, 1);
    });
}

#[test]
fn the_woken_waiter_getting_the_lock_is_fifo() {
    let (mut s, _, b, _) = released_with_b_woken();
    s.run(&b);
    s.retry_grant(&b, k::F_WRLCK);
    after(&s, |c| {
        let o = open(c);
        assert_eq!(o.rec.outcome, HandoffOutcome::Fifo);
        assert_eq!(o.rec.next.map(|n| n.tid), Some(b.tid));
        assert_eq!(the_lock(c).sum.handoffs.fifo, 1);
    });
}

#[test]
fn a_younger_waiter_granted_before_an_older_one_is_a_waiter_reorder() {
    let (a, b, c) = actors();
    let mut s = Script::new();
    s.lock_now(&a, k::F_WRLCK);
    s.lock_block(&b, k::F_WRLCK, a.held); // the older waiter
    s.lock_block(&c, k::F_WRLCK, a.held);
    s.unlock(&a, &[&b, &c]);
    s.run(&c);
    s.retry_grant(&c, k::F_WRLCK);
    after(&s, |core| {
        let o = open(core);
        assert_eq!(o.rec.outcome, HandoffOutcome::WaiterReorder);
        assert_eq!(o.rec.next.map(|n| n.tid), Some(c.tid));
        assert_eq!(the_lock(core).sum.handoffs.waiter_reorder, 1);
    });
}

#[test]
fn a_compatible_grant_leaves_the_handoff_open_until_a_conflicting_one() {
    // A holds a write lock; B waits for a READ lock. After A's release a newcomer's read grant
    // does not keep B out, so it decides nothing; B's own read grant then does (FIFO).
    let (a, b, c) = actors();
    let mut s = Script::new();
    s.lock_now(&a, k::F_WRLCK);
    s.lock_block(&b, k::F_RDLCK, a.held);
    s.unlock(&a, &[&b]);
    s.lock_now(&c, k::F_RDLCK);
    after(&s, |core| {
        let o = open(core);
        assert!(!o.resolved, "{:?}", o.rec.outcome);
        assert_eq!(the_lock(core).sum.handoffs.total(), 0);
    });
    s.run(&b);
    s.retry_grant(&b, k::F_RDLCK);
    after(&s, |core| {
        assert_eq!(open(core).rec.outcome, HandoffOutcome::Fifo);
        assert_eq!(open(core).rec.next.map(|n| n.tid), Some(b.tid));
    });
}

#[test]
fn a_grant_after_the_waiter_gave_up_is_unresolved_not_a_barge() {
    let (mut s, a, b, _) = released_with_b_woken();
    s.run(&b);
    s.interrupted(&b, k::F_WRLCK); // EINTR: B no longer waits
    s.lock_now(&a, k::F_WRLCK);
    after(&s, |c| {
        let o = open(c);
        assert!(o.resolved);
        assert_eq!(o.rec.outcome, HandoffOutcome::Unresolved);
        assert_eq!(the_lock(c).sum.handoffs.unresolved, 1);
        assert_eq!(the_lock(c).sum.handoffs.self_barge, 0);
    });
}

#[test]
fn the_next_release_finalizes_the_open_handoff_into_the_worst_list() {
    let (mut s, a, b, _) = released_with_b_woken();
    s.lock_now(&a, k::F_WRLCK); // self barge
    s.unlock(&a, &[&b]); // opens the next handoff, finalizing the first
    after(&s, |c| {
        assert!(!open(c).resolved);
        assert_eq!(c.worst.len(), 1);
        assert_eq!(c.worst[0].outcome, HandoffOutcome::SelfBarge);
    });
}
