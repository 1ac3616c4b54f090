//! Matrix-vector kernels over ggml-quantised weights, for CPU decoding.
//!
//! `y = x · Wᵀ` with `W` kept as `Q8_0` / `Q4_0` / `Q4_1` blocks (4-5x less memory traffic than
//! f32) and `x` in f32, so results equal an f32 matmul on the dequantised weights up to
//! summation order. Rows of `W` are split across rayon threads (a few large chunks per thread
//! for one input row, 16-row tasks for more); each block is dequantised once into registers
//! and reused for every input row. On x86-64 the inner loops use AVX-512 or AVX2+FMA
//! intrinsics, whichever the CPU has (detected at run time); elsewhere a portable loop.
//!
//! With 8-bit inputs ([`crate::WeightMode::Int8`]) `x` is first quantised per block of 32 as
//! llama.cpp quantises activations (`x ≈ d·q`, `q` in -127..=127), and each block's dot product
//! is an integer one on the CPU's AVX512-VNNI units (`vpdpbusd`), scaled once; the `Q4_1`
//! minimum and the `Q4_0` offset still multiply the exact f32 block sums of `x`.

use rayon::prelude::*;

use crate::quant::{GgmlType, dequantize_block, dequantize_row};
use crate::weights::WeightMatrix;

/// Whether [`matmul_quantized`] has a kernel for this weight type.
pub fn has_kernel(dtype: GgmlType) -> bool {
    matches!(
        dtype,
        GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::F32
    )
}

/// Dot products of one weight row with `m <= 8` input rows (`x` is `[m, cols]`), portable version.
fn row_dots_portable(
    dtype: GgmlType,
    row: &[u8],
    bb: usize,
    x: &[f32],
    cols: usize,
    out: &mut [f32],
) {
    let mut acc = [[0.0f32; 8]; 8];
    let m = out.len();
    let mut w = [0.0f32; 32];
    for (bi, b) in row.chunks_exact(bb).enumerate() {
        dequantize_block(dtype, b, &mut w);
        for (r, a) in acc.iter_mut().enumerate().take(m.min(8)) {
            let xs = &x[r * cols + bi * 32..r * cols + bi * 32 + 32];
            for (k, lane) in a.iter_mut().enumerate() {
                *lane += w[k] * xs[k]
                    + w[k + 8] * xs[k + 8]
                    + w[k + 16] * xs[k + 16]
                    + w[k + 24] * xs[k + 24];
            }
        }
    }
    for (o, a) in out.iter_mut().zip(&acc) {
        *o = a.iter().sum();
    }
}

#[cfg(target_arch = "x86_64")]
// Intrinsics over raw block pointers; bounds are established by the safe caller.
#[allow(unsafe_code, unsafe_op_in_unsafe_fn)]
mod avx2 {
    use std::arch::x86_64::*;

    use crate::quant::GgmlType;

