//! Device selection, CPU fallback and GPU/CPU parity.
//!
//! The first tests run everywhere and check what this machine actually has: without a
//! usable GPU, `auto` must search on the CPU (with the reason recorded) and give exactly the
//! CPU's answers, and `cuda` must fail clearly. The parity matrix needs a CUDA device; it is
//! `#[ignore]`d so a machine without one lists it as ignored rather than passing it, and
//! `scripts/gpu-check.sh` runs it (and compute-sanitizer on the small case) on a GPU
//! machine. Each of its 24 configurations (random/clustered, dim 96/128/768, nbits
//! 1/2/4/8, with 1-token and >= 1,024-token documents and 1-token queries) is searched at
//! k 1/10/100 under ten settings (filters down each filtered path among them), one by one
//! and batched, then again after deletes across two segments, then on the snapshot from
//! before them. `TESSERA_GPU_TEST_DEVICE=auto` runs the same matrix against the CPU
//! fallback, which checks the matrix's own logic on a machine without a GPU.

use rand::{Rng, SeedableRng};
use tessera::synthetic::{SyntheticCorpus, SyntheticSpec};
use tessera::{
    Collection, CollectionConfig, Database, Device, Document, Error, ExternalId, Filter, Hit,
    IngestOptions, ResolvedDevice, SearchParams, resolve_device,
};

/// Documents of a test corpus: clustered (the synthetic generator) or uniform random, with
/// 1-token documents and long (>= 1,024 tokens) ones mixed in.
fn corpus(dim: usize, clustered: bool, n_docs: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut docs: Vec<Vec<f32>> = if clustered {
        let c = SyntheticCorpus::generate(&SyntheticSpec {
            n_docs,
            dim,
            min_tokens: 1,
            max_tokens: 48,
            n_clusters: 64,
            seed,
            ..SyntheticSpec::default()
        });
        (0..c.n_docs()).map(|i| c.doc(i).to_vec()).collect()
    } else {
        (0..n_docs)
            .map(|_| {
                let len = rng.random_range(1..48);
                unit_rows(&mut rng, len, dim)
            })
            .collect()
    };
    for d in &mut docs[..4] {
        *d = unit_rows(&mut rng, 1, dim);
    }
    for d in &mut docs[4..6] {
        let len = 1024 + rng.random_range(0..64);
        *d = unit_rows(&mut rng, len, dim);
    }
    docs
}

fn unit_rows(rng: &mut impl Rng, rows: usize, dim: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..rows * dim)
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();
    for r in v.chunks_exact_mut(dim) {
        let n = r.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
        r.iter_mut().for_each(|x| *x /= n);
    }
    v
}

fn collection(
    dir: &std::path::Path,
    docs: &[Vec<f32>],
    dim: usize,
    nbits: u32,
) -> (Database, Collection) {
    let db = Database::open_or_create(dir).expect("open database");
    let coll = db
        .create_collection(
            "c",
            CollectionConfig::new(dim as u32)
                .with_nbits(nbits)
                .with_n_centroids(128),
        )
        .expect("create collection");
    ingest_numbered(&coll, docs);
    (db, coll)
}

/// Ingests `docs` with ids `0..n`, each with metadata `bucket` = id mod 10 (filters of
/// 10% and 50% selectivity).
fn ingest_numbered(coll: &tessera::Collection, docs: &[Vec<f32>]) {
    ingest_from(coll, docs, 0);
}

fn ingest_from(coll: &tessera::Collection, docs: &[Vec<f32>], first: u64) {
    let batch: Vec<Document> = docs
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let id = first + i as u64;
            Document::new(id, v.clone()).with_metadata(serde_json::json!({ "bucket": id % 10 }))
        })
        .collect();
    coll.ingest(&batch, &IngestOptions::default())
        .expect("ingest");
}

