//! What the subcommands and the shell's dot-commands do, on a [`Session`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use tessera::{Collection, CollectionConfig, CollectionInfo, Database, ExternalId, SearchParams};

use crate::args::{CreateArgs, Fields, SearchOpts};
use crate::interrupt;
use crate::query::Query;
use crate::render::{Printer, ResultSet};
use crate::text::{self, Model, ModelChoice};

/// An open database, the collection in use, and where results go.
pub struct Session {
    /// The open database, if any.
    pub db: Option<Database>,
    /// The collection `.ingest`, `.search` and `.delete` act on.
    pub current: Option<String>,
    /// Result output.
    pub printer: Printer,
    /// Print timings after each command.
    pub timer: bool,
    /// The encoder model chosen with `.model` (default for `.text` and `.ingest --text`).
    pub model_dir: Option<PathBuf>,
    /// The last model loaded, kept so that repeated text queries do not reload it.
    pub model_cache: Option<Arc<Model>>,
    /// Device of searches without `--device` (the shell's `.device`).
    pub device: tessera::Device,
    /// Refine budget of searches without `--refine` (the shell's `.refine`; `None`: the
    /// engine's default).
    pub refine: Option<usize>,
    /// Diversity of searches without diversity flags (the shell's `.diversity`).
    pub diversity: Option<tessera::Diversity>,
    /// Filter of searches without `--where` (the shell's `.where`).
    pub filter: Option<String>,
    /// Hit columns of searches without `--fields` (the shell's `.fields`).
    pub fields: Option<Fields>,
}

impl Session {
    /// The open database, or an error saying how to open one.
    pub fn db(&self) -> Result<&Database> {
        self.db
            .as_ref()
            .context("no database is open (use .open DB)")
    }

    /// The collection in use, or an error saying how to pick one.
    pub fn collection(&self) -> Result<Collection> {
        let db = self.db()?;
        let name = self
            .current
            .as_deref()
            .context("no collection in use (use .use NAME, or .create NAME --dim D)")?;
        crate::errors::collection(db, name)
    }

    /// Loads (or reuses) the model in `dir` and makes it the session's model.
    pub fn set_model(&mut self, dir: &Path) -> Result<Arc<Model>> {
        let m = Arc::new(Model::load(dir, 0, 32)?);
        self.model_dir = Some(dir.to_path_buf());
        self.model_cache = Some(m.clone());
        Ok(m)
    }

    /// The model to encode `coll`'s queries with: `given`, else the session's `.model`, else
    /// the one recorded with the collection (checked against its hash). Warns when it is
    /// not the collection's model.
    pub fn query_model(&mut self, coll: &Collection, given: Option<&Path>) -> Result<Arc<Model>> {
        let dir = given
            .map(Path::to_path_buf)
            .or_else(|| self.model_dir.clone());
        let cached = self.model_cache.clone().filter(|m| match &dir {
            Some(d) => &m.dir == d,
            // The recorded directory: reuse only a model with the recorded hash from there.
            None => coll.model().ok().flatten().is_some_and(|r| {
                r.same_model(&m.record) && r.path.is_some() && r.path == m.record.path
            }),
        });
        let m = match cached {
            Some(m) => m,
            None => {
                let choice = match &dir {
                    Some(d) => ModelChoice::Given(d),
                    None => ModelChoice::Recorded,
                };
                let m = Arc::new(text::resolve_model(choice, Some(coll), 0, 32)?);
                self.model_cache = Some(m.clone());
                m
            }
        };
        m.check_dim(coll.name(), coll.config().dim)?;
        text::warn_if_other_model(coll, &m)?;
        Ok(m)
    }

    /// Opens `path` (creating it unless `read_only`); falls back to read-only when another
    /// process holds the writer lock. Uses the database's only collection, if it has one.
    pub fn open(&mut self, path: &Path, read_only: bool) -> Result<()> {
        let db = if read_only {
            Database::open_read_only(path)?
        } else {
            match open_or_create(path) {
                Ok(db) => db,
                Err(e) => match Database::open_read_only(path) {
                    Ok(db) => {
                        eprintln!("warning: opened {} read-only: {e}", path.display());
                        db
                    }
                    Err(_) => return Err(e),
                },
            }
        };
        let names = db.collection_names();
        self.current = if names.len() == 1 {
            names.into_iter().next()
        } else {
            None
        };
        eprintln!(
            "opened {}{}{}",
            path.display(),
            if db.is_read_only() {
                " (read-only)"
            } else {
                ""
            },
            match &self.current {
                Some(c) => format!("; using collection {c:?}"),
                None => String::new(),
            }
        );
        self.db = Some(db);
        Ok(())
    }
}

