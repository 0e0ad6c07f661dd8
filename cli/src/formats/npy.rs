//! NumPy `.npy` files: float matrices (f16, f32, f64; either byte order; C or Fortran order)
//! and integer vectors (document lengths).

use std::fs::File;
use std::io::{BufReader, Seek};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use npyz::{DType, Endianness, NpyFile, NpyHeader, Order, TypeChar};

use super::elem::{ByteOrder, Elem, decode_into, fortran_to_c};
use super::rows::{MatrixLayout, read_exact_or_truncated};

/// The header of a float `.npy` file, checked against the file's size.
#[derive(Clone, Debug)]
pub struct NpyMeta {
    /// The file.
    pub path: PathBuf,
    /// Shape from the header.
    pub shape: Vec<usize>,
    /// Element type.
    pub elem: Elem,
    /// Byte order.
    pub order: ByteOrder,
    /// Column-major storage.
    pub fortran: bool,
    /// Byte offset of the data.
    pub data_offset: u64,
}

/// A header that does not parse, in one line: the parser's message can span many lines (a
/// dump of its grammar state), of which the first says what was wrong.
fn header_error(path: &Path, e: &std::io::Error) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        return anyhow::anyhow!(
            "{}: not a valid .npy file: the header is truncated",
            path.display()
        );
    }
    let text = e.to_string();
    let first = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("unreadable header");
    let first: String = if first.chars().count() > 120 {
        first.chars().take(117).chain("...".chars()).collect()
    } else {
        first.to_owned()
    };
    anyhow::anyhow!("{}: not a valid .npy file: {first}", path.display())
}

/// The deepest bracket nesting a header may have: a float matrix's needs 2 (the dict and the
/// shape tuple); structured dtypes, refused later anyway, a few more.
const MAX_HEADER_NESTING: usize = 6;

