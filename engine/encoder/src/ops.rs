//! Numeric kernels of the forward pass: dense products through faer, and the elementwise
//! passes (bias, activation, residual + LayerNorm, softmax, L2 normalisation).
//!
//! Activations are row-major `[tokens, width]` `f32` buffers. Each elementwise kernel is the
//! body of a `pulp::WithSimd` implementation, which `pulp::Arch::dispatch` instantiates inside
//! a function compiled for AVX2+FMA when the CPU has it (plain SSE2 otherwise). The body is
//! `#[inline(always)]` and made of plain loops calling `#[inline(always)]` helpers, so it is
//! compiled under those target features and auto-vectorises, without `unsafe` or a
//! `target-cpu` flag. (A closure passed to `dispatch` is not enough: its body is a separate
//! function that LLVM may leave un-inlined, i.e. compiled for the baseline.) `f32::exp` and an
//! erf would be library calls that block vectorisation, so both have inline polynomial
//! versions here.

use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;

use crate::config::Activation;

/// Rows per parallel task in the elementwise passes: large enough to amortise scheduling,
/// small enough to balance two to sixteen threads on a typical batch.
const ROWS_PER_TASK: usize = 32;

/// Defines `fn name<'a>(args) { body }` whose body runs under runtime-selected SIMD target
/// features (see the module docs). Arguments must be `Copy` or references with lifetime `'a`.
macro_rules! simd_kernel {
    ($(#[$meta:meta])* $vis:vis fn $name:ident<'a>($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        $vis fn $name<'a>($($arg: $ty),*) {
            struct Kernel<'a> {
                $($arg: $ty,)*
                _lifetime: std::marker::PhantomData<&'a ()>,
            }
            impl<'a> pulp::WithSimd for Kernel<'a> {
                type Output = ();
                #[inline(always)]
                fn with_simd<S: pulp::Simd>(self, _simd: S) {
                    let Kernel { $($arg,)* .. } = self;
                    $body
                }
            }
            pulp::Arch::new().dispatch(Kernel {
                $($arg,)*
                _lifetime: std::marker::PhantomData,
            });
        }
    };
}

/// A linear layer `y = x · Wᵀ + b`, with `W` kept transposed.
#[derive(Debug, Clone)]
pub(crate) struct Linear {
    /// `Wᵀ` row-major `[in_dim, out_dim]`, i.e. `W` in column-major order: the layout in which
    /// faer multiplies without repacking the weight on every call.
    weight_t: Vec<f32>,
    pub(crate) bias: Option<Vec<f32>>,
    pub(crate) in_dim: usize,
    pub(crate) out_dim: usize,
}

impl Linear {
    /// Builds a layer from a PyTorch `nn.Linear` weight, row-major `[out_dim, in_dim]`.
    pub(crate) fn from_torch(
        weight: &[f32],
        bias: Option<Vec<f32>>,
        out_dim: usize,
        in_dim: usize,
    ) -> Self {
        debug_assert_eq!(weight.len(), out_dim * in_dim);
        let mut weight_t = vec![0.0; weight.len()];
        for (o, row) in weight.chunks_exact(in_dim).enumerate() {
            for (i, &w) in row.iter().enumerate() {
                weight_t[i * out_dim + o] = w;
            }
        }
        Self {
            weight_t,
            bias,
            in_dim,
            out_dim,
        }
    }

    /// Stacks layers sharing an input into one wider layer (fused Q/K/V projection).
    pub(crate) fn concat(parts: &[Linear]) -> Self {
        let in_dim = parts.first().map_or(0, |p| p.in_dim);
        let out_dim: usize = parts.iter().map(|p| p.out_dim).sum();
        let mut weight_t = Vec::with_capacity(in_dim * out_dim);
        for i in 0..in_dim {
            for p in parts {
                weight_t.extend_from_slice(&p.weight_t[i * p.out_dim..(i + 1) * p.out_dim]);
            }
        }
        let bias = parts.iter().all(|p| p.bias.is_some()).then(|| {
            parts
                .iter()
                .flat_map(|p| p.bias.iter().flatten().copied())
                .collect()
        });
        Self {
            weight_t,
            bias,
            in_dim,
            out_dim,
        }
    }

