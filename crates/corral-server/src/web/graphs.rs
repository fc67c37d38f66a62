//! Graphs drawn on the server as inline SVG: gridlines with human-readable values, time
//! labels in UTC, one line per series (the bucket's average; its maximum as a faint line
//! where it differs; optionally the area under the first), a reference line (configured
//! memory, CPUs), and a text summary as the SVG's `<title>`/`<desc>` for screen readers.
//!
//! Lines break where there are no samples (a value of `None`, or neighbouring points further
//! apart than the history's `gap_ms`) instead of joining across; a lone point is a dot.
//! Everything goes through maud, so labels and names are escaped. Colours and type come from
//! `corral.css` by class: no inline style, which the page's CSP would block anyway.

use std::fmt::Write;

use corral_types::SeriesUnit;
use maud::{html, Markup};

/// The SVG's coordinate box; the page scales it to the width it has.
const W: f64 = 640.0;
const H: f64 = 200.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 24.0;
/// About this many gridlines on the value axis, and at most this many time labels.
const Y_TICKS: f64 = 4.0;
const X_LABELS: i64 = 7;

/// One series: the average of each point and, where they differ, the maximum.
pub struct Line<'a> {
    pub label: &'a str,
    pub avg: &'a [Option<f64>],
    pub max: &'a [Option<f64>],
}

pub struct Graph<'a> {
    /// Unique in the page: the ids of the title and description derive from it.
    pub id: &'a str,
    pub title: &'a str,
    pub unit: SeriesUnit,
    /// The time of each point (Unix ms), shared by the lines.
    pub times: &'a [i64],
    pub from_ms: i64,
    pub to_ms: i64,
    pub gap_ms: i64,
    pub lines: Vec<Line<'a>>,
    /// The value axis reaches at least this (100 for a percentage).
    pub min_top: f64,
    /// Fill the area under the first line.
    pub area: bool,
    /// A dashed horizontal line and its label (the configured memory, the CPU count).
    pub reference: Option<(f64, String)>,
    /// What to say when no line has a value.
    pub empty: &'a str,
}

/// A value as people read it: `45 %`, `1.5 GiB`, `12 MiB/s`, `30 ops/s`, `0.75`.
pub fn format_value(v: f64, unit: SeriesUnit) -> String {
    match unit {
        SeriesUnit::Percent => format!("{} %", number(v)),
        SeriesUnit::Bytes => bytes(v),
        SeriesUnit::BytesPerSecond => format!("{}/s", bytes(v)),
        SeriesUnit::OpsPerSecond => format!("{} ops/s", number(v)),
        SeriesUnit::Number => number(v),
    }
}

