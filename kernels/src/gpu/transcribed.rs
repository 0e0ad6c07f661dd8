//! The device kernels' arithmetic, transcribed operation for operation into Rust and
//! checked bit for bit against the CPU functions they mirror (`cuda/search.cu` names
//! each). No GPU runs here: this pins the order of operations the kernels were written
//! with to the CPU's, and the parity tests on a device (engine `tests/gpu.rs`) then check
//! that the kernels do what their transcriptions do.

use super::pipeline::byte_map;
use crate::{CentroidScores8, Int8Centroids, Int8Path, Int8Query, QueryLut, ResidualCodec};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};

fn random(rng: &mut rand::rngs::StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// `half_to_float`.
fn half_to_float(h: u16) -> f32 {
    let sign = u32::from(h & 0x8000) << 16;
    let exp = u32::from((h >> 10) & 0x1f);
    let man = u32::from(h & 0x3ff);
    if exp == 0 {
        let v = man as f32 * 5.960_464_5e-8;
        return f32::from_bits(v.to_bits() | sign);
    }
    if exp == 31 {
        return f32::from_bits(sign | 0x7f80_0000 | (man << 13));
    }
    f32::from_bits(sign | ((exp + 112) << 23) | (man << 13))
}

/// `quantize_scores`.
fn quantize(v: f32, map: [f32; 3]) -> u8 {
    let x = (v - map[0]) * map[2] + 0.5;
    let x = if x < 255.0 { x } else { 255.0 };
    let x = if x > 0.0 { x } else { 0.0 };
    (x as i32) as u8
}

#[test]
fn half_to_float_matches_f16_for_every_finite_value() {
    for h in 0..=u16::MAX {
        let want = half::f16::from_bits(h).to_f32();
        let got = half_to_float(h);
        if want.is_nan() {
            assert!(got.is_nan(), "{h:#x}");
        } else {
            assert_eq!(got.to_bits(), want.to_bits(), "{h:#x}");
        }
    }
}

proptest! {
    #[test]
    fn int8_centroid_scores_and_byte_table_have_the_cpus_bits(
        dim in 1usize..80,
        kc in 1usize..40,
        nq in 1usize..40,
        seed in any::<u64>(),
    ) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let cent = random(&mut rng, kc * dim);
        let query = random(&mut rng, nq * dim);
        let c8 = Int8Centroids::new(&cent, dim);
        let q = Int8Query::new(&query, dim);
        let stride = q.stride();
        let mut cpu = vec![0f32; kc * stride];
        let mut bytes = CentroidScores8::default();
        c8.scores_and_bytes_with(Int8Path::Portable, &q, &mut cpu, &mut bytes)
            .expect("portable path");
        // centroid_scores_i8: exact integer dot, then (dot as f32) * (a * b).
        let (q8, qs, qnorm) = crate::int8::quantise_query(&query, dim);
        let dim4 = dim.div_ceil(4) * 4;
        let map = byte_map(-(qnorm * c8.max_norm()), qnorm * c8.max_norm());
        let (rows, lo, step) = bytes.parts();
        prop_assert_eq!(map[0].to_bits(), lo.to_bits());
        prop_assert_eq!(map[1].to_bits(), step.to_bits());
        for c in 0..kc {
            for i in 0..nq {
                let dot: i32 = (0..dim4)
                    .map(|d| i32::from(c8.codes()[c * dim4 + d]) * i32::from(q8[i * dim4 + d]))
                    .sum();
                let v = dot as f32 * (c8.scales()[c] * qs[i]);
                prop_assert_eq!(v.to_bits(), cpu[c * stride + i].to_bits(), "c {} i {}", c, i);
                prop_assert_eq!(quantize(v, map), rows[c * stride + i]);
            }
        }
    }

    #[test]
    fn f32_byte_map_and_code_estimate_have_the_cpus_bits(
        kc in 1usize..40,
        nq in 1usize..40,
        codes in prop::collection::vec(0u32..40, 0..30),
        seed in any::<u64>(),
    ) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let stride = crate::padded_tokens(nq);
        let mut scores = vec![0f32; kc * stride];
        for (j, s) in scores.iter_mut().enumerate() {
            if j % stride < nq {
                *s = rng.random_range(-3.0f32..2.0);
            }
        }
        let t = CentroidScores8::new(&scores, stride, nq);
        // byte_map_range: min and max of the real scores, 0 too when there is padding.
        let (mut lo, mut hi) = if nq % crate::LANES != 0 { (0f32, 0f32) } else { (f32::INFINITY, f32::NEG_INFINITY) };
        for c in 0..kc {
            for &v in &scores[c * stride..c * stride + nq] {
                lo = if v < lo { v } else { lo };
                hi = if v > hi { v } else { hi };
            }
        }
        let map = byte_map(lo, hi);
        let (rows, tlo, tstep) = t.parts();
        prop_assert_eq!(map[0].to_bits(), tlo.to_bits());
        prop_assert_eq!(map[1].to_bits(), tstep.to_bits());
        for c in 0..kc {
            for i in 0..nq {
                prop_assert_eq!(quantize(scores[c * stride + i], map), rows[c * stride + i]);
            }
        }
        // code_estimate: integer sum of the best bytes, then sum * step + nq * lo.
        let codes: Vec<u32> = codes.into_iter().map(|c| c % kc as u32).collect();
        let sum: u32 = (0..nq)
            .map(|i| codes.iter().map(|&c| u32::from(rows[c as usize * stride + i])).max().unwrap_or(0))
            .sum();
        let est = if codes.is_empty() { 0.0 } else { sum as f32 * map[1] + nq as f32 * map[0] };
        prop_assert_eq!(est.to_bits(), t.estimate(&codes).to_bits());
    }

    #[test]
    fn residual_table_and_compressed_maxsim_have_the_cpus_bits(
        dim in 1usize..100,
        nbits in prop::sample::select(vec![1u32, 2, 4, 8]),
        nq in prop::sample::select(vec![1usize, 5, 16, 17, 32, 33, 64, 65, 70]),
        nd in 0usize..12,
        kc in 1usize..10,
        scaled in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let (cutoffs, weights) = crate::residual::tests::random_quantiser(&mut rng, dim, nbits, 0.3);
        let codec = ResidualCodec::new(dim, nbits, &cutoffs, &weights);
        let query = random(&mut rng, nq * dim);
        let stride = crate::padded_tokens(nq);
        let mut s = vec![0f32; kc * stride];
        for (j, v) in s.iter_mut().enumerate() {
            if j % stride < nq {
                *v = rng.random_range(-1.0f32..1.0);
            }
        }
        let rb = codec.packed_len();
        let codes: Vec<u32> = (0..nd).map(|_| rng.random_range(0..kc as u32)).collect();
        let packed: Vec<u8> = (0..nd * rb).map(|_| rng.random()).collect();
        let scales: Vec<half::f16> = (0..nd).map(|_| half::f16::from_f32(rng.random_range(0.5f32..1.5))).collect();
        let sc = scaled.then_some(scales.as_slice());
        let cpu = QueryLut::new(&codec, &query).maxsim(&s, &codes, &packed, sc);

        // build_lut: rows of nq entries, each summed from 0 in dimension order.
        let (table, per_byte) = codec.byte_weights();
        let nibbles = per_byte >= 2;
        let n_rows = rb * if nibbles { 32 } else { 256 };
        let mut lut = vec![0f32; n_rows * nq];
        for row in 0..n_rows {
            let (p, v, l0, l1) = if nibbles {
                let (p, u) = (row / 32, row % 32);
                if u < 16 { (p, u, 0, per_byte / 2) } else { (p, (u - 16) << 4, per_byte / 2, per_byte) }
            } else {
                (row / 256, row % 256, 0, per_byte)
            };
            for i in 0..nq {
                let mut acc = 0f32;
                for l in l0..l1 {
                    let d = p * per_byte + l;
                    if d >= dim { break; }
                    acc += table[(p * 256 + v) * per_byte + l] * query[i * dim + d];
                }
                lut[row * nq + i] = acc;
            }
        }
        // lut_maxsim.
        let gpu = if nd == 0 {
            0.0
        } else {
            let flat = nibbles && stride <= 64;
            let (mut total, mut part) = (0f32, 0f32);
            for i in 0..nq {
                let mut best = f32::NEG_INFINITY;
                for t in 0..nd {
                    let mut acc = s[codes[t] as usize * stride + i];
                    for p in 0..rb {
                        let byte = packed[t * rb + p] as usize;
                        if nibbles {
                            acc += lut[(p * 32 + (byte & 15)) * nq + i] + lut[(p * 32 + 16 + (byte >> 4)) * nq + i];
                        } else {
                            acc += lut[(p * 256 + byte) * nq + i];
                        }
                    }
                    let scale = if scaled { half_to_float(scales[t].to_bits()) } else { 1.0 };
                    let v = acc * scale;
                    best = if v > best { v } else { best };
                }
                if flat {
                    total = if i == 0 { best } else { total + best };
                } else {
                    part = if i % 16 == 0 { best } else { part + best };
                    if i % 16 == 15 || i + 1 == nq { total += part; }
                }
            }
            total
        };
        prop_assert_eq!(gpu.to_bits(), cpu.to_bits(), "gpu {} cpu {}", gpu, cpu);
    }
}

