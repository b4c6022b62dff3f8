//! PNG plots of the medians (plotters, bitmap backend; text drawn with a TrueType font found on
//! the system at run time, so nothing but Rust crates is needed to build).

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use crate::orchestrate::{Kind, Medians};

const ROOM_SIZES: [(f64, &str); 3] = [(1000.0, "1000"), (10_000.0, "10000"), (19_000.0, "19000")];

fn color(key: &str) -> RGBColor {
    match key {
        "wsu" => RGBColor(200, 30, 30),
        "sioxide" => RGBColor(30, 90, 200),
        "node" => RGBColor(40, 150, 60),
        _ => RGBColor(100, 100, 100),
    }
}

/// Register a sans-serif TrueType font for plotters' text.
fn load_font() -> Result<(), String> {
    let candidates = [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    ];
    let path = candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .or_else(|| find_ttf(Path::new("/usr/share/fonts"), 3))
        .ok_or(
            "no TrueType font found under /usr/share/fonts (apt-get install fonts-dejavu-core)",
        )?;
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| format!("{}: not a usable font", path.display()))
}

fn find_ttf(dir: &Path, depth: u32) -> Option<PathBuf> {
    let entries = std::fs::read_dir(dir).ok()?;
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() && depth > 0 {
            if let Some(f) = find_ttf(&p, depth - 1) {
                return Some(f);
            }
        } else if p.extension().is_some_and(|x| x == "ttf") {
            return Some(p);
        }
    }
    None
}

fn get(med: &Medians, server: &str, key: &str) -> Option<f64> {
    med.get(server)?.get(key).copied().filter(|v| v.is_finite())
}

/// Points (x, y) of one server for `key` with `{n}` replaced by each size.
fn points(med: &Medians, server: &str, key: &str, sizes: &[(f64, &str)]) -> Vec<(f64, f64)> {
    sizes
        .iter()
        .filter_map(|(x, n)| get(med, server, &key.replace("{n}", n)).map(|y| (*x, y)))
        .collect()
}

type Res<T> = Result<T, String>;

fn e<E: std::fmt::Display>(err: E) -> String {
    err.to_string()
}

/// One chart: a line per server (and per key, with a dashed style for the second key).
#[allow(clippy::too_many_arguments)]
fn chart(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    med: &Medians,
    kinds: &[Kind],
    keys: &[(&str, &str)],
    sizes: &[(f64, &str)],
    log_y: bool,
) -> Res<()> {
    let mut all: Vec<f64> = Vec::new();
    for k in kinds {
        for (key, _) in keys {
            all.extend(points(med, k.key, key, sizes).iter().map(|p| p.1));
        }
    }
    if all.is_empty() {
        return Ok(());
    }
    let max = all.iter().copied().fold(f64::MIN, f64::max);
    let min = all.iter().copied().fold(f64::MAX, f64::min);
    let x_max = sizes.last().map_or(1.0, |s| s.0) * 1.05;
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(80);
    let series = |k: &Kind, key: &str, suffix: &str, dashed: bool| {
        let c = color(k.key);
        let pts = points(med, k.key, key, sizes);
        let label = if suffix.is_empty() {
            k.title.to_owned()
        } else {
            format!("{} {suffix}", k.title)
        };
        (c, pts, label, dashed)
    };
    let mut lines = Vec::new();
    for k in kinds {
        for (i, (key, suffix)) in keys.iter().enumerate() {
            lines.push(series(k, key, suffix, i > 0));
        }
    }
    if log_y {
        let lo = (min / 1.5).max(1e-3);
        let hi = max * 1.5;
        let mut ch = builder
            .build_cartesian_2d(0f64..x_max, (lo..hi).log_scale())
            .map_err(e)?;
        ch.configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .label_style(("sans-serif", 14))
            .light_line_style(WHITE)
            .x_label_formatter(&|v| format!("{:.0}k", v / 1000.0))
            .y_label_formatter(&|v| format!("{v}"))
            .draw()
            .map_err(e)?;
        draw_lines(&mut ch, lines)?;
        ch.configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(e)?;
    } else {
        let mut ch = builder
            // Head room for the legend above the lines.
            .build_cartesian_2d(0f64..x_max, 0f64..max * 1.4)
            .map_err(e)?;
        ch.configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .label_style(("sans-serif", 14))
            .light_line_style(WHITE)
            .x_label_formatter(&|v| format!("{:.0}k", v / 1000.0))
            .y_label_formatter(&|v| {
                if *v >= 1e6 {
                    format!("{:.1}M", v / 1e6)
                } else if *v >= 1e3 {
                    format!("{:.0}k", v / 1e3)
                } else {
                    format!("{v:.1}")
                }
            })
            .draw()
            .map_err(e)?;
        draw_lines(&mut ch, lines)?;
        ch.configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(e)?;
    }
    Ok(())
}

