//! Lines of the JSON-lines readers (documents with embeddings, and text corpora), read with
//! a bound on their length.
//!
//! These readers hold one line at a time, so their memory follows the longest line of the
//! input. Unbounded, a file that never ends its first line (a binary file given by mistake,
//! a sparse or damaged file, a hostile input) is read whole into memory before anything can
//! refuse it. The bound is far above what one document needs: JSON numbers take about 10 to
//! 12 bytes per value, so a document of 8,192 tokens of 1,024 dimensions is about 100 MB, and
//! a stored text is limited to 64 MiB (`tessera_storage::doctext::MAX_TEXT_BYTES`). Larger
//! documents belong in `.npy` or `.safetensors`, whose readers stream the values.

use std::io::{self, BufRead, Read};

/// The longest line a JSON-lines reader takes, in bytes, its `\n` excluded.
pub const MAX_LINE_BYTES: usize = 256 << 20;

/// What [`read_line`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// The input ended before another byte.
    End,
    /// A line of at most the bound, now in the buffer (with its `\n`, when it had one).
    Read,
    /// A line longer than the bound: the buffer holds its first `max + 1` bytes, and the
    /// reader stands inside it.
    TooLong,
}

/// Reads the next line of `reader` into `buf` (cleared first), reading at most `max + 1`
/// bytes, so that no line makes the buffer grow past about twice `max`.
pub fn read_line(reader: &mut impl BufRead, buf: &mut Vec<u8>, max: usize) -> io::Result<Line> {
    buf.clear();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    let n = reader.by_ref().take(limit).read_until(b'\n', buf)?;
    Ok(if n == 0 {
        Line::End
    } else if buf.len() > max && buf.last() != Some(&b'\n') {
        Line::TooLong
    } else {
        Line::Read
    })
}

/// The message for a line over the bound, after the place ("file: line n").
pub fn too_long_message() -> String {
    format!(
        "the line is longer than {} MiB, the most one JSON-lines document may take \
         (is this a JSON-lines file? larger documents can be given as .npy or .safetensors)",
        MAX_LINE_BYTES >> 20
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8], max: usize) -> Vec<(Line, Vec<u8>)> {
        let mut r = io::BufReader::with_capacity(4, input);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        loop {
            let l = read_line(&mut r, &mut buf, max).expect("in memory");
            let stop = l != Line::Read;
            out.push((l, buf.clone()));
            if stop {
                return out;
            }
        }
    }

    #[test]
    fn lines_up_to_the_bound_are_read_whole_with_or_without_a_last_newline() {
        let got = lines(b"abcde\nab\n\nabcde", 5);
        let want: Vec<(Line, &[u8])> = vec![
            (Line::Read, b"abcde\n"),
            (Line::Read, b"ab\n"),
            (Line::Read, b"\n"),
            (Line::Read, b"abcde"),
            (Line::End, b""),
        ];
        assert_eq!(got.len(), want.len());
        for ((l, b), (wl, wb)) in got.iter().zip(want) {
            assert_eq!((l, b.as_slice()), (&wl, wb));
        }
    }

    #[test]
    fn a_line_over_the_bound_stops_after_one_byte_more_than_the_bound() {
        let got = lines(b"ab\nabcdefgh\nx\n", 5);
        assert_eq!(got[0], (Line::Read, b"ab\n".to_vec()));
        assert_eq!(got[1], (Line::TooLong, b"abcdef".to_vec()));
        assert_eq!(got.len(), 2);
        // A line that never ends is read no further than the bound either.
        let endless = vec![b'x'; 1 << 20];
        let got = lines(&endless, 1000);
        assert_eq!(got[0].0, Line::TooLong);
        assert_eq!(got[0].1.len(), 1001);
    }
}
