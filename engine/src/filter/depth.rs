//! How deep in the collection a filtered search has to look, which chooses its path and
//! how many centroids its postings stage probes.
//!
//! The filter keeps a fraction `s = matches / live` of the documents, unrelated to the
//! query, so the best `k` matches are spread over about the best `k / s` documents of the
//! unfiltered ranking: the filtered search has to find documents as deep as an unfiltered
//! top-`k / s` search does. The postings stage reaches deep documents poorly: only the
//! fraction `s` of what its probes reach matches, and the best matches share fewer probed
//! centroids with the query (BENCHMARKS.md, "Filtered search": at 10% selectivity on 100K
//! documents the probed postings missed 2% of the top 10, at 5% 8%). Two rules follow:
//! - **Estimate every match** (no postings) when an unfiltered search *at that depth* would
//!   keep at least as many candidates for the centroid-code estimate (its prefilter budget
//!   for `k / s`), so the stage never costs more than that search would spend on it; and
//!   when the postings walk of the scaled probes below would read more entries than the
//!   codes of every match (it then costs more and reaches less).
//! - Otherwise **probe `nprobe / s` centroids** per query token, so the probes reach as
//!   many *matching* documents as `nprobe` reaches documents without a filter.

use super::Allowed;
use crate::options::SearchParams;

/// The unfiltered depth a filtered top-`k` search corresponds to: `k` times `live /
/// matches`, rounded up, never less than `k` (no filter) nor more than `live` (the depth
/// of the whole collection); `live` when nothing matches.
pub(crate) fn depth(k: usize, matches: u64, live: u64) -> usize {
    let live = live.max(1);
    if matches == 0 {
        return usize::try_from(live).unwrap_or(usize::MAX);
    }
    let d = (k as u128 * live as u128).div_ceil(matches as u128);
    let d = d.clamp(k as u128, (live as u128).max(k as u128));
    usize::try_from(d).unwrap_or(usize::MAX)
}

/// The shape of a query's postings walk: its tokens, each probing centroids out of
/// `centroids`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Walk {
    pub(crate) nprobe: u32,
    pub(crate) query_tokens: usize,
    pub(crate) centroids: usize,
}

/// Whether a filtered top-`k` search ranks every match (`allowed`) by the centroid-code
/// estimate instead of probing postings: `filter_scan` when set; else when no more match
/// than the postings stage of an unfiltered search at the filter's depth would keep
/// ([`SearchParams::filter_scan_budget`]), or when the walk over the scaled probes
/// ([`probes`]) would read more postings entries than there are tokens in the matches.
/// (Postings hold the collection's tokens, about `tokens / centroids` each, so the walk
/// reads about `probes × query tokens / centroids` of the tokens, and the estimate reads the
/// matches' share `s` of them.)
pub(crate) fn estimate_all(
    params: &SearchParams,
    k: usize,
    allowed: &Allowed,
    live: u64,
    walk: Walk,
) -> bool {
    if let Some(n) = params.filter_scan {
        return allowed.count <= n as u64;
    }
    let depth = depth(k, allowed.count, live);
    let probes = probes(walk.nprobe, Some(allowed), live).min(walk.centroids);
    let walked = probes as u128 * walk.query_tokens as u128 * live as u128;
    allowed.count <= params.filter_scan_budget(depth, live) as u64
        || walked > walk.centroids as u128 * allowed.count as u128
}

/// Centroids the postings stage probes per query token under `allowed`: `nprobe` divided
/// by the selectivity, rounded up, so that the probes reach as many matching documents as
/// `nprobe` reaches documents without a filter; `nprobe` without a filter.
pub(crate) fn probes(nprobe: u32, allowed: Option<&Allowed>, live: u64) -> usize {
    let nprobe = nprobe.max(1) as usize;
    match allowed {
        Some(a) if a.count > 0 => depth(nprobe, a.count, live),
        _ => nprobe,
    }
}

#[cfg(test)]
mod tests {
    use super::{Walk, depth, estimate_all, probes};
    use crate::filter::Allowed;
    use crate::options::SearchParams;

    fn matching(count: u64) -> Allowed {
        Allowed {
            per_seg: Vec::new(),
            count,
        }
    }

    #[test]
    fn estimate_all_runs_while_the_matches_fit_the_budget_at_the_filters_depth() {
        let p = SearchParams::default();
        let live = 100_000;
        // The benchmark's collection (BENCHMARKS.md, "Filtered search"): the prefilter
        // budget at depth d is max(4096, 128 d), so every match is estimated up to about
        // 11% selectivity, and the postings run above.
        for (count, all) in [
            (113, true),
            (4_096, true),
            (4_949, true),
            (10_061, true),
            (11_363, true),
            (11_364, false),
            (20_089, false),
            (50_215, false),
        ] {
            assert_eq!(
                estimate_all(&p, 10, &matching(count), live, WALK),
                all,
                "{count}"
            );
            let depth = depth(10, count, live);
            assert_eq!(
                all,
                count as usize <= 4096.max(128 * depth),
                "{count}: the budget of an unfiltered top-{depth}"
            );
        }
        // An explicit filter_scan is obeyed at every depth.
        let none = p.clone().with_filter_scan(0);
        assert!(!estimate_all(&none, 10, &matching(1), live, WALK));
        let all = p.with_filter_scan(usize::MAX);
        assert!(estimate_all(&all, 10, &matching(live), live, WALK));
    }

    /// The benchmark's walk: 32 query tokens probing 16 of 65,536 centroids.
    const WALK: Walk = Walk {
        nprobe: 16,
        query_tokens: 32,
        centroids: 65_536,
    };

    #[test]
    fn probes_scale_with_the_inverse_selectivity_and_a_costlier_walk_estimates_every_match() {
        assert_eq!(probes(16, None, 100_000), 16);
        assert_eq!(probes(16, Some(&matching(100_000)), 100_000), 16);
        assert_eq!(probes(16, Some(&matching(50_215)), 100_000), 32);
        assert_eq!(probes(16, Some(&matching(20_089)), 100_000), 80);
        assert_eq!(
            probes(0, Some(&matching(60_000)), 100_000),
            2,
            "at least one probe"
        );
        // Few centroids: at 50% the 32 probes of 32 tokens read all of 1,024 centroids'
        // postings, more than the matches' codes (half the tokens): estimate every match.
        let p = SearchParams::default();
        let small = Walk {
            centroids: 1024,
            ..WALK
        };
        assert!(estimate_all(&p, 10, &matching(50_000), 100_000, small));
        assert!(!estimate_all(&p, 10, &matching(50_000), 100_000, WALK));
        let wide = Walk {
            centroids: 4096,
            ..WALK
        };
        assert!(!estimate_all(&p, 10, &matching(50_000), 100_000, wide));
    }

    #[test]
    fn depth_is_k_over_the_selectivity_rounded_up_within_k_and_the_collection() {
        assert_eq!(depth(10, 100_000, 100_000), 10, "everything matches");
        assert_eq!(depth(10, 10_061, 100_000), 100);
        assert_eq!(depth(10, 10_000, 100_000), 100);
        assert_eq!(depth(10, 50_215, 100_000), 20);
        assert_eq!(depth(10, 3, 100_000), 100_000, "at most the collection");
        assert_eq!(depth(10, 0, 100_000), 100_000, "nothing matches");
        assert_eq!(depth(10, 5, 5), 10, "never less than k");
        assert_eq!(depth(usize::MAX, 1, u64::MAX), usize::MAX, "no overflow");
    }
}
