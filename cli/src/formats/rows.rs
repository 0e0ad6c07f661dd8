//! Streaming reads of `[rows, dim]` float matrices stored in files, a few rows at a time, so a
//! matrix larger than memory is read in bounded memory.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::elem::{ByteOrder, Elem, decode_into};

/// Rows of a matrix, read front to back.
pub trait RowSource {
    /// The next `n` rows, row-major (`n * dim` values).
    fn read_rows(&mut self, n: usize) -> Result<Vec<f32>>;
}

/// Where a matrix lies in a file and how its elements are stored.
#[derive(Clone, Debug)]
pub struct MatrixLayout {
    /// The file.
    pub path: PathBuf,
    /// Byte offset of the first element.
    pub offset: u64,
    /// Rows of the matrix.
    pub rows: usize,
    /// Columns (the vector dimension).
    pub dim: usize,
    /// Element type.
    pub elem: Elem,
    /// Byte order.
    pub order: ByteOrder,
    /// Column-major (Fortran order) instead of row-major.
    pub fortran: bool,
}

impl MatrixLayout {
    /// Opens a front-to-back row reader.
    pub fn open(&self) -> Result<Box<dyn RowSource>> {
        self.open_blocked((FORTRAN_BLOCK_VALUES / self.dim.max(1)).max(1))
    }

    /// As [`MatrixLayout::open`], transposing column-major data `block_rows` rows at a time.
    fn open_blocked(&self, block_rows: usize) -> Result<Box<dyn RowSource>> {
        let mut file = File::open(&self.path)
            .with_context(|| format!("{}: cannot open", self.path.display()))?;
        if self.fortran {
            return Ok(Box::new(FortranRows {
                layout: self.clone(),
                file,
                block_rows: block_rows.max(1),
                block: Vec::new(),
                block_start: 0,
                next: 0,
            }));
        }
        file.seek(SeekFrom::Start(self.offset))
            .with_context(|| format!("{}: cannot seek to the data", self.path.display()))?;
        Ok(Box::new(CRows {
            layout: self.clone(),
            reader: BufReader::with_capacity(1 << 20, file),
            buf: Vec::new(),
            next: 0,
        }))
    }
}

/// Reads `len` bytes at the reader's position, naming the file when it ends early.
pub fn read_exact_or_truncated(
    r: &mut impl Read,
    buf: &mut [u8],
    path: &Path,
    what: &str,
) -> Result<()> {
    r.read_exact(buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            anyhow::anyhow!(
                "{}: file is truncated: it ends inside {what}",
                path.display()
            )
        } else {
            anyhow::Error::new(e).context(format!("{}: cannot read {what}", path.display()))
        }
    })
}

/// Reads a whole row-major matrix from `file` at `layout.offset` (one document).
pub fn read_matrix_at(file: &mut File, layout: &MatrixLayout) -> Result<Vec<f32>> {
    file.seek(SeekFrom::Start(layout.offset))
        .with_context(|| format!("{}: cannot seek", layout.path.display()))?;
    let mut bytes = vec![0u8; layout.rows * layout.dim * layout.elem.size()];
    read_exact_or_truncated(file, &mut bytes, &layout.path, "a tensor")?;
    let mut out = Vec::with_capacity(layout.rows * layout.dim);
    decode_into(layout.elem, layout.order, &bytes, &mut out);
    Ok(out)
}

struct CRows {
    layout: MatrixLayout,
    reader: BufReader<File>,
    buf: Vec<u8>,
    next: usize,
}

impl RowSource for CRows {
    fn read_rows(&mut self, n: usize) -> Result<Vec<f32>> {
        let l = &self.layout;
        if self.next + n > l.rows {
            bail!(
                "{}: asked for rows {}..{} of a {}-row matrix",
                l.path.display(),
                self.next,
                self.next + n,
                l.rows
            );
        }
        self.buf.resize(n * l.dim * l.elem.size(), 0);
        let what = format!("rows {}..{}", self.next, self.next + n);
        read_exact_or_truncated(&mut self.reader, &mut self.buf, &l.path, &what)?;
        self.next += n;
        let mut out = Vec::with_capacity(n * l.dim);
        decode_into(l.elem, l.order, &self.buf, &mut out);
        Ok(out)
    }
}

