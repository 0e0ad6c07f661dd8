//! Residual quantisation: per-dimension buckets packed `nbits` to a dimension.
//!
//! Dimension `j` of a token occupies bits `(j * nbits) % 8 ..` of byte `(j * nbits) / 8`,
//! least significant first (FORMAT.md, "Residual packing").

/// Bytes one token's packed residual takes.
pub fn packed_len(dim: usize, nbits: u32) -> usize {
    (dim * nbits as usize).div_ceil(8)
}

/// Quantises residuals and reconstructs them, from per-dimension cutoffs and weights.
#[derive(Clone, Debug)]
pub struct ResidualCodec {
    dim: usize,
    nbits: u32,
    /// `[dim, 2^nbits - 1]` ascending cutoffs.
    cutoffs: Vec<f32>,
    /// `[packed_len, 256, 8 / nbits]`: weights of the dimensions a byte value encodes.
    byte_table: Vec<f32>,
}

impl ResidualCodec {
    /// Builds the codec. `cutoffs` is `[dim, 2^nbits - 1]`, `weights` is `[dim, 2^nbits]`.
    ///
    /// # Panics
    /// If `nbits` is not 1, 2, 4 or 8 or the slices have the wrong length (callers validate).
    pub fn new(dim: usize, nbits: u32, cutoffs: &[f32], weights: &[f32]) -> Self {
        assert!(matches!(nbits, 1 | 2 | 4 | 8), "nbits must be 1, 2, 4 or 8");
        let buckets = 1usize << nbits;
        assert_eq!(cutoffs.len(), dim * (buckets - 1));
        assert_eq!(weights.len(), dim * buckets);
        let per_byte = 8 / nbits as usize;
        let n_bytes = packed_len(dim, nbits);
        let mask = (buckets - 1) as u32;
        let mut byte_table = vec![0f32; n_bytes * 256 * per_byte];
        for p in 0..n_bytes {
            for v in 0..256u32 {
                for l in 0..per_byte {
                    let d = p * per_byte + l;
                    if d < dim {
                        let bucket = ((v >> (l as u32 * nbits)) & mask) as usize;
                        byte_table[(p * 256 + v as usize) * per_byte + l] =
                            weights[d * buckets + bucket];
                    }
                }
            }
        }
        ResidualCodec {
            dim,
            nbits,
            cutoffs: cutoffs.to_vec(),
            byte_table,
        }
    }

    /// Dimension of the vectors.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// `[packed_len, 256, per_byte]` weights and `per_byte` (dimensions in one byte).
    pub(crate) fn byte_weights(&self) -> (&[f32], usize) {
        (&self.byte_table, 8 / self.nbits as usize)
    }

    /// Bytes per packed token.
    pub fn packed_len(&self) -> usize {
        packed_len(self.dim, self.nbits)
    }

    /// Packs the bucket of every dimension of `residual` into `out` (`packed_len` bytes).
    pub fn encode(&self, residual: &[f32], out: &mut [u8]) {
        let n_cut = (1usize << self.nbits) - 1;
        out.fill(0);
        for (d, &r) in residual.iter().enumerate() {
            let cuts = &self.cutoffs[d * n_cut..(d + 1) * n_cut];
            // Number of cutoffs <= r: the bucket index, cutoffs being ascending.
            let bucket = cuts.partition_point(|&c| c <= r) as u8;
            let bit = d * self.nbits as usize;
            out[bit / 8] |= bucket << (bit % 8);
        }
    }

    /// Reconstructs a token: `out = centroid + weights[buckets(packed)]`.
    pub fn decode(&self, centroid: &[f32], packed: &[u8], out: &mut [f32]) {
        // A compile-time count of dimensions per byte lets each byte's lookup and add unroll
        // into a few vector instructions; this is the exact re-ranking stage's inner loop.
        match self.nbits {
            1 => self.decode_n::<8>(centroid, packed, out),
            2 => self.decode_n::<4>(centroid, packed, out),
            4 => self.decode_n::<2>(centroid, packed, out),
            _ => self.decode_n::<1>(centroid, packed, out),
        }
    }

