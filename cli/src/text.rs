//! Text in, vectors out: JSON-lines text corpora, loading the encoder model, the streaming
//! encode pipeline behind `ingest --text` and `encode`, and text queries.
//!
//! The pipeline is three stages joined by bounded crossbeam channels, so memory stays flat
//! however large the corpus: a reader thread parses the JSON lines into chunks of
//! `encode_batch` texts, an encoder thread turns each chunk into token vectors (on the
//! encoder's own thread pool), and the calling thread consumes the encoded chunks in input
//! order (committing batches, or writing `.npy` rows). Encoding of the next chunks overlaps
//! the consumer's work (codec compression and commits).

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use crossbeam_channel::bounded;
use serde_json::Value;
use tessera::{Collection, Database, Document, ExternalId, IngestOptions, ModelRecord};
use tessera_encoder::{Encoder, EncoderOptions, TokenMatrix};

use crate::args::{EncodeArgs, IngestArgs};
use crate::ingest::{
    Existing, IngestSummary, Phase, SMALL_TRAINING_BATCH, committed_note, progress, show_eta,
};
use crate::interrupt;
use crate::query::Query;

// The corpus reader is a module of its own, without the engine or the encoder, so that the
// fuzz targets (`tests/fuzz`) compile it from this same file.
mod corpus;
pub use corpus::{TextDoc, TextStream};

/// Encoded chunks that may wait between stages; with `encode_batch` texts per chunk this
/// bounds the memory of the pipeline.
const CHANNEL_DEPTH: usize = 2;

/// A loaded encoder with the identity recorded in collections.
pub struct Model {
    /// The encoder.
    pub encoder: Encoder,
    /// Name, hash and (canonical) directory.
    pub record: ModelRecord,
    /// The directory it was loaded from, as given.
    pub dir: PathBuf,
}

impl Model {
    /// Loads the model directory `dir` with `threads` encoder threads (0: all cores) and
    /// `batch_size` texts per forward pass.
    pub fn load(dir: &Path, threads: usize, batch_size: usize) -> Result<Model> {
        let encoder = Encoder::load(
            dir,
            EncoderOptions {
                threads,
                batch_size: batch_size.max(1),
                ..EncoderOptions::default()
            },
        )
        .with_context(|| format!("cannot load the model in {}", dir.display()))?;
        let id = encoder.model_id();
        let canonical = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        Ok(Model {
            record: ModelRecord {
                name: id.name.clone(),
                hash: id.hash.clone(),
                path: Some(canonical.display().to_string()),
            },
            encoder,
            dir: dir.to_path_buf(),
        })
    }

    /// Fails unless the model's vectors have the collection's dimension.
    pub fn check_dim(&self, coll_name: &str, coll_dim: u32) -> Result<()> {
        if self.encoder.dim() != coll_dim as usize {
            bail!(
                "model {} ({}) produces {}-dimensional vectors but collection {coll_name:?} has dimension {coll_dim}",
                self.record,
                self.dir.display(),
                self.encoder.dim()
            );
        }
        Ok(())
    }
}

/// How a command chose its model.
pub enum ModelChoice<'a> {
    /// `--model DIR` (or the shell's `.model`).
    Given(&'a Path),
    /// Nothing given: use the directory recorded with the collection.
    Recorded,
}

