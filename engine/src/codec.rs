//! The residual codec: IVF centroids plus per-dimension residual quantiser.
//!
//! Training (on the first ingested batch, see the README's "Codec lifecycle"):
//! 1. sample token vectors; pick the centroid count (PLAID's heuristic unless configured);
//! 2. two-level k-means: `G ~ sqrt(K)` coarse groups, then each group's points split into
//!    centroids in proportion to its size. Training and assignment then cost
//!    `O(n (G + p K / G))` instead of `O(n K)`, which is what keeps ingest fast at the
//!    centroid counts PLAID's heuristic asks for;
//! 3. residual bucket cutoffs and weights from per-dimension quantiles of held-out residuals.
//!
//! Encoding assigns each token to the nearest centroid among the `ASSIGN_GROUPS` nearest
//! groups and packs its residual.

use std::sync::OnceLock;

use rand::SeedableRng;
use rand::seq::index::sample;
use rayon::prelude::*;
use tessera_kernels::{Int8Centroids, ResidualCodec, matmul_nt, nearest_centers};
use tessera_storage::codec::CodecData;

use crate::kmeans::kmeans;
use crate::options::CollectionConfig;

/// Coarse groups searched per token when assigning it to a centroid.
const ASSIGN_GROUPS: usize = 4;
/// Tokens sampled for training, per centroid (FAISS-style: enough points per cell).
pub(crate) const SAMPLE_PER_CENTROID: usize = 48;
/// Cap on residuals used for the quantiles.
const QUANTILE_SAMPLE: usize = 65_536;

/// PLAID's centroid count: `2^floor(log2(16 sqrt(n_tokens)))`, at most `n_tokens`.
pub fn plaid_centroids(n_tokens: u64) -> u32 {
    let target = 16.0 * (n_tokens as f64).sqrt();
    let k = if target < 1.0 {
        1
    } else {
        1u64 << target.log2().floor() as u32
    };
    k.clamp(1, n_tokens.max(1)).min(1 << 24) as u32
}

/// How many times PLAID's centroid count the default asks for ([`default_centroids`]).
pub const FINE_FACTOR: u64 = 4;
/// Most centroids the default asks for: codes then stay two bytes per token.
pub const FINE_CAP: u64 = 1 << 16;
/// Fewest tokens per centroid the default leaves (on average) when it goes past PLAID's.
pub const FINE_MIN_TOKENS: u64 = 16;

/// The default centroid count: [`FINE_FACTOR`] times PLAID's heuristic, at most
/// [`FINE_CAP`] and at most one per [`FINE_MIN_TOKENS`] tokens (a power of two), and never
/// fewer than PLAID's.
///
/// Why finer than PLAID: the candidate stages rank documents by centroid scores alone, so
/// the closer the centroids sit to the tokens the fewer true best documents they rank too
/// low to be scored exactly. On python-doc (0.77M tokens) 32,768 centroids instead of
/// PLAID's 8,192 raised recall@10 at the same budgets from 0.913 to 0.970; what it costs
/// is the centroid stage (every query scores every centroid, in `i8` since the same
/// change: 1.1 ms at 65,536 centroids and dim 128) and training time at ingest
/// (BENCHMARKS.md, "Search at scale"). PLAID's count already reaches the cap at about
/// 17M tokens, so large collections are unchanged.
pub fn default_centroids(n_tokens: u64) -> u32 {
    let plaid = plaid_centroids(n_tokens);
    let per_tokens = n_tokens / FINE_MIN_TOKENS;
    let per_tokens = if per_tokens == 0 {
        0
    } else {
        1u64 << per_tokens.ilog2()
    };
    let fine = (u64::from(plaid) * FINE_FACTOR)
        .min(FINE_CAP)
        .min(per_tokens);
    plaid.max(fine as u32)
}

/// A trained codec with its lookup tables.
#[derive(Debug)]
pub struct Codec {
    /// File id of the codec.
    pub id: u64,
    data: CodecData,
    residual: ResidualCodec,
    centroid_half_norms: Vec<f32>,
    /// The centroids in `i8` for the search's centroid stage, built by the first search on
    /// a CPU with a VNNI path (`None` without one: the stage then multiplies in `f32`).
    int8: OnceLock<Option<Int8Centroids>>,
}