/// Queries: 1-token, 32-token, and one taken from a long document.
fn queries(docs: &[Vec<f32>], dim: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x5eed);
    let mut qs = vec![unit_rows(&mut rng, 1, dim), unit_rows(&mut rng, 32, dim)];
    for _ in 0..3 {
        let src = &docs[rng.random_range(0..docs.len())];
        let rows = src.len() / dim;
        let mut q = Vec::new();
        for _ in 0..32 {
            let r = rng.random_range(0..rows);
            q.extend_from_slice(&src[r * dim..(r + 1) * dim]);
        }
        qs.push(q);
    }
    qs.push(docs[4][..(32 * dim).min(docs[4].len())].to_vec());
    qs
}

/// The parity rule: equal length; scores within 1e-4 relative position by position; ids
/// equal except where the CPU's scores tie (within the same tolerance).
fn assert_parity(what: &str, cpu: &[Hit], gpu: &[Hit]) {
    let tol = |s: f32| 1e-4 * s.abs().max(1.0);
    assert_eq!(cpu.len(), gpu.len(), "{what}: result counts differ");
    for (i, (c, g)) in cpu.iter().zip(gpu).enumerate() {
        assert!(
            (c.score - g.score).abs() <= tol(c.score),
            "{what}: rank {i}: CPU {} {} vs GPU {} {}",
            c.id,
            c.score,
            g.id,
            g.score
        );
        if c.id != g.id {
            let tied = cpu
                .iter()
                .any(|o| o.id == g.id && (o.score - c.score).abs() <= tol(c.score))
                || (i + 1 == cpu.len()
                    || (cpu[cpu.len() - 1].score - g.score).abs() <= tol(g.score));
            assert!(
                tied,
                "{what}: rank {i}: CPU has {} ({}), GPU has {} ({}), not a tie",
                c.id, c.score, g.id, g.score
            );
        }
    }
}

/// The device the parity matrix tests: `cuda:0`, or `TESSERA_GPU_TEST_DEVICE` (e.g. `auto`
/// on a machine without a GPU, to check the matrix's own logic against the CPU fallback).
fn device_under_test() -> Device {
    std::env::var("TESSERA_GPU_TEST_DEVICE")
        .ok()
        .map_or(Device::Cuda(0), |d| {
            d.parse().expect("TESSERA_GPU_TEST_DEVICE")
        })
}

fn search(coll: &Collection, q: &[f32], k: usize, p: &SearchParams) -> Vec<Hit> {
    coll.search(q, k, p).expect("search")
}

#[test]
fn auto_device_without_a_usable_gpu_searches_on_the_cpu_with_identical_results() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dim = 32;
    let docs = corpus(dim, true, 120, 7);
    let (_db, coll) = collection(dir.path(), &docs, dim, 2);
    let resolved = resolve_device(Device::Auto).expect("auto always resolves");
    println!("auto resolves to: {resolved}");
    let cpu = SearchParams::default().with_device(Device::Cpu);
    let auto = SearchParams::default().with_device(Device::Auto);
    for (qi, q) in queries(&docs, dim, 7).iter().enumerate() {
        let a = search(&coll, q, 10, &auto);
        let c = search(&coll, q, 10, &cpu);
        match &resolved {
            ResolvedDevice::Cpu { reason } => {
                let reason = reason.as_deref().expect("auto on the CPU says why");
                assert!(!reason.is_empty());
                // The same code path: bit-identical answers.
                assert_eq!(a, c, "query {qi}");
            }
            ResolvedDevice::Cuda { .. } => assert_parity(&format!("query {qi}"), &c, &a),
        }
    }
    if let ResolvedDevice::Cpu { reason } = &resolved {
        let reason = reason.as_deref().unwrap_or_default();
        if !tessera_kernels::gpu::driver_present() {
            assert!(
                reason.contains("driver"),
                "without libcuda the reason names the driver: {reason}"
            );
        }
    }
    assert_eq!(
        resolve_device(Device::Cpu).expect("cpu"),
        ResolvedDevice::Cpu { reason: None }
    );
}