/// Opens the database at `path` for writing, creating it only where that cannot litter an
/// unrelated directory: a new path, an empty directory, or an existing database.
pub fn open_or_create(path: &Path) -> Result<Database> {
    if path.is_dir() && !path.join("catalog").exists() {
        let empty = std::fs::read_dir(path)
            .with_context(|| format!("{}: cannot list the directory", path.display()))?
            .next()
            .is_none();
        if !empty {
            bail!(
                "{} is a directory that is neither empty nor a Tessera database; pick a new or empty directory",
                path.display()
            );
        }
    }
    Ok(Database::open_or_create(path)?)
}

/// A path as a shell word: quoted unless it is plain.
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:,=@".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// What to do about a missing collection: the exact `tessera create` command, or `--create`.
pub fn create_hint(db: &Path, name: &str, dim: Option<u32>) -> String {
    format!(
        "create it with `tessera create {} {} --dim {}`, or pass --create to ingest",
        shell_word(&db.display().to_string()),
        shell_word(name),
        dim.map_or_else(|| "D".to_owned(), |d| d.to_string())
    )
}

/// The database and collection an ingest writes to. Every ingest path follows one rule: the
/// collection must exist, unless `create` is set, in which case a missing database and
/// collection are created with dimension `dim()` (the input's) and default settings.
/// Without `create`, a missing one is an error naming the `tessera create` command to run.
pub fn ingest_target(
    db: &Path,
    name: &str,
    create: bool,
    dim: impl FnOnce() -> Result<u32>,
) -> Result<(Database, Collection)> {
    if create {
        let database = open_or_create(db)?;
        if let Ok(c) = database.collection(name) {
            return Ok((database, c));
        }
        let dim = dim()?;
        let coll = database.create_collection(name, CollectionConfig::new(dim))?;
        eprintln!(
            "created collection {name:?} (dim {dim}, default settings) in {}",
            db.display()
        );
        return Ok((database, coll));
    }
    if !db.exists() {
        bail!(
            "database {} does not exist; {}",
            db.display(),
            create_hint(db, name, dim().ok())
        );
    }
    let database = Database::open(db)?;
    match database.collection(name) {
        Ok(c) => Ok((database, c)),
        Err(tessera::Error::CollectionNotFound(_)) => bail!(
            "{}; {}",
            crate::errors::missing_collection(&database, name),
            create_hint(db, name, dim().ok())
        ),
        Err(e) => Err(e.into()),
    }
}

/// Creates a collection from command-line settings.
pub fn create(db: &Database, a: &CreateArgs) -> Result<Collection> {
    let mut cfg = CollectionConfig::new(a.dim)
        .with_nbits(a.nbits)
        .originals(a.originals);
    if let Some(k) = a.centroids {
        cfg = cfg.with_n_centroids(k);
    }
    if let Some(m) = a.max_tokens {
        cfg = cfg.with_max_tokens_per_doc(m);
    }
    let coll = db.create_collection(&a.collection, cfg)?;
    eprintln!(
        "created collection {:?} (dim {}, nbits {}, originals {}) in {}",
        a.collection,
        a.dim,
        a.nbits,
        a.originals,
        db.path().display()
    );
    Ok(coll)
}

/// A `--where` expression as a filter; a syntax error shows where, with a caret.
pub fn parse_filter(expr: &str) -> Result<tessera::Filter> {
    tessera::Filter::parse(expr).map_err(|e| {
        // The caret goes to stderr: the error itself is printed on one line.
        eprintln!("{}", e.pointer());
        anyhow::Error::new(e)
    })
}

/// Search parameters from command-line settings.
pub fn search_params(o: &SearchOpts) -> Result<SearchParams> {
    let mut p = if o.exhaustive {
        SearchParams::exhaustive()
    } else {
        SearchParams::default()
    };
    if let Some(n) = o.nprobe {
        p = p.with_nprobe(n);
    }
    if let Some(r) = o.rerank {
        p = p.with_n_rerank(r);
    }
    if let Some(r) = o.refine {
        p = p.with_n_refine(r);
    }
    if let Some(t) = o.threads {
        p = p.with_threads(t);
    }
    // Issue 14: diverse top-k (rag.rs).
    if let Some(d) = crate::rag::diversity(o) {
        p = p.with_diversity(d);
    }
    if let Some(expr) = &o.filter {
        p = p.with_filter(parse_filter(expr)?);
    }
    let fields = o.fields.clone().unwrap_or_default();
    p = p.with_fields(tessera::HitFields {
        metadata: fields.0.contains(&"metadata"),
        text: fields.0.contains(&"text"),
    });
    Ok(p.with_device(crate::device::for_search(
        o.device.unwrap_or(tessera::Device::Auto),
    )))
}

