//! Malformed inputs are rejected with a message naming the file, the document and the
//! reason, and leave the collection unchanged (checked with `tessera info --json`).

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::common::*;

const DIM: usize = 8;
/// Documents ingested before each bad input, so "unchanged" is not "empty".
const GOOD: u64 = 10;

struct Fixture {
    t: Tmp,
    db: PathBuf,
    docs: Vec<(tessera::ExternalId, Vec<f32>)>,
}

impl Fixture {
    fn new() -> Self {
        let t = Tmp::new();
        let db = t.p("db");
        create(&db, "c", DIM);
        let good = docs_of(&corpus(GOOD as usize, DIM, 99));
        let lines: String = good
            .iter()
            .map(|(id, v)| {
                let rows: Vec<&[f32]> = v.chunks(DIM).collect();
                format!(
                    "{}\n",
                    json!({"id": format!("good-{id}"), "embeddings": rows})
                )
            })
            .collect();
        std::fs::write(t.p("good.jsonl"), lines).expect("write");
        ok(&["ingest", s(&db), "c", s(&t.p("good.jsonl"))]);
        let docs = docs_of(&corpus(40, DIM, 5));
        Fixture { t, db, docs }
    }

    /// Runs `ingest` with `args`, expects failure, checks each of `needles` is in stderr and
    /// that the collection still holds exactly the good documents.
    fn rejects(&self, args: &[&str], needles: &[&str]) -> String {
        let mut a = vec!["ingest", s(&self.db), "c"];
        a.extend_from_slice(args);
        let err = fails(&a);
        for n in needles {
            assert!(err.contains(n), "stderr lacks {n:?}:\n{err}");
        }
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert_eq!(
            documents(&self.db, "c"),
            GOOD,
            "the collection changed: {err}"
        );
        err
    }

    fn flat(&self) -> (Vec<f32>, Vec<i64>) {
        let flat = self
            .docs
            .iter()
            .flat_map(|(_, v)| v.iter().copied())
            .collect();
        let lens = self
            .docs
            .iter()
            .map(|(_, v)| (v.len() / DIM) as i64)
            .collect();
        (flat, lens)
    }

    /// flat.npy + doclens.npy + ids.txt of the 40 documents; returns the paths.
    fn write_flat(&self, flat: &[f32], lens: &[i64]) -> (PathBuf, PathBuf, PathBuf) {
        let (f, l, i) = (
            self.t.p("flat.npy"),
            self.t.p("doclens.npy"),
            self.t.p("ids.txt"),
        );
        write_npy_f32(&f, flat.len() / DIM, DIM, flat);
        write_npy(&l, "<i8", &[lens.len() as u64], false, lens);
        let ids: String = self.docs.iter().map(|(id, _)| format!("{id}\n")).collect();
        std::fs::write(&i, ids).expect("write ids");
        (f, l, i)
    }

    fn jsonl(&self, name: &str, lines: &[String]) -> PathBuf {
        let p = self.t.p(name);
        std::fs::write(&p, lines.join("\n") + "\n").expect("write");
        p
    }

    fn json_doc(&self, i: usize) -> String {
        let (id, v) = &self.docs[i];
        let rows: Vec<&[f32]> = v.chunks(DIM).collect();
        json!({"id": id.to_string(), "embeddings": rows}).to_string()
    }
}

fn truncate(path: &Path, by: u64) {
    let len = std::fs::metadata(path).expect("stat").len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open");
    f.set_len(len - by).expect("truncate");
}

#[test]
fn a_truncated_npy_header_is_rejected() {
    let f = Fixture::new();
    let p = f.t.p("doc.npy");
    std::fs::write(&p, b"\x93NUMPY\x01\x00\x76\x00{'descr': '<f4', 'fortran_or").expect("write");
    f.rejects(
        &[s(&p)],
        &[
            "doc.npy",
            "not a valid .npy file",
            "header is truncated",
            "nothing committed",
        ],
    );
}

#[test]
fn truncated_npy_data_is_rejected_before_anything_commits() {
    let f = Fixture::new();
    let (flat, lens) = f.flat();
    let (fp, lp, ip) = f.write_flat(&flat, &lens);
    truncate(&fp, 40);
    f.rejects(
        &[s(&fp), "--doclens", s(&lp), "--ids", s(&ip)],
        &["flat.npy", "file is truncated", "only"],
    );
}

