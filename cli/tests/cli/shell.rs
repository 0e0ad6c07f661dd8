//! The shell driven through piped standard input and `-c`.

use crate::common::*;

/// A corpus on disk: flat.npy, doclens.npy, ids.txt, queries.npy (dim 16).
fn corpus_dir(t: &Tmp, docs: usize) -> std::path::PathBuf {
    let c = t.p("corpus");
    ok(&[
        "generate",
        s(&c),
        "--docs",
        &docs.to_string(),
        "--dim",
        "16",
        "--queries",
        "2",
    ]);
    c
}

#[test]
fn a_scripted_session_through_piped_stdin_runs_every_kind_of_command() {
    let t = Tmp::new();
    let c = corpus_dir(&t, 40);
    let db = t.p("db");
    let script = format!(
        "# a comment\n\
         .open {db}\n\
         .create passages --dim 16\n\
         .create other --dim 8\n\
         .collections\n\
         .use passages\n\
         .ingest {flat} --doclens {lens} --ids {ids}\n\
         .info passages\n\
         .search {q} -k 3\n\
         .mode csv\n\
         .search {q} -k 1\n\
         .mode jsonl\n\
         .delete doc-000001 doc-000002\n\
         .info passages\n\
         .drop other\n\
         .collections\n\
         .show\n\
         .quit\n\
         .info\n",
        db = s(&db),
        flat = s(&c.join("flat.npy")),
        lens = s(&c.join("doclens.npy")),
        ids = s(&c.join("ids.txt")),
        q = s(&c.join("queries.npy")),
    );
    let o = run_stdin(&["shell"], &script);
    let out = stdout(&o);
    let err = stderr(&o);
    assert!(o.status.success(), "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        !out.contains("tessera>"),
        "no prompts when stdin is piped: {out}"
    );
    assert!(err.contains("created collection \"passages\""), "{err}");
    assert!(err.contains("committed 40 documents"), "{err}");
    assert!(err.contains("deleted 2 documents"), "{err}");
    assert!(err.contains("dropped collection \"other\""), "{err}");

    let lines: Vec<&str> = out.lines().collect();
    // .collections (jsonl: stdout is piped): two collections.
    assert!(
        lines[0].contains("\"name\":\"other\"") && lines[1].contains("\"name\":\"passages\""),
        "{out}"
    );
    // .info passages after ingest.
    assert!(lines[2].contains("\"documents\":40"), "{out}");
    // .search -k 3 on 2 queries: 6 JSON lines.
    assert!(
        lines[3..9].iter().all(|l| l.starts_with("{\"query\":")),
        "{out}"
    );
    // .mode csv, .search -k 1: header and 2 rows.
    assert_eq!(lines[9], "query,rank,id,score");
    assert!(
        lines[10].starts_with("0,1,doc-") && lines[11].starts_with("1,1,doc-"),
        "{out}"
    );
    // .info after delete.
    assert!(lines[12].contains("\"documents\":38"), "{out}");
    // .collections after .drop: only passages.
    assert!(
        lines[13].contains("\"name\":\"passages\"") && lines.len() > 14,
        "{out}"
    );
    assert!(!lines[14].contains("\"name\""), "{out}");
    // .show
    assert!(
        out.contains("collection: passages") && out.contains("mode: jsonl"),
        "{out}"
    );
    // Nothing after .quit ran (the trailing .info would print another JSON line).
    assert!(
        lines.last().is_some_and(|l| l.contains("echo: off")),
        "{out}"
    );
}