#[test]
fn explicit_cuda_device_that_cannot_be_used_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dim = 16;
    let docs = corpus(dim, false, 40, 3);
    let (_db, coll) = collection(dir.path(), &docs, dim, 2);
    let q = &docs[7];
    // No machine has device 99.
    let mut asks = vec![Device::Cuda(99)];
    if matches!(resolve_device(Device::Auto), Ok(ResolvedDevice::Cpu { .. })) {
        asks.push(Device::Cuda(0));
    }
    for dev in asks {
        let err = coll
            .search(q, 5, &SearchParams::default().with_device(dev))
            .expect_err("an unusable CUDA device must not silently use the CPU");
        let msg = err.to_string();
        assert!(matches!(err, Error::Device { .. }), "{msg}");
        assert!(msg.starts_with(&format!("device {dev}: ")), "{msg}");
        let batch = coll.search_batch(
            std::slice::from_ref(q),
            5,
            &SearchParams::default().with_device(dev),
        );
        assert!(matches!(batch, Err(Error::Device { .. })));
        assert!(matches!(resolve_device(dev), Err(Error::Device { .. })));
    }
}

/// The settings each configuration of the matrix is searched with: the defaults, refine
/// off, few and all probes, exhaustive, and filters down each of the CPU's filtered paths
/// that runs device stages (scaled probes over the postings; every match estimated; the
/// exact path over originals stays on the CPU).
fn settings(n_docs: usize) -> Vec<(&'static str, SearchParams)> {
    let tenth = || Filter::eq("bucket", 3i64);
    let half = || Filter::range("bucket", tessera::Cmp::Lt, 5i64);
    vec![
        ("default", SearchParams::default()),
        ("refine off", SearchParams::default().with_n_refine(0)),
        ("nprobe 2", SearchParams::default().with_nprobe(2)),
        (
            "all probed, all re-ranked",
            SearchParams::default()
                .with_nprobe(1 << 20)
                .with_n_rerank(n_docs),
        ),
        ("exhaustive", SearchParams::exhaustive()),
        (
            "filter 10%, scaled probes",
            SearchParams::default()
                .with_filter(tenth())
                .with_filter_exact(0)
                .with_filter_scan(0),
        ),
        (
            "filter 10%, every match estimated",
            SearchParams::default()
                .with_filter(tenth())
                .with_filter_exact(0)
                .with_filter_scan(usize::MAX),
        ),
        (
            "filter 50%",
            SearchParams::default()
                .with_filter(half())
                .with_filter_exact(0),
        ),
        (
            "filter 10%, exhaustive",
            SearchParams::exhaustive()
                .with_filter(tenth())
                .with_filter_exact(0),
        ),
        (
            "filter 10%, exact over originals",
            SearchParams::default().with_filter(tenth()),
        ),
    ]
}

/// One search of a view (collection or snapshot) and a batch of them.
type OneSearch<'a> = dyn Fn(&[f32], usize, &SearchParams) -> Vec<Hit> + 'a;
type BatchSearch<'a> = dyn Fn(&[Vec<f32>], usize, &SearchParams) -> Vec<Vec<Hit>> + 'a;

/// Every setting, k and query on the CPU and the device (one by one and batched).
fn compare_all(
    what: &str,
    search_in: &OneSearch<'_>,
    batch_in: &BatchSearch<'_>,
    qs: &[Vec<f32>],
    n_docs: usize,
) {
    let gpu = device_under_test();
    for (name, p) in &settings(n_docs) {
        for k in [1, 10, 100] {
            let cpu: Vec<Vec<Hit>> = qs
                .iter()
                .map(|q| search_in(q, k, &p.clone().with_device(Device::Cpu)))
                .collect();
            for (qi, q) in qs.iter().enumerate() {
                let g = search_in(q, k, &p.clone().with_device(gpu));
                assert_parity(&format!("{what} {name} k {k} query {qi}"), &cpu[qi], &g);
            }
            // Batched launches give the one-by-one answers.
            let batch = batch_in(qs, k, &p.clone().with_device(gpu));
            for (qi, b) in batch.iter().enumerate() {
                assert_parity(
                    &format!("{what} batch {name} k {k} query {qi}"),
                    &cpu[qi],
                    b,
                );
            }
        }
    }
}

