//! Experiment: does renormalising decompressed tokens raise the codec's recall ceiling?
//!
//! Ingests the python-doc corpus (`scripts/bench-data.sh python-doc`) at 2 bits, reads every
//! document's stored (decompressed) vectors back, and measures exhaustive recall@10 against
//! full-precision MaxSim twice: as stored, and with each token scaled back to unit norm.
//! Run: `cargo run --release -p tessera-bench --example renorm` (result in BENCHMARKS.md).
use tessera::{CollectionConfig, Database, Document, ExternalId, IngestOptions};
use tessera_bench::{dataset, truth};

fn main() -> anyhow::Result<()> {
    let home = std::env::var("HOME")?;
    let dir = std::path::Path::new(&home).join(".cache/tessera/datasets/python-doc");
    let ds = dataset::load_flat(&dir)?;
    let (t, _) = truth::cached(&ds, 100, truth::default_cache_dir().as_deref())?;
    let tmp = tempfile::tempdir()?;
    let db = Database::open_or_create(tmp.path())?;
    let coll = db.create_collection("c", CollectionConfig::new(ds.dim as u32).with_nbits(2))?;
    let docs: Vec<Document> = (0..ds.n_docs())
        .map(|i| Document::new(i as u64, ds.doc(i).to_vec()))
        .collect();
    coll.ingest(
        &docs,
        &IngestOptions::default().with_expected_total_tokens(ds.n_tokens() as u64),
    )?;
    let mut dec = Vec::with_capacity(ds.flat.len());
    for i in 0..ds.n_docs() {
        dec.extend(
            coll.vectors(&ExternalId::Int(i as u64))?
                .unwrap_or_default(),
        );
    }
    let mut norm = dec.clone();
    let mut ratio = 0f64;
    for row in norm.chunks_exact_mut(ds.dim) {
        let n = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        ratio += n as f64;
        row.iter_mut().for_each(|x| *x /= n.max(1e-12));
    }
    println!(
        "mean decompressed norm {:.4}",
        ratio / (norm.len() / ds.dim) as f64
    );
    let nq = ds.queries.len().min(150);
    for (name, flat) in [("as stored", dec), ("renormalised", norm)] {
        let v = dataset::Dataset { flat, ..ds.clone() };
        let mut r = 0.0;
        for q in 0..nq {
            let got: Vec<u64> = truth::exact_top_k(&v, &ds.queries[q], 10)?
                .iter()
                .map(|x| x.0)
                .collect();
            let want = t.ids(q, 10);
            r += want.iter().filter(|w| got.contains(w)).count() as f64 / 10.0;
        }
        println!(
            "{name}: exhaustive recall@10 vs full precision = {:.3} ({nq} queries)",
            r / nq as f64
        );
    }
    Ok(())
}
