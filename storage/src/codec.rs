//! Codec files: a collection's centroids and residual quantiser (FORMAT.md, "Codec").

use std::io::Write;
use std::path::Path;

use crate::container::{Container, FileKind, SectionData, write_container};
use crate::error::{Error, Result};
use crate::mmap::FileBytes;

/// Section ids of a codec file.
pub mod section {
    /// Fixed-size codec header.
    pub const META: u32 = 1;
    /// `f32[n_centroids * dim]`, grouped: the centroids of group g are contiguous.
    pub const CENTROIDS: u32 = 2;
    /// `f32[dim * (2^nbits - 1)]`: per-dimension bucket cutoffs, ascending.
    pub const CUTOFFS: u32 = 3;
    /// `f32[dim * 2^nbits]`: per-dimension reconstruction weight of each bucket.
    pub const WEIGHTS: u32 = 4;
    /// `f32[n_groups * dim]`: centres of the coarse groups of centroids.
    pub const GROUP_CENTERS: u32 = 5;
    /// `u32[n_groups + 1]`: first centroid of each group, then `n_centroids`.
    pub const GROUP_OFFSETS: u32 = 6;
}

const META_LEN: usize = 64;

/// A trained codec, as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct CodecData {
    /// Token vector dimension.
    pub dim: u32,
    /// Residual bits per dimension.
    pub nbits: u32,
    /// Centroids, row-major `[n_centroids, dim]`.
    pub centroids: Vec<f32>,
    /// Bucket cutoffs, row-major `[dim, 2^nbits - 1]`.
    pub cutoffs: Vec<f32>,
    /// Bucket weights, row-major `[dim, 2^nbits]`.
    pub weights: Vec<f32>,
    /// Group centres, row-major `[n_groups, dim]`.
    pub group_centers: Vec<f32>,
    /// `n_groups + 1` offsets into the centroids.
    pub group_offsets: Vec<u32>,
    /// Number of token vectors the codec was trained on.
    pub trained_tokens: u64,
    /// Mean L2 norm of the training sample's residuals (drift reference).
    pub mean_residual_norm: f32,
}

impl CodecData {
    /// Number of centroids.
    pub fn n_centroids(&self) -> u32 {
        (self.centroids.len() / self.dim.max(1) as usize) as u32
    }

