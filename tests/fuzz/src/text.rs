//! Target for the text-corpus reader of `ingest --text` and `encode`
//! (`cli/src/text/corpus.rs`, compiled in here from the same file).

#[path = "../../../cli/src/text/corpus.rs"]
#[allow(dead_code, missing_docs, clippy::all)]
mod corpus;

use std::path::PathBuf;

use corpus::TextStream;

/// The most documents read from one input.
const DOC_LIMIT: usize = 4096;

/// A text corpus: the input read as two files in a row (the reader moves from one file to
/// the next), every document checked as the reader promises.
pub fn text_corpus(data: &[u8]) {
    let dir = tempfile::tempdir().expect("a temporary directory for the fuzz input");
    let path = dir.path().join("corpus.jsonl");
    std::fs::write(&path, data).expect("writing the fuzz input");
    let paths: Vec<PathBuf> = vec![path.clone(), path];
    let mut stream = TextStream::new(&paths);
    for _ in 0..DOC_LIMIT {
        match stream.next_doc() {
            Ok(Some(doc)) => {
                assert!(
                    !doc.text.trim().is_empty(),
                    "{}: empty text",
                    doc.describe()
                );
                if let tessera_storage::ExternalId::Str(s) = &doc.id {
                    assert!(!s.is_empty(), "{}: empty id", doc.describe());
                }
                assert!(doc.metadata.as_ref().is_none_or(|m| !m.is_null()));
            }
            Ok(None) | Err(_) => break,
        }
    }
}