    /// # Safety
    /// The CPU must support AVX2, FMA and F16C; `row` holds whole blocks of `bb` bytes, `x`
    /// holds `out.len()` rows of `cols` floats, `xsum` their per-block sums (`[rows, blocks]`),
    /// `out.len() == M`. `M` is a compile-time tile height so the accumulators live in
    /// registers (a run-time 32-row array cost a 1 KiB memset per weight row).
    ///
    /// A block's weights are `q·d + c` (`c` = `-8d` for `Q4_0`, the stored minimum for
    /// `Q4_1`, 0 for `Q8_0`), so its dot product with `x` is `d·(q·x) + c·Σx`: the integer
    /// codes are only converted to float, never scaled, and `Σx` is shared by every row.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn row_dots<const M: usize>(
        dtype: GgmlType,
        row: &[u8],
        bb: usize,
        x: &[f32],
        xsum: &[f32],
        cols: usize,
        out: &mut [f32],
    ) {
        let nb = row.len() / bb;
        let mut acc = [_mm256_setzero_ps(); M];
        let mut offs = [0.0f32; M];
        for bi in 0..nb {
            let b = row.as_ptr().add(bi * bb);
            let (d, c) = scale_and_offset(dtype, b);
            let q = match dtype {
                GgmlType::Q8_0 => {
                    let p = b.add(2);
                    let mut q = [_mm256_setzero_ps(); 4];
                    for (k, qk) in q.iter_mut().enumerate() {
                        let bytes = _mm_loadl_epi64(p.add(8 * k) as *const __m128i);
                        *qk = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes));
                    }
                    q
                }
                GgmlType::Q4_0 => nibbles(b.add(2)),
                _ => nibbles(b.add(4)),
            };
            let dv = _mm256_set1_ps(d);
            for r in 0..M {
                let xs = x.as_ptr().add(r * cols + bi * 32);
                let mut s = _mm256_mul_ps(q[0], _mm256_loadu_ps(xs));
                s = _mm256_fmadd_ps(q[1], _mm256_loadu_ps(xs.add(8)), s);
                s = _mm256_fmadd_ps(q[2], _mm256_loadu_ps(xs.add(16)), s);
                s = _mm256_fmadd_ps(q[3], _mm256_loadu_ps(xs.add(24)), s);
                acc[r] = _mm256_fmadd_ps(dv, s, acc[r]);
                offs[r] += c * *xsum.get_unchecked(r * nb + bi);
            }
        }
        finish(&acc, &offs, out);
    }

    /// A block's scale `d` (f16 at its start) and the constant `c` its weights add (`q·d + c`):
    /// 0 for `Q8_0`, `-8d` for `Q4_0`, the stored minimum (the second f16) for `Q4_1`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn scale_and_offset(dtype: GgmlType, b: *const u8) -> (f32, f32) {
        let scales = _mm_cvtph_ps(_mm_cvtsi32_si128((b as *const i32).read_unaligned()));
        let d = _mm_cvtss_f32(scales);
        let c = match dtype {
            GgmlType::Q8_0 => 0.0,
            GgmlType::Q4_0 => -8.0 * d,
            _ => _mm_cvtss_f32(_mm_shuffle_ps(scales, scales, 1)),
        };
        (d, c)
    }

    /// `out[r]` = the lanes of `acc[r]` summed, plus `offs[r]`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn finish<const M: usize>(
        acc: &[__m256; M],
        offs: &[f32; M],
        out: &mut [f32],
    ) {
        for r in 0..M {
            let mut lanes = [0.0f32; 8];
            _mm256_storeu_ps(lanes.as_mut_ptr(), acc[r]);
            out[r] = lanes.iter().sum::<f32>() + offs[r];
        }
    }

    /// The 32 4-bit codes at `p` (low nibbles are values 0..16, high nibbles 16..32) as floats.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn nibbles(p: *const u8) -> [__m256; 4] {
        let bytes = _mm_loadu_si128(p as *const __m128i);
        let lo = _mm_and_si128(bytes, _mm_set1_epi8(15));
        let hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), _mm_set1_epi8(15));
        [
            _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo)),
            _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8))),
            _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi)),
            _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8))),
        ]
    }

    pub fn available() -> bool {
        is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    }
}

/// [`avx2::row_dots`] sixteen lanes wide: a block's 32 codes in two registers, two
/// multiply-adds per block and input row instead of four.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code, unsafe_op_in_unsafe_fn)]
mod avx512 {
    use std::arch::x86_64::*;

    use super::avx2::scale_and_offset;
    use crate::quant::GgmlType;

