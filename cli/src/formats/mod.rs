//! Input formats for ingest and how a list of inputs becomes a stream of documents.
//!
//! Ingest is planned first: headers, sizes, document lengths and id lists are read and
//! checked against each other and against the collection (cheap: no vector data is read).
//! The plan then opens a [`DocStream`] that reads documents one at a time, so memory is
//! bounded by the batch being assembled, not by the corpus.

pub mod elem;
pub mod jsonl;
pub mod lines;
pub mod npy;
pub mod rows;
pub mod safetensors;

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use tessera::ExternalId;

use self::npy::NpyMeta;
use self::rows::{MatrixLayout, RowSource};
use self::safetensors::StMeta;

/// An input format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A directory of `.npy` files, one `[tokens, dim]` matrix per document (id: file stem).
    NpyDir,
    /// `.npy` files, each one document (id: file stem).
    Npy,
    /// One `.npy` of all token rows with `--doclens` (ColBERT's layout).
    NpyFlat,
    /// `.safetensors`: one tensor per document (id: tensor name), or a flat `embeddings`
    /// tensor with a `doclens` tensor or `--doclens`.
    Safetensors,
    /// JSON lines: `{"id": …, "embeddings": [[…], …], "metadata": {…}}`.
    Jsonl,
}

impl Format {
    /// Guesses the format from a path: directories are `npy-dir`, otherwise the extension.
    pub fn detect(path: &Path, has_doclens: bool) -> Result<Format> {
        if path.is_dir() {
            return Ok(Format::NpyDir);
        }
        if !path.exists() {
            bail!("{}: no such file or directory", path.display());
        }
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        Ok(match ext.as_str() {
            "npy" if has_doclens => Format::NpyFlat,
            "npy" => Format::Npy,
            "safetensors" => Format::Safetensors,
            "jsonl" | "ndjson" | "json" => Format::Jsonl,
            _ => bail!(
                "{}: cannot tell the input format from the name; pass --format npy-dir|npy|npy-flat|safetensors|jsonl",
                path.display()
            ),
        })
    }
}

/// Where a document comes from, for error messages.
#[derive(Clone, Debug)]
pub struct Place {
    /// The file, as displayed.
    pub file: Arc<str>,
    /// Where in the file.
    pub at: Locator,
}

/// A position inside an input file.
#[derive(Clone, Debug)]
pub enum Locator {
    /// The whole file is the document.
    File,
    /// The n-th document (0-based) of a flat file.
    Doc(usize),
    /// A line (1-based) of a JSON-lines file.
    Line(usize),
    /// A named tensor.
    Tensor(String),
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.at {
            Locator::File => write!(f, "{}", self.file),
            Locator::Doc(i) => write!(f, "{}: document {i}", self.file),
            Locator::Line(n) => write!(f, "{}: line {n}", self.file),
            Locator::Tensor(t) => write!(f, "{}: tensor {t:?}", self.file),
        }
    }
}

/// One document read from an input.
#[derive(Clone, Debug)]
pub struct SourceDoc {
    /// Its id.
    pub id: ExternalId,
    /// Row-major `[tokens, dim]` vectors.
    pub vectors: Vec<f32>,
    /// Optional metadata.
    pub metadata: Option<serde_json::Value>,
    /// Where it came from.
    pub place: Place,
}

impl SourceDoc {
    /// "FILE: line 3 (id doc-7)": where the document is, for error messages.
    pub fn describe(&self) -> String {
        match &self.place.at {
            Locator::File | Locator::Tensor(_) => self.place.to_string(),
            _ => format!("{} (id {})", self.place, self.id),
        }
    }
}

/// Documents read one at a time.
pub trait DocStream {
    /// The next document, or `None` at the end.
    fn next_doc(&mut self) -> Result<Option<SourceDoc>>;
}

/// How to read the inputs of one ingest.
#[derive(Clone, Debug)]
pub struct PlanRequest<'a> {
    /// Input paths.
    pub inputs: &'a [PathBuf],
    /// Format of all inputs (default: detected per input).
    pub format: Option<Format>,
    /// Document lengths of a flat input.
    pub doclens: Option<&'a Path>,
    /// Ids of a flat input, one per line.
    pub ids: Option<&'a Path>,
    /// The collection's dimension.
    pub dim: usize,
    /// The collection's per-document token limit.
    pub max_tokens: usize,
}