/// At most three significant digits, no trailing zeros: `0.25`, `12.5`, `340`.
fn number(v: f64) -> String {
    let a = v.abs();
    let s = if a >= 100.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn bytes(v: f64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = v;
    let mut i = 0;
    while v.abs() >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    format!("{} {}", number(v), UNITS[i])
}

/// The top of the value axis and the distance between gridlines: a round step (1, 2, 2.5
/// or 5 times a power of ten, of 1024-multiples for sizes) that covers `max`.
pub fn value_axis(max: f64, unit: SeriesUnit) -> (f64, f64) {
    let max = if max.is_finite() && max > 0.0 { max } else { 1.0 };
    let raw = max / Y_TICKS;
    // Sizes step in KiB/MiB/GiB so that gridlines fall on round figures of their unit.
    let scale = match unit {
        SeriesUnit::Bytes | SeriesUnit::BytesPerSecond if raw >= 1024.0 => {
            1024f64.powi((raw.log2() / 10.0).floor() as i32)
        }
        _ => 1.0,
    };
    let x = raw / scale;
    let mag = 10f64.powf(x.log10().floor());
    let nice = [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .find(|f| f * mag >= x * (1.0 - 1e-9))
        .unwrap_or(10.0);
    let step = nice * mag * scale;
    ((max / step - 1e-9).ceil().max(1.0) * step, step)
}

/// The time between labels: the first round span that gives at most `X_LABELS` of them.
fn time_step(span_ms: i64) -> i64 {
    const MIN: i64 = 60_000;
    [
        MIN,
        2 * MIN,
        5 * MIN,
        10 * MIN,
        15 * MIN,
        30 * MIN,
        60 * MIN,
        2 * 60 * MIN,
        3 * 60 * MIN,
        6 * 60 * MIN,
        12 * 60 * MIN,
        24 * 60 * MIN,
        2 * 24 * 60 * MIN,
        5 * 24 * 60 * MIN,
        7 * 24 * 60 * MIN,
    ]
    .into_iter()
    .find(|s| span_ms / s <= X_LABELS)
    .unwrap_or(14 * 24 * 60 * MIN)
}

/// `14:05` within a day, `03-14` (month-day) beyond, in UTC.
fn time_label(ms: i64, step: i64) -> String {
    let (_, mo, d, h, mi, _) = corral_store::civil(ms.div_euclid(1000));
    if step >= 86_400_000 {
        format!("{mo:02}-{d:02}")
    } else {
        format!("{h:02}:{mi:02}")
    }
}

/// Runs of drawable points: a `None` value or a step longer than `gap_ms` ends a run.
pub fn segments(times: &[i64], values: &[Option<f64>], gap_ms: i64) -> Vec<Vec<(i64, f64)>> {
    let mut out = vec![];
    let mut run: Vec<(i64, f64)> = vec![];
    let mut last: Option<i64> = None;
    for (&t, v) in times.iter().zip(values) {
        let far = last.is_some_and(|l| t - l > gap_ms);
        if (far || !v.is_some_and(f64::is_finite)) && !run.is_empty() {
            out.push(std::mem::take(&mut run));
        }
        if let Some(v) = v.filter(|v| v.is_finite()) {
            run.push((t, v));
        }
        last = Some(t);
    }
    if !run.is_empty() {
        out.push(run);
    }
    out
}

struct Plot {
    from: i64,
    span: f64,
    top: f64,
}

impl Plot {
    fn x(&self, t: i64) -> f64 {
        LEFT + (t - self.from) as f64 / self.span * (W - LEFT - RIGHT)
    }
    fn y(&self, v: f64) -> f64 {
        let h = H - TOP - BOTTOM;
        TOP + h - (v.max(0.0) / self.top).min(1.0) * h
    }
}

/// The SVG path of runs (one `M` per run); runs of one point come back separately as dots.
fn path(plot: &Plot, runs: &[Vec<(i64, f64)>]) -> (String, Vec<(f64, f64)>) {
    let mut d = String::new();
    let mut dots = vec![];
    for run in runs {
        if let [(t, v)] = run.as_slice() {
            dots.push((plot.x(*t), plot.y(*v)));
            continue;
        }
        for (i, (t, v)) in run.iter().enumerate() {
            let _ = write!(
                d,
                "{}{:.1} {:.1}",
                if i == 0 { 'M' } else { 'L' },
                plot.x(*t),
                plot.y(*v)
            );
        }
    }
    (d, dots)
}

/// The area under runs, down to the axis.
fn area(plot: &Plot, runs: &[Vec<(i64, f64)>]) -> String {
    let base = plot.y(0.0);
    let mut d = String::new();
    for run in runs.iter().filter(|r| r.len() > 1) {
        let (first, last) = (run[0].0, run[run.len() - 1].0);
        let _ = write!(d, "M{:.1} {base:.1}", plot.x(first));
        for (t, v) in run {
            let _ = write!(d, "L{:.1} {:.1}", plot.x(*t), plot.y(*v));
        }
        let _ = write!(d, "L{:.1} {base:.1}Z", plot.x(last));
    }
    d
}

/// What a screen reader hears: per line its average, its highest value and when, and the
/// latest value.
pub fn summary(g: &Graph) -> String {
    let mut parts = vec![];
    for l in &g.lines {
        let points: Vec<(i64, f64)> = g
            .times
            .iter()
            .zip(l.avg)
            .filter_map(|(t, v)| Some((*t, v.filter(|v| v.is_finite())?)))
            .collect();
        let Some(&(_, latest)) = points.last() else {
            continue;
        };
        let mean = points.iter().map(|p| p.1).sum::<f64>() / points.len() as f64;
        let peak = g
            .times
            .iter()
            .zip(l.max.iter().zip(l.avg))
            .filter_map(|(t, (m, a))| Some((*t, m.or(*a).filter(|v| v.is_finite())?)))
            .fold(None, |best: Option<(i64, f64)>, p| match best {
                Some(b) if b.1 >= p.1 => Some(b),
                _ => Some(p),
            });
        let mut s = format!("{}: average {}", l.label, format_value(mean, g.unit));
        if let Some((t, v)) = peak {
            let _ = write!(
                s,
                ", highest {} at {}",
                format_value(v, g.unit),
                super::layout::time_ms(t)
            );
        }
        let _ = write!(s, ", latest {}", format_value(latest, g.unit));
        parts.push(s);
    }
    if parts.is_empty() {
        return g.empty.to_string();
    }
    parts.join(". ") + "."
}

/// The graph as a `<figure>`: the SVG and a legend with each line's latest value.
pub fn render(g: &Graph) -> Markup {
    let highest = g
        .lines
        .iter()
        .flat_map(|l| l.max.iter().chain(l.avg))
        .flatten()
        .copied()
        .filter(|v| v.is_finite())
        .fold(g.min_top, f64::max);
    let highest = g.reference.as_ref().map_or(highest, |r| highest.max(r.0));
    let (top, step) = value_axis(highest, g.unit);
    let plot = Plot {
        from: g.from_ms,
        span: (g.to_ms - g.from_ms).max(1) as f64,
        top,
    };
    let ticks: Vec<f64> = (0..)
        .map(|i| i as f64 * step)
        .take_while(|v| *v <= top * (1.0 + 1e-9))
        .collect();
    let tstep = time_step(g.to_ms - g.from_ms);
    let first = (g.from_ms.div_euclid(tstep) + 1) * tstep;
    let times: Vec<i64> = (0..).map(|i| first + i * tstep).take_while(|t| *t <= g.to_ms).collect();
    let lines: Vec<_> = g
        .lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let runs = segments(g.times, l.avg, g.gap_ms);
            let (d, dots) = path(&plot, &runs);
            // The maximum only where it says more than the average (aggregated points).
            let differs = l
                .avg
                .iter()
                .zip(l.max)
                .any(|(a, m)| matches!((a, m), (Some(a), Some(m)) if (m - a) > top * 0.005));
            let max = differs.then(|| path(&plot, &segments(g.times, l.max, g.gap_ms)).0);
            let fill = (g.area && i == 0).then(|| area(&plot, &runs));
            let latest = l.avg.iter().rev().flatten().next().copied();
            (format!("s{i}"), l.label, d, dots, max, fill, latest)
        })
        .collect();
    let empty = lines.iter().all(|l| l.2.is_empty() && l.3.is_empty());
    let (title_id, desc_id) = (format!("{}-title", g.id), format!("{}-desc", g.id));
    let bottom = H - BOTTOM;
    html! {
        figure.graph {
            figcaption { (g.title) }
            svg viewBox=(format!("0 0 {W} {H}")) role="img" aria-labelledby=(format!("{title_id} {desc_id}")) {
                title id=(title_id) { (g.title) }
                desc id=(desc_id) { (summary(g)) }
                g.grid {
                    @for v in &ticks {
                        line x1=(LEFT) x2=(W - RIGHT) y1=(format!("{:.1}", plot.y(*v))) y2=(format!("{:.1}", plot.y(*v))) {}
                        text.ylabel x=(LEFT - 6.0) y=(format!("{:.1}", plot.y(*v) + 4.0)) text-anchor="end" { (format_value(*v, g.unit)) }
                    }
                    @for t in &times {
                        line.tick x1=(format!("{:.1}", plot.x(*t))) x2=(format!("{:.1}", plot.x(*t))) y1=(TOP) y2=(bottom) {}
                        text.xlabel x=(format!("{:.1}", plot.x(*t))) y=(H - 6.0) text-anchor="middle" { (time_label(*t, tstep)) }
                    }
                }
                @if let Some((v, label)) = &g.reference {
                    g.reference {
                        line x1=(LEFT) x2=(W - RIGHT) y1=(format!("{:.1}", plot.y(*v))) y2=(format!("{:.1}", plot.y(*v))) stroke-dasharray="4 3" {}
                        text x=(W - RIGHT - 4.0) y=(format!("{:.1}", plot.y(*v) - 4.0)) text-anchor="end" { (label) }
                    }
                }
                @for (class, _, d, dots, max, fill, _) in &lines {
                    @if let Some(f) = fill { @if !f.is_empty() { path class=(format!("area {class}")) d=(f) {} } }
                    @if let Some(m) = max { @if !m.is_empty() { path class=(format!("line max {class}")) d=(m) {} } }
                    @if !d.is_empty() { path class=(format!("line {class}")) d=(d) {} }
                    @for (x, y) in dots { circle class=(format!("dot {class}")) cx=(format!("{x:.1}")) cy=(format!("{y:.1}")) r="2" {} }
                }
                @if empty {
                    text.empty x=(LEFT + (W - LEFT - RIGHT) / 2.0) y=(TOP + (H - TOP - BOTTOM) / 2.0) text-anchor="middle" { (g.empty) }
                }
            }
            ul.legend {
                @for (class, label, .., latest) in &lines {
                    li {
                        span class=(format!("key {class}")) aria-hidden="true" {}
                        (label)
                        @if let Some(v) = latest { " " span.muted { (format_value(*v, g.unit)) } }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn graph<'a>(times: &'a [i64], lines: Vec<Line<'a>>, unit: SeriesUnit) -> Graph<'a> {
        Graph {
            id: "g",
            title: "CPU",
            unit,
            times,
            from_ms: 0,
            to_ms: 60 * MIN,
            gap_ms: 25_000,
            lines,
            min_top: 0.0,
            area: false,
            reference: None,
            empty: "No samples in this range.",
        }
    }

    #[test]
    fn lines_break_at_missing_values_and_at_long_silences() {
        let t = [0, 10_000, 20_000, 30_000, 40_000, 100_000, 110_000, 200_000];
        let v = [
            Some(1.0),
            Some(2.0),
            None,
            Some(3.0),
            Some(4.0),
            Some(5.0),
            Some(6.0),
            Some(7.0),
        ];
        let runs = segments(&t, &v, 25_000);
        let firsts: Vec<(i64, usize)> = runs.iter().map(|r| (r[0].0, r.len())).collect();
        // Runs: 0-10 s; 30-40 s (after the None); 100-110 s (60 s of silence); 200 s alone.
        assert_eq!(firsts, [(0, 2), (30_000, 2), (100_000, 2), (200_000, 1)]);
        // Drawn: three subpaths and one dot, never a line across a gap.
        let html = render(&graph(
            &t,
            vec![Line {
                label: "a",
                avg: &v,
                max: &v,
            }],
            SeriesUnit::Percent,
        ))
        .into_string();
        let d = html
            .split("class=\"line s0\" d=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert_eq!(d.matches('M').count(), 3, "{d}");
        assert_eq!(d.matches('L').count(), 3, "{d}");
        assert_eq!(html.matches("<circle").count(), 1, "{html}");
        // The same values with the silence within the gap allowance join up.
        assert_eq!(segments(&t[..2], &v[..2], 10_000).len(), 1);
        assert_eq!(segments(&t[..2], &v[..2], 9_999).len(), 2);
    }

    #[test]
    fn the_value_axis_is_round_and_labelled_for_people() {
        assert_eq!(value_axis(100.0, SeriesUnit::Percent), (100.0, 25.0));
        assert_eq!(value_axis(37.0, SeriesUnit::Percent), (40.0, 10.0));
        assert_eq!(value_axis(0.0, SeriesUnit::Number), (1.0, 0.25));
        // Sizes step in their unit: 192 MiB goes up by 50 MiB to 200 MiB.
        let mib = 1024.0 * 1024.0;
        assert_eq!(value_axis(192.0 * mib, SeriesUnit::Bytes), (200.0 * mib, 50.0 * mib));
        assert_eq!(format_value(1.5 * 1024.0 * mib, SeriesUnit::Bytes), "1.5 GiB");
        assert_eq!(format_value(12.0 * mib, SeriesUnit::BytesPerSecond), "12 MiB/s");
        assert_eq!(format_value(512.0, SeriesUnit::BytesPerSecond), "512 B/s");
        assert_eq!(format_value(87.26, SeriesUnit::Percent), "87.3 %");
        assert_eq!(format_value(0.75, SeriesUnit::Number), "0.75");
        assert_eq!(format_value(0.5, SeriesUnit::Number), "0.5");
        assert_eq!(format_value(30.0, SeriesUnit::OpsPerSecond), "30 ops/s");
        let t = [0, 10_000];
        let v = [Some(150.0 * mib), Some(190.0 * mib)];
        let html = render(&graph(
            &t,
            vec![Line {
                label: "RSS",
                avg: &v,
                max: &v,
            }],
            SeriesUnit::Bytes,
        ))
        .into_string();
        for label in [">0 B<", ">50 MiB<", ">100 MiB<", ">200 MiB<"] {
            assert!(html.contains(label), "no {label} in {html}");
        }
        // Time labels every 10 minutes of the hour, in UTC.
        assert!(html.contains(">00:10<") && html.contains(">00:50<"), "{html}");
        assert_eq!(time_label(86_400_000 * 31, 86_400_000), "02-01");
    }

    #[test]
    fn names_are_escaped_and_the_summary_says_what_the_graph_shows() {
        let t = [0, 10_000, 20_000];
        let v = [Some(10.0), Some(30.0), Some(20.0)];
        let m = [Some(10.0), Some(90.0), Some(20.0)];
        let mut g = graph(
            &t,
            vec![Line {
                label: "<script>x</script>",
                avg: &v,
                max: &m,
            }],
            SeriesUnit::Percent,
        );
        g.title = "CPU & \"friends\"";
        let html = render(&g).into_string();
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;x&lt;/script&gt;"), "{html}");
        assert!(html.contains("CPU &amp; &quot;friends&quot;"), "{html}");
        assert!(html.contains("role=\"img\"") && html.contains("aria-labelledby=\"g-title g-desc\""));
        let s = summary(&g);
        assert_eq!(
            s,
            "<script>x</script>: average 20 %, highest 90 % at 1970-01-01 00:00:10 UTC, latest 20 %."
        );
        // The maximum is drawn where it differs from the average.
        assert!(html.contains("class=\"line max s0\""), "{html}");
        // Nothing to draw: the graph says so, to eyes and to screen readers.
        let none = [None, None, None];
        let g = graph(
            &t,
            vec![Line {
                label: "a",
                avg: &none,
                max: &none,
            }],
            SeriesUnit::Percent,
        );
        let html = render(&g).into_string();
        assert!(
            html.contains("No samples in this range.") && !html.contains("<path"),
            "{html}"
        );
    }
}
