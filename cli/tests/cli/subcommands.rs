//! Each subcommand, its output modes, and its errors.

use crate::common::*;

/// Generates a corpus with `tessera generate` and ingests its flat layout.
fn generated_db(t: &Tmp, docs: usize) -> std::path::PathBuf {
    let corpus = t.p("corpus");
    let db = t.p("db");
    ok(&[
        "generate",
        s(&corpus),
        "--docs",
        &docs.to_string(),
        "--dim",
        "16",
        "--queries",
        "3",
    ]);
    create(&db, "passages", 16);
    ok(&[
        "ingest",
        s(&db),
        "passages",
        s(&corpus.join("flat.npy")),
        "--doclens",
        s(&corpus.join("doclens.npy")),
        "--ids",
        s(&corpus.join("ids.txt")),
    ]);
    db
}

#[test]
fn create_makes_an_empty_collection_that_info_lists() {
    let t = Tmp::new();
    let db = t.p("db");
    let o = run(&["create", s(&db), "passages", "--dim", "32", "--nbits", "4"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("created collection \"passages\" (dim 32, nbits 4, originals f16)"),
        "{}",
        stderr(&o)
    );
    let rows = json_lines(&ok(&["info", s(&db), "--json"]));
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["name"], "passages");
    assert_eq!(rows[0]["dim"], 32);
    assert_eq!(rows[0]["nbits"], 4);
    assert_eq!(rows[0]["documents"], 0);
    assert_eq!(rows[0]["segments"], 0);
    assert!(
        rows[0]["codec"]
            .as_str()
            .is_some_and(|c| c.starts_with("untrained"))
    );
}

#[test]
fn ingest_search_and_delete_work_end_to_end() {
    let t = Tmp::new();
    let db = generated_db(&t, 60);
    assert_eq!(documents(&db, "passages"), 60);

    let queries = t.p("corpus").join("queries.npy");
    let out = ok(&[
        "search",
        s(&db),
        "passages",
        "--query",
        s(&queries),
        "-k",
        "5",
        "--json",
    ]);
    let rows = json_lines(&out);
    assert_eq!(rows.len(), 15, "3 queries x 5 hits: {out}");
    for r in &rows {
        assert!(
            r["id"].as_str().is_some_and(|id| id.starts_with("doc-")),
            "{r}"
        );
        assert!(r["score"].as_f64().is_some_and(|x| x > 0.0), "{r}");
    }
    // Scores are sorted within each query.
    for q in 0..3 {
        let scores: Vec<f64> = rows
            .iter()
            .filter(|r| r["query"] == q)
            .map(|r| r["score"].as_f64().expect("score"))
            .collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    }

    // Delete the top hit of query 0 and one unknown id.
    let top = rows[0]["id"].as_str().expect("string id").to_owned();
    let o = run(&["delete", s(&db), "passages", &top, "no-such-doc"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("deleted 1 document"), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("not found: no-such-doc"),
        "{}",
        stderr(&o)
    );
    assert_eq!(documents(&db, "passages"), 59);
    let after = ok(&[
        "search",
        s(&db),
        "passages",
        "--query",
        s(&queries),
        "-k",
        "5",
        "--json",
    ]);
    assert!(
        !json_lines(&after).iter().any(|r| r["id"] == top.as_str()),
        "deleted id still found"
    );
}

#[test]
fn info_reports_tokens_segments_bytes_per_token_and_codec() {
    let t = Tmp::new();
    let db = generated_db(&t, 40);
    let rows = json_lines(&ok(&["info", s(&db), "passages", "--json"]));
    let r = &rows[0];
    assert_eq!(r["documents"], 40);
    assert!(r["tokens"].as_u64().is_some_and(|x| x >= 40 * 32), "{r}");
    assert_eq!(r["segments"], 1);
    assert!(
        r["bytes_per_token"].as_f64().is_some_and(|x| x > 0.0),
        "{r}"
    );
    assert!(
        r["codec"]
            .as_str()
            .is_some_and(|c| c.contains("2-bit residuals") && c.contains("centroids")),
        "{r}"
    );

    let table = ok(&["info", s(&db), "--mode", "table"]);
    for header in [
        "collection",
        "documents",
        "tokens",
        "segments",
        "bytes/token",
        "codec",
        "passages",
    ] {
        assert!(table.contains(header), "table lacks {header}:\n{table}");
    }
}

#[test]
fn output_is_json_lines_when_piped_and_csv_or_table_on_request() {
    let t = Tmp::new();
    let db = generated_db(&t, 30);
    let q = t.p("corpus").join("queries.npy");
    // Piped stdout without flags: JSON lines.
    let piped = ok(&["search", s(&db), "passages", "--query", s(&q), "-k", "2"]);
    assert_eq!(json_lines(&piped).len(), 6);
    let csv = ok(&[
        "search",
        s(&db),
        "passages",
        "--query",
        s(&q),
        "-k",
        "2",
        "--mode",
        "csv",
    ]);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "query,rank,id,score");
    assert_eq!(lines.len(), 7, "{csv}");
    let table = ok(&[
        "search",
        s(&db),
        "passages",
        "--query",
        s(&q),
        "-k",
        "2",
        "--mode",
        "table",
    ]);
    assert!(table.contains("rank") && table.contains("doc-"), "{table}");
    assert!(table.contains('│'), "a boxed table: {table}");
}