    /// `y[rows, out_dim] = x[rows, in_dim] · Wᵀ`, without the bias (callers fuse it into the
    /// following elementwise pass).
    pub(crate) fn forward_no_bias(&self, x: &[f32], rows: usize, y: &mut [f32], par: Par) {
        debug_assert_eq!(x.len(), rows * self.in_dim);
        debug_assert_eq!(y.len(), rows * self.out_dim);
        // Row-major activations are column-major transposes, so compute yᵀ = W · xᵀ.
        let w = MatRef::from_column_major_slice(&self.weight_t, self.out_dim, self.in_dim);
        let xt = MatRef::from_column_major_slice(x, self.in_dim, rows);
        let yt = MatMut::from_column_major_slice_mut(y, self.out_dim, rows);
        faer::linalg::matmul::matmul(yt, Accum::Replace, w, xt, 1.0f32, par);
    }
}

/// LayerNorm parameters.
#[derive(Debug, Clone)]
pub(crate) struct LayerNorm {
    pub(crate) gamma: Vec<f32>,
    pub(crate) beta: Vec<f32>,
    pub(crate) eps: f32,
}

impl LayerNorm {
    /// Normalises one row in place.
    #[inline(always)]
    fn apply(&self, row: &mut [f32]) {
        let n = row.len() as f32;
        let mean = sum(row) / n;
        let mut var = 0.0f32;
        // Eight partial sums keep the reduction vectorisable (f32 addition is not associative,
        // so the compiler will not reorder a single accumulator).
        let mut acc = [0.0f32; 8];
        let mut chunks = row.chunks_exact(8);
        for c in &mut chunks {
            for k in 0..8 {
                let d = c[k] - mean;
                acc[k] += d * d;
            }
        }
        for &v in chunks.remainder() {
            var += (v - mean) * (v - mean);
        }
        var += acc.iter().sum::<f32>();
        let inv = 1.0 / (var / n + self.eps).sqrt();
        for ((v, g), b) in row.iter_mut().zip(&self.gamma).zip(&self.beta) {
            *v = (*v - mean) * inv * g + b;
        }
    }
}

#[inline(always)]
fn sum(v: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut chunks = v.chunks_exact(8);
    for c in &mut chunks {
        for k in 0..8 {
            acc[k] += c[k];
        }
    }
    chunks.remainder().iter().sum::<f32>() + acc.iter().sum::<f32>()
}

/// Applies `f` to matching row blocks of `a` (rows of `a_width`) and `b` (rows of `b_width`),
/// in parallel on the current rayon pool when `parallel` is set.
fn for_row_blocks<F>(
    parallel: bool,
    a: &mut [f32],
    a_width: usize,
    b: &mut [f32],
    b_width: usize,
    f: F,
) where
    F: Fn(&mut [f32], &mut [f32]) + Sync + Send,
{
    let ca = a_width * ROWS_PER_TASK;
    let cb = b_width * ROWS_PER_TASK;
    if parallel {
        a.par_chunks_mut(ca)
            .zip(b.par_chunks_mut(cb))
            .for_each(|(x, y)| f(x, y));
    } else {
        a.chunks_mut(ca)
            .zip(b.chunks_mut(cb))
            .for_each(|(x, y)| f(x, y));
    }
}

/// Applies `f` to row blocks of `a` (rows of `width`), in parallel when `parallel` is set.
fn for_rows<F>(parallel: bool, a: &mut [f32], width: usize, f: F)
where
    F: Fn(&mut [f32]) + Sync + Send,
{
    let ca = width * ROWS_PER_TASK;
    if parallel {
        a.par_chunks_mut(ca).for_each(&f);
    } else {
        a.chunks_mut(ca).for_each(&f);
    }
}

simd_kernel! {
    /// `y[r] += bias` for every row of `y`.
    fn add_bias_kernel<'a>(y: &'a mut [f32], bias: &'a [f32]) {
        for row in y.chunks_exact_mut(bias.len()) {
            for (v, b) in row.iter_mut().zip(bias) {
                *v += b;
            }
        }
    }
}

