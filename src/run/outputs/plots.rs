//! PNG figures a person opens: the training loss curve and the feature-density histogram
//! (log10 firing frequency, as SAELens and Anthropic show it). Text uses the bundled DejaVu
//! Sans, so plots render the same on a machine with no system fonts.

use std::path::Path;
use std::sync::Once;

use anyhow::{anyhow, Context};
use plotters::prelude::*;

const FONT: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSans.ttf");

fn register_fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_err() {
            tracing::warn!("bundled font failed to load; plots will have no text");
        }
    });
}

fn plot_err<E: std::fmt::Debug>(error: E) -> anyhow::Error {
    anyhow!("plotting failed: {error:?}")
}

/// Draws into a temporary PNG and renames it into place.
fn draw_png(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    register_fonts();
    let tmp = path.with_extension("tmp.png");
    {
        let root = BitMapBackend::new(&tmp, size).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        draw(root.clone())?;
        root.present().map_err(plot_err)?;
    }
    std::fs::rename(&tmp, path)
        .with_context(|| format!("{}: cannot move into place", path.display()))
}

/// A line chart of `series` (x, y) with axis labels.
pub fn line_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(f64, f64)],
) -> anyhow::Result<()> {
    if series.is_empty() {
        return Ok(());
    }
    let (x_min, x_max) = series.iter().fold((f64::MAX, f64::MIN), |(a, b), (x, _)| {
        (a.min(*x), b.max(*x))
    });
    let (y_min, y_max) = series.iter().fold((f64::MAX, f64::MIN), |(a, b), (_, y)| {
        (a.min(*y), b.max(*y))
    });
    let pad = ((y_max - y_min) * 0.05).max(1e-6);
    draw_png(path, (900, 540), |root| {
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 24))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(
                x_min..x_max.max(x_min + 1.0),
                (y_min - pad).max(0.0)..y_max + pad,
            )
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .label_style(("sans-serif", 15))
            .draw()
            .map_err(plot_err)?;
        chart
            .draw_series(LineSeries::new(
                series.iter().copied(),
                BLUE.stroke_width(2),
            ))
            .map_err(plot_err)?;
        Ok(())
    })
}

/// A histogram of `values` in `bins` equal bins over `range`.
pub fn histogram(
    path: &Path,
    title: &str,
    x_label: &str,
    values: &[f32],
    range: (f64, f64),
    bins: usize,
) -> anyhow::Result<()> {
    let width = (range.1 - range.0) / bins as f64;
    let mut counts = vec![0u64; bins];
    for &v in values {
        let b = ((f64::from(v) - range.0) / width)
            .floor()
            .clamp(0.0, (bins - 1) as f64) as usize;
        counts[b] += 1;
    }
    let top = counts.iter().copied().max().unwrap_or(1).max(1) as f64 * 1.05;
    draw_png(path, (900, 540), |root| {
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 24))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(range.0..range.1, 0.0..top)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc("latents")
            .label_style(("sans-serif", 15))
            .draw()
            .map_err(plot_err)?;
        chart
            .draw_series(counts.iter().enumerate().map(|(i, &c)| {
                let x0 = range.0 + i as f64 * width;
                Rectangle::new([(x0, 0.0), (x0 + width, c as f64)], BLUE.mix(0.7).filled())
            }))
            .map_err(plot_err)?;
        Ok(())
    })
}

/// `loss.png` (FVU against tokens, from metrics.jsonl) and `density.png` (log10 feature
/// density) in the run directory.
pub fn training_plots(run_dir: &Path, metrics: &Path, log10_density: &[f32]) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(metrics).unwrap_or_default();
    let series: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).ok()?;
            Some((v.get("tokens")?.as_f64()?, v.get("fvu")?.as_f64()?))
        })
        .collect();
    line_chart(
        &run_dir.join("loss.png"),
        "Training FVU",
        "tokens",
        "FVU",
        &series,
    )?;
    histogram(
        &run_dir.join("density.png"),
        "Feature density",
        "log10(firing frequency)",
        log10_density,
        (-10.0, 0.0),
        50,
    )
}