    /// Number of coarse groups.
    pub fn n_groups(&self) -> u32 {
        self.group_offsets.len().saturating_sub(1) as u32
    }
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Serialises a codec into `out`; returns the bytes written.
pub fn write_codec(out: &mut impl Write, c: &CodecData) -> std::io::Result<u64> {
    let mut meta = vec![0u8; META_LEN];
    meta[0..4].copy_from_slice(&c.dim.to_le_bytes());
    meta[4..8].copy_from_slice(&c.nbits.to_le_bytes());
    meta[8..12].copy_from_slice(&c.n_centroids().to_le_bytes());
    meta[12..16].copy_from_slice(&c.n_groups().to_le_bytes());
    meta[16..24].copy_from_slice(&c.trained_tokens.to_le_bytes());
    meta[24..28].copy_from_slice(&c.mean_residual_norm.to_le_bytes());
    let sections = vec![
        SectionData::raw(section::META, meta),
        SectionData::raw(section::CENTROIDS, f32_bytes(&c.centroids)),
        SectionData::raw(section::CUTOFFS, f32_bytes(&c.cutoffs)),
        SectionData::raw(section::WEIGHTS, f32_bytes(&c.weights)),
        SectionData::raw(section::GROUP_CENTERS, f32_bytes(&c.group_centers)),
        SectionData::raw(
            section::GROUP_OFFSETS,
            c.group_offsets
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
        ),
    ];
    write_container(out, FileKind::Codec, &sections)
}

/// Reads and validates a codec file.
pub fn read_codec(path: &Path) -> Result<CodecData> {
    decode_codec(path, &Container::open(path, FileKind::Codec)?)
}

/// Validates `bytes` as [`read_codec`] validates a file; `path` only names them in errors.
pub fn read_codec_bytes(path: &Path, bytes: FileBytes) -> Result<CodecData> {
    decode_codec(path, &Container::from_bytes(path, bytes, FileKind::Codec)?)
}

fn decode_codec(path: &Path, c: &Container) -> Result<CodecData> {
    let corrupt = |reason: &str| Error::corrupt(path, reason.to_owned());
    let meta = c.raw_section(section::META, "meta")?;
    if meta.len() != META_LEN {
        return Err(corrupt("codec meta has the wrong length"));
    }
    let u32_at =
        |at: usize| u32::from_le_bytes([meta[at], meta[at + 1], meta[at + 2], meta[at + 3]]);
    let dim = u32_at(0);
    let nbits = u32_at(4);
    let n_centroids = u32_at(8) as usize;
    let n_groups = u32_at(12) as usize;
    let mut tt = [0u8; 8];
    tt.copy_from_slice(&meta[16..24]);
    let trained_tokens = u64::from_le_bytes(tt);
    let mean_residual_norm = f32::from_le_bytes([meta[24], meta[25], meta[26], meta[27]]);
    if meta[28..].iter().any(|&x| x != 0) {
        return Err(corrupt("codec meta: reserved bytes are not zero"));
    }
    if dim == 0 || !matches!(nbits, 1 | 2 | 4 | 8) || n_centroids == 0 || n_groups == 0 {
        return Err(corrupt("codec meta holds an invalid shape"));
    }
    // Drift detection divides by it and compares against it.
    if !mean_residual_norm.is_finite() || mean_residual_norm < 0.0 {
        return Err(Error::corrupt(
            path,
            format!(
                "codec meta: mean residual norm {mean_residual_norm} is not a finite non-negative number"
            ),
        ));
    }
    let d = dim as usize;
    let buckets = 1usize << nbits;
    let read = |id: u32, what: &str, len: usize| -> Result<Vec<f32>> {
        let v: &[f32] = c.typed_section(id, what)?;
        if v.len() != len {
            return Err(Error::corrupt(
                path,
                format!("{what}: {} values, expected {len}", v.len()),
            ));
        }
        if v.iter().any(|x| !x.is_finite()) {
            return Err(Error::corrupt(path, format!("{what}: non-finite value")));
        }
        Ok(v.to_vec())
    };
    let centroids = read(section::CENTROIDS, "centroids", n_centroids * d)?;
    let cutoffs = read(section::CUTOFFS, "cutoffs", d * (buckets - 1))?;
    // A bucket is the count of cutoffs <= the value, which assumes sorted cutoffs. Equal
    // neighbours are legal (quantiles of a dimension with repeated values).
    if let Some(j) = cutoffs
        .chunks_exact(buckets - 1)
        .position(|c| c.windows(2).any(|w| w[0] > w[1]))
    {
        return Err(Error::corrupt(
            path,
            format!("cutoffs of dimension {j} are not in ascending order"),
        ));
    }
    let weights = read(section::WEIGHTS, "weights", d * buckets)?;
    let group_centers = read(section::GROUP_CENTERS, "group centres", n_groups * d)?;
    let group_offsets: &[u32] = c.typed_section(section::GROUP_OFFSETS, "group offsets")?;
    if group_offsets.len() != n_groups + 1
        || group_offsets[0] != 0
        || group_offsets[n_groups] as usize != n_centroids
        || group_offsets.windows(2).any(|w| w[0] > w[1])
    {
        return Err(corrupt("group offsets are inconsistent"));
    }
    Ok(CodecData {
        dim,
        nbits,
        centroids,
        cutoffs,
        weights,
        group_centers,
        group_offsets: group_offsets.to_vec(),
        trained_tokens,
        mean_residual_norm,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A valid codec: dim 2, 2 bits (3 cutoffs and 4 weights per dimension), 2 centroids in
    /// one group.
    fn codec() -> CodecData {
        CodecData {
            dim: 2,
            nbits: 2,
            centroids: vec![1.0, 0.0, 0.0, 1.0],
            cutoffs: vec![-0.5, 0.0, 0.5, -0.25, -0.25, 0.25],
            weights: vec![-0.7, -0.2, 0.2, 0.7, -0.4, -0.25, 0.1, 0.4],
            group_centers: vec![0.5, 0.5],
            group_offsets: vec![0, 2],
            trained_tokens: 10,
            mean_residual_norm: 0.3,
        }
    }

    fn round_trip(dir: &Path, name: &str, c: &CodecData) -> Result<CodecData> {
        let path = dir.join(name);
        let mut bytes = Vec::new();
        write_codec(&mut bytes, c).expect("serialise");
        std::fs::write(&path, bytes).expect("write");
        read_codec(&path)
    }

    #[test]
    fn a_valid_codec_round_trips_with_equal_neighbouring_cutoffs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let read = round_trip(dir.path(), "ok.tcd", &codec()).expect("valid codec");
        assert_eq!(read.cutoffs, codec().cutoffs);
    }

    #[test]
    fn cutoffs_out_of_order_are_rejected_naming_the_dimension() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = codec();
        c.cutoffs = vec![-0.5, 0.0, 0.5, 0.25, -0.25, 0.3];
        let err = round_trip(dir.path(), "bad.tcd", &c).expect_err("descending cutoffs");
        assert!(err.to_string().contains("dimension 1"), "{err}");
    }

    #[test]
    fn a_non_finite_or_negative_mean_residual_norm_is_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        for bad in [f32::NAN, f32::INFINITY, -1.0] {
            let mut c = codec();
            c.mean_residual_norm = bad;
            let err = round_trip(dir.path(), "bad.tcd", &c).expect_err("bad norm");
            assert!(
                err.to_string().contains("mean residual norm"),
                "{bad}: {err}"
            );
            std::fs::remove_file(dir.path().join("bad.tcd")).expect("rm");
        }
    }

    #[test]
    fn reserved_meta_bytes_must_be_zero() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut bytes = Vec::new();
        write_codec(&mut bytes, &codec()).expect("serialise");
        let meta = crate::container::section_offset(&bytes, section::META);
        bytes[meta + 40] = 1;
        crate::container::reseal(&mut bytes);
        let path = dir.path().join("bad.tcd");
        std::fs::write(&path, &bytes).expect("write");
        let err = read_codec(&path).expect_err("reserved byte set");
        assert!(err.to_string().contains("reserved"), "{err}");
    }
}
