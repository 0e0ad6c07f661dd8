//! The heatmap of `tessera explain --plot`: one cell per query token (rows) and document
//! token (columns), coloured by their dot product (viridis: dark low, yellow high), each
//! row's best match outlined in red (the term it adds to MaxSim), a colour scale at the
//! right. Written as SVG with plotters' SVG backend (text as SVG `<text>`, no fonts needed).

use std::path::Path;

use anyhow::{Context, Result, bail};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use tessera::Explanation;

/// Pixels per cell: wide documents get narrower cells, so the picture stays readable.
fn cell_size(doc_tokens: usize) -> u32 {
    (960 / doc_tokens.max(1)).clamp(4, 22) as u32
}

/// Room for labels of `chars` characters (11-pixel text) plus a margin: the query token
/// labels at the left, the rotated document ones at the top.
fn label_room(labels: &[String], margin: u32) -> u32 {
    let chars = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0) as u32;
    margin + 7 * chars.min(24)
}

/// Where the cells start.
#[derive(Clone, Copy)]
struct Layout {
    left: u32,
    top: u32,
    cell: u32,
}

/// Room for the colour scale.
const RIGHT: u32 = 110;
const BOTTOM: u32 = 20;

/// Writes `e` as an SVG heatmap to `path`; `query_labels` and `doc_labels` name the rows and
/// columns (one per token).
pub fn write_svg(
    path: &Path,
    title: &str,
    e: &Explanation,
    query_labels: &[String],
    doc_labels: &[String],
) -> Result<()> {
    let ext = path
        .extension()
        .and_then(|x| x.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    if ext != "svg" {
        bail!(
            "{}: the heatmap is written as SVG only; name the file .svg",
            path.display()
        );
    }
    let (nq, nd) = (e.matches.len(), e.doc_tokens);
    let at = Layout {
        left: label_room(query_labels, 16).max(60),
        top: label_room(doc_labels, 36),
        cell: cell_size(nd),
    };
    let width = at.left + at.cell * nd as u32 + RIGHT;
    let height = at.top + at.cell * nq as u32 + BOTTOM;
    let root = SVGBackend::new(path, (width, height)).into_drawing_area();
    draw(&root, title, e, query_labels, doc_labels, at)
        .with_context(|| format!("{}: cannot draw the heatmap", path.display()))?;
    root.present()
        .with_context(|| format!("{}: cannot write the heatmap", path.display()))?;
    Ok(())
}

/// Viridis (matplotlib's default map, readable in grey and by colour-blind readers) at
/// `t` in `[0, 1]`: linear between its eight reference colours. (plotters' own colour maps
/// need its large `full_palette` feature.)
fn viridis(t: f32) -> RGBColor {
    const STOPS: [(f32, f32, f32); 8] = [
        (68.0, 1.0, 84.0),
        (70.0, 50.0, 127.0),
        (54.0, 92.0, 141.0),
        (39.0, 127.0, 143.0),
        (31.0, 162.0, 136.0),
        (74.0, 194.0, 110.0),
        (160.0, 219.0, 57.0),
        (254.0, 232.0, 37.0),
    ];
    let x = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    } * (STOPS.len() - 1) as f32;
    let i = (x.floor() as usize).min(STOPS.len() - 2);
    let f = x - i as f32;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    let mix = |p: f32, q: f32| (p + (q - p) * f).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;
type DrawResult = std::result::Result<(), DrawingAreaErrorKind<std::io::Error>>;

fn draw(
    root: &Area<'_>,
    title: &str,
    e: &Explanation,
    query_labels: &[String],
    doc_labels: &[String],
    layout: Layout,
) -> DrawResult {
    let Layout { left, top, cell } = layout;
    root.fill(&WHITE)?;
    let nd = e.doc_tokens;
    let lo = e.similarities.iter().copied().fold(f32::INFINITY, f32::min);
    let mut hi = e
        .similarities
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    // One value everywhere (or none): any scale will do, and it must not divide by 0.
    if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
        hi = lo + 1.0;
    }
    let c = cell as i32;
    let at = |i: usize, j: usize| (left as i32 + j as i32 * c, top as i32 + i as i32 * c);
    for (idx, &s) in e.similarities.iter().enumerate() {
        let (x, y) = at(idx / nd.max(1), idx % nd.max(1));
        let colour = viridis((s - lo) / (hi - lo));
        root.draw(&Rectangle::new([(x, y), (x + c, y + c)], colour.filled()))?;
    }
    for m in &e.matches {
        let (x, y) = at(m.query_token, m.doc_token);
        root.draw(&Rectangle::new(
            [(x, y), (x + c - 1, y + c - 1)],
            RED.stroke_width(2),
        ))?;
    }
    let font = ("sans-serif", 11).into_font();
    for (i, label) in query_labels.iter().enumerate() {
        let (_, y) = at(i, 0);
        let style = font
            .clone()
            .color(&BLACK)
            .pos(Pos::new(HPos::Right, VPos::Center));
        root.draw(&Text::new(
            label.clone(),
            (left as i32 - 6, y + c / 2),
            style,
        ))?;
    }
    // Document labels, rotated, when the cells are wide enough to tell them apart.
    let step = (12 / c.max(1)).max(1) as usize;
    for (j, label) in doc_labels.iter().enumerate().step_by(step) {
        let (x, _) = at(0, j);
        let style = font
            .clone()
            .transform(FontTransform::Rotate270)
            .color(&BLACK)
            .pos(Pos::new(HPos::Left, VPos::Center));
        root.draw(&Text::new(
            label.clone(),
            (x + c / 2, top as i32 - 6),
            style,
        ))?;
    }
    root.draw(&Text::new(
        title.to_owned(),
        (8, 16),
        ("sans-serif", 14).into_font().color(&BLACK),
    ))?;
    let x = left as i32 + nd as i32 * c + 16;
    scale(root, lo, hi, (x, top as i32), e.matches.len() as i32 * c)
}

/// The colour scale, its top left corner at `(x, top)`, `rows_px` high.
fn scale(root: &Area<'_>, lo: f32, hi: f32, (x, top): (i32, i32), rows_px: i32) -> DrawResult {
    let h = rows_px.max(40);
    let steps = 64;
    for k in 0..steps {
        let v = hi - (hi - lo) * k as f32 / (steps - 1) as f32;
        let y0 = top + h * k / steps;
        let y1 = top + h * (k + 1) / steps;
        let colour = viridis((v - lo) / (hi - lo));
        root.draw(&Rectangle::new([(x, y0), (x + 14, y1)], colour.filled()))?;
    }
    let font = ("sans-serif", 11).into_font();
    for (v, y) in [(hi, top), (lo, top + h)] {
        let style = font
            .clone()
            .color(&BLACK)
            .pos(Pos::new(HPos::Left, VPos::Center));
        root.draw(&Text::new(format!("{v:.3}"), (x + 18, y), style))?;
    }
    Ok(())
}