#[test]
fn errors_go_to_stderr_with_a_nonzero_exit_code() {
    let t = Tmp::new();
    let db = t.p("db");
    create(&db, "c", 8);
    let err = fails(&["create", s(&db), "c", "--dim", "8"]);
    assert!(err.contains("already exists"), "{err}");
    let err = fails(&["create", s(&db), "d", "--dim", "8", "--nbits", "3"]);
    assert!(err.contains("nbits must be 1, 2, 4 or 8"), "{err}");
    let err = fails(&["info", s(&t.p("nowhere"))]);
    assert!(err.contains("not a Tessera database"), "{err}");
    // An unrelated non-empty directory is not turned into a database.
    std::fs::create_dir(t.p("src")).expect("mkdir");
    std::fs::write(t.p("src").join("main.rs"), "fn main() {}").expect("write");
    let err = fails(&["create", s(&t.p("src")), "c", "--dim", "8"]);
    assert!(
        err.contains("neither empty nor a Tessera database"),
        "{err}"
    );
    assert!(!t.p("src").join("catalog").exists());
    let err = fails(&["info", s(&t.p("nowhere"))]);
    assert!(err.contains("not a Tessera database"), "{err}");
    let err = fails(&["search", s(&db), "missing", "--query", "q.npy"]);
    assert!(err.contains("no collection named \"missing\""), "{err}");
    let o = run(&["search", s(&db), "c"]);
    assert_eq!(o.status.code(), Some(2), "usage errors exit 2");
    assert!(stderr(&o).contains("--query"), "{}", stderr(&o));
    assert!(stdout(&o).is_empty());
}

#[test]
fn search_rejects_queries_of_the_wrong_dimension() {
    let t = Tmp::new();
    let db = generated_db(&t, 20);
    let q = t.p("q.npy");
    write_npy_f32(&q, 4, 8, &[0.5; 32]);
    let err = fails(&["search", s(&db), "passages", "--query", s(&q)]);
    assert!(err.contains("q.npy") && err.contains("[4, 8]"), "{err}");
}

#[test]
fn search_accepts_json_and_jsonl_query_files() {
    let t = Tmp::new();
    let db = generated_db(&t, 20);
    let c = corpus(2, 16, 9);
    let rows: Vec<Vec<f32>> = c.doc(0).chunks(16).map(<[f32]>::to_vec).collect();
    let jq = t.p("q.json");
    std::fs::write(&jq, serde_json::to_string(&rows).expect("json")).expect("write");
    assert_eq!(
        json_lines(&ok(&[
            "search",
            s(&db),
            "passages",
            "--query",
            s(&jq),
            "-k",
            "3"
        ]))
        .len(),
        3
    );
    let lq = t.p("q.jsonl");
    let line = serde_json::json!({"id": "my-query", "embeddings": rows});
    std::fs::write(&lq, format!("{line}\n\n{line}\n")).expect("write");
    let out = json_lines(&ok(&[
        "search",
        s(&db),
        "passages",
        "--query",
        s(&lq),
        "-k",
        "2",
    ]));
    assert_eq!(out.len(), 4);
    assert_eq!(out[0]["query"], "my-query");
}

