//! `/schedules`: the `[[schedule]]` entries of the host config with their next and last run,
//! the recent runs with each target's result, and a calendar check; `/schedules/NAME`: one
//! schedule with its runs and (admins) its edit form. The form posts are in
//! `schedule_forms`; the dashboard shows [`failure_banner`].
//!
//! Times are the host's local time (`corral schedule list` prints the same), since that is
//! the zone the calendars are written in.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use corral_engine::schedule::{check_calendar, local_time, Calendar};
use corral_types::{ScheduleOutcome, ScheduleRun, ScheduleSpec, ScheduleStatus};
use maud::{html, Markup};
use serde::Deserialize;

use super::layout::{duration, html_response, shell, PageError, Section, Viewer};
use super::schedule_forms::{self, schedule_name, ScheduleForm};
use crate::error::ApiError;
use crate::AppState;

/// Runs listed on `/schedules` (all schedules) and on a schedule's own page.
const RUNS_SHOWN: usize = 20;
/// Times a calendar check lists.
const CHECK_COUNT: usize = 5;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PageQuery {
    /// A calendar expression to try out.
    check: Option<String>,
    /// What a form post just did (`saved`, `started`, `deleted`): a notice, from a fixed list.
    done: Option<String>,
    /// The schedule the notice is about.
    schedule: Option<String>,
}

/// The notice after a form post; only known words are shown (the schedule name is escaped).
fn notice(q: &PageQuery) -> Markup {
    // Only a well-formed name, so a crafted link cannot put other words in the notice.
    let name = q.schedule.as_deref().and_then(|n| schedule_name(n).ok()).unwrap_or("");
    let text = match q.done.as_deref() {
        Some("saved") => format!("Schedule {name} saved in the config file."),
        Some("started") => format!("Schedule {name} started; its run shows below when it ends."),
        Some("deleted") => format!("Schedule {name} deleted from the config file (its past runs stay listed)."),
        _ => String::new(),
    };
    html! {
        div #notices role="status" aria-live="polite" {
            @if !text.is_empty() { p.ok { (text) } }
        }
    }
}

