//! Handoff latency: how long the turn takes to travel from one role to the other.
//!
//! The releasing role stamps CLOCK_MONOTONIC into its own slot of the shared memfd just before
//! it hands the turn over (before the state write, the eventfd write or the futex store that
//! makes the turn visible); the receiving role, when it sees its turn, records `now - stamp` of
//! the other role's slot. With a file lock "sees its turn" is the acquisition that found the
//! turn, so the time lost to whoops is part of the handoff.
//!
//! Invariants: constant memory per role (the log-linear buckets of `analysis::hist`, each within
//! 6.25%, so percentiles are within 6.25% and `max` is exact); a summary keeps its non-empty
//! buckets, so summaries of both roles (or of several runs) merge exactly.
use crate::analysis::hist::{BUCKETS, bucket_bounds, bucket_of};
use crate::report::model::HandoffLatency;

/// A role's handoff latencies while the loop runs.
pub struct LatencyHist {
    counts: Box<[u64; BUCKETS]>,
    count: u64,
    max: u64,
}

impl Default for LatencyHist {
    fn default() -> Self {
        LatencyHist {
            counts: Box::new([0; BUCKETS]),
            count: 0,
            max: 0,
        }
    }
}

impl LatencyHist {
    /// One handoff that took `ns`.
    #[inline]
    pub fn record(&mut self, ns: u64) {
        self.counts[bucket_of(ns)] += 1;
        self.count += 1;
        self.max = self.max.max(ns);
    }

    /// The handoff of a turn the role just saw at `seen_ns`, stamped by the other role at
    /// `stamp_ns` (0: nothing was stamped yet, e.g. the server's first turn; no sample).
    #[inline]
    pub fn record_handoff(&mut self, stamp_ns: u64, seen_ns: u64) {
        if stamp_ns != 0 {
            self.record(seen_ns.saturating_sub(stamp_ns));
        }
    }

    pub fn summary(&self) -> HandoffLatency {
        let buckets: Vec<[u64; 2]> = self
            .counts
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(i, c)| [i as u64, *c])
            .collect();
        HandoffLatency::from_buckets(buckets, self.max)
    }
}

/// The summary of a role's histogram, and merges of summaries (the type is the report's).
impl HandoffLatency {
    fn from_buckets(mut buckets: Vec<[u64; 2]>, max: u64) -> HandoffLatency {
        buckets.retain(|b| b[1] > 0 && (b[0] as usize) < BUCKETS);
        buckets.sort_unstable_by_key(|b| b[0]);
        let samples = buckets.iter().map(|b| b[1]).sum();
        let max_ns = (samples > 0).then_some(max);
        HandoffLatency {
            samples,
            p50_ns: quantile(&buckets, samples, 0.50, max),
            p99_ns: quantile(&buckets, samples, 0.99, max),
            max_ns,
            buckets,
        }
    }

    /// Every sample of every part, as one distribution.
    pub fn merge<'a>(parts: impl IntoIterator<Item = &'a HandoffLatency>) -> HandoffLatency {
        let mut counts = std::collections::BTreeMap::<u64, u64>::new();
        let mut max = 0u64;
        for p in parts {
            for b in &p.buckets {
                *counts.entry(b[0]).or_default() += b[1];
            }
            max = max.max(p.max_ns.unwrap_or(0));
        }
        HandoffLatency::from_buckets(counts.into_iter().map(|(i, c)| [i, c]).collect(), max)
    }
}

/// The `q`-quantile: the midpoint of the bucket holding the sample of rank ceil(q * count),
/// clamped to the exact maximum. None without samples.
fn quantile(buckets: &[[u64; 2]], count: u64, q: f64, max: u64) -> Option<u64> {
    if count == 0 {
        return None;
    }
    let rank = ((q.clamp(0.0, 1.0) * count as f64).ceil() as u64).clamp(1, count);
    let mut seen = 0u64;
    for b in buckets {
        seen += b[1];
        if seen >= rank {
            let (lo, hi) = bucket_bounds(b[0] as usize);
            return Some((lo + (hi - lo) / 2).min(max));
        }
    }
    Some(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_within_the_bucket_resolution() {
        let mut h = LatencyHist::default();
        for v in 1..=1000u64 {
            h.record(v * 1000); // 1 us .. 1 ms
        }
        let s = h.summary();
        assert_eq!(s.samples, 1000);
        let p50 = s.p50_ns.unwrap() as f64;
        let p99 = s.p99_ns.unwrap() as f64;
        assert!((p50 - 500_000.0).abs() / 500_000.0 < 0.0625, "{p50}");
        assert!((p99 - 990_000.0).abs() / 990_000.0 < 0.0625, "{p99}");
        assert_eq!(s.max_ns, Some(1_000_000));
    }

    #[test]
    fn the_first_turn_without_a_stamp_is_not_a_sample() {
        let mut h = LatencyHist::default();
        h.record_handoff(0, 5_000);
        h.record_handoff(4_000, 5_000);
        h.record_handoff(6_000, 5_000); // clock skew cannot go negative
        let s = h.summary();
        assert_eq!(s.samples, 2);
        assert_eq!(s.max_ns, Some(1_000));
    }

    #[test]
    fn empty_and_merged_summaries() {
        let empty = LatencyHist::default().summary();
        assert_eq!(empty, HandoffLatency::default());
        let (mut a, mut b) = (LatencyHist::default(), LatencyHist::default());
        for _ in 0..90 {
            a.record(1_000);
        }
        for _ in 0..10 {
            b.record(1_000_000);
        }
        let m = HandoffLatency::merge([&a.summary(), &b.summary(), &empty]);
        assert_eq!(m.samples, 100);
        assert!(m.p50_ns.unwrap() < 1_100);
        assert!(m.p99_ns.unwrap() > 900_000);
        assert_eq!(m.max_ns, Some(1_000_000));
        let json = serde_json::to_string(&m).unwrap();
        let back: HandoffLatency = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);
        // Unknown bucket numbers from a hand-edited report are dropped, not a panic.
        let odd = HandoffLatency::merge([&HandoffLatency {
            buckets: vec![[u64::MAX, 3], [10, 0]],
            ..Default::default()
        }]);
        assert_eq!(odd.samples, 0);
    }
}
