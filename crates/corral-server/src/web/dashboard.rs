//! `/`: every VM in one compact table (one engine call for all of them, no request per VM),
//! a filter, the last failure, and the newest jobs.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use corral_types::{RunState, VmStatus};
use maud::{html, Markup};
use serde::Deserialize;

use super::actions::buttons;
use super::jobs;
use super::layout::{bytes, duration, html_response, shell, PageError, Section, Viewer};
use super::schedules;
use crate::AppState;

#[derive(Debug, Default, Deserialize)]
pub struct Filter {
    /// Keeps the VMs whose name, tags or state contain it (without JavaScript; with it the
    /// same filter runs as one types).
    #[serde(default)]
    q: String,
}

/// The text a row is filtered by: name, state and tags.
fn filter_text(st: &VmStatus) -> String {
    let mut t = format!("{} {}", st.name, st.state);
    for tag in &st.tags {
        t.push(' ');
        t.push_str(tag);
    }
    t.to_lowercase()
}

/// `GET /?q=`.
pub async fn page(
    State(state): State<AppState>,
    viewer: Viewer,
    q: Result<Query<Filter>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, PageError> {
    let q = q.map(|Query(f)| f.q.trim().to_lowercase()).unwrap_or_default();
    let list = state.engine.list().await?;
    let descriptions: HashMap<String, String> = state
        .engine
        .records()?
        .into_iter()
        .filter_map(|r| Some((r.spec.name.to_string(), r.spec.description?)))
        .collect();
    let recent = state.engine.jobs(None, 50)?;
    // The banner is a courtesy: a registry hiccup reading runs must not hide the VM list.
    let sched = state.engine.schedules().unwrap_or_default();
    let firing = state.engine.alerts(false, 100).unwrap_or_default();
    let running = list.iter().filter(|s| s.state == RunState::Running).count();
    let shown: Vec<&VmStatus> = list.iter().filter(|s| filter_text(s).contains(&q)).collect();
    let act = viewer.can_act();
    let body = html! {
        h1 { "Virtual machines" }
        (jobs::failure_banner(&recent))
        (schedules::failure_banner(&sched))
        (super::alerts::firing_banner(&firing))
        div #notices role="status" aria-live="polite" {}
        div.toolbar {
            p.muted {
                (list.len()) @if list.len() == 1 { " VM, " } @else { " VMs, " }
                span #running-count { (running) } " running"
            }
            form.filter method="get" action="/" role="search" data-filter-form {
                label for="filter" { "Filter" }
                input #filter type="search" name="q" value=(q) placeholder="name, tag or state"
                    data-filter-rows="vm-rows";
                button type="submit" { "Filter" }
            }
        }
        table.vms data-live {
            caption.visually-hidden { "Virtual machines" }
            thead {
                tr {
                    th scope="col" { "Name" }
                    th scope="col" { "State" }
                    th scope="col" { "Tags" }
                    th scope="col" class="num" { "vCPUs" }
                    th scope="col" class="num" { "Memory" }
                    th scope="col" { "Uptime" }
                    @if act { th scope="col" { "Actions" } }
                }
            }
            tbody #vm-rows {
                @for st in &shown {
                    (vm_row(st, descriptions.get(&st.name).map(String::as_str), act.then(|| viewer.csrf())))
                }
                @if shown.is_empty() {
                    tr.empty {
                        td colspan="7" {
                            @if list.is_empty() { "No VMs yet: " code { "corral vm create" } " defines one." }
                            @else { "No VM matches the filter." }
                        }
                    }
                }
            }
        }
        h2 { "Recent jobs" }
        (jobs::table(&recent[..recent.len().min(5)], 5, None, "Recent jobs"))
        p { a href="/jobs" { "All jobs" } }
    };
    Ok(html_response(
        StatusCode::OK,
        shell("VMs", Some(&viewer), Section::Vms, body),
    ))
}

/// One VM's row; `csrf` (operators) adds its action buttons.
fn vm_row(st: &VmStatus, description: Option<&str>, csrf: Option<&str>) -> Markup {
    let state = st.state.as_str();
    html! {
        tr data-vm=(st.name) data-state=(state) data-filter=(filter_text(st)) {
            th scope="row" {
                a href=(format!("/vms/{}", st.name)) { (st.name) }
                @if let Some(d) = description {
                    span.desc { (d) }
                }
            }
            td { span data-field="state" class=(format!("state state-{state}")) { (state) } }
            td {
                @for t in &st.tags {
                    span.tag { (t) } " "
                }
            }
            td.num { (st.cpus) }
            td.num { (bytes(st.memory)) }
            td data-field="uptime" { @if let Some(s) = st.uptime_seconds { (duration(s)) } }
            @if let Some(csrf) = csrf {
                td { (buttons(&st.name, st.state, csrf, "dashboard", false)) }
            }
        }
    }
}