fn parity_case(clustered: bool, dim: usize, nbits: u32) {
    let dir = tempfile::tempdir().expect("tempdir");
    let seed = (dim as u64) * 10 + u64::from(nbits) + u64::from(clustered) * 1000;
    let docs = corpus(dim, clustered, 400, seed);
    let (_db, coll) = collection(dir.path(), &docs, dim, nbits);
    let what = format!(
        "{} dim {dim} nbits {nbits}",
        if clustered { "clustered" } else { "random" }
    );
    let qs = queries(&docs, dim, seed);
    // The collection keeps f16 originals (the default), so every setting but "refine off"
    // also checks the refine stage the host runs on the device's candidates.
    let one = |q: &[f32], k: usize, p: &SearchParams| search(&coll, q, k, p);
    let many =
        |qs: &[Vec<f32>], k: usize, p: &SearchParams| coll.search_batch(qs, k, p).expect("batch");
    compare_all(&what, &one, &many, &qs, docs.len());
    // Deletes and a second segment (global ids cross a segment boundary; tombstones in
    // both), then the snapshot taken before them, which must still see the deleted ones.
    let before = coll.snapshot();
    let more = corpus(dim, clustered, 120, seed + 1);
    ingest_from(&coll, &more, 10_000);
    let mut victims: Vec<ExternalId> = (0..docs.len() as u64)
        .step_by(7)
        .map(ExternalId::from)
        .collect();
    victims.extend((10_000..10_120u64).step_by(5).map(ExternalId::from));
    victims.extend(
        search(
            &coll,
            &qs[2],
            3,
            &SearchParams::default().with_device(Device::Cpu),
        )
        .into_iter()
        .map(|h| h.id),
    );
    coll.delete(&victims).expect("delete");
    for q in &qs {
        let g = search(
            &coll,
            q,
            10,
            &SearchParams::default().with_device(device_under_test()),
        );
        assert!(
            g.iter().all(|h| !victims.contains(&h.id)),
            "{what}: a deleted document returned"
        );
    }
    compare_all(
        &format!("{what} after deletes"),
        &one,
        &many,
        &qs,
        docs.len() + more.len(),
    );
    let old_one =
        |q: &[f32], k: usize, p: &SearchParams| before.search(q, k, p).expect("old snapshot");
    let old_many = |qs: &[Vec<f32>], k: usize, p: &SearchParams| {
        before.search_batch(qs, k, p).expect("old snapshot batch")
    };
    compare_all(
        &format!("{what} old snapshot"),
        &old_one,
        &old_many,
        &qs,
        docs.len(),
    );
}

macro_rules! parity_tests {
    ($($name:ident: $clustered:expr, $dim:expr, $nbits:expr;)*) => {$(
        #[test]
        #[ignore = "needs a CUDA device: run scripts/gpu-check.sh on a GPU machine"]
        fn $name() {
            parity_case($clustered, $dim, $nbits);
        }
    )*};
}

