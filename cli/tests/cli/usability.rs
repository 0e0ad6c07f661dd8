//! What the command line says, refuses and creates: scripts that go on after errors, one
//! creation rule for every ingest, resumable ingest, messages that name the cause, searches
//! that return what was asked, quiet defaults, shell comforts, and a README that matches
//! `--help`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::common::*;

/// A generated corpus of `docs` documents of dimension 16 (flat.npy, doclens.npy, ids.txt,
/// queries.npy and docs/*.npy).
fn corpus(t: &Tmp, docs: usize) -> PathBuf {
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
        "--formats",
        "npy-dir",
    ]);
    c
}

/// `ingest` arguments for the flat layout of `corpus` into `db`/`coll`, then `extra`.
fn ingest_flat(db: &Path, coll: &str, c: &Path, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = vec![
        "ingest".into(),
        s(db).into(),
        coll.into(),
        s(&c.join("flat.npy")).into(),
        "--doclens".into(),
        s(&c.join("doclens.npy")).into(),
        "--ids".into(),
        s(&c.join("ids.txt")).into(),
    ];
    v.extend(extra.iter().map(|e| (*e).to_owned()));
    v
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// A database with collection "passages" holding the `docs` documents of `corpus`.
fn loaded(t: &Tmp, docs: usize) -> (PathBuf, PathBuf) {
    let c = corpus(t, docs);
    let db = t.p("db");
    create(&db, "passages", 16);
    ok(&strs(&ingest_flat(&db, "passages", &c, &[])));
    (db, c)
}

/// Runs `tessera args` on a pseudo-terminal (util-linux `script`), feeding `input`; returns
/// everything the terminal showed.
fn on_a_terminal(args: &[&str], input: &str) -> String {
    let bin = env!("CARGO_BIN_EXE_tessera");
    let quote = |a: &str| format!("'{}'", a.replace('\'', r"'\''"));
    let cmd = std::iter::once(bin)
        .chain(args.iter().copied())
        .map(quote)
        .collect::<Vec<_>>()
        .join(" ");
    let mut child = Command::new("script")
        .args(["-qefc", &cmd, "/dev/null"])
        .env("TERM", "xterm")
        .env(
            "TESSERA_HISTORY",
            std::env::temp_dir().join("tessera-test-history"),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("util-linux `script` runs the binary on a pseudo-terminal");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        // Ctrl-C gets a write of its own: the line editor discards input that arrives while
        // it sets up the next prompt.
        for chunk in input.split_inclusive(['\t', '\n', '\u{3}']) {
            stdin
                .write_all(chunk.as_bytes())
                .expect("write to the terminal");
            stdin.flush().expect("flush");
            // Keys arrive one read at a time, as typed.
            std::thread::sleep(std::time::Duration::from_millis(150));
        }
    }
    let o = child.wait_with_output().expect("script finishes");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

// 1. Scripts behave one way.

#[test]
fn dash_c_commands_go_on_after_an_error_and_exit_1_like_a_piped_script() {
    let t = Tmp::new();
    let db = t.p("db");
    create(&db, "c", 4);
    let args = [
        "shell",
        s(&db),
        "-c",
        ".frobnicate",
        "-c",
        ".use nope",
        "-c",
        ".collections",
    ];
    let o = run(&args);
    assert_eq!(o.status.code(), Some(1), "a failed command makes exit 1");
    let err = stderr(&o);
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error: ")).count(),
        2,
        "{err}"
    );
    assert_eq!(
        json_lines(&stdout(&o))[0]["name"],
        "c",
        "the command after the errors ran"
    );
    // The same lines piped in give the same output and exit code.
    let piped = run_stdin(&["shell", s(&db)], ".frobnicate\n.use nope\n.collections\n");
    assert_eq!(piped.status.code(), Some(1));
    assert_eq!(stdout(&piped), stdout(&o));
}

#[test]
fn dash_c_with_bail_stops_at_the_first_error() {
    let t = Tmp::new();
    let db = t.p("db");
    create(&db, "c", 4);
    let o = run(&[
        "shell",
        s(&db),
        "--bail",
        "-c",
        ".use nope",
        "-c",
        ".collections",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).is_empty(), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("stopping: .bail is on"),
        "{}",
        stderr(&o)
    );
}

// 2. One creation rule for every ingest path.

#[test]
fn ingest_into_a_missing_collection_names_the_create_command_and_create_makes_it() {
    let t = Tmp::new();
    let c = corpus(&t, 20);
    let db = t.p("db");
    // No database yet.
    let err = fails(&strs(&ingest_flat(&db, "passages", &c, &[])));
    assert!(
        err.contains(&format!("tessera create {} passages --dim 16", s(&db))),
        "{err}"
    );
    assert!(err.contains("--create"), "{err}");
    assert!(!db.exists(), "nothing was created");
    // A database without that collection.
    create(&db, "other", 8);
    let err = fails(&strs(&ingest_flat(&db, "passages", &c, &[])));
    assert!(err.contains("no collection named \"passages\""), "{err}");
    assert!(
        err.contains(&format!("tessera create {} passages --dim 16", s(&db))),
        "{err}"
    );
    // Every input format infers the dimension for --create.
    for (name, input) in [
        ("flat", None),
        ("dir", Some(c.join("docs"))),
        ("one", Some(c.join("docs").join("doc-000003.npy"))),
    ] {
        let args = match &input {
            None => ingest_flat(&db, name, &c, &["--create"]),
            Some(p) => vec![
                "ingest".into(),
                s(&db).into(),
                name.into(),
                s(p).into(),
                "--create".into(),
            ],
        };
        let o = run(&strs(&args));
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(&format!("created collection \"{name}\" (dim 16")),
            "{}",
            stderr(&o)
        );
    }
    assert_eq!(documents(&db, "flat"), 20);
    assert_eq!(documents(&db, "dir"), 20);
    assert_eq!(documents(&db, "one"), 1);
    // --create on an existing collection just ingests.
    ok(&strs(&ingest_flat(
        &db,
        "flat",
        &c,
        &["--create", "--upsert"],
    )));
    assert_eq!(documents(&db, "flat"), 20);
    // A fresh database too.
    let fresh = t.p("fresh");
    ok(&strs(&ingest_flat(&fresh, "p", &c, &["--create"])));
    assert_eq!(documents(&fresh, "p"), 20);
}

