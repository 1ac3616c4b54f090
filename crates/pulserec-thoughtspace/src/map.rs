//! The Thought-Space map (the paper's Figure 3): a 2-D PCA of behaviour and rationale
//! embeddings, drawn as a PNG with one panel per state (e.g. before | after training).

use std::path::Path;

use ndarray::{Array1, Array2, Axis};

use crate::error::{Result, ThoughtSpaceError};

/// One panel: row `i` of `behaviour` and of `rationale` belong to the same user.
pub struct MapPanel<'a> {
    /// Behaviour embeddings `[n, dim]`.
    pub behaviour: &'a Array2<f32>,
    /// Rationale embeddings `[n, dim]`.
    pub rationale: &'a Array2<f32>,
}

const PANEL: usize = 420;
const MARGIN: usize = 16;
const BEHAVIOUR: [u8; 3] = [31, 119, 180];
const RATIONALE: [u8; 3] = [255, 127, 14];
const PAIR: [u8; 3] = [205, 205, 205];
const ANCHOR: [u8; 3] = [214, 39, 40];

/// Projects rows onto their top two principal components (power iteration with deflation).
///
/// # Shapes
/// - `x`: `[n, dim]`, output: `[n, 2]`
pub fn pca_2d(x: &Array2<f32>) -> Array2<f32> {
    let (n, dim) = x.dim();
    let mean = x.mean_axis(Axis(0)).unwrap_or_else(|| Array1::zeros(dim));
    let centered = x - &mean;
    let mut cov = centered.t().dot(&centered) / (n.max(2) - 1) as f32;
    let mut out = Array2::<f32>::zeros((n, 2));
    for c in 0..2 {
        // Deterministic start: all ones plus a ramp, so it is not orthogonal to the top axis.
        let mut v = Array1::from_iter((0..dim).map(|i| 1.0 + i as f32 / dim as f32));
        let mut lambda = 0.0;
        for _ in 0..200 {
            let w = cov.dot(&v);
            let norm = w.dot(&w).sqrt();
            if norm < 1e-12 {
                break;
            }
            lambda = norm;
            v = w / norm;
        }
        out.column_mut(c).assign(&centered.dot(&v));
        // Deflate: remove this component before finding the next.
        let vv = v
            .view()
            .insert_axis(Axis(1))
            .dot(&v.view().insert_axis(Axis(0)));
        cov = cov - vv * lambda;
    }
    out
}

/// Draws the panels side by side: behaviour points blue, rationale points orange, a grey line
/// from each behaviour to its own rationale, and the first user's pair in red. Each panel is
/// projected with its own PCA fitted on both sets together.
pub fn write_map_png(path: &Path, panels: &[MapPanel<'_>]) -> Result<()> {
    let width = PANEL * panels.len().max(1);
    let mut img = vec![255u8; width * PANEL * 3];
    for (p, panel) in panels.iter().enumerate() {
        let n = panel.behaviour.nrows();
        if n == 0 || panel.rationale.nrows() != n {
            return Err(ThoughtSpaceError::InvalidInput(format!(
                "map panel {p}: {n} behaviour rows vs {} rationale rows",
                panel.rationale.nrows()
            )));
        }
        let both = ndarray::concatenate(Axis(0), &[panel.behaviour.view(), panel.rationale.view()])
            .map_err(|e| ThoughtSpaceError::InvalidInput(format!("map panel {p}: {e}")))?;
        let xy = pca_2d(&both);
        let (lo, hi) = bounds(&xy);
        let span = ((hi.0 - lo.0).max(hi.1 - lo.1)).max(1e-6);
        let inner = (PANEL - 2 * MARGIN) as f32;
        let to_px = |i: usize| -> (i64, i64) {
            let x = MARGIN as f32 + (xy[[i, 0]] - lo.0) / span * inner;
            let y = MARGIN as f32 + (hi.1 - xy[[i, 1]]) / span * inner;
            ((p * PANEL) as i64 + x as i64, y as i64)
        };
        let mut canvas = Canvas {
            img: &mut img,
            width,
        };
        for i in 0..n {
            canvas.line(to_px(i), to_px(n + i), PAIR);
        }
        for i in 0..n {
            canvas.dot(to_px(i), 2, BEHAVIOUR);
            canvas.dot(to_px(n + i), 2, RATIONALE);
        }
        canvas.line(to_px(0), to_px(n), ANCHOR);
        canvas.dot(to_px(0), 4, ANCHOR);
        canvas.dot(to_px(n), 4, ANCHOR);
        // Panel separator.
        for y in 0..PANEL {
            canvas.set(((p * PANEL) as i64, y as i64), [0, 0, 0]);
        }
    }
    let file = std::fs::File::create(path).map_err(|e| ThoughtSpaceError::io(path, e))?;
    let image_err = |e: png::EncodingError| ThoughtSpaceError::Image {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), width as u32, PANEL as u32);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(image_err)?;
    writer.write_image_data(&img).map_err(image_err)?;
    writer.finish().map_err(image_err)
}

/// Bounding box of the projected points: ((min x, min y), (max x, max y)).
fn bounds(xy: &Array2<f32>) -> ((f32, f32), (f32, f32)) {
    let mut lo = (f32::MAX, f32::MAX);
    let mut hi = (f32::MIN, f32::MIN);
    for row in xy.outer_iter() {
        lo = (lo.0.min(row[0]), lo.1.min(row[1]));
        hi = (hi.0.max(row[0]), hi.1.max(row[1]));
    }
    (lo, hi)
}

struct Canvas<'a> {
    img: &'a mut [u8],
    width: usize,
}

impl Canvas<'_> {
    fn set(&mut self, (x, y): (i64, i64), rgb: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as usize) < self.width && (y as usize) < PANEL {
            let o = (y as usize * self.width + x as usize) * 3;
            self.img[o..o + 3].copy_from_slice(&rgb);
        }
    }

    fn dot(&mut self, (x, y): (i64, i64), r: i64, rgb: [u8; 3]) {
        for dy in -r..=r {
            for dx in -r..=r {
                if dx * dx + dy * dy <= r * r {
                    self.set((x + dx, y + dy), rgb);
                }
            }
        }
    }

    fn line(&mut self, a: (i64, i64), b: (i64, i64), rgb: [u8; 3]) {
        let steps = (b.0 - a.0).abs().max((b.1 - a.1).abs()).max(1);
        for s in 0..=steps {
            let t = s as f64 / steps as f64;
            let x = a.0 as f64 + (b.0 - a.0) as f64 * t;
            let y = a.1 as f64 + (b.1 - a.1) as f64 * t;
            self.set((x.round() as i64, y.round() as i64), rgb);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pca_finds_the_dominant_axis() {
        // Points spread along (1, 1, 0) with small noise on z.
        let x = Array2::from_shape_fn((50, 3), |(i, j)| {
            let t = i as f32 - 25.0;
            [t, t, 0.01 * (i % 3) as f32][j]
        });
        let xy = pca_2d(&x);
        let var0: f32 = xy.column(0).iter().map(|v| v * v).sum();
        let var1: f32 = xy.column(1).iter().map(|v| v * v).sum();
        assert!(var0 > 1000.0 * var1.max(1e-9), "{var0} {var1}");
    }

    #[test]
    fn writes_a_png() {
        let b = Array2::from_shape_fn((20, 8), |(i, j)| ((i * 7 + j * 3) % 11) as f32);
        let r = &b + 0.5;
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("map.png");
        let panel = || MapPanel {
            behaviour: &b,
            rationale: &r,
        };
        write_map_png(&path, &[panel(), panel()]).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
    }
}
