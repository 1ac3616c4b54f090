//! Training curves as small PNG line plots for the run report.
//!
//! The workspace has `png` but no plotting crate with a bitmap backend (plotters comes in
//! through criterion with its SVG backend only), so this draws the few pixels itself: a frame,
//! light grid lines at quarters, and the curve scaled to fill the frame. The report states the
//! range next to the picture, so the plot needs no text.

use std::path::Path;

const WIDTH: usize = 480;
const HEIGHT: usize = 240;
const MARGIN: usize = 12;
const CURVE: [u8; 3] = [31, 119, 180];
const GRID: [u8; 3] = [225, 225, 225];
const FRAME: [u8; 3] = [0, 0, 0];

/// Why a plot could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// Nothing finite to draw.
    #[error("{path}: no finite value to plot")]
    Empty {
        /// The file.
        path: std::path::PathBuf,
    },
    /// Writing failed.
    #[error("{path}: {message}")]
    Write {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O or PNG error.
        message: String,
    },
}

struct Canvas {
    px: Vec<u8>,
}

impl Canvas {
    fn set(&mut self, x: i64, y: i64, rgb: [u8; 3]) {
        if (0..WIDTH as i64).contains(&x) && (0..HEIGHT as i64).contains(&y) {
            let o = (y as usize * WIDTH + x as usize) * 3;
            self.px[o..o + 3].copy_from_slice(&rgb);
        }
    }

    fn line(&mut self, (x0, y0): (f64, f64), (x1, y1): (f64, f64), rgb: [u8; 3]) {
        let steps = (x1 - x0).abs().max((y1 - y0).abs()).ceil().max(1.0) as usize;
        for s in 0..=steps {
            let t = s as f64 / steps as f64;
            let (x, y) = (x0 + (x1 - x0) * t, y0 + (y1 - y0) * t);
            // Two pixels thick, so the curve reads at a glance.
            self.set(x.round() as i64, y.round() as i64, rgb);
            self.set(x.round() as i64, y.round() as i64 + 1, rgb);
        }
    }
}

/// Draws `values` (e.g. one loss per epoch or per step) left to right; non-finite values are
/// skipped. A single value draws a flat line.
pub fn write_curve_png(path: &Path, values: &[f64]) -> Result<(), PlotError> {
    let finite: Vec<(usize, f64)> = values
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, v)| v.is_finite())
        .collect();
    if finite.is_empty() {
        return Err(PlotError::Empty {
            path: path.to_path_buf(),
        });
    }
    let lo = finite.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let hi = finite.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    let span = (hi - lo).max(1e-12);
    let (w, h) = ((WIDTH - 2 * MARGIN) as f64, (HEIGHT - 2 * MARGIN) as f64);
    let last = (values.len().max(2) - 1) as f64;
    let to_px = |i: usize, v: f64| {
        (
            MARGIN as f64 + i as f64 / last * w,
            MARGIN as f64 + (hi - v) / span * h,
        )
    };
    let mut c = Canvas {
        px: vec![255; WIDTH * HEIGHT * 3],
    };
    let (l, t) = (MARGIN as f64, MARGIN as f64);
    let (r, b) = (l + w, t + h);
    for q in 1..4 {
        let y = t + h * q as f64 / 4.0;
        c.line((l, y), (r, y), GRID);
    }
    for (a, z) in [
        ((l, t), (r, t)),
        ((r, t), (r, b)),
        ((r, b), (l, b)),
        ((l, b), (l, t)),
    ] {
        c.line(a, z, FRAME);
    }
    if finite.len() == 1 {
        let y = t + h / 2.0;
        c.line((l, y), (r, y), CURVE);
    }
    for pair in finite.windows(2) {
        c.line(
            to_px(pair[0].0, pair[0].1),
            to_px(pair[1].0, pair[1].1),
            CURVE,
        );
    }
    let write_err = |e: &dyn std::fmt::Display| PlotError::Write {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let file = std::fs::File::create(path).map_err(|e| write_err(&e))?;
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), WIDTH as u32, HEIGHT as u32);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(|e| write_err(&e))?;
    writer.write_image_data(&c.px).map_err(|e| write_err(&e))?;
    writer.finish().map_err(|e| write_err(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_a_png_and_refuses_nothing_to_draw() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("loss.png");
        write_curve_png(&path, &[3.0, 2.0, f64::NAN, 1.5, 1.4]).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        write_curve_png(&path, &[0.7]).unwrap();
        assert!(matches!(
            write_curve_png(&path, &[f64::NAN]),
            Err(PlotError::Empty { .. })
        ));
    }
}