/// Loads the model for `coll` (or a new collection when `coll` is `None`): the given
/// directory, else the one recorded with the collection, checked against its hash.
pub fn resolve_model(
    choice: ModelChoice<'_>,
    coll: Option<&Collection>,
    threads: usize,
    batch_size: usize,
) -> Result<Model> {
    let recorded = match coll {
        Some(c) => c.model()?,
        None => None,
    };
    match choice {
        ModelChoice::Given(dir) => Model::load(dir, threads, batch_size),
        ModelChoice::Recorded => {
            let name = coll.map_or("", |c| c.name());
            let Some(rec) = recorded else {
                bail!(
                    "collection {name:?} records no model (it was not built from text); pass --model DIR"
                );
            };
            let Some(path) = rec.path.clone() else {
                bail!(
                    "collection {name:?} records model {rec} but not where it was loaded from; pass --model DIR"
                );
            };
            let model = Model::load(Path::new(&path), threads, batch_size).with_context(|| {
                format!(
                    "collection {name:?} was built with model {rec} from {path}; pass --model DIR if it moved"
                )
            })?;
            if !model.record.same_model(&rec) {
                bail!(
                    "the model directory {path} recorded for collection {name:?} no longer holds model {rec} (it now holds {}); pass --model DIR with the original model",
                    model.record
                );
            }
            Ok(model)
        }
    }
}

/// Prints a warning when `model` is not the model `coll` was built with.
pub fn warn_if_other_model(coll: &Collection, model: &Model) -> Result<()> {
    if let Some(rec) = coll.model()?
        && !rec.same_model(&model.record)
    {
        eprintln!(
            "warning: collection {:?} was built with model {rec}, but the queries are encoded with model {} from {}; scores across different models are meaningless",
            coll.name(),
            model.record,
            model.dir.display()
        );
    }
    Ok(())
}

/// Encodes query texts into queries labelled by their text.
pub fn text_queries(model: &Model, texts: &[String]) -> Result<Vec<Query>> {
    if texts.iter().any(|t| t.trim().is_empty()) {
        bail!("the query text is empty");
    }
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let encoded = model
        .encoder
        .encode_queries(&refs)
        .context("cannot encode the query text")?;
    Ok(texts
        .iter()
        .zip(encoded)
        .map(|(t, m)| Query {
            label: Value::from(t.as_str()),
            vectors: m.data,
        })
        .collect())
}

/// What the validation pass found.
struct Checked {
    /// Documents in the input.
    docs: u64,
    /// Of those, documents whose id the collection holds (with `--skip-existing`).
    skipped: u64,
}

/// Reads every document once: well-formed lines, ids and text present, no repeated ids,
/// and ids the collection holds refused or counted as `existing` says. `check_id` adds a
/// per-id rule (e.g. ids that fit a line of `ids.txt`).
fn validate(
    paths: &[PathBuf],
    existing: Option<(&Collection, Existing)>,
    check_id: &dyn Fn(&ExternalId) -> Result<(), String>,
    nothing_done: &str,
) -> Result<Checked> {
    let pb = progress(None, Phase::Validate);
    let mut seen: HashSet<ExternalId> = HashSet::new();
    let mut docs = 0u64;
    let mut skipped = 0u64;
    let mut stream = TextStream::new(paths);
    let result: Result<()> = (|| {
        while let Some(d) = stream.next_doc()? {
            check_id(&d.id).map_err(|why| anyhow!("{}: {why}", d.describe()))?;
            if !seen.insert(d.id.clone()) {
                let first = first_place(paths, &d.id);
                bail!(
                    "{}: duplicate id {}: it already appeared at {}",
                    d.describe(),
                    d.id,
                    first.unwrap_or_else(|| "an earlier line".into())
                );
            }
            match existing {
                Some((c, Existing::Refuse)) => {
                    crate::ingest::refuse_existing(c, &d.id, &d.describe())?;
                }
                Some((c, Existing::Skip)) => skipped += u64::from(c.contains(&d.id)?),
                _ => {}
            }
            docs += 1;
            pb.inc(1);
            interrupt::check(|| {
                format!("while validating, after {docs} documents; {nothing_done}")
            })?;
        }
        Ok(())
    })();
    pb.finish_and_clear();
    match result {
        Ok(()) if docs == 0 => bail!("the input holds no documents; {nothing_done}"),
        Ok(()) => Ok(Checked { docs, skipped }),
        Err(e) => Err(crate::ingest::validation_failed(e, nothing_done)),
    }
}

