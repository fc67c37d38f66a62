//! The "Resource use" graphs of the VM page and of the Host page, from the daemon's history,
//! with a range switch made of plain links (`?range=`), so it works without JavaScript.

use corral_types::{HistoryRange, MetricsHistory, SeriesUnit};
use maud::{html, Markup};

use super::graphs::{render, Graph, Line};
use super::layout::bytes;

/// Links to the same page for each range; the current one is marked. `anchor` brings the
/// reader back to the graphs.
pub fn range_switch(current: HistoryRange, anchor: &str) -> Markup {
    html! {
        nav.ranges aria-label="Time range" {
            @for r in HistoryRange::ALL {
                a href=(format!("?range={r}#{anchor}")) aria-current=[(r == current).then_some("true")] {
                    "Last " (r)
                }
            }
        }
    }
}

/// What a graph shows: series (by name, with the label to give them) of a history.
pub struct Spec<'a> {
    pub id: &'a str,
    pub title: &'a str,
    pub unit: SeriesUnit,
    pub series: &'a [(&'a str, &'a str)],
    pub min_top: f64,
    pub area: bool,
    pub reference: Option<(f64, String)>,
    pub empty: &'a str,
}

pub fn graph(h: &MetricsHistory, s: Spec) -> Markup {
    let lines = s
        .series
        .iter()
        .filter_map(|(name, label)| {
            let series = h.series(name)?;
            Some(Line {
                label,
                avg: &series.avg,
                max: &series.max,
            })
        })
        .collect();
    render(&Graph {
        id: s.id,
        title: s.title,
        unit: s.unit,
        times: &h.times_ms,
        from_ms: h.from_ms,
        to_ms: h.to_ms,
        gap_ms: h.gap_ms,
        lines,
        min_top: s.min_top,
        area: s.area,
        reference: s.reference,
        empty: s.empty,
    })
}

const NO_SAMPLES: &str = "No samples in this range: the VM was not running, or the daemon was not.";

/// A VM's CPU, memory, disk and network graphs.
pub fn vm_graphs(h: &MetricsHistory, memory_bytes: u64) -> Markup {
    html! {
        div.graphs {
            (graph(h, Spec {
                id: "g-cpu", title: "CPU (% of its vCPUs)", unit: SeriesUnit::Percent,
                series: &[("cpu_percent_of_vcpus", "CPU")], min_top: 100.0, area: false, reference: None,
                empty: NO_SAMPLES,
            }))
            (graph(h, Spec {
                id: "g-memory", title: "Memory (resident)", unit: SeriesUnit::Bytes,
                series: &[("rss_bytes", "Resident")], min_top: 0.0, area: true,
                reference: Some((memory_bytes as f64, format!("configured {}", bytes(memory_bytes)))),
                empty: NO_SAMPLES,
            }))
            (graph(h, Spec {
                id: "g-disk", title: "Disk I/O (all disks)", unit: SeriesUnit::BytesPerSecond,
                series: &[("disk_read_bytes_per_second", "Read"), ("disk_write_bytes_per_second", "Write")],
                min_top: 0.0, area: false, reference: None, empty: NO_SAMPLES,
            }))
            (graph(h, Spec {
                id: "g-net", title: "Network", unit: SeriesUnit::BytesPerSecond,
                series: &[("net_rx_bytes_per_second", "Received"), ("net_tx_bytes_per_second", "Sent")],
                min_top: 0.0, area: false, reference: None,
                empty: "No network figures: they come from the guest agent (guest_agent = true and qemu-ga in the guest).",
            }))
        }
    }
}

/// The host's CPU, memory, load and file system graphs.
pub fn host_graphs(h: &MetricsHistory, cpus: u32) -> Markup {
    let total = h
        .series("memory_total_bytes")
        .and_then(|s| s.avg.iter().rev().flatten().next().copied());
    const NONE: &str = "No samples in this range: the daemon was not running.";
    html! {
        div.graphs {
            (graph(h, Spec {
                id: "g-host-cpu", title: "CPU (% of all CPUs)", unit: SeriesUnit::Percent,
                series: &[("cpu_percent", "CPU")], min_top: 100.0, area: false, reference: None, empty: NONE,
            }))
            (graph(h, Spec {
                id: "g-host-memory", title: "Memory used", unit: SeriesUnit::Bytes,
                series: &[("memory_used_bytes", "Used")], min_top: 0.0, area: true,
                reference: total.map(|t| (t, format!("total {}", bytes(t as u64)))), empty: NONE,
            }))
            (graph(h, Spec {
                id: "g-host-load", title: "Load average", unit: SeriesUnit::Number,
                series: &[("load1", "1 min"), ("load5", "5 min"), ("load15", "15 min")],
                min_top: 0.0, area: false,
                reference: (cpus > 0).then(|| (cpus as f64, format!("{cpus} CPUs"))), empty: NONE,
            }))
            (graph(h, Spec {
                id: "g-host-space", title: "File system space used", unit: SeriesUnit::Percent,
                series: &[("data_used_percent", "Data"), ("backup_used_percent", "Backups")],
                min_top: 100.0, area: false, reference: None, empty: NONE,
            }))
        }
    }
}
