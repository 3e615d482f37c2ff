//! The percentile plot: latency against percentile on a log-scale percentile axis (50 %,
//! 90 %, 99 %, 99.9 %, ... evenly spaced), one line per target, produce→ack and end-to-end
//! side by side, as SVG.

use std::path::Path;

use hdrhistogram::Histogram;
use plotters::prelude::*;

use crate::BenchResult;

/// Points of a percentile curve: (nines, latency µs), where nines = -log10(1 - q), so
/// 1 = p90, 2 = p99, 3 = p99.9. The curve goes as far as the sample count supports
/// (log10(count) nines) and ends with the maximum.
pub fn percentile_curve(h: &Histogram<u64>, steps_per_nine: u32) -> Vec<(f64, u64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let max_nines = (h.len() as f64).log10();
    let steps = (max_nines * steps_per_nine as f64).floor() as u32;
    let mut pts: Vec<(f64, u64)> = (0..=steps)
        .map(|k| {
            let nines = k as f64 / steps_per_nine as f64;
            let q = 1.0 - 10f64.powf(-nines);
            (nines, h.value_at_quantile(q))
        })
        .collect();
    pts.push((max_nines.max(pts.last().map_or(0.0, |p| p.0)), h.max()));
    pts
}

fn nines_label(n: &f64) -> String {
    let q = 100.0 * (1.0 - 10f64.powf(-n));
    let digits = (n.round() as i64 - 2).max(0) as usize;
    format!("{q:.digits$}%")
}

/// One panel per latency kind; each `series` entry is (target name, histogram).
pub struct Panel<'a> {
    pub title: &'a str,
    pub series: Vec<(&'a str, &'a Histogram<u64>)>,
}

pub fn write_svg(path: &Path, caption: &str, panels: &[Panel<'_>]) -> BenchResult<()> {
    let root = SVGBackend::new(path, (560 * panels.len() as u32, 440)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(caption, ("sans-serif", 16))?;
    let areas = root.split_evenly((1, panels.len()));
    let colors = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];
    for (panel, area) in panels.iter().zip(areas.iter()) {
        let curves: Vec<(&str, Vec<(f64, u64)>)> = panel
            .series
            .iter()
            .map(|(n, h)| (*n, percentile_curve(h, 20)))
            .collect();
        let x_max = curves
            .iter()
            .flat_map(|(_, c)| c.iter().map(|p| p.0))
            .fold(1.0f64, f64::max)
            .ceil();
        let y_max = curves
            .iter()
            .flat_map(|(_, c)| c.iter().map(|p| p.1))
            .max()
            .unwrap_or(1)
            .max(1) as f64
            / 1000.0;
        let y_min = curves
            .iter()
            .flat_map(|(_, c)| c.iter().map(|p| p.1))
            .min()
            .unwrap_or(1)
            .max(1) as f64
            / 1000.0;
        let mut chart = ChartBuilder::on(area)
            .caption(panel.title, ("sans-serif", 14))
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..x_max, (y_min * 0.8..y_max * 1.25).log_scale())?;
        chart
            .configure_mesh()
            .x_labels(x_max as usize + 1)
            .x_label_formatter(&nines_label)
            .x_desc("percentile")
            .y_desc("latency (ms, log)")
            .draw()?;
        for (i, (name, curve)) in curves.iter().enumerate() {
            let color = colors[i % colors.len()];
            chart
                .draw_series(LineSeries::new(
                    curve.iter().map(|&(x, us)| (x, us.max(1) as f64 / 1000.0)),
                    color.stroke_width(2),
                ))?
                .label(*name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::new_histogram;

    #[test]
    fn curve_spans_the_nines_the_samples_support() {
        let mut h = new_histogram();
        for v in 1..=10_000u64 {
            h.record(v).unwrap();
        }
        let c = percentile_curve(&h, 10);
        assert_eq!(c[0], (0.0, h.value_at_quantile(0.0)));
        // 10,000 samples support 4 nines (p99.99), then the max.
        let last = c[c.len() - 1];
        assert!((last.0 - 4.0).abs() < 1e-9 && last.1 == h.max());
        assert!(c.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
        let p99 = c.iter().find(|p| (p.0 - 2.0).abs() < 1e-9).unwrap();
        assert!((9_850..=9_950).contains(&p99.1), "p99 {}", p99.1);
        assert!(percentile_curve(&new_histogram(), 10).is_empty());
        assert_eq!(nines_label(&1.0), "90%");
        assert_eq!(nines_label(&3.0), "99.9%");
    }
}
