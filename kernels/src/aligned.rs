//! Buffers whose data starts on a cache-line boundary, for the per-query tables.
//!
//! The kernels read a query's tables one SIMD register at a time: a row of 16 or 32 floats
//! of the residual table ([`crate::QueryLut`]) or of the centroid score table, 32 bytes of
//! the byte table ([`crate::CentroidScores8`]). Row lengths are whole registers, so when a
//! table starts on a 64-byte boundary no row load crosses a cache line. A `Vec` gives no
//! such start: glibc serves large blocks from `mmap` at 16 bytes past a page boundary, and
//! smaller ones from its heap at any multiple of 16. Then every 64-byte load straddles two
//! lines, and which case a search met depended on the allocator's state when its thread
//! first built its tables. Measured (`lut_alignment_timing` in `compressed.rs`, 400
//! documents of 96 tokens against 65,536 centroids, 32 query tokens, 2-bit residuals,
//! fastest of 30 rounds): the exact stage's kernel took 7.9 µs per document with its
//! residual table aligned and 10.8 µs at each of the three misaligned starts.

use std::ops::{Deref, DerefMut};

use aligned_vec::{AVec, ConstAlign};

/// Bytes of alignment: one cache line, one AVX-512 register.
pub const ALIGN: usize = 64;

/// A growable buffer whose first element sits on an [`ALIGN`]-byte boundary.
#[derive(Clone, Debug)]
pub struct AlignedVec<T> {
    buf: AVec<T, ConstAlign<ALIGN>>,
    /// Elements skipped at the start: always 0, except in timing tests that measure
    /// what misalignment costs.
    skip: usize,
}

impl<T> Default for AlignedVec<T> {
    fn default() -> Self {
        AlignedVec {
            buf: AVec::new(ALIGN),
            skip: 0,
        }
    }
}

impl<T: Clone + Default> AlignedVec<T> {
    /// `len` copies of `value`.
    pub fn filled(len: usize, value: T) -> Self {
        let mut v = AlignedVec::default();
        v.resize(len, value);
        v
    }

    /// A copy of `values`.
    pub fn from_slice(values: &[T]) -> Self {
        let mut v = AlignedVec::default();
        v.buf.extend_from_slice(values);
        v
    }

    /// Sets the length to `len`, filling new elements with `value` (existing ones keep
    /// their values, as with `Vec::resize`).
    pub fn resize(&mut self, len: usize, value: T) {
        self.buf.resize(self.skip + len, value);
    }

    /// Removes every element, keeping the memory.
    pub fn clear(&mut self) {
        self.buf.truncate(self.skip);
    }

    /// Appends `values`.
    pub fn extend_from_slice(&mut self, values: &[T]) {
        self.buf.extend_from_slice(values);
    }

    /// A copy of `values` starting `skip` elements past the boundary (timing tests only).
    #[cfg(test)]
    pub(crate) fn misaligned(values: &[T], skip: usize) -> Self {
        let mut v = AlignedVec::default();
        v.buf.resize(skip, T::default());
        v.skip = skip;
        v.buf.extend_from_slice(values);
        v
    }
}

impl<T> Deref for AlignedVec<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        &self.buf[self.skip..]
    }
}

impl<T> DerefMut for AlignedVec<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.buf[self.skip..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_starts_on_a_cache_line_after_every_growth() {
        let mut v: AlignedVec<f32> = AlignedVec::default();
        for len in [1usize, 15, 16, 1000, 32768, 40000, 3] {
            v.resize(len, 1.5);
            assert_eq!(v.len(), len);
            assert_eq!(v.as_ptr() as usize % ALIGN, 0, "len {len}");
            assert!(v.iter().all(|&x| x == 1.5));
        }
        v.clear();
        assert!(v.is_empty());
        v.extend_from_slice(&[2.0, 3.0]);
        assert_eq!(&v[..], &[2.0, 3.0]);
        let bytes: AlignedVec<u8> = AlignedVec::from_slice(&[1, 2, 3]);
        assert_eq!(bytes.as_ptr() as usize % ALIGN, 0);
        assert_eq!(&bytes[..], &[1, 2, 3]);
    }

    #[test]
    fn a_misaligned_copy_holds_the_same_values_off_the_boundary() {
        let v = AlignedVec::misaligned(&[1.0f32, 2.0, 3.0], 4);
        assert_eq!(&v[..], &[1.0, 2.0, 3.0]);
        assert_eq!(v.as_ptr() as usize % ALIGN, 16);
    }
}