/// One planned input.
#[derive(Clone, Debug)]
pub enum Input {
    /// Per-document `.npy` files: header and row count of each.
    NpyFiles(Vec<(NpyMeta, usize)>),
    /// A flat matrix split by document lengths.
    Flat {
        /// The matrix.
        layout: MatrixLayout,
        /// Rows of each document.
        doclens: Arc<Vec<usize>>,
        /// Ids, or positions when `None`.
        ids: Option<Arc<Vec<ExternalId>>>,
    },
    /// A safetensors file with one tensor per document.
    SafeDocs(StMeta, Vec<(String, MatrixLayout)>),
    /// A JSON-lines file.
    Jsonl(PathBuf),
}

/// The checked inputs of one ingest.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The inputs, in order.
    pub inputs: Vec<Input>,
    /// The collection's dimension.
    pub dim: usize,
}

impl Plan {
    /// Documents in all inputs, when known without reading them.
    pub fn known_docs(&self) -> Option<u64> {
        self.inputs.iter().try_fold(0u64, |acc, i| {
            let n = match i {
                Input::NpyFiles(f) => f.len(),
                Input::Flat { doclens, .. } => doclens.len(),
                Input::SafeDocs(_, d) => d.len(),
                Input::Jsonl(_) => return None,
            };
            Some(acc + n as u64)
        })
    }

    /// Token vectors in all inputs, when known without reading them.
    pub fn known_tokens(&self) -> Option<u64> {
        self.inputs.iter().try_fold(0u64, |acc, i| {
            let n: usize = match i {
                Input::NpyFiles(f) => f.iter().map(|(_, r)| r).sum(),
                Input::Flat { layout, .. } => layout.rows,
                Input::SafeDocs(_, d) => d.iter().map(|(_, l)| l.rows).sum(),
                Input::Jsonl(_) => return None,
            };
            Some(acc + n as u64)
        })
    }

    /// A stream over every document of every input, in order.
    pub fn open(&self) -> Chain<'_> {
        Chain {
            plan: self,
            next_input: 0,
            current: None,
        }
    }
}

/// The documents of a plan's inputs, one input after the other.
pub struct Chain<'a> {
    plan: &'a Plan,
    next_input: usize,
    current: Option<Box<dyn DocStream + 'a>>,
}

impl DocStream for Chain<'_> {
    fn next_doc(&mut self) -> Result<Option<SourceDoc>> {
        loop {
            if let Some(s) = &mut self.current {
                if let Some(d) = s.next_doc()? {
                    return Ok(Some(d));
                }
                self.current = None;
            }
            let Some(input) = self.plan.inputs.get(self.next_input) else {
                return Ok(None);
            };
            self.next_input += 1;
            self.current = Some(open_input(input, self.plan.dim)?);
        }
    }
}

fn display(p: &Path) -> Arc<str> {
    Arc::from(p.display().to_string())
}

fn stem_id(path: &Path) -> Result<ExternalId> {
    path.file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| !s.is_empty())
        .map(ExternalId::from)
        .with_context(|| format!("{}: the file name is not a UTF-8 id", path.display()))
}

fn open_input<'a>(input: &'a Input, dim: usize) -> Result<Box<dyn DocStream + 'a>> {
    Ok(match input {
        Input::NpyFiles(files) => Box::new(NpyFilesStream { files, next: 0 }),
        Input::Flat {
            layout,
            doclens,
            ids,
        } => Box::new(FlatStream {
            file: display(&layout.path),
            rows: layout.open()?,
            doclens,
            ids: ids.as_ref().map(|v| v.as_slice()),
            next: 0,
        }),
        Input::SafeDocs(meta, docs) => Box::new(SafeDocsStream {
            file: display(&meta.path),
            reader: std::fs::File::open(&meta.path)
                .with_context(|| format!("{}: cannot open", meta.path.display()))?,
            docs,
            next: 0,
        }),
        Input::Jsonl(path) => Box::new(jsonl::JsonlStream::open(path, dim)?),
    })
}

struct NpyFilesStream<'a> {
    files: &'a [(NpyMeta, usize)],
    next: usize,
}