/// An f32 as the shortest decimal that reads back as the same f32.
pub fn f32_value(x: f32) -> Value {
    format!("{x}")
        .parse::<f64>()
        .map_or(Value::Null, Value::from)
}

/// Runs `queries` and prints one row per hit: query, rank, id, score.
pub fn search(
    coll: &Collection,
    queries: &[Query],
    opts: &SearchOpts,
    printer: &mut Printer,
    timer: bool,
) -> Result<()> {
    let params = search_params(opts)?;
    let fields = opts.fields.clone().unwrap_or_default();
    let columns: Vec<(&'static str, &'static str)> = fields.0.iter().map(|&c| (c, c)).collect();
    let mut rs = ResultSet::new(&columns);
    let mut times: Vec<Duration> = Vec::with_capacity(queries.len());
    let mut stopped = None;
    for (i, q) in queries.iter().enumerate() {
        if interrupt::requested() {
            stopped = Some(i);
            break;
        }
        let start = Instant::now();
        let hits = coll
            .search(&q.vectors, opts.k, &params)
            .with_context(|| format!("query {}", q.label))?;
        times.push(start.elapsed());
        for (rank, h) in hits.iter().enumerate() {
            let row = fields
                .0
                .iter()
                .map(|&c| {
                    Ok(match c {
                        "query" => q.label.clone(),
                        "rank" => json!(rank + 1),
                        "id" => serde_json::to_value(&h.id)?,
                        "score" => f32_value(h.score),
                        "metadata" => h.metadata.clone().unwrap_or(Value::Null),
                        _ => h.text.clone().map_or(Value::Null, Value::String),
                    })
                })
                .collect::<Result<Vec<Value>>>()?;
            rs.push(row);
        }
    }
    printer.print(&rs)?;
    if timer && !times.is_empty() {
        let total: Duration = times.iter().sum();
        eprintln!(
            "search: {} quer{} in {:.2} ms ({:.2} ms each)",
            times.len(),
            if times.len() == 1 { "y" } else { "ies" },
            total.as_secs_f64() * 1e3,
            total.as_secs_f64() * 1e3 / times.len() as f64
        );
    }
    if let Some(i) = stopped {
        return Err(
            interrupt::Interrupted(format!("after {i} of {} queries", queries.len())).into(),
        );
    }
    Ok(())
}

/// The stored vectors of document `id` as a query ("more like this").
pub fn like_query(coll: &Collection, id: &str) -> Result<Query> {
    let ext = resolve_id(coll, id)?;
    let vectors = coll
        .vectors(&ext)?
        .with_context(|| format!("collection {:?} has no document with id {id}", coll.name()))?;
    Ok(Query {
        label: serde_json::to_value(&ext)?,
        vectors,
    })
}

/// Maps a typed id to the collection's: the string id if it exists, else the integer id
/// when the text is a number that exists as one, else the string.
pub fn resolve_id(coll: &Collection, s: &str) -> Result<ExternalId> {
    let as_str = ExternalId::from(s);
    if coll.contains(&as_str)? {
        return Ok(as_str);
    }
    if let Ok(n) = s.parse::<u64>() {
        let as_int = ExternalId::Int(n);
        if coll.contains(&as_int)? {
            return Ok(as_int);
        }
    }
    Ok(as_str)
}

/// `tessera get` / `.get`: one row per id: id, tokens, metadata, text (and vectors); an id
/// that is not there is reported on stderr and makes the command fail after the rows.
pub fn get(coll: &Collection, ids: &[String], vectors: bool) -> Result<ResultSet> {
    let ext: Vec<ExternalId> = ids
        .iter()
        .map(|s| resolve_id(coll, s))
        .collect::<Result<_>>()?;
    let mut cols = vec![
        ("id", "id"),
        ("tokens", "tokens"),
        ("metadata", "metadata"),
        ("text", "text"),
    ];
    if vectors {
        cols.push(("vectors", "vectors"));
    }
    let mut rs = ResultSet::new(&cols);
    let mut missing = Vec::new();
    let dim = coll.config().dim as usize;
    for (id, doc) in ext.iter().zip(coll.get(&ext, vectors)?) {
        let Some(d) = doc else {
            missing.push(id.to_string());
            continue;
        };
        let mut row = vec![
            serde_json::to_value(&d.id)?,
            json!(d.tokens),
            d.metadata.unwrap_or(Value::Null),
            d.text.map_or(Value::Null, Value::String),
        ];
        if vectors {
            let rows: Vec<Vec<Value>> = d
                .vectors
                .unwrap_or_default()
                .chunks(dim.max(1))
                .map(|r| r.iter().map(|&x| f32_value(x)).collect())
                .collect();
            row.push(json!(rows));
        }
        rs.push(row);
    }
    if !missing.is_empty() {
        return Err(MissingIds(rs, missing).into());
    }
    Ok(rs)
}

