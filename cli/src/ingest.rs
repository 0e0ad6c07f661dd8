//! Streaming ingest: plan the inputs (cheap checks), scan every document once to validate it
//! (dimensions, NaN/Inf, empty or oversized documents, repeated or existing ids) so a bad
//! file commits nothing, then read the inputs again and commit batches of about
//! `batch_tokens` tokens, each atomically. Memory is bounded by one batch.

use std::collections::HashSet;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tessera::{Collection, Document, ExternalId, IngestOptions};

use crate::args::IngestArgs;
use crate::formats::{self, DocStream, Plan, PlanRequest, SourceDoc};
use crate::interrupt;

/// First batches smaller than this (when the input is larger) train a coarse codec.
pub(crate) const SMALL_TRAINING_BATCH: u64 = 262_144;

/// What an ingest did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct IngestSummary {
    /// Documents committed.
    pub documents: u64,
    /// Token vectors committed.
    pub tokens: u64,
    /// Batches committed.
    pub batches: u64,
    /// Existing documents replaced (upsert).
    pub replaced: u64,
    /// Documents skipped because their id exists (`--skip-existing`).
    pub skipped: u64,
    /// Whether the first batch trained the collection's codec.
    pub trained_codec: bool,
    /// Seconds spent validating.
    pub validate_seconds: f64,
    /// Seconds spent reading and committing.
    pub commit_seconds: f64,
}

impl IngestSummary {
    /// Tokens per second over validation and commits together.
    pub fn tokens_per_second(&self) -> f64 {
        self.tokens as f64 / (self.validate_seconds + self.commit_seconds).max(1e-9)
    }

    /// One line for humans.
    pub fn describe(&self) -> String {
        format!(
            "committed {} documents ({} tokens) in {} batch{}{}{}{} in {:.2} s ({:.2} s validating): {:.0} tokens/s",
            self.documents,
            self.tokens,
            self.batches,
            if self.batches == 1 { "" } else { "es" },
            if self.replaced > 0 {
                format!(", {} replaced", self.replaced)
            } else {
                String::new()
            },
            if self.skipped > 0 {
                format!(", {} skipped (id already present)", self.skipped)
            } else {
                String::new()
            },
            if self.trained_codec {
                ", codec trained on the first batch"
            } else {
                ""
            },
            self.validate_seconds + self.commit_seconds,
            self.validate_seconds,
            self.tokens_per_second()
        )
    }
}

/// A phase of a long command, each with its own progress bar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Reading every document once before anything is written: no ETA (it is the cheap
    /// pass, and its rate says nothing about the commits).
    Validate,
    /// Reading, encoding and committing.
    Commit,
    /// Writing `encode`'s output.
    Encode,
}

impl Phase {
    fn label(self) -> &'static str {
        match self {
            Phase::Validate => "validating",
            Phase::Commit => "ingesting",
            Phase::Encode => "encoding",
        }
    }
}

/// A progress bar on stderr, hidden when stderr is not a terminal. The commit phase shows no
/// ETA until the first batch has committed (until then there is no rate to estimate from).
pub(crate) fn progress(len: Option<u64>, phase: Phase) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(len, ProgressDrawTarget::stderr());
    pb.set_style(style(len.is_some(), phase == Phase::Encode));
    pb.set_prefix(phase.label());
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