impl Codec {
    /// Wraps stored codec data.
    pub fn from_data(id: u64, data: CodecData) -> Self {
        let dim = data.dim as usize;
        let residual = ResidualCodec::new(dim, data.nbits, &data.cutoffs, &data.weights);
        let centroid_half_norms = data
            .centroids
            .chunks_exact(dim)
            .map(|c| 0.5 * tessera_kernels::dot(c, c))
            .collect();
        Codec {
            id,
            data,
            residual,
            centroid_half_norms,
            int8: OnceLock::new(),
        }
    }

    /// The stored form.
    pub fn data(&self) -> &CodecData {
        &self.data
    }

    /// Vector dimension.
    pub fn dim(&self) -> usize {
        self.data.dim as usize
    }

    /// Number of centroids.
    pub fn n_centroids(&self) -> u32 {
        self.data.n_centroids()
    }

    /// Centroids, row-major.
    pub fn centroids(&self) -> &[f32] {
        &self.data.centroids
    }

    /// The centroids quantised to `i8` when this CPU scores them faster that way
    /// (`tessera_kernels::Int8Centroids::fast_path`); built once, on first use.
    pub(crate) fn int8_centroids(&self) -> Option<&Int8Centroids> {
        self.int8
            .get_or_init(|| {
                Int8Centroids::fast_path().map(|_| Int8Centroids::new(self.centroids(), self.dim()))
            })
            .as_ref()
    }

    /// The residual quantiser.
    pub(crate) fn residual(&self) -> &ResidualCodec {
        &self.residual
    }

    /// Bytes per packed residual.
    pub fn residual_bytes(&self) -> usize {
        self.residual.packed_len()
    }

    /// Reconstructs token `code`/`packed` into `out`.
    pub fn decode(&self, code: u32, packed: &[u8], out: &mut [f32]) {
        let dim = self.dim();
        let c = &self.data.centroids[code as usize * dim..(code as usize + 1) * dim];
        self.residual.decode(c, packed, out);
    }

    /// Assigns each row of `tokens` to a centroid (see module docs).
    pub fn assign(&self, tokens: &[f32]) -> Vec<u32> {
        let dim = self.dim();
        let n = tokens.len() / dim;
        let groups = self.data.n_groups() as usize;
        if groups <= 1 {
            return nearest_centers(tokens, &self.data.centroids, dim, 1);
        }
        let probe = ASSIGN_GROUPS.min(groups);
        let mut gsim = vec![0f32; n * groups];
        matmul_nt(tokens, &self.data.group_centers, dim, &mut gsim, 1);
        let group_half: Vec<f32> = self
            .data
            .group_centers
            .chunks_exact(dim)
            .map(|g| 0.5 * tessera_kernels::dot(g, g))
            .collect();
        // Tokens to examine per group, so each group's centroids meet their tokens in one GEMM.
        let mut per_group: Vec<Vec<u32>> = vec![Vec::new(); groups];
        let mut scratch: Vec<f32> = vec![0.0; groups];
        for t in 0..n {
            for (g, s) in scratch.iter_mut().enumerate() {
                *s = gsim[t * groups + g] - group_half[g];
            }
            for g in tessera_kernels::top_k(&scratch, probe) {
                per_group[g as usize].push(t as u32);
            }
        }
        let mut best = vec![(f32::NEG_INFINITY, 0u32); n];
        let mut rows = Vec::new();
        let mut sim = Vec::new();
        for (g, members) in per_group.iter().enumerate() {
            let (lo, hi) = (
                self.data.group_offsets[g] as usize,
                self.data.group_offsets[g + 1] as usize,
            );
            if members.is_empty() || lo == hi {
                continue;
            }
            rows.clear();
            for &t in members {
                rows.extend_from_slice(&tokens[t as usize * dim..(t as usize + 1) * dim]);
            }
            let kc = hi - lo;
            sim.clear();
            sim.resize(members.len() * kc, 0.0);
            matmul_nt(
                &rows,
                &self.data.centroids[lo * dim..hi * dim],
                dim,
                &mut sim,
                1,
            );
            for (r, &t) in members.iter().enumerate() {
                let b = &mut best[t as usize];
                for j in 0..kc {
                    let v = sim[r * kc + j] - self.centroid_half_norms[lo + j];
                    if v > b.0 || (v == b.0 && ((lo + j) as u32) < b.1) {
                        *b = (v, (lo + j) as u32);
                    }
                }
            }
        }
        best.into_iter().map(|(_, c)| c).collect()
    }

