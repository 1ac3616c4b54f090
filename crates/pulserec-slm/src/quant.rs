//! ggml tensor types and dequantisation to f32.
//!
//! Block layouts follow ggml's: a quantised row is a run of fixed-size blocks, each holding a
//! scale (and for `Q4_1` a minimum) as f16 followed by packed integers.

use half::{bf16, f16};

use crate::error::{Result, SlmError};

/// The element type of a GGUF tensor (ggml's `ggml_type` codes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GgmlType {
    /// 32-bit float.
    F32,
    /// 16-bit IEEE float.
    F16,
    /// bfloat16.
    BF16,
    /// Blocks of 32 4-bit values with one f16 scale, offset 8.
    Q4_0,
    /// Blocks of 32 4-bit values with an f16 scale and an f16 minimum.
    Q4_1,
    /// Blocks of 32 5-bit values with one f16 scale.
    Q5_0,
    /// Blocks of 32 5-bit values with an f16 scale and minimum.
    Q5_1,
    /// Blocks of 32 signed bytes with one f16 scale.
    Q8_0,
    /// Blocks of 32 signed bytes with f16 scale and sum.
    Q8_1,
    /// K-quant, 2 bits.
    Q2K,
    /// K-quant, 3 bits.
    Q3K,
    /// K-quant, 4 bits.
    Q4K,
    /// K-quant, 5 bits.
    Q5K,
    /// K-quant, 6 bits.
    Q6K,
    /// K-quant, 8 bits.
    Q8K,
    /// 8-bit integer.
    I8,
    /// 16-bit integer.
    I16,
    /// 32-bit integer.
    I32,
    /// 64-bit integer.
    I64,
    /// 64-bit float.
    F64,
}

impl GgmlType {
    /// Maps a ggml type code; `None` for codes this crate does not know.
    pub fn from_code(code: u32) -> Option<Self> {
        Some(match code {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            6 => Self::Q5_0,
            7 => Self::Q5_1,
            8 => Self::Q8_0,
            9 => Self::Q8_1,
            10 => Self::Q2K,
            11 => Self::Q3K,
            12 => Self::Q4K,
            13 => Self::Q5K,
            14 => Self::Q6K,
            15 => Self::Q8K,
            24 => Self::I8,
            25 => Self::I16,
            26 => Self::I32,
            27 => Self::I64,
            28 => Self::F64,
            30 => Self::BF16,
            _ => return None,
        })
    }

    /// Values per block.
    pub fn block_size(self) -> usize {
        match self {
            Self::Q4_0 | Self::Q4_1 | Self::Q5_0 | Self::Q5_1 | Self::Q8_0 | Self::Q8_1 => 32,
            Self::Q2K | Self::Q3K | Self::Q4K | Self::Q5K | Self::Q6K | Self::Q8K => 256,
            _ => 1,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            Self::F32 | Self::I32 => 4,
            Self::F16 | Self::BF16 | Self::I16 => 2,
            Self::I8 => 1,
            Self::I64 | Self::F64 => 8,
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q5_0 => 22,
            Self::Q5_1 => 24,
            Self::Q8_0 => 34,
            Self::Q8_1 => 36,
            Self::Q2K => 84,
            Self::Q3K => 110,
            Self::Q4K => 144,
            Self::Q5K => 176,
            Self::Q6K => 210,
            Self::Q8K => 292,
        }
    }

    /// Bytes needed for a row of `n` values, or `None` if `n` is not a whole number of blocks.
    pub fn row_bytes(self, n: usize) -> Option<usize> {
        if !n.is_multiple_of(self.block_size()) {
            return None;
        }
        (n / self.block_size()).checked_mul(self.block_bytes())
    }

