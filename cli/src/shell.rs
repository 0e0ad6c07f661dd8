//! `tessera shell`: an interactive shell in the style of sqlite3 and duckdb. Dot-commands
//! (the dot is optional) act on an open database and a collection in use; on a terminal
//! there is line editing, completion and a history file, and piped standard input runs the
//! same commands without prompts.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use rustyline::completion::{Completer, FilenameCompleter, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::{CompletionType, Config, Editor, Helper};

use crate::args::{CreateArgs, IngestArgs, QuerySource, SearchOpts, ShellArgs};
use crate::commands::{self, Session};
use crate::render::{Mode, Printer};
use crate::{ingest, interrupt, query, rag, text};

/// `on` or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    /// Enabled.
    On,
    /// Disabled.
    Off,
}

/// One shell command line.
#[derive(Parser, Debug)]
#[command(
    name = "",
    no_binary_name = true,
    disable_help_subcommand = true,
    disable_version_flag = true
)]
struct ShellLine {
    #[command(subcommand)]
    cmd: ShellCmd,
}

#[derive(Subcommand, Debug)]
enum ShellCmd {
    /// Show the commands, or one command's options.
    Help {
        /// A command name.
        command: Option<String>,
    },
    /// Open (or create) a database.
    Open {
        /// Database directory.
        path: PathBuf,
        /// Open read-only (works while another process writes).
        #[arg(long)]
        read_only: bool,
    },
    /// List the collections.
    #[command(alias = "tables")]
    Collections,
    /// Use a collection for .ingest, .search and .delete.
    Use {
        /// Collection name.
        collection: String,
    },
    /// Create a collection and use it.
    Create(CreateArgs),
    /// Ingest files (or text with --text) into the collection in use.
    Ingest(IngestArgs),
    /// Search the collection in use with a query file, or a stored document (--like).
    Search {
        /// Query file (.npy, .safetensors, .json, .jsonl).
        #[arg(required_unless_present = "like")]
        query: Option<PathBuf>,
        /// Use this document's stored vectors as the query.
        #[arg(long, conflicts_with = "query")]
        like: Option<String>,
        /// Search settings.
        #[command(flatten)]
        opts: SearchOpts,
    },
    /// Search the collection in use with text (encoded by .model or the collection's model).
    Text {
        /// Search settings.
        #[command(flatten)]
        opts: SearchOpts,
        /// Encoder model directory for this query (default: .model, else the collection's).
        #[arg(long, value_name = "DIR")]
        model: Option<PathBuf>,
        /// The query text (the rest of the line).
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        words: Vec<String>,
    },
    /// Score given documents against a query by exact MaxSim (rerank only); ids not in the
    /// collection are listed on stderr.
    #[command(group(
        clap::ArgGroup::new("queries")
            .required(true)
            .args(["query", "text", "like"])
    ))]
    Rerank {
        /// The query.
        #[command(flatten)]
        source: QuerySource,
        /// Results per query (at least 1; default: every given document).
        #[arg(short = 'k', value_parser = crate::args::at_least_one::<usize>)]
        k: Option<usize>,
        /// A file of ids to score, one per line (with or instead of IDS).
        #[arg(long, value_name = "FILE")]
        ids_file: Option<PathBuf>,
        /// Ids of the documents to score.
        #[arg(value_name = "ID", required_unless_present = "ids_file")]
        ids: Vec<String>,
    },
    /// Explain a document's score for a query token by token; --plot writes a heatmap (SVG).
    #[command(group(
        clap::ArgGroup::new("queries")
            .required(true)
            .args(["query", "text", "like"])
    ))]
    Explain {
        /// The document.
        id: String,
        /// The query.
        #[command(flatten)]
        source: QuerySource,
        /// Write a heatmap of query tokens x document tokens to this .svg file.
        #[arg(long, value_name = "FILE.svg")]
        plot: Option<PathBuf>,
    },
    /// Set the diversity of .search and .text: off, on (0.9 and 0.9), or the two thresholds
    /// (query, kept) from -1 to 1; no argument: show it.
    Diversity {
        /// off, on, or MAX_QUERY_SIMILARITY MAX_KEPT_SIMILARITY.
        #[arg(num_args = 0..=2)]
        values: Vec<String>,
    },
    /// Set the encoder model for .text and .ingest --text (no argument: show it).
    Model {
        /// Model directory (Hugging Face BERT or PyLate ColBERT).
        dir: Option<PathBuf>,
    },
    /// Show stored documents of the collection in use: tokens, metadata, text (and vectors).
    Get {
        /// Ids.
        #[arg(required = true)]
        ids: Vec<String>,
        /// Also show the vectors.
        #[arg(long)]
        vectors: bool,
    },
    /// List the documents of the collection in use: id, tokens, metadata (with --where,
    /// only those matching).
    List {
        /// Only documents matching this filter.
        #[arg(long = "where", value_name = "EXPR")]
        filter: Option<String>,
    },
    /// Set the filter of searches (`.where EXPR`, the rest of the line as typed; `.where off`
    /// clears it; no argument: shows it).
    Where {
        /// A filter expression (the rest of the line), or off.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        words: Vec<String>,
    },
    /// Set the columns of search results (e.g. `.fields id,score,metadata,text`; `.fields
    /// default`; no argument: show them).
    Fields {
        /// Comma-separated columns from query, rank, id, score, metadata, text; or default.
        list: Option<String>,
    },
    /// Delete documents by id from the collection in use.
    Delete {
        /// Ids.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Merge the collection in use's segments, dropping deleted documents' bytes.
    Compact,
    /// Re-train the collection in use's codec from its original vectors.
    Retrain,
    /// Check every file and record of the open database; one line per problem.
    Verify,
    /// Drop a collection and its files.
    Drop {
        /// Collection name.
        collection: String,
    },
    /// Documents, tokens, segments, bytes per token, codec and model of collections.
    #[command(alias = "schema")]
    Info {
        /// Only this collection.
        collection: Option<String>,
    },
    /// Set the output mode.
    Mode {
        /// table, json, jsonl or csv.
        #[arg(value_enum)]
        mode: Mode,
    },
    /// Print how long each command takes.
    Timer {
        /// on or off.
        #[arg(value_enum)]
        state: OnOff,
    },
    /// Send results to a file (no argument: back to standard output).
    Output {
        /// File to write.
        file: Option<PathBuf>,
    },
    /// Run the commands in a file.
    Read {
        /// Script file.
        file: PathBuf,
    },
    /// Stop at the first error.
    Bail {
        /// on or off.
        #[arg(value_enum)]
        state: OnOff,
    },
    /// Print each command before running it.
    Echo {
        /// on or off.
        #[arg(value_enum)]
        state: OnOff,
    },
    /// Set where searches run (auto, cpu, cuda, cuda:N); no argument: show what it resolves to.
    Device {
        /// auto, cpu, cuda or cuda:N.
        device: Option<tessera::Device>,
    },
    /// Set how many candidates searches refine with the original vectors (a number, 0 for
    /// off, or auto for the engine's default); no argument: show it.
    Refine {
        /// N, 0 or auto.
        value: Option<String>,
    },
    /// Show the current settings.
    Show,
    /// Leave the shell.
    #[command(alias = "exit")]
    Quit,
}