    /// Encodes `tokens` into centroid codes and packed residuals, in parallel chunks.
    pub fn encode(&self, tokens: &[f32], threads: usize) -> Encoded {
        let dim = self.dim();
        let n = tokens.len() / dim;
        let rb = self.residual_bytes();
        let mut codes = vec![0u32; n];
        let mut packed = vec![0u8; n * rb];
        let mut norms = vec![0f32; n];
        let mut scales = vec![0u16; n];
        const CHUNK: usize = 2048;
        let work = |((((tok, codes), packed), norms), scales): EncodeChunk<'_>| {
            let assigned = self.assign(tok);
            let mut residual = vec![0f32; dim];
            let mut recon = vec![0f32; dim];
            for (i, (&c, t)) in assigned.iter().zip(tok.chunks_exact(dim)).enumerate() {
                let centroid = &self.data.centroids[c as usize * dim..(c as usize + 1) * dim];
                for d in 0..dim {
                    residual[d] = t[d] - centroid[d];
                }
                norms[i] = tessera_kernels::dot(&residual, &residual).sqrt();
                let p = &mut packed[i * rb..(i + 1) * rb];
                self.residual.encode(&residual, p);
                self.residual.decode(centroid, p, &mut recon);
                scales[i] = token_scale(
                    tessera_kernels::dot(t, t).sqrt(),
                    tessera_kernels::dot(&recon, &recon).sqrt(),
                );
            }
            codes.copy_from_slice(&assigned);
        };
        let chunks = tokens
            .chunks(CHUNK * dim)
            .zip(codes.chunks_mut(CHUNK))
            .zip(packed.chunks_mut(CHUNK * rb))
            .zip(norms.chunks_mut(CHUNK))
            .zip(scales.chunks_mut(CHUNK));
        run_parallel(threads, chunks, work);
        Encoded {
            codes,
            packed,
            norms,
            scales,
        }
    }

    /// Mean residual norm of the codec's training sample: the reference for drift.
    pub fn mean_residual_norm(&self) -> f32 {
        self.data.mean_residual_norm
    }

    /// A codec with `extra`'s centroids and groups appended after this one's. Existing codes
    /// keep their meaning, so segments encoded with this codec stay valid under the result.
    pub fn expanded(&self, id: u64, extra: &CodecData) -> Codec {
        let mut data = self.data.clone();
        let base = self.n_centroids();
        data.centroids.extend_from_slice(&extra.centroids);
        data.group_centers.extend_from_slice(&extra.group_centers);
        data.group_offsets
            .extend(extra.group_offsets.iter().skip(1).map(|o| o + base));
        data.trained_tokens += extra.trained_tokens;
        Codec::from_data(id, data)
    }
}

/// One parallel work unit of [`Codec::encode`]: tokens in; codes, residuals, residual norms
/// and norm scales out.
type EncodeChunk<'a> = (
    (((&'a [f32], &'a mut [u32]), &'a mut [u8]), &'a mut [f32]),
    &'a mut [u16],
);

/// The stored scale of a token (binary16 bits): its norm over its reconstruction's, so the
/// search scores `s · (centroid + residual)`, a vector as long as the input. Quantised
/// residuals shrink reconstructions unevenly; without this, tokens lose different fractions
/// of their scores and documents reorder (FORMAT.md, `TOKEN_SCALES`).
fn token_scale(input_norm: f32, recon_norm: f32) -> u16 {
    let s = if recon_norm > 0.0 {
        input_norm / recon_norm
    } else {
        1.0
    };
    let s = half::f16::from_f32(s);
    if s.is_finite() {
        s.to_bits()
    } else {
        half::f16::ONE.to_bits()
    }
}

/// Codes, packed residuals and residual norms of encoded tokens.
pub struct Encoded {
    /// Centroid of each token.
    pub codes: Vec<u32>,
    /// Packed residual of each token.
    pub packed: Vec<u8>,
    /// L2 norm of each token's residual (before quantisation).
    pub norms: Vec<f32>,
    /// Norm scale of each token (binary16 bits; see [`token_scale`]).
    pub scales: Vec<u16>,
}

/// Residual-norm ratio (batch mean over the codec's training mean) above which a batch is
/// considered out of the codec's distribution.
pub const DRIFT_FACTOR: f32 = 1.5;
/// Fewest outlier tokens worth training new centroids for.
pub const MIN_EXPANSION_TOKENS: usize = 64;

/// Runs `work` over `items` on `threads` workers (0 = the global pool; 1 = inline).
pub(crate) fn run_parallel<I, T, F>(threads: usize, items: I, work: F)
where
    I: Iterator<Item = T>,
    T: Send,
    F: Fn(T) + Sync + Send,
{
    if threads == 1 {
        items.for_each(work);
        return;
    }
    let items: Vec<T> = items.collect();
    if threads == 0 {
        items.into_par_iter().for_each(work);
    } else {
        match rayon::ThreadPoolBuilder::new().num_threads(threads).build() {
            Ok(pool) => pool.install(|| items.into_par_iter().for_each(work)),
            Err(_) => items.into_iter().for_each(work),
        }
    }
}

