//! `/host`: what the VMs are given against what the host has (`Engine::metrics_summary`),
//! and the host's CPU, memory, load and disk space over `?range=hour|day|month`.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use corral_types::MetricsSummary;
use maud::{html, Markup};

use super::layout::{bytes, html_response, shell, PageError, Section, Viewer};
use super::resources::{host_graphs, range_switch};
use crate::api::metrics::{read_history, RangeQuery, Subject};
use crate::error::bad_query;
use crate::AppState;

/// `GET /host?range=`. The summary reads every disk's chain with qemu-img; if that fails the
/// graphs still show, and the other way round.
pub async fn page(
    State(state): State<AppState>,
    viewer: Viewer,
    q: Result<Query<RangeQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, PageError> {
    let Query(q) = q.map_err(bad_query)?;
    let range = q.range()?;
    // The summary reads every disk's chain with qemu-img (about 1.2 s for 200 VMs here): on
    // the blocking pool, so the daemon's async workers keep answering meanwhile.
    let engine = state.engine.clone();
    let summary = async move {
        tokio::task::spawn_blocking(move || tokio::runtime::Handle::current().block_on(engine.metrics_summary()))
            .await
            .unwrap_or_else(|e| Err(corral_engine::EngineError::op("host", "summary", e.to_string())))
    };
    let (summary, history) = tokio::join!(summary, read_history(&state, Subject::Host, range));
    let cpus = summary.as_ref().map_or(0, |s| s.host_cpus);
    let body = html! {
        h1 { "Host" }
        section aria-labelledby="given" {
            h2 #given { "What the VMs are given" }
            @match &summary {
                Ok(s) => (summary_tables(s)),
                Err(e) => p.error { (e) },
            }
        }
        section aria-labelledby="resources" {
            div.section-head {
                h2 #resources { "Resource use" }
                (range_switch(range, "resources"))
            }
            @match &history {
                Ok(h) => (host_graphs(h, cpus)),
                Err(e) => p.muted { (e.message()) },
            }
        }
    };
    Ok(html_response(
        StatusCode::OK,
        shell("Host", Some(&viewer), Section::Host, body),
    ))
}

fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "–".to_string();
    }
    format!("{:.0} %", 100.0 * part as f64 / whole as f64)
}

fn summary_tables(s: &MetricsSummary) -> Markup {
    html! {
        p {
            (s.vms) @if s.vms == 1 { " VM, " } @else { " VMs, " } (s.vms_running) " running."
        }
        table.summary {
            caption.visually-hidden { "Resources given to VMs against the host's" }
            thead { tr {
                th scope="col" { "" }
                th scope="col" class="num" { "All VMs" }
                th scope="col" class="num" { "Running VMs" }
                th scope="col" class="num" { "Host" }
                th scope="col" class="num" { "Running / host" }
            } }
            tbody {
                tr {
                    th scope="row" { "vCPUs" }
                    td.num { (s.vcpus_defined) }
                    td.num { (s.vcpus_running) }
                    td.num { (s.host_cpus) " CPUs" }
                    td.num { (percent(s.vcpus_running as u64, s.host_cpus as u64)) }
                }
                tr {
                    th scope="row" { "Memory" }
                    td.num { (bytes(s.memory_defined_bytes)) }
                    td.num { (bytes(s.memory_running_bytes)) " (resident " (bytes(s.memory_rss_bytes)) ")" }
                    td.num { (bytes(s.host_memory_bytes)) }
                    td.num { (percent(s.memory_running_bytes, s.host_memory_bytes)) }
                }
                tr {
                    th scope="row" { "Disks" }
                    td.num { (bytes(s.disk_provisioned_bytes)) " provisioned" }
                    td.num { "" }
                    td.num { (bytes(s.disk_used_bytes)) " used" }
                    td.num { (percent(s.disk_used_bytes, s.disk_provisioned_bytes)) " of provisioned" }
                }
            }
        }
        table.filesystems {
            caption { "File systems" }
            thead { tr {
                th scope="col" { "For" } th scope="col" { "Path" }
                th scope="col" class="num" { "Used" } th scope="col" class="num" { "Size" } th scope="col" class="num" { "Used %" }
            } }
            tbody {
                @for f in &s.filesystems {
                    tr {
                        th scope="row" { (f.role) }
                        td { code { (f.path) } }
                        td.num { (bytes(f.size_bytes.saturating_sub(f.available_bytes))) }
                        td.num { (bytes(f.size_bytes)) }
                        td.num { (format!("{:.0} %", f.used_percent())) }
                    }
                }
            }
        }
    }
}