    /// # Safety
    /// The CPU must support AVX-512F, AVX2, FMA and F16C; the slices as [`super::avx2::row_dots`].
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    pub unsafe fn row_dots<const M: usize>(
        dtype: GgmlType,
        row: &[u8],
        bb: usize,
        x: &[f32],
        xsum: &[f32],
        cols: usize,
        out: &mut [f32],
    ) {
        let nb = row.len() / bb;
        let mut acc = [_mm512_setzero_ps(); M];
        let mut offs = [0.0f32; M];
        for bi in 0..nb {
            let b = row.as_ptr().add(bi * bb);
            let (d, c) = scale_and_offset(dtype, b);
            let [q0, q1] = match dtype {
                GgmlType::Q8_0 => {
                    let p = b.add(2);
                    let codes = |at: usize| {
                        let bytes = _mm_loadu_si128(p.add(at) as *const __m128i);
                        _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(bytes))
                    };
                    [codes(0), codes(16)]
                }
                GgmlType::Q4_0 => nibbles(b.add(2)),
                _ => nibbles(b.add(4)),
            };
            let dv = _mm512_set1_ps(d);
            for r in 0..M {
                let xs = x.as_ptr().add(r * cols + bi * 32);
                let s = _mm512_mul_ps(q0, _mm512_loadu_ps(xs));
                let s = _mm512_fmadd_ps(q1, _mm512_loadu_ps(xs.add(16)), s);
                acc[r] = _mm512_fmadd_ps(dv, s, acc[r]);
                offs[r] += c * *xsum.get_unchecked(r * nb + bi);
            }
        }
        for r in 0..M {
            out[r] = _mm512_reduce_add_ps(acc[r]) + offs[r];
        }
    }

    /// The 32 4-bit codes at `p` as floats: the low nibbles (values 0..16), then the high.
    #[target_feature(enable = "avx512f")]
    unsafe fn nibbles(p: *const u8) -> [__m512; 2] {
        let bytes = _mm_loadu_si128(p as *const __m128i);
        let lo = _mm_and_si128(bytes, _mm_set1_epi8(15));
        let hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), _mm_set1_epi8(15));
        [
            _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(lo)),
            _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(hi)),
        ]
    }

    pub fn available() -> bool {
        super::avx2::available() && is_x86_feature_detected!("avx512f")
    }
}

/// Input rows quantised to 8 bits per block of 32, as llama.cpp's `Q8` activations.
struct Q8Rows {
    /// `[m, cols]` codes in -127..=127.
    q: Vec<i8>,
    /// `[m, blocks]` scales: `x ≈ d·q`.
    d: Vec<f32>,
    /// `[m, blocks]` sums of each block's codes.
    qsum: Vec<i32>,
}

/// Quantises `x` (rows of whole blocks of 32) to [`Q8Rows`]: per block `d = max|x| / 127`,
/// `q = round(x / d)`.
fn quantize_q8(x: &[f32]) -> Q8Rows {
    let nb = x.len() / 32;
    let mut rows = Q8Rows {
        q: vec![0; x.len()],
        d: vec![0.0; nb],
        qsum: vec![0; nb],
    };
    for (bi, (xb, qb)) in x
        .chunks_exact(32)
        .zip(rows.q.chunks_exact_mut(32))
        .enumerate()
    {
        let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d > 0.0 { 1.0 / d } else { 0.0 };
        let mut sum = 0i32;
        for (q, &v) in qb.iter_mut().zip(xb) {
            // |v·id| <= 127 up to rounding; the clamp keeps a rounding excess in range.
            *q = (v * id).round().clamp(-127.0, 127.0) as i8;
            sum += *q as i32;
        }
        rows.d[bi] = d;
        rows.qsum[bi] = sum;
    }
    rows
}

