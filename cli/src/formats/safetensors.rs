//! `.safetensors` files: the JSON header is parsed and checked against the file size up
//! front; tensor data is then streamed with plain reads (no whole-file map or load).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use safetensors::tensor::{Dtype, Metadata, TensorInfo};

use super::elem::{ByteOrder, Elem};
use super::rows::{MatrixLayout, read_exact_or_truncated};

/// Largest header accepted (the format's own limit is 100 MB).
const MAX_HEADER: u64 = 100_000_000;

/// The checked header of a `.safetensors` file.
#[derive(Clone, Debug)]
pub struct StMeta {
    /// The file.
    pub path: PathBuf,
    /// Byte offset of the data section.
    pub data_start: u64,
    /// Tensors in the order of their data.
    pub tensors: Vec<(String, TensorInfo)>,
}

/// Reads and checks a `.safetensors` header: valid JSON, consistent offsets, and a file
/// exactly as long as the header says.
pub fn read_meta(path: &Path) -> Result<StMeta> {
    let mut file = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let file_len = file
        .metadata()
        .with_context(|| format!("{}: cannot stat", path.display()))?
        .len();
    let mut n8 = [0u8; 8];
    file.read_exact(&mut n8).map_err(|_| {
        anyhow::anyhow!(
            "{}: not a valid .safetensors file: shorter than its 8-byte header length",
            path.display()
        )
    })?;
    let n = u64::from_le_bytes(n8);
    if n > MAX_HEADER || n > file_len.saturating_sub(8) {
        bail!(
            "{}: not a valid .safetensors file: header length {n} does not fit a {file_len}-byte file (truncated or not safetensors)",
            path.display()
        );
    }
    let mut header = vec![0u8; n as usize];
    read_exact_or_truncated(&mut file, &mut header, path, "the header")?;
    let text = std::str::from_utf8(&header).map_err(|e| {
        anyhow::anyhow!(
            "{}: not a valid .safetensors file: header is not UTF-8 ({e})",
            path.display()
        )
    })?;
    let meta: Metadata = serde_json::from_str(text).map_err(|e| {
        anyhow::anyhow!(
            "{}: not a valid .safetensors file: bad header: {e}",
            path.display()
        )
    })?;
    let data_start = 8 + n;
    let have = file_len - data_start;
    let want = meta.data_len() as u64;
    if have < want {
        bail!(
            "{}: file is truncated: its header describes {want} bytes of tensor data but only {have} bytes follow",
            path.display()
        );
    }
    if have > want {
        bail!(
            "{}: {} unexpected bytes after the tensor data",
            path.display(),
            have - want
        );
    }
    let tensors = meta
        .offset_keys()
        .into_iter()
        .filter_map(|name| meta.info(&name).cloned().map(|info| (name, info)))
        .collect();
    Ok(StMeta {
        path: path.to_path_buf(),
        data_start,
        tensors,
    })
}

/// The float element type of a safetensors dtype, if it is one tessera reads.
pub fn float_elem(dtype: Dtype) -> Option<Elem> {
    match dtype {
        Dtype::F16 => Some(Elem::F16),
        Dtype::BF16 => Some(Elem::Bf16),
        Dtype::F32 => Some(Elem::F32),
        Dtype::F64 => Some(Elem::F64),
        _ => None,
    }
}

impl StMeta {
    /// A tensor's header entry.
    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, i)| i)
    }

    /// Checks that tensor `name` is a float `[rows, dim]` matrix and returns its layout.
    pub fn matrix(&self, name: &str, dim: usize) -> Result<MatrixLayout> {
        let info = self
            .info(name)
            .with_context(|| format!("{}: no tensor named {name:?}", self.path.display()))?;
        self.matrix_of(name, info, dim)
    }

    /// As [`StMeta::matrix`], for a header entry already at hand.
    pub fn matrix_of(&self, name: &str, info: &TensorInfo, dim: usize) -> Result<MatrixLayout> {
        let p = self.path.display();
        let elem = float_elem(info.dtype).with_context(|| {
            format!(
                "{p}: tensor {name:?} has dtype {} which is not supported: vectors must be F16, BF16, F32 or F64",
                info.dtype
            )
        })?;
        let rows = match info.shape[..] {
            [rows, d] if d == dim => rows,
            [_, d] => bail!(
                "{p}: tensor {name:?} has dimension {d} but the collection's dimension is {dim}"
            ),
            _ => bail!(
                "{p}: tensor {name:?} has shape {:?}, expected [tokens, {dim}]",
                info.shape
            ),
        };
        Ok(MatrixLayout {
            path: self.path.clone(),
            offset: self.data_start + info.data_offsets.0 as u64,
            rows,
            dim,
            elem,
            order: ByteOrder::Little,
            fortran: false,
        })
    }

    /// Reads a 1-D integer tensor (document lengths) as i64.
    pub fn read_ints(&self, name: &str) -> Result<Vec<i64>> {
        let p = self.path.display();
        let info = self
            .info(name)
            .with_context(|| format!("{p}: no tensor named {name:?}"))?;
        if info.shape.len() != 1 {
            bail!(
                "{p}: tensor {name:?} must be 1-D, has shape {:?}",
                info.shape
            );
        }
        let (s, e) = info.data_offsets;
        let mut bytes = vec![0u8; e - s];
        let mut f = File::open(&self.path).with_context(|| format!("{p}: cannot open"))?;
        f.seek(SeekFrom::Start(self.data_start + s as u64))
            .with_context(|| format!("{p}: cannot read"))?;
        read_exact_or_truncated(&mut f, &mut bytes, &self.path, &format!("tensor {name:?}"))?;
        fn le<const N: usize>(b: &[u8]) -> [u8; N] {
            let mut a = [0u8; N];
            a.copy_from_slice(&b[..N]);
            a
        }
        let v: Vec<i64> = match info.dtype {
            Dtype::I64 => bytes
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(le(b)))
                .collect(),
            Dtype::U64 => bytes
                .chunks_exact(8)
                .map(|b| i64::try_from(u64::from_le_bytes(le(b))).unwrap_or(i64::MAX))
                .collect(),
            Dtype::I32 => bytes
                .chunks_exact(4)
                .map(|b| i64::from(i32::from_le_bytes(le(b))))
                .collect(),
            Dtype::U32 => bytes
                .chunks_exact(4)
                .map(|b| i64::from(u32::from_le_bytes(le(b))))
                .collect(),
            Dtype::I16 => bytes
                .chunks_exact(2)
                .map(|b| i64::from(i16::from_le_bytes(le(b))))
                .collect(),
            Dtype::U16 => bytes
                .chunks_exact(2)
                .map(|b| i64::from(u16::from_le_bytes(le(b))))
                .collect(),
            Dtype::I8 => bytes.iter().map(|&b| i64::from(b as i8)).collect(),
            Dtype::U8 => bytes.iter().map(|&b| i64::from(b)).collect(),
            other => bail!("{p}: tensor {name:?} has dtype {other}, expected an integer type"),
        };
        Ok(v)
    }
}