parity_tests! {
    gpu_parity_random_dim96_nbits1: false, 96, 1;
    gpu_parity_random_dim96_nbits2: false, 96, 2;
    gpu_parity_random_dim96_nbits4: false, 96, 4;
    gpu_parity_random_dim96_nbits8: false, 96, 8;
    gpu_parity_random_dim128_nbits1: false, 128, 1;
    gpu_parity_random_dim128_nbits2: false, 128, 2;
    gpu_parity_random_dim128_nbits4: false, 128, 4;
    gpu_parity_random_dim128_nbits8: false, 128, 8;
    gpu_parity_random_dim768_nbits1: false, 768, 1;
    gpu_parity_random_dim768_nbits2: false, 768, 2;
    gpu_parity_random_dim768_nbits4: false, 768, 4;
    gpu_parity_random_dim768_nbits8: false, 768, 8;
    gpu_parity_clustered_dim96_nbits1: true, 96, 1;
    gpu_parity_clustered_dim96_nbits2: true, 96, 2;
    gpu_parity_clustered_dim96_nbits4: true, 96, 4;
    gpu_parity_clustered_dim96_nbits8: true, 96, 8;
    gpu_parity_clustered_dim128_nbits1: true, 128, 1;
    gpu_parity_clustered_dim128_nbits2: true, 128, 2;
    gpu_parity_clustered_dim128_nbits4: true, 128, 4;
    gpu_parity_clustered_dim128_nbits8: true, 128, 8;
    gpu_parity_clustered_dim768_nbits1: true, 768, 1;
    gpu_parity_clustered_dim768_nbits2: true, 768, 2;
    gpu_parity_clustered_dim768_nbits4: true, 768, 4;
    gpu_parity_clustered_dim768_nbits8: true, 768, 8;
}

#[test]
#[ignore = "needs a CUDA device: run scripts/gpu-check.sh on a GPU machine"]
fn gpu_parity_with_four_byte_codes() {
    // More than 65,536 centroids: the segment stores u32 codes, the other code path of the
    // approximate and re-ranking kernels.
    let dim = 16;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = rand::rngs::StdRng::seed_from_u64(77);
    let docs: Vec<Vec<f32>> = (0..3000)
        .map(|_| {
            let len = 24 + rng.random_range(0..8);
            unit_rows(&mut rng, len, dim)
        })
        .collect();
    let db = Database::open_or_create(dir.path()).expect("open database");
    let coll = db
        .create_collection(
            "c",
            CollectionConfig::new(dim as u32).with_n_centroids(66_000),
        )
        .expect("create collection");
    ingest_numbered(&coll, &docs);
    assert!(
        coll.info().centroids > 65_536,
        "the codec must need u32 codes"
    );
    for (name, p) in [
        ("default", SearchParams::default()),
        ("nprobe 32", SearchParams::default().with_nprobe(32)),
        ("exhaustive", SearchParams::exhaustive()),
    ] {
        for (qi, q) in queries(&docs, dim, 77).iter().enumerate() {
            let c = search(&coll, q, 10, &p.clone().with_device(Device::Cpu));
            let g = search(&coll, q, 10, &p.clone().with_device(device_under_test()));
            assert_parity(&format!("u32 codes {name} query {qi}"), &c, &g);
        }
    }
}

#[test]
#[ignore = "needs a CUDA device: run scripts/gpu-check.sh on a GPU machine"]
fn gpu_deletes_and_snapshots_behave_as_on_the_cpu() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dim = 128;
    let docs = corpus(dim, true, 300, 11);
    let (_db, coll) = collection(dir.path(), &docs, dim, 2);
    // A second batch: two segments, so global ids cross a segment boundary.
    let more: Vec<Document> = corpus(dim, true, 100, 12)
        .into_iter()
        .enumerate()
        .map(|(i, v)| Document::new(10_000 + i as u64, v))
        .collect();
    coll.ingest(&more, &IngestOptions::default())
        .expect("ingest");
    let q = docs[20][..dim.min(docs[20].len())].to_vec();
    let gpu = SearchParams::default().with_device(device_under_test());
    let cpu = SearchParams::default().with_device(Device::Cpu);
    let before = coll.snapshot();
    let top = search(&coll, &q, 10, &gpu);
    assert_parity("before delete", &search(&coll, &q, 10, &cpu), &top);
    let victims: Vec<ExternalId> = top.iter().take(3).map(|h| h.id.clone()).collect();
    coll.delete(&victims).expect("delete");
    let after = search(&coll, &q, 10, &gpu);
    assert!(
        after.iter().all(|h| !victims.contains(&h.id)),
        "deleted documents returned"
    );
    assert_parity("after delete", &search(&coll, &q, 10, &cpu), &after);
    let exhaustive = search(
        &coll,
        &q,
        10,
        &SearchParams::exhaustive().with_device(device_under_test()),
    );
    assert!(exhaustive.iter().all(|h| !victims.contains(&h.id)));
    // The snapshot taken before the delete still sees the deleted documents, on both paths.
    let old_gpu = before.search(&q, 10, &gpu).expect("old snapshot");
    let old_cpu = before.search(&q, 10, &cpu).expect("old snapshot");
    assert_parity("old snapshot", &old_cpu, &old_gpu);
    assert_eq!(old_gpu[0].id, top[0].id);
}