/// One-line synopses for `.help`, in display order.
const SYNOPSES: &[(&str, &str)] = &[
    ("open", ".open DB [--read-only]"),
    ("collections", ".collections (or .tables)"),
    ("use", ".use NAME"),
    ("create", ".create NAME --dim D [--nbits B] [--centroids K]"),
    (
        "ingest",
        ".ingest FILES... [--format F] [--doclens P] [--ids P] [--upsert | --skip-existing] [--batch-tokens N]\n.ingest --text JSONL... [--model DIR] [--upsert | --skip-existing] [--batch-tokens N]",
    ),
    (
        "search",
        ".search QUERY_FILE [-k K] [--nprobe N] [--refine N] [--threads N] [--exhaustive] [--device D] [--diverse] [--max-query-similarity T] [--max-kept-similarity T] [--where EXPR] [--fields LIST]\n.search --like ID [-k K]",
    ),
    ("text", ".text [-k K] [--model DIR] QUERY TEXT..."),
    (
        "rerank",
        ".rerank (--query FILE | --text TEXT | --like ID) [-k K] [--ids-file F] ID...",
    ),
    (
        "explain",
        ".explain ID (--query FILE | --text TEXT | --like ID) [--plot FILE.svg]",
    ),
    ("diversity", ".diversity [off|on|Q K]"),
    ("model", ".model [DIR]"),
    ("device", ".device [auto|cpu|cuda|cuda:N]"),
    ("refine", ".refine [N|0|auto]"),
    ("get", ".get ID... [--vectors]"),
    ("list", ".list [--where EXPR]"),
    ("where", ".where [EXPR | off]"),
    ("fields", ".fields [LIST | default]"),
    ("delete", ".delete ID..."),
    ("compact", ".compact"),
    ("retrain", ".retrain"),
    ("verify", ".verify"),
    ("drop", ".drop NAME"),
    ("info", ".info [NAME] (or .schema)"),
    ("mode", ".mode table|json|jsonl|csv"),
    ("timer", ".timer on|off"),
    ("output", ".output [FILE]"),
    ("read", ".read FILE"),
    ("bail", ".bail on|off"),
    ("echo", ".echo on|off"),
    ("show", ".show"),
    ("help", ".help [COMMAND]"),
    ("quit", ".quit (or .exit)"),
];

