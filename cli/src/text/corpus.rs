//! The text-corpus reader of `ingest --text` and `encode`: JSON lines of
//! `{"id": …, "text": "…", "metadata": {…}}`, each line checked and refused with a message
//! naming the file, the line and the id.
//!
//! Separate from the encode pipeline (`text.rs`) so that it needs neither the engine nor the
//! encoder: the fuzz targets (`tests/fuzz`) compile this same file.

use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;
use tessera::ExternalId;

use crate::formats::jsonl::json_id;
use crate::formats::lines::{self, Line, MAX_LINE_BYTES};
use crate::formats::{Locator, Place};

/// One document of a text corpus.
pub struct TextDoc {
    /// Its id.
    pub id: ExternalId,
    /// Its text.
    pub text: String,
    /// Optional JSON metadata.
    pub metadata: Option<Value>,
    /// File and line.
    pub place: Place,
}

impl TextDoc {
    /// "file: line n (id …)", for messages.
    pub fn describe(&self) -> String {
        format!("{} (id {})", self.place, self.id)
    }
}

#[derive(serde::Deserialize)]
struct TextLine {
    id: Option<Value>,
    text: Option<Value>,
    metadata: Option<Value>,
}

/// Reads the documents of JSON-lines text files, one after the other:
/// `{"id": "…" or 123, "text": "…", "metadata": {…}}` per line (other keys are ignored;
/// blank lines are skipped).
pub struct TextStream<'a> {
    paths: &'a [PathBuf],
    next: usize,
    current: Option<(Arc<str>, BufReader<File>, usize)>,
    buf: Vec<u8>,
}

impl<'a> TextStream<'a> {
    /// A stream over `paths` (each opened when reached).
    pub fn new(paths: &'a [PathBuf]) -> Self {
        TextStream {
            paths,
            next: 0,
            current: None,
            buf: Vec::new(),
        }
    }

    /// The next document, or `None` at the end of the last file.
    pub fn next_doc(&mut self) -> Result<Option<TextDoc>> {
        loop {
            if self.current.is_none() {
                let Some(path) = self.paths.get(self.next) else {
                    return Ok(None);
                };
                self.next += 1;
                let f =
                    File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
                self.current = Some((
                    Arc::from(path.display().to_string()),
                    BufReader::with_capacity(1 << 20, f),
                    0,
                ));
            }
            let Some((file, reader, line)) = &mut self.current else {
                continue;
            };
            let read = lines::read_line(reader, &mut self.buf, MAX_LINE_BYTES)
                .with_context(|| format!("{file}: cannot read line {}", *line + 1))?;
            if read == Line::End {
                self.current = None;
                continue;
            }
            *line += 1;
            let place = Place {
                file: file.clone(),
                at: Locator::Line(*line),
            };
            if read == Line::TooLong {
                bail!("{place}: {}", lines::too_long_message());
            }
            let text = match std::str::from_utf8(&self.buf) {
                Ok(t) => t.trim(),
                Err(e) => bail!(
                    "{place}: invalid UTF-8 at byte {} of the line",
                    e.valid_up_to()
                ),
            };
            if text.is_empty() {
                continue;
            }
            let parsed: TextLine = serde_json::from_str(text).map_err(|e| {
                let why = if e.is_eof() {
                    "line ends inside the document (truncated?)".to_owned()
                } else {
                    e.to_string()
                };
                anyhow!("{place}: not a valid JSON text document: {why}")
            })?;
            let Some(id) = parsed.id else {
                bail!("{place}: the document has no \"id\"");
            };
            let id = json_id(&id).map_err(|why| anyhow!("{place}: {why}"))?;
            let text = match parsed.text {
                Some(Value::String(s)) if !s.trim().is_empty() => s,
                Some(Value::String(_)) => bail!("{place} (id {id}): \"text\" is empty"),
                Some(other) => bail!(
                    "{place} (id {id}): \"text\" must be a string, not {}",
                    json_kind(&other)
                ),
                None => bail!("{place} (id {id}): the document has no \"text\""),
            };
            return Ok(Some(TextDoc {
                id,
                text,
                metadata: parsed.metadata.filter(|m| !m.is_null()),
                place,
            }));
        }
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}