#[test]
#[ignore = "needs a CUDA device and TESSERA_GPU_MEMORY_BUDGET=4096: run scripts/gpu-check.sh"]
fn gpu_over_budget_is_an_error_for_cuda_and_a_cpu_fallback_for_auto() {
    assert_eq!(
        std::env::var("TESSERA_GPU_MEMORY_BUDGET").ok().as_deref(),
        Some("4096"),
        "run this test alone with TESSERA_GPU_MEMORY_BUDGET=4096"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let dim = 64;
    let docs = corpus(dim, true, 200, 5);
    let (_db, coll) = collection(dir.path(), &docs, dim, 2);
    let q = docs[9].clone();
    let err = coll
        .search(&q, 5, &SearchParams::default().with_device(Device::Cuda(0)))
        .expect_err("over budget");
    assert!(err.to_string().contains("GPU memory budget"), "{err}");
    let auto = search(&coll, &q, 5, &SearchParams::default());
    let cpu = search(
        &coll,
        &q,
        5,
        &SearchParams::default().with_device(Device::Cpu),
    );
    assert_eq!(auto, cpu);
}

#[test]
#[ignore = "needs a CUDA device: run scripts/gpu-check.sh (under compute-sanitizer there)"]
fn gpu_sanitizer_case_covers_every_kernel_in_a_few_searches() {
    // Small enough for compute-sanitizer's memcheck and racecheck (every launch is slowed
    // by orders of magnitude there), and still every kernel: dim 96 at 8 bits takes the
    // residual table for a 1-token query and decompression for 32 tokens; the i8 or f32
    // centroid scores (as the host scores them); two segments with deletes; a filter down
    // the scaled-probe and the every-match paths; exhaustive.
    let dir = tempfile::tempdir().expect("tempdir");
    let dim = 96;
    let docs = corpus(dim, true, 160, 21);
    let (_db, coll) = collection(dir.path(), &docs, dim, 8);
    ingest_from(&coll, &corpus(dim, false, 40, 22), 10_000);
    coll.delete(&[ExternalId::from(5u64), ExternalId::from(10_003u64)])
        .expect("delete");
    let qs = queries(&docs, dim, 21);
    let tenth = Filter::eq("bucket", 3i64);
    let settings = [
        SearchParams::default(),
        SearchParams::exhaustive(),
        SearchParams::default()
            .with_filter(tenth.clone())
            .with_filter_exact(0)
            .with_filter_scan(0),
        SearchParams::default()
            .with_filter(tenth)
            .with_filter_exact(0)
            .with_filter_scan(usize::MAX),
    ];
    for (si, p) in settings.iter().enumerate() {
        for qi in [0, 1] {
            let c = search(&coll, &qs[qi], 10, &p.clone().with_device(Device::Cpu));
            let g = search(
                &coll,
                &qs[qi],
                10,
                &p.clone().with_device(device_under_test()),
            );
            assert_parity(&format!("setting {si} query {qi}"), &c, &g);
        }
    }
}