/// Checks a header's text before npyz parses it, for what would hang or panic npyz rather
/// than be refused by it; npyz reports everything else.
///
/// - Brackets nesting deeper than [`MAX_HEADER_NESTING`]: npyz's parser backtracks
///   exponentially in the depth (16 nested `{` took over 20 seconds; found by fuzzing,
///   tests/fuzz target `npy`), so a 150-byte file could hang an ingest. Quotes are not
///   tracked: a bracket inside a quoted name counts too, which only a structured dtype
///   (refused anyway) can have.
/// - A shape whose element count overflows 64 bits: npyz multiplies the dimensions
///   unchecked, a panic wherever overflow checks are on (found by fuzzing, where they are
///   on in dependencies too). Zero dimensions are skipped, since npyz's running products
///   overflow before they reach one. Entries other than plain integers are refused too:
///   npyz evaluates sums such as `4444444-4444444`, which hid overflowing products from a
///   check of the digits.
fn check_header_text(path: &Path, file: &mut File) -> Result<()> {
    use std::io::Read;
    let cannot_read = || format!("{}: cannot read", path.display());
    let mut prefix = Vec::with_capacity(12);
    file.by_ref()
        .take(12)
        .read_to_end(&mut prefix)
        .with_context(cannot_read)?;
    // Magic, version, then the header's length: 2 bytes in version 1, 4 in later ones.
    let len = match prefix[..] {
        [0x93, b'N', b'U', b'M', b'P', b'Y', 1, _, a, b, ..] => {
            u64::from(u16::from_le_bytes([a, b]))
        }
        [0x93, b'N', b'U', b'M', b'P', b'Y', _, _, a, b, c, d] => {
            u64::from(u32::from_le_bytes([a, b, c, d]))
        }
        _ => 0, // npyz reports what is wrong with it.
    };
    let start = if prefix.get(6) == Some(&1) { 10 } else { 12 };
    let mut text = Vec::new();
    file.seek(std::io::SeekFrom::Start(start))
        .and_then(|_| file.by_ref().take(len).read_to_end(&mut text))
        .and_then(|_| file.rewind())
        .with_context(cannot_read)?;
    let (mut depth, mut deepest) = (0usize, 0usize);
    for &b in &text {
        match b {
            b'(' | b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    if deepest > MAX_HEADER_NESTING {
        bail!(
            "{}: not a valid .npy file: the header nests brackets {deepest} deep (at most {MAX_HEADER_NESTING})",
            path.display()
        );
    }
    match check_shape(&text) {
        Ok(()) => {}
        Err(BadShape::NotIntegers) => bail!(
            "{}: not a valid .npy file: the shape is not a tuple of non-negative integers",
            path.display()
        ),
        Err(BadShape::Overflows) => bail!(
            "{}: the shape describes more than 2^64 elements, so more than 2^64 bytes (corrupt or not an .npy file)",
            path.display()
        ),
    }
    Ok(())
}

/// What [`check_shape`] found wrong with a header's `shape`.
#[derive(Debug, PartialEq, Eq)]
enum BadShape {
    /// An entry that is not a plain non-negative integer (npyz would evaluate `4-2`).
    NotIntegers,
    /// Nonzero dimensions whose product is beyond 64 bits, or one that is itself.
    Overflows,
}

/// Checks the header text's `shape` tuple, where the text has one: numpy writes plain
/// integers (Python 2 with an `L`). A shape written otherwise is left to npyz.
fn check_shape(text: &[u8]) -> Result<(), BadShape> {
    let text = String::from_utf8_lossy(text);
    let Some(at) = text.find("'shape'").or_else(|| text.find("\"shape\"")) else {
        return Ok(());
    };
    let rest = text[at + 7..].trim_start();
    let Some(rest) = rest.strip_prefix(':').map(str::trim_start) else {
        return Ok(());
    };
    let Some(tuple) = rest.strip_prefix('(').and_then(|r| r.split(')').next()) else {
        return Ok(());
    };
    let mut product = 1u64;
    for dim in tuple.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let dim = dim.strip_suffix('L').unwrap_or(dim);
        if dim.is_empty() || !dim.bytes().all(|b| b.is_ascii_digit()) {
            return Err(BadShape::NotIntegers);
        }
        // Digits only: a failed parse is a number beyond 64 bits.
        let dim = dim.parse::<u64>().map_err(|_| BadShape::Overflows)?;
        if dim != 0 {
            product = product.checked_mul(dim).ok_or(BadShape::Overflows)?;
        }
    }
    Ok(())
}

/// npyz's header parse, with a panic inside it turned into the file's error: the text
/// checks above refuse the inputs known to panic npyz where overflow checks are on, and a
/// header that slips past them (a decoy `'shape'` inside a string, say) must not panic
/// either.
fn parse_guarded<T>(path: &Path, parse: impl FnOnce() -> std::io::Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(parse)) {
        Ok(parsed) => parsed.map_err(|e| header_error(path, &e)),
        Err(_) => bail!(
            "{}: not a valid .npy file: the header parser failed on it",
            path.display()
        ),
    }
}

fn header(path: &Path) -> Result<(NpyHeader, u64, u64)> {
    let mut file = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let len = file
        .metadata()
        .with_context(|| format!("{}: cannot stat", path.display()))?
        .len();
    check_header_text(path, &mut file)?;
    let header = parse_guarded(path, || NpyHeader::from_reader(&mut file))?;
    let offset = file
        .stream_position()
        .with_context(|| format!("{}: cannot read", path.display()))?;
    Ok((header, offset, len))
}