/// Adds `bias` to every row of `y`.
pub(crate) fn add_bias(parallel: bool, y: &mut [f32], bias: &[f32]) {
    for_rows(parallel, y, bias.len(), |block| {
        add_bias_kernel(block, bias)
    });
}

simd_kernel! {
    /// `y = act(y + bias)` for rows of `width`.
    fn bias_activation_kernel<'a>(
        y: &'a mut [f32],
        bias: Option<&'a [f32]>,
        width: usize,
        act: Activation,
    ) {
        for row in y.chunks_exact_mut(width) {
            if let Some(bias) = bias {
                for (v, b) in row.iter_mut().zip(bias) {
                    *v += b;
                }
            }
            match act {
                Activation::GeluErf => {
                    for v in row.iter_mut() {
                        *v = gelu_erf(*v);
                    }
                }
                Activation::GeluTanh => {
                    for v in row.iter_mut() {
                        *v = gelu_tanh(*v);
                    }
                }
                Activation::Relu => {
                    for v in row.iter_mut() {
                        *v = v.max(0.0);
                    }
                }
            }
        }
    }
}

/// `y = act(y + bias)` row by row (the feed-forward up-projection epilogue).
pub(crate) fn bias_activation(
    parallel: bool,
    y: &mut [f32],
    bias: Option<&[f32]>,
    width: usize,
    act: Activation,
) {
    for_rows(parallel, y, width, |block| {
        bias_activation_kernel(block, bias, width, act)
    });
}

simd_kernel! {
    /// `x = LayerNorm(x + y + bias)` for rows of `ln`'s width.
    fn residual_layernorm_kernel<'a>(
        x: &'a mut [f32],
        y: &'a [f32],
        bias: Option<&'a [f32]>,
        ln: &'a LayerNorm,
    ) {
        let width = ln.gamma.len();
        for (xr, yr) in x.chunks_exact_mut(width).zip(y.chunks_exact(width)) {
            match bias {
                Some(bias) => {
                    for ((xv, yv), b) in xr.iter_mut().zip(yr).zip(bias) {
                        *xv += yv + b;
                    }
                }
                None => {
                    for (xv, yv) in xr.iter_mut().zip(yr) {
                        *xv += yv;
                    }
                }
            }
            ln.apply(xr);
        }
    }
}

/// `x = LayerNorm(y + bias + x)`: the post-norm residual of every BERT sub-layer.
pub(crate) fn residual_layernorm(
    parallel: bool,
    x: &mut [f32],
    y: &mut [f32],
    bias: Option<&[f32]>,
    ln: &LayerNorm,
) {
    let width = ln.gamma.len();
    for_row_blocks(parallel, x, width, y, width, |xb, yb| {
        residual_layernorm_kernel(xb, yb, bias, ln)
    });
}

simd_kernel! {
    /// LayerNorm of every row.
    fn layernorm_kernel<'a>(x: &'a mut [f32], ln: &'a LayerNorm) {
        for row in x.chunks_exact_mut(ln.gamma.len()) {
            ln.apply(row);
        }
    }
}

/// LayerNorm of every row of `x` in place.
pub(crate) fn layernorm_rows(parallel: bool, x: &mut [f32], ln: &LayerNorm) {
    let width = ln.gamma.len();
    for_rows(parallel, x, width, |block| layernorm_kernel(block, ln));
}

simd_kernel! {
    /// Softmax of every row of `x` (rows of `width`) in place.
    pub(crate) fn softmax_rows<'a>(x: &'a mut [f32], width: usize) {
        for row in x.chunks_exact_mut(width) {
            softmax_in_place(row);
        }
    }
}

/// Softmax of `row` in place.
#[inline(always)]
fn softmax_in_place(row: &mut [f32]) {
    let mut max = [f32::NEG_INFINITY; 8];
    let mut chunks = row.chunks_exact(8);
    for c in &mut chunks {
        for k in 0..8 {
            max[k] = max[k].max(c[k]);
        }
    }
    let mut m = f32::NEG_INFINITY;
    for &v in chunks.remainder() {
        m = m.max(v);
    }
    for v in max {
        m = m.max(v);
    }
    for v in row.iter_mut() {
        *v = exp_f32(*v - m);
    }
    let inv = 1.0 / sum(row);
    for v in row.iter_mut() {
        *v *= inv;
    }
}

