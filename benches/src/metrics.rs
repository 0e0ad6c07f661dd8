//! Quality metrics (recall against the exhaustive ranking, nDCG and recall against relevance
//! judgments), latency percentiles, and process memory from `/proc/self/status`.

use std::collections::HashMap;

use serde::Serialize;

/// Fraction of `truth`'s first `k` ids found in `got`'s first `k`.
pub fn recall_at(got: &[u64], truth: &[u64], k: usize) -> f64 {
    let truth = &truth[..truth.len().min(k)];
    if truth.is_empty() {
        return 1.0;
    }
    let got = &got[..got.len().min(k)];
    truth.iter().filter(|t| got.contains(t)).count() as f64 / truth.len() as f64
}

/// nDCG@k of a ranking against graded judgments (gain = grade, discount log2(rank + 1)).
/// A query without relevant documents scores 0.
pub fn ndcg_at(got: &[u64], rel: &HashMap<u64, u32>, k: usize) -> f64 {
    let dcg: f64 = got
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, d)| rel.get(d).copied().unwrap_or(0) as f64 / (i as f64 + 2.0).log2())
        .sum();
    let mut ideal: Vec<u32> = rel.values().copied().collect();
    ideal.sort_unstable_by(|a, b| b.cmp(a));
    let idcg: f64 = ideal
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, g)| *g as f64 / (i as f64 + 2.0).log2())
        .sum();
    if idcg == 0.0 { 0.0 } else { dcg / idcg }
}

/// Fraction of the relevant documents found in the first `k` of `got`.
pub fn judged_recall_at(got: &[u64], rel: &HashMap<u64, u32>, k: usize) -> f64 {
    if rel.is_empty() {
        return 0.0;
    }
    got.iter().take(k).filter(|d| rel.contains_key(d)).count() as f64 / rel.len() as f64
}

/// Mean of `xs` (NaN when empty).
pub fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// Latency summary in milliseconds.
#[derive(Serialize, Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Mean.
    pub mean_ms: f64,
}

impl Latency {
    /// Summarises per-query latencies (milliseconds; nearest-rank percentiles).
    pub fn of(ms: &[f64]) -> Latency {
        let mut s = ms.to_vec();
        s.sort_by(f64::total_cmp);
        let pct = |p: f64| {
            if s.is_empty() {
                f64::NAN
            } else {
                s[((p * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1]
            }
        };
        Latency {
            p50_ms: pct(0.50),
            p95_ms: pct(0.95),
            p99_ms: pct(0.99),
            mean_ms: mean(&s),
        }
    }
}

/// Resident memory of this process, KiB, from `/proc/self/status` (zeros elsewhere).
#[derive(Serialize, Debug, Clone, Copy, Default, PartialEq)]
pub struct Memory {
    /// Peak resident set (VmHWM) since the last [`reset_peak`].
    pub peak_rss_kib: u64,
    /// Resident set now (VmRSS).
    pub rss_kib: u64,
    /// Anonymous resident memory now (RssAnon): heap, not file-backed mappings.
    pub rss_anon_kib: u64,
}

/// Reads [`Memory`] now.
pub fn memory() -> Memory {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Memory {
        peak_rss_kib: field("VmHWM:"),
        rss_kib: field("VmRSS:"),
        rss_anon_kib: field("RssAnon:"),
    }
}

/// Resets the kernel's peak-RSS counter (VmHWM) to the current RSS, so that a later
/// [`memory`] reports the peak of the phase in between. Returns false where unsupported.
pub fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// The machine a run was taken on.
#[derive(Serialize, Debug, Clone, Default)]
pub struct Machine {
    /// CPU model name.
    pub cpu: String,
    /// Logical CPUs available to this process.
    pub threads: usize,
    /// Total memory, GiB.
    pub memory_gib: f64,
    /// 1-minute load average when the run started and ended (the machine is shared).
    pub load_start: f64,
    /// See `load_start`.
    pub load_end: f64,
}

/// 1-minute load average.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}

/// Describes this machine.
pub fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next().and_then(|x| x.parse().ok()))
        .unwrap_or(0.0);
    Machine {
        cpu,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_gib: mem_kib / (1024.0 * 1024.0),
        load_start: load_average(),
        load_end: f64::NAN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ideal_ranking_has_ndcg_one_and_reversed_less() {
        let rel: HashMap<u64, u32> = [(1, 3), (2, 2), (3, 1)].into_iter().collect();
        assert!((ndcg_at(&[1, 2, 3], &rel, 10) - 1.0).abs() < 1e-12);
        assert!(ndcg_at(&[3, 2, 1], &rel, 10) < 1.0);
        assert_eq!(ndcg_at(&[7, 8], &rel, 10), 0.0);
    }

    #[test]
    fn recall_counts_overlap_within_k() {
        assert_eq!(recall_at(&[1, 2, 3], &[3, 4, 1], 3), 2.0 / 3.0);
        assert_eq!(recall_at(&[1, 2, 3, 4], &[4, 5], 2), 0.0);
        assert_eq!(
            judged_recall_at(&[9, 1], &[(1, 1), (2, 1)].into_iter().collect(), 100),
            0.5
        );
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let xs: Vec<f64> = (1..=100).map(f64::from).collect();
        let l = Latency::of(&xs);
        assert_eq!((l.p50_ms, l.p95_ms, l.p99_ms), (50.0, 95.0, 99.0));
    }
}
