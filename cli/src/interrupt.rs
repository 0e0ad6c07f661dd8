//! Ctrl-C: the first press asks the running command to stop at its next safe point (between
//! ingest batches, between queries); a second press while that is pending exits at once
//! (every commit is atomic, so nothing half-written is left either way). At the shell's
//! prompt the line editor reads Ctrl-C itself, so it never reaches this handler there.

use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// The error a command returns when Ctrl-C stopped it.
#[derive(Debug)]
pub struct Interrupted(pub String);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "interrupted: {}", self.0)
    }
}

impl std::error::Error for Interrupted {}

/// Installs the handler (once per process; later calls do nothing).
pub fn install() {
    static INSTALLED: AtomicBool = AtomicBool::new(false);
    if INSTALLED.swap(true, Ordering::SeqCst) {
        return;
    }
    let result = ctrlc::set_handler(|| {
        if REQUESTED.swap(true, Ordering::SeqCst) {
            eprintln!("\ninterrupted twice: exiting now");
            std::process::exit(130);
        }
        eprintln!("\ninterrupt: stopping at the next safe point (Ctrl-C again to exit now)");
    });
    if let Err(e) = result {
        eprintln!("warning: cannot install the Ctrl-C handler: {e}");
    }
}

/// Whether Ctrl-C was pressed since the last [`reset`].
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// Clears a pending request (before each shell command).
pub fn reset() {
    REQUESTED.store(false, Ordering::SeqCst);
}

/// Fails with [`Interrupted`] if Ctrl-C was pressed.
pub fn check(what: impl FnOnce() -> String) -> anyhow::Result<()> {
    if requested() {
        return Err(Interrupted(what()).into());
    }
    Ok(())
}