/// `float_key`.
fn float_key(f: f32) -> u32 {
    let b = f.to_bits();
    if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    }
}

const NEG_INF_KEY: u32 = 0x007f_ffff;

/// `tie_byte` of a (high, low) tie key.
fn tie_byte(k: (u64, u32), pass: usize) -> u32 {
    if pass < 8 {
        ((k.0 >> (56 - 8 * pass)) & 255) as u32
    } else {
        (k.1 >> (24 - 8 * (pass - 8))) & 255
    }
}

/// `select_topk` for one row, one thread: the ids it keeps. `tie` gives each id's tie key,
/// `first` the first tie pass the kernel runs.
fn select(scores: &[f32], tie: &dyn Fn(u32) -> (u64, u32), first: usize, r: usize) -> Vec<u32> {
    let valid: Vec<u32> = (0..scores.len() as u32)
        .filter(|&j| float_key(scores[j as usize]) > NEG_INF_KEY)
        .collect();
    if valid.len() <= r {
        return valid;
    }
    let key = |j: u32| float_key(scores[j as usize]);
    let (mut prefix, mut mask, mut need, mut tied) = (0u32, 0u32, r as u32, 0u32);
    for pass in 0..4 {
        let shift = 24 - 8 * pass;
        let mut hist = [0u32; 256];
        for &j in valid.iter().filter(|&&j| key(j) & mask == prefix) {
            hist[((key(j) >> shift) & 255) as usize] += 1;
        }
        let mut cum = 0;
        for b in (0..256).rev() {
            if cum + hist[b] >= need {
                prefix |= (b as u32) << shift;
                need -= cum;
                tied = hist[b];
                break;
            }
            cum += hist[b];
        }
        mask |= 255 << shift;
    }
    let kth = prefix;
    let tie_cut = need < tied;
    let mut p = (0u64, 0u32);
    if tie_cut {
        let mut want = need;
        for pass in first..12 {
            let mut hist = [0u32; 256];
            for &j in valid.iter().filter(|&&j| key(j) == kth) {
                let k = tie(j);
                if (0..pass).all(|q| tie_byte(k, q) == tie_byte(p, q)) {
                    hist[tie_byte(k, pass) as usize] += 1;
                }
            }
            let mut cum = 0;
            for (b, &h) in hist.iter().enumerate() {
                if cum + h >= want {
                    if pass < 8 {
                        p.0 |= (b as u64) << (56 - 8 * pass);
                    } else {
                        p.1 |= (b as u32) << (24 - 8 * (pass - 8));
                    }
                    want -= cum;
                    break;
                }
                cum += h;
            }
        }
    }
    valid
        .into_iter()
        .filter(|&j| key(j) > kth || (key(j) == kth && (!tie_cut || tie(j) <= p)))
        .collect()
}

