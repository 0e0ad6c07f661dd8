//! Quick probe of the kernels' throughput on search-shaped products.
use std::time::Instant;
fn main() {
    // `PROBE=rerank` runs only the re-ranking comparison (for `perf stat`, whose cycle
    // counts, unlike wall time, do not depend on what else the machine runs).
    let only_rerank = std::env::var("PROBE").is_ok_and(|v| v == "rerank");
    if std::env::var("PROBE").is_ok_and(|v| v == "centroids") {
        centroid_stage();
        return;
    }
    let (nq, k, dim) = (32usize, 8192usize, 128usize);
    let q: Vec<f32> = (0..nq * dim).map(|i| (i % 7) as f32 * 0.1).collect();
    let c: Vec<f32> = (0..k * dim).map(|i| (i % 11) as f32 * 0.1).collect();
    let mut out = vec![0f32; nq * k];
    for _ in 0..if only_rerank { 0 } else { 3 } {
        let t = Instant::now();
        for _ in 0..20 {
            tessera_kernels::matmul_nt(&q, &c, dim, &mut out, 1);
        }
        let s = t.elapsed().as_secs_f64() / 20.0;
        println!(
            "Q[32x128] x C[8192x128]^T: {:.2} ms, {:.1} GFLOP/s",
            s * 1e3,
            2.0 * (nq * k * dim) as f64 / s / 1e9
        );
    }
    // The search's orientation: the table laid out [centroid, query token].
    let mut t_q_c = f64::MAX;
    let mut t_c_q = f64::MAX;
    for _ in 0..20 {
        let t = Instant::now();
        tessera_kernels::matmul_nt(&q, &c, dim, &mut out, 1);
        t_q_c = t_q_c.min(t.elapsed().as_secs_f64());
        let t = Instant::now();
        tessera_kernels::matmul_nt(&c, &q, dim, &mut out, 1);
        t_c_q = t_c_q.min(t.elapsed().as_secs_f64());
    }
    println!(
        "min of 20: out [32, 8192] {:.2} ms; out [8192, 32] {:.2} ms",
        t_q_c * 1e3,
        t_c_q * 1e3
    );
    let d: Vec<f32> = (0..4096 * dim).map(|i| (i % 5) as f32 * 0.1).collect();
    let mut sc = vec![0f32; 20];
    let offs: Vec<usize> = (0..=20).map(|i| i * 4096 / 20).collect();
    let t = Instant::now();
    for _ in 0..20 {
        tessera_kernels::maxsim_many(&q, &d, &offs, dim, &mut sc);
    }
    let s = t.elapsed().as_secs_f64() / 20.0;
    println!(
        "maxsim_many 4096 rows: {:.2} ms, {:.1} GFLOP/s",
        s * 1e3,
        2.0 * (nq * 4096 * dim) as f64 / s / 1e9
    );
    let cut: Vec<f32> = (0..dim * 3).map(|i| (i % 3) as f32 * 0.1 - 0.1).collect();
    let w: Vec<f32> = (0..dim * 4).map(|i| (i % 4) as f32 * 0.1 - 0.15).collect();
    let codec = tessera_kernels::ResidualCodec::new(dim, 2, &cut, &w);
    let packed = vec![0x1bu8; 25_600 * 32];
    let mut out = vec![0f32; 25_600 * dim];
    out.fill(1.0);
    let t = Instant::now();
    for tok in 0..25_600 {
        codec.decode(
            &c[(tok % k) * dim..(tok % k + 1) * dim],
            &packed[tok * 32..(tok + 1) * 32],
            &mut out[tok * dim..(tok + 1) * dim],
        );
    }
    println!(
        "decode 25.6K tokens: {:.2} ms",
        t.elapsed().as_secs_f64() * 1e3
    );

    // Exact re-ranking of 128 documents x 200 tokens: decompress + GEMM against the
    // residual-table path (QueryLut), on pseudo-random codes and residual bytes.
    let (n_docs, per_doc) = (128usize, 200usize);
    let n_tok = n_docs * per_doc;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let codes: Vec<u32> = (0..n_tok).map(|_| (next() % k as u64) as u32).collect();
    let packed: Vec<u8> = (0..n_tok * 32).map(|_| next() as u8).collect();
    let offs: Vec<usize> = (0..=n_docs).map(|i| i * per_doc).collect();
    let mut scores = vec![0f32; n_docs];
    // Minimum over repetitions: on a shared machine the minimum is the run that was not
    // descheduled, so the two paths compare as the CPU would run them alone.
    let (mut gemm, mut build, mut lut_s) = (f64::MAX, f64::MAX, f64::MAX);
    let mut buf = vec![0f32; n_tok * dim];
    let mut check = 0f32;
    for _ in 0..20 {
        let t = Instant::now();
        for tok in 0..n_tok {
            let cc = codes[tok] as usize;
            codec.decode(
                &c[cc * dim..(cc + 1) * dim],
                &packed[tok * 32..(tok + 1) * 32],
                &mut buf[tok * dim..(tok + 1) * dim],
            );
        }
        tessera_kernels::maxsim_many(&q, &buf, &offs, dim, &mut scores);
        gemm = gemm.min(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let lut = tessera_kernels::QueryLut::new(&codec, &q);
        build = build.min(t.elapsed().as_secs_f64());
        let mut table = vec![0f32; k * lut.stride()];
        tessera_kernels::matmul_nt(&c, &q, dim, &mut table, 1);
        let t = Instant::now();
        check = 0.0;
        for d in 0..n_docs {
            let (lo, hi) = (offs[d], offs[d + 1]);
            let s = lut.maxsim(&table, &codes[lo..hi], &packed[lo * 32..hi * 32], None);
            check += (s - scores[d]).abs();
        }
        lut_s = lut_s.min(t.elapsed().as_secs_f64());
    }
    println!(
        "rerank {n_docs} docs x {per_doc} tokens (min of 20): decompress+GEMM {:.2} ms \
         ({:.0} ns/token), LUT build {:.3} ms + score {:.2} ms ({:.0} ns/token), \
         sum |diff| {check:.2e}",
        gemm * 1e3,
        gemm * 1e9 / n_tok as f64,
        build * 1e3,
        lut_s * 1e3,
        lut_s * 1e9 / n_tok as f64
    );
}

/// The centroid stage at 400K documents' size (65,536 centroids, dim 128, 32 query tokens):
/// `f32` GEMM against the `i8` paths, min of 20 each, same table layout `[centroid, token]`.
fn centroid_stage() {
    use tessera_kernels::{Int8Centroids, Int8Query, int8_paths_available, padded_tokens};
    let (nq, k, dim) = (32usize, 65_536usize, 128usize);
    let q: Vec<f32> = (0..nq * dim)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.01)
        .collect();
    let c: Vec<f32> = (0..k * dim)
        .map(|i| ((i * 53 % 97) as f32 - 48.0) * 0.01)
        .collect();
    let stride = padded_tokens(nq);
    let mut out = vec![0f32; k * stride];
    let min_ms = |f: &mut dyn FnMut()| {
        (0..20)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64() * 1e3
            })
            .fold(f64::MAX, f64::min)
    };
    let f32_ms = min_ms(&mut || tessera_kernels::matmul_nt(&c, &q, dim, &mut out, 1));
    println!("centroids {k} x {dim}, {nq} query tokens: f32 GEMM {f32_ms:.2} ms");
    let c8 = Int8Centroids::new(&c, dim);
    let mut q8 = Int8Query::default();
    let quant_ms = min_ms(&mut || q8.rebuild(&q, dim));
    println!("  quantising the query: {quant_ms:.3} ms");
    for path in int8_paths_available() {
        let ms = min_ms(&mut || {
            c8.scores_with(path, &q8, &mut out)
                .expect("an available path");
        });
        println!("  i8 {path:?}: {ms:.2} ms ({:.1}x)", f32_ms / ms);
    }
    let mut bytes = tessera_kernels::CentroidScores8::default();
    for path in int8_paths_available() {
        let ms = min_ms(&mut || {
            c8.scores_and_bytes_with(path, &q8, &mut out, &mut bytes)
                .expect("an available path");
        });
        println!("  i8 {path:?}, scores and byte table in one pass: {ms:.2} ms");
    }
    let sep_ms = min_ms(&mut || {
        c8.scores(&q8, &mut out);
        bytes.rebuild(&out, stride, nq);
    });
    println!("  i8 scores, then the byte table from them: {sep_ms:.2} ms");
}
