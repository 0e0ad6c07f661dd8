//! The report of one run: everything measured, as JSON and as markdown tables.

use std::fmt::Write as _;

use serde::Serialize;

use crate::engines::BuildInfo;
use crate::measure::{Full, SweepPoint};
use crate::metrics::Machine;
use crate::stats::TokenStats;

/// The dataset of a run.
#[derive(Serialize, Debug, Clone)]
pub struct DatasetInfo {
    /// Name.
    pub name: String,
    /// Documents.
    pub docs: usize,
    /// Token vectors.
    pub tokens: usize,
    /// Dimension.
    pub dim: usize,
    /// Queries.
    pub queries: usize,
    /// Whether relevance judgments were given.
    pub judged: bool,
}

/// The exhaustive ground truth of a run.
#[derive(Serialize, Debug, Clone)]
pub struct TruthInfo {
    /// Depth.
    pub k: usize,
    /// Seconds to compute it (when it was computed).
    pub seconds: f64,
    /// Loaded from the cache.
    pub cached: bool,
    /// nDCG@10 of the exhaustive ranking against the judgments.
    pub ndcg_at_10: Option<f64>,
    /// Judged recall@100 of the exhaustive ranking.
    pub judged_recall_at_100: Option<f64>,
}

/// One engine's figures.
#[derive(Serialize, Debug, Clone)]
pub struct EngineReport {
    /// Name.
    pub name: String,
    /// Names of its probe and re-rank knobs.
    pub knob_names: (String, String),
    /// Index build.
    pub build: BuildInfo,
    /// Everything at the default setting.
    pub default: Full,
    /// Top-10 one-thread recall/latency over the sweep.
    pub sweep: Vec<SweepPoint>,
    /// Recall@10 of an exhaustive search over the engine's compressed vectors (the ceiling
    /// its codec allows), on the first `exhaustive_queries` queries.
    pub exhaustive_recall_at_10: Option<f64>,
    /// Queries behind `exhaustive_recall_at_10`.
    pub exhaustive_queries: usize,
    /// Mean recall@10 of exhaustive search over the kept originals (exact MaxSim at their
    /// precision: what f16 rounding alone loses against the f32 truth), on the same queries;
    /// `None` without originals.
    #[serde(default)]
    pub originals_exhaustive_recall_at_10: Option<f64>,
}

/// Recall of Tessera under codec drift (synthetic only).
#[derive(Serialize, Debug, Clone)]
pub struct Drift {
    /// Queries of the data the codec was trained on.
    pub recall_in_distribution: f64,
    /// Queries of data from other clusters, ingested with the old codec.
    pub recall_drifted: f64,
    /// The same data with a codec trained on it.
    pub recall_after_retrain: f64,
    /// The drifted collection after `Collection::retrain` (issue 13).
    #[serde(default)]
    pub recall_drifted_retrained: f64,
}

/// A whole run.
#[derive(Serialize, Debug, Clone)]
pub struct Report {
    /// Scenario (subcommand).
    pub scenario: String,
    /// The command line.
    pub command: String,
    /// `git describe --always --dirty` of the working tree when the run started.
    pub git_commit: String,
    /// UTC time the run started.
    pub started_utc: String,
    /// The machine.
    pub machine: Machine,
    /// The dataset.
    pub dataset: DatasetInfo,
    /// Token statistics of the corpus.
    pub token_stats: Option<TokenStats>,
    /// Ground truth.
    pub truth: TruthInfo,
    /// Engines, Tessera first (one row per device it was measured on).
    pub engines: Vec<EngineReport>,
    /// Engine rows that were asked for but not measured, with the reason.
    pub skipped: Vec<String>,
    /// Codec drift, when measured.
    pub drift: Option<Drift>,
    /// Tessera's default against the same build with refine off, in alternating rounds
    /// (CPU, when the refine-off row was measured).
    pub refine_cost: Option<crate::measure::Paired>,
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |x| format!("{x:.3}"))
}

fn mib(kib: u64) -> String {
    format!("{:.0}", kib as f64 / 1024.0)
}

