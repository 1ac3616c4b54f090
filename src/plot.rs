//! Training curves as SVG line plots for the run report, drawn with plotters: a title, labelled
//! axes with tick values, and a legend, so a reader can tell what a curve shows without the
//! report's text.

use std::path::Path;

use plotters::prelude::*;

/// Size of a curve plot in pixels.
const SIZE: (u32, u32) = (640, 360);
/// The curve's colour (matplotlib's first).
const CURVE: RGBColor = RGBColor(31, 119, 180);

/// Why a plot could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// Nothing finite to draw.
    #[error("{path}: no finite value to plot")]
    Empty {
        /// The file.
        path: std::path::PathBuf,
    },
    /// Drawing or writing failed.
    #[error("{path}: {message}")]
    Write {
        /// The file.
        path: std::path::PathBuf,
        /// The drawing or I/O error.
        message: String,
    },
}

/// The words on a curve plot.
#[derive(Clone, Copy, Debug)]
pub struct CurveLabels<'a> {
    /// Title above the plot.
    pub title: &'a str,
    /// What the x axis counts (values are numbered from 1).
    pub x: &'a str,
    /// What the y axis measures.
    pub y: &'a str,
    /// The curve's name in the legend.
    pub series: &'a str,
}

/// The y range to show: the values' range with 5 % room, or a unit band around a single value.
fn y_range(lo: f64, hi: f64) -> std::ops::Range<f64> {
    let pad = if hi > lo {
        0.05 * (hi - lo)
    } else {
        0.5f64.max(0.1 * lo.abs())
    };
    (lo - pad)..(hi + pad)
}

/// Draws `values` (e.g. one loss per epoch or per step) as a line over 1, 2, ... against labelled
/// axes, with a title and a legend; non-finite values are skipped (the line joins the finite
/// ones). Written atomically as SVG.
pub fn write_curve_svg(
    path: &Path,
    values: &[f64],
    labels: &CurveLabels<'_>,
) -> Result<(), PlotError> {
    let points: Vec<(f64, f64)> = values
        .iter()
        .enumerate()
        .filter(|(_, v)| v.is_finite())
        .map(|(i, &v)| ((i + 1) as f64, v))
        .collect();
    if points.is_empty() {
        return Err(PlotError::Empty {
            path: path.to_path_buf(),
        });
    }
    let lo = points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let hi = points.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    let last = values.len().max(2) as f64;
    let fail = |e: &dyn std::fmt::Display| PlotError::Write {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| fail(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(labels.title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(64)
            .build_cartesian_2d(1f64..last, y_range(lo, hi))
            .map_err(|e| fail(&e))?;
        chart
            .configure_mesh()
            .x_desc(labels.x)
            .y_desc(labels.y)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(|e| fail(&e))?;
        let style = ShapeStyle::from(&CURVE).stroke_width(2);
        let line = if points.len() == 1 {
            // One value: a flat line across, so it shows.
            vec![(1.0, points[0].1), (last, points[0].1)]
        } else {
            points
        };
        chart
            .draw_series(LineSeries::new(line, style))
            .map_err(|e| fail(&e))?
            .label(labels.series)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| fail(&e))?;
        root.present().map_err(|e| fail(&e))?;
    }
    pulserec_core::fs::write_atomic(path, svg.as_bytes()).map_err(|e| fail(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LABELS: CurveLabels<'static> = CurveLabels {
        title: "SFT training loss",
        x: "optimiser step",
        y: "loss",
        series: "no rationale",
    };

    #[test]
    fn draws_an_svg_with_its_words_and_refuses_nothing_to_draw() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("loss.svg");
        write_curve_svg(&path, &[3.0, 2.0, f64::NAN, 1.5, 1.4], &LABELS).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..40]);
        // plotters writes each text element's words on a line of their own.
        for words in [
            "SFT training loss",
            "optimiser step",
            "loss",
            "no rationale",
            "3.0",
            "5",
        ] {
            assert!(svg.contains(&format!("\n{words}\n</text>")), "{words}");
        }
        write_curve_svg(&path, &[0.7], &LABELS).unwrap();
        assert!(matches!(
            write_curve_svg(&path, &[f64::NAN], &LABELS),
            Err(PlotError::Empty { .. })
        ));
    }
}
