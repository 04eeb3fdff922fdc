//! Fixed-size log-linear histograms of nanosecond durations.
//!
//! Invariants: memory is constant (496 buckets, whatever the number of samples, allocated at the
//! first sample: a lock nobody waited for costs no bucket array); every bucket
//! covers `[lo, hi]` with `hi - lo < lo / 8`, so a percentile read from a bucket midpoint is
//! within 6.25% of the exact sample value; `max`, `min`, `count` and `sum` are exact. The
//! power-of-two view ([`LogHist::log2_buckets`]) is what the reports print.

/// Sub-buckets per power of two (log-linear resolution).
const SUB_BITS: u32 = 3;
const SUB: usize = 1 << SUB_BITS;
/// Values below `SUB` get one exact bucket each; then `SUB` buckets per power of two up to 2^63.
pub const BUCKETS: usize = SUB + (64 - SUB_BITS as usize) * SUB;

#[derive(Clone)]
pub struct LogHist {
    /// None until the first sample.
    counts: Option<Box<[u64; BUCKETS]>>,
    count: u64,
    sum: u128,
    min: u64,
    max: u64,
}

impl Default for LogHist {
    fn default() -> Self {
        LogHist {
            counts: None,
            count: 0,
            sum: 0,
            min: u64::MAX,
            max: 0,
        }
    }
}

impl std::fmt::Debug for LogHist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogHist")
            .field("count", &self.count)
            .field("min", &self.min())
            .field("max", &self.max())
            .finish()
    }
}

/// Index of the bucket holding `v`.
#[inline]
pub fn bucket_of(v: u64) -> usize {
    if v < SUB as u64 {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros(); // >= SUB_BITS
    let sub = ((v >> (exp - SUB_BITS)) as usize) & (SUB - 1);
    SUB + (exp - SUB_BITS) as usize * SUB + sub
}

/// Inclusive bounds of bucket `i`.
pub fn bucket_bounds(i: usize) -> (u64, u64) {
    if i < SUB {
        return (i as u64, i as u64);
    }
    let exp = ((i - SUB) / SUB) as u32 + SUB_BITS;
    let sub = ((i - SUB) % SUB) as u64;
    let width = 1u64 << (exp - SUB_BITS);
    let lo = (SUB as u64 + sub) << (exp - SUB_BITS);
    (lo, lo.saturating_add(width - 1))
}

/// One power-of-two bucket: `[lo, hi]` nanoseconds, `count` samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Log2Bucket {
    pub lo: u64,
    pub hi: u64,
    pub count: u64,
}

impl LogHist {
    #[inline]
    pub fn record(&mut self, v: u64) {
        self.counts.get_or_insert_with(|| Box::new([0; BUCKETS]))[bucket_of(v)] += 1;
        self.count += 1;
        self.sum += v as u128;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    pub fn count(&self) -> u64 {
        self.count
    }
    pub fn max(&self) -> Option<u64> {
        (self.count > 0).then_some(self.max)
    }
    pub fn min(&self) -> Option<u64> {
        (self.count > 0).then_some(self.min)
    }
    pub fn mean(&self) -> Option<u64> {
        (self.count > 0).then(|| (self.sum / self.count as u128) as u64)
    }

    /// Add every sample of `other`.
    pub fn merge(&mut self, other: &LogHist) {
        if let Some(theirs) = &other.counts {
            let mine = self.counts.get_or_insert_with(|| Box::new([0; BUCKETS]));
            for (a, b) in mine.iter_mut().zip(theirs.iter()) {
                *a += b;
            }
        }
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// The `q`-quantile (0 < q <= 1): the midpoint of the bucket holding the sample of rank
    /// ceil(q * count), clamped to the exact min and max. None when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).clamp(1, self.count);
        let counts = self.counts.as_deref()?;
        let mut seen = 0u64;
        for (i, &c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (lo, hi) = bucket_bounds(i);
                let mid = lo + (hi - lo) / 2;
                return Some(mid.clamp(self.min, self.max));
            }
        }
        Some(self.max)
    }