    /// Whether [`dequantize_row`] handles this type.
    pub fn can_dequantize(self) -> bool {
        matches!(
            self,
            Self::F32 | Self::F16 | Self::BF16 | Self::Q4_0 | Self::Q4_1 | Self::Q8_0
        )
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

/// The little-endian f16 at `bytes[at..at + 2]` as f32 (a block's scale or minimum).
#[inline]
pub(crate) fn f16_at(bytes: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([bytes[at], bytes[at + 1]]).to_f32()
}

/// Dequantises one 32-value block of `Q8_0`, `Q4_0` or `Q4_1` (any other type is read as
/// `Q4_1`; callers dispatch on the type first).
#[inline(always)]
pub(crate) fn dequantize_block(dtype: GgmlType, b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    match dtype {
        GgmlType::Q8_0 => {
            for (o, &q) in out.iter_mut().zip(&b[2..34]) {
                *o = f32::from(q as i8) * d;
            }
        }
        GgmlType::Q4_0 => {
            let (lo, hi) = out.split_at_mut(16);
            for j in 0..16 {
                let q = b[2 + j];
                lo[j] = (f32::from(q & 0x0F) - 8.0) * d;
                hi[j] = (f32::from(q >> 4) - 8.0) * d;
            }
        }
        _ => {
            let m = f16_at(b, 2);
            let (lo, hi) = out.split_at_mut(16);
            for j in 0..16 {
                let q = b[4 + j];
                lo[j] = f32::from(q & 0x0F) * d + m;
                hi[j] = f32::from(q >> 4) * d + m;
            }
        }
    }
}

/// Dequantises `bytes` (a whole number of blocks of `dtype`) into `out`.
///
/// `out.len()` values are written; `bytes` must hold exactly that many values. `tensor` only
/// names the tensor in errors.
pub fn dequantize_row(dtype: GgmlType, bytes: &[u8], out: &mut [f32], tensor: &str) -> Result<()> {
    let bad = |reason: String| SlmError::BadTensor {
        tensor: tensor.to_string(),
        reason,
    };
    let need = dtype.row_bytes(out.len()).ok_or_else(|| {
        bad(format!(
            "{} values is not a whole number of {dtype} blocks",
            out.len()
        ))
    })?;
    if bytes.len() != need {
        return Err(bad(format!(
            "{} bytes for {} {dtype} values, expected {need}",
            bytes.len(),
            out.len()
        )));
    }
    match dtype {
        GgmlType::F32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        GgmlType::F16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        GgmlType::BF16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = bf16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q4_1 => {
            let bb = dtype.block_bytes();
            for (o, b) in out.chunks_exact_mut(32).zip(bytes.chunks_exact(bb)) {
                dequantize_block(dtype, b, o);
            }
        }
        other => {
            return Err(SlmError::UnsupportedDType {
                tensor: tensor.to_string(),
                dtype: other.to_string(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_le_bytes()
    }

    #[test]
    fn q8_0_block() {
        let mut b = h(0.5).to_vec();
        b.extend((0..32).map(|i| (i as i8 - 16) as u8));
        let mut out = [0.0; 32];
        dequantize_row(GgmlType::Q8_0, &b, &mut out, "t").unwrap();
        for (i, v) in out.iter().enumerate() {
            assert_eq!(*v, (i as f32 - 16.0) * 0.5);
        }
    }

    #[test]
    fn q4_0_block_nibble_order() {
        // Low nibbles hold values 0..16, high nibbles values 16..32.
        let mut b = h(2.0).to_vec();
        b.extend((0..16u8).map(|j| (j) | ((15 - j) << 4)));
        let mut out = [0.0; 32];
        dequantize_row(GgmlType::Q4_0, &b, &mut out, "t").unwrap();
        for j in 0..16 {
            assert_eq!(out[j], (j as f32 - 8.0) * 2.0);
            assert_eq!(out[16 + j], ((15 - j) as f32 - 8.0) * 2.0);
        }
    }

    #[test]
    fn q4_1_block_with_min() {
        let mut b = h(0.25).to_vec();
        b.extend(h(-1.0));
        b.extend((0..16u8).map(|j| j | (3 << 4)));
        let mut out = [0.0; 32];
        dequantize_row(GgmlType::Q4_1, &b, &mut out, "t").unwrap();
        for j in 0..16 {
            assert_eq!(out[j], j as f32 * 0.25 - 1.0);
            assert_eq!(out[16 + j], 3.0 * 0.25 - 1.0);
        }
    }

    #[test]
    fn float_types() {
        let vals = [1.5f32, -2.25, 0.0, 65504.0];
        let f32b: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        let f16b: Vec<u8> = vals.iter().flat_map(|v| h(*v)).collect();
        let bf16b: Vec<u8> = vals
            .iter()
            .flat_map(|v| bf16::from_f32(*v).to_le_bytes())
            .collect();
        let mut out = [0.0; 4];
        dequantize_row(GgmlType::F32, &f32b, &mut out, "t").unwrap();
        assert_eq!(out, vals);
        dequantize_row(GgmlType::F16, &f16b, &mut out, "t").unwrap();
        assert_eq!(out, vals);
        dequantize_row(GgmlType::BF16, &bf16b, &mut out, "t").unwrap();
        assert_eq!(&out[..3], &vals[..3]);
        assert_eq!(out[3], 65536.0, "bf16 rounds 65504 to 65536");
    }

    #[test]
    fn wrong_sizes_are_errors() {
        let mut out = [0.0; 32];
        let e = dequantize_row(GgmlType::Q8_0, &[0; 33], &mut out, "blk.0.w").unwrap_err();
        assert!(e.to_string().contains("blk.0.w"), "{e}");
        let mut out = [0.0; 31];
        assert!(dequantize_row(GgmlType::Q8_0, &[0; 34], &mut out, "t").is_err());
        let mut out = [0.0; 256];
        let e = dequantize_row(GgmlType::Q6K, &[0; 210], &mut out, "t").unwrap_err();
        assert!(matches!(e, SlmError::UnsupportedDType { .. }));
    }
}