/// What the loop does after a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Quit,
}

/// The shell's state.
pub struct Shell {
    session: Session,
    bail: bool,
    echo: bool,
    /// Commands that failed so far.
    errors: usize,
    depth: usize,
    /// Collection names, shared with the line editor's completer.
    names: Arc<Mutex<Vec<String>>>,
}

/// Splits a command line into words: whitespace separates, single and double quotes group,
/// backslash escapes the next character (outside single quotes).
pub fn split_words(line: &str) -> Result<Vec<String>> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(x) => cur.push(x),
                        None => bail!("unterminated single quote"),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(x) => cur.push(x),
                            None => bail!("unterminated double quote"),
                        },
                        Some(x) => cur.push(x),
                        None => bail!("unterminated double quote"),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(x) = chars.next() {
                    cur.push(x);
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// The session's `.device`, `.refine`, `.where` and `.fields` for a search that did not set
/// them itself.
fn apply_settings(s: &Session, opts: &mut SearchOpts) {
    opts.device = opts.device.or(Some(s.device));
    opts.refine = opts.refine.or(s.refine);
    opts.filter = opts.filter.clone().or_else(|| s.filter.clone());
    opts.fields = opts.fields.clone().or_else(|| s.fields.clone());
}

fn refine_setting(r: Option<usize>) -> String {
    match r {
        None => format!(
            "auto (max({}, {} k) candidates)",
            tessera::REFINE_FLOOR,
            tessera::REFINE_PER_K
        ),
        Some(0) => "off".into(),
        Some(n) => format!("{n} candidates"),
    }
}

impl Shell {
    fn new(mode: Mode, bail: bool, echo: bool) -> Self {
        Shell {
            session: Session {
                db: None,
                current: None,
                printer: Printer::stdout(mode),
                timer: false,
                model_dir: None,
                model_cache: None,
                device: tessera::Device::Auto,
                refine: None,
                diversity: None,
                filter: None,
                fields: None,
            },
            bail,
            echo,
            errors: 0,
            depth: 0,
            names: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn refresh_names(&self) {
        if let (Some(db), Ok(mut names)) = (&self.session.db, self.names.lock()) {
            *names = db.collection_names();
        }
    }

    fn prompt(&self) -> String {
        match &self.session.current {
            Some(c) => format!("tessera:{c}> "),
            None => "tessera> ".into(),
        }
    }

    /// Runs one line; errors are printed (one line) and counted.
    fn run_line(&mut self, line: &str) -> Flow {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with("--") {
            return Flow::Continue;
        }
        if self.echo {
            println!("{trimmed}");
        }
        interrupt::reset();
        let start = Instant::now();
        let result = self.run_command(trimmed);
        let _ = self.session.printer.flush();
        match result {
            Ok(flow) => {
                // As in sqlite3: no time for `.timer` itself, nor for a command that failed.
                let timer_command = matches!(
                    trimmed.trim_start_matches('.').split_whitespace().next(),
                    Some("timer")
                );
                if self.session.timer && !timer_command {
                    eprintln!("time: {:.3} s", start.elapsed().as_secs_f64());
                }
                flow
            }
            Err(e) => {
                self.errors += 1;
                if e.is::<interrupt::Interrupted>() {
                    eprintln!("{e}");
                } else {
                    eprintln!("error: {}", crate::errors::one_line(&e));
                }
                if self.bail {
                    eprintln!("stopping: .bail is on");
                    Flow::Quit
                } else {
                    Flow::Continue
                }
            }
        }
    }

    fn run_command(&mut self, line: &str) -> Result<Flow> {
        let mut words = split_words(line)?;
        let Some(first) = words.first_mut() else {
            return Ok(Flow::Continue);
        };
        let name = first.trim_start_matches('.').to_owned();
        let known = ShellLine::command()
            .get_subcommands()
            .any(|c| c.get_name() == name || c.get_all_aliases().any(|a| a == name));
        if !known {
            bail!("unknown command {first:?}; type .help for the list");
        }
        if name == "where" {
            // The expression is the raw rest of the line: word splitting would strip the
            // quotes that make its strings strings.
            let rest = line.trim_start().trim_start_matches('.');
            let expr = rest.get(name.len()..).unwrap_or("").trim();
            let flow = self.exec(ShellCmd::Where {
                words: if expr.is_empty() {
                    vec![]
                } else {
                    vec![expr.to_owned()]
                },
            });
            return flow;
        }
        *first = name.clone();
        let parsed = match ShellLine::try_parse_from(&words) {
            Ok(p) => p,
            Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelp => {
                print!("{e}");
                return Ok(Flow::Continue);
            }
            Err(e) => {
                // clap's message up to its first blank line, on one line.
                let text = e.to_string();
                let msg: Vec<&str> = text
                    .lines()
                    .take_while(|l| !l.trim().is_empty())
                    .map(str::trim)
                    .collect();
                let msg = msg.join(" ");
                bail!("{} (see .help {name})", msg.trim_start_matches("error: "));
            }
        };
        let flow = self.exec(parsed.cmd);
        self.refresh_names();
        flow
    }

    fn exec(&mut self, cmd: ShellCmd) -> Result<Flow> {
        let s = &mut self.session;
        match cmd {
            ShellCmd::Help { command } => print_help(command.as_deref())?,
            ShellCmd::Open { path, read_only } => {
                s.db = None;
                s.current = None;
                s.open(&path, read_only)?;
            }
            ShellCmd::Collections => {
                let rs = commands::collections(s.db()?)?;
                s.printer.print(&rs)?;
            }
            ShellCmd::Use { collection } => {
                crate::errors::collection(s.db()?, &collection)?;
                s.current = Some(collection);
            }
            ShellCmd::Create(a) => {
                commands::create(s.db()?, &a)?;
                s.current = Some(a.collection);
            }
            ShellCmd::Ingest(a) => {
                let summary = if a.text.is_empty() {
                    ingest::ingest(&s.collection()?, &a)?
                } else {
                    // The collection in use exists (checked here): the shell creates
                    // collections with .create only.
                    let name = s.collection()?.name().to_owned();
                    text::ingest_text(s.db()?, &name, &a, s.model_dir.as_deref(), false)?
                };
                eprintln!("{}", summary.describe());
            }
            ShellCmd::Text {
                mut opts,
                model,
                words,
            } => {
                apply_settings(s, &mut opts);
                rag::default_diversity(&mut opts, s.diversity);
                let coll = s.collection()?;
                let m = s.query_model(&coll, model.as_deref())?;
                let queries = text::text_queries(&m, &[words.join(" ")])?;
                commands::search(&coll, &queries, &opts, &mut s.printer, s.timer)?;
            }
            ShellCmd::Model { dir } => match dir {
                Some(d) => {
                    let m = s.set_model(&d)?;
                    eprintln!(
                        "model {} ({}-dimensional {:?} vectors) from {}",
                        m.record,
                        m.encoder.dim(),
                        m.encoder.kind(),
                        d.display()
                    );
                }
                None => match &s.model_dir {
                    Some(d) => println!("{}", d.display()),
                    None => println!("(none: .text uses the collection's recorded model)"),
                },
            },
            ShellCmd::Search {
                query,
                like,
                mut opts,
            } => {
                apply_settings(s, &mut opts);
                rag::default_diversity(&mut opts, s.diversity);
                let coll = s.collection()?;
                let queries = match (query, like) {
                    (_, Some(id)) => vec![commands::like_query(&coll, &id)?],
                    (Some(q), None) => query::read_queries(&q, coll.config().dim as usize)?,
                    (None, None) => bail!("give a query file or --like ID"),
                };
                commands::search(&coll, &queries, &opts, &mut s.printer, s.timer)?;
            }
            ShellCmd::Rerank {
                source,
                k,
                ids_file,
                ids,
            } => {
                let coll = s.collection()?;
                let queries = rag::queries(&coll, &source, &mut |c, g| s.query_model(c, g))?;
                let ids = rag::read_ids(&ids, ids_file.as_deref())?;
                rag::rerank(&coll, &queries, &ids, k, &mut s.printer)?;
            }
            ShellCmd::Explain { id, source, plot } => {
                let coll = s.collection()?;
                let queries = rag::queries(&coll, &source, &mut |c, g| s.query_model(c, g))?;
                rag::explain(&coll, queries, &id, plot.as_ref(), &mut s.printer)?;
            }
            ShellCmd::Diversity { values } => {
                if !values.is_empty() {
                    s.diversity = rag::parse_diversity_setting(&values)?;
                }
                println!("diversity: {}", rag::diversity_setting(s.diversity));
            }
            ShellCmd::Get { ids, vectors } => {
                let found = commands::get(&s.collection()?, &ids, vectors);
                commands::print_get(&mut s.printer, found)?;
            }
            ShellCmd::List { filter } => {
                let rs =
                    commands::list(&s.collection()?, filter.as_deref().or(s.filter.as_deref()))?;
                s.printer.print(&rs)?;
            }
            ShellCmd::Where { words } => {
                let expr = words.join(" ");
                match expr.trim() {
                    "" => {}
                    e if e.eq_ignore_ascii_case("off") => s.filter = None,
                    e => {
                        // Checked now, so a typo shows up here and not at the next search.
                        commands::parse_filter(e)?;
                        s.filter = Some(e.to_owned());
                    }
                }
                println!("where: {}", s.filter.as_deref().unwrap_or("off"));
            }
            ShellCmd::Fields { list } => {
                match list.as_deref() {
                    None => {}
                    Some("default") => s.fields = None,
                    Some(l) => {
                        s.fields = Some(crate::args::parse_fields(l).map_err(anyhow::Error::msg)?)
                    }
                }
                println!("fields: {}", s.fields.clone().unwrap_or_default());
            }
            ShellCmd::Delete { ids } => commands::delete(&s.collection()?, &ids)?,
            ShellCmd::Compact => commands::compact(&s.collection()?, false)?,
            ShellCmd::Retrain => commands::retrain(&s.collection()?, false)?,
            ShellCmd::Verify => {
                let report = s.db()?.verify()?;
                commands::print_verify(&report, false)?;
                if !report.is_clean() {
                    bail!("verify found {} problem(s)", report.problems.len());
                }
            }
            ShellCmd::Drop { collection } => {
                crate::errors::collection(s.db()?, &collection)?;
                s.db()?.drop_collection(&collection)?;
                if s.current.as_deref() == Some(collection.as_str()) {
                    s.current = None;
                }
                eprintln!("dropped collection {collection:?}");
            }
            ShellCmd::Info { collection } => {
                let rs = commands::info(s.db()?, collection.as_deref())?;
                s.printer.print(&rs)?;
            }
            ShellCmd::Mode { mode } => s.printer.mode = mode,
            ShellCmd::Timer { state } => s.timer = state == OnOff::On,
            ShellCmd::Device { device } => {
                if let Some(d) = device {
                    s.device = d;
                }
                // Resolving initialises the device, so a bad choice shows up here, not at
                // the next search.
                let resolved = tessera::resolve_device(s.device)?;
                println!("device: {} -> {resolved}", s.device);
            }
            ShellCmd::Refine { value } => {
                match value.as_deref() {
                    None => {}
                    Some("auto") => s.refine = None,
                    Some(v) => {
                        s.refine = Some(v.parse().with_context(|| {
                            format!("refine: {v:?} is not a number, 0 (off) or auto")
                        })?)
                    }
                }
                println!("refine: {}", refine_setting(s.refine));
            }
            ShellCmd::Output { file } => s.printer.redirect(file.as_deref())?,
            ShellCmd::Read { file } => return self.read_file(&file),
            ShellCmd::Bail { state } => self.bail = state == OnOff::On,
            ShellCmd::Echo { state } => self.echo = state == OnOff::On,
            ShellCmd::Show => {
                let on = |b: bool| if b { "on" } else { "off" };
                let db = match &s.db {
                    Some(db) => format!(
                        "{}{}",
                        db.path().display(),
                        if db.is_read_only() {
                            " (read-only)"
                        } else {
                            ""
                        }
                    ),
                    None => "(none)".into(),
                };
                println!("  database: {db}");
                println!("collection: {}", s.current.as_deref().unwrap_or("(none)"));
                println!("      mode: {}", s.printer.mode.name());
                println!("    output: {}", s.printer.target());
                println!(
                    "     model: {}",
                    s.model_dir
                        .as_ref()
                        .map_or("(collection's recorded model)".into(), |d| d
                            .display()
                            .to_string())
                );
                println!("     timer: {}", on(s.timer));
                println!("    device: {}", s.device);
                println!("    refine: {}", refine_setting(s.refine));
                println!(" diversity: {}", rag::diversity_setting(s.diversity));
                println!("     where: {}", s.filter.as_deref().unwrap_or("off"));
                println!("    fields: {}", s.fields.clone().unwrap_or_default());
                println!("      bail: {}", on(self.bail));
                println!("      echo: {}", on(self.echo));
            }
            ShellCmd::Quit => return Ok(Flow::Quit),
        }
        Ok(Flow::Continue)
    }

    /// `.read FILE`: runs each line; a failure stops the file when `.bail` is on.
    fn read_file(&mut self, path: &Path) -> Result<Flow> {
        if self.depth >= 16 {
            bail!("{}: .read nested too deeply (16 levels)", path.display());
        }
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read script", path.display()))?;
        self.depth += 1;
        let errors_before = self.errors;
        let mut flow = Flow::Continue;
        for line in text.lines() {
            flow = self.run_line(line);
            if flow == Flow::Quit {
                break;
            }
        }
        self.depth -= 1;
        if self.bail && self.errors > errors_before {
            return Ok(Flow::Quit);
        }
        Ok(flow)
    }
}

fn print_help(command: Option<&str>) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match command {
        None => {
            writeln!(out, "Commands (the leading dot is optional):")?;
            let width = console::Term::stdout()
                .size_checked()
                .map_or(HELP_WIDTH, |(_, cols)| usize::from(cols))
                .clamp(HELP_ABOUT_COLUMN + 24, 120);
            let mut cmd = ShellLine::command();
            for (name, synopsis) in SYNOPSES {
                let about = cmd
                    .find_subcommand_mut(name)
                    .and_then(|c| c.get_about().map(ToString::to_string))
                    .unwrap_or_default();
                write!(out, "{}", help_entry(synopsis, &about, width))?;
            }
            for line in wrap(
                "Ctrl-C cancels a running command; Ctrl-D or .quit leaves.",
                width,
            ) {
                writeln!(out, "{line}")?;
            }
        }
        Some(name) => {
            let name = name.trim_start_matches('.');
            let mut cmd = ShellLine::command();
            let Some(sub) = cmd.find_subcommand_mut(name) else {
                bail!("unknown command {name:?}; type .help for the list");
            };
            let help = sub.render_long_help().to_string();
            let help = help.replace(&format!("Usage: {name}"), &format!("Usage: .{name}"));
            write!(out, "{help}")?;
        }
    }
    Ok(())
}

/// `.help`'s width when standard output is not a terminal.
const HELP_WIDTH: usize = 80;
/// Where `.help`'s descriptions start.
const HELP_ABOUT_COLUMN: usize = 37;

/// Splits `text` into lines of at most `width` characters at spaces (a longer word gets a
/// line of its own).
fn wrap(text: &str, width: usize) -> Vec<String> {
    wrap_units(text.split_whitespace(), width)
}

/// Joins `units` with spaces into lines of at most `width` characters.
fn wrap_units<'a>(units: impl Iterator<Item = &'a str>, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut cur = String::new();
    for unit in units {
        if !cur.is_empty() && cur.chars().count() + 1 + unit.chars().count() > width {
            lines.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(unit);
    }
    if !cur.is_empty() {
        lines.push(cur);
    }
    lines
}

/// The words of a synopsis, an optional `[...]` group counting as one word so that a line
/// never breaks inside it.
fn synopsis_units(line: &str) -> Vec<&str> {
    let mut units = Vec::new();
    let (mut depth, mut start) = (0usize, None);
    for (i, c) in line.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            c if c.is_whitespace() && depth == 0 => {
                if let Some(st) = start.take() {
                    units.push(&line[st..i]);
                }
                continue;
            }
            _ => {}
        }
        start.get_or_insert(i);
    }
    if let Some(st) = start {
        units.push(&line[st..]);
    }
    units
}

