//! Seeded mutations for the test suite's short runs: the kinds of edits a coverage-guided
//! fuzzer starts with (bit flips, interesting integers, byte runs, cuts, splices), without
//! its coverage feedback. Deterministic for a seed, so a failure names its input exactly.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Integers that sit on the edges decoders check (0, 1, powers of two, type limits).
const INTERESTING: [u64; 12] = [
    0,
    1,
    2,
    63,
    64,
    255,
    0x7fff,
    0xffff,
    0x7fff_ffff,
    0xffff_ffff,
    0x7fff_ffff_ffff_ffff,
    u64::MAX,
];

/// The largest input a mutation produces (AFL++'s default is 1 MiB; ours are small).
const MAX_LEN: usize = 1 << 16;

/// `input` changed by one to four random edits chosen by `seed`; `other` is spliced from.
pub fn mutate(input: &[u8], other: &[u8], seed: u64) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut b = input.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        edit(&mut b, other, &mut rng);
    }
    b.truncate(MAX_LEN);
    b
}

fn edit(b: &mut Vec<u8>, other: &[u8], rng: &mut StdRng) {
    if b.is_empty() {
        b.push(rng.random());
        return;
    }
    let at = rng.random_range(0..b.len());
    match rng.random_range(0..7) {
        0 => b[at] ^= 1 << rng.random_range(0..8),
        1 => b[at] = rng.random(),
        2 => {
            // An interesting integer of 1, 2, 4 or 8 bytes, little-endian, where it fits.
            let v = INTERESTING[rng.random_range(0..INTERESTING.len())];
            let width = [1usize, 2, 4, 8][rng.random_range(0..4)];
            let end = (at + width).min(b.len());
            b[at..end].copy_from_slice(&v.to_le_bytes()[..end - at]);
        }
        3 => b.truncate(at),
        4 => {
            let len = rng.random_range(1..=64.min(b.len() - at));
            let fill = if rng.random() { 0 } else { 0xff };
            b[at..at + len].fill(fill);
        }
        5 => {
            // Duplicate a run in place (repeated records, longer lists).
            let len = rng.random_range(1..=256.min(b.len() - at));
            let run = b[at..at + len].to_vec();
            b.splice(at..at, run);
        }
        _ => {
            // Splice in a run of another kept input (structure from elsewhere).
            if !other.is_empty() {
                let from = rng.random_range(0..other.len());
                let len = rng.random_range(1..=256.min(other.len() - from));
                b.splice(at..at, other[from..from + len].iter().copied());
            }
        }
    }
}
