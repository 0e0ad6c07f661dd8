//! `tessera`: the command line and interactive shell of the Tessera multi-vector database.

mod args;
mod commands;
mod device;
mod doclabels;
mod errors;
mod formats;
mod generate;
mod heatmap;
mod ingest;
mod interrupt;
mod query;
mod rag;
mod render;
mod shell;
mod text;

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use tessera::Database;

use crate::args::{Cli, Command};
use crate::render::Printer;

fn main() -> ExitCode {
    let cli = Cli::parse();
    device::set_verbose(cli.verbose);
    interrupt::install();
    match run(cli.command) {
        Ok(code) => ExitCode::from(code),
        Err(e) if e.is::<interrupt::Interrupted>() => {
            eprintln!("{e}");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("error: {}", errors::one_line(&e));
            ExitCode::FAILURE
        }
    }
}

fn run(cmd: Command) -> Result<u8> {
    match cmd {
        Command::Create { db, args } => {
            let database = commands::open_or_create(&db)?;
            commands::create(&database, &args)?;
        }
        Command::Ingest {
            db,
            collection,
            args,
            create,
            json,
        } => {
            let summary = if args.text.is_empty() {
                let (_database, coll) = commands::ingest_target(&db, &collection, create, || {
                    formats::infer_dim(&args.inputs, args.format, args.doclens.is_some())
                })?;
                ingest::ingest(&coll, &args)?
            } else {
                let database = if create {
                    commands::open_or_create(&db)?
                } else if db.exists() {
                    Database::open(&db)?
                } else {
                    // The hint names the dimension, which only the model knows.
                    let dim = match &args.model {
                        Some(dir) => text::Model::load(dir, args.threads, 1)
                            .ok()
                            .map(|m| m.encoder.dim() as u32),
                        None => None,
                    };
                    anyhow::bail!(
                        "database {} does not exist; {}",
                        db.display(),
                        commands::create_hint(&db, &collection, dim)
                    );
                };
                text::ingest_text(&database, &collection, &args, None, create)?
            };
            if json {
                println!("{}", serde_json::to_string(&summary)?);
            } else {
                eprintln!("{}", summary.describe());
            }
        }
        Command::Search {
            db,
            collection,
            query,
            text,
            like,
            model,
            opts,
            out,
        } => {
            let database = Database::open_read_only(&db)?;
            let coll = errors::collection(&database, &collection)?;
            let queries = match (query, like) {
                (Some(q), _) => query::read_queries(&q, coll.config().dim as usize)?,
                (None, Some(id)) => vec![commands::like_query(&coll, &id)?],
                (None, None) => {
                    let choice = match &model {
                        Some(dir) => text::ModelChoice::Given(dir),
                        None => text::ModelChoice::Recorded,
                    };
                    let m = text::resolve_model(choice, Some(&coll), 0, 32)?;
                    m.check_dim(coll.name(), coll.config().dim)?;
                    text::warn_if_other_model(&coll, &m)?;
                    text::text_queries(&m, &text)?
                }
            };
            let mut printer = Printer::stdout(out.mode());
            commands::search(&coll, &queries, &opts, &mut printer, false)?;
        }
        Command::Rerank(a) => {
            let database = Database::open_read_only(&a.db)?;
            let coll = errors::collection(&database, &a.collection)?;
            let queries = rag::queries(&coll, &a.source, &mut rag::load_model)?;
            let ids = rag::read_ids(&a.ids, a.ids_file.as_deref())?;
            let mut printer = Printer::stdout(a.out.mode());
            rag::rerank(&coll, &queries, &ids, a.k, &mut printer)?;
        }
        Command::Explain(a) => {
            let database = Database::open_read_only(&a.db)?;
            let coll = errors::collection(&database, &a.collection)?;
            let queries = rag::queries(&coll, &a.source, &mut rag::load_model)?;
            let mut printer = Printer::stdout(a.out.mode());
            rag::explain(&coll, queries, &a.id, a.plot.as_ref(), &mut printer)?;
        }
        Command::Get {
            db,
            collection,
            ids,
            vectors,
            out,
        } => {
            let database = Database::open_read_only(&db)?;
            let coll = errors::collection(&database, &collection)?;
            let mut printer = Printer::stdout(out.mode());
            commands::print_get(&mut printer, commands::get(&coll, &ids, vectors))?;
        }
        Command::List {
            db,
            collection,
            filter,
            out,
        } => {
            let database = Database::open_read_only(&db)?;
            let coll = errors::collection(&database, &collection)?;
            let rs = commands::list(&coll, filter.as_deref())?;
            Printer::stdout(out.mode()).print(&rs)?;
        }
        Command::Export {
            db,
            collection,
            text,
        } => {
            let database = Database::open_read_only(&db)?;
            let coll = errors::collection(&database, &collection)?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let n = commands::export(&coll, text, &mut out)?;
            eprintln!("exported {n} documents from {:?}", coll.name());
        }
        Command::Delete {
            db,
            collection,
            ids,
        } => {
            let database = Database::open(&db)?;
            commands::delete(&errors::collection(&database, &collection)?, &ids)?;
        }
        Command::Compact {
            db,
            collection,
            json,
        } => {
            let database = Database::open(&db)?;
            commands::compact(&errors::collection(&database, &collection)?, json)?;
        }
        Command::Retrain {
            db,
            collection,
            json,
        } => {
            let database = Database::open(&db)?;
            commands::retrain(&errors::collection(&database, &collection)?, json)?;
        }
        Command::Verify { db, json } => {
            let report = tessera::verify(&db)?;
            commands::print_verify(&report, json)?;
            return Ok(u8::from(!report.is_clean()));
        }
        Command::Info {
            db,
            collection,
            out,
        } => {
            let database = Database::open_read_only(&db)?;
            let rs = commands::info(&database, collection.as_deref())?;
            let mode = out.mode();
            Printer::stdout(mode).print(&rs)?;
            // Machines read the rows; people (a table) and -v also see where searches run.
            if mode == render::Mode::Table || device::verbose() {
                eprintln!("search device: {}", device::describe(tessera::Device::Auto));
            }
        }
        Command::Encode(args) => {
            let summary = text::encode(&args)?;
            eprintln!(
                "encoded {} texts into {} token vectors of dimension {} in {:.2} s ({:.0} tokens/s); wrote {}",
                summary.documents,
                summary.tokens,
                summary.dim,
                summary.seconds,
                summary.tokens as f64 / summary.seconds.max(1e-9),
                args.out.display()
            );
            if args.json {
                println!("{}", serde_json::to_string(&summary)?);
            }
        }
        Command::Shell(args) => return shell::run(&args),
        Command::Generate(args) => generate::run(&args)?,
    }
    Ok(0)
}
