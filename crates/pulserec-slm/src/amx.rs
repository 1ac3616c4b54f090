//! Matrix products in bfloat16 on Intel AMX (Advanced Matrix Extensions) or, on CPUs without
//! it, AVX512-BF16's `vdpbf16ps` (AMD Zen 4 and later, Intel Cooper Lake), detected at run time.
//!
//! `y = x · W` with `W` packed once into AMX's pair-interleaved tiles (`PackedBf16::pack`) and
//! `x` rounded to bf16 per call; the tile unit (or `vdpbf16ps`, 16 columns per instruction)
//! multiplies bf16 pairs and accumulates in f32.
//! Rounding both operands to bf16 (8 significant bits, relative error up to 2^-9 each) moves a
//! product of SmolLM2's size by a few 1e-3 relative, so this path is opt-in
//! ([`crate::WeightMode::Bf16`]) and checked against f32 (`tests/bf16.rs`).
//!
//! Tiles are 16 rows x 64 bytes: an A tile holds 16 rows of 32 bf16 (a 32-wide slice of `k`), a B
//! tile 16 pairs of rows of `W` for 16 output columns (element `(r, 2c + e)` is
//! `W[2r + e, c]`), a C tile 16 x 16 f32. One step of the kernel takes two A tiles (32 rows) and
//! two B tiles (32 columns) into four C tiles; the output columns are split between threads.
//! A row of a B tile is also the right-hand operand of `vdpbf16ps` for 16 columns and one pair
//! of `k`: the AVX512-BF16 kernel reads the same packing, 8 rows of `x` by 32 columns at a time.
//!
//! Only x86-64 Linux: AMX's tile data needs the kernel's permission (`arch_prctl`), asked once.

// The tile instructions have no stable intrinsics: inline assembly, a system call and a buffer
// shared between threads, each with its SAFETY argument.
#![allow(unsafe_code)]

use std::sync::OnceLock;

use rayon::prelude::*;

/// bf16 values per tile row (64 bytes): the `k` step of one tile product.
const K_STEP: usize = 32;
/// Output columns per C tile.
const TILE_COLS: usize = 16;
/// Output columns per panel: two C tiles side by side.
const PANEL: usize = 2 * TILE_COLS;
/// Rows per tile.
const TILE_ROWS: usize = 16;
/// bf16 values per packed B tile (16 rows x 32).
const B_TILE: usize = TILE_ROWS * K_STEP;

/// Whether this CPU and kernel run AMX bf16 tile products (checked once: CPUID's AMX-TILE and
/// AMX-BF16 bits, then the kernel's permission for tile data).
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let ok = detect();
        tracing::debug!(amx = ok, "AMX bf16 tiles");
        ok
    })
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn detect() -> bool {
    use std::arch::x86_64::__cpuid_count;
    /// `arch_prctl` operation: ask for permission to use an extended state component.
    const ARCH_REQ_XCOMP_PERM: libc::c_ulong = 0x1023;
    /// The extended state component of AMX's tile data.
    const XFEATURE_XTILEDATA: libc::c_ulong = 18;
    #[allow(unused_unsafe)] // `__cpuid_count` is a safe function in newer Rust
    let leaf7 = unsafe { __cpuid_count(7, 0) };
    let amx_bf16 = leaf7.edx & (1 << 22) != 0;
    let amx_tile = leaf7.edx & (1 << 24) != 0;
    if !(amx_bf16 && amx_tile) {
        return false;
    }
    // SAFETY: a plain system call with integer arguments; it only changes this process's
    // permission set (Linux 5.16 and later; older kernels answer with an error).
    let granted = unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        )
    };
    granted == 0
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn detect() -> bool {
    false
}

/// Whether bf16 products run on this CPU at all: AMX ([`available`]), else AVX512-BF16 (with
/// AVX-512F/BW), detected once.
pub fn bf16_available() -> bool {
    available() || avx512_bf16()
}