/// One `.help` entry: each synopsis line at column 2 (its continuation at 4), the
/// description from [`HELP_ABOUT_COLUMN`], both wrapped at word boundaries to `width`.
fn help_entry(synopsis: &str, about: &str, width: usize) -> String {
    let mut syn_lines: Vec<String> = Vec::new();
    for part in synopsis.lines() {
        let units = synopsis_units(part.trim());
        for (i, l) in wrap_units(units.into_iter(), width - 4)
            .into_iter()
            .enumerate()
        {
            syn_lines.push(format!("{}{l}", if i == 0 { "  " } else { "    " }));
        }
    }
    let mut about_lines = wrap(about, width - HELP_ABOUT_COLUMN).into_iter();
    let mut out = String::new();
    let last = syn_lines.len().saturating_sub(1);
    for (i, l) in syn_lines.iter().enumerate() {
        // The description starts beside a one-line synopsis that leaves room for it.
        if i == last && last == 0 && l.chars().count() < HELP_ABOUT_COLUMN {
            let a = about_lines.next().unwrap_or_default();
            out.push_str(format!("{l:<HELP_ABOUT_COLUMN$}{a}").trim_end());
        } else {
            out.push_str(l);
        }
        out.push('\n');
    }
    for a in about_lines {
        out.push_str(&format!("{:HELP_ABOUT_COLUMN$}{a}\n", ""));
    }
    out
}