#[test]
fn a_non_float_dtype_is_rejected() {
    let f = Fixture::new();
    let p = f.t.p("ints.npy");
    write_npy(&p, "<i4", &[3, DIM as u64], false, &[1i32; 3 * DIM]);
    f.rejects(
        &[s(&p)],
        &[
            "ints.npy",
            "dtype '<i4' is not supported",
            "float16, float32 or float64",
        ],
    );
}

#[test]
fn doclens_that_do_not_add_up_to_the_rows_are_rejected() {
    let f = Fixture::new();
    let (flat, mut lens) = f.flat();
    lens[7] += 1;
    let (fp, lp, ip) = f.write_flat(&flat, &lens);
    f.rejects(
        &[s(&fp), "--doclens", s(&lp), "--ids", s(&ip)],
        &["doclens.npy", "add up to", "flat.npy has"],
    );
}

#[test]
fn an_id_count_that_does_not_match_the_documents_is_rejected() {
    let f = Fixture::new();
    let (flat, lens) = f.flat();
    let (fp, lp, ip) = f.write_flat(&flat, &lens);
    std::fs::write(&ip, "a\nb\nc\n").expect("write");
    f.rejects(
        &[s(&fp), "--doclens", s(&lp), "--ids", s(&ip)],
        &["ids.txt", "3 ids for 40 documents"],
    );
}

#[test]
fn a_zero_or_negative_document_length_is_rejected() {
    let f = Fixture::new();
    let (flat, mut lens) = f.flat();
    let moved = lens[3];
    lens[3] = 0;
    lens[4] += moved;
    let (fp, lp, ip) = f.write_flat(&flat, &lens);
    f.rejects(
        &[s(&fp), "--doclens", s(&lp), "--ids", s(&ip)],
        &["document 3 (id doc-000003)", "no token vectors"],
    );
    lens[3] = -moved;
    lens[4] += 2 * moved;
    let (fp, lp, ip) = f.write_flat(&flat, &lens);
    f.rejects(
        &[s(&fp), "--doclens", s(&lp), "--ids", s(&ip)],
        &["document 3", "negative length"],
    );
}

#[test]
fn bad_json_commits_nothing_even_when_earlier_batches_were_fine() {
    let f = Fixture::new();
    let mut lines: Vec<String> = (0..30).map(|i| f.json_doc(i)).collect();
    lines[24] = "{\"id\": \"x\", \"embeddings\": [[1, 2,]]}".into();
    let p = f.jsonl("bad.jsonl", &lines);
    f.rejects(
        &[s(&p), "--batch-tokens", "40"],
        &[
            "bad.jsonl: line 25",
            "not a valid JSON document",
            "nothing committed",
        ],
    );
}

#[test]
fn a_jsonl_file_cut_off_mid_document_is_rejected() {
    let f = Fixture::new();
    let lines: Vec<String> = (0..5).map(|i| f.json_doc(i)).collect();
    let p = f.jsonl("cut.jsonl", &lines);
    truncate(&p, 30);
    f.rejects(&[s(&p)], &["cut.jsonl: line 5", "truncated"]);
}

#[test]
fn a_wrong_dimension_is_rejected_in_every_format() {
    let f = Fixture::new();
    let p = f.t.p("wide.npy");
    write_npy_f32(&p, 3, DIM + 1, &[0.1; 3 * (DIM + 1)]);
    f.rejects(
        &[s(&p)],
        &["wide.npy", "dimension 9", "collection's dimension is 8"],
    );
    let mut lines: Vec<String> = (0..4).map(|i| f.json_doc(i)).collect();
    lines[2] = json!({"id": "narrow", "embeddings": [vec![0.1; 8], vec![0.2; 7]]}).to_string();
    let p = f.jsonl("narrow.jsonl", &lines);
    f.rejects(
        &[s(&p)],
        &[
            "narrow.jsonl: line 3 (id narrow)",
            "token vector 1 has 7 values",
        ],
    );
    let st = f.t.p("wide.safetensors");
    let bytes: Vec<u8> = [0.5f32; 2 * 9]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let view =
        safetensors::tensor::TensorView::new(safetensors::tensor::Dtype::F32, vec![2, 9], &bytes)
            .expect("view");
    safetensors::serialize_to_file([("d", view)], None, &st).expect("write");
    f.rejects(
        &[s(&st)],
        &["wide.safetensors", "tensor \"d\" has dimension 9"],
    );
}