/// AVX512-BF16's `vdpbf16ps` with AVX-512F and BW.
fn avx512_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AVAILABLE: OnceLock<bool> = OnceLock::new();
        *AVAILABLE.get_or_init(|| {
            std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512bf16")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Rounds an f32 to bf16, to nearest even (NaN stays NaN). Branch-free, so that loops over it
/// vectorise.
#[inline(always)]
pub(crate) fn bf16_bits(x: f32) -> u16 {
    let bits = x.to_bits();
    let rounded = bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) >> 16;
    let quiet_nan = (bits >> 16) | 0x40;
    let is_nan = (bits & 0x7fff_ffff) > 0x7f80_0000;
    (if is_nan { quiet_nan } else { rounded }) as u16
}

/// `out[i] = bf16_bits(x[i])`: 16 lanes at a time where the CPU has AVX-512 (chosen at run
/// time; every CPU with AMX has it), split across rayon's threads for long slices (the inputs of
/// training-sized products: a 1,024 x 1,536 activation is 1.5 M values).
fn to_bf16(x: &[f32], out: &mut [u16]) {
    const CHUNK: usize = 1 << 15;
    #[inline(always)]
    fn convert(x: &[f32], out: &mut [u16]) {
        out.iter_mut().zip(x).for_each(|(o, &v)| *o = bf16_bits(v));
    }
    /// # Safety
    /// The CPU must have AVX-512F and AVX-512BW.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn convert_avx512(x: &[f32], out: &mut [u16]) {
        convert(x, out);
    }
    let run = |(x, out): (&[f32], &mut [u16])| {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512bw") {
            // SAFETY: the features were just detected.
            return unsafe { convert_avx512(x, out) };
        }
        convert(x, out)
    };
    if x.len() < 2 * CHUNK {
        run((x, out));
    } else {
        x.par_chunks(CHUNK)
            .zip(out.par_chunks_mut(CHUNK))
            .for_each(run);
    }
}

/// A weight matrix `W: [k, n]` in bf16, packed as AMX B tiles.
#[derive(Clone)]
pub(crate) struct PackedBf16 {
    k: usize,
    n: usize,
    /// Panels of 32 columns; in each, `k / 32` steps of two B tiles.
    data: Vec<u16>,
}

impl std::fmt::Debug for PackedBf16 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedBf16")
            .field("k", &self.k)
            .field("n", &self.n)
            .finish()
    }
}

impl PackedBf16 {
    /// Packs `W = wᵀ` from `w: [n, k]` row-major (a linear layer's `[out, in]` weight), or `None`
    /// when the CPU has no bf16 products ([`bf16_available`]) or a dimension is not a multiple of
    /// 32.
    pub(crate) fn pack(w: &[f32], n: usize, k: usize) -> Option<Self> {
        if !bf16_available()
            || !k.is_multiple_of(K_STEP)
            || !n.is_multiple_of(PANEL)
            || w.len() != n * k
        {
            return None;
        }
        let steps = k / K_STEP;
        let mut data = vec![0u16; n * k];
        for (panel, out) in data.chunks_exact_mut(PANEL * k).enumerate() {
            for step in 0..steps {
                for tile in 0..2 {
                    let dst = &mut out[(step * 2 + tile) * B_TILE..][..B_TILE];
                    for r in 0..TILE_ROWS {
                        for c in 0..TILE_COLS {
                            let col = panel * PANEL + tile * TILE_COLS + c;
                            let row = &w[col * k..][..k];
                            for e in 0..2 {
                                let kk = step * K_STEP + 2 * r + e;
                                dst[r * K_STEP + 2 * c + e] = bf16_bits(row[kk]);
                            }
                        }
                    }
                }
            }
        }
        Some(Self { k, n, data })
    }

    /// Output columns (`n` of `W: [k, n]`).
    pub(crate) fn n(&self) -> usize {
        self.n
    }