/// Line-editor helper: completes command names, collection names and file paths.
struct ShellHelper {
    files: FilenameCompleter,
    names: Arc<Mutex<Vec<String>>>,
}

impl Completer for ShellHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        ctx: &rustyline::Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        let start = before.rfind(char::is_whitespace).map_or(0, |i| i + 1);
        let word = &before[start..];
        if start == 0 {
            let w = word.trim_start_matches('.');
            let cmd = ShellLine::command();
            let mut names: Vec<&str> = cmd
                .get_subcommands()
                .flat_map(|c| std::iter::once(c.get_name()).chain(c.get_all_aliases()))
                .filter(|n| n.starts_with(w))
                .collect();
            names.sort_unstable();
            let pairs = names
                .into_iter()
                .map(|n| Pair {
                    display: format!(".{n}"),
                    replacement: format!(".{n} "),
                })
                .collect();
            return Ok((0, pairs));
        }
        let cmd = before
            .split_whitespace()
            .next()
            .unwrap_or("")
            .trim_start_matches('.');
        if matches!(cmd, "use" | "drop" | "info" | "schema") && !word.starts_with('-') {
            let names = self.names.lock().map(|n| n.clone()).unwrap_or_default();
            let pairs: Vec<Pair> = names
                .into_iter()
                .filter(|n| n.starts_with(word))
                .map(|n| Pair {
                    display: n.clone(),
                    replacement: n,
                })
                .collect();
            return Ok((start, pairs));
        }
        self.files.complete(line, pos, ctx)
    }
}