    /// Power-of-two buckets from the lowest to the highest non-empty one (empty ones between
    /// included, so the shape is visible). Bucket 0 is `[0, 1]`, then `[2^k, 2^(k+1) - 1]`.
    pub fn log2_buckets(&self) -> Vec<Log2Bucket> {
        let Some(counts) = self.counts.as_deref() else {
            return Vec::new();
        };
        let mut by_pow = [0u64; 64];
        for (i, &c) in counts.iter().enumerate() {
            if c == 0 {
                continue;
            }
            let (lo, _) = bucket_bounds(i);
            let pow = if lo <= 1 {
                0
            } else {
                63 - lo.leading_zeros() as usize
            };
            by_pow[pow] += c;
        }
        let first = by_pow.iter().position(|&c| c > 0);
        let last = by_pow.iter().rposition(|&c| c > 0);
        let (Some(first), Some(last)) = (first, last) else {
            return Vec::new();
        };
        (first..=last)
            .map(|p| {
                let lo = if p == 0 { 0 } else { 1u64 << p };
                let hi = if p == 63 {
                    u64::MAX
                } else {
                    (1u64 << (p + 1)) - 1
                };
                Log2Bucket {
                    lo,
                    hi,
                    count: by_pow[p],
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_histogram_allocates_nothing_and_merges_both_ways() {
        let empty = LogHist::default();
        assert!(empty.counts.is_none());
        assert_eq!(empty.quantile(0.5), None);
        assert!(empty.log2_buckets().is_empty());
        let mut full = LogHist::default();
        full.record(1_000);
        let mut a = LogHist::default();
        a.merge(&empty);
        assert!(a.counts.is_none(), "merging nothing allocates nothing");
        a.merge(&full);
        assert_eq!((a.count(), a.max()), (1, Some(1_000)));
        full.merge(&empty);
        assert_eq!(full.quantile(1.0), Some(1_000));
    }

    #[test]
    fn buckets_cover_every_value_once_and_in_order() {
        let mut prev_hi = None::<u64>;
        for i in 0..BUCKETS {
            let (lo, hi) = bucket_bounds(i);
            assert!(lo <= hi);
            if let Some(p) = prev_hi {
                assert_eq!(lo, p + 1, "gap before bucket {i}");
            }
            assert_eq!(bucket_of(lo), i);
            assert_eq!(bucket_of(hi), i);
            prev_hi = Some(hi);
        }
        assert_eq!(prev_hi, Some(u64::MAX));
    }

    #[test]
    fn quantiles_are_within_bucket_precision() {
        let mut h = LogHist::default();
        for v in 1..=10_000u64 {
            h.record(v * 100);
        }
        for (q, exact) in [(0.5, 500_000f64), (0.9, 900_000.0), (0.99, 990_000.0)] {
            let got = h.quantile(q).unwrap() as f64;
            assert!((got - exact).abs() / exact < 0.07, "q{q}: {got} vs {exact}");
        }
        assert_eq!(h.max(), Some(1_000_000));
        assert_eq!(h.min(), Some(100));
        assert_eq!(
            h.quantile(1.0),
            Some(1_000_000).map(|m: u64| m.min(h.max().unwrap()))
        );
    }

    #[test]
    fn empty_and_single_sample() {
        let h = LogHist::default();
        assert_eq!(h.quantile(0.5), None);
        assert!(h.log2_buckets().is_empty());
        let mut h = LogHist::default();
        h.record(3000);
        assert_eq!(h.quantile(0.5), Some(3000));
        assert_eq!(h.quantile(0.99), Some(3000));
        let b = h.log2_buckets();
        assert_eq!(b.len(), 1);
        assert_eq!((b[0].lo, b[0].hi, b[0].count), (2048, 4095, 1));
    }

    #[test]
    fn log2_view_sums_to_count_and_merge_adds() {
        let mut a = LogHist::default();
        let mut b = LogHist::default();
        for v in [0, 1, 5, 900, 70_000, u64::MAX] {
            a.record(v);
            b.record(v / 2);
        }
        a.merge(&b);
        assert_eq!(a.count(), 12);
        let total: u64 = a.log2_buckets().iter().map(|b| b.count).sum();
        assert_eq!(total, 12);
        assert_eq!(a.max(), Some(u64::MAX));
        assert_eq!(a.min(), Some(0));
    }
}