#[test]
fn generate_writes_every_format_and_each_ingests_the_same_corpus() {
    let t = Tmp::new();
    let corpus = t.p("corpus");
    let o = run(&[
        "generate",
        s(&corpus),
        "--docs",
        "25",
        "--dim",
        "8",
        "--queries",
        "2",
        "--formats",
        "all",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let db = t.p("db");
    let inputs: [(&str, Vec<String>); 4] = [
        ("npydir", vec![s(&corpus.join("docs")).to_owned()]),
        (
            "flatst",
            vec![
                s(&corpus.join("corpus.safetensors")).to_owned(),
                "--ids".into(),
                s(&corpus.join("ids.txt")).to_owned(),
            ],
        ),
        (
            "docst",
            vec![s(&corpus.join("docs.safetensors")).to_owned()],
        ),
        ("jsonl", vec![s(&corpus.join("corpus.jsonl")).to_owned()]),
    ];
    let mut results = Vec::new();
    for (name, args) in &inputs {
        create(&db, name, 8);
        let mut a = vec!["ingest", s(&db), name];
        a.extend(args.iter().map(String::as_str));
        ok(&a);
        assert_eq!(documents(&db, name), 25, "{name}");
        results.push(ok(&[
            "search",
            s(&db),
            name,
            "--query",
            s(&corpus.join("queries.npy")),
            "-k",
            "3",
        ]));
    }
    // Same vectors, same order, same ids: the same results from every format.
    for r in &results[1..] {
        assert_eq!(r, &results[0]);
    }
}

#[test]
fn ingest_json_flag_prints_a_summary_object() {
    let t = Tmp::new();
    let corpus = t.p("corpus");
    ok(&[
        "generate",
        s(&corpus),
        "--docs",
        "10",
        "--dim",
        "8",
        "--queries",
        "1",
    ]);
    let db = t.p("db");
    create(&db, "c", 8);
    let out = ok(&[
        "ingest",
        s(&db),
        "c",
        s(&corpus.join("flat.npy")),
        "--doclens",
        s(&corpus.join("doclens.npy")),
        "--json",
    ]);
    let v = &json_lines(&out)[0];
    assert_eq!(v["documents"], 10);
    assert_eq!(v["batches"], 1);
    assert_eq!(v["trained_codec"], true);
    // Without --ids the ids are positions.
    let hits = json_lines(&ok(&[
        "search",
        s(&db),
        "c",
        "--query",
        s(&corpus.join("queries.npy")),
        "-k",
        "10",
    ]));
    assert!(hits.iter().all(|h| h["id"].is_u64()), "integer ids");
    // `delete` finds integer ids typed as text.
    ok(&["delete", s(&db), "c", "3"]);
    assert_eq!(documents(&db, "c"), 9);
}

#[test]
fn a_small_first_batch_that_trains_the_codec_is_flagged() {
    let t = Tmp::new();
    let corpus = t.p("corpus");
    ok(&[
        "generate",
        s(&corpus),
        "--docs",
        "30",
        "--dim",
        "8",
        "--queries",
        "1",
    ]);
    let db = t.p("db");
    let flat = corpus.join("flat.npy");
    let lens = corpus.join("doclens.npy");
    create(&db, "small", 8);
    let o = run(&[
        "ingest",
        s(&db),
        "small",
        s(&flat),
        "--doclens",
        s(&lens),
        "--batch-tokens",
        "500",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("note: the codec was trained on a first batch of only"),
        "{}",
        stderr(&o)
    );
    // One batch holding the whole input is as good a training set as there is: no note.
    create(&db, "whole", 8);
    let o = run(&["ingest", s(&db), "whole", s(&flat), "--doclens", s(&lens)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("note:"), "{}", stderr(&o));
}

#[test]
fn originals_are_kept_at_f16_by_default_reported_by_info_and_refine_is_a_search_option() {
    let t = Tmp::new();
    let db = generated_db(&t, 40);
    let r = &json_lines(&ok(&["info", s(&db), "passages", "--json"]))[0];
    assert_eq!(r["originals"], "f16", "{r}");
    // 16 dimensions at 2 bytes, plus per-document offsets and checksums.
    assert!(
        r["originals_bytes_per_token"]
            .as_f64()
            .is_some_and(|x| (32.0..40.0).contains(&x)),
        "{r}"
    );
    let o = run(&[
        "create",
        s(&db),
        "lean",
        "--dim",
        "16",
        "--originals",
        "none",
    ]);
    assert!(stderr(&o).contains("originals none"), "{}", stderr(&o));
    let lean = &json_lines(&ok(&["info", s(&db), "lean", "--json"]))[0];
    assert_eq!(lean["originals"], "none");
    assert_eq!(lean["originals_bytes_per_token"], 0.0);
    let bad = run(&["create", s(&db), "x", "--dim", "16", "--originals", "f8"]);
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("expected f16, bf16, f32 or none"),
        "{}",
        stderr(&bad)
    );

    let q = t.p("corpus").join("queries.npy");
    for refine in ["0", "7", "1000"] {
        let rows = json_lines(&ok(&[
            "search",
            s(&db),
            "passages",
            "--query",
            s(&q),
            "-k",
            "5",
            "--refine",
            refine,
            "--json",
        ]));
        assert_eq!(rows.len(), 15, "--refine {refine}: 3 queries x 5 hits");
    }
}

#[test]
fn compact_and_retrain_keep_every_search_result_and_report_what_they_did() {
    let t = Tmp::new();
    let db = generated_db(&t, 60);
    let queries = t.p("corpus").join("queries.npy");
    let search = |db: &std::path::Path| {
        ok(&[
            "search",
            s(db),
            "passages",
            "--query",
            s(&queries),
            "-k",
            "5",
            "--exhaustive",
            "--json",
        ])
    };
    let first = json_lines(&search(&db));
    let gone: Vec<String> = first[..2]
        .iter()
        .map(|r| r["id"].as_str().expect("string id").to_owned())
        .collect();
    ok(&["delete", s(&db), "passages", &gone[0], &gone[1]]);
    let before = json_lines(&search(&db));
    let out = ok(&["compact", s(&db), "passages", "--json"]);
    let report: serde_json::Value = serde_json::from_str(out.trim()).expect("json report");
    assert_eq!(report["documents_dropped"], 2, "{report}");
    assert_eq!(report["segments_after"], 1, "{report}");
    let out = ok(&["retrain", s(&db), "passages", "--json"]);
    let report: serde_json::Value = serde_json::from_str(out.trim()).expect("json report");
    assert_eq!(report["segments"], 1, "{report}");
    assert!(
        report["centroids_after"].as_u64().is_some_and(|c| c > 0),
        "{report}"
    );
    // Exhaustive search ranks by the originals, which neither command changes.
    let after = json_lines(&search(&db));
    let ids = |rows: &[serde_json::Value]| rows.iter().map(|r| r["id"].clone()).collect::<Vec<_>>();
    assert_eq!(ids(&before), ids(&after));
    assert_eq!(documents(&db, "passages"), 58);
    // Without --json, one line on stderr says what happened.
    let o = run(&["compact", s(&db), "passages"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("compacted \"passages\""),
        "{}",
        stderr(&o)
    );
}

#[test]
fn verify_exits_0_on_a_clean_database_and_1_with_a_line_naming_a_damaged_segment() {
    let t = Tmp::new();
    let db = generated_db(&t, 50);
    let out = ok(&["verify", s(&db)]);
    assert!(
        out.lines()
            .last()
            .is_some_and(|l| l.starts_with("ok: checked 1 collection")),
        "{out}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&ok(&["verify", s(&db), "--json"])).expect("JSON report");
    assert_eq!(report["problems"], serde_json::json!([]));
    assert_eq!(report["checked"]["id_map_entries"], 50);
    ok(&["shell", s(&db), "-c", ".verify"]);
    // The shell's .verify on a read-only handle (which removes no debris at open) reports
    // a temporary file and fails the command.
    let tmp = db.join("collections").join("0").join("seg-000099.tsg.tmp");
    std::fs::write(&tmp, b"partial").expect("write");
    let o = run(&["shell", s(&db), "--read-only", "--bail", "-c", ".verify"]);
    assert!(!o.status.success(), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("seg-000099.tsg.tmp: a temporary file"),
        "{}",
        stdout(&o)
    );
    std::fs::remove_file(&tmp).expect("rm");

    let seg = std::fs::read_dir(db.join("collections").join("0"))
        .expect("ls")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "tsg"))
        .expect("a segment");
    let mut bytes = std::fs::read(&seg).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&seg, &bytes).expect("write");
    let o = run(&["verify", s(&db)]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let out = stdout(&o);
    let name = seg
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    assert!(
        out.lines()
            .any(|l| l.contains(&name) && l.contains("fails its checksum")),
        "{out}"
    );
    assert!(
        out.lines()
            .last()
            .is_some_and(|l| l.starts_with("1 problem: checked")),
        "{out}"
    );
    let o = run(&["shell", s(&db), "--read-only", "-c", ".verify"]);
    assert!(!o.status.success(), "{}", stdout(&o));
}