/// [`row_dots_portable`] on 8-bit inputs: the reference of the VNNI kernel (integer block dot
/// products, scaled by both scales, plus the f32 offset term), and the kernel where there is
/// no VNNI code.
#[allow(clippy::too_many_arguments)]
#[cfg_attr(all(target_arch = "x86_64", not(test)), allow(dead_code))]
fn row_dots_q8_portable(
    dtype: GgmlType,
    row: &[u8],
    bb: usize,
    xq: &Q8Rows,
    xsum: &[f32],
    r0: usize,
    cols: usize,
    out: &mut [f32],
) {
    let nb = cols / 32;
    for (k, o) in out.iter_mut().enumerate() {
        let r = r0 + k;
        let mut acc = 0.0f32;
        for (bi, b) in row.chunks_exact(bb).enumerate() {
            // Integer codes and the block's scale and offset, exactly as the kernel reads them.
            let d = crate::quant::f16_at(b, 0);
            let (c, codes): (f32, [i32; 32]) = match dtype {
                GgmlType::Q8_0 => (0.0, std::array::from_fn(|i| b[2 + i] as i8 as i32)),
                GgmlType::Q4_0 => (-8.0 * d, std::array::from_fn(|i| nibble(&b[2..], i))),
                _ => (
                    crate::quant::f16_at(b, 2),
                    std::array::from_fn(|i| nibble(&b[4..], i)),
                ),
            };
            let qs = &xq.q[r * cols + bi * 32..r * cols + bi * 32 + 32];
            let dot: i32 = codes.iter().zip(qs).map(|(&a, &q)| a * q as i32).sum();
            acc += d * xq.d[r * nb + bi] * dot as f32 + c * xsum[r * nb + bi];
        }
        *o = acc;
    }
}

/// The `i`-th 4-bit code of the 16 bytes at `q` (low nibbles first, then high nibbles).
#[cfg_attr(all(target_arch = "x86_64", not(test)), allow(dead_code))]
fn nibble(q: &[u8], i: usize) -> i32 {
    (if i < 16 { q[i] & 15 } else { q[i - 16] >> 4 }) as i32
}

#[cfg(target_arch = "x86_64")]
// Intrinsics over raw block pointers; bounds are established by the safe caller.
#[allow(unsafe_code, unsafe_op_in_unsafe_fn)]
mod vnni {
    use std::arch::x86_64::*;

    use super::avx2::{finish, scale_and_offset};
    use crate::quant::GgmlType;

    /// Dot products of one weight row with `M` input rows quantised to 8 bits.
    ///
    /// # Safety
    /// The CPU must support AVX512-VNNI, AVX512VL, AVX2 and F16C; `row` holds whole blocks of
    /// `bb` bytes; `q` holds `M` rows of `cols` codes, `d`, `qsum` and `xsum` their per-block
    /// scales, code sums and f32 sums (`[M, blocks]`); `out.len() == M`.
    ///
    /// `vpdpbusd` multiplies unsigned by signed bytes: 4-bit codes are unsigned already, `Q8_0`
    /// codes are shifted by 128 (`q + 128`) and `128·Σq_x` taken back off in integers.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512vnni,avx512vl,avx2,fma,f16c")]
    pub unsafe fn row_dots<const M: usize>(
        dtype: GgmlType,
        row: &[u8],
        bb: usize,
        q: &[i8],
        d: &[f32],
        qsum: &[i32],
        xsum: &[f32],
        cols: usize,
        out: &mut [f32],
    ) {
        let nb = row.len() / bb;
        let mut acc = [_mm256_setzero_ps(); M];
        let mut offs = [0.0f32; M];
        let zero = _mm256_setzero_si256();
        for bi in 0..nb {
            let b = row.as_ptr().add(bi * bb);
            let (dw, c) = scale_and_offset(dtype, b);
            let w = match dtype {
                GgmlType::Q8_0 => {
                    let w = _mm256_loadu_si256(b.add(2) as *const __m256i);
                    _mm256_xor_si256(w, _mm256_set1_epi8(-128))
                }
                GgmlType::Q4_0 => nibbles(b.add(2)),
                _ => nibbles(b.add(4)),
            };
            for r in 0..M {
                let k = r * nb + bi;
                let xv = _mm256_loadu_si256(q.as_ptr().add(r * cols + bi * 32) as *const __m256i);
                let mut s = _mm256_dpbusd_epi32(zero, w, xv);
                if dtype == GgmlType::Q8_0 {
                    let shift = _mm_cvtsi32_si128(128 * *qsum.get_unchecked(k));
                    s = _mm256_sub_epi32(s, _mm256_zextsi128_si256(shift));
                }
                let scale = _mm256_set1_ps(dw * *d.get_unchecked(k));
                acc[r] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(s), acc[r]);
                offs[r] += c * *xsum.get_unchecked(k);
            }
        }
        finish(&acc, &offs, out);
    }

    /// The 32 4-bit codes at `p` as bytes: low nibbles (values 0..16), then high (16..32).
    #[target_feature(enable = "avx2")]
    unsafe fn nibbles(p: *const u8) -> __m256i {
        let bytes = _mm_loadu_si128(p as *const __m128i);
        let lo = _mm_and_si128(bytes, _mm_set1_epi8(15));
        let hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), _mm_set1_epi8(15));
        _mm256_set_m128i(hi, lo)
    }

    pub fn available() -> bool {
        super::avx2::available()
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512vnni")
            && is_x86_feature_detected!("avx512vl")
    }
}