/// Prints what [`get`] found, then fails if some ids were not found.
pub fn print_get(printer: &mut Printer, found: Result<ResultSet>) -> Result<()> {
    match found {
        Ok(rs) => printer.print(&rs),
        Err(e) => match e.downcast::<MissingIds>() {
            Ok(m) => {
                printer.print(&m.0)?;
                bail!("{m}")
            }
            Err(e) => Err(e),
        },
    }
}

/// Rows of the ids that were found, and the ids that were not: printed, then an error.
#[derive(Debug)]
pub struct MissingIds(pub ResultSet, pub Vec<String>);

impl std::fmt::Display for MissingIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "not found: {}", self.1.join(", "))
    }
}

impl std::error::Error for MissingIds {}

/// `tessera list` / `.list`: id, tokens and metadata of every document (or of those matching
/// `filter`), in id order.
pub fn list(coll: &Collection, filter: Option<&str>) -> Result<ResultSet> {
    let keep: Option<std::collections::HashSet<ExternalId>> = match filter {
        Some(expr) => Some(coll.matching(&parse_filter(expr)?)?.into_iter().collect()),
        None => None,
    };
    let mut rs = ResultSet::new(&[("id", "id"), ("tokens", "tokens"), ("metadata", "metadata")]);
    let docs = coll.list(tessera::HitFields {
        metadata: true,
        text: false,
    })?;
    for d in docs {
        if keep.as_ref().is_some_and(|k| !k.contains(&d.id)) {
            continue;
        }
        rs.push(vec![
            serde_json::to_value(&d.id)?,
            json!(d.tokens),
            d.metadata.unwrap_or(Value::Null),
        ]);
    }
    Ok(rs)
}

/// `tessera export`: one JSON object per document, `{"id", "metadata"[, "text"]}`, in id
/// order, the shape `ingest --text` reads back (with the text).
pub fn export(coll: &Collection, text: bool, out: &mut impl std::io::Write) -> Result<usize> {
    let docs = coll.list(tessera::HitFields {
        metadata: true,
        text,
    })?;
    for d in &docs {
        let mut obj = serde_json::Map::new();
        obj.insert("id".into(), serde_json::to_value(&d.id)?);
        if let Some(t) = &d.text {
            obj.insert("text".into(), Value::String(t.clone()));
        }
        obj.insert("metadata".into(), d.metadata.clone().unwrap_or(Value::Null));
        writeln!(out, "{}", Value::Object(obj)).context("cannot write the export")?;
    }
    out.flush().context("cannot write the export")?;
    Ok(docs.len())
}

/// Deletes ids and reports what happened on stderr.
pub fn delete(coll: &Collection, ids: &[String]) -> Result<()> {
    if ids.is_empty() {
        bail!("no ids given");
    }
    let ext: Vec<ExternalId> = ids
        .iter()
        .map(|s| resolve_id(coll, s))
        .collect::<Result<_>>()?;
    let report = coll.delete(&ext)?;
    let missing: Vec<String> = report.missing.iter().map(ToString::to_string).collect();
    eprintln!(
        "deleted {} document{} from {:?}{}",
        report.deleted,
        if report.deleted == 1 { "" } else { "s" },
        coll.name(),
        if missing.is_empty() {
            String::new()
        } else {
            format!("; not found: {}", missing.join(", "))
        }
    );
    Ok(())
}

/// Compacts a collection and reports what changed, on stderr (or as JSON on stdout).
pub fn compact(coll: &Collection, json: bool) -> Result<()> {
    let r = coll.compact()?;
    if json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    eprintln!(
        "compacted {:?}: {} merge{}, {} → {} segments, {} deleted document{} dropped, {} → {} bytes, {:.2} s",
        coll.name(),
        r.merges,
        if r.merges == 1 { "" } else { "s" },
        r.segments_before,
        r.segments_after,
        r.documents_dropped,
        if r.documents_dropped == 1 { "" } else { "s" },
        r.bytes_before,
        r.bytes_after,
        r.seconds
    );
    Ok(())
}

