//! `--device` and `.device`: the CPU answers whatever the device setting when no GPU is
//! usable, a GPU that is asked for by name and cannot be used fails clearly, and bad names
//! are usage errors.

use crate::common::*;

fn small_db(t: &Tmp) -> std::path::PathBuf {
    let corpus = t.p("corpus");
    let db = t.p("db");
    ok(&[
        "generate",
        s(&corpus),
        "--docs",
        "30",
        "--dim",
        "16",
        "--queries",
        "2",
    ]);
    create(&db, "passages", 16);
    ok(&[
        "ingest",
        s(&db),
        "passages",
        s(&corpus.join("flat.npy")),
        "--doclens",
        s(&corpus.join("doclens.npy")),
    ]);
    db
}

#[test]
fn search_device_cpu_equals_the_default_and_a_missing_gpu_is_an_error() {
    let t = Tmp::new();
    let db = small_db(&t);
    let q = t.p("corpus").join("queries.npy");
    let base = [
        "search",
        s(&db),
        "passages",
        "--query",
        s(&q),
        "-k",
        "5",
        "--json",
    ];
    let cpu = ok(&[&base[..], &["--device", "cpu"]].concat());
    assert_eq!(json_lines(&cpu).len(), 10);
    let auto = ok(&["shell", s(&db), "-c", ".device auto"]);
    if auto.contains("device: auto -> cpu") {
        // Without a usable GPU, `auto` is the CPU path: identical output.
        assert_eq!(ok(&base), cpu);
    } else {
        assert!(auto.contains("device: auto -> cuda:0"), "{auto}");
    }
    let err = fails(&[&base[..], &["--device", "cuda:7"]].concat());
    assert!(err.contains("device cuda:7: "), "{err}");
    let o = run(&[&base[..], &["--device", "tpu"]].concat());
    assert_eq!(
        o.status.code(),
        Some(2),
        "a bad device name is a usage error"
    );
    assert!(
        stderr(&o).contains("expected auto, cpu, cuda or cuda:N"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn shell_device_command_sets_and_reports_the_search_device() {
    let t = Tmp::new();
    let db = small_db(&t);
    let out = ok(&["shell", s(&db), "-c", ".device cpu", "-c", ".show"]);
    assert!(out.contains("device: cpu -> cpu"), "{out}");
    assert!(out.contains("    device: cpu"), "{out}");
    let o = run(&["shell", s(&db), "--bail", "-c", ".device cuda:7"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("device cuda:7: "), "{}", stderr(&o));
}