/// Trains a codec on `tokens` (row-major, `cfg.dim` wide) with the collection's settings.
pub fn train(
    tokens: &[f32],
    cfg: &CollectionConfig,
    expected_total_tokens: Option<u64>,
    threads: usize,
) -> CodecData {
    let (dim, nbits, iters, seed) = (cfg.dim as usize, cfg.nbits, cfg.kmeans_iters, cfg.seed);
    let n = tokens.len() / dim;
    let k = cfg
        .n_centroids
        .unwrap_or_else(|| default_centroids(expected_total_tokens.unwrap_or(0).max(n as u64)))
        .clamp(1, n.max(1) as u32) as usize;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let n_sample = n.min((k * SAMPLE_PER_CENTROID).max(16_384));
    let sample_idx = {
        let mut v = sample(&mut rng, n, n_sample).into_vec();
        v.sort_unstable();
        v
    };
    let mut pts = Vec::with_capacity(n_sample * dim);
    for &i in &sample_idx {
        pts.extend_from_slice(&tokens[i * dim..(i + 1) * dim]);
    }

    // Level 1: coarse groups.
    let g = ((k as f64).sqrt().round() as usize).clamp(1, k);
    let (group_centers, group_of) = kmeans(&pts, dim, g, iters, &mut rng, threads);
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); g];
    for (i, &a) in group_of.iter().enumerate() {
        members[a as usize].push(i);
    }
    // Level 2: split K among groups by size (largest remainder), at least one per non-empty group.
    let quota = allocate(&members.iter().map(Vec::len).collect::<Vec<_>>(), k);
    let mut centroids = Vec::with_capacity(k * dim);
    let mut centers_kept = Vec::new();
    let mut group_offsets = vec![0u32];
    for (gi, m) in members.iter().enumerate() {
        if quota[gi] == 0 {
            continue;
        }
        let mut gpts = Vec::with_capacity(m.len() * dim);
        for &i in m {
            gpts.extend_from_slice(&pts[i * dim..(i + 1) * dim]);
        }
        let (c, _) = kmeans(&gpts, dim, quota[gi], iters, &mut rng, threads);
        centroids.extend_from_slice(&c);
        centers_kept.extend_from_slice(&group_centers[gi * dim..(gi + 1) * dim]);
        group_offsets.push((centroids.len() / dim) as u32);
    }

    // Residual quantiles per dimension, on residuals of a held-out slice of the sample.
    let mut data = CodecData {
        dim: dim as u32,
        nbits,
        centroids,
        cutoffs: Vec::new(),
        weights: Vec::new(),
        group_centers: centers_kept,
        group_offsets,
        trained_tokens: n as u64,
        mean_residual_norm: 0.0,
    };
    let q_n = n_sample.min(QUANTILE_SAMPLE);
    let q_pts = &pts[..q_n * dim];
    let staged = Codec::from_data(
        0,
        CodecData {
            // Placeholder quantiser: only `assign` is used from this value.
            cutoffs: vec![0.0; dim * ((1 << nbits) - 1)],
            weights: vec![0.0; dim * (1 << nbits)],
            ..data.clone()
        },
    );
    let codes = staged.assign(q_pts);
    let mut per_dim: Vec<Vec<f32>> = vec![Vec::with_capacity(q_n); dim];
    let mut norm_sum = 0f64;
    for (t, &c) in q_pts.chunks_exact(dim).zip(&codes) {
        let centroid = &data.centroids[c as usize * dim..(c as usize + 1) * dim];
        let mut sq = 0f64;
        for d in 0..dim {
            let r = t[d] - centroid[d];
            per_dim[d].push(r);
            sq += f64::from(r) * f64::from(r);
        }
        norm_sum += sq.sqrt();
    }
    data.mean_residual_norm = (norm_sum / q_n.max(1) as f64) as f32;
    let buckets = 1usize << nbits;
    for values in &mut per_dim {
        values.sort_unstable_by(f32::total_cmp);
        let at = |q: f64| -> f32 {
            if values.is_empty() {
                return 0.0;
            }
            let pos = (q * (values.len() - 1) as f64).round() as usize;
            values[pos.min(values.len() - 1)]
        };
        let cuts: Vec<f32> = (1..buckets)
            .map(|b| at(b as f64 / buckets as f64))
            .collect();
        // Reconstruct each bucket by the mean of its members (the value that minimises the
        // squared error), falling back to the bucket's middle quantile when it is empty.
        let mut sums = vec![0f64; buckets];
        let mut counts = vec![0usize; buckets];
        for &v in values.iter() {
            let b = cuts.partition_point(|&c| c <= v);
            sums[b] += f64::from(v);
            counts[b] += 1;
        }
        for b in 0..buckets {
            data.weights.push(if counts[b] > 0 {
                (sums[b] / counts[b] as f64) as f32
            } else {
                at((b as f64 + 0.5) / buckets as f64)
            });
        }
        data.cutoffs.extend_from_slice(&cuts);
    }
    data
}

