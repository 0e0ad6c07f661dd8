//! Where searches run, and when to say so. The engine's `auto` prints its CPU-fallback
//! reason on every process's first search; a command line run is one search per process, so
//! that notice would follow every search on a machine without a GPU. The CLI resolves `auto`
//! itself instead and prints the reason only under `-v` (a GPU asked for by name fails with
//! the reason anyway).

use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};

use tessera::Device;

static VERBOSE: AtomicBool = AtomicBool::new(false);

/// Sets `-v` for the whole process.
pub fn set_verbose(on: bool) {
    VERBOSE.store(on, Ordering::Relaxed);
}

/// Whether `-v` was given.
pub fn verbose() -> bool {
    VERBOSE.load(Ordering::Relaxed)
}

/// Why `auto` would not use a GPU here, or `None` when CUDA device 0 is usable. Probing device
/// 0 by name fails quietly, where probing `auto` would print the reason.
fn gpu_unusable() -> Option<String> {
    match tessera::resolve_device(Device::Cuda(0)) {
        Ok(_) => None,
        Err(tessera::Error::Device { reason, .. }) => Some(reason),
        Err(e) => Some(e.to_string()),
    }
}

/// The device to pass to the engine for `requested`: `auto` becomes `cpu` when no GPU is
/// usable, with the reason printed once per process under `-v`.
pub fn for_search(requested: Device) -> Device {
    if requested != Device::Auto {
        return requested;
    }
    match gpu_unusable() {
        None => Device::Auto,
        Some(reason) => {
            if verbose() {
                static ONCE: Once = Once::new();
                ONCE.call_once(|| eprintln!("tessera: searching on the CPU: {reason}"));
            }
            Device::Cpu
        }
    }
}

/// "auto -> cpu (reason)" or "auto -> cuda:0 (name, sm_XY)", for `info`.
pub fn describe(requested: Device) -> String {
    match tessera::resolve_device(match requested {
        Device::Auto => match gpu_unusable() {
            None => Device::Cuda(0),
            Some(reason) => return format!("{requested} -> cpu ({reason})"),
        },
        d => d,
    }) {
        Ok(r) => format!("{requested} -> {r}"),
        Err(e) => format!("{requested} -> unusable ({e})"),
    }
}
