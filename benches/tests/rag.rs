//! Runs `tessera-bench rag` on a tiny collection (seconds) and checks its report, so the
//! scenario behind BENCHMARKS.md's "Rerank only and diverse top-K" cannot rot.

use std::process::Command;

use serde_json::Value;

#[test]
fn rag_run_reports_rerank_throughput_and_diversity_cost_for_every_setting() {
    let out = tempfile::tempdir().expect("temp dir");
    let status = Command::new(env!("CARGO_BIN_EXE_tessera-bench"))
        .args([
            "rag",
            "--docs",
            "600",
            "--queries",
            "4",
            "--candidates",
            "10,100",
        ])
        .args([
            "--diversity",
            "0.9:0.9,1:0.5",
            "--batch-docs",
            "300",
            "--out",
        ])
        .arg(out.path())
        .status()
        .expect("run tessera-bench");
    assert!(status.success(), "tessera-bench rag failed: {status}");
    let r: Value = serde_json::from_slice(
        &std::fs::read(out.path().join("rag.json")).expect("rag.json written"),
    )
    .expect("valid JSON");
    assert_eq!(r["docs"], 600);
    assert_eq!(r["queries"], 4);
    let rerank = r["rerank"].as_array().expect("rerank rows");
    assert_eq!(rerank.len(), 2);
    for (row, n) in rerank.iter().zip([10, 100]) {
        assert_eq!(row["candidates"], n);
        let rate = row["docs_per_s_at_p50"].as_f64().expect("rate");
        assert!(rate.is_finite() && rate > 0.0, "{row}");
    }
    let div = r["diversity"].as_array().expect("diversity rows");
    assert_eq!(div.len(), 2);
    assert_eq!(div[1]["max_kept_similarity"], 0.5);
    for row in div {
        let ratio = row["p50_ratio"].as_f64().expect("ratio");
        assert!(ratio.is_finite() && ratio > 0.0, "{row}");
        let replaced = row["mean_replaced"].as_f64().expect("replaced");
        assert!((0.0..=10.0).contains(&replaced), "{row}");
    }
}
