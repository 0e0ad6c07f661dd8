//! Issue 14 through the binary: `rerank`, `explain` (table, JSON, SVG heatmap), the
//! diversity flags of `search`, and the shell's `.rerank`, `.explain` and `.diversity`,
//! each against the library on the same database.

use serde_json::Value;
use tessera::{Database, Diversity, ExternalId, SearchParams};

use crate::common::*;

const DIM: usize = 16;

/// A generated corpus of `docs` documents ingested into collection `passages`.
fn db_with(t: &Tmp, docs: usize) -> std::path::PathBuf {
    let corpus = t.p("corpus");
    let db = t.p("db");
    ok(&[
        "generate",
        s(&corpus),
        "--docs",
        &docs.to_string(),
        "--dim",
        &DIM.to_string(),
        "--queries",
        "2",
    ]);
    create(&db, "passages", DIM);
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

/// The first query of the generated corpus, alone in a `[tokens, dim]` file.
fn one_query(t: &Tmp) -> (std::path::PathBuf, Vec<f32>) {
    let corpus = t.p("corpus");
    let qs = tessera_cli_queries(&corpus.join("queries.npy"));
    let path = t.p("q0.npy");
    write_npy_f32(&path, qs.len() / DIM, DIM, &qs);
    (path, qs)
}

/// Query 0 of a `[queries, tokens, dim]` file, read as the library's caller would.
fn tessera_cli_queries(path: &std::path::Path) -> Vec<f32> {
    let bytes = std::fs::read(path).expect("queries.npy");
    let npy = npyz::NpyFile::new(&bytes[..]).expect("npy");
    let shape = npy.shape().to_vec();
    let all: Vec<f32> = npy.into_vec().expect("f32 data");
    let per = (shape[1] * shape[2]) as usize;
    all[..per].to_vec()
}

fn id_list(db: &std::path::Path) -> Vec<String> {
    let ids =
        std::fs::read_to_string(db.parent().expect("tmp").join("corpus/ids.txt")).expect("ids.txt");
    ids.lines().map(str::to_owned).collect()
}

fn ids_of(rows: &[Value]) -> Vec<String> {
    rows.iter()
        .map(|r| r["id"].as_str().expect("string id").to_owned())
        .collect()
}

#[test]
fn rerank_prints_the_librarys_exact_scores_of_the_given_ids_and_lists_unknown_ones() {
    let t = Tmp::new();
    let db = db_with(&t, 80);
    let (qpath, q) = one_query(&t);
    let all = id_list(&db);
    let given: Vec<String> = all.iter().step_by(7).cloned().collect();
    let mut with_unknown = given.clone();
    with_unknown.insert(2, "no-such-doc".into());
    let o = run(&[
        "rerank",
        s(&db),
        "passages",
        "--query",
        s(&qpath),
        "--ids",
        &with_unknown.join(","),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("not in collection \"passages\" (not scored): no-such-doc"),
        "{}",
        stderr(&o)
    );
    let rows = json_lines(&stdout(&o));
    let lib = {
        let db = Database::open_read_only(&db).expect("open");
        let ext: Vec<ExternalId> = with_unknown
            .iter()
            .map(|i| ExternalId::from(i.as_str()))
            .collect();
        db.collection("passages")
            .expect("collection")
            .rerank(&q, &ext, usize::MAX)
            .expect("rerank")
    };
    assert_eq!(rows.len(), given.len());
    assert_eq!(lib.unknown, vec![ExternalId::from("no-such-doc")]);
    for (r, h) in rows.iter().zip(&lib.hits) {
        assert_eq!(r["id"], serde_json::to_value(&h.id).expect("id"));
        assert_eq!(r["score"].as_f64().map(|x| x as f32), Some(h.score), "{r}");
    }
    // -k, an id file (blank lines skipped), and a table.
    let file = t.p("ids.txt");
    std::fs::write(&file, format!("{}\n\n{}\n", given[0], given[1])).expect("ids file");
    let top = json_lines(&ok(&[
        "rerank",
        s(&db),
        "passages",
        "--query",
        s(&qpath),
        "--ids-file",
        s(&file),
        "-k",
        "1",
        "--json",
    ]));
    assert_eq!(top.len(), 1);
    let best = if lib
        .hits
        .iter()
        .position(|h| h.id == ExternalId::from(given[0].as_str()))
        < lib
            .hits
            .iter()
            .position(|h| h.id == ExternalId::from(given[1].as_str()))
    {
        &given[0]
    } else {
        &given[1]
    };
    assert_eq!(top[0]["id"], best.as_str());
    let table = ok(&[
        "rerank",
        s(&db),
        "passages",
        "--like",
        &given[0],
        "--ids",
        &given[..3].join(","),
        "--mode",
        "table",
    ]);
    assert!(
        table.contains(&given[0]) && table.contains("score"),
        "{table}"
    );
}

#[test]
fn rerank_bad_input_is_a_clear_error_or_an_empty_result() {
    let t = Tmp::new();
    let db = db_with(&t, 30);
    let (qpath, _) = one_query(&t);
    // An empty id list: no rows, a note, success.
    let empty = t.p("empty.txt");
    std::fs::write(&empty, "\n").expect("empty file");
    let o = run(&[
        "rerank",
        s(&db),
        "passages",
        "--query",
        s(&qpath),
        "--ids-file",
        s(&empty),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).trim().is_empty(), "{}", stdout(&o));
    assert!(stderr(&o).contains("no ids given"), "{}", stderr(&o));
    // A query of the wrong dimension.
    let wrong = t.p("wrong.npy");
    write_npy_f32(&wrong, 2, DIM + 1, &[0.5; 2 * (DIM + 1)]);
    let e = fails(&[
        "rerank",
        s(&db),
        "passages",
        "--query",
        s(&wrong),
        "--ids",
        "doc-000001",
    ]);
    assert!(e.contains("neither [tokens, 16]"), "{e}");
    // No query, or no ids: usage errors.
    let o = run(&["rerank", s(&db), "passages", "--ids", "doc-000001"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--query"), "{}", stderr(&o));
    let o = run(&["rerank", s(&db), "passages", "--query", s(&qpath)]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--ids"), "{}", stderr(&o));
    let o = run(&[
        "rerank",
        s(&db),
        "passages",
        "--query",
        s(&qpath),
        "--ids",
        "x",
        "-k",
        "0",
    ]);
    assert!(stderr(&o).contains("must be at least 1"), "{}", stderr(&o));
}

#[test]
fn explain_prints_each_query_tokens_best_match_summing_to_the_score_and_writes_an_svg() {
    let t = Tmp::new();
    let db = db_with(&t, 40);
    let (qpath, q) = one_query(&t);
    let id = id_list(&db)[5].clone();
    let svg = t.p("heat.svg");
    let o = run(&[
        "explain",
        s(&db),
        "passages",
        &id,
        "--query",
        s(&qpath),
        "--plot",
        s(&svg),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = json_lines(&stdout(&o));
    let nq = q.len() / DIM;
    assert_eq!(rows.len(), nq, "one row per query token");
    let lib = {
        let db = Database::open_read_only(&db).expect("open");
        let c = db.collection("passages").expect("collection");
        let e = c
            .explain(&q, &ExternalId::from(id.as_str()))
            .expect("explain")
            .expect("found");
        let r = c
            .rerank(&q, &[ExternalId::from(id.as_str())], 1)
            .expect("rerank");
        assert_eq!(e.score, r.hits[0].score, "explanation total = rerank score");
        e
    };
    for (r, m) in rows.iter().zip(&lib.matches) {
        assert_eq!(r["query_token"], m.query_token);
        assert_eq!(r["token"], format!("q{}", m.query_token));
        assert_eq!(r["doc_token"], m.doc_token);
        assert_eq!(
            r["doc_label"],
            format!("d{}", m.doc_token),
            "vectors: positions"
        );
        assert_eq!(
            r["similarity"].as_f64().map(|x| x as f32),
            Some(m.similarity)
        );
    }
    assert!(
        stderr(&o).contains(&format!("MaxSim {}", lib.score)),
        "{}",
        stderr(&o)
    );
    let picture = std::fs::read_to_string(&svg).expect("the heatmap was written");
    assert!(picture.starts_with("<svg"), "{}", &picture[..80]);
    // A cell per (query token, document token), plus the background and the scale.
    let cells = picture.matches("<rect").count();
    assert!(cells > nq * lib.doc_tokens, "{cells} rects");
    assert!(
        picture.contains("\nq0\n") && picture.contains("\nd0\n"),
        "labels"
    );
}

#[test]
fn explain_bad_input_is_a_clear_error() {
    let t = Tmp::new();
    let db = db_with(&t, 20);
    let (qpath, _) = one_query(&t);
    let queries = t.p("corpus").join("queries.npy");
    let e = fails(&[
        "explain",
        s(&db),
        "passages",
        "no-such-doc",
        "--query",
        s(&qpath),
    ]);
    assert!(e.contains("has no document with id no-such-doc"), "{e}");
    let e = fails(&[
        "explain",
        s(&db),
        "passages",
        "doc-000001",
        "--query",
        s(&queries),
    ]);
    assert!(
        e.contains("explain takes one query; the query file holds 2"),
        "{e}"
    );
    let e = fails(&[
        "explain",
        s(&db),
        "passages",
        "doc-000001",
        "--query",
        s(&qpath),
        "--plot",
        s(&t.p("h.png")),
    ]);
    assert!(e.contains("SVG only"), "{e}");
}

#[test]
fn search_diversity_flags_give_the_librarys_diverse_top_k_and_reject_bad_thresholds() {
    let t = Tmp::new();
    let db = db_with(&t, 150);
    let (qpath, q) = one_query(&t);
    let rows = json_lines(&ok(&[
        "search",
        s(&db),
        "passages",
        "--query",
        s(&qpath),
        "-k",
        "5",
        "--exhaustive",
        "--max-kept-similarity",
        "0.6",
        "--json",
    ]));
    let plain = json_lines(&ok(&[
        "search",
        s(&db),
        "passages",
        "--query",
        s(&qpath),
        "-k",
        "5",
        "--exhaustive",
        "--json",
    ]));
    let lib = {
        let db = Database::open_read_only(&db).expect("open");
        let c = db.collection("passages").expect("collection");
        let params = SearchParams::exhaustive().with_diversity(Diversity::new(0.9, 0.6));
        c.search(&q, 5, &params).expect("diverse search")
    };
    let want: Vec<String> = lib.iter().map(|h| h.id.to_string()).collect();
    assert_eq!(ids_of(&rows), want);
    assert_ne!(
        ids_of(&rows),
        ids_of(&plain),
        "the thresholds skipped something here"
    );
    // --diverse alone is 0.9 and 0.9.
    let d = json_lines(&ok(&[
        "search",
        s(&db),
        "passages",
        "--query",
        s(&qpath),
        "-k",
        "5",
        "--diverse",
        "--json",
    ]));
    assert_eq!(d.len(), 5);
    for bad in ["1.5", "NaN", "-2", "x"] {
        let o = run(&[
            "search",
            s(&db),
            "passages",
            "--query",
            s(&qpath),
            "--max-query-similarity",
            bad,
        ]);
        assert!(!o.status.success(), "{bad} accepted");
        assert!(
            stderr(&o).contains("--max-query-similarity"),
            "{bad}: {}",
            stderr(&o)
        );
    }
}

#[test]
fn the_shell_reranks_explains_and_keeps_a_diversity_setting() {
    let t = Tmp::new();
    let db = db_with(&t, 150);
    let (qpath, _) = one_query(&t);
    let ids = id_list(&db);
    let script = format!(
        ".mode jsonl\n.diversity 0.9 0.6\n.search {q} -k 5 --exhaustive\n.diversity off\n\
         .search {q} -k 5 --exhaustive\n.rerank --query {q} -k 2 {a} {b} nope\n\
         .explain {a} --query {q}\n.diversity 3 0.5\n.show\n",
        q = s(&qpath),
        a = ids[0],
        b = ids[1],
    );
    let o = run_stdin(&["shell", s(&db)], &script);
    let out = stdout(&o);
    let err = stderr(&o);
    let rows = json_lines(
        &out.lines()
            .filter(|l| l.starts_with('{'))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    let diverse: Vec<String> = ids_of(&rows[..5]);
    let plain: Vec<String> = ids_of(&rows[5..10]);
    let cli_diverse = ids_of(&json_lines(&ok(&[
        "search",
        s(&db),
        "passages",
        "--query",
        s(&qpath),
        "-k",
        "5",
        "--exhaustive",
        "--max-kept-similarity",
        "0.6",
        "--json",
    ])));
    assert_eq!(diverse, cli_diverse, "the setting applies as the flags do");
    assert_ne!(diverse, plain, ".diversity off turns it off");
    assert_eq!(rows[10]["rank"], 1);
    assert_eq!(
        rows.len(),
        10 + 2 + 32,
        "rerank rows, then one row per query token"
    );
    assert!(
        err.contains("not in collection \"passages\" (not scored): nope"),
        "{err}"
    );
    assert!(
        err.contains("diversity: 3 is not a number from -1 to 1"),
        "{err}"
    );
    assert!(out.contains("diversity: off"), "{out}");
}