type Line = (RGBColor, Vec<(f64, f64)>, String, bool);

fn draw_lines<'a, Y>(
    ch: &mut ChartContext<
        'a,
        BitMapBackend<'a>,
        Cartesian2d<plotters::coord::types::RangedCoordf64, Y>,
    >,
    lines: Vec<Line>,
) -> Res<()>
where
    Y: Ranged<ValueType = f64>,
{
    for (c, pts, label, dashed) in lines {
        if pts.is_empty() {
            continue;
        }
        let style = c.stroke_width(if dashed { 1 } else { 3 });
        ch.draw_series(LineSeries::new(pts.clone(), style))
            .map_err(e)?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(
                    vec![(x, y), (x + 22, y)],
                    c.stroke_width(if dashed { 1 } else { 3 }),
                )
            });
        if dashed {
            ch.draw_series(pts.iter().map(|&p| Cross::new(p, 5, c.stroke_width(2))))
                .map_err(e)?;
        } else {
            ch.draw_series(pts.iter().map(|&p| Circle::new(p, 4, c.filled())))
                .map_err(e)?;
        }
    }
    Ok(())
}

/// Write the plots into `dir`; the files written.
pub(crate) fn all(med: &Medians, kinds: &[Kind], dir: &Path) -> Res<Vec<PathBuf>> {
    load_font()?;
    let mut files = Vec::new();

    let path = dir.join("broadcast-throughput.png");
    {
        let root = BitMapBackend::new(&path, (1300, 560)).into_drawing_area();
        root.fill(&WHITE).map_err(e)?;
        let (l, r) = root.split_horizontally(650);
        chart(
            &l,
            "Broadcast, 1 message per round (closed loop)",
            "room size (members)",
            "deliveries per second",
            med,
            kinds,
            &[("bcast.{n}.x1.deliveries_per_s", "")],
            &ROOM_SIZES,
            false,
        )?;
        chart(
            &r,
            "Broadcast, 10 messages per round (closed loop)",
            "room size (members)",
            "deliveries per second",
            med,
            kinds,
            &[("bcast.{n}.x10.deliveries_per_s", "")],
            &ROOM_SIZES,
            false,
        )?;
        root.present().map_err(e)?;
    }
    files.push(path);

    let path = dir.join("broadcast-latency.png");
    {
        let root = BitMapBackend::new(&path, (1300, 560)).into_drawing_area();
        root.fill(&WHITE).map_err(e)?;
        let (l, r) = root.split_horizontally(650);
        chart(
            &l,
            "Delivery latency at 30k deliveries/s offered (open loop)",
            "room size (members)",
            "ms (p50 solid, p99 thin)",
            med,
            kinds,
            &[
                ("open.{n}.latency_p50_ms", "p50"),
                ("open.{n}.latency_p99_ms", "p99"),
            ],
            &ROOM_SIZES,
            true,
        )?;
        chart(
            &r,
            "Server CPU per delivery, 1 message per round",
            "room size (members)",
            "µs of server CPU per delivery",
            med,
            kinds,
            &[("bcast.{n}.x1.cpu_us_per_delivery", "")],
            &ROOM_SIZES,
            false,
        )?;
        root.present().map_err(e)?;
    }
    files.push(path);

    let path = dir.join("memory-per-connection.png");
    {
        let root = BitMapBackend::new(&path, (800, 560)).into_drawing_area();
        root.fill(&WHITE).map_err(e)?;
        chart(
            &root,
            "Idle memory per connection (RSS, after one ping cycle)",
            "connections",
            "KiB per connection",
            med,
            kinds,
            &[("idle.{n}.kib_per_conn", "")],
            &ROOM_SIZES,
            false,
        )?;
        root.present().map_err(e)?;
    }
    files.push(path);
    Ok(files)
}
