//! Every ingest format round-trips: vectors written in the format from the test, ingested
//! by the CLI, give the same `tessera search --json` results as `Collection::search` on a
//! library-ingested copy of the same vectors (same order, same batches).

use std::collections::HashMap;
use std::path::Path;

use half::{bf16, f16};
use safetensors::tensor::{Dtype, TensorView};
use serde_json::json;
use tessera::{Database, ExternalId};

use crate::common::*;

const DIM: usize = 16;
const K: usize = 5;
const DEFAULT_BATCH: usize = 1_000_000;

struct Case {
    t: Tmp,
    docs: Vec<(ExternalId, Vec<f32>)>,
    queries: Vec<Vec<f32>>,
}

fn case(n_docs: usize, seed: u64) -> Case {
    let c = corpus(n_docs, DIM, seed);
    let queries = c.queries(3, 8, 0.3, seed);
    Case {
        t: Tmp::new(),
        docs: docs_of(&c),
        queries,
    }
}

impl Case {
    /// Ingests through the CLI with `ingest_args`, searches, and compares with the library
    /// on `lib_docs` (the vectors as the file stores them) in batches of `batch_tokens`.
    fn check(
        &self,
        ingest_args: &[&str],
        lib_docs: &[(ExternalId, Vec<f32>)],
        batch_tokens: usize,
    ) {
        let db = self.t.p("cli.db");
        create(&db, "c", DIM);
        let mut args = vec!["ingest", s(&db), "c"];
        args.extend_from_slice(ingest_args);
        let o = run(&args);
        assert!(
            o.status.success(),
            "ingest {ingest_args:?} failed: {}",
            stderr(&o)
        );
        assert_eq!(documents(&db, "c"), lib_docs.len() as u64);
        let q = self.t.p("queries.npy");
        write_queries(&q, &self.queries, DIM);
        let out = ok(&[
            "search",
            s(&db),
            "c",
            "--query",
            s(&q),
            "-k",
            &K.to_string(),
            "--json",
        ]);
        let cli = cli_results(&out, self.queries.len());
        let lib = library_results(
            self.t.0.path(),
            DIM,
            lib_docs,
            batch_tokens,
            &self.queries,
            K,
        );
        assert_same_results(&cli, &lib);
    }

    fn rows(&self, i: usize) -> usize {
        self.docs[i].1.len() / DIM
    }
}

fn round_f16(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| f16::from_f32(x).to_f32()).collect()
}

fn round_bf16(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| bf16::from_f32(x).to_f32()).collect()
}

fn flat_of(docs: &[(ExternalId, Vec<f32>)]) -> (Vec<f32>, Vec<i64>) {
    let flat = docs.iter().flat_map(|(_, v)| v.iter().copied()).collect();
    let lens = docs.iter().map(|(_, v)| (v.len() / DIM) as i64).collect();
    (flat, lens)
}

fn write_ids(path: &Path, docs: &[(ExternalId, Vec<f32>)]) {
    let text: String = docs.iter().map(|(id, _)| format!("{id}\n")).collect();
    std::fs::write(path, text).expect("write ids");
}

fn write_safetensors(path: &Path, tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)>) {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, shape, b)| {
            (
                n.clone(),
                TensorView::new(*d, shape.clone(), b).expect("tensor view"),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None::<HashMap<String, String>>, path)
        .expect("write safetensors");
}

