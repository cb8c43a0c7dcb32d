//! A small log-linear latency histogram (microseconds, < 1% relative error) that merges across
//! worker processes as sparse `(bucket, count)` pairs.

use serde::{Deserialize, Serialize};

const LINEAR: u64 = 256;
const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS;
const BUCKETS: usize = LINEAR as usize + (64 - 8) * SUB as usize;

/// Counts of values in log-linear buckets.
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            total: 0,
            max: 0,
        }
    }
}

fn index(v: u64) -> usize {
    if v < LINEAR {
        return v as usize;
    }
    let e = 63 - v.leading_zeros();
    let m = (v >> (e - SUB_BITS)) & (SUB - 1);
    LINEAR as usize + (e as usize - 8) * SUB as usize + m as usize
}

fn value(i: usize) -> u64 {
    if (i as u64) < LINEAR {
        return i as u64;
    }
    let j = i as u64 - LINEAR;
    let e = j / SUB + 8;
    let m = j % SUB;
    let low = (SUB + m) << (e - u64::from(SUB_BITS));
    low + (1 << (e - u64::from(SUB_BITS))) / 2
}

/// Sparse form for transfer between processes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SparseHistogram(pub Vec<(u32, u64)>);

/// Percentiles of a histogram, in milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Summary {
    /// Number of samples.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest sample.
    pub max_ms: f64,
}

impl Histogram {
    /// Records one value.
    pub fn record(&mut self, v: u64) {
        self.counts[index(v)] += 1;
        self.total += 1;
        self.max = self.max.max(v);
    }

    /// Number of recorded values.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The value at quantile `q` (0..=1).
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return value(i).min(self.max);
            }
        }
        self.max
    }

    /// Adds another histogram's counts.
    pub fn merge(&mut self, other: &SparseHistogram) {
        for &(i, c) in &other.0 {
            if let Some(slot) = self.counts.get_mut(i as usize) {
                *slot += c;
                self.total += c;
                self.max = self.max.max(value(i as usize));
            }
        }
    }

    /// The non-empty buckets.
    pub fn sparse(&self) -> SparseHistogram {
        SparseHistogram(
            self.counts
                .iter()
                .enumerate()
                .filter(|(_, c)| **c > 0)
                .map(|(i, c)| (i as u32, *c))
                .collect(),
        )
    }

    /// Percentiles in milliseconds (values are microseconds).
    pub fn summary(&self) -> Summary {
        let ms = |v: u64| v as f64 / 1000.0;
        Summary {
            count: self.total,
            p50_ms: ms(self.quantile(0.5)),
            p90_ms: ms(self.quantile(0.9)),
            p99_ms: ms(self.quantile(0.99)),
            p999_ms: ms(self.quantile(0.999)),
            max_ms: ms(self.max),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_accurate_and_monotonic() {
        let mut last = 0;
        for v in [
            0u64,
            1,
            255,
            256,
            257,
            1000,
            12_345,
            1 << 20,
            987_654_321,
            u64::MAX / 2,
        ] {
            let i = index(v);
            assert!(i >= last);
            last = i;
            let back = value(i);
            let err = back.abs_diff(v) as f64 / (v.max(1) as f64);
            assert!(err < 0.01, "{v} -> {back}");
        }
    }

    #[test]
    fn quantiles_and_merge() {
        let mut h = Histogram::default();
        for v in 1..=1000 {
            h.record(v);
        }
        // Buckets are within 1% of the values they hold.
        assert!(h.quantile(0.5).abs_diff(500) <= 5, "{}", h.quantile(0.5));
        let mut g = Histogram::default();
        g.merge(&h.sparse());
        assert_eq!(g.count(), 1000);
        assert!(g.quantile(0.99).abs_diff(990) <= 10, "{}", g.quantile(0.99));
    }
}
