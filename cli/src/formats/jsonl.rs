//! JSON lines: one document per line, `{"id": …, "embeddings": [[…], …], "metadata": {…}}`,
//! read one line at a time.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use tessera::ExternalId;

use super::lines::{self, Line, MAX_LINE_BYTES};
use super::{DocStream, Locator, Place, SourceDoc};

/// One document line, parsed without a `Vec` per token row: embeddings go straight into
/// one flat buffer, and the first row of the wrong length is recorded (not fatal to the
/// parse) so the error can name the document's id.
struct DocSeed<'a> {
    dim: usize,
    vectors: &'a mut Vec<f32>,
    bad_row: &'a mut Option<(usize, usize)>,
}

struct ParsedDoc {
    id: Option<Value>,
    has_embeddings: bool,
    metadata: Option<Value>,
}

impl<'de> DeserializeSeed<'de> for DocSeed<'_> {
    type Value = ParsedDoc;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<ParsedDoc, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for DocSeed<'_> {
    type Value = ParsedDoc;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object with \"id\" and \"embeddings\"")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ParsedDoc, A::Error> {
        let mut doc = ParsedDoc {
            id: None,
            has_embeddings: false,
            metadata: None,
        };
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match key.as_ref() {
                "id" => doc.id = Some(map.next_value()?),
                "embeddings" | "vectors" => {
                    if doc.has_embeddings {
                        return Err(de::Error::duplicate_field("embeddings"));
                    }
                    doc.has_embeddings = true;
                    map.next_value_seed(RowsSeed {
                        dim: self.dim,
                        vectors: &mut *self.vectors,
                        bad_row: &mut *self.bad_row,
                    })?;
                }
                "metadata" => doc.metadata = map.next_value()?,
                _ => {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
        }
        Ok(doc)
    }
}

/// `[[f32; dim], ...]` appended to a flat buffer.
struct RowsSeed<'a> {
    dim: usize,
    vectors: &'a mut Vec<f32>,
    bad_row: &'a mut Option<(usize, usize)>,
}

impl<'de> DeserializeSeed<'de> for RowsSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for RowsSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a list of token vectors (lists of numbers)")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut row = 0;
        while let Some(n) = seq.next_element_seed(RowSeed {
            vectors: &mut *self.vectors,
        })? {
            if n != self.dim && self.bad_row.is_none() {
                *self.bad_row = Some((row, n));
            }
            row += 1;
        }
        Ok(())
    }
}

/// One token vector appended to the buffer; yields its length.
struct RowSeed<'a> {
    vectors: &'a mut Vec<f32>,
}

impl<'de> DeserializeSeed<'de> for RowSeed<'_> {
    type Value = usize;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for RowSeed<'_> {
    type Value = usize;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a token vector (a list of numbers)")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
        let mut n = 0;
        while let Some(x) = seq.next_element::<f32>()? {
            self.vectors.push(x);
            n += 1;
        }
        Ok(n)
    }
}

/// Converts a JSON id (a string or a non-negative integer) to an [`ExternalId`].
pub fn json_id(v: &Value) -> Result<ExternalId, String> {
    match v {
        Value::String(s) if !s.is_empty() => Ok(ExternalId::Str(s.clone())),
        Value::Number(n) => n
            .as_u64()
            .map(ExternalId::Int)
            .ok_or_else(|| format!("id {n} is not a string or a non-negative integer")),
        other => Err(format!(
            "id {other} is not a non-empty string or a non-negative integer"
        )),
    }
}

/// Streams the documents of one JSON-lines file.
pub struct JsonlStream {
    file: Arc<str>,
    reader: BufReader<File>,
    line: usize,
    buf: Vec<u8>,
    dim: usize,
}

impl JsonlStream {
    /// Opens `path` for documents of dimension `dim`.
    pub fn open(path: &Path, dim: usize) -> Result<Self> {
        let f = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
        Ok(JsonlStream {
            file: Arc::from(path.display().to_string()),
            reader: BufReader::with_capacity(1 << 20, f),
            line: 0,
            buf: Vec::new(),
            dim,
        })
    }
}

impl DocStream for JsonlStream {
    fn next_doc(&mut self) -> Result<Option<SourceDoc>> {
        loop {
            let read = lines::read_line(&mut self.reader, &mut self.buf, MAX_LINE_BYTES)
                .with_context(|| format!("{}: cannot read line {}", self.file, self.line + 1))?;
            if read == Line::End {
                return Ok(None);
            }
            self.line += 1;
            let place = Place {
                file: self.file.clone(),
                at: Locator::Line(self.line),
            };
            if read == Line::TooLong {
                bail!("{place}: {}", lines::too_long_message());
            }
            let text = match std::str::from_utf8(&self.buf) {
                Ok(t) => t,
                Err(e) => bail!(
                    "{place}: invalid UTF-8 at byte {} of the line",
                    e.valid_up_to()
                ),
            };
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            let mut vectors = Vec::new();
            let mut bad_row = None;
            let mut de = serde_json::Deserializer::from_str(text);
            let parsed = DocSeed {
                dim: self.dim,
                vectors: &mut vectors,
                bad_row: &mut bad_row,
            }
            .deserialize(&mut de)
            .and_then(|d| de.end().map(|()| d));
            let doc = parsed.map_err(|e| {
                let why = if e.is_eof() {
                    "line ends inside the document (truncated?)".to_owned()
                } else {
                    e.to_string()
                };
                anyhow::anyhow!("{place}: not a valid JSON document: {why}")
            })?;
            let Some(id) = doc.id else {
                bail!("{place}: the document has no \"id\"");
            };
            let id = json_id(&id).map_err(|why| anyhow::anyhow!("{place}: {why}"))?;
            if !doc.has_embeddings {
                bail!("{place} (id {id}): the document has no \"embeddings\"");
            }
            if let Some((t, n)) = bad_row {
                bail!(
                    "{place} (id {id}): token vector {t} has {n} values but the collection's dimension is {}",
                    self.dim
                );
            }
            // Batches hold many documents: keep no growth slack.
            vectors.shrink_to_fit();
            let metadata = doc.metadata.filter(|m| !m.is_null());
            return Ok(Some(SourceDoc {
                id,
                vectors,
                metadata,
                place,
            }));
        }
    }
}

/// The length of the first token vector of the first document of `path` (for
/// `ingest --create`); reads one line.
pub fn first_dim(path: &Path) -> Result<u32> {
    let f = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut reader = BufReader::new(f);
    let mut buf = Vec::new();
    for n in 1usize.. {
        let read = lines::read_line(&mut reader, &mut buf, MAX_LINE_BYTES)
            .with_context(|| format!("{}: cannot read line {n}", path.display()))?;
        let place = format!("{}: line {n}", path.display());
        match read {
            Line::End => break,
            Line::TooLong => bail!("{place}: {}", lines::too_long_message()),
            Line::Read => {}
        }
        let line = std::str::from_utf8(&buf)
            .map_err(|e| anyhow::anyhow!("{place}: invalid UTF-8 at byte {}", e.valid_up_to()))?;
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line)
            .with_context(|| format!("{place}: not a valid JSON document"))?;
        let first = v
            .get("embeddings")
            .or_else(|| v.get("vectors"))
            .and_then(|e| e.get(0))
            .and_then(Value::as_array)
            .with_context(|| {
                format!("{place}: no \"embeddings\" row to take the dimension from")
            })?;
        if first.is_empty() {
            bail!("{place}: the first token vector is empty");
        }
        return u32::try_from(first.len()).with_context(|| format!("{place}: dimension"));
    }
    bail!("{}: the file holds no documents", path.display())
}