/// Reads and checks the header of a float `.npy` file: a float dtype, and a file exactly as
/// long as its header says.
pub fn read_meta(path: &Path) -> Result<NpyMeta> {
    let (h, data_offset, file_len) = header(path)?;
    let dtype = h.dtype();
    let DType::Plain(ts) = &dtype else {
        bail!(
            "{}: structured dtype {} is not a float matrix",
            path.display(),
            dtype.descr()
        );
    };
    let elem = match (ts.type_char(), ts.size_field()) {
        (TypeChar::Float, 2) => Elem::F16,
        (TypeChar::Float, 4) => Elem::F32,
        (TypeChar::Float, 8) => Elem::F64,
        _ => bail!(
            "{}: dtype '{ts}' is not supported: vectors must be float16, float32 or float64",
            path.display()
        ),
    };
    let order = match ts.endianness() {
        Endianness::Big => ByteOrder::Big,
        _ => ByteOrder::Little,
    };
    let shape: Vec<usize> = h.shape().iter().map(|&s| s as usize).collect();
    // Computed here with checks: the header's own element count wraps for shapes whose
    // product overflows, which made such a header look like one of an empty (or any) file.
    let data_bytes = h
        .shape()
        .iter()
        .try_fold(elem.size() as u64, |n, &d| n.checked_mul(d))
        .with_context(|| {
            format!(
                "{}: shape {shape:?} describes more than 2^64 bytes (corrupt or not an .npy file)",
                path.display()
            )
        })?;
    let have = file_len.saturating_sub(data_offset);
    if have < data_bytes {
        bail!(
            "{}: file is truncated: its header promises shape {shape:?} ({data_bytes} bytes of {elem}) but only {have} bytes follow",
            path.display()
        );
    }
    if have > data_bytes {
        bail!(
            "{}: {} unexpected bytes after the data of shape {shape:?} (corrupt or not an .npy file)",
            path.display(),
            have - data_bytes
        );
    }
    Ok(NpyMeta {
        path: path.to_path_buf(),
        shape,
        elem,
        order,
        fortran: h.order() == Order::Fortran,
        data_offset,
    })
}

impl NpyMeta {
    /// Checks the shape is `[rows, dim]` and returns `rows`.
    pub fn matrix_rows(&self, dim: usize) -> Result<usize> {
        match self.shape[..] {
            [rows, d] if d == dim => Ok(rows),
            [_, d] => bail!(
                "{}: vectors have dimension {d} but the collection's dimension is {dim}",
                self.path.display()
            ),
            _ => bail!(
                "{}: expected a 2-D [tokens, {dim}] array, got shape {:?}",
                self.path.display(),
                self.shape
            ),
        }
    }

    /// The data as a `[rows, dim]` matrix layout for streaming.
    pub fn layout(&self, dim: usize) -> Result<MatrixLayout> {
        let rows = self.matrix_rows(dim)?;
        Ok(MatrixLayout {
            path: self.path.clone(),
            offset: self.data_offset,
            rows,
            dim,
            elem: self.elem,
            order: self.order,
            fortran: self.fortran,
        })
    }

    /// Reads the whole array as row-major f32 (for small files: one document, queries).
    pub fn read_all(&self) -> Result<Vec<f32>> {
        let n: usize = self.shape.iter().product();
        let mut file = File::open(&self.path)
            .with_context(|| format!("{}: cannot open", self.path.display()))?;
        file.seek(std::io::SeekFrom::Start(self.data_offset))
            .with_context(|| format!("{}: cannot read", self.path.display()))?;
        let mut bytes = vec![0u8; n * self.elem.size()];
        read_exact_or_truncated(&mut file, &mut bytes, &self.path, "the data")?;
        let mut out = Vec::with_capacity(n);
        decode_into(self.elem, self.order, &bytes, &mut out);
        Ok(if self.fortran {
            fortran_to_c(&out, &self.shape)
        } else {
            out
        })
    }
}