/// Where `id` first appears (the rare error path reads the input again rather than keeping
/// a place per document).
fn first_place(paths: &[PathBuf], id: &ExternalId) -> Option<String> {
    let mut stream = TextStream::new(paths);
    while let Ok(Some(d)) = stream.next_doc() {
        if &d.id == id {
            return Some(d.place.to_string());
        }
    }
    None
}

/// One encoded document.
struct EncodedDoc {
    doc: TextDoc,
    vectors: TokenMatrix,
}

/// Whether the pipeline encodes a document; skipped documents are never encoded.
type Keep<'a> = &'a (dyn Fn(&TextDoc) -> Result<bool> + Sync);

/// Runs reader → encoder → `consume` over the corpus documents that `keep` accepts;
/// `consume` gets chunks in input order on the calling thread. Returning an error from
/// `consume` (or Ctrl-C detected there) stops the upstream stages at their next send.
fn pipeline(
    paths: &[PathBuf],
    model: &Model,
    queries: bool,
    chunk: usize,
    keep: Keep<'_>,
    mut consume: impl FnMut(Vec<EncodedDoc>) -> Result<()>,
) -> Result<()> {
    let chunk = chunk.max(1);
    let (text_tx, text_rx) = bounded::<Result<Vec<TextDoc>>>(CHANNEL_DEPTH);
    let (enc_tx, enc_rx) = bounded::<Result<Vec<EncodedDoc>>>(CHANNEL_DEPTH);
    std::thread::scope(|s| {
        s.spawn(move || {
            let mut stream = TextStream::new(paths);
            let mut docs = Vec::with_capacity(chunk);
            loop {
                match stream.next_doc().and_then(|d| match d {
                    Some(d) if !keep(&d)? => Ok(Some(None)),
                    Some(d) => Ok(Some(Some(d))),
                    None => Ok(None),
                }) {
                    Ok(Some(None)) => {}
                    Ok(Some(Some(d))) => {
                        docs.push(d);
                        if docs.len() == chunk
                            && text_tx.send(Ok(std::mem::take(&mut docs))).is_err()
                        {
                            return;
                        }
                    }
                    Ok(None) => {
                        if !docs.is_empty() {
                            let _ = text_tx.send(Ok(docs));
                        }
                        return;
                    }
                    Err(e) => {
                        let _ = text_tx.send(Err(e));
                        return;
                    }
                }
            }
        });
        s.spawn(move || {
            for item in text_rx {
                let out = item.and_then(|docs| {
                    let texts: Vec<&str> = docs.iter().map(|d| d.text.as_str()).collect();
                    let encoded = if queries {
                        model.encoder.encode_queries(&texts)
                    } else {
                        model.encoder.encode_documents(&texts)
                    };
                    let encoded = encoded.map_err(|e| {
                        let first = docs.first().map(TextDoc::describe).unwrap_or_default();
                        anyhow!("{first} and the following documents: cannot encode: {e}")
                    })?;
                    Ok(docs
                        .into_iter()
                        .zip(encoded)
                        .map(|(doc, vectors)| EncodedDoc { doc, vectors })
                        .collect())
                });
                let failed = out.is_err();
                if enc_tx.send(out).is_err() || failed {
                    return;
                }
            }
        });
        // The receiver is dropped when this closure returns, which unblocks and ends the
        // upstream threads if it stops early.
        let rx = enc_rx;
        for item in rx {
            consume(item?)?;
        }
        Ok(())
    })
}