#[test]
fn unknown_commands_and_bad_arguments_print_one_line_and_the_shell_carries_on() {
    let t = Tmp::new();
    let db = t.p("db");
    let script = ".frobnicate\n.create c\n.mode xml\n.search\n.use nope\nsearch nowhere.npy\n.create c --dim 4\n.info\n";
    let o = run_stdin(&["shell", s(&db)], script);
    let err = stderr(&o);
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 6, "one line per failed command:\n{err}");
    assert!(
        errors[0].contains("unknown command \".frobnicate\""),
        "{err}"
    );
    assert!(
        errors[1].contains("--dim") && errors[1].contains("(see .help create)"),
        "{err}"
    );
    assert!(errors[2].contains("invalid value 'xml'"), "{err}");
    assert!(
        errors[3].contains("QUERY") || errors[3].contains("query"),
        "{err}"
    );
    assert!(errors[4].contains("no collection named \"nope\""), "{err}");
    assert!(errors[5].contains("no collection in use"), "{err}");
    // The commands after the errors ran.
    assert!(err.contains("created collection \"c\""), "{err}");
    assert!(stdout(&o).contains("\"name\":\"c\""), "{}", stdout(&o));
    // A script with errors exits non-zero, as sqlite3 does.
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn bail_on_stops_the_script_at_the_first_error() {
    let t = Tmp::new();
    let db = t.p("db");
    let o = run_stdin(
        &["shell", s(&db)],
        ".bail on\n.create a --dim 4\n.use missing\n.create b --dim 4\n",
    );
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("stopping: .bail is on"), "{err}");
    assert!(!err.contains("created collection \"b\""), "{err}");
    // --bail does the same from the command line.
    let o = run_stdin(
        &["shell", s(&db), "--bail"],
        ".use missing\n.create b --dim 4\n",
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(!stderr(&o).contains("created collection \"b\""));
}

#[test]
fn dash_c_runs_one_command_and_exits() {
    let t = Tmp::new();
    let db = t.p("db");
    create(&db, "c", 4);
    let out = ok(&["shell", s(&db), "-c", ".collections"]);
    assert_eq!(json_lines(&out)[0]["name"], "c");
    let out = ok(&["shell", s(&db), "-c", ".mode csv", "-c", "info c"]);
    assert!(out.starts_with("name,dim,nbits,documents"), "{out}");
    let o = run(&["shell", s(&db), "-c", ".use nope"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no collection named \"nope\""));
}

