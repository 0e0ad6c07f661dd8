//! `tessera`: the command line and interactive shell of the Tessera multi-vector database.

mod args;
mod commands;
mod formats;
mod generate;
mod ingest;
mod interrupt;
mod query;
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
    interrupt::install();
    match run(cli.command) {
        Ok(code) => ExitCode::from(code),
        Err(e) if e.is::<interrupt::Interrupted>() => {
            eprintln!("{e}");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
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
            json,
        } => {
            let summary = if args.text.is_empty() {
                let database = Database::open(&db)?;
                let coll = database.collection(&collection)?;
                ingest::ingest(&coll, &args)?
            } else {
                let database = commands::open_or_create(&db)?;
                text::ingest_text(&database, &collection, &args, None)?
            };
            eprintln!("{}", summary.describe());
            if json {
                println!("{}", serde_json::to_string(&summary)?);
            }
        }
        Command::Search {
            db,
            collection,
            query,
            text,
            model,
            opts,
            out,
        } => {
            let database = Database::open_read_only(&db)?;
            let coll = database.collection(&collection)?;
            let queries = match query {
                Some(q) => query::read_queries(&q, coll.config().dim as usize)?,
                None => {
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
        Command::Delete {
            db,
            collection,
            ids,
        } => {
            let database = Database::open(&db)?;
            commands::delete(&database.collection(&collection)?, &ids)?;
        }
        Command::Info {
            db,
            collection,
            out,
        } => {
            let database = Database::open_read_only(&db)?;
            let rs = commands::info(&database, collection.as_deref())?;
            Printer::stdout(out.mode()).print(&rs)?;
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
