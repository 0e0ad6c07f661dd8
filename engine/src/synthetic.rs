//! A deterministic generator of clustered multi-vector corpora, for tests, benchmarks and
//! the demo.
//!
//! The model (documented in BENCHMARKS.md, "Synthetic corpora"):
//! * `n_clusters` unit-norm cluster centres drawn uniformly on the sphere; cluster
//!   popularity follows a Zipf law (exponent `zipf_exponent`, 1 by default), so some token
//!   "meanings" are common and some rare, as in text;
//! * each document draws `clusters_per_doc` clusters by popularity and a length uniform in
//!   `[min_tokens, max_tokens]`; each token is one of its document's clusters plus Gaussian
//!   noise of total norm about `noise`, then L2-normalised, as ColBERT's vectors are. Tokens
//!   of a document therefore correlate, and documents sharing clusters are near each other;
//! * a query picks a source document, takes `query_tokens` of its tokens, perturbs each with
//!   noise of norm about `query_noise` and normalises. Its best matches are the source and
//!   documents sharing its clusters.

use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal, weighted::WeightedIndex};

/// Parameters of a synthetic corpus.
#[derive(Clone, Debug)]
pub struct SyntheticSpec {
    /// Number of documents.
    pub n_docs: usize,
    /// Vector dimension.
    pub dim: usize,
    /// Fewest tokens in a document.
    pub min_tokens: usize,
    /// Most tokens in a document.
    pub max_tokens: usize,
    /// Number of cluster centres.
    pub n_clusters: usize,
    /// Clusters each document draws its tokens from.
    pub clusters_per_doc: usize,
    /// Norm of the noise added to a token (relative to the unit centre).
    pub noise: f32,
    /// Exponent of the clusters' Zipf popularity (1: the `r`-th most popular cluster is
    /// drawn `1/r` as often as the first; 0: uniform).
    pub zipf_exponent: f64,
    /// Norm of the corpus-wide direction added to every token (0: none).
    pub shared: f32,
    /// Seed.
    pub seed: u64,
}

impl Default for SyntheticSpec {
    fn default() -> Self {
        SyntheticSpec {
            n_docs: 1000,
            dim: 128,
            min_tokens: 32,
            max_tokens: 256,
            n_clusters: 2048,
            clusters_per_doc: 8,
            noise: 0.6,
            zipf_exponent: 1.0,
            shared: 0.0,
            seed: 1,
        }
    }
}

/// A generated corpus: all token rows in one row-major array, with document offsets.
#[derive(Clone, Debug)]
pub struct SyntheticCorpus {
    /// Dimension.
    pub dim: usize,
    /// Token rows of all documents, row-major.
    pub flat: Vec<f32>,
    /// `n_docs + 1` row offsets.
    pub offsets: Vec<usize>,
    centers: Vec<f32>,
}

fn normalise(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

fn gaussian(rng: &mut impl Rng, dim: usize, norm: f32) -> Vec<f32> {
    // Per-coordinate sigma so the expected norm of the whole vector is `norm`.
    let sigma = norm / (dim as f32).sqrt();
    let normal = Normal::new(0.0f32, sigma.max(f32::MIN_POSITIVE)).unwrap_or_else(|_| {
        Normal::new(0.0, 1.0).unwrap_or_else(|_| unreachable!("unit normal is valid"))
    });
    (0..dim).map(|_| normal.sample(rng)).collect()
}

/// Documents of a [`SyntheticSpec`], generated one at a time in corpus order: the same
/// documents as [`SyntheticCorpus::generate`] without holding the corpus, so a benchmark can
/// regenerate a corpus larger than memory batch by batch.
pub struct SyntheticStream {
    rng: rand::rngs::StdRng,
    dim: usize,
    centers: Vec<f32>,
    popularity: Option<WeightedIndex<f64>>,
    lens: (usize, usize),
    clusters_per_doc: usize,
    noise: f32,
    /// The corpus-wide direction times `shared`; empty when `shared` is 0.
    shared: Vec<f32>,
    remaining: usize,
}

impl SyntheticStream {
    /// The generator of `spec`'s corpus, positioned before its first document.
    pub fn new(spec: &SyntheticSpec) -> Self {
        let mut rng = rand::rngs::StdRng::seed_from_u64(spec.seed);
        let dim = spec.dim.max(1);
        let n_clusters = spec.n_clusters.max(1);
        let mut centers = Vec::with_capacity(n_clusters * dim);
        for _ in 0..n_clusters {
            let mut c = gaussian(&mut rng, dim, 1.0);
            normalise(&mut c);
            centers.extend(c);
        }
        let weights: Vec<f64> = (1..=n_clusters)
            .map(|r| {
                if spec.zipf_exponent == 1.0 {
                    1.0 / r as f64
                } else {
                    (r as f64).powf(-spec.zipf_exponent)
                }
            })
            .collect();
        // Its own generator, so that corpora without it are those of earlier versions.
        let shared = if spec.shared > 0.0 {
            let mut r = rand::rngs::StdRng::seed_from_u64(spec.seed ^ 0x5eed_5a4e_d000_0001);
            let mut v = gaussian(&mut r, dim, 1.0);
            normalise(&mut v);
            v.iter_mut().for_each(|x| *x *= spec.shared);
            v
        } else {
            Vec::new()
        };
        let lo = spec.min_tokens.max(1);
        SyntheticStream {
            rng,
            dim,
            centers,
            popularity: WeightedIndex::new(&weights).ok(),
            lens: (lo, spec.max_tokens.max(lo)),
            clusters_per_doc: spec.clusters_per_doc.max(1),
            noise: spec.noise,
            shared,
            remaining: spec.n_docs,
        }
    }

    /// Dimension of the generated vectors.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Appends the next document's token rows to `out` and returns its token count, or
    /// `None` once the spec's `n_docs` documents have been generated.
    pub fn next_doc(&mut self, out: &mut Vec<f32>) -> Option<usize> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let dim = self.dim;
        let rng = &mut self.rng;
        let mine: Vec<usize> = (0..self.clusters_per_doc)
            .map(|_| match &self.popularity {
                Some(p) => p.sample(rng),
                None => 0,
            })
            .collect();
        let len = rng.random_range(self.lens.0..=self.lens.1);
        for _ in 0..len {
            let c = mine[rng.random_range(0..mine.len())];
            let mut t = gaussian(rng, dim, self.noise);
            for (x, &m) in t.iter_mut().zip(&self.centers[c * dim..(c + 1) * dim]) {
                *x += m;
            }
            for (x, &g) in t.iter_mut().zip(&self.shared) {
                *x += g;
            }
            normalise(&mut t);
            out.extend(t);
        }
        Some(len)
    }
}

