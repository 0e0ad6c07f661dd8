//! Codec drift on synthetic data: corpus A uses one set of clusters, corpus B another (a
//! different seed draws disjoint random centres). Recall of B's queries when B is ingested
//! with a codec trained on A only, against a codec trained on B itself.

use anyhow::Result;
use tessera::synthetic::SyntheticSpec;
use tessera::{CollectionConfig, Database, Document, IngestOptions, SearchParams};

use crate::dataset::{self, Dataset};
use crate::metrics;
use crate::report::Drift;
use crate::truth::exact_top_k;

fn ingest(coll: &tessera::Collection, ds: &Dataset, id_offset: usize) -> Result<()> {
    let docs: Vec<Document> = (0..ds.n_docs())
        .map(|i| Document::new((id_offset + i) as u64, ds.doc(i).to_vec()))
        .collect();
    coll.ingest(&docs, &IngestOptions::default())?;
    Ok(())
}

fn recall(coll: &tessera::Collection, ds: &Dataset, id_offset: u64) -> Result<f64> {
    let mut r = Vec::new();
    for q in &ds.queries {
        let hits = coll.search(q, 10, &SearchParams::default())?;
        let got: Vec<u64> = hits
            .iter()
            .filter_map(|h| match h.id {
                tessera::ExternalId::Int(i) => i.checked_sub(id_offset),
                _ => None,
            })
            .collect();
        let truth: Vec<u64> = exact_top_k(ds, q, 10)?.iter().map(|(i, _)| *i).collect();
        r.push(metrics::recall_at(&got, &truth, 10));
    }
    Ok(metrics::mean(&r))
}

/// Measures drift with corpora of `n_docs` documents, each with half of `base`'s clusters.
pub fn measure(base: &SyntheticSpec, n_docs: usize, queries: usize, nbits: u32) -> Result<Drift> {
    let mk = |seed: u64| {
        dataset::synthetic(
            "drift",
            &SyntheticSpec {
                n_docs,
                n_clusters: (base.n_clusters / 2).max(1),
                seed,
                ..base.clone()
            },
            queries,
        )
    };
    let a = mk(base.seed + 100);
    let b = mk(base.seed + 200);
    let tmp = tempfile::tempdir()?;
    let db = Database::open_or_create(tmp.path())?;
    let config = CollectionConfig::new(base.dim as u32).with_nbits(nbits);
    // No automatic re-training: the drifted figure is the appended-centroids codec's.
    let manual = tessera::MergePolicy {
        retrain: false,
        ..tessera::MergePolicy::default()
    };
    let drifted = db.create_collection("drifted", config.clone().with_merge_policy(manual))?;
    ingest(&drifted, &a, 0)?;
    ingest(&drifted, &b, n_docs)?;
    let fresh = db.create_collection("fresh", config)?;
    ingest(&fresh, &b, 0)?;
    // A's own queries on the drifted collection (A's ids are 0..n): in distribution.
    let mut d = Drift {
        recall_in_distribution: recall(&drifted, &a, 0)?,
        recall_drifted: recall(&drifted, &b, n_docs as u64)?,
        recall_after_retrain: recall(&fresh, &b, 0)?,
        recall_drifted_retrained: 0.0,
    };
    drifted.retrain()?;
    d.recall_drifted_retrained = recall(&drifted, &b, n_docs as u64)?;
    eprintln!(
        "drift: in-distribution {:.3}, drifted {:.3}, trained on the new data {:.3}, drifted then re-trained {:.3}",
        d.recall_in_distribution,
        d.recall_drifted,
        d.recall_after_retrain,
        d.recall_drifted_retrained
    );
    Ok(d)
}