/// Whether decode steps can run on 8-bit inputs on this CPU ([`crate::WeightMode::Int8`]):
/// AVX512-VNNI with AVX512VL, detected once at run time.
pub fn int8_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVAILABLE.get_or_init(vnni::available)
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The widest f32-input kernel this CPU runs, detected once; ordered narrowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Simd {
    Portable,
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    Avx2,
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    Avx512,
}

impl Simd {
    fn detect() -> Self {
        static LEVEL: std::sync::OnceLock<Simd> = std::sync::OnceLock::new();
        *LEVEL.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            {
                if avx512::available() {
                    return Simd::Avx512;
                }
                if avx2::available() {
                    return Simd::Avx2;
                }
            }
            Simd::Portable
        })
    }
}

#[allow(clippy::too_many_arguments)]
fn row_dots(
    dtype: GgmlType,
    row: &[u8],
    bb: usize,
    x: &[f32],
    xsum: &[f32],
    cols: usize,
    out: &mut [f32],
    simd: Simd,
) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `simd` names a level no wider than `Simd::detect()` found (callers pass it or a
    // narrower one); slice sizes are established by the caller (`matmul_quantized`).
    #[allow(unsafe_code)]
    unsafe {
        match (simd, out.len()) {
            (Simd::Avx512, 8) => return avx512::row_dots::<8>(dtype, row, bb, x, xsum, cols, out),
            (Simd::Avx512, 4) => return avx512::row_dots::<4>(dtype, row, bb, x, xsum, cols, out),
            (Simd::Avx512, 2) => return avx512::row_dots::<2>(dtype, row, bb, x, xsum, cols, out),
            (Simd::Avx512, _) => return avx512::row_dots::<1>(dtype, row, bb, x, xsum, cols, out),
            (Simd::Avx2, 8) => return avx2::row_dots::<8>(dtype, row, bb, x, xsum, cols, out),
            (Simd::Avx2, 4) => return avx2::row_dots::<4>(dtype, row, bb, x, xsum, cols, out),
            (Simd::Avx2, 2) => return avx2::row_dots::<2>(dtype, row, bb, x, xsum, cols, out),
            (Simd::Avx2, _) => return avx2::row_dots::<1>(dtype, row, bb, x, xsum, cols, out),
            (Simd::Portable, _) => {}
        }
    }
    let _ = (simd, xsum);
    row_dots_portable(dtype, row, bb, x, cols, out);
}