impl SyntheticCorpus {
    /// Generates a corpus; the same spec always gives the same corpus.
    pub fn generate(spec: &SyntheticSpec) -> Self {
        let mut stream = SyntheticStream::new(spec);
        let mut flat = Vec::new();
        let mut offsets = vec![0usize];
        while let Some(len) = stream.next_doc(&mut flat) {
            offsets.push(offsets[offsets.len() - 1] + len);
        }
        SyntheticCorpus {
            dim: stream.dim,
            flat,
            offsets,
            centers: stream.centers,
        }
    }

    /// Number of documents.
    pub fn n_docs(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Number of token rows.
    pub fn n_tokens(&self) -> usize {
        self.offsets[self.offsets.len() - 1]
    }

    /// Token rows of document `i`.
    pub fn doc(&self, i: usize) -> &[f32] {
        &self.flat[self.offsets[i] * self.dim..self.offsets[i + 1] * self.dim]
    }

    /// Number of cluster centres.
    pub fn n_clusters(&self) -> usize {
        self.centers.len() / self.dim
    }

    /// `n` queries of `query_tokens` rows each, derived from random source documents.
    pub fn queries(
        &self,
        n: usize,
        query_tokens: usize,
        query_noise: f32,
        seed: u64,
    ) -> Vec<Vec<f32>> {
        queries_from(
            self.n_docs(),
            self.dim,
            QuerySpec {
                n,
                tokens: query_tokens,
                noise: query_noise,
                seed,
            },
            |i| self.doc(i).to_vec(),
        )
    }
}

/// How [`queries_from`] derives queries.
#[derive(Clone, Copy, Debug)]
pub struct QuerySpec {
    /// Number of queries.
    pub n: usize,
    /// Rows per query.
    pub tokens: usize,
    /// Norm of the noise added to each row taken from the source document.
    pub noise: f32,
    /// Seed.
    pub seed: u64,
}

/// Queries derived from the documents of a corpus of `n_docs` documents, each fetched by
/// `doc(i)` (its token rows). Which documents are fetched and which random numbers are
/// drawn depend only on the documents' lengths, never on their values, so a caller that
/// cannot hold the corpus can run this once with zero-filled documents of the right lengths
/// to learn the sources, fetch those, and run it again for the same queries.
pub fn queries_from(
    n_docs: usize,
    dim: usize,
    spec: QuerySpec,
    mut doc: impl FnMut(usize) -> Vec<f32>,
) -> Vec<Vec<f32>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(spec.seed ^ 0x9e37_79b9_7f4a_7c15);
    (0..spec.n)
        .map(|_| {
            let src = rng.random_range(0..n_docs.max(1));
            let doc = doc(src);
            let rows = doc.len() / dim;
            let mut q = Vec::with_capacity(spec.tokens * dim);
            for _ in 0..spec.tokens {
                let r = rng.random_range(0..rows.max(1));
                let mut t = gaussian(&mut rng, dim, spec.noise);
                for (x, &v) in t.iter_mut().zip(&doc[r * dim..(r + 1) * dim]) {
                    *x += v;
                }
                normalise(&mut t);
                q.extend(t);
            }
            q
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_and_normalised() {
        let spec = SyntheticSpec {
            n_docs: 20,
            dim: 16,
            ..SyntheticSpec::default()
        };
        let a = SyntheticCorpus::generate(&spec);
        let b = SyntheticCorpus::generate(&spec);
        assert_eq!(a.flat, b.flat);
        let mut streamed = Vec::new();
        let mut stream = SyntheticStream::new(&spec);
        let mut lens = Vec::new();
        while let Some(len) = stream.next_doc(&mut streamed) {
            lens.push(len);
        }
        assert_eq!(streamed, a.flat, "the stream yields the generated corpus");
        assert_eq!(lens.len(), 20);
        assert_eq!(a.n_docs(), 20);
        for t in a.flat.chunks_exact(16) {
            let n: f32 = t.iter().map(|x| x * x).sum();
            assert!((n - 1.0).abs() < 1e-4);
        }
        for i in 0..20 {
            let len = a.doc(i).len() / 16;
            assert!((32..=256).contains(&len));
        }
    }
}