impl DocStream for NpyFilesStream<'_> {
    fn next_doc(&mut self) -> Result<Option<SourceDoc>> {
        let Some((meta, _)) = self.files.get(self.next) else {
            return Ok(None);
        };
        self.next += 1;
        Ok(Some(SourceDoc {
            id: stem_id(&meta.path)?,
            vectors: meta.read_all()?,
            metadata: None,
            place: Place {
                file: display(&meta.path),
                at: Locator::File,
            },
        }))
    }
}

struct FlatStream<'a> {
    file: Arc<str>,
    rows: Box<dyn RowSource>,
    doclens: &'a [usize],
    ids: Option<&'a [ExternalId]>,
    next: usize,
}

impl DocStream for FlatStream<'_> {
    fn next_doc(&mut self) -> Result<Option<SourceDoc>> {
        let Some(&len) = self.doclens.get(self.next) else {
            return Ok(None);
        };
        let i = self.next;
        self.next += 1;
        let id = match self.ids {
            Some(ids) => ids[i].clone(),
            None => ExternalId::Int(i as u64),
        };
        let place = Place {
            file: self.file.clone(),
            at: Locator::Doc(i),
        };
        let vectors = self
            .rows
            .read_rows(len)
            .with_context(|| format!("{place} (id {id})"))?;
        Ok(Some(SourceDoc {
            id,
            vectors,
            metadata: None,
            place,
        }))
    }
}

struct SafeDocsStream<'a> {
    file: Arc<str>,
    reader: std::fs::File,
    docs: &'a [(String, MatrixLayout)],
    next: usize,
}

impl DocStream for SafeDocsStream<'_> {
    fn next_doc(&mut self) -> Result<Option<SourceDoc>> {
        let Some((name, layout)) = self.docs.get(self.next) else {
            return Ok(None);
        };
        self.next += 1;
        let vectors = rows::read_matrix_at(&mut self.reader, layout)?;
        Ok(Some(SourceDoc {
            id: ExternalId::from(name.as_str()),
            vectors,
            metadata: None,
            place: Place {
                file: self.file.clone(),
                at: Locator::Tensor(name.clone()),
            },
        }))
    }
}

/// Checks inputs cheaply (headers, sizes, lengths, ids) and returns the plan.
pub fn plan(req: &PlanRequest<'_>) -> Result<Plan> {
    if req.inputs.is_empty() {
        bail!("no input files given");
    }
    let flat_options = req.doclens.is_some() || req.ids.is_some();
    if flat_options && req.inputs.len() != 1 {
        bail!(
            "--doclens and --ids describe one flat file, but {} inputs were given",
            req.inputs.len()
        );
    }
    let mut inputs = Vec::with_capacity(req.inputs.len());
    for path in req.inputs {
        let format = match req.format {
            Some(f) => f,
            None => Format::detect(path, req.doclens.is_some())?,
        };
        if flat_options && !matches!(format, Format::NpyFlat | Format::Safetensors) {
            bail!(
                "{}: --doclens/--ids only apply to npy-flat and safetensors inputs",
                path.display()
            );
        }
        inputs.push(match format {
            Format::NpyDir => plan_npy_dir(path, req)?,
            Format::Npy => {
                let meta = npy::read_meta(path)?;
                let rows = meta.matrix_rows(req.dim)?;
                if rows > req.max_tokens && req.doclens.is_none() {
                    // Most likely ColBERT's flat layout: many documents' rows in one file.
                    bail!(
                        "{}: {rows} token vectors are too many for one document (the limit is {}); a flat file of many documents needs --doclens (tokens per document)",
                        path.display(),
                        req.max_tokens
                    );
                }
                let rows = check_doc_rows(rows, req.max_tokens, &path.display())?;
                Input::NpyFiles(vec![(meta, rows)])
            }
            Format::NpyFlat => {
                let meta = npy::read_meta(path)?;
                let layout = meta.layout(req.dim)?;
                let doclens_path = req.doclens.with_context(|| {
                    format!(
                        "{}: a flat .npy needs --doclens (tokens per document)",
                        path.display()
                    )
                })?;
                let lens = read_doclens(doclens_path)?;
                flat_input(layout, lens, &doclens_path.display().to_string(), req)?
            }
            Format::Safetensors => plan_safetensors(path, req)?,
            Format::Jsonl => {
                std::fs::metadata(path)
                    .with_context(|| format!("{}: cannot open", path.display()))?;
                Input::Jsonl(path.clone())
            }
        });
    }
    Ok(Plan {
        inputs,
        dim: req.dim,
    })
}

