//! Targets for the command line's input readers (`cli/src/formats`, compiled in here from
//! the same files): each input is written to a file, planned as `tessera ingest` plans it,
//! and streamed to the last document.

use std::path::{Path, PathBuf};

use crate::formats;
use crate::formats::{DocStream, Format, PlanRequest};

/// The token limit ingest plans with here: the collection default, small enough that a
/// document's vectors stay small.
const MAX_TOKENS: usize = 512;
/// Dimension used when the input does not yield one.
const FALLBACK_DIM: usize = 4;
/// The most documents streamed from one input.
const DOC_LIMIT: usize = 4096;

/// `.npy` files: one document per file, then the same file as a flat matrix split by
/// document lengths, then as a document-lengths array.
pub fn npy(data: &[u8]) {
    with_dir(|dir| {
        let path = write(dir, "input.npy", data);
        ingest(&path, Format::Npy, None);
        if let Ok(meta) = formats::npy::read_meta(&path)
            && let [rows, _] = meta.shape[..]
        {
            // Two documents, the second possibly empty (which the plan must refuse).
            let lens = format!("[{}, {}]", rows / 2, rows - rows / 2);
            let doclens = write(dir, "doclens.json", lens.as_bytes());
            ingest(&path, Format::NpyFlat, Some(&doclens));
        }
        let _ = formats::read_doclens(&path);
    });
}

/// `.safetensors` files: one tensor per document, or a flat matrix with its lengths.
pub fn safetensors(data: &[u8]) {
    with_dir(|dir| {
        let path = write(dir, "input.safetensors", data);
        ingest(&path, Format::Safetensors, None);
    });
}

/// JSON lines of documents; the same bytes as an id list and as JSON document lengths.
pub fn jsonl(data: &[u8]) {
    with_dir(|dir| {
        let path = write(dir, "input.jsonl", data);
        ingest(&path, Format::Jsonl, None);
        let _ = formats::read_ids(&path);
        let _ = formats::read_doclens(&write(dir, "doclens.json", data));
    });
}

/// Plans `path` as ingest does (dimension from the input, as `ingest --create` infers it)
/// and streams its documents, checking each one's shape.
fn ingest(path: &Path, format: Format, doclens: Option<&Path>) {
    let inputs = [path.to_path_buf()];
    let dim = formats::infer_dim(&inputs, Some(format), doclens.is_some())
        .map_or(FALLBACK_DIM, |d| d as usize);
    let Ok(plan) = formats::plan(&PlanRequest {
        inputs: &inputs,
        format: Some(format),
        doclens,
        ids: None,
        dim,
        max_tokens: MAX_TOKENS,
    }) else {
        return;
    };
    let _ = (plan.known_docs(), plan.known_tokens());
    let mut docs = plan.open();
    for _ in 0..DOC_LIMIT {
        match docs.next_doc() {
            Ok(Some(doc)) => {
                assert_eq!(
                    doc.vectors.len() % dim,
                    0,
                    "{}: rows of {dim}",
                    doc.describe()
                );
            }
            Ok(None) | Err(_) => break,
        }
    }
}

/// Runs `f` in a fresh temporary directory (under `TMPDIR`; scripts/fuzz.sh points it at
/// /dev/shm), removed afterwards.
fn with_dir(f: impl FnOnce(&Path)) {
    let dir = tempfile::tempdir().expect("a temporary directory for the fuzz input");
    f(dir.path());
}

fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, data).expect("writing the fuzz input");
    path
}