    /// `x · W` for `x: [m, k]` row-major.
    ///
    /// # Shapes
    /// - `x`: `[m, k]`
    /// - returns `[m, n]`
    pub(crate) fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        let (k, n) = (self.k, self.n);
        assert_eq!(x.len(), m * k, "x must be [m, k]");
        if !available() {
            return self.matmul_avx512(x, m);
        }
        // Rows padded to whole tiles with zeros; their outputs are cut off at the end.
        let padded = m.div_ceil(TILE_ROWS) * TILE_ROWS;
        let mut a = vec![0u16; padded * k];
        to_bf16(x, &mut a[..m * k]);
        // Every value is written by a tile store before it is read.
        let mut y: Vec<f32> = Vec::with_capacity(padded * n);
        let out = SharedOut(y.as_mut_ptr());
        self.for_panel_ranges(|panels| {
            // SAFETY: `available()` held when this was packed; each thread writes only the
            // columns of its own panels, inside `y`'s capacity (`padded` rows of `n`).
            unsafe { self.panels(&a, padded, panels, out) };
        });
        // SAFETY: the threads above stored every panel's columns of every row block, i.e. all
        // `padded * n` values (the panels cover `n`, the row blocks `padded`).
        unsafe { y.set_len(padded * n) };
        y.truncate(m * n);
        y
    }

    /// Computes output columns of `panels` for all `rows` rows of `a` into `out`.
    ///
    /// # Safety
    /// AMX must be available and permitted; `a` holds `rows` (a multiple of 16) rows of `k`
    /// bf16; `out` points to `rows` rows of `n` f32 that no other thread writes in these panels.
    #[cfg(target_arch = "x86_64")]
    unsafe fn panels(
        &self,
        a: &[u16],
        rows: usize,
        panels: std::ops::Range<usize>,
        out: SharedOut,
    ) {
        use std::arch::asm;
        let (k, n) = (self.k, self.n);
        let steps = k / K_STEP;
        let config = TileConfig::all_full();
        let a_stride = k * 2; // bytes per row of `a`
        let c_stride = n * 4; // bytes per row of `out`
        let b_stride = K_STEP * 2; // bytes per row of a packed B tile
        // SAFETY (every block below): the tile configuration is loaded first; loads read inside
        // `a` and this panel's packed tiles, stores write inside `out` (see the function's
        // contract); the tile registers are not used by compiled code.
        unsafe {
            asm!("ldtilecfg [{0}]", in(reg) config.0.as_ptr(), options(nostack, readonly));
            for panel in panels {
                let b = self.data.as_ptr().add(panel * PANEL * k);
                let mut row = 0;
                while row < rows {
                    let two = row + 2 * TILE_ROWS <= rows;
                    let a0 = a.as_ptr().add(row * k);
                    asm!(
                        "tilezero tmm0",
                        "tilezero tmm1",
                        "tilezero tmm2",
                        "tilezero tmm3",
                        options(nostack, nomem)
                    );
                    for step in 0..steps {
                        let ap = a0.add(step * K_STEP);
                        let bp = b.add(step * 2 * B_TILE);
                        asm!(
                            "tileloadd tmm4, [{a} + {sa}*1]",
                            "tileloadd tmm6, [{b0} + {sb}*1]",
                            "tileloadd tmm7, [{b1} + {sb}*1]",
                            "tdpbf16ps tmm0, tmm4, tmm6",
                            "tdpbf16ps tmm1, tmm4, tmm7",
                            a = in(reg) ap,
                            sa = in(reg) a_stride,
                            b0 = in(reg) bp,
                            b1 = in(reg) bp.add(B_TILE),
                            sb = in(reg) b_stride,
                            options(nostack, readonly)
                        );
                        if two {
                            asm!(
                                "tileloadd tmm5, [{a} + {sa}*1]",
                                "tdpbf16ps tmm2, tmm5, tmm6",
                                "tdpbf16ps tmm3, tmm5, tmm7",
                                a = in(reg) ap.add(TILE_ROWS * k),
                                sa = in(reg) a_stride,
                                options(nostack, readonly)
                            );
                        }
                    }
                    let c0 = out.0.add(row * n + panel * PANEL);
                    asm!(
                        "tilestored [{c0} + {sc}*1], tmm0",
                        "tilestored [{c1} + {sc}*1], tmm1",
                        c0 = in(reg) c0,
                        c1 = in(reg) c0.add(TILE_COLS),
                        sc = in(reg) c_stride,
                        options(nostack)
                    );
                    if two {
                        let c2 = c0.add(TILE_ROWS * n);
                        asm!(
                            "tilestored [{c2} + {sc}*1], tmm2",
                            "tilestored [{c3} + {sc}*1], tmm3",
                            c2 = in(reg) c2,
                            c3 = in(reg) c2.add(TILE_COLS),
                            sc = in(reg) c_stride,
                            options(nostack)
                        );
                        row += 2 * TILE_ROWS;
                    } else {
                        row += TILE_ROWS;
                    }
                }
            }
            asm!("tilerelease", options(nostack, nomem));
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    unsafe fn panels(&self, _: &[u16], _: usize, _: std::ops::Range<usize>, _: SharedOut) {
        unreachable!("PackedBf16 is only built where AMX is available")
    }

    /// [`PackedBf16::matmul`] with `vdpbf16ps` (a CPU with AVX512-BF16 and no AMX).
    fn matmul_avx512(&self, x: &[f32], m: usize) -> Vec<f32> {
        let (k, n) = (self.k, self.n);
        let mut a = vec![0u16; m * k];
        to_bf16(x, &mut a);
        let mut y = vec![0.0f32; m * n];
        let out = SharedOut(y.as_mut_ptr());
        self.for_panel_ranges(|panels| {
            for panel in panels {
                // SAFETY: packing succeeded, so `avx512_bf16()` (or AMX, whose CPUs have it)
                // held; each thread writes only its own panels' columns of `y` (`m` rows of
                // `n`), and `a` holds `m` rows of `k`.
                unsafe { self.panel_avx512(&a, m, panel, out) };
            }
        });
        y
    }

    /// Runs `f` on consecutive ranges of the panels (32 output columns each), one range per
    /// rayon thread.
    fn for_panel_ranges(&self, f: impl Fn(std::ops::Range<usize>) + Sync) {
        let panels = self.n / PANEL;
        let threads = rayon::current_num_threads().clamp(1, panels);
        let per_thread = panels.div_ceil(threads);
        (0..threads).into_par_iter().for_each(|t| {
            let range = t * per_thread..((t + 1) * per_thread).min(panels);
            if !range.is_empty() {
                f(range);
            }
        });
    }

    /// One panel's 32 output columns for all `m` rows, 8 rows at a time (then 4, 2, 1).
    ///
    /// # Safety
    /// The CPU must have AVX-512F/BW and AVX512-BF16; `a` holds `m` rows of `k` bf16; `out`
    /// points to `m` rows of `n` f32 whose columns of this panel no other thread writes.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn panel_avx512(&self, a: &[u16], m: usize, panel: usize, out: SharedOut) {
        let mut row = 0;
        while row < m {
            // SAFETY: as the function's contract, for rows `row..row + R <= m`.
            unsafe {
                row += match m - row {
                    8.. => self.block_avx512::<8>(a, row, panel, out),
                    4..=7 => self.block_avx512::<4>(a, row, panel, out),
                    2..=3 => self.block_avx512::<2>(a, row, panel, out),
                    _ => self.block_avx512::<1>(a, row, panel, out),
                };
            }
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    unsafe fn panel_avx512(&self, _: &[u16], _: usize, _: usize, _: SharedOut) {
        unreachable!("PackedBf16 is only built where bf16 products run")
    }

    /// Rows `row..row + R` of one panel; returns `R`.
    ///
    /// # Safety
    /// As [`PackedBf16::panel_avx512`], with `row + R <= m`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    #[inline]
    unsafe fn block_avx512<const R: usize>(
        &self,
        a: &[u16],
        row: usize,
        panel: usize,
        out: SharedOut,
    ) -> usize {
        use std::arch::x86_64::*;
        let (k, n) = (self.k, self.n);
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        // SAFETY: reads stay inside this panel's packing (`k / 32` steps of two tiles of 16
        // rows of 32 bf16) and rows `row..row + R` of `a`; writes inside `out`'s panel columns.
        unsafe {
            let b = self.data.as_ptr().add(panel * PANEL * k);
            // Row `i`'s pairs of `k` as 32-bit words.
            let pairs = a.as_ptr().add(row * k) as *const u32;
            for step in 0..k / K_STEP {
                let tiles = b.add(step * 2 * B_TILE);
                for r in 0..TILE_ROWS {
                    let b0: __m512bh =
                        std::mem::transmute(_mm512_loadu_si512(tiles.add(r * K_STEP) as *const _));
                    let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(
                        tiles.add(B_TILE + r * K_STEP) as *const _,
                    ));
                    let j = step * TILE_ROWS + r;
                    for (i, acc) in acc.iter_mut().enumerate() {
                        let pair = pairs.add(i * k / 2 + j).read_unaligned();
                        let av: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair as i32));
                        acc[0] = _mm512_dpbf16_ps(acc[0], av, b0);
                        acc[1] = _mm512_dpbf16_ps(acc[1], av, b1);
                    }
                }
            }
            for (i, acc) in acc.iter().enumerate() {
                let c = out.0.add((row + i) * n + panel * PANEL);
                _mm512_storeu_ps(c, acc[0]);
                _mm512_storeu_ps(c.add(TILE_COLS), acc[1]);
            }
        }
        R
    }
}