/// Splits `total` among groups in proportion to `sizes` (largest remainder), giving every
/// non-empty group at least one and no group more than its size.
fn allocate(sizes: &[usize], total: usize) -> Vec<usize> {
    let n: usize = sizes.iter().sum();
    if n == 0 {
        return vec![0; sizes.len()];
    }
    let total = total.min(n);
    let mut quota: Vec<usize> = sizes
        .iter()
        .map(|&s| {
            if s == 0 {
                0
            } else {
                ((s * total) / n).clamp(1, s)
            }
        })
        .collect();
    let mut assigned: usize = quota.iter().sum();
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse((sizes[i] * total) % n));
    while assigned < total {
        let before = assigned;
        for &i in &order {
            if assigned < total && quota[i] < sizes[i] {
                quota[i] += 1;
                assigned += 1;
            }
        }
        if assigned == before {
            break;
        }
    }
    while assigned > total {
        if let Some(i) = (0..sizes.len())
            .filter(|&i| quota[i] > 1)
            .max_by_key(|&i| quota[i])
        {
            quota[i] -= 1;
            assigned -= 1;
        } else {
            break;
        }
    }
    quota
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaid_heuristic_matches_published_values() {
        assert_eq!(plaid_centroids(100_000), 4096);
        assert_eq!(plaid_centroids(1_000_000), 8192);
        assert_eq!(plaid_centroids(10_000_000), 32_768);
        assert_eq!(plaid_centroids(1), 1);
    }

    #[test]
    fn default_centroids_are_finer_than_plaids_up_to_the_cap() {
        // Small: one centroid per 16 tokens binds (100K tokens: 6,250 -> 4,096 = PLAID's).
        assert_eq!(default_centroids(100_000), 4096);
        assert_eq!(default_centroids(765_000), 32_768);
        assert_eq!(default_centroids(1_000_000), 32_768);
        assert_eq!(default_centroids(10_000_000), 65_536);
        // PLAID's count past the cap is kept.
        assert_eq!(default_centroids(100_000_000), 131_072);
        assert_eq!(default_centroids(1), 1);
        assert_eq!(default_centroids(0), 1);
        for n in [2u64, 17, 1000, 12_345, 400_000, 3_000_000, 40_000_000] {
            let k = u64::from(default_centroids(n));
            assert!(k >= u64::from(plaid_centroids(n)) && k <= n.max(1));
        }
    }

    #[test]
    fn allocation_sums_to_total_and_respects_sizes() {
        let q = allocate(&[100, 1, 0, 50, 3], 20);
        assert_eq!(q.iter().sum::<usize>(), 20);
        assert_eq!(q[2], 0);
        assert!(q[1] <= 1 && q[4] <= 3);
        assert_eq!(allocate(&[2, 2], 10), vec![2, 2]);
    }

    #[test]
    fn two_level_assignment_mostly_agrees_with_exact_nearest() {
        let corpus =
            crate::synthetic::SyntheticCorpus::generate(&crate::synthetic::SyntheticSpec {
                n_docs: 300,
                dim: 32,
                ..crate::synthetic::SyntheticSpec::default()
            });
        let data = train(
            &corpus.flat,
            &CollectionConfig::new(32).with_n_centroids(256),
            None,
            1,
        );
        let codec = Codec::from_data(1, data);
        let fast = codec.assign(&corpus.flat);
        let exact = tessera_kernels::reference::nearest(&corpus.flat, codec.centroids(), 32);
        let agree = fast.iter().zip(&exact).filter(|(a, b)| a == b).count();
        assert!(
            agree as f64 >= 0.95 * fast.len() as f64,
            "agreement {agree}/{}",
            fast.len()
        );
    }
}
