//! The AFL++ harness: `fuzz-afl TARGET`, built with `cargo afl build` and run by
//! `scripts/fuzz.sh TARGET SECONDS` (persistent mode: many inputs per process).

fn main() {
    let name = std::env::args().nth(1).unwrap_or_default();
    let Some(target) = tessera_fuzz::target(&name) else {
        let names: Vec<&str> = tessera_fuzz::TARGETS.iter().map(|(n, _)| *n).collect();
        eprintln!("usage: fuzz-afl TARGET, one of {}", names.join(", "));
        std::process::exit(2);
    };
    // No abort-on-panic hook: a decoder that catches a dependency's panic (the tokenizer) must
    // not abort; a panic escaping a target still aborts, which AFL++ records as a crash.
    afl::fuzz_nohook!(|data: &[u8]| target(data));
}
