//! Ctrl-C (SIGINT) stops an ingest between batches: what committed stays, the rest does not
//! land, and in the shell the next command still runs.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// Waits until the collection has committed documents (seen through a read-only open).
fn wait_for_first_commit(db: &Path, child: &mut Child) {
    let start = Instant::now();
    loop {
        assert!(
            child.try_wait().expect("child status").is_none(),
            "the ingest ended before any check"
        );
        let o = run(&["info", s(db), "c", "--json"]);
        if o.status.success()
            && json_lines(&stdout(&o))[0]["documents"]
                .as_u64()
                .is_some_and(|n| n > 0)
        {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no commit within a minute"
        );
        std::thread::sleep(Duration::from_millis(30));
    }
}

fn sigint(child: &Child) {
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

/// The number before " documents (" in an "interrupted: N documents (...) committed" line.
fn committed(stderr: &str) -> u64 {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("interrupted: "))
        .unwrap_or_else(|| panic!("no interrupted line in:\n{stderr}"));
    line.trim_start_matches("interrupted: ")
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {line:?}"))
}

fn setup(t: &Tmp) -> (std::path::PathBuf, std::path::PathBuf) {
    let c = t.p("corpus");
    ok(&[
        "generate",
        s(&c),
        "--docs",
        "3000",
        "--dim",
        "8",
        "--queries",
        "1",
    ]);
    let db = t.p("db");
    create(&db, "c", 8);
    (c, db)
}

#[cfg(unix)]
#[test]
fn ctrl_c_stops_a_command_line_ingest_between_batches() {
    let t = Tmp::new();
    let (c, db) = setup(&t);
    // One document per batch: thousands of durable commits, seconds of work.
    let mut child = bin()
        .args([
            "ingest",
            s(&db),
            "c",
            s(&c.join("flat.npy")),
            "--doclens",
            s(&c.join("doclens.npy")),
        ])
        .args(["--batch-tokens", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ingest starts");
    wait_for_first_commit(&db, &mut child);
    sigint(&child);
    let o = child.wait_with_output().expect("ingest exits");
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(130), "{err}");
    assert!(
        err.contains("the rest of the input was not ingested"),
        "{err}"
    );
    let n = committed(&err);
    assert!(n > 0 && n < 3000, "{n}");
    assert_eq!(
        documents(&db, "c"),
        n,
        "exactly the reported batches landed"
    );
}

#[cfg(unix)]
#[test]
fn ctrl_c_in_the_shell_cancels_the_command_and_the_shell_goes_on() {
    let t = Tmp::new();
    let (c, db) = setup(&t);
    let script = format!(
        ".ingest {} --doclens {} --batch-tokens 1\n.info c\n",
        s(&c.join("flat.npy")),
        s(&c.join("doclens.npy"))
    );
    let mut child = bin()
        .args(["shell", s(&db)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("shell starts");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(script.as_bytes()).expect("script");
    }
    wait_for_first_commit(&db, &mut child);
    sigint(&child);
    let o = child.wait_with_output().expect("shell exits");
    let err = stderr(&o);
    let n = committed(&err);
    assert!(n > 0 && n < 3000, "{n}");
    // The shell ran `.info` after the interrupted command.
    let info = json_lines(&stdout(&o));
    assert_eq!(info.len(), 1, "{}", stdout(&o));
    assert_eq!(info[0]["documents"], n);
    assert_eq!(
        o.status.code(),
        Some(1),
        "a script with a failed command exits 1"
    );
}
