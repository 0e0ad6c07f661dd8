//! Quick probe of the kernels' throughput on search-shaped products.
use std::time::Instant;
fn main() {
    let (nq, k, dim) = (32usize, 8192usize, 128usize);
    let q: Vec<f32> = (0..nq * dim).map(|i| (i % 7) as f32 * 0.1).collect();
    let c: Vec<f32> = (0..k * dim).map(|i| (i % 11) as f32 * 0.1).collect();
    let mut out = vec![0f32; nq * k];
    for _ in 0..3 {
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
}
