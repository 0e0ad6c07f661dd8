//! Plain scalar implementations: the oracle every fast path is tested against.
//! Written for obviousness, not speed.

/// Dot product.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Late-interaction score: for each query row, the best dot product with any document row,
/// summed. `query` is `[nq, dim]` and `doc` is `[nd, dim]`, row-major.
pub fn maxsim(query: &[f32], doc: &[f32], dim: usize) -> f32 {
    query
        .chunks_exact(dim)
        .map(|q| {
            doc.chunks_exact(dim)
                .map(|d| dot(q, d))
                .fold(f32::NEG_INFINITY, f32::max)
        })
        .sum()
}

/// Index of the nearest center (squared L2) for every point; ties go to the lower index.
pub fn nearest(points: &[f32], centers: &[f32], dim: usize) -> Vec<u32> {
    points
        .chunks_exact(dim)
        .map(|p| {
            let mut best = (f32::INFINITY, 0u32);
            for (j, c) in centers.chunks_exact(dim).enumerate() {
                let d: f32 = p.iter().zip(c).map(|(x, y)| (x - y) * (x - y)).sum();
                if d < best.0 {
                    best = (d, j as u32);
                }
            }
            best.1
        })
        .collect()
}

/// Indices of the `k` largest values, best first; equal values in index order.
pub fn top_k(values: &[f32], k: usize) -> Vec<u32> {
    let mut idx: Vec<u32> = (0..values.len() as u32).collect();
    idx.sort_by(|&a, &b| {
        values[b as usize]
            .total_cmp(&values[a as usize])
            .then(a.cmp(&b))
    });
    idx.truncate(k);
    idx
}