/// `GET /schedules?check=EXPR`.
pub async fn page(
    State(state): State<AppState>,
    viewer: Viewer,
    q: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, PageError> {
    let q = q.map(|Query(q)| q).unwrap_or_default();
    let list = state.engine.schedules()?;
    let runs = state.engine.schedule_runs(None, RUNS_SHOWN)?;
    let check = q.check.as_deref().map(str::trim).filter(|c| !c.is_empty());
    let checked = check.map(|c| check_calendar(c, CHECK_COUNT));
    let status = match &checked {
        Some(Err(_)) => StatusCode::BAD_REQUEST,
        _ => StatusCode::OK,
    };
    let body = html! {
        h1 { "Schedules" }
        (failure_banner(&list))
        (notice(&q))
        p.muted {
            "The " code { "[[schedule]]" } " entries of the host config, run by " code { "corral serve" }
            " in the host's local time (docs/schedules.md)."
        }
        (table(&list, &viewer))
        section aria-labelledby="check" {
            h2 #check { "Check a calendar" }
            form.filter method="get" action="/schedules" {
                label for="check-expr" { "Calendar" }
                input #check-expr type="text" name="check" value=[check] placeholder="mon..fri 22:30";
                button type="submit" { "Check" }
            }
            @match &checked {
                Some(Ok(c)) => {
                    p { code { (c.calendar) } " is " code { (c.normalized) } "; the next " (c.next.len()) " times (" (c.time_zone) "):" }
                    ol.times { @for t in &c.next { li { (t) } } }
                },
                Some(Err(e)) => p.error role="alert" { (e) },
                None => {},
            }
        }
        @if viewer.role() >= corral_types::Role::Admin {
            section aria-labelledby="add" {
                h2 #add { "Add a schedule" }
                p.muted { "Saving under an existing name replaces that schedule." }
                (schedule_forms::form(&viewer, &ScheduleForm::new(check), false))
            }
        }
        section aria-labelledby="runs" {
            h2 #runs { "Recent runs" }
            (runs_table(&runs, true))
        }
    };
    Ok(html_response(
        status,
        shell("Schedules", Some(&viewer), Section::Schedules, body),
    ))
}

/// `GET /schedules/NAME`: one schedule, its buttons, its runs and (admins) its edit form.
pub async fn detail(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(name): Path<String>,
    q: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, PageError> {
    let q = q.map(|Query(q)| q).unwrap_or_default();
    let name = schedule_name(&name)?;
    let list = state.engine.schedules()?;
    let st = list
        .iter()
        .find(|s| s.spec.name == name)
        .ok_or_else(|| ApiError::from(corral_engine::EngineError::NoSuchSchedule(name.to_string())))?;
    let runs = state.engine.schedule_runs(Some(name), RUNS_SHOWN)?;
    let body = html! {
        p.crumbs { a href="/schedules" { "Schedules" } " / " (name) }
        h1 { "Schedule " (name) }
        (notice(&q))
        (table(std::slice::from_ref(st), &viewer))
        section aria-labelledby="runs" {
            h2 #runs { "Recent runs" }
            (runs_table(&runs, false))
        }
        @if viewer.role() >= corral_types::Role::Admin {
            section aria-labelledby="edit" {
                h2 #edit { "Edit" }
                (schedule_forms::form(&viewer, &ScheduleForm::from_spec(&st.spec), true))
            }
        }
    };
    Ok(html_response(
        StatusCode::OK,
        shell(&format!("Schedule {name}"), Some(&viewer), Section::Schedules, body),
    ))
}

/// The schedules table; operators get "Run now", admins also "Edit" and "Delete".
fn table(list: &[ScheduleStatus], viewer: &Viewer) -> Markup {
    let act = viewer.can_act();
    html! {
        table.schedules {
            caption.visually-hidden { "Schedules" }
            thead {
                tr {
                    th scope="col" { "Name" }
                    th scope="col" { "Calendar" }
                    th scope="col" { "Action" }
                    th scope="col" { "Selection" }
                    th scope="col" { "Options" }
                    th scope="col" { "Enabled" }
                    th scope="col" { "Next run" }
                    th scope="col" { "Last run" }
                    th scope="col" { "Running" }
                    @if act { th scope="col" { "Actions" } }
                }
            }
            tbody {
                @for st in list { (row(st, viewer)) }
                @if list.is_empty() {
                    tr.empty {
                        td colspan="10" {
                            "No schedules: add " code { "[[schedule]]" } " entries to the host config"
                            @if viewer.role() >= corral_types::Role::Admin { ", or use the form below" }
                            "."
                        }
                    }
                }
            }
        }
    }
}

fn failed(st: &ScheduleStatus) -> bool {
    st.last_run
        .as_ref()
        .is_some_and(|r| r.outcome == ScheduleOutcome::Failed)
}

fn row(st: &ScheduleStatus, viewer: &Viewer) -> Markup {
    let spec = &st.spec;
    let normalized = Calendar::parse(&spec.calendar).map(|c| c.to_string()).ok();
    html! {
        tr data-schedule=(spec.name) class=[failed(st).then_some("failed")] {
            th scope="row" { a href=(format!("/schedules/{}", spec.name)) { (spec.name) } }
            td {
                code { (spec.calendar) }
                @if let Some(n) = normalized.filter(|n| *n != spec.calendar.trim()) {
                    span.desc { "= " (n) }
                }
            }
            td { (spec.action) }
            td { (spec.selection_text()) }
            td { (options(spec)) }
            td { @if spec.enabled { "yes" } @else { span.muted { "no" } } }
            td { @match st.next_run_ms { Some(ms) => (local_time(ms)), None => span.muted { "-" } } }
            td.message { @match &st.last_run { Some(r) => (last_run(r)), None => span.muted { "never" } } }
            td { @if st.running { span.state.state-running { "running" } } }
            @if viewer.can_act() {
                td { (schedule_forms::buttons(spec, viewer)) }
            }
        }
    }
}

/// `full, skeleton on, keep_daily 7`, or `-`.
fn options(spec: &ScheduleSpec) -> String {
    let mut o = Vec::new();
    if spec.full {
        o.push("full".to_string());
    }
    match spec.skeleton {
        Some(true) => o.push("skeleton on".into()),
        Some(false) => o.push("skeleton off".into()),
        None => {}
    }
    let keeps = [
        ("keep_last", spec.keep_last),
        ("keep_daily", spec.keep_daily),
        ("keep_weekly", spec.keep_weekly),
        ("keep_monthly", spec.keep_monthly),
    ];
    for (k, v) in keeps {
        if let Some(v) = v {
            o.push(format!("{k} {v}"));
        }
    }
    if o.is_empty() {
        "-".into()
    } else {
        o.join(", ")
    }
}

/// The outcome as a badge, with `caught up` / `by hand`.
fn outcome(r: &ScheduleRun) -> Markup {
    let o = r.outcome.as_str();
    html! {
        span class=(format!("state state-{o}")) data-outcome=(o) { (o) }
        @if r.caught_up { " " span.tag { "caught up" } }
        @if r.manual { " " span.tag { "by hand" } }
    }
}

fn last_run(r: &ScheduleRun) -> Markup {
    html! {
        (outcome(r)) " " (local_time(r.finished_ms.unwrap_or(r.started_ms)))
        @if let Some(m) = &r.message { span.desc { (m) } }
    }
}

/// Runs, newest first, each with its targets' results.
fn runs_table(runs: &[ScheduleRun], with_schedule: bool) -> Markup {
    html! {
        table.runs {
            caption.visually-hidden { "Recent schedule runs" }
            thead {
                tr {
                    th scope="col" { "Run" }
                    @if with_schedule { th scope="col" { "Schedule" } }
                    th scope="col" { "Action" }
                    th scope="col" { "Started" }
                    th scope="col" { "Took" }
                    th scope="col" { "Outcome" }
                    th scope="col" { "Message" }
                    th scope="col" { "Targets" }
                }
            }
            tbody {
                @for r in runs {
                    tr data-run=(r.id) class=[(r.outcome == ScheduleOutcome::Failed).then_some("failed")] {
                        td { (r.id) }
                        @if with_schedule {
                            td { a href=(format!("/schedules/{}", r.schedule)) { (r.schedule) } }
                        }
                        td { (r.action) }
                        td { (local_time(r.started_ms)) }
                        td { @if let Some(f) = r.finished_ms { (duration(((f - r.started_ms).max(0) / 1000) as u64)) } }
                        td { (outcome(r)) }
                        td.message { @if let Some(m) = &r.message { (m) } }
                        td.message { (targets(r)) }
                    }
                }
                @if runs.is_empty() {
                    tr.empty { td colspan="8" { "No runs yet." } }
                }
            }
        }
    }
}

fn targets(r: &ScheduleRun) -> Markup {
    html! {
        @if !r.targets.is_empty() {
            ul.targets {
                @for t in &r.targets {
                    li data-target=(t.target) {
                        @if t.target == "store" { (t.target) }
                        @else { a href=(format!("/vms/{}", t.target)) { (t.target) } }
                        ": "
                        @if t.ok { span.ok { "ok" } } @else { span.error { "failed" } }
                        @if let Some(d) = &t.detail { ", " (d) }
                        @if let Some(e) = &t.error { ": " (e) }
                        @if let Some(b) = &t.backup { " (backup " code { (b) } ")" }
                        @if let Some(j) = t.job { " (job " (j) ")" }
                    }
                }
            }
        }
    }
}

/// The dashboard's banner of schedules whose last run failed (nothing when none did).
pub fn failure_banner(list: &[ScheduleStatus]) -> Markup {
    let failed: Vec<(&ScheduleStatus, &ScheduleRun)> = list
        .iter()
        .filter(|s| failed(s))
        .filter_map(|s| Some((s, s.last_run.as_ref()?)))
        .collect();
    html! {
        @if !failed.is_empty() {
            div #schedule-failures.alert role="alert" {
                strong { "Failed schedules: " }
                ul {
                    @for (s, r) in &failed {
                        li {
                            a href=(format!("/schedules/{}", s.spec.name)) { (s.spec.name) }
                            " (" (s.spec.action) ", " (local_time(r.finished_ms.unwrap_or(r.started_ms))) ")"
                            @if let Some(m) = &r.message { ": " (m) }
                        }
                    }
                }
                a href="/schedules" { "all schedules" }
            }
        }
    }
}