/// Re-trains a collection's codec and reports what changed, on stderr (or as JSON).
pub fn retrain(coll: &Collection, json: bool) -> Result<()> {
    let r = coll.retrain()?;
    if json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    eprintln!(
        "retrained {:?}: {} → {} centroids (trained on {} tokens), {} segments, {} tokens re-encoded, mean residual norm {:.4} → {:.4}, {:.2} s",
        coll.name(),
        r.centroids_before,
        r.centroids_after,
        r.trained_tokens,
        r.segments,
        r.tokens,
        r.residual_norm_before,
        r.residual_norm_after,
        r.seconds
    );
    Ok(())
}

/// Prints a verification: one line per problem and per note on stdout, then a summary
/// line (or the whole report as JSON).
pub fn print_verify(r: &tessera::VerifyReport, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(r)?);
        return Ok(());
    }
    for p in &r.problems {
        println!("{p}");
    }
    for n in &r.notes {
        println!("note: {n}");
    }
    let c = &r.checked;
    println!(
        "{}: checked {} collection{}, {} files, {} sections, {} documents ({} originals documents), {} id-map entries, {} tombstones, {} metadata records",
        match r.problems.len() {
            0 => "ok".to_owned(),
            1 => "1 problem".to_owned(),
            n => format!("{n} problems"),
        },
        c.collections,
        if c.collections == 1 { "" } else { "s" },
        c.files,
        c.sections,
        c.documents,
        c.original_documents,
        c.id_map_entries,
        c.tombstones,
        c.metadata_records
    );
    Ok(())
}

fn codec_summary(i: &CollectionInfo) -> String {
    if i.centroids == 0 {
        "untrained (the first ingest trains it)".into()
    } else {
        format!(
            "{}-bit residuals, {} centroids",
            i.config.nbits, i.centroids
        )
    }
}

/// One row per collection: documents, tokens, segments, bytes per token, codec.
pub fn info(db: &Database, only: Option<&str>) -> Result<ResultSet> {
    let mut rs = ResultSet::new(&[
        ("name", "collection"),
        ("dim", "dim"),
        ("nbits", "nbits"),
        ("documents", "documents"),
        ("tokens", "tokens"),
        ("segments", "segments"),
        ("bytes_per_token", "bytes/token"),
        ("originals", "originals"),
        ("originals_bytes_per_token", "originals bytes/token"),
        ("disk_bytes", "disk bytes"),
        ("centroids", "centroids"),
        ("codec_trained_tokens", "codec tokens"),
        ("commits", "commits"),
        ("max_tokens_per_doc", "max tokens/doc"),
        ("codec", "codec"),
        ("model", "model"),
        ("model_hash", "model hash"),
        ("model_path", "model path"),
    ])
    .hide_in_table("model_hash")
    .hide_in_table("model_path")
    .hide_in_table("centroids")
    .hide_in_table("codec_trained_tokens")
    .hide_in_table("commits")
    .hide_in_table("max_tokens_per_doc")
    .hide_in_table("originals_bytes_per_token");
    let names = match only {
        Some(n) => vec![crate::errors::collection(db, n)?.name().to_owned()],
        None => db.collection_names(),
    };
    for name in names {
        let i = db.collection(&name)?.info();
        rs.push(vec![
            json!(i.name),
            json!(i.config.dim),
            json!(i.config.nbits),
            json!(i.documents),
            json!(i.tokens),
            json!(i.segments),
            json!((i.bytes_per_token * 100.0).round() / 100.0),
            json!(i.config.originals.to_string()),
            json!((i.originals_bytes_per_token * 100.0).round() / 100.0),
            json!(i.disk_bytes),
            json!(i.centroids),
            json!(i.codec_trained_tokens),
            json!(i.commits),
            json!(i.config.max_tokens_per_doc),
            json!(codec_summary(&i)),
            json!(i.model.as_ref().map(ToString::to_string)),
            json!(i.model.as_ref().map(|m| m.hash.clone())),
            json!(i.model.as_ref().and_then(|m| m.path.clone())),
        ]);
    }
    Ok(rs)
}

/// One row per collection: name, dimension, documents.
pub fn collections(db: &Database) -> Result<ResultSet> {
    let mut rs = ResultSet::new(&[
        ("name", "collection"),
        ("dim", "dim"),
        ("documents", "documents"),
    ]);
    for name in db.collection_names() {
        let i = db.collection(&name)?.info();
        rs.push(vec![json!(i.name), json!(i.config.dim), json!(i.documents)]);
    }
    Ok(rs)
}