/// Values a column-major reader transposes at a time (32 MiB of f32; 65,536 rows at
/// dim 128), with `dim` contiguous reads per block.
const FORTRAN_BLOCK_VALUES: usize = 8 << 20;

struct FortranRows {
    layout: MatrixLayout,
    file: File,
    block_rows: usize,
    /// Row-major rows `block_start..block_start + block.len() / dim`.
    block: Vec<f32>,
    block_start: usize,
    next: usize,
}

impl FortranRows {
    fn load_block(&mut self, start: usize, rows: usize) -> Result<()> {
        let l = &self.layout;
        let es = l.elem.size();
        let mut bytes = vec![0u8; rows * es];
        let mut col = Vec::with_capacity(rows);
        let mut block = vec![0f32; rows * l.dim];
        for c in 0..l.dim {
            let at = l.offset + ((c * l.rows + start) * es) as u64;
            self.file
                .seek(SeekFrom::Start(at))
                .with_context(|| format!("{}: cannot seek to column {c}", l.path.display()))?;
            read_exact_or_truncated(&mut self.file, &mut bytes, &l.path, &format!("column {c}"))?;
            col.clear();
            decode_into(l.elem, l.order, &bytes, &mut col);
            for (r, &v) in col.iter().enumerate() {
                block[r * l.dim + c] = v;
            }
        }
        self.block = block;
        self.block_start = start;
        Ok(())
    }
}

impl RowSource for FortranRows {
    fn read_rows(&mut self, n: usize) -> Result<Vec<f32>> {
        let (rows, dim) = (self.layout.rows, self.layout.dim);
        if self.next + n > rows {
            bail!(
                "{}: asked for rows {}..{} of a {rows}-row matrix",
                self.layout.path.display(),
                self.next,
                self.next + n
            );
        }
        let block_end = self.block_start + self.block.len() / dim.max(1);
        if self.next < self.block_start || self.next + n > block_end {
            let len = n.max(self.block_rows).min(rows - self.next);
            self.load_block(self.next, len)?;
        }
        let from = (self.next - self.block_start) * dim;
        let out = self.block[from..from + n * dim].to_vec();
        self.next += n;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A 7 x 3 matrix, value 10 * row + column, stored column-major after a 5-byte prefix.
    fn fortran_file() -> (tempfile::NamedTempFile, MatrixLayout) {
        let (rows, dim) = (7, 3);
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        f.write_all(b"HEAD!").expect("write");
        for c in 0..dim {
            for r in 0..rows {
                f.write_all(&((10 * r + c) as f32).to_le_bytes())
                    .expect("write");
            }
        }
        let layout = MatrixLayout {
            path: f.path().to_path_buf(),
            offset: 5,
            rows,
            dim,
            elem: Elem::F32,
            order: ByteOrder::Little,
            fortran: true,
        };
        (f, layout)
    }

    #[test]
    fn column_major_rows_come_out_row_major_across_block_boundaries() {
        let (_f, layout) = fortran_file();
        // Blocks of 2 rows; documents of 3, 1 and 3 rows straddle them.
        let mut r = layout.open_blocked(2).expect("open");
        let a = r.read_rows(3).expect("rows 0..3");
        let b = r.read_rows(1).expect("row 3");
        let c = r.read_rows(3).expect("rows 4..7");
        let all: Vec<f32> = [a, b, c].concat();
        let want: Vec<f32> = (0..7)
            .flat_map(|r| (0..3).map(move |c| (10 * r + c) as f32))
            .collect();
        assert_eq!(all, want);
        assert!(r.read_rows(1).is_err(), "reading past the end is an error");
    }

    #[test]
    fn a_short_file_is_reported_as_truncated() {
        let (f, mut layout) = fortran_file();
        layout.fortran = false;
        layout.rows = 8;
        let mut r = layout.open().expect("open");
        let err = r.read_rows(8).expect_err("too short");
        assert!(err.to_string().contains("file is truncated"), "{err}");
        drop(f);
    }
}