simd_kernel! {
    /// Scales every row of `x` (rows of `width`) to unit L2 norm, as
    /// `torch.nn.functional.normalize` does (the norm is clamped at 1e-12 so a zero row stays
    /// zero).
    pub(crate) fn l2_normalize_rows<'a>(x: &'a mut [f32], width: usize) {
        for row in x.chunks_exact_mut(width) {
            let mut acc = [0.0f32; 8];
            let mut chunks = row.chunks_exact(8);
            for c in &mut chunks {
                for k in 0..8 {
                    acc[k] += c[k] * c[k];
                }
            }
            let mut sq = 0.0f32;
            for v in chunks.remainder() {
                sq += v * v;
            }
            for v in acc {
                sq += v;
            }
            let inv = 1.0 / sq.sqrt().max(1e-12);
            for v in row.iter_mut() {
                *v *= inv;
            }
        }
    }
}

simd_kernel! {
    /// `y = y + bias` and, if `tanh`, `y = tanh(y)`, for rows of `width` (Dense epilogue).
    pub(crate) fn bias_tanh_rows<'a>(y: &'a mut [f32], bias: Option<&'a [f32]>, width: usize, tanh: bool) {
        for row in y.chunks_exact_mut(width) {
            if let Some(bias) = bias {
                for (v, b) in row.iter_mut().zip(bias) {
                    *v += b;
                }
            }
            if tanh {
                for v in row.iter_mut() {
                    *v = tanh_f32(*v);
                }
            }
        }
    }
}

/// `e^x` for `f32`, branch-free so that it vectorises: Cody–Waite range reduction to
/// `r ∈ [-ln2/2, ln2/2]`, Cephes' degree-6 polynomial, and an exponent-bit scale. Relative error
/// ≲ 2 ulp over the whole range; inputs below -87.3 flush to ~1e-38 rather than 0, which is
/// harmless for softmax.
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5·2^23 rounds to the nearest integer without a library call.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.3, 88.7);
    let shifted = x * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    // 2^n from the exponent bits. After `+ ROUND` the low mantissa bits of `shifted` hold n in
    // two's complement (offset by ROUND's own bits), which avoids a float→int conversion that
    // LLVM will not vectorise. n ∈ [-126, 128) because x ∈ [-87.3, 88.7].
    let n_bits = shifted.to_bits().wrapping_sub(ROUND.to_bits());
    let scale = f32::from_bits(n_bits.wrapping_add(127) << 23);
    e * scale
}

/// erf for `f32`: a rational minimax approximation on [-4, 4] (the one Eigen uses), saturating
/// beyond, where |1 - erf| < 2e-8. Max abs error ≈ 4e-7, the same order as PyTorch's own
/// vectorised erf, and vectorisable (no library calls).
#[inline(always)]
pub(crate) fn erf_f32(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10f32;
    p = p * x2 + 2.770_681_4e-8;
    p = p * x2 - 2.101_024e-6;
    p = p * x2 - 5.692_506_4e-5;
    p = p * x2 - 7.349_906_3e-4;
    p = p * x2 - 2.954_6e-3;
    p = p * x2 - 1.609_603_3e-2;
    let mut q = -1.456_607_2e-5f32;
    q = q * x2 - 2.133_740_6e-4;
    q = q * x2 - 1.682_827e-3;
    q = q * x2 - 7.373_329e-3;
    q = q * x2 - 1.426_474e-2;
    x * p / q
}

