//! The analyzer as a stream consumer: bounded state whatever the stream length, tolerance of
//! local reordering, and no panic on arbitrary event soup.
use lockrace::analysis::observer::Collect;
use lockrace::analysis::synth::{self, Rng};
use lockrace::analysis::{AnalysisInput, Analyzer, analyze};
use lockrace::events::{Comm, Data, Event, Kind, LockData, SchedData, SyscallData};

#[test]
fn state_does_not_grow_with_the_number_of_events() {
    let input = AnalysisInput::default();
    let events = synth::handoff_stream(400_000, 9);
    let mut a = Analyzer::new(&input);
    let mut at_50k = None;
    for (i, e) in events.iter().enumerate() {
        a.push(e);
        if i == 50_000 {
            at_50k = Some(a.footprint());
        }
    }
    let small = at_50k.unwrap();
    let big = a.footprint();
    assert_eq!(big.tasks, small.tasks);
    assert_eq!(big.locks, small.locks);
    assert!(big.waiters <= 3 && big.holds <= 3, "{big:?}");
    assert!(big.issued_wakes <= 3 && big.blocked_fls <= 3, "{big:?}");
    assert!(big.worst <= lockrace::analysis::WORST_CAP);
    // The reorder buffer is bounded by its time window (2 ms here is ~100s of events).
    assert!(big.reorder_buffered < 5_000, "{big:?}");
    let r = a.finish();
    let l = &r.locks[0];
    assert_eq!(l.block_order.len(), lockrace::analysis::ORDER_CAP);
    assert_eq!(l.grant_order.len(), lockrace::analysis::ORDER_CAP);
    assert!(l.grants > 10_000);
}

#[test]
fn locally_shuffled_events_give_the_same_answer() {
    let events = synth::handoff_stream(50_000, 4);
    let sorted = analyze(&events, &AnalysisInput::default());
    // Swap neighbours within 100 µs, as the per-CPU ring-buffer reservations do.
    let mut shuffled = events.clone();
    let mut rng = Rng::new(77);
    for i in 1..shuffled.len() {
        if shuffled[i].ts_ns - shuffled[i - 1].ts_ns < 100_000 && rng.chance(0.3) {
            shuffled.swap(i - 1, i);
        }
    }
    assert_ne!(shuffled, events);
    let got = analyze(&shuffled, &AnalysisInput::default());
    assert_eq!(got.stats.out_of_order, 0);
    assert!(got.stats.reordered > 1_000);
    let (a, b) = (&sorted.locks[0], &got.locks[0]);
    assert_eq!(a.handoffs, b.handoffs);
    assert_eq!(
        (a.requests, a.blocks, a.grants, a.releases, a.spurious_wakes),
        (b.requests, b.blocks, b.grants, b.releases, b.spurious_wakes)
    );
    assert_eq!(a.wake_to_run.count(), b.wake_to_run.count());
}

fn soup_event(rng: &mut Rng, ts: u64) -> Event {
    let kinds = Kind::ALL;
    let kind = kinds[rng.below(kinds.len() as u64) as usize];
    let tid = 1 + rng.below(5) as u32;
    let pick = |rng: &mut Rng, v: &[u64]| v[rng.below(v.len() as u64) as usize];
    let data = match kind.family() {
        lockrace_common::Family::Lock => Data::Lock(LockData {
            dev: 1,
            ino: 1 + rng.below(2),
            owner: pick(rng, &[0x10, 0x20, 0x30]),
            fl: pick(rng, &[0, 0x100, 0x200, 0x300]),
            blocker: pick(rng, &[0, 0x100, 0x200, 0x999]),
            lock_type: rng.below(4) as u8,
            flags: pick(rng, &[1, 129, 1153, 2, 130]) as u32,
            ret: pick(
                rng,
                &[0, 1, 0, 1, (-11i32) as u32 as u64, (-4i32) as u32 as u64, 7],
            ) as u32 as i32,
            start: pick(rng, &[0, 5, 10]) as i64,
            end: pick(rng, &[4, 9, 20, i64::MAX as u64]) as i64,
            fl_pid: tid,
        }),
        lockrace_common::Family::Sched => Data::Sched(SchedData {
            target_tid: rng.below(6) as u32,
            target_cpu: rng.below(2) as i32,
            orig_cpu: -1,
            prio: 120,
            prev_state: rng.below(2) as i64,
            target_comm: Comm::default(),
        }),
        lockrace_common::Family::Syscall => Data::Syscall(SyscallData {
            fd: 3,
            cmd: pick(rng, &[5, 6, 7, 36, 37, 38, 1, 2, 8, 6 | 4, 99]),
            ret: pick(rng, &[0, (-11i64) as u64, (-4i64) as u64]) as i64,
            l_type: if rng.chance(0.8) {
                Some(rng.below(4) as i16)
            } else {
                None
            },
            l_whence: 0,
            l_start: 0,
            l_len: 0,
        }),
    };
    Event {
        ts_ns: ts,
        cpu: rng.below(2) as u32,
        tgid: tid,
        tid,
        comm: Comm::from_str_lossy("soup"),
        kind,
        data,
    }
}

#[test]
fn arbitrary_event_soup_never_panics() {
    for seed in 1..40u64 {
        let mut rng = Rng::new(seed);
        let mut ts = 1_000u64;
        let mut events = Vec::new();
        for _ in 0..3_000 {
            // Mostly forward, sometimes backwards (beyond the window), sometimes equal.
            ts = match rng.below(10) {
                0 => ts.saturating_sub(rng.below(10_000_000)),
                1 => ts,
                _ => ts + rng.below(50_000),
            };
            events.push(soup_event(&mut rng, ts));
        }
        let mut sink = Collect::default();
        let input = AnalysisInput {
            whoops: Some(lockrace::analysis::WhoopsInput {
                dev: 1,
                ino: 1,
                roles: vec![
                    lockrace::analysis::RoleInput {
                        name: "a".into(),
                        tgid: 1,
                        acquisitions: vec![],
                    },
                    lockrace::analysis::RoleInput {
                        name: "b".into(),
                        tgid: 2,
                        acquisitions: vec![],
                    },
                ],
            }),
            ..Default::default()
        };
        let r = {
            let mut a = Analyzer::with_observer(&input, &mut sink);
            a.extend(&events);
            a.finish()
        };
        assert_eq!(r.stats.events, 3_000);
        for l in &r.locks {
            assert!(l.handoffs.total() <= l.releases, "seed {seed}: {l:?}");
        }
        let facts = lockrace::report::build::Facts {
            kernel_release: "test".into(),
            ..Default::default()
        };
        let doc = lockrace::report::build::document(facts, Some(&r));
        let text = lockrace::report::terminal::render(&doc);
        assert!(!text.is_empty());
    }
}