#[test]
fn ingest_help_states_the_creation_rule() {
    let help = ok(&["ingest", "--help"]);
    assert!(
        help.contains("The collection must exist, unless --create"),
        "{help}"
    );
    assert!(help.contains("--create"), "{help}");
    assert!(help.contains("--skip-existing"), "{help}");
}

// 3. Resumable ingest.

#[test]
fn skip_existing_resumes_an_ingest_and_counts_the_skipped_documents() {
    let t = Tmp::new();
    let c = corpus(&t, 40);
    let db = t.p("db");
    create(&db, "p", 16);
    // A first run that stopped part way: the first 10 documents.
    let part = t.p("part");
    std::fs::create_dir(&part).expect("mkdir");
    let mut names: Vec<PathBuf> = std::fs::read_dir(c.join("docs"))
        .expect("list docs")
        .map(|e| e.expect("entry").path())
        .collect();
    names.sort();
    for p in &names[..10] {
        std::fs::copy(p, part.join(p.file_name().expect("name"))).expect("copy");
    }
    ok(&["ingest", s(&db), "p", s(&part)]);
    let all = c.join("docs");
    // Without the flag the overlap is refused, naming the option.
    let err = fails(&["ingest", s(&db), "p", s(&all)]);
    assert!(err.contains("already exists"), "{err}");
    for extra in [&[][..], &["--no-validate"][..]] {
        let db2 = t.p(&format!("db{}", extra.len()));
        create(&db2, "p", 16);
        ok(&["ingest", s(&db2), "p", s(&part)]);
        let args = [
            &["ingest", s(&db2), "p", s(&all), "--skip-existing", "--json"],
            extra,
        ]
        .concat();
        let o = run(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        let v = &json_lines(&stdout(&o))[0];
        assert_eq!(v["documents"], 30, "{v}");
        assert_eq!(v["skipped"], 10, "{v}");
        assert_eq!(documents(&db2, "p"), 40);
    }
    // The human summary says it too, and a second resume skips everything.
    let o = run(&["ingest", s(&db), "p", s(&all), "--skip-existing"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("committed 30 documents") && stderr(&o).contains("10 skipped"),
        "{}",
        stderr(&o)
    );
    let o = run(&["ingest", s(&db), "p", s(&all), "--skip-existing"]);
    assert!(
        stderr(&o).contains("committed 0 documents") && stderr(&o).contains("40 skipped"),
        "{}",
        stderr(&o)
    );
    assert_eq!(documents(&db, "p"), 40);
    // --skip-existing and --upsert ask for opposite things.
    let o = run(&[
        "ingest",
        s(&db),
        "p",
        s(&all),
        "--skip-existing",
        "--upsert",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

// 4. Messages that point at the cause.

#[test]
fn a_flat_file_without_doclens_is_told_it_needs_doclens() {
    let t = Tmp::new();
    let c = corpus(&t, 30);
    let db = t.p("db");
    ok(&["create", s(&db), "p", "--dim", "16", "--max-tokens", "64"]);
    let err = fails(&["ingest", s(&db), "p", s(&c.join("flat.npy"))]);
    assert!(
        err.contains("flat.npy") && err.contains("needs --doclens"),
        "{err}"
    );
}

#[test]
fn search_without_a_query_names_every_kind_of_query() {
    let o = run(&["search", "db", "c"]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    for option in ["--query", "--text", "--like"] {
        assert!(err.contains(option), "{option} missing from: {err}");
    }
}

#[test]
fn search_like_on_the_command_line_uses_a_stored_document() {
    let t = Tmp::new();
    let (db, _) = loaded(&t, 30);
    let out = ok(&[
        "search",
        s(&db),
        "passages",
        "--like",
        "doc-000007",
        "-k",
        "3",
        "--json",
    ]);
    let rows = json_lines(&out);
    assert_eq!(rows.len(), 3, "{out}");
    assert_eq!(rows[0]["query"], "doc-000007");
    assert_eq!(
        rows[0]["id"], "doc-000007",
        "a document is its own best match"
    );
    let err = fails(&["search", s(&db), "passages", "--like", "nope"]);
    assert!(err.contains("no document with id nope"), "{err}");
}

#[test]
fn a_mistyped_collection_name_lists_the_collections_and_suggests_the_closest() {
    let t = Tmp::new();
    let (db, c) = loaded(&t, 10);
    create(&db, "images", 16);
    let q = c.join("queries.npy");
    for args in [
        vec!["search", s(&db), "pasages", "--query", s(&q)],
        vec!["info", s(&db), "pasages"],
        vec!["delete", s(&db), "pasages", "doc-000001"],
    ] {
        let err = fails(&args);
        assert!(
            err.contains("no collection named \"pasages\"")
                && err.contains("did you mean \"passages\"?")
                && err.contains("(collections: images, passages)"),
            "{args:?}: {err}"
        );
    }
    let o = run(&["shell", s(&db), "-c", ".use imgaes"]);
    assert!(
        stderr(&o).contains("did you mean \"images\"?"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn an_os_error_is_printed_once() {
    let t = Tmp::new();
    let file = t.p("plain-file");
    std::fs::write(&file, b"not a directory").expect("write");
    let inside = file.join("db");
    for args in [
        vec!["create", s(&inside), "c", "--dim", "4"],
        vec!["shell", s(&inside), "-c", ".tables"],
        vec!["ingest", s(&inside), "c", s(&file), "--create"],
    ] {
        let err = fails(&args);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert_eq!(
            err.matches("os error 20").count(),
            1,
            "{args:?} repeats the OS error: {err}"
        );
    }
}

#[test]
fn a_garbage_npy_header_is_one_line() {
    let t = Tmp::new();
    let db = t.p("db");
    create(&db, "c", 4);
    let bad = t.p("bad.npy");
    let header = b"{'descr': <f4', 'fortran_order': Maybe, 'shape': (3, 4), }";
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    let padded = header.len() + 1 + (64 - (10 + header.len() + 1) % 64) % 64;
    bytes.extend_from_slice(&(padded as u16).to_le_bytes());
    bytes.extend_from_slice(header);
    bytes.resize(10 + padded - 1, b' ');
    bytes.push(b'\n');
    bytes.extend_from_slice(&[0u8; 48]);
    std::fs::write(&bad, &bytes).expect("write");
    let err = fails(&["ingest", s(&db), "c", s(&bad)]);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains("bad.npy: not a valid .npy file"), "{err}");
}

// 5. Results are what was asked.

#[test]
fn zero_k_zero_nprobe_and_empty_query_text_are_refused() {
    let t = Tmp::new();
    let (db, c) = loaded(&t, 10);
    let q = c.join("queries.npy");
    for (extra, needle) in [
        (&["--query", s(&q), "-k", "0"][..], "must be at least 1"),
        (
            &["--query", s(&q), "--nprobe", "0"][..],
            "must be at least 1",
        ),
        (&["--text", ""][..], "the query text is empty"),
        (&["--text", "   "][..], "the query text is empty"),
    ] {
        let o = run(&[&["search", s(&db), "passages"][..], extra].concat());
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(needle), "{extra:?}: {}", stderr(&o));
        assert!(stdout(&o).is_empty());
    }
    let o = run(&["shell", s(&db), "-c", &format!(".search {} -k 0", s(&q))]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("must be at least 1"), "{}", stderr(&o));
}

#[test]
fn k_larger_than_the_collection_returns_every_live_document() {
    let t = Tmp::new();
    let (db, c) = loaded(&t, 60);
    let out = ok(&[
        "search",
        s(&db),
        "passages",
        "--query",
        s(&c.join("queries.npy")),
        "-k",
        "5000",
        "--json",
    ]);
    let rows = json_lines(&out);
    for q in 0..2 {
        let hits = rows.iter().filter(|r| r["query"] == q).count();
        assert_eq!(hits, 60, "query {q}: min(k, live documents) hits");
    }
}

// 6. Quiet by default.

#[test]
fn search_is_quiet_about_the_device_unless_asked() {
    let t = Tmp::new();
    let (db, c) = loaded(&t, 20);
    let q = c.join("queries.npy");
    let base = ["search", s(&db), "passages", "--query", s(&q), "--json"];
    let o = run(&base);
    assert!(o.status.success());
    assert_eq!(stderr(&o), "", "a plain search prints only results");
    let gpu = !ok(&["shell", "-c", ".device auto"]).contains("auto -> cpu");
    let o = run(&[&base[..], &["-v"]].concat());
    assert!(o.status.success());
    if gpu {
        assert_eq!(stderr(&o), "", "nothing to explain on a GPU");
    } else {
        let err = stderr(&o);
        assert_eq!(
            err.matches("tessera: searching on the CPU: ").count(),
            1,
            "-v explains the CPU once: {err}"
        );
    }
    let o = run(&["info", s(&db), "--mode", "table"]);
    assert!(
        stderr(&o).contains("search device: auto -> "),
        "info shows the device: {}",
        stderr(&o)
    );
    let o = run(&["info", s(&db), "--json"]);
    assert_eq!(stderr(&o), "", "JSON info stays rows only");
}

#[test]
fn ingest_json_prints_only_the_json_summary() {
    let t = Tmp::new();
    let c = corpus(&t, 20);
    let db = t.p("db");
    create(&db, "p", 16);
    let o = run(&strs(&ingest_flat(&db, "p", &c, &["--json"])));
    assert!(o.status.success());
    assert_eq!(stderr(&o), "", "no human summary with --json");
    assert_eq!(json_lines(&stdout(&o))[0]["documents"], 20);
}

#[test]
fn the_progress_bar_shows_validation_as_its_own_phase() {
    let t = Tmp::new();
    let c = corpus(&t, 3000);
    let db = t.p("db");
    create(&db, "p", 16);
    let screen = on_a_terminal(&strs(&ingest_flat(&db, "p", &c, &[])), "");
    assert!(screen.contains("committed 3000 documents"), "{screen}");
    // Every redraw is its own segment between carriage returns / line clears.
    let draws: Vec<&str> = screen
        .split(['\r', '\n'])
        .filter(|d| d.contains(" docs"))
        .collect();
    assert!(
        draws.iter().any(|d| d.contains("validating")),
        "a validation bar: {screen:?}"
    );
    for d in &draws {
        if d.contains("validating") {
            assert!(!d.contains("ETA"), "no ETA while validating: {d:?}");
        }
        if d.contains("ingesting") && d.contains(" 0/3000 docs") {
            assert!(!d.contains("ETA"), "no ETA before a batch committed: {d:?}");
        }
    }
}

// 7. Shell comforts.

#[test]
fn tab_lists_the_candidates_instead_of_cycling() {
    let t = Tmp::new();
    let db = t.p("db");
    create(&db, "passages", 4);
    create(&db, "pictures", 4);
    // `.c` then Tab twice: the commands starting with c are listed.
    let screen = on_a_terminal(&["shell", s(&db)], ".c\t\t\u{3}.use p\t\t\u{3}.quit\n");
    assert!(
        screen.contains(".collections") && screen.contains(".create"),
        "command candidates listed: {screen:?}"
    );
    assert!(
        screen.contains("passages") && screen.contains("pictures"),
        "collection candidates listed: {screen:?}"
    );
}

#[test]
fn help_wraps_at_word_boundaries_within_80_columns() {
    let out = ok(&["shell", "-c", ".help"]);
    for line in out.lines() {
        assert!(line.chars().count() <= 80, "too long: {line:?}");
        assert!(
            line.matches('[').count() == line.matches(']').count(),
            "an option group is split: {line:?}"
        );
    }
    // The long description reads whole across its lines.
    let flat = out.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        flat.contains(
            "Set where searches run (auto, cpu, cuda, cuda:N); no argument: show what it resolves to"
        ),
        "{out}"
    );
}

#[test]
fn timer_reports_neither_itself_nor_a_failed_command() {
    let t = Tmp::new();
    let db = t.p("db");
    create(&db, "c", 4);
    let o = run(&[
        "shell",
        s(&db),
        "-c",
        ".timer on",
        "-c",
        ".frobnicate",
        "-c",
        ".collections",
        "-c",
        ".timer off",
    ]);
    let err = stderr(&o);
    let lines: Vec<&str> = err.lines().filter(|l| !l.starts_with("opened ")).collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(lines[0].starts_with("error: unknown command"), "{err}");
    assert!(
        lines[1].starts_with("time: "),
        "only .collections is timed: {err}"
    );
}

#[test]
fn tables_and_schema_work_as_sqlite_users_type_them() {
    let t = Tmp::new();
    let db = t.p("db");
    create(&db, "c", 4);
    let out = ok(&[
        "shell",
        s(&db),
        "-c",
        ".tables",
        "-c",
        ".schema c",
        "-c",
        "tables",
    ]);
    let rows = json_lines(&out);
    assert_eq!(rows.len(), 3, "{out}");
    assert_eq!(rows[0]["name"], "c");
    assert_eq!(rows[1]["nbits"], 2, ".schema is .info");
    assert_eq!(rows[2]["name"], "c");
    let help = ok(&["shell", "-c", ".help"]);
    assert!(
        help.contains(".tables") && help.contains(".schema"),
        "{help}"
    );
}

// 8. The README matches --help.

/// The README's lines of the synopsis of `tessera SUB` (continuation lines included).
fn readme_synopsis(readme: &str, sub: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in readme.lines() {
        let l = line.trim();
        if let Some(rest) = l.strip_prefix("tessera ") {
            inside = rest.split_whitespace().next() == Some(sub);
        } else if !l.starts_with('[') {
            inside = false;
        }
        if inside {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

#[test]
fn the_readme_shows_every_option_of_every_subcommand() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .expect("README.md");
    let quick = readme.find("## Quick start").expect("a CLI quick start");
    let library = readme
        .find("## Using the library")
        .expect("a library section");
    assert!(quick < library, "the quick start comes before the library");
    for sub in [
        "create", "ingest", "search", "rerank", "explain", "get", "list", "export", "delete",
        "info", "encode", "shell", "generate",
    ] {
        let help = ok(&[sub, "--help"]);
        let synopsis = readme_synopsis(&readme, sub);
        assert!(
            !synopsis.is_empty(),
            "no `tessera {sub}` synopsis in README"
        );
        for word in help.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-')) {
            let is_option = (word.starts_with("--") && word.len() > 2)
                || (word.len() == 2 && word.starts_with('-') && word != "--");
            if !is_option || ["--help", "-h", "--verbose", "-v"].contains(&word) {
                continue;
            }
            assert!(
                synopsis.contains(word),
                "README's `tessera {sub}` lacks {word}:\n{synopsis}"
            );
        }
    }
    assert!(readme.contains("-v"), "the global -v is documented");
}
