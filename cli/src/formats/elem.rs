//! Float element types of input files and their conversion to f32.

use std::fmt;

/// A float element type that input files may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Elem {
    /// IEEE half precision.
    F16,
    /// bfloat16 (safetensors only; NumPy has no such dtype).
    Bf16,
    /// IEEE single precision.
    F32,
    /// IEEE double precision (narrowed to f32).
    F64,
}

impl Elem {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Elem::F16 | Elem::Bf16 => 2,
            Elem::F32 => 4,
            Elem::F64 => 8,
        }
    }
}

impl fmt::Display for Elem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Elem::F16 => "float16",
            Elem::Bf16 => "bfloat16",
            Elem::F32 => "float32",
            Elem::F64 => "float64",
        })
    }
}

/// Byte order of stored elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ByteOrder {
    /// Little-endian (NumPy's `<`, safetensors always).
    Little,
    /// Big-endian (NumPy's `>`).
    Big,
}

/// Appends the f32 values of `bytes` (a whole number of `elem`s) to `out`.
pub fn decode_into(elem: Elem, order: ByteOrder, bytes: &[u8], out: &mut Vec<f32>) {
    let big = order == ByteOrder::Big;
    out.reserve(bytes.len() / elem.size());
    match elem {
        Elem::F32 => out.extend(bytes.chunks_exact(4).map(|b| {
            let a = [b[0], b[1], b[2], b[3]];
            if big {
                f32::from_be_bytes(a)
            } else {
                f32::from_le_bytes(a)
            }
        })),
        Elem::F64 => out.extend(bytes.chunks_exact(8).map(|b| {
            let a = [b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]];
            (if big {
                f64::from_be_bytes(a)
            } else {
                f64::from_le_bytes(a)
            }) as f32
        })),
        Elem::F16 => out.extend(bytes.chunks_exact(2).map(|b| {
            let a = [b[0], b[1]];
            f32::from(if big {
                half::f16::from_be_bytes(a)
            } else {
                half::f16::from_le_bytes(a)
            })
        })),
        Elem::Bf16 => out.extend(bytes.chunks_exact(2).map(|b| {
            let a = [b[0], b[1]];
            f32::from(if big {
                half::bf16::from_be_bytes(a)
            } else {
                half::bf16::from_le_bytes(a)
            })
        })),
    }
}

/// Reorders a column-major array of any rank into row-major.
pub fn fortran_to_c(data: &[f32], shape: &[usize]) -> Vec<f32> {
    if shape.len() < 2 {
        return data.to_vec();
    }
    let mut out = vec![0f32; data.len()];
    let rank = shape.len();
    let mut idx = vec![0usize; rank];
    for v in out.iter_mut() {
        let mut off = 0;
        let mut stride = 1;
        for d in 0..rank {
            off += idx[d] * stride;
            stride *= shape[d];
        }
        *v = data[off];
        for d in (0..rank).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fortran_order_is_transposed_to_row_major() {
        let f = [1.0, 4.0, 2.0, 5.0, 3.0, 6.0];
        assert_eq!(
            fortran_to_c(&f, &[2, 3]),
            vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
        );
    }

    #[test]
    fn every_element_type_decodes_in_both_byte_orders() {
        let mut out = Vec::new();
        decode_into(Elem::F32, ByteOrder::Big, &1.5f32.to_be_bytes(), &mut out);
        decode_into(
            Elem::F64,
            ByteOrder::Little,
            &(-2.0f64).to_le_bytes(),
            &mut out,
        );
        decode_into(
            Elem::F16,
            ByteOrder::Little,
            &half::f16::from_f32(0.5).to_le_bytes(),
            &mut out,
        );
        decode_into(
            Elem::Bf16,
            ByteOrder::Big,
            &half::bf16::from_f32(3.0).to_be_bytes(),
            &mut out,
        );
        assert_eq!(out, vec![1.5, -2.0, 0.5, 3.0]);
    }
}