    #[inline(always)]
    fn decode_n<const N: usize>(&self, centroid: &[f32], packed: &[u8], out: &mut [f32]) {
        let full = self.dim / N;
        let out = &mut out[..self.dim];
        let centroid = &centroid[..self.dim];
        for (p, ((o, c), &byte)) in out
            .chunks_exact_mut(N)
            .zip(centroid.chunks_exact(N))
            .zip(&packed[..full])
            .enumerate()
        {
            let base = (p * 256 + byte as usize) * N;
            // Fixed-size views: no per-element bounds checks, so the adds vectorise.
            let (Ok(o), Ok(c), Ok(w)) = (
                <&mut [f32; N]>::try_from(o),
                <&[f32; N]>::try_from(c),
                <&[f32; N]>::try_from(&self.byte_table[base..base + N]),
            ) else {
                continue;
            };
            for l in 0..N {
                o[l] = c[l] + w[l];
            }
        }
        for d in full * N..self.dim {
            let p = d / N;
            out[d] = centroid[d] + self.byte_table[(p * 256 + packed[p] as usize) * N + d % N];
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The plain definition: bucket per dimension, reconstruct with its weight.
    fn reference_round_trip(
        dim: usize,
        nbits: u32,
        cutoffs: &[f32],
        weights: &[f32],
        x: &[f32],
    ) -> Vec<f32> {
        let n_cut = (1usize << nbits) - 1;
        (0..dim)
            .map(|d| {
                let b = cutoffs[d * n_cut..(d + 1) * n_cut]
                    .iter()
                    .filter(|&&c| c <= x[d])
                    .count();
                weights[d * (n_cut + 1) + b]
            })
            .collect()
    }

    /// Random ascending cutoffs and weights in `-range..range` for `dim` dimensions:
    /// `([dim, 2^nbits - 1], [dim, 2^nbits])`, the arguments of [`ResidualCodec::new`].
    pub(crate) fn random_quantiser(
        rng: &mut impl rand::Rng,
        dim: usize,
        nbits: u32,
        range: f32,
    ) -> (Vec<f32>, Vec<f32>) {
        let buckets = 1usize << nbits;
        let mut cutoffs = Vec::new();
        let mut weights = Vec::new();
        for _ in 0..dim {
            let mut c: Vec<f32> = (0..buckets - 1)
                .map(|_| rng.random_range(-range..range))
                .collect();
            c.sort_by(f32::total_cmp);
            cutoffs.extend(c);
            weights.extend((0..buckets).map(|_| rng.random_range(-range..range)));
        }
        (cutoffs, weights)
    }

    proptest! {
        #[test]
        fn decode_of_encode_matches_plain_bucketing(
            dim in 1usize..40,
            nbits in prop::sample::select(vec![1u32, 2, 4, 8]),
            seed in any::<u64>(),
        ) {
            use rand::{Rng, SeedableRng};
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let (cutoffs, weights) = random_quantiser(&mut rng, dim, nbits, 1.0);
            let codec = ResidualCodec::new(dim, nbits, &cutoffs, &weights);
            let x: Vec<f32> = (0..dim).map(|_| rng.random_range(-1.2..1.2)).collect();
            let centroid: Vec<f32> = (0..dim).map(|_| rng.random_range(-1.0..1.0)).collect();
            let mut packed = vec![0u8; codec.packed_len()];
            codec.encode(&x, &mut packed);
            let mut out = vec![0f32; dim];
            codec.decode(&centroid, &packed, &mut out);
            let expected = reference_round_trip(dim, nbits, &cutoffs, &weights, &x);
            for d in 0..dim {
                prop_assert!((out[d] - (centroid[d] + expected[d])).abs() < 1e-6);
            }
        }
    }
}
