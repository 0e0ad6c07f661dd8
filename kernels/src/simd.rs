//! Vectorised inner loops with run-time CPU feature detection. The only module of this crate
//! with `unsafe`: calling a `#[target_feature]` function is unsafe unless the feature is known
//! to be present, which each call site checks first.
#![allow(unsafe_code)]

/// Dot product of two equal-length slices.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: AVX2 and FMA were detected on this CPU just above.
            return unsafe { dot_avx2(a, b) };
        }
    }
    dot_portable(a, b)
}

/// Asks the CPU to start loading the cache lines of `values` without waiting for them. A
/// hint only: it never faults, and lines of pages not mapped yet are skipped. The
/// centroid-code estimate announces a candidate's codes a few candidates ahead, so that
/// their misses (one random spot of the segment per candidate) overlap instead of
/// following one another.
#[inline]
pub fn prefetch<T>(values: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        let start = values.as_ptr() as usize;
        let end = start + std::mem::size_of_val(values);
        for line in (start & !63..end).step_by(64) {
            // SAFETY: a prefetch has no architectural effect and never faults, whatever
            // the address; SSE, which provides it, is part of the x86-64 baseline.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    line as *const i8,
                )
            };
        }
    }
}

/// `acc[i] = max(acc[i], row[i])` for every `i`.
#[inline]
pub fn max_into(acc: &mut [f32], row: &[f32]) {
    debug_assert_eq!(acc.len(), row.len());
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 was detected on this CPU just above.
            unsafe { max_into_avx2(acc, row) };
            return;
        }
    }
    max_into_portable(acc, row);
}

/// Exact MaxSim of a query against one compressed document (see [`crate::QueryLut`]),
/// compiled for AVX-512 or AVX2 when the CPU has them. Dispatching once per document keeps
/// the feature check out of the per-token loop.
#[inline]
pub(crate) fn maxsim_compressed<C: Copy + Into<u32>>(
    lut: &crate::QueryLut,
    centroid_scores: &[f32],
    codes: &[C],
    packed: &[u8],
    scales: Option<&[half::f16]>,
) -> f32 {
    use crate::compressed::maxsim_compressed_body as body;
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: AVX-512F was detected on this CPU just above.
            return unsafe {
                maxsim_compressed_avx512(lut, centroid_scores, codes, packed, scales)
            };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 was detected on this CPU just above.
            return unsafe { maxsim_compressed_avx2(lut, centroid_scores, codes, packed, scales) };
        }
    }
    body(lut, centroid_scores, codes, packed, scales)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn maxsim_compressed_avx512<C: Copy + Into<u32>>(
    lut: &crate::QueryLut,
    centroid_scores: &[f32],
    codes: &[C],
    packed: &[u8],
    scales: Option<&[half::f16]>,
) -> f32 {
    crate::compressed::maxsim_compressed_body(lut, centroid_scores, codes, packed, scales)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn maxsim_compressed_avx2<C: Copy + Into<u32>>(
    lut: &crate::QueryLut,
    centroid_scores: &[f32],
    codes: &[C],
    packed: &[u8],
    scales: Option<&[half::f16]>,
) -> f32 {
    crate::compressed::maxsim_compressed_body(lut, centroid_scores, codes, packed, scales)
}

/// Sum over query tokens of the best byte score over `codes` (see
/// [`crate::CentroidScores8`]), compiled for AVX2 when the CPU has it.
#[inline]
pub(crate) fn max_bytes_sum<C: Copy + Into<u32>>(t: &crate::CentroidScores8, codes: &[C]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 was detected on this CPU just above.
            return unsafe { max_bytes_sum_avx2(t, codes) };
        }
    }
    crate::approx::max_bytes_sum_body(t, codes)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn max_bytes_sum_avx2<C: Copy + Into<u32>>(t: &crate::CentroidScores8, codes: &[C]) -> u32 {
    crate::approx::max_bytes_sum_body(t, codes)
}

/// `(min, max)` of a score table, compiled for AVX2 when the CPU has it.
pub(crate) fn min_max(values: &[f32]) -> (f32, f32) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 was detected on this CPU just above.
            return unsafe { min_max_avx2(values) };
        }
    }
    crate::approx::min_max_body(values)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn min_max_avx2(values: &[f32]) -> (f32, f32) {
    crate::approx::min_max_body(values)
}

/// Quantises a score table to bytes, compiled for AVX2 when the CPU has it.
pub(crate) fn quantize_bytes(src: &[f32], lo: f32, inv: f32, dst: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 was detected on this CPU just above.
            unsafe { quantize_bytes_avx2(src, lo, inv, dst) };
            return;
        }
    }
    crate::approx::quantize_bytes_body(src, lo, inv, dst)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn quantize_bytes_avx2(src: &[f32], lo: f32, inv: f32, dst: &mut [u8]) {
    crate::approx::quantize_bytes_body(src, lo, inv, dst)
}

/// Eight independent lanes let the compiler vectorise without reassociating a single sum.
#[inline(always)]
fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let chunks_a = a.chunks_exact(16);
    let chunks_b = b.chunks_exact(16);
    let tail: f32 = chunks_a
        .remainder()
        .iter()
        .zip(chunks_b.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (ca, cb) in chunks_a.zip(chunks_b) {
        for i in 0..16 {
            lanes[i] = ca[i].mul_add(cb[i], lanes[i]);
        }
    }
    lanes.iter().sum::<f32>() + tail
}

#[inline(always)]
fn max_into_portable(acc: &mut [f32], row: &[f32]) {
    for (a, &r) in acc.iter_mut().zip(row) {
        // Written as a comparison (not f32::max) so it lowers to a packed max instruction.
        *a = if r > *a { r } else { *a };
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    dot_portable(a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn max_into_avx2(acc: &mut [f32], row: &[f32]) {
    max_into_portable(acc, row)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn dot_matches_reference(v in prop::collection::vec((-1.0f32..1.0, -1.0f32..1.0), 0..300)) {
            let (a, b): (Vec<f32>, Vec<f32>) = v.into_iter().unzip();
            let fast = dot(&a, &b);
            let slow = reference::dot(&a, &b);
            prop_assert!((fast - slow).abs() <= 1e-4 * (1.0 + slow.abs()));
        }

        #[test]
        fn max_into_matches_elementwise_max(v in prop::collection::vec((-5.0f32..5.0, -5.0f32..5.0), 0..100)) {
            let (mut acc, row): (Vec<f32>, Vec<f32>) = v.into_iter().unzip();
            let expected: Vec<f32> = acc.iter().zip(&row).map(|(a, r)| a.max(*r)).collect();
            max_into(&mut acc, &row);
            prop_assert_eq!(acc, expected);
        }
    }
}