/// `y[i, r] = Σ_c x[i, c] · W[r, c]` for `x: [m, W.cols]`, returning `y: [m, W.rows]`.
/// With `int8` (and AVX512-VNNI here, [`int8_available`]) `x` is quantised to 8 bits per block
/// of 32 first and the block dot products are integer ones; otherwise f32 throughout.
///
/// # Shapes
/// - `x`: `[m, cols]` row-major
/// - returns `[m, rows]` row-major
///
/// # Panics
/// Only on internal invariant violations: `x.len()` must be `m * w.cols` (checked by callers
/// inside this crate) and `w` must be a type [`has_kernel`] accepts.
pub(crate) fn matmul_quantized(w: &WeightMatrix, x: &[f32], m: usize, int8: bool) -> Vec<f32> {
    assert_eq!(x.len(), m * w.cols, "matmul_quantized: input size");
    let rows = w.rows;
    let mut y = vec![0.0f32; m * rows];
    if w.dtype == GgmlType::F32 {
        // Rare (HF checkpoints use the dense path); keep it simple.
        let wf = w.to_f32().unwrap_or_default();
        for i in 0..m {
            for r in 0..rows {
                y[i * rows + r] = wf[r * w.cols..(r + 1) * w.cols]
                    .iter()
                    .zip(&x[i * w.cols..(i + 1) * w.cols])
                    .map(|(a, b)| a * b)
                    .sum();
            }
        }
        return y;
    }
    let bb = w.dtype.block_bytes();
    let rb = w.row_bytes();
    let simd = Simd::detect();
    let nb = w.cols / 32;
    // Per-block sums of the inputs, shared by every weight row (see `avx2::row_dots`).
    let xsum: Vec<f32> = x.chunks_exact(32).map(|c| c.iter().sum()).collect();
    let q8 = (int8 && int8_available()).then(|| quantize_q8(x));
    // The dot products of one weight row with input rows `i0..i1` (a tile of 8, 4, 2 or 1).
    let dots = |row: &[u8], i0: usize, i1: usize, out: &mut [f32]| match &q8 {
        #[cfg(target_arch = "x86_64")]
        Some(q) => {
            let (b0, b1) = (i0 * nb, i1 * nb);
            let args = (
                &q.q[i0 * w.cols..i1 * w.cols],
                &q.d[b0..b1],
                &q.qsum[b0..b1],
                &xsum[b0..b1],
            );
            // SAFETY: `q8` is only built when `int8_available()` said so; slice sizes follow
            // from `x.len() == m * cols` and the tile bounds.
            #[allow(unsafe_code)]
            unsafe {
                match out.len() {
                    8 => vnni::row_dots::<8>(
                        w.dtype, row, bb, args.0, args.1, args.2, args.3, w.cols, out,
                    ),
                    4 => vnni::row_dots::<4>(
                        w.dtype, row, bb, args.0, args.1, args.2, args.3, w.cols, out,
                    ),
                    2 => vnni::row_dots::<2>(
                        w.dtype, row, bb, args.0, args.1, args.2, args.3, w.cols, out,
                    ),
                    _ => vnni::row_dots::<1>(
                        w.dtype, row, bb, args.0, args.1, args.2, args.3, w.cols, out,
                    ),
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        Some(q) => row_dots_q8_portable(w.dtype, row, bb, q, &xsum, i0, w.cols, out),
        None => row_dots(
            w.dtype,
            row,
            bb,
            &x[i0 * w.cols..i1 * w.cols],
            &xsum[i0 * nb..i1 * nb],
            w.cols,
            out,
            simd,
        ),
    };
    if m == 1 {
        // A decode step's product: a few large chunks of weight rows per thread, written in
        // place (a 576-row product in 16-row tasks spent as much on scheduling as on the dots).
        let per_task = rows.div_ceil(4 * rayon::current_num_threads()).max(16);
        y.par_chunks_mut(per_task).enumerate().for_each(|(c, out)| {
            let r0 = c * per_task;
            for (k, o) in out.iter_mut().enumerate() {
                let r = r0 + k;
                dots(
                    &w.bytes[r * rb..(r + 1) * rb],
                    0,
                    1,
                    std::slice::from_mut(o),
                );
            }
        });
        return y;
    }
    // Weight rows in chunks (one rayon task each); input rows in tiles of up to 32.
    const ROWS_PER_TASK: usize = 16;
    let chunks: Vec<(usize, Vec<f32>)> = (0..rows.div_ceil(ROWS_PER_TASK))
        .into_par_iter()
        .map(|c| {
            let r0 = c * ROWS_PER_TASK;
            let r1 = (r0 + ROWS_PER_TASK).min(rows);
            let mut part = vec![0.0f32; (r1 - r0) * m];
            for r in r0..r1 {
                let row = &w.bytes[r * rb..(r + 1) * rb];
                // Input rows in tiles of 8, 4, 2, 1 (the kernel's compile-time heights).
                let mut i0 = 0;
                while i0 < m {
                    let tile = [8, 4, 2, 1].into_iter().find(|&t| t <= m - i0).unwrap_or(1);
                    let i1 = i0 + tile;
                    dots(row, i0, i1, &mut part[(r - r0) * m + i0..(r - r0) * m + i1]);
                    i0 = i1;
                }
            }
            (r0, part)
        })
        .collect();
    for (r0, part) in chunks {
        let n = part.len() / m.max(1);
        for k in 0..n {
            for i in 0..m {
                y[i * rows + r0 + k] = part[k * m + i];
            }
        }
    }
    y
}

/// Dequantises selected rows of `w` (embedding lookup).
pub(crate) fn gather_rows(w: &WeightMatrix, ids: &[u32]) -> crate::Result<Vec<f32>> {
    let rb = w.row_bytes();
    let mut out = vec![0.0f32; ids.len() * w.cols];
    for (o, &id) in out.chunks_exact_mut(w.cols).zip(ids) {
        let r = id as usize;
        if r >= w.rows {
            return Err(crate::SlmError::InvalidRequest {
                index: 0,
                reason: format!("token id {id} outside the vocabulary of {} rows", w.rows),
            });
        }
        dequantize_row(w.dtype, &w.bytes[r * rb..(r + 1) * rb], o, &w.name)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::f16;

    fn random_matrix(dtype: GgmlType, rows: usize, cols: usize, seed: u32) -> WeightMatrix {
        let mut s = seed;
        let mut next = || {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (s >> 8) as u8
        };
        let nb = cols / 32;
        let header = if dtype == GgmlType::Q4_1 { 4 } else { 2 };
        let mut bytes = Vec::new();
        for _ in 0..rows * nb {
            bytes.extend(f16::from_f32(0.01 + (next() as f32) / 5000.0).to_le_bytes());
            if dtype == GgmlType::Q4_1 {
                bytes.extend(f16::from_f32(-0.05).to_le_bytes());
            }
            for _ in header..dtype.block_bytes() {
                bytes.push(next());
            }
        }
        WeightMatrix {
            name: "w".into(),
            dtype,
            rows,
            cols,
            bytes,
        }
    }

    /// Every f32-input kernel this CPU runs (portable, AVX2, AVX-512) at every tile height,
    /// and `matmul_quantized` on the widest, against an f32 product on the dequantised weights.
    #[test]
    fn kernels_match_dequantised_matmul() {
        let detected = Simd::detect();
        let levels: Vec<Simd> = [Simd::Portable, Simd::Avx2, Simd::Avx512]
            .into_iter()
            .filter(|&l| l <= detected)
            .collect();
        for dtype in [GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1] {
            for m in [1, 3, 33] {
                let (rows, cols) = (37, 96);
                let w = random_matrix(dtype, rows, cols, 7);
                let x: Vec<f32> = (0..m * cols)
                    .map(|i| ((i * 7919) % 23) as f32 / 11.0 - 1.0)
                    .collect();
                let wf = w.to_f32().unwrap();
                let want = |i: usize, r: usize| -> f32 {
                    (0..cols).map(|c| wf[r * cols + c] * x[i * cols + c]).sum()
                };
                let close = |want: f32, got: f32| (want - got).abs() <= 1e-4 * (1.0 + want.abs());
                let y = matmul_quantized(&w, &x, m, false);
                for i in 0..m {
                    for r in 0..rows {
                        let (want, got) = (want(i, r), y[i * rows + r]);
                        assert!(
                            close(want, got),
                            "{dtype} m={m} {detected:?}: {want} vs {got}"
                        );
                    }
                }
                let xsum: Vec<f32> = x.chunks_exact(32).map(|c| c.iter().sum()).collect();
                let nb = cols / 32;
                for &level in &levels {
                    for tile in [1, 2, 4, 8].into_iter().filter(|&t| t <= m) {
                        for r in [0, rows - 1] {
                            let row = &w.bytes[r * w.row_bytes()..(r + 1) * w.row_bytes()];
                            let mut out = vec![0.0; tile];
                            let (xs, sums) = (&x[..tile * cols], &xsum[..tile * nb]);
                            let bb = dtype.block_bytes();
                            row_dots(dtype, row, bb, xs, sums, cols, &mut out, level);
                            for (i, &got) in out.iter().enumerate() {
                                let want = want(i, r);
                                assert!(
                                    close(want, got),
                                    "{dtype} {level:?} tile {tile} row {r}: {want} vs {got}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    /// 8-bit inputs: the VNNI kernel (where the CPU has it; else the f32 path, which the first
    /// check then also passes) against the scalar integer reference, and against f32 within
    /// the inputs' quantisation error.
    #[test]
    fn int8_kernels_match_their_reference_and_stay_near_f32() {
        for dtype in [GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1] {
            for m in [1, 3, 9] {
                let (rows, cols) = (37, 96);
                let w = random_matrix(dtype, rows, cols, 11);
                let x: Vec<f32> = (0..m * cols)
                    .map(|i| ((i * 7919) % 29) as f32 / 7.0 - 2.0 + (i % 5) as f32 * 0.013)
                    .collect();
                let wf = w.to_f32().unwrap();
                let y8 = matmul_quantized(&w, &x, m, true);
                let q = quantize_q8(&x);
                let xsum: Vec<f32> = x.chunks_exact(32).map(|c| c.iter().sum()).collect();
                for r in 0..rows {
                    let row = &w.bytes[r * w.row_bytes()..(r + 1) * w.row_bytes()];
                    let mut want = vec![0.0; m];
                    row_dots_q8_portable(
                        dtype,
                        row,
                        dtype.block_bytes(),
                        &q,
                        &xsum,
                        0,
                        cols,
                        &mut want,
                    );
                    for i in 0..m {
                        let got = y8[i * rows + r];
                        let exact: f32 =
                            (0..cols).map(|c| wf[r * cols + c] * x[i * cols + c]).sum();
                        let scale: f32 = (0..cols)
                            .map(|c| (wf[r * cols + c] * x[i * cols + c]).abs())
                            .sum();
                        if int8_available() {
                            assert!(
                                (want[i] - got).abs() <= 1e-4 * (1.0 + want[i].abs()),
                                "{dtype} m={m} row {r}: {} vs {got}",
                                want[i]
                            );
                        }
                        assert!(
                            (exact - got).abs() <= 1e-2 * scale,
                            "{dtype} m={m} row {r}: f32 {exact} vs 8-bit {got}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn q8_codes_round_to_the_block_maximum() {
        let mut x = vec![0.0f32; 64];
        x[3] = -2.54;
        x[5] = 1.0;
        x[40] = 0.5;
        let q = quantize_q8(&x);
        assert_eq!(q.q[3], -127);
        assert_eq!(q.q[5], 50);
        assert!((q.d[0] - 0.02).abs() < 1e-7);
        assert_eq!(q.q[40], 127);
        assert_eq!(q.qsum, [-77, 127]);
    }
}