fn le_bytes_f32(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn npy_directory_of_f32_documents_round_trips() {
    let c = case(40, 1);
    let dir = c.t.p("docs");
    std::fs::create_dir(&dir).expect("mkdir");
    for (id, v) in &c.docs {
        write_npy_f32(&dir.join(format!("{id}.npy")), v.len() / DIM, DIM, v);
    }
    c.check(&[s(&dir)], &c.docs, DEFAULT_BATCH);
}

#[test]
fn npy_directory_of_f16_fortran_documents_round_trips() {
    let c = case(30, 2);
    let dir = c.t.p("docs");
    std::fs::create_dir(&dir).expect("mkdir");
    let mut lib = Vec::new();
    for (id, v) in &c.docs {
        let rows = v.len() / DIM;
        let h: Vec<f16> = v.iter().map(|&x| f16::from_f32(x)).collect();
        write_npy(
            &dir.join(format!("{id}.npy")),
            "<f2",
            &[rows as u64, DIM as u64],
            true,
            &to_fortran(&h, rows, DIM),
        );
        lib.push((id.clone(), round_f16(v)));
    }
    c.check(&[s(&dir), "--format", "npy-dir"], &lib, DEFAULT_BATCH);
}

#[test]
fn npy_files_named_one_by_one_round_trip() {
    let c = case(12, 3);
    let mut paths = Vec::new();
    for (id, v) in &c.docs {
        let p = c.t.p(&format!("{id}.npy"));
        // Big-endian f64: converted on the way in.
        let d: Vec<f64> = v.iter().map(|&x| f64::from(x)).collect();
        write_npy(&p, ">f8", &[(v.len() / DIM) as u64, DIM as u64], false, &d);
        paths.push(p);
    }
    let args: Vec<&str> = paths.iter().map(|p| s(p)).collect();
    c.check(&args, &c.docs, DEFAULT_BATCH);
}

#[test]
fn flat_npy_with_npy_doclens_and_ids_round_trips() {
    let c = case(50, 4);
    let (flat, lens) = flat_of(&c.docs);
    write_npy_f32(&c.t.p("flat.npy"), flat.len() / DIM, DIM, &flat);
    write_npy(
        &c.t.p("doclens.npy"),
        "<i8",
        &[lens.len() as u64],
        false,
        &lens,
    );
    write_ids(&c.t.p("ids.txt"), &c.docs);
    c.check(
        &[
            s(&c.t.p("flat.npy")),
            "--doclens",
            s(&c.t.p("doclens.npy")),
            "--ids",
            s(&c.t.p("ids.txt")),
        ],
        &c.docs,
        DEFAULT_BATCH,
    );
}

#[test]
fn flat_npy_fortran_big_endian_with_json_doclens_and_positional_ids_round_trips() {
    let c = case(35, 5);
    let (flat, lens) = flat_of(&c.docs);
    let rows = flat.len() / DIM;
    write_npy(
        &c.t.p("flat.npy"),
        ">f4",
        &[rows as u64, DIM as u64],
        true,
        &to_fortran(&flat, rows, DIM),
    );
    std::fs::write(
        c.t.p("doclens.json"),
        serde_json::to_string(&lens).expect("json"),
    )
    .expect("write");
    let lib: Vec<(ExternalId, Vec<f32>)> = c
        .docs
        .iter()
        .enumerate()
        .map(|(i, (_, v))| (ExternalId::Int(i as u64), v.clone()))
        .collect();
    c.check(
        &[
            s(&c.t.p("flat.npy")),
            "--doclens",
            s(&c.t.p("doclens.json")),
        ],
        &lib,
        DEFAULT_BATCH,
    );
}

#[test]
fn flat_npy_in_many_small_batches_round_trips_batch_for_batch() {
    let c = case(60, 6);
    let (flat, lens) = flat_of(&c.docs);
    write_npy_f32(&c.t.p("flat.npy"), flat.len() / DIM, DIM, &flat);
    write_npy(
        &c.t.p("doclens.npy"),
        "<i4",
        &[lens.len() as u64],
        false,
        &lens.iter().map(|&l| l as i32).collect::<Vec<_>>(),
    );
    write_ids(&c.t.p("ids.txt"), &c.docs);
    let total: usize = (0..c.docs.len()).map(|i| c.rows(i)).sum();
    let batch = total / 5;
    c.check(
        &[
            s(&c.t.p("flat.npy")),
            "--doclens",
            s(&c.t.p("doclens.npy")),
            "--ids",
            s(&c.t.p("ids.txt")),
            "--batch-tokens",
            &batch.to_string(),
        ],
        &c.docs,
        batch,
    );
    let segments =
        json_lines(&ok(&["info", s(&c.t.p("cli.db")), "c", "--json"]))[0]["segments"].clone();
    let rows: Vec<usize> = (0..c.docs.len()).map(|i| c.rows(i)).collect();
    assert_eq!(
        segments,
        partition(&rows, batch).len(),
        "one segment per batch"
    );
    assert!(segments.as_u64().is_some_and(|n| n >= 5));
}

#[test]
fn safetensors_with_one_f32_tensor_per_document_round_trips() {
    let c = case(30, 7);
    let tensors = c
        .docs
        .iter()
        .map(|(id, v)| {
            (
                id.to_string(),
                Dtype::F32,
                vec![v.len() / DIM, DIM],
                le_bytes_f32(v),
            )
        })
        .collect();
    write_safetensors(&c.t.p("docs.safetensors"), tensors);
    c.check(&[s(&c.t.p("docs.safetensors"))], &c.docs, DEFAULT_BATCH);
}

#[test]
fn flat_bf16_safetensors_with_a_doclens_tensor_round_trips() {
    let c = case(40, 8);
    let (flat, lens) = flat_of(&c.docs);
    let bytes: Vec<u8> = flat
        .iter()
        .flat_map(|&x| bf16::from_f32(x).to_le_bytes())
        .collect();
    let lens_bytes: Vec<u8> = lens.iter().flat_map(|x| x.to_le_bytes()).collect();
    write_safetensors(
        &c.t.p("flat.safetensors"),
        vec![
            (
                "embeddings".into(),
                Dtype::BF16,
                vec![flat.len() / DIM, DIM],
                bytes,
            ),
            ("doclens".into(), Dtype::I64, vec![lens.len()], lens_bytes),
        ],
    );
    write_ids(&c.t.p("ids.txt"), &c.docs);
    let lib: Vec<(ExternalId, Vec<f32>)> = c
        .docs
        .iter()
        .map(|(id, v)| (id.clone(), round_bf16(v)))
        .collect();
    c.check(
        &[s(&c.t.p("flat.safetensors")), "--ids", s(&c.t.p("ids.txt"))],
        &lib,
        DEFAULT_BATCH,
    );
}

#[test]
fn flat_f16_safetensors_with_external_doclens_round_trips() {
    let c = case(25, 9);
    let (flat, lens) = flat_of(&c.docs);
    let bytes: Vec<u8> = flat
        .iter()
        .flat_map(|&x| f16::from_f32(x).to_le_bytes())
        .collect();
    write_safetensors(
        &c.t.p("flat.safetensors"),
        vec![(
            "colbert".into(),
            Dtype::F16,
            vec![flat.len() / DIM, DIM],
            bytes,
        )],
    );
    std::fs::write(
        c.t.p("doclens.json"),
        serde_json::to_string(&lens).expect("json"),
    )
    .expect("write");
    let lib: Vec<(ExternalId, Vec<f32>)> = c
        .docs
        .iter()
        .enumerate()
        .map(|(i, (_, v))| (ExternalId::Int(i as u64), round_f16(v)))
        .collect();
    c.check(
        &[
            s(&c.t.p("flat.safetensors")),
            "--doclens",
            s(&c.t.p("doclens.json")),
        ],
        &lib,
        DEFAULT_BATCH,
    );
}

#[test]
fn jsonl_with_string_and_integer_ids_and_metadata_round_trips() {
    let c = case(30, 10);
    let mut text = String::new();
    let mut lib = Vec::new();
    for (i, (id, v)) in c.docs.iter().enumerate() {
        let rows: Vec<&[f32]> = v.chunks(DIM).collect();
        // Every third document has an integer id.
        let (jid, eid) = if i % 3 == 0 {
            (json!(1000 + i), ExternalId::Int(1000 + i as u64))
        } else {
            (json!(id.to_string()), id.clone())
        };
        text.push_str(
            &serde_json::to_string(
                &json!({"id": jid, "embeddings": rows, "metadata": {"title": format!("t{i}")}}),
            )
            .expect("json"),
        );
        text.push('\n');
        lib.push((eid, v.clone()));
    }
    std::fs::write(c.t.p("docs.jsonl"), text).expect("write");
    c.check(
        &[s(&c.t.p("docs.jsonl")), "--batch-tokens", "150"],
        &lib,
        150,
    );
    let db = Database::open_read_only(c.t.p("cli.db")).expect("open");
    let coll = db.collection("c").expect("collection");
    assert_eq!(
        coll.metadata(&lib[1].0).expect("metadata"),
        Some(json!({"title": "t1"}))
    );
    assert_eq!(
        coll.metadata(&ExternalId::Int(1000)).expect("metadata"),
        Some(json!({"title": "t0"}))
    );
}

#[test]
fn inputs_of_different_formats_ingest_together_in_order() {
    let c = case(20, 11);
    let dir = c.t.p("first");
    std::fs::create_dir(&dir).expect("mkdir");
    for (id, v) in &c.docs[..10] {
        write_npy_f32(&dir.join(format!("{id}.npy")), v.len() / DIM, DIM, v);
    }
    let mut text = String::new();
    for (id, v) in &c.docs[10..] {
        let rows: Vec<&[f32]> = v.chunks(DIM).collect();
        text.push_str(
            &serde_json::to_string(&json!({"id": id.to_string(), "embeddings": rows}))
                .expect("json"),
        );
        text.push('\n');
    }
    std::fs::write(c.t.p("rest.ndjson"), text).expect("write");
    c.check(&[s(&dir), s(&c.t.p("rest.ndjson"))], &c.docs, DEFAULT_BATCH);
}