/// `density.png` (log10 firing frequency of the latents that fired) and `features.png` (the
/// activation histograms of the 16 most frequent features) for `sae hist`.
pub fn hist_plots(dir: &Path, hist: &crate::analysis::hist::Histograms) -> anyhow::Result<()> {
    let fired: Vec<f32> = hist
        .log10_density()
        .into_iter()
        .zip(&hist.fire_count)
        .filter(|(_, &c)| c > 0)
        .map(|(d, _)| d)
        .collect();
    let dead = hist.d_sae - fired.len();
    histogram(
        &dir.join("density.png"),
        &format!(
            "Feature density over {} rows ({dead} latents never fired)",
            hist.rows
        ),
        "log10(firing frequency)",
        &fired,
        (-10.0, 0.0),
        50,
    )?;

    let mut order: Vec<usize> = (0..hist.d_sae).collect();
    order.sort_by(|&a, &b| hist.fire_count[b].cmp(&hist.fire_count[a]).then(a.cmp(&b)));
    order.truncate(16);
    let bins = hist.bins.bins;
    let log_edges: Vec<f64> = hist
        .bins
        .edges()
        .iter()
        .map(|e| f64::from(*e).log10())
        .collect();
    draw_png(&dir.join("features.png"), (1400, 1000), |root| {
        let root = root
            .titled(
                "Activation histograms of the 16 most frequent features",
                ("sans-serif", 24),
            )
            .map_err(plot_err)?;
        let cells = root.split_evenly((4, 4));
        for (cell, &latent) in cells.iter().zip(&order) {
            let counts = &hist.bin_counts[latent * bins..(latent + 1) * bins];
            let top = counts.iter().copied().max().unwrap_or(1).max(1) as f64 * 1.05;
            let mut chart = ChartBuilder::on(cell)
                .caption(
                    format!("feature {latent} ({} fires)", hist.fire_count[latent]),
                    ("sans-serif", 14),
                )
                .margin(6)
                .x_label_area_size(22)
                .y_label_area_size(40)
                .build_cartesian_2d(log_edges[0]..log_edges[bins], 0.0..top)
                .map_err(plot_err)?;
            chart
                .configure_mesh()
                .x_labels(4)
                .y_labels(3)
                .x_desc("log10 activation")
                .label_style(("sans-serif", 11))
                .draw()
                .map_err(plot_err)?;
            chart
                .draw_series(counts.iter().enumerate().map(|(b, &c)| {
                    Rectangle::new(
                        [(log_edges[b], 0.0), (log_edges[b + 1], c as f64)],
                        BLUE.mix(0.7).filled(),
                    )
                }))
                .map_err(plot_err)?;
        }
        Ok(())
    })
}

/// Colour of group `g` (0-based) in scatter plots; `None` is grey ("other").
fn group_colour(g: Option<usize>) -> RGBColor {
    match g {
        Some(g) => {
            let c = Palette99::pick(g).to_rgba();
            RGBColor(c.0, c.1, c.2)
        }
        None => RGBColor(190, 190, 190),
    }
}

/// A scatter plot of `points` (x, y, group), groups coloured and named in a legend by
/// `legend[group]`; points without a group are grey and drawn first.
pub fn scatter(
    path: &Path,
    title: &str,
    axes: (&str, &str),
    points: &[(f64, f64, Option<usize>)],
    legend: &[String],
) -> anyhow::Result<()> {
    if points.is_empty() {
        return Ok(());
    }
    let range = |f: fn(&(f64, f64, Option<usize>)) -> f64| {
        let (lo, hi) = points
            .iter()
            .map(f)
            .fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
        let pad = ((hi - lo) * 0.05).max(1e-6);
        lo - pad..hi + pad
    };
    let (xr, yr) = (range(|p| p.0), range(|p| p.1));
    draw_png(path, (900, 760), |root| {
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(xr, yr)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc(axes.0)
            .y_desc(axes.1)
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(plot_err)?;
        let grey = points.iter().filter(|p| p.2.is_none());
        chart
            .draw_series(grey.map(|p| Circle::new((p.0, p.1), 2, group_colour(None).filled())))
            .map_err(plot_err)?;
        for (g, name) in legend.iter().enumerate() {
            let colour = group_colour(Some(g));
            chart
                .draw_series(
                    points
                        .iter()
                        .filter(|p| p.2 == Some(g))
                        .map(|p| Circle::new((p.0, p.1), 3, colour.filled())),
                )
                .map_err(plot_err)?
                .label(name.as_str())
                .legend(move |(x, y)| Circle::new((x, y), 4, colour.filled()));
        }
        if !legend.is_empty() {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font(("sans-serif", 13))
                .position(SeriesLabelPosition::UpperRight)
                .draw()
                .map_err(plot_err)?;
        }
        Ok(())
    })
}