/// The vector dimension of the first input, read from its header (or, for JSON lines, its
/// first document), for `ingest --create`.
pub fn infer_dim(inputs: &[PathBuf], format: Option<Format>, has_doclens: bool) -> Result<u32> {
    let Some(path) = inputs.first() else {
        bail!("no input files given");
    };
    let p = path.display();
    let format = match format {
        Some(f) => f,
        None => Format::detect(path, has_doclens)?,
    };
    let of_shape = |shape: &[usize], what: &str| -> Result<u32> {
        match shape {
            [_, d] if *d > 0 => u32::try_from(*d).with_context(|| format!("{what}: dimension {d}")),
            _ => bail!("{what}: expected a 2-D [tokens, dim] array, got shape {shape:?}"),
        }
    };
    match format {
        Format::NpyDir => {
            let mut npys: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("{p}: cannot list the directory"))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy")))
                .collect();
            npys.sort();
            let first = npys
                .first()
                .with_context(|| format!("{p}: the directory holds no .npy files"))?;
            of_shape(&npy::read_meta(first)?.shape, &first.display().to_string())
        }
        Format::Npy | Format::NpyFlat => of_shape(&npy::read_meta(path)?.shape, &p.to_string()),
        Format::Safetensors => {
            let meta = safetensors::read_meta(path)?;
            let (name, info) = meta
                .tensors
                .iter()
                .find(|(n, _)| n == "embeddings")
                .or_else(|| meta.tensors.iter().find(|(n, _)| n != "doclens"))
                .with_context(|| format!("{p}: the file holds no tensors"))?;
            of_shape(&info.shape, &format!("{p}: tensor {name:?}"))
        }
        Format::Jsonl => jsonl::first_dim(path),
    }
}

fn check_doc_rows(rows: usize, max: usize, what: &dyn fmt::Display) -> Result<usize> {
    if rows == 0 {
        bail!("{what}: the document has no token vectors");
    }
    if rows > max {
        bail!(
            "{what}: the document has {rows} token vectors, more than the collection's limit of {max}"
        );
    }
    Ok(rows)
}

fn plan_npy_dir(dir: &Path, req: &PlanRequest<'_>) -> Result<Input> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("{}: cannot list the directory", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy")))
        .collect();
    paths.sort();
    if paths.is_empty() {
        bail!("{}: the directory holds no .npy files", dir.display());
    }
    let mut files = Vec::with_capacity(paths.len());
    for p in paths {
        let meta = npy::read_meta(&p)?;
        let rows = check_doc_rows(meta.matrix_rows(req.dim)?, req.max_tokens, &p.display())?;
        stem_id(&p)?;
        files.push((meta, rows));
    }
    Ok(Input::NpyFiles(files))
}

fn plan_safetensors(path: &Path, req: &PlanRequest<'_>) -> Result<Input> {
    let meta = safetensors::read_meta(path)?;
    let p = path.display();
    let internal_doclens = meta.info("doclens").is_some();
    if req.doclens.is_some() || internal_doclens {
        let lens = match req.doclens {
            Some(d) => read_doclens(d)?,
            None => meta.read_ints("doclens")?,
        };
        let name = if meta.info("embeddings").is_some() {
            "embeddings".to_owned()
        } else {
            let matrices: Vec<&String> = meta
                .tensors
                .iter()
                .filter(|(n, i)| n != "doclens" && i.shape.len() == 2)
                .map(|(n, _)| n)
                .collect();
            match matrices[..] {
                [one] => one.clone(),
                _ => bail!(
                    "{p}: a flat safetensors file needs one 2-D tensor named \"embeddings\"; found {matrices:?}"
                ),
            }
        };
        let layout = meta.matrix(&name, req.dim)?;
        let source = match req.doclens {
            Some(d) => d.display().to_string(),
            None => format!("{p}: tensor \"doclens\""),
        };
        return flat_input(layout, lens, &source, req);
    }
    if req.ids.is_some() {
        bail!(
            "{p}: --ids applies to flat files; this file has one tensor per document (named by id)"
        );
    }
    if meta.tensors.is_empty() {
        bail!("{p}: the file holds no tensors");
    }
    let mut docs = Vec::with_capacity(meta.tensors.len());
    for (name, info) in &meta.tensors {
        let layout = meta.matrix_of(name, info, req.dim)?;
        check_doc_rows(
            layout.rows,
            req.max_tokens,
            &format!("{p}: tensor {name:?}"),
        )?;
        docs.push((name.clone(), layout));
    }
    Ok(Input::SafeDocs(meta, docs))
}

