//! How deep in the collection a filtered search has to look, which chooses its path.
//!
//! The filter keeps a fraction `s = matches / live` of the documents, unrelated to the
//! query, so the best `k` matches are spread over about the best `k / s` documents of the
//! unfiltered ranking: the filtered search has to find documents as deep as an unfiltered
//! top-`k / s` search does. The postings stage reaches deep documents poorly: they share
//! fewer probed centroids with the query, and the postings keep only the matching ones
//! among what the probes reach (BENCHMARKS.md, "Filtered search": at 10% selectivity on
//! 100K documents the probed postings missed 2% of the top 10, at 5% 8%). The centroid-code
//! estimate of every matching document reaches all of them; it is chosen when an unfiltered
//! search *at that depth* would estimate at least as many documents (its prefilter budget
//! for `k / s`), so it never costs more than what that search would spend on the stage.

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

/// Whether a filtered top-`k` search ranks every match (`allowed`) by the centroid-code
/// estimate instead of probing postings: when no more match than the postings stage of an
/// unfiltered search at the filter's depth would keep ([`SearchParams::filter_scan_budget`]).
pub(crate) fn estimate_all(params: &SearchParams, k: usize, allowed: &Allowed, live: u64) -> bool {
    let depth = depth(k, allowed.count, live);
    allowed.count <= params.filter_scan_budget(depth, live) as u64
}

#[cfg(test)]
mod tests {
    use super::{depth, estimate_all};
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
            assert_eq!(estimate_all(&p, 10, &matching(count), live), all, "{count}");
            let depth = depth(10, count, live);
            assert_eq!(
                all,
                count as usize <= 4096.max(128 * depth),
                "{count}: the budget of an unfiltered top-{depth}"
            );
        }
        // An explicit filter_scan is obeyed at every depth.
        assert!(!estimate_all(
            &p.clone().with_filter_scan(0),
            10,
            &matching(1),
            live
        ));
        let all = p.with_filter_scan(usize::MAX);
        assert!(estimate_all(&all, 10, &matching(live), live));
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