proptest! {
    #[test]
    fn select_topk_keeps_the_best_by_score_then_tie_key(
        values in prop::collection::vec(prop::sample::select(vec![f32::NEG_INFINITY, -1.5, -0.0, 0.0, 0.25, 0.25, 1.0, 3.0, 7.5]), 1..300),
        bases in prop::collection::vec(0u32..40, 1..4),
        touch in prop::collection::vec(0u32..5, 300),
        use_touch in any::<bool>(),
        r in 1usize..80,
    ) {
        // Global ids 0..n over segments starting at the sorted `bases` (first at 0).
        let n = values.len() as u32;
        let mut starts: Vec<u32> = bases.iter().map(|b| b % n).collect();
        starts.push(0);
        starts.sort_unstable();
        starts.dedup();
        let seg = |g: u32| starts.partition_point(|&s| s <= g) as u32 - 1;
        let tie = |g: u32| -> (u64, u32) {
            if use_touch {
                let s = seg(g);
                ((u64::from(s) << 32) | u64::from(touch[g as usize]), g - starts[s as usize])
            } else {
                (0, g)
            }
        };
        let n_seg = starts.len() as u32;
        let first = if use_touch { if n_seg <= 256 { 3 } else { 2 } } else { 8 };
        let mut got = select(&values, &tie, first, r);
        got.sort_unstable();
        // Reference: sort by (score descending, tie key ascending), take r.
        let mut want: Vec<u32> = (0..n).filter(|&g| values[g as usize] > f32::NEG_INFINITY).collect();
        want.sort_by(|&a, &b| float_key(values[b as usize]).cmp(&float_key(values[a as usize])).then(tie(a).cmp(&tie(b))));
        want.truncate(r);
        want.sort_unstable();
        prop_assert_eq!(got, want);
    }
}