/// Checks document lengths and ids of a flat matrix against each other and the matrix.
fn flat_input(
    layout: MatrixLayout,
    lens: Vec<i64>,
    lens_source: &str,
    req: &PlanRequest<'_>,
) -> Result<Input> {
    let ids = match req.ids {
        Some(p) => {
            let ids = read_ids(p)?;
            if ids.len() != lens.len() {
                bail!(
                    "{}: {} ids for {} documents in {lens_source}",
                    p.display(),
                    ids.len(),
                    lens.len()
                );
            }
            Some(Arc::new(ids))
        }
        None => None,
    };
    let id_of = |i: usize| match &ids {
        Some(ids) => format!(" (id {})", ids[i]),
        None => String::new(),
    };
    let mut doclens = Vec::with_capacity(lens.len());
    let mut total: u64 = 0;
    for (i, &l) in lens.iter().enumerate() {
        let l = usize::try_from(l).map_err(|_| {
            anyhow::anyhow!(
                "{lens_source}: document {i}{} has negative length {l}",
                id_of(i)
            )
        })?;
        check_doc_rows(
            l,
            req.max_tokens,
            &format!("{lens_source}: document {i}{}", id_of(i)),
        )?;
        total += l as u64;
        doclens.push(l);
    }
    if total != layout.rows as u64 {
        bail!(
            "{lens_source}: document lengths add up to {total} rows but {} has {} rows",
            layout.path.display(),
            layout.rows
        );
    }
    Ok(Input::Flat {
        layout,
        doclens: Arc::new(doclens),
        ids,
    })
}

/// Reads document lengths from an integer `.npy` array or a JSON list.
pub fn read_doclens(path: &Path) -> Result<Vec<i64>> {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
    {
        // Parsed from the stream: memory follows the list, not the file's size.
        let f = File::open(path).with_context(|| format!("{}: cannot read", path.display()))?;
        serde_json::from_reader(BufReader::new(f))
            .with_context(|| format!("{}: expected a JSON list of integers", path.display()))
    } else {
        npy::read_ints(path)
    }
}

/// Reads ids, one per line (trailing whitespace trimmed); blank lines and repeats are errors.
/// Lines are read with the JSON-lines readers' bound, so memory follows the ids.
pub fn read_ids(path: &Path) -> Result<Vec<ExternalId>> {
    let f = File::open(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let mut reader = BufReader::new(f);
    let mut buf = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut ids = Vec::new();
    for n in 1usize.. {
        let read = lines::read_line(&mut reader, &mut buf, lines::MAX_LINE_BYTES)
            .with_context(|| format!("{}: cannot read line {n}", path.display()))?;
        match read {
            lines::Line::End => break,
            lines::Line::TooLong => bail!(
                "{}: line {n} is longer than {} MiB",
                path.display(),
                lines::MAX_LINE_BYTES >> 20
            ),
            lines::Line::Read => {}
        }
        let line = std::str::from_utf8(&buf)
            .map_err(|_| anyhow::anyhow!("{}: line {n} is not valid UTF-8", path.display()))?;
        let id = line.trim_end();
        if id.is_empty() {
            bail!("{}: line {n} is blank", path.display());
        }
        if let Some(first) = seen.insert(id.to_owned(), n) {
            bail!(
                "{}: duplicate id {id:?} on lines {first} and {n}",
                path.display()
            );
        }
        let id = ExternalId::from(id);
        ids.push(id);
    }
    Ok(ids)
}