/// `ingest --text`: validates the corpus, then encodes and commits it in batches of about
/// `args.batch_tokens` token vectors. A missing collection is created (dimension from the
/// model) when `create` is set, after the corpus validates; otherwise it is an error that
/// names the `tessera create` command.
pub fn ingest_text(
    db: &Database,
    collection: &str,
    args: &IngestArgs,
    session_model: Option<&Path>,
    create: bool,
) -> Result<IngestSummary> {
    let existing = match db.collection(collection) {
        Ok(c) => Some(c),
        Err(tessera::Error::CollectionNotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let choice = match args.model.as_deref().or(session_model) {
        Some(dir) => ModelChoice::Given(dir),
        None if existing.is_some() => ModelChoice::Recorded,
        None => bail!("--text needs --model DIR (the encoder model directory)"),
    };
    let model = resolve_model(choice, existing.as_ref(), args.threads, args.encode_batch)
        .map_err(|e| anyhow!("{e:#}; nothing committed"))?;
    if existing.is_none() && !create {
        bail!(
            "{}; {}",
            crate::errors::missing_collection(db, collection),
            crate::commands::create_hint(db.path(), collection, Some(model.encoder.dim() as u32))
        );
    }
    if let Some(coll) = &existing {
        model
            .check_dim(coll.name(), coll.config().dim)
            .map_err(|e| anyhow!("{e:#}; nothing committed"))?;
        match coll.model()? {
            Some(rec) if !rec.same_model(&model.record) => bail!(
                "collection {:?} holds vectors of model {rec}, but {} holds model {}; mixing models makes scores meaningless, so nothing was committed (use the recorded model, or another collection)",
                coll.name(),
                model.dir.display(),
                model.record
            ),
            Some(_) => {}
            None => {
                let docs = coll.info().documents;
                if docs > 0 {
                    eprintln!(
                        "warning: collection {:?} already holds {docs} documents with no recorded model; recording model {} now (make sure they came from the same model)",
                        coll.name(),
                        model.record
                    );
                }
            }
        }
    }
    let mut summary = IngestSummary::default();
    let start = Instant::now();
    let rule = existing.as_ref().map(|c| (c, Existing::rule(c, args)));
    let checked = validate(&args.text, rule, &|_| Ok(()), "nothing committed")?;
    summary.validate_seconds = start.elapsed().as_secs_f64();
    summary.skipped = checked.skipped;
    let to_ingest = checked.docs - checked.skipped;
    let skip = rule.is_some_and(|(_, r)| r == Existing::Skip);

    let coll = match existing {
        Some(c) => c,
        None => {
            let cfg = tessera::CollectionConfig::new(model.encoder.dim() as u32);
            let c = db.create_collection(collection, cfg)?;
            eprintln!(
                "created collection {collection:?} (dim {}, default settings) for model {}",
                model.encoder.dim(),
                model.record
            );
            c
        }
    };
    let mut opts = if args.upsert {
        IngestOptions::upsert()
    } else {
        IngestOptions::default()
    };
    opts = opts
        .with_threads(args.threads)
        .with_model(model.record.clone());
    let batch_tokens = args.batch_tokens.max(1);
    let max_tokens = coll.config().max_tokens_per_doc as usize;
    let start = Instant::now();
    let pb = progress(Some(to_ingest), Phase::Commit);
    let mut encoded_docs = 0u64;
    let mut encoded_tokens = 0u64;
    let mut batch: Vec<Document> = Vec::new();
    let mut places: Vec<String> = Vec::new();
    let mut tokens = 0usize;
    let mut commit = |batch: &mut Vec<Document>,
                      places: &mut Vec<String>,
                      tokens: &mut usize,
                      summary: &mut IngestSummary|
     -> Result<()> {
        interrupt::check(|| {
            format!(
                "{} documents ({} tokens, {} batches) committed; the rest of the input was not ingested",
                summary.documents, summary.tokens, summary.batches
            )
        })?;
        if summary.batches == 0 {
            // Size the codec for the whole corpus: assume later documents are like the first
            // batch.
            let per_doc = *tokens as f64 / batch.len().max(1) as f64;
            opts.expected_total_tokens = Some((per_doc * to_ingest as f64).ceil() as u64);
        }
        let report = coll
            .ingest(batch, &opts)
            .map_err(|e| crate::ingest::engine_error(e, places))?;
        summary.documents += report.documents as u64;
        summary.tokens += report.tokens as u64;
        summary.replaced += report.replaced as u64;
        summary.batches += 1;
        summary.trained_codec |= report.trained_codec;
        if report.trained_codec
            && (report.tokens as u64)
                < opts
                    .expected_total_tokens
                    .unwrap_or(0)
                    .min(SMALL_TRAINING_BATCH)
        {
            pb.suspend(|| {
                eprintln!(
                    "note: the codec was trained on a first batch of only {} tokens; raise --batch-tokens (>= {SMALL_TRAINING_BATCH}) for a finer codec",
                    report.tokens
                )
            });
        }
        show_eta(&pb);
        batch.clear();
        places.clear();
        *tokens = 0;
        Ok(())
    };
    // The validation pass counted the skipped documents; here they are only left out.
    let keep = |d: &TextDoc| -> Result<bool> { Ok(!(skip && coll.contains(&d.id)?)) };
    let result = pipeline(&args.text, &model, false, args.encode_batch, &keep, |chunk| {
        for e in chunk {
            let rows = e.vectors.rows;
            if rows == 0 {
                bail!("{}: the text has no tokens left to index", e.doc.describe());
            }
            if rows > max_tokens {
                bail!(
                    "{}: the text has {rows} token vectors, more than the collection's limit of {max_tokens}",
                    e.doc.describe()
                );
            }
            if !batch.is_empty() && tokens + rows > batch_tokens {
                commit(&mut batch, &mut places, &mut tokens, &mut summary)?;
            }
            tokens += rows;
            encoded_docs += 1;
            encoded_tokens += rows as u64;
            places.push(e.doc.describe());
            let mut d = Document::new(e.doc.id, e.vectors.data);
            if !args.no_store_text {
                d = d.with_text(e.doc.text);
            }
            batch.push(match e.doc.metadata {
                Some(m) => d.with_metadata(m),
                None => d,
            });
        }
        pb.set_position(encoded_docs);
        let secs = start.elapsed().as_secs_f64().max(1e-9);
        pb.set_message(format!("{:.0} tokens/s", encoded_tokens as f64 / secs));
        Ok(())
    })
    .and_then(|()| {
        if batch.is_empty() {
            Ok(())
        } else {
            commit(&mut batch, &mut places, &mut tokens, &mut summary)
        }
    });
    pb.finish_and_clear();
    summary.commit_seconds = start.elapsed().as_secs_f64();
    match result {
        Ok(()) => Ok(summary),
        Err(e) if e.is::<interrupt::Interrupted>() => Err(e),
        Err(e) => Err(anyhow!("{e:#}; {}", committed_note(&summary))),
    }
}

/// What `encode` wrote.
#[derive(Debug, serde::Serialize)]
pub struct EncodeSummary {
    /// Texts encoded.
    pub documents: u64,
    /// Token vectors written.
    pub tokens: u64,
    /// Vector width.
    pub dim: usize,
    /// Seconds spent (validation included).
    pub seconds: f64,
}

/// Ids must survive a round trip through `ids.txt` (one per line, trailing space trimmed).
fn id_fits_a_line(id: &ExternalId) -> Result<(), String> {
    if let ExternalId::Str(s) = id
        && (s.contains(['\n', '\r']) || s.trim_end() != s)
    {
        return Err(format!(
            "id {id:?} cannot be written to ids.txt (line breaks or trailing whitespace)"
        ));
    }
    Ok(())
}

/// The files `encode` writes into its output directory.
pub const ENCODE_FILES: [&str; 4] = ["flat.npy", "doclens.npy", "ids.txt", "model.json"];

/// `tessera encode`: writes the token vectors of every text as `flat.npy` (`[rows, dim]`
/// f32), `doclens.npy` (i64 rows per text), `ids.txt` and `model.json` in `args.out`.
pub fn encode(args: &EncodeArgs) -> Result<EncodeSummary> {
    let start = Instant::now();
    let model = Model::load(&args.model, args.threads, args.batch_size)?;
    check_out_dir(&args.out)?;
    let checked = validate(&args.input, None, &id_fits_a_line, "nothing written")?;
    let created = !args.out.exists();
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("{}: cannot create the directory", args.out.display()))?;
    let result = write_encoded(args, &model, checked.docs, start);
    if result.is_err() {
        // Half-written outputs would pass for a complete encoding: remove them.
        for f in ENCODE_FILES {
            let _ = std::fs::remove_file(args.out.join(f));
        }
        if created {
            let _ = std::fs::remove_dir(&args.out);
        }
    }
    result
}

/// Fails if `out` holds an earlier output (which is never overwritten).
fn check_out_dir(out: &Path) -> Result<()> {
    for f in ENCODE_FILES {
        if out.join(f).exists() {
            bail!(
                "{}: already holds {f}; pick a new directory or remove the old output",
                out.display()
            );
        }
    }
    Ok(())
}

fn write_encoded(
    args: &EncodeArgs,
    model: &Model,
    total: u64,
    start: Instant,
) -> Result<EncodeSummary> {
    use npyz::WriterBuilder;
    let dim = model.encoder.dim();
    let flat_path = args.out.join("flat.npy");
    let io_err = |p: &Path| format!("{}: cannot write", p.display());
    let file = File::create(&flat_path).with_context(|| io_err(&flat_path))?;
    let mut flat = npyz::WriteOptions::<f32>::new()
        .default_dtype()
        .writer(BufWriter::with_capacity(1 << 20, file))
        .begin_2d(dim as u64)
        .with_context(|| io_err(&flat_path))?;
    let ids_path = args.out.join("ids.txt");
    let mut ids = BufWriter::new(File::create(&ids_path).with_context(|| io_err(&ids_path))?);
    let mut doclens: Vec<i64> = Vec::with_capacity(total as usize);
    let mut tokens = 0u64;
    let pb = progress(Some(total), Phase::Encode);
    let keep_all = |_: &TextDoc| -> Result<bool> { Ok(true) };
    let result = pipeline(
        &args.input,
        model,
        args.queries,
        args.batch_size,
        &keep_all,
        |chunk| {
            interrupt::check(|| {
                format!(
                    "after {} of {total} texts; the partial output was removed",
                    doclens.len()
                )
            })?;
            for e in chunk {
                flat.extend(e.vectors.data.iter().copied())
                    .with_context(|| io_err(&flat_path))?;
                writeln!(ids, "{}", e.doc.id).with_context(|| io_err(&ids_path))?;
                doclens.push(e.vectors.rows as i64);
                tokens += e.vectors.rows as u64;
            }
            pb.set_position(doclens.len() as u64);
            let secs = start.elapsed().as_secs_f64().max(1e-9);
            pb.set_message(format!("{:.0} tokens/s", tokens as f64 / secs));
            Ok(())
        },
    );
    pb.finish_and_clear();
    result?;
    flat.finish().with_context(|| io_err(&flat_path))?;
    ids.flush().with_context(|| io_err(&ids_path))?;
    crate::generate::write_npy_i64(&args.out.join("doclens.npy"), &doclens)?;
    let info = serde_json::json!({
        "name": model.record.name,
        "hash": model.record.hash,
        "path": model.record.path,
        "dim": dim,
        "kind": if args.queries { "queries" } else { "documents" },
        "documents": doclens.len(),
        "tokens": tokens,
    });
    let model_path = args.out.join("model.json");
    std::fs::write(&model_path, serde_json::to_string_pretty(&info)? + "\n")
        .with_context(|| io_err(&model_path))?;
    Ok(EncodeSummary {
        documents: doclens.len() as u64,
        tokens,
        dim,
        seconds: start.elapsed().as_secs_f64(),
    })
}