#[test]
fn nan_in_a_late_document_commits_nothing() {
    let f = Fixture::new();
    let (mut flat, lens) = f.flat();
    let start: i64 = lens[..33].iter().sum();
    flat[(start as usize + 1) * DIM + 5] = f32::NAN;
    let (fp, lp, ip) = f.write_flat(&flat, &lens);
    f.rejects(
        &[
            s(&fp),
            "--doclens",
            s(&lp),
            "--ids",
            s(&ip),
            "--batch-tokens",
            "30",
        ],
        &[
            "flat.npy: document 33 (id doc-000033)",
            "token 1 dimension 5 is NaN",
            "nothing committed",
        ],
    );
}

#[test]
fn infinity_in_jsonl_is_rejected() {
    let f = Fixture::new();
    let mut lines: Vec<String> = (0..6).map(|i| f.json_doc(i)).collect();
    // 1e39 overflows f32 to infinity.
    lines[4] = "{\"id\": \"big\", \"embeddings\": [[1e39, 0, 0, 0, 0, 0, 0, 0]]}".to_string();
    let p = f.jsonl("inf.jsonl", &lines);
    f.rejects(
        &[s(&p)],
        &["inf.jsonl: line 5 (id big)", "token 0 dimension 0 is inf"],
    );
}

#[test]
fn invalid_utf8_in_jsonl_is_rejected() {
    let f = Fixture::new();
    let p = f.t.p("latin1.jsonl");
    let mut bytes = format!("{}\n", f.json_doc(0)).into_bytes();
    bytes.extend_from_slice(b"{\"id\": \"caf\xe9\", \"embeddings\": [[0,0,0,0,0,0,0,1]]}\n");
    std::fs::write(&p, bytes).expect("write");
    f.rejects(
        &[s(&p)],
        &["latin1.jsonl: line 2", "invalid UTF-8 at byte 11"],
    );
}

#[test]
fn duplicate_ids_are_rejected_wherever_they_occur() {
    let f = Fixture::new();
    // Twice in one JSON-lines file, far apart (different batches).
    let mut lines: Vec<String> = (0..20).map(|i| f.json_doc(i)).collect();
    lines[17] = lines[2].clone();
    let p = f.jsonl("dup.jsonl", &lines);
    f.rejects(
        &[s(&p), "--batch-tokens", "30"],
        &[
            "dup.jsonl: line 18 (id doc-000002)",
            "duplicate id doc-000002",
            "already appeared at",
            "dup.jsonl: line 3",
        ],
    );
    // Twice in an ids file.
    let (flat, lens) = f.flat();
    let (fp, lp, ip) = f.write_flat(&flat, &lens);
    let mut ids: Vec<String> = (0..40).map(|i| format!("id{i}")).collect();
    ids[30] = "id5".into();
    std::fs::write(&ip, ids.join("\n")).expect("write");
    f.rejects(
        &[s(&fp), "--doclens", s(&lp), "--ids", s(&ip)],
        &["ids.txt", "duplicate id \"id5\" on lines 6 and 31"],
    );
    // Across two input files.
    let dir = f.t.p("npydir");
    std::fs::create_dir(&dir).expect("mkdir");
    write_npy_f32(&dir.join("doc-000001.npy"), 2, DIM, &[0.3; 2 * DIM]);
    let p = f.jsonl("two.jsonl", &[f.json_doc(0), f.json_doc(1)]);
    f.rejects(
        &[s(&dir), s(&p)],
        &[
            "two.jsonl: line 2",
            "duplicate id doc-000001",
            "doc-000001.npy",
        ],
    );
}

#[test]
fn an_id_already_in_the_collection_needs_upsert() {
    let f = Fixture::new();
    let good0 = format!("good-doc-{:06}", 0);
    let p = f.jsonl(
        "again.jsonl",
        &[
            f.json_doc(0),
            json!({"id": good0, "embeddings": [vec![0.5; 8]]}).to_string(),
        ],
    );
    f.rejects(
        &[s(&p)],
        &["again.jsonl: line 2", "already exists", "--upsert"],
    );
    ok(&["ingest", s(&f.db), "c", s(&p), "--upsert"]);
    assert_eq!(documents(&f.db, "c"), GOOD + 1, "one new, one replaced");
}

