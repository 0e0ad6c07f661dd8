//! Integration tests of the `tessera` binary: every subcommand, scripted shell sessions,
//! every ingest format against the library on the same vectors, malformed inputs, Ctrl-C,
//! and text through the real encoder model.

mod common;
mod device;
mod formats;
mod interrupt;
mod malformed;
mod malformed_corpus;
mod rag;
mod shell;
mod subcommands;
mod text;
mod usability;