impl Hinter for ShellHelper {
    type Hint = String;
}
impl Highlighter for ShellHelper {}
impl Validator for ShellHelper {}
impl Helper for ShellHelper {}

fn history_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TESSERA_HISTORY") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".tessera_history"))
}

/// Runs the shell; returns the process exit code.
pub fn run(args: &ShellArgs) -> Result<u8> {
    let mode = args.mode.unwrap_or_else(Mode::auto);
    let mut shell = Shell::new(mode, args.bail, args.echo);
    if let Some(db) = &args.db {
        shell.session.open(db, args.read_only)?;
        shell.refresh_names();
    }
    if !args.commands.is_empty() {
        // The same rule as a piped script: go on after an error unless --bail / .bail on
        // (run_line then answers Quit); exit 1 at the end if anything failed.
        for c in &args.commands {
            if shell.run_line(c) == Flow::Quit {
                break;
            }
        }
        shell.session.printer.flush()?;
        return Ok(if shell.errors > 0 { 1 } else { 0 });
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        interactive(&mut shell)?;
        shell.session.printer.flush()?;
        return Ok(0);
    }
    for (n, line) in stdin.lock().lines().enumerate() {
        let flow = match line {
            Ok(l) => shell.run_line(&l),
            Err(e) => {
                shell.errors += 1;
                eprintln!("error: standard input line {}: {e}", n + 1);
                if shell.bail {
                    Flow::Quit
                } else {
                    Flow::Continue
                }
            }
        };
        if flow == Flow::Quit {
            break;
        }
    }
    shell.session.printer.flush()?;
    Ok(if shell.errors > 0 { 1 } else { 0 })
}