/// A heat map of the symmetric matrix `values` ([n, n], in [-1, 1]) with `labels` on both
/// axes: blue negative, white 0, red positive.
pub fn heatmap(path: &Path, title: &str, values: &[f64], labels: &[String]) -> anyhow::Result<()> {
    let n = labels.len();
    if n == 0 {
        return Ok(());
    }
    let colour = |v: f64| {
        let t = v.clamp(-1.0, 1.0);
        let fade = |c: f64| (255.0 * (1.0 - c.abs())) as u8;
        if t >= 0.0 {
            RGBColor(255, fade(t), fade(t))
        } else {
            RGBColor(fade(t), fade(t), 255)
        }
    };
    let side = (40 * n as u32).clamp(320, 900) + 120;
    draw_png(path, (side, side), |root| {
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(70)
            .y_label_area_size(70)
            .build_cartesian_2d((0..n).into_segmented(), (0..n).into_segmented())
            .map_err(plot_err)?;
        // Row i of the matrix is drawn at height n − 1 − i, so it reads top to bottom.
        let label = |v: &SegmentValue<usize>, flip: bool| match v {
            SegmentValue::CenterOf(i) if *i < n => {
                labels[if flip { n - 1 - i } else { *i }].clone()
            }
            _ => String::new(),
        };
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(n.min(40))
            .y_labels(n.min(40))
            .x_label_formatter(&|v| label(v, false))
            .y_label_formatter(&|v| label(v, true))
            .label_style(("sans-serif", 11))
            .draw()
            .map_err(plot_err)?;
        chart
            .draw_series((0..n).flat_map(|i| {
                (0..n).map(move |j| {
                    Rectangle::new(
                        [
                            (SegmentValue::Exact(j), SegmentValue::Exact(n - 1 - i)),
                            (SegmentValue::Exact(j + 1), SegmentValue::Exact(n - i)),
                        ],
                        colour(values[i * n + j]).filled(),
                    )
                })
            }))
            .map_err(plot_err)?;
        Ok(())
    })
}

/// The sparsity–fidelity frontier: FVU against L0 (log x axis), one colour and marker per
/// architecture, each architecture's points joined in order of L0.
pub fn frontier(path: &Path, series: &[(String, Vec<(f64, f64)>)]) -> anyhow::Result<()> {
    let points: Vec<(f64, f64)> = series.iter().flat_map(|(_, p)| p.clone()).collect();
    if points.is_empty() {
        return Ok(());
    }
    let fold = |f: fn(&(f64, f64)) -> f64| {
        points
            .iter()
            .map(f)
            .fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)))
    };
    let (x_lo, x_hi) = fold(|p| p.0);
    let (y_lo, y_hi) = fold(|p| p.1);
    let x_lo = (x_lo * 0.8).max(1e-3);
    let x_hi = (x_hi * 1.25).max(x_lo * 2.0);
    let pad = ((y_hi - y_lo) * 0.08).max(1e-3);
    draw_png(path, (900, 620), |root| {
        let mut chart = ChartBuilder::on(&root)
            .caption("Sparsity–fidelity frontier", ("sans-serif", 24))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d((x_lo..x_hi).log_scale(), (y_lo - pad).max(0.0)..y_hi + pad)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("L0 (active latents per row, log scale)")
            .y_desc("held-out FVU")
            .label_style(("sans-serif", 15))
            .draw()
            .map_err(plot_err)?;
        for (g, (name, pts)) in series.iter().enumerate() {
            let colour = group_colour(Some(g));
            let mut pts = pts.clone();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), colour.stroke_width(2)))
                .map_err(plot_err)?;
            let marker = g % 3;
            chart
                .draw_series(pts.iter().map(move |&(x, y)| {
                    let shape: DynElement<'static, BitMapBackend, (f64, f64)> = match marker {
                        0 => Circle::new((x, y), 5, colour.filled()).into_dyn(),
                        1 => TriangleMarker::new((x, y), 7, colour.filled()).into_dyn(),
                        _ => Cross::new((x, y), 6, colour.stroke_width(2)).into_dyn(),
                    };
                    shape
                }))
                .map_err(plot_err)?
                .label(name.as_str())
                .legend(move |(x, y)| Circle::new((x, y), 5, colour.filled()));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(plot_err)?;
        Ok(())
    })
}
