//! Runs `tessera-bench smoke` (a tiny synthetic dataset, seconds) and checks its report, so
//! the harness cannot rot: every metric present, values in range, and the properties that
//! must hold exactly (exhaustive ground truth against itself, ideal nDCG, a search wide
//! enough to be exact).

use std::process::Command;

use serde_json::Value;

fn run_smoke() -> (Value, String) {
    let out = tempfile::tempdir().expect("temp dir");
    let status = Command::new(env!("CARGO_BIN_EXE_tessera-bench"))
        .args(["smoke", "--out"])
        .arg(out.path())
        .status()
        .expect("run tessera-bench");
    assert!(status.success(), "tessera-bench smoke failed: {status}");
    let json: Value = serde_json::from_slice(
        &std::fs::read(out.path().join("smoke.json")).expect("smoke.json written"),
    )
    .expect("valid JSON");
    let md = std::fs::read_to_string(out.path().join("smoke.md")).expect("smoke.md written");
    (json, md)
}

fn f(v: &Value, path: &str) -> f64 {
    let mut cur = v;
    for p in path.split('.') {
        cur = &cur[p];
    }
    cur.as_f64()
        .unwrap_or_else(|| panic!("{path} is not a number: {cur}"))
}

fn unit(v: &Value, path: &str) -> f64 {
    let x = f(v, path);
    assert!((0.0..=1.0).contains(&x), "{path} = {x} is outside [0, 1]");
    x
}

#[test]
fn smoke_run_reports_every_metric_with_exact_properties() {
    let (r, md) = run_smoke();
    assert_eq!(r["scenario"], "smoke");
    assert_eq!(f(&r, "dataset.docs"), 400.0);
    assert_eq!(f(&r, "dataset.queries"), 16.0);
    // The judgments are the exhaustive top-3, graded: exhaustive nDCG@10 is exactly 1.
    assert!((f(&r, "truth.ndcg_at_10") - 1.0).abs() < 1e-9);
    assert!((f(&r, "truth.judged_recall_at_100") - 1.0).abs() < 1e-9);

    let engines = r["engines"].as_array().expect("engines");
    assert_eq!(engines[0]["name"], "tessera");
    // The same build with the refine stage off, measured in the same run.
    let off = &engines[1];
    assert_eq!(off["name"], "tessera, refine off");
    assert_eq!(f(&off["default"], "stages.refined"), 0.0);
    assert!(
        f(&engines[0]["default"], "recall_at_10") >= f(&off["default"], "recall_at_10"),
        "refining with the originals never loses recall here"
    );
    // The GPU row is measured where a device is usable, else skipped with its reason.
    let skipped = r["skipped"].as_array().expect("skipped");
    match engines.get(2) {
        Some(gpu) => {
            assert_eq!(gpu["name"], "tessera (cuda:0)");
            assert!(skipped.is_empty());
        }
        None => {
            assert_eq!(skipped.len(), 1);
            let why = skipped[0].as_str().expect("reason");
            assert!(
                why.starts_with("tessera on cuda:0: not measured: "),
                "{why}"
            );
            assert!(
                md.contains(why),
                "the markdown report names the skipped device"
            );
        }
    }
    let e = &engines[0];
    let d = &e["default"];
    for m in [
        "recall_at_10",
        "recall_at_100",
        "ndcg_at_10",
        "judged_recall_at_100",
    ] {
        unit(d, m);
    }
    for lat in ["top10_one_thread", "top100_one_thread", "top10_all_threads"] {
        let p50 = f(d, &format!("{lat}.p50_ms"));
        let p95 = f(d, &format!("{lat}.p95_ms"));
        let p99 = f(d, &format!("{lat}.p99_ms"));
        assert!(
            p50 > 0.0 && p50 <= p95 && p95 <= p99,
            "{lat}: {p50} {p95} {p99}"
        );
    }
    assert!(f(d, "all_threads_qps") > 0.0);
    assert!(f(d, "batch_qps") > 0.0);
    assert!(f(d, "threads") >= 1.0);
    assert!(f(&e["build"], "seconds") > 0.0);
    assert!(f(&e["build"], "tokens_per_s") > 0.0);
    let bpt = f(&e["build"], "engine_bytes_per_token");
    assert!(
        bpt > 0.0 && bpt < 32.0 * 4.0,
        "bytes/token {bpt} vs 128 B of raw f32"
    );
    assert!(f(&e["build"], "dir_bytes") > 0.0);
    // f16 originals: 2 bytes per value of each 32-dimensional token, plus per-document
    // offsets and checksums.
    let obpt = f(&e["build"], "originals_bytes_per_token");
    assert!((64.0..80.0).contains(&obpt), "originals bytes/token {obpt}");
    let mem = &d["memory_after"];
    if std::path::Path::new("/proc/self/status").exists() {
        assert!(f(mem, "peak_rss_kib") > 0.0);
        assert!(f(mem, "rss_anon_kib") > 0.0);
    }
    // The engine's own stage counters explain the search.
    let st = &d["stages"];
    assert!(f(st, "candidates") > 0.0);
    let counted =
        f(st, "centroid_ms") + f(st, "approx_ms") + f(st, "rerank_ms") + f(st, "refine_ms");
    assert!(counted <= f(st, "total_ms") * 1.01 + 0.01);
    // The default refines max(64, 4k) = 64 candidates at top-10 (fewer only when fewer
    // survive the re-rank), reading 2 bytes per value of each of their tokens.
    let refined = f(st, "refined");
    assert!(refined > 10.0 && refined <= 64.0, "refined {refined}");
    assert!(f(st, "refine_bytes") >= refined * 8.0 * 32.0 * 2.0);

    // Sweep: nprobe {1, 4} x n_rerank {default, 400}; at a fixed re-rank depth, probing
    // more never loses recall here (the default depth adapts to each query, so it is not
    // compared).
    let sweep = e["sweep"].as_array().expect("sweep");
    assert_eq!(sweep.len(), 4);
    for p in sweep {
        unit(p, "recall_at_10");
        assert!(f(p, "latency.p50_ms") > 0.0);
    }
    assert!(f(&sweep[3], "recall_at_10") >= f(&sweep[1], "recall_at_10"));
    // Exhaustive search over the compressed vectors agrees with the full-precision truth up
    // to the codec's loss; a broken id mapping would score near 10/400.
    assert!(unit(e, "exhaustive_recall_at_10") > 0.5);
    assert_eq!(f(e, "exhaustive_queries"), 16.0);
    let token = &r["token_stats"];
    assert!(
        (f(token, "norm_mean") - 1.0).abs() < 1e-3,
        "synthetic tokens are unit norm"
    );
    assert!(f(token, "cos_same_doc") > f(token, "cos_other_doc"));
    for heading in ["recall@10", "Where tessera", "sweep"] {
        assert!(md.contains(heading), "markdown lacks {heading}");
    }
}