fn interactive(shell: &mut Shell) -> Result<()> {
    let mut rl: Editor<ShellHelper, DefaultHistory> =
        // List: Tab completes the common prefix, a second Tab lists the candidates (as in
        // bash), where the default Circular would cycle through them one by one unseen.
        Editor::with_config(
            Config::builder()
                .completion_type(CompletionType::List)
                .auto_add_history(false)
                .build(),
        )
        .context("cannot start the line editor")?;
    rl.set_helper(Some(ShellHelper {
        files: FilenameCompleter::new(),
        names: shell.names.clone(),
    }));
    let history = history_path();
    if let Some(h) = &history {
        // A missing history file is normal on first use.
        let _ = rl.load_history(h);
    }
    println!(
        "tessera {} shell: .help for commands, .quit or Ctrl-D to leave",
        env!("CARGO_PKG_VERSION")
    );
    loop {
        match rl.readline(&shell.prompt()) {
            Ok(line) => {
                if !line.trim().is_empty() {
                    let _ = rl.add_history_entry(line.as_str());
                }
                if shell.run_line(&line) == Flow::Quit {
                    break;
                }
            }
            // Ctrl-C at the prompt clears the line, as in sqlite3.
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e).context("cannot read the command line"),
        }
    }
    if let Some(Err(e)) = history.as_ref().map(|h| rl.save_history(h)) {
        eprintln!("warning: cannot save history: {e}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_on_spaces_and_respect_quotes() {
        let w = split_words(r#".ingest "my file.npy" 'a b' c\ d --ids=x"#).expect("valid line");
        assert_eq!(w, vec![".ingest", "my file.npy", "a b", "c d", "--ids=x"]);
        assert!(split_words("'open").is_err());
    }

    #[test]
    fn every_shell_command_has_a_synopsis() {
        let cmd = ShellLine::command();
        for sub in cmd.get_subcommands() {
            assert!(
                SYNOPSES.iter().any(|(n, _)| *n == sub.get_name()),
                "no synopsis for {}",
                sub.get_name()
            );
        }
        assert_eq!(cmd.get_subcommands().count(), SYNOPSES.len());
    }

    #[test]
    fn shell_lines_parse_with_shared_argument_structs() {
        let l = ShellLine::try_parse_from(["search", "q.npy", "-k", "3"]).expect("parses");
        assert!(matches!(
            l.cmd,
            ShellCmd::Search {
                opts: SearchOpts { k: 3, .. },
                ..
            }
        ));
        assert!(ShellLine::try_parse_from(["mode", "xml"]).is_err());
        let l =
            ShellLine::try_parse_from(["search", "q.npy", "--device", "cuda:1"]).expect("parses");
        assert!(matches!(
            l.cmd,
            ShellCmd::Search {
                opts: SearchOpts {
                    device: Some(tessera::Device::Cuda(1)),
                    ..
                },
                ..
            }
        ));
        let l = ShellLine::try_parse_from(["device", "cpu"]).expect("parses");
        assert!(matches!(
            l.cmd,
            ShellCmd::Device {
                device: Some(tessera::Device::Cpu)
            }
        ));
        let e = ShellLine::try_parse_from(["device", "tpu"]).expect_err("bad device");
        assert!(
            e.to_string().contains("expected auto, cpu, cuda or cuda:N"),
            "{e}"
        );
    }
}
