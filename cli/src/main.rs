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
            let database = Database::open(&db)?;
            let coll = database.collection(&collection)?;
            let summary = ingest::ingest(&coll, &args)?;
            eprintln!("{}", summary.describe());
            if json {
                println!("{}", serde_json::to_string(&summary)?);
            }
        }
        Command::Search {
            db,
            collection,
            query,
            opts,
            out,
        } => {
            let database = Database::open_read_only(&db)?;
            let coll = database.collection(&collection)?;
            let queries = query::read_queries(&query, coll.config().dim as usize)?;
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
        Command::Shell(args) => return shell::run(&args),
        Command::Generate(args) => generate::run(&args)?,
    }
    Ok(0)
}