#[test]
fn output_sends_results_to_a_file_and_read_runs_a_script_file() {
    let t = Tmp::new();
    let c = corpus_dir(&t, 20);
    let db = t.p("db");
    let results = t.p("results.csv");
    let script = t.p("script.tsh");
    std::fs::write(
        &script,
        format!(
            ".create p --dim 16\n.ingest {} --doclens {}\n.mode csv\n.output {}\n.search {} -k 2\n.output\n",
            s(&c.join("flat.npy")),
            s(&c.join("doclens.npy")),
            s(&results),
            s(&c.join("queries.npy"))
        ),
    )
    .expect("write script");
    let o = run_stdin(
        &["shell", s(&db)],
        &format!(".read {}\n.info p\n", s(&script)),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let csv = std::fs::read_to_string(&results).expect("results file");
    assert_eq!(csv.lines().count(), 5, "{csv}");
    assert!(csv.starts_with("query,rank,id,score\n"));
    // After `.output` with no file, results come back to stdout (still csv).
    assert!(stdout(&o).starts_with("name,dim,nbits"), "{}", stdout(&o));
}

#[test]
fn search_like_uses_a_stored_document_as_the_query() {
    let t = Tmp::new();
    let c = corpus_dir(&t, 30);
    let db = t.p("db");
    let script = format!(
        ".create p --dim 16\n.ingest {} --doclens {} --ids {}\n.search --like doc-000007 -k 3\n.search --like nope\n",
        s(&c.join("flat.npy")),
        s(&c.join("doclens.npy")),
        s(&c.join("ids.txt")),
    );
    let o = run_stdin(&["shell", s(&db)], &script);
    let rows = json_lines(&stdout(&o));
    assert_eq!(rows.len(), 3);
    assert_eq!(
        rows[0]["id"], "doc-000007",
        "a document is its own best match"
    );
    assert_eq!(rows[0]["query"], "doc-000007");
    assert!(
        stderr(&o).contains("no document with id nope"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn timer_and_echo_report_on_stderr_and_stdout() {
    let t = Tmp::new();
    let db = t.p("db");
    let o = run_stdin(
        &["shell", s(&db), "--echo"],
        ".timer on\n.create c --dim 4\n",
    );
    assert!(o.status.success());
    assert!(
        stdout(&o).contains(".create c --dim 4"),
        "echoed: {}",
        stdout(&o)
    );
    assert!(stderr(&o).contains("time: "), "{}", stderr(&o));
}

#[test]
fn help_lists_every_command_and_explains_one() {
    let out = ok(&["shell", "-c", ".help"]);
    for c in [
        ".open",
        ".collections",
        ".use",
        ".create",
        ".ingest",
        ".search",
        ".rerank",
        ".explain",
        ".diversity",
        ".delete",
        ".info",
        ".mode",
        ".timer",
        ".output",
        ".read",
        ".bail",
        ".quit",
    ] {
        assert!(out.contains(c), "{c} missing from .help:\n{out}");
    }
    let out = ok(&["shell", "-c", ".help ingest"]);
    assert!(
        out.contains("--batch-tokens") && out.contains("--doclens"),
        "{out}"
    );
}

#[test]
fn a_second_writer_falls_back_to_read_only() {
    let t = Tmp::new();
    let db = t.p("db");
    create(&db, "c", 4);
    // Hold the writer lock with a shell waiting on stdin.
    let mut holder = bin()
        .args(["shell", s(&db)])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("holder starts");
    // Wait until the holder has opened the database (it says so on stderr).
    let mut line = String::new();
    let mut err = std::io::BufReader::new(holder.stderr.take().expect("stderr piped"));
    std::io::BufRead::read_line(&mut err, &mut line).expect("holder reports");
    assert!(
        line.starts_with("opened") && !line.contains("read-only"),
        "{line}"
    );
    let o = run(&["shell", s(&db), "-c", ".show"]);
    assert!(stderr(&o).contains("locked"), "{}", stderr(&o));
    assert!(stdout(&o).contains("(read-only)"), "{}", stdout(&o));
    let o = run(&["shell", s(&db), "-c", ".create d --dim 4"]);
    assert!(stderr(&o).contains("read-only"), "{}", stderr(&o));
    assert_eq!(o.status.code(), Some(1));
    drop(holder.stdin.take());
    holder.wait().expect("holder exits");
}

#[test]
fn refine_setting_applies_to_later_searches_and_shows_in_show() {
    let t = Tmp::new();
    let c = corpus_dir(&t, 40);
    let db = t.p("db");
    let script = format!(
        ".open {db}\n\
         .create passages --dim 16\n\
         .ingest {flat} --doclens {lens} --ids {ids}\n\
         .refine\n\
         .refine 0\n\
         .show\n\
         .mode jsonl\n\
         .search {q} -k 2\n\
         .refine 12\n\
         .search {q} -k 2 --refine 0\n\
         .refine auto\n\
         .refine lots\n",
        db = s(&db),
        flat = s(&c.join("flat.npy")),
        lens = s(&c.join("doclens.npy")),
        ids = s(&c.join("ids.txt")),
        q = s(&c.join("queries.npy")),
    );
    let o = run_stdin(&["shell"], &script);
    let (out, err) = (stdout(&o), stderr(&o));
    assert!(
        out.contains("refine: auto (max(64, 4 k) candidates)"),
        "{out}"
    );
    assert!(out.contains("refine: off"), "{out}");
    assert!(out.contains("    refine: off"), ".show lists it: {out}");
    assert!(out.contains("refine: 12 candidates"), "{out}");
    // Two searches of 2 queries x 2 hits each.
    assert_eq!(
        out.lines().filter(|l| l.starts_with("{\"query\"")).count(),
        8,
        "{out}"
    );
    assert!(
        err.contains("\"lots\" is not a number, 0 (off) or auto"),
        "a bad value is refused: {err}"
    );
    assert!(
        !o.status.success(),
        "a script with a failed command exits non-zero"
    );
}