/// The report as markdown.
pub fn markdown(r: &Report) -> String {
    let mut s = String::new();
    let d = &r.dataset;
    let m = &r.machine;
    let _ = writeln!(s, "### {} — {}\n", r.scenario, d.name);
    let _ = writeln!(s, "- command: `{}`", r.command);
    let _ = writeln!(
        s,
        "- commit `{}`, started {} UTC; machine: {} ({} threads, {:.0} GiB), load average {:.2} at start, {:.2} at end",
        r.git_commit, r.started_utc, m.cpu, m.threads, m.memory_gib, m.load_start, m.load_end
    );
    let _ = writeln!(
        s,
        "- {} documents, {} tokens, dim {}, {} queries{}; exhaustive top-{} ground truth {}",
        d.docs,
        d.tokens,
        d.dim,
        d.queries,
        if d.judged {
            " with relevance judgments"
        } else {
            ""
        },
        r.truth.k,
        if r.truth.cached {
            "loaded from cache".to_string()
        } else {
            format!("computed in {:.0} s", r.truth.seconds)
        }
    );
    if let (Some(n), Some(j)) = (r.truth.ndcg_at_10, r.truth.judged_recall_at_100) {
        let _ = writeln!(
            s,
            "- exhaustive full-precision MaxSim against the judgments (the ceiling): nDCG@10 {n:.3}, recall@100 {j:.3}"
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "| engine | setting | recall@10 | recall@100 | nDCG@10 | judged R@100 | top-10 p50 / p95 / p99 ms (1 thread) | top-100 p50 ms (1 thread) | top-10 p50 / p95 / p99 ms ({} threads) | QPS ({} threads) | batch QPS | build s | build tokens/s | index B/token | RSS peak / anon MiB (search) |",
        r.engines.first().map_or(0, |e| e.default.threads),
        r.engines.first().map_or(0, |e| e.default.threads)
    );
    let _ = writeln!(
        s,
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for e in &r.engines {
        let f = &e.default;
        let bpt = match (
            e.build.engine_bytes_per_token,
            e.build.originals_bytes_per_token,
        ) {
            (Some(x), Some(o)) if o > 0.0 => format!(
                "{x:.1} index + {o:.1} originals ({:.1} dir)",
                e.build.dir_bytes_per_token
            ),
            (Some(x), _) => format!("{x:.1} ({:.1} dir)", e.build.dir_bytes_per_token),
            (None, _) => format!("{:.1}", e.build.dir_bytes_per_token),
        };
        let _ = writeln!(
            s,
            "| {} | {} {}, {} {} | {:.3} | {:.3} | {} | {} | {:.2} / {:.2} / {:.2} | {:.2} | {:.2} / {:.2} / {:.2} | {:.1} | {:.1} | {:.1} | {:.0} | {} | {} / {} |",
            e.name,
            e.knob_names.0,
            f.knobs.probe,
            e.knob_names.1,
            f.rerank_effective,
            f.recall_at_10,
            f.recall_at_100,
            opt(f.ndcg_at_10),
            opt(f.judged_recall_at_100),
            f.top10_one_thread.p50_ms,
            f.top10_one_thread.p95_ms,
            f.top10_one_thread.p99_ms,
            f.top100_one_thread.p50_ms,
            f.top10_all_threads.p50_ms,
            f.top10_all_threads.p95_ms,
            f.top10_all_threads.p99_ms,
            f.all_threads_qps,
            f.batch_qps,
            e.build.seconds,
            e.build.tokens_per_s,
            bpt,
            mib(f.memory_after.peak_rss_kib),
            mib(f.memory_after.rss_anon_kib),
        );
    }
    let _ = writeln!(s);
    for why in &r.skipped {
        let _ = writeln!(s, "- {why}");
    }
    for e in &r.engines {
        let _ = writeln!(s, "- {} index: {}", e.name, e.build.settings);
        if let Some(x) = e.originals_exhaustive_recall_at_10 {
            let _ = writeln!(
                s,
                "- {} exhaustive search over its originals (precision ceiling, {} queries): recall@10 {x:.3}",
                e.name, e.exhaustive_queries
            );
        }
        if let Some(x) = e.exhaustive_recall_at_10 {
            let _ = writeln!(
                s,
                "- {} exhaustive search over its compressed vectors (codec ceiling, {} queries): recall@10 {x:.3}",
                e.name, e.exhaustive_queries
            );
        }
    }
    for e in &r.engines {
        if let Some(st) = &e.default.stages {
            let other = st.other_ms();
            let pct = |x: f64| 100.0 * x / st.total_ms.max(1e-9);
            let _ = writeln!(
                s,
                "\nWhere {}'s default top-10 search spends its time (one thread, mean per query, from `SearchStats`):\n",
                e.name
            );
            let _ = writeln!(
                s,
                "| stage | ms | share | work |\n| --- | ---: | ---: | --- |"
            );
            let rows = [
                (
                    "centroid scores + probe choice",
                    st.centroid_ms,
                    format!("{:.0} centroids probed", st.probed_centroids),
                ),
                (
                    "candidate gathering + approximate scoring",
                    st.approx_ms,
                    format!("{:.0} candidates", st.candidates),
                ),
                (
                    "exact re-rank over compressed vectors",
                    st.rerank_ms,
                    format!("{:.0} documents", st.reranked),
                ),
                (
                    "refine over originals + final ranking",
                    st.refine_ms,
                    format!(
                        "{:.0} documents, {:.0} KiB of originals read",
                        st.refined,
                        st.refine_bytes / 1024.0
                    ),
                ),
                ("outside the counted stages", other, String::new()),
            ];
            for (stage, ms, work) in rows {
                let _ = writeln!(s, "| {stage} | {ms:.2} | {:.0}% | {work} |", pct(ms));
            }
            let _ = writeln!(s, "| total | {:.2} | 100% | |", st.total_ms);
        }
    }
    if let Some(p) = &r.refine_cost {
        paired_markdown(&mut s, p);
    }
    let _ = writeln!(
        s,
        "\nRecall–latency sweep (top-10, one query at a time; threads per query as stated):\n\n| engine | probe | re-rank | refine | prefilter | threads | recall@10 | p50 ms | p95 ms |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for e in &r.engines {
        for p in &e.sweep {
            let _ = writeln!(
                s,
                "| {} | {} {} | {} {} | {} | {} | {} | {:.3} | {:.2} | {:.2} |",
                e.name,
                e.knob_names.0,
                p.knobs.probe,
                e.knob_names.1,
                p.rerank_effective,
                p.knobs
                    .refine
                    .map_or_else(|| "default".to_string(), |r| r.to_string()),
                p.knobs
                    .prefilter
                    .map_or_else(|| "rule".to_string(), |r| r.to_string()),
                p.knobs.threads.unwrap_or(1),
                p.recall_at_10,
                p.latency.p50_ms,
                p.latency.p95_ms
            );
        }
    }
    if let Some(t) = &r.token_stats {
        let _ = writeln!(
            s,
            "\nToken statistics: {:.1} tokens/document ({}–{}), norm {:.3} ± {:.3}, cosine same document {:.3} vs other documents {:.3}, largest 10% of 256 k-means clusters hold {:.1}% of tokens (largest {:.1}%, {} empty)",
            t.tokens_per_doc_mean,
            t.tokens_per_doc_min,
            t.tokens_per_doc_max,
            t.norm_mean,
            t.norm_std,
            t.cos_same_doc,
            t.cos_other_doc,
            100.0 * t.top10pct_cluster_share,
            100.0 * t.largest_cluster_share,
            t.empty_clusters
        );
    }
    if let Some(dr) = &r.drift {
        let _ = writeln!(
            s,
            "\n| codec drift | recall@10 |\n| --- | ---: |\n| in distribution (codec trained on these clusters) | {:.3} |\n| drifted (new clusters, old codec) | {:.3} |\n| same data, codec trained on it | {:.3} |\n| drifted collection after `retrain()` | {:.3} |",
            dr.recall_in_distribution,
            dr.recall_drifted,
            dr.recall_after_retrain,
            dr.recall_drifted_retrained
        );
    }
    s
}

/// The refine stage's cost from the alternating rounds: latencies, the ratio with its spread
/// over rounds, and the stages side by side.
fn paired_markdown(s: &mut String, p: &crate::measure::Paired) {
    let mut rr = p.round_ratios.clone();
    rr.sort_by(f64::total_cmp);
    let (lo, hi) = (rr.first().copied(), rr.last().copied());
    let _ = writeln!(
        s,
        "\n`{}` against `{}`, top-10 on one thread in {} alternating rounds of every query (A B, B A, …): p50 {:.2} against {:.2} ms, **ratio {:.3}** (per round {:.3}–{:.3}); p95 {:.2} against {:.2} ms.\n",
        p.a,
        p.b,
        p.rounds,
        p.a_latency.p50_ms,
        p.b_latency.p50_ms,
        p.a_latency.p50_ms / p.b_latency.p50_ms,
        lo.unwrap_or(f64::NAN),
        hi.unwrap_or(f64::NAN),
        p.a_latency.p95_ms,
        p.b_latency.p95_ms,
    );
    let (Some(a), Some(b)) = (&p.a_stages, &p.b_stages) else {
        return;
    };
    let _ = writeln!(
        s,
        "| stage, mean ms | {} | {} |\n| --- | ---: | ---: |",
        p.a, p.b
    );
    let rows = [
        (
            "centroid scores + probe choice",
            a.centroid_ms,
            b.centroid_ms,
        ),
        ("candidates + approximate scoring", a.approx_ms, b.approx_ms),
        (
            "exact re-rank over compressed vectors",
            a.rerank_ms,
            b.rerank_ms,
        ),
        ("refine + final ranking", a.refine_ms, b.refine_ms),
        ("outside the counted stages", a.other_ms(), b.other_ms()),
        ("total", a.total_ms, b.total_ms),
    ];
    for (stage, x, y) in rows {
        let _ = writeln!(s, "| {stage} | {x:.2} | {y:.2} |");
    }
}