/// Reads a 1-D integer `.npy` array (any integer width or byte order) as i64.
pub fn read_ints(path: &Path) -> Result<Vec<i64>> {
    let mut file = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    check_header_text(path, &mut file)?;
    let npy = parse_guarded(path, || NpyFile::new(BufReader::new(file)))?;
    if npy.shape().len() != 1 {
        bail!(
            "{}: expected a 1-D array of integers, got shape {:?}",
            path.display(),
            npy.shape()
        );
    }
    let dtype = npy.dtype();
    let DType::Plain(ts) = &dtype else {
        bail!(
            "{}: structured dtype {} is not an integer array",
            path.display(),
            dtype.descr()
        );
    };
    let ts = ts.clone();
    let read = |r: std::io::Result<Vec<i64>>| {
        r.map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                anyhow::anyhow!(
                    "{}: file is truncated: it ends inside the data",
                    path.display()
                )
            } else {
                anyhow::anyhow!("{}: cannot read the data: {e}", path.display())
            }
        })
    };
    let conv = |v: Vec<u64>| -> Vec<i64> {
        v.into_iter()
            .map(|x| i64::try_from(x).unwrap_or(i64::MAX))
            .collect()
    };
    match (ts.type_char(), ts.size_field()) {
        (TypeChar::Int, 8) => read(npy.into_vec::<i64>()),
        (TypeChar::Int, 4) => read(
            npy.into_vec::<i32>()
                .map(|v| v.into_iter().map(i64::from).collect()),
        ),
        (TypeChar::Int, 2) => read(
            npy.into_vec::<i16>()
                .map(|v| v.into_iter().map(i64::from).collect()),
        ),
        (TypeChar::Int, 1) => read(
            npy.into_vec::<i8>()
                .map(|v| v.into_iter().map(i64::from).collect()),
        ),
        (TypeChar::Uint, 8) => read(npy.into_vec::<u64>().map(conv)),
        (TypeChar::Uint, 4) => read(
            npy.into_vec::<u32>()
                .map(|v| v.into_iter().map(i64::from).collect()),
        ),
        (TypeChar::Uint, 2) => read(
            npy.into_vec::<u16>()
                .map(|v| v.into_iter().map(i64::from).collect()),
        ),
        (TypeChar::Uint, 1) => read(
            npy.into_vec::<u8>()
                .map(|v| v.into_iter().map(i64::from).collect()),
        ),
        _ => bail!("{}: dtype '{ts}' is not an integer type", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a version 1.0 `.npy` file: `header` padded to 64 bytes, then `data`.
    fn write_v1(dir: &Path, name: &str, header: &str, data: &[u8]) -> std::path::PathBuf {
        let mut header = header.to_owned();
        while !(10 + header.len() + 1).is_multiple_of(64) {
            header.push(' ');
        }
        header.push('\n');
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(data);
        let path = dir.join(name);
        std::fs::write(&path, &bytes).expect("write");
        path
    }

    /// Found by fuzzing: npyz's header parser backtracks exponentially in bracket nesting.
    #[test]
    fn a_header_nesting_brackets_deeply_is_refused_before_parsing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let header = format!(
            "{{'descr': '<f4', 'fortran_order': False,{} 'shape': (1, 1), }}",
            "[".repeat(28)
        );
        let path = write_v1(dir.path(), "deep.npy", &header, &1f32.to_le_bytes());
        let start = std::time::Instant::now();
        for err in [
            read_meta(&path).expect_err("too deep"),
            read_ints(&path).expect_err("too deep"),
        ] {
            assert!(err.to_string().contains("nests brackets 30 deep"), "{err}");
        }
        assert!(start.elapsed().as_secs() < 5, "took {:?}", start.elapsed());
    }

    /// Found by AFL++: npyz multiplies a shape's dimensions unchecked.
    #[test]
    fn a_shape_whose_element_count_overflows_is_refused_before_parsing() {
        let over = Err(BadShape::Overflows);
        assert_eq!(check_shape(b"{'shape': (2, 9223372036854775808), }"), over);
        assert_eq!(check_shape(b"{'shape': (18446744073709551616,), }"), over);
        assert_eq!(
            check_shape(b"{'shape': (4294967296, 4294967296, 0), }"),
            over
        );
        assert_eq!(
            check_shape(b"{\"shape\" : ( 4294967296L , 4294967296L ) }"),
            over
        );
        let not = Err(BadShape::NotIntegers);
        assert_eq!(check_shape(b"{'shape': (2, 4444444-4444444, 9), }"), not);
        assert_eq!(check_shape(b"{'shape': (-1, 3), }"), not);
        assert_eq!(check_shape(b"{'shape': (1+2, 3), }"), not);
        assert_eq!(
            check_shape(b"{'shape': (2, 4611686018427387904), }"),
            Ok(())
        );
        assert_eq!(
            check_shape(b"{'shape': (0, 18446744073709551615), }"),
            Ok(())
        );
        assert_eq!(check_shape(b"{'shape': (), }"), Ok(()));
        assert_eq!(check_shape(b"{'shape': (7,), }"), Ok(()));
        let dir = tempfile::tempdir().expect("tempdir");
        let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 4444475, \
                      8368832, 4444444444444, 4444444444444444444, 4), }";
        let path = write_v1(dir.path(), "huge.npy", header, &[]);
        for err in [
            read_meta(&path).expect_err("overflow"),
            read_ints(&path).expect_err("overflow"),
        ] {
            assert!(err.to_string().contains("more than 2^64 bytes"), "{err}");
        }
    }
}