#[test]
fn broken_safetensors_files_are_rejected() {
    let f = Fixture::new();
    let bytes: Vec<u8> = [0.5f32; 3 * DIM]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let view =
        safetensors::tensor::TensorView::new(safetensors::tensor::Dtype::F32, vec![3, DIM], &bytes)
            .expect("view");
    let good = safetensors::serialize([("d", view)], None).expect("serialize");
    let p = f.t.p("cut.safetensors");
    std::fs::write(&p, &good[..good.len() - 5]).expect("write");
    f.rejects(&[s(&p)], &["cut.safetensors", "file is truncated"]);
    let p = f.t.p("hdr.safetensors");
    let mut bad = good.clone();
    bad[9] = b'!';
    std::fs::write(&p, &bad).expect("write");
    f.rejects(&[s(&p)], &["hdr.safetensors", "bad header"]);
    let ints: Vec<u8> = [7i32; 3 * DIM]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let view =
        safetensors::tensor::TensorView::new(safetensors::tensor::Dtype::I32, vec![3, DIM], &ints)
            .expect("view");
    let p = f.t.p("ints.safetensors");
    safetensors::serialize_to_file([("d", view)], None, &p).expect("write");
    f.rejects(
        &[s(&p)],
        &[
            "ints.safetensors",
            "tensor \"d\" has dtype I32",
            "not supported",
        ],
    );
}

#[test]
fn unknown_file_types_and_missing_doclens_are_explained() {
    let f = Fixture::new();
    let p = f.t.p("vectors.bin");
    std::fs::write(&p, b"\0\0\0\0").expect("write");
    f.rejects(
        &[s(&p)],
        &["vectors.bin", "cannot tell the input format", "--format"],
    );
    let (flat, lens) = f.flat();
    let (fp, _, _) = f.write_flat(&flat, &lens);
    f.rejects(
        &[s(&fp), "--format", "npy-flat"],
        &["flat.npy", "needs --doclens"],
    );
    f.rejects(
        &[s(&f.t.p("missing.npy"))],
        &["missing.npy", "no such file"],
    );
}

#[test]
fn without_validation_a_late_failure_reports_what_was_committed() {
    let f = Fixture::new();
    let (mut flat, lens) = f.flat();
    let start: i64 = lens[..33].iter().sum();
    flat[start as usize * DIM] = f32::INFINITY;
    let (fp, lp, ip) = f.write_flat(&flat, &lens);
    let err = fails(&[
        "ingest",
        s(&f.db),
        "c",
        s(&fp),
        "--doclens",
        s(&lp),
        "--ids",
        s(&ip),
        "--batch-tokens",
        "60",
        "--no-validate",
    ]);
    assert!(
        err.contains("flat.npy: document 33 (id doc-000033): token 0 dimension 0 is inf"),
        "{err}"
    );
    assert!(
        err.contains("were committed before the failure; the failed batch committed nothing"),
        "{err}"
    );
    // The message's count is exactly what landed: the batches completed before document 33
    // was read (a batch closes when the next document would overflow it, so the batch
    // ending just before document 33 was still open).
    let committed: u64 = err
        .split("; ")
        .find_map(|p| p.split(" documents (").next().and_then(|n| n.parse().ok()))
        .expect("a count of committed documents");
    let rows: Vec<usize> = lens.iter().map(|&l| l as usize).collect();
    let expected: usize = partition(&rows, 60)
        .iter()
        .take_while(|r| r.end < 33)
        .map(|r| r.len())
        .sum();
    assert_eq!(committed, expected as u64);
    assert!(committed > 0 && committed <= 33);
    assert_eq!(documents(&f.db, "c"), GOOD + committed);
}

#[test]
fn a_jsonl_document_without_id_or_embeddings_is_rejected() {
    let f = Fixture::new();
    let p = f.jsonl(
        "noid.jsonl",
        &[
            f.json_doc(0),
            json!({"embeddings": [vec![0.5; 8]]}).to_string(),
        ],
    );
    f.rejects(&[s(&p)], &["noid.jsonl: line 2", "has no \"id\""]);
    let p = f.jsonl(
        "noemb.jsonl",
        &[json!({"id": "x", "text": "no vectors"}).to_string()],
    );
    f.rejects(
        &[s(&p)],
        &["noemb.jsonl: line 1 (id x)", "has no \"embeddings\""],
    );
    let p = f.jsonl(
        "negid.jsonl",
        &[json!({"id": -4, "embeddings": [vec![0.5; 8]]}).to_string()],
    );
    f.rejects(
        &[s(&p)],
        &[
            "negid.jsonl: line 1",
            "id -4 is not a string or a non-negative integer",
        ],
    );
}