/// The output buffer, written by several threads in disjoint columns.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: threads write disjoint panels of the buffer (`PackedBf16::matmul`).
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

/// AMX's 64-byte tile configuration (palette 1).
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

impl TileConfig {
    /// Eight tiles of 16 rows x 64 bytes.
    fn all_full() -> Self {
        let mut c = [0u8; 64];
        c[0] = 1; // palette
        for t in 0..8 {
            c[16 + 2 * t..18 + 2 * t].copy_from_slice(&64u16.to_le_bytes());
            c[48 + t] = TILE_ROWS as u8;
        }
        Self(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounds_to_nearest_even() {
        assert_eq!(bf16_bits(1.0), 0x3f80);
        assert_eq!(bf16_bits(-2.0), 0xc000);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1).
        assert_eq!(bf16_bits(1.0 + 1.0 / 256.0), 0x3f80);
        // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: the even one is 1 + 2^-6.
        assert_eq!(bf16_bits(1.0 + 3.0 / 256.0), 0x3f82);
        assert!(f32::from_bits((bf16_bits(f32::NAN) as u32) << 16).is_nan());
    }

    /// `x · W` against a product of the same bf16-rounded operands in f64: only the f32
    /// accumulation order differs. Rows that fill two, one and part of a tile.
    #[test]
    fn matmul_matches_rounded_reference() {
        let (k, n) = (96, 64);
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0)
            .collect();
        let Some(packed) = PackedBf16::pack(&w, n, k) else {
            assert!(
                !bf16_available(),
                "bf16 runs here but 96 x 64 was not packed"
            );
            eprintln!("no AMX or AVX512-BF16 on this CPU: nothing to compare");
            return;
        };
        let round = |v: f32| f32::from_bits((bf16_bits(v) as u32) << 16) as f64;
        for m in [1, 5, 16, 33, 48] {
            let x: Vec<f32> = (0..m * k)
                .map(|i| ((i * 13 % 29) as f32 - 14.0) / 7.0)
                .collect();
            let y = packed.matmul(&x, m);
            assert_eq!(y.len(), m * n);
            for i in 0..m {
                for j in 0..n {
                    let want: f64 = (0..k)
                        .map(|kk| round(x[i * k + kk]) * round(w[j * k + kk]))
                        .sum();
                    let got = y[i * n + j] as f64;
                    assert!(
                        (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                        "m {m}, y[{i}, {j}] = {got}, want {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn shapes_that_are_not_whole_tiles_are_not_packed() {
        assert!(PackedBf16::pack(&vec![0.0; 48 * 32], 48, 32).is_none());
        assert!(PackedBf16::pack(&vec![0.0; 32 * 40], 32, 40).is_none());
    }
}