/// BERT's GELU: `x · Φ(x) = x/2 · (1 + erf(x/√2))`.
#[inline(always)]
pub(crate) fn gelu_erf(x: f32) -> f32 {
    0.5 * x * (1.0 + erf_f32(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// The tanh approximation of GELU (`gelu_new`).
#[inline(always)]
pub(crate) fn gelu_tanh(x: f32) -> f32 {
    const C: f32 = 0.797_884_6; // sqrt(2/π)
    let u = C * (x + 0.044_715 * x * x * x);
    0.5 * x * (1.0 + tanh_f32(u))
}

/// `tanh(x) = 1 - 2 / (e^{2x} + 1)`, vectorisable unlike `f32::tanh`.
#[inline(always)]
pub(crate) fn tanh_f32(x: f32) -> f32 {
    1.0 - 2.0 / (exp_f32(2.0 * x) + 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// erf in f64 from the everywhere-positive series `2/√π · e^{-x²} · Σ 2ⁿ x^{2n+1} / (2n+1)!!`,
    /// accurate to ~1e-15 for |x| ≤ 6 (no cancellation).
    fn erf_reference(x: f64) -> f64 {
        let mut term = x;
        let mut total = x;
        for n in 1..200 {
            term *= 2.0 * x * x / (2 * n + 1) as f64;
            total += term;
        }
        2.0 / std::f64::consts::PI.sqrt() * (-x * x).exp() * total
    }

    #[test]
    fn exp_f32_is_within_three_ulp_of_f64_exp() {
        let mut worst = 0.0f64;
        for i in -87_000..88_000 {
            let x = i as f32 / 1000.0 + 0.000_37;
            let exact = (x as f64).exp();
            let rel = ((exp_f32(x) as f64 - exact) / exact).abs();
            worst = worst.max(rel);
        }
        assert!(
            worst < 3.0 * f32::EPSILON as f64,
            "worst relative error {worst}"
        );
    }

    #[test]
    fn erf_f32_is_within_5e7_of_exact_erf() {
        let mut worst = 0.0f64;
        for i in -6000..=6000 {
            let x = i as f32 / 1000.0;
            worst = worst.max((erf_f32(x) as f64 - erf_reference(x as f64)).abs());
        }
        assert!(worst < 5e-7, "worst abs error {worst}");
    }

    #[test]
    fn softmax_sums_to_one_and_preserves_order() {
        let mut row = vec![1.0, 3.0, -2.0, 0.5, 10.0, -50.0, 2.0, 2.0, 7.0];
        let expected: Vec<f64> = {
            let m = 10.0f64;
            let e: Vec<f64> = row.iter().map(|&v: &f32| (v as f64 - m).exp()).collect();
            let s: f64 = e.iter().sum();
            e.iter().map(|v| v / s).collect()
        };
        softmax_in_place(&mut row);
        for (got, want) in row.iter().zip(&expected) {
            assert!((*got as f64 - want).abs() < 1e-7, "{got} vs {want}");
        }
    }

    #[test]
    fn linear_forward_matches_naive_product() {
        let (out_dim, in_dim, rows) = (5, 7, 3);
        let w: Vec<f32> = (0..out_dim * in_dim)
            .map(|i| (i as f32 * 0.37).sin())
            .collect();
        let x: Vec<f32> = (0..rows * in_dim)
            .map(|i| (i as f32 * 0.11).cos())
            .collect();
        let lin = Linear::from_torch(&w, None, out_dim, in_dim);
        let mut y = vec![0.0; rows * out_dim];
        lin.forward_no_bias(&x, rows, &mut y, Par::Seq);
        for r in 0..rows {
            for o in 0..out_dim {
                let want: f32 = (0..in_dim)
                    .map(|i| x[r * in_dim + i] * w[o * in_dim + i])
                    .sum();
                assert!((y[r * out_dim + o] - want).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn fused_linear_equals_separate_layers() {
        let a = Linear::from_torch(&[1.0, 2.0, 3.0, 4.0], Some(vec![0.5, 0.5]), 2, 2);
        let b = Linear::from_torch(&[5.0, 6.0], Some(vec![1.0]), 1, 2);
        let fused = Linear::concat(&[a, b]);
        let mut y = vec![0.0; 3];
        fused.forward_no_bias(&[1.0, 1.0], 1, &mut y, Par::Seq);
        assert_eq!(y, vec![3.0, 7.0, 11.0]);
        assert_eq!(fused.bias, Some(vec![0.5, 0.5, 1.0]));
    }

    #[test]
    fn l2_normalize_leaves_zero_rows_at_zero() {
        let mut x = vec![3.0, 4.0, 0.0, 0.0];
        l2_normalize_rows(&mut x, 2);
        assert_eq!(x, vec![0.6, 0.8, 0.0, 0.0]);
    }
}