/// The bar's look: `[===>  ] pos/len` when the total is known, a spinner otherwise.
fn style(known_len: bool, eta: bool) -> ProgressStyle {
    let template = match (known_len, eta) {
        (true, true) => "{prefix:>10} [{bar:30}] {pos}/{len} docs  {msg}  ETA {eta}",
        (true, false) => "{prefix:>10} [{bar:30}] {pos}/{len} docs  {msg}",
        (false, _) => "{prefix:>10} {spinner} {pos} docs  {msg}",
    };
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// Switches a commit bar to showing the ETA, once a batch has committed.
pub(crate) fn show_eta(pb: &ProgressBar) {
    if pb.length().is_some() {
        pb.set_style(style(true, true));
    }
}

/// Checks one document as the engine will (so that failures name the input file).
fn check_doc(d: &SourceDoc, dim: usize, max_tokens: usize) -> Result<usize> {
    if d.vectors.is_empty() {
        bail!("{}: the document has no token vectors", d.describe());
    }
    if !d.vectors.len().is_multiple_of(dim) {
        bail!(
            "{}: {} values is not a whole number of {dim}-dimensional vectors",
            d.describe(),
            d.vectors.len()
        );
    }
    let rows = d.vectors.len() / dim;
    if rows > max_tokens {
        bail!(
            "{}: the document has {rows} token vectors, more than the collection's limit of {max_tokens}",
            d.describe()
        );
    }
    if let Some(j) = d.vectors.iter().position(|x| !x.is_finite()) {
        bail!(
            "{}: token {} dimension {} is {}",
            d.describe(),
            j / dim,
            j % dim,
            d.vectors[j]
        );
    }
    Ok(rows)
}

/// Ids seen so far in this ingest (ids only: memory stays small per document).
#[derive(Default)]
struct SeenIds(HashSet<ExternalId>);

impl SeenIds {
    /// Fails if `d`'s id was seen before, naming both places (the first is found by reading
    /// the inputs again: a rare error path, so nothing but the id is kept per document).
    fn check(&mut self, d: &SourceDoc, plan: &Plan) -> Result<()> {
        if self.0.insert(d.id.clone()) {
            return Ok(());
        }
        let mut stream = plan.open();
        let mut first = None;
        while let Ok(Some(e)) = stream.next_doc() {
            if e.id == d.id {
                first = Some(e.place);
                break;
            }
        }
        match first {
            Some(p) => bail!(
                "{}: duplicate id {}: it already appeared at {p}",
                d.describe(),
                d.id
            ),
            None => bail!(
                "{}: duplicate id {}: it already appeared earlier in the input",
                d.describe(),
                d.id
            ),
        }
    }
}

/// Ingests `args.inputs` into `coll`.
pub fn ingest(coll: &Collection, args: &IngestArgs) -> Result<IngestSummary> {
    let cfg = coll.config();
    let dim = cfg.dim as usize;
    let max_tokens = cfg.max_tokens_per_doc as usize;
    let plan = formats::plan(&PlanRequest {
        inputs: &args.inputs,
        format: args.format,
        doclens: args.doclens.as_deref(),
        ids: args.ids.as_deref(),
        dim,
        max_tokens,
    })
    .map_err(|e| anyhow!("{e:#}; nothing committed"))?;
    // `--model` declares which encoder produced the vectors (e.g. `tessera encode` output).
    let model = match &args.model {
        Some(dir) => {
            let m = crate::text::Model::load(dir, args.threads, args.encode_batch)
                .map_err(|e| anyhow!("{e:#}; nothing committed"))?;
            m.check_dim(coll.name(), cfg.dim)
                .map_err(|e| anyhow!("{e:#}; nothing committed"))?;
            Some(m.record)
        }
        None => None,
    };
    let batch_tokens = args.batch_tokens.max(1);
    let mut summary = IngestSummary::default();
    let existing = Existing::rule(coll, args);

    // Pass 1: validate every document, so that a bad input commits nothing.
    let mut total_docs = plan.known_docs();
    let mut total_tokens = plan.known_tokens();
    if !args.no_validate {
        let start = Instant::now();
        let pb = progress(total_docs, Phase::Validate);
        pb.set_message("nothing is written until every document checks out");
        let mut seen = SeenIds::default();
        let (mut docs, mut tokens) = (0u64, 0u64);
        let mut stream = plan.open();
        let result: Result<()> = (|| {
            while let Some(d) = stream.next_doc()? {
                let rows = check_doc(&d, dim, max_tokens)? as u64;
                seen.check(&d, &plan)?;
                let skip = match existing {
                    Existing::Skip => coll.contains(&d.id)?,
                    Existing::Refuse => {
                        refuse_existing(coll, &d.id, &d.describe())?;
                        false
                    }
                    Existing::Replace | Existing::NoneYet => false,
                };
                if !skip {
                    tokens += rows;
                }
                docs += 1;
                pb.inc(1);
                interrupt::check(|| {
                    format!("while validating, after {docs} documents; nothing committed")
                })?;
            }
            Ok(())
        })();
        pb.finish_and_clear();
        result.map_err(|e| validation_failed(e, "nothing committed"))?;
        total_docs = Some(docs);
        total_tokens = Some(tokens);
        summary.validate_seconds = start.elapsed().as_secs_f64();
    }

    // Pass 2: read again and commit batch by batch.
    let mut opts = if args.upsert {
        IngestOptions::upsert()
    } else {
        IngestOptions::default()
    };
    opts = opts.with_threads(args.threads);
    if let Some(m) = model {
        opts = opts.with_model(m);
    }
    if let Some(t) = total_tokens {
        opts = opts.with_expected_total_tokens(t);
    }
    let start = Instant::now();
    let pb = progress(total_docs, Phase::Commit);
    let mut stream = plan.open();
    let mut seen = SeenIds::default();
    let mut pending: Option<(SourceDoc, usize)> = None;
    let result: Result<()> = (|| {
        loop {
            interrupt::check(|| {
                format!(
                    "{} documents ({} tokens, {} batches) committed; the rest of the input was not ingested",
                    summary.documents, summary.tokens, summary.batches
                )
            })?;
            let mut batch: Vec<Document> = Vec::new();
            let mut places: Vec<String> = Vec::new();
            let mut tokens = 0usize;
            loop {
                let (d, rows) = match pending.take() {
                    Some(p) => p,
                    None => match stream.next_doc()? {
                        Some(d) => {
                            let rows = check_doc(&d, dim, max_tokens)?;
                            if args.no_validate {
                                seen.check(&d, &plan)?;
                            }
                            if existing == Existing::Skip && coll.contains(&d.id)? {
                                summary.skipped += 1;
                                pb.inc(1);
                                continue;
                            }
                            (d, rows)
                        }
                        None => break,
                    },
                };
                if !batch.is_empty() && tokens + rows > batch_tokens {
                    pending = Some((d, rows));
                    break;
                }
                tokens += rows;
                places.push(d.describe());
                let doc = Document::new(d.id, d.vectors);
                batch.push(match d.metadata {
                    Some(m) => doc.with_metadata(m),
                    None => doc,
                });
            }
            if batch.is_empty() {
                return Ok(());
            }
            pb.set_message(format!(
                "committing batch {} ({} documents)",
                summary.batches + 1,
                batch.len()
            ));
            let report = coll
                .ingest(&batch, &opts)
                .map_err(|e| engine_error(e, &places))?;
            summary.documents += report.documents as u64;
            summary.tokens += report.tokens as u64;
            summary.replaced += report.replaced as u64;
            summary.batches += 1;
            summary.trained_codec |= report.trained_codec;
            if report.trained_codec
                && (report.tokens as u64) < total_tokens.unwrap_or(0).min(SMALL_TRAINING_BATCH)
            {
                pb.suspend(|| {
                    eprintln!(
                        "note: the codec was trained on a first batch of only {} tokens; raise --batch-tokens (>= {SMALL_TRAINING_BATCH}) for a finer codec",
                        report.tokens
                    )
                });
            }
            pb.inc(report.documents as u64);
            show_eta(&pb);
            let secs = start.elapsed().as_secs_f64().max(1e-9);
            pb.set_message(format!("{:.0} tokens/s", summary.tokens as f64 / secs));
        }
    })();
    pb.finish_and_clear();
    summary.commit_seconds = start.elapsed().as_secs_f64();
    match result {
        Ok(()) => Ok(summary),
        Err(e) if e.is::<interrupt::Interrupted>() => Err(e),
        Err(e) => Err(anyhow!("{e:#}; {}", committed_note(&summary))),
    }
}

pub(crate) fn committed_note(s: &IngestSummary) -> String {
    if s.documents == 0 {
        "nothing committed".into()
    } else {
        format!(
            "{} documents ({} tokens, {} batch{}) were committed before the failure; the failed batch committed nothing",
            s.documents,
            s.tokens,
            s.batches,
            if s.batches == 1 { "" } else { "es" }
        )
    }
}

/// Names the input document behind an engine error about a batch position.
pub(crate) fn engine_error(e: tessera::Error, places: &[String]) -> anyhow::Error {
    let at = match &e {
        tessera::Error::InvalidDocument { position, .. } => places.get(*position),
        tessera::Error::DuplicateId { second, .. } => places.get(*second),
        _ => None,
    };
    match at {
        Some(place) => anyhow!("{place}: {e}"),
        None => anyhow::Error::new(e),
    }
}

/// What an ingest does with ids the collection already holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Existing {
    /// The collection is empty: there is nothing to look up.
    NoneYet,
    /// Fail, naming the document (the default).
    Refuse,
    /// Replace them (`--upsert`).
    Replace,
    /// Leave them and skip the input's document (`--skip-existing`).
    Skip,
}

impl Existing {
    /// The rule `args` ask for on `coll`.
    pub(crate) fn rule(coll: &Collection, args: &IngestArgs) -> Existing {
        if args.upsert {
            Existing::Replace
        } else if coll.info().documents == 0 {
            // An empty collection has no ids to collide with: skip the catalog lookups.
            Existing::NoneYet
        } else if args.skip_existing {
            Existing::Skip
        } else {
            Existing::Refuse
        }
    }
}

/// Refuses an id the collection already holds (an ingest without `--upsert`); `place` says
/// where the document came from.
pub(crate) fn refuse_existing(coll: &Collection, id: &ExternalId, place: &str) -> Result<()> {
    if coll.contains(id)? {
        bail!(
            "{place}: id {id} already exists in collection {:?} (pass --upsert to replace it)",
            coll.name()
        );
    }
    Ok(())
}

/// The error of a failed validation pass: an interruption as it is, anything else with what
/// was (not) done appended.
pub(crate) fn validation_failed(e: anyhow::Error, nothing_done: &str) -> anyhow::Error {
    if e.is::<interrupt::Interrupted>() {
        e
    } else {
        anyhow!("{e:#}; {nothing_done}")
    }
}
