//! The Thought-Space map (the paper's Figure 3): a 2-D PCA of behaviour and rationale
//! embeddings, drawn as an SVG (plotters) with one titled panel per state (e.g. before | after
//! training), labelled axes and a legend.

use std::path::Path;

use ndarray::{Array1, Array2, Axis};
use plotters::prelude::*;

use crate::error::{Result, ThoughtSpaceError};

/// One panel: row `i` of `behaviour` and of `rationale` belong to the same user.
pub struct MapPanel<'a> {
    /// The panel's title (e.g. "before training").
    pub title: &'a str,
    /// Behaviour embeddings `[n, dim]`.
    pub behaviour: &'a Array2<f32>,
    /// Rationale embeddings `[n, dim]`.
    pub rationale: &'a Array2<f32>,
}

/// Size of one panel in pixels.
const PANEL: (u32, u32) = (460, 440);
const BEHAVIOUR: RGBColor = RGBColor(31, 119, 180);
const RATIONALE: RGBColor = RGBColor(255, 127, 14);
const PAIR: RGBColor = RGBColor(205, 205, 205);
const ANCHOR: RGBColor = RGBColor(214, 39, 40);

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
/// from each behaviour to its own rationale, and the first user's pair in red, against axes
/// "PC 1" / "PC 2", each panel titled and with a legend. Each panel is projected with its own PCA
/// fitted on both sets together. Written atomically as SVG.
pub fn write_map_svg(path: &Path, panels: &[MapPanel<'_>]) -> Result<()> {
    let fail = |e: &dyn std::fmt::Display| ThoughtSpaceError::Image {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let mut projected = Vec::with_capacity(panels.len());
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
        projected.push((panel.title, n, pca_2d(&both)));
    }
    let mut svg = String::new();
    {
        let size = (PANEL.0 * panels.len().max(1) as u32, PANEL.1);
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| fail(&e))?;
        let areas = root.split_evenly((1, panels.len().max(1)));
        for ((title, n, xy), area) in projected.iter().zip(&areas) {
            let ((x0, y0), (x1, y1)) = bounds(xy);
            let pad = |lo: f32, hi: f32| {
                let m = 0.05 * (hi - lo).max(1e-6);
                f64::from(lo - m)..f64::from(hi + m)
            };
            let mut chart = ChartBuilder::on(area)
                .caption(*title, ("sans-serif", 18))
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(48)
                .build_cartesian_2d(pad(x0, x1), pad(y0, y1))
                .map_err(|e| fail(&e))?;
            chart
                .configure_mesh()
                .disable_mesh()
                .x_desc("PC 1")
                .y_desc("PC 2")
                .draw()
                .map_err(|e| fail(&e))?;
            let at = |i: usize| (f64::from(xy[[i, 0]]), f64::from(xy[[i, 1]]));
            chart
                .draw_series((0..*n).map(|i| PathElement::new(vec![at(i), at(n + i)], PAIR)))
                .map_err(|e| fail(&e))?
                .label("a user's pair")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], PAIR));
            for (offset, colour, name) in
                [(0, BEHAVIOUR, "behaviour"), (*n, RATIONALE, "rationale")]
            {
                chart
                    .draw_series((0..*n).map(|i| Circle::new(at(offset + i), 2, colour.filled())))
                    .map_err(|e| fail(&e))?
                    .label(name)
                    .legend(move |(x, y)| Circle::new((x + 8, y), 3, colour.filled()));
            }
            let anchor = ShapeStyle::from(&ANCHOR).stroke_width(2);
            chart
                .draw_series([PathElement::new(vec![at(0), at(*n)], anchor)])
                .map_err(|e| fail(&e))?
                .label("the first user's pair")
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], anchor));
            chart
                .draw_series([at(0), at(*n)].map(|c| Circle::new(c, 4, ANCHOR.filled())))
                .map_err(|e| fail(&e))?;
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .label_font(("sans-serif", 12))
                .draw()
                .map_err(|e| fail(&e))?;
        }
        root.present().map_err(|e| fail(&e))?;
    }
    pulserec_core::fs::write_atomic(path, svg.as_bytes())
        .map_err(|e| ThoughtSpaceError::io(path, e))
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
    fn writes_an_svg_with_titles_axes_and_legend() {
        let b = Array2::from_shape_fn((20, 8), |(i, j)| ((i * 7 + j * 3) % 11) as f32);
        let r = &b + 0.5;
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("map.svg");
        let panel = |title| MapPanel {
            title,
            behaviour: &b,
            rationale: &r,
        };
        write_map_svg(&path, &[panel("before training"), panel("after training")]).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"));
        for words in [
            "before training",
            "after training",
            "PC 1",
            "PC 2",
            "behaviour",
            "rationale",
        ] {
            assert!(svg.contains(&format!("\n{words}\n</text>")), "{words}");
        }
        let short = Array2::<f32>::zeros((3, 8));
        let bad = MapPanel {
            title: "x",
            behaviour: &b,
            rationale: &short,
        };
        assert!(write_map_svg(&path, &[bad]).is_err());
    }
}
