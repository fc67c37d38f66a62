//! `/alerts`: the firing alerts, the history with each notification's outcome, and the rules
//! of the host config (`[[alert]]` and the built-in ones of `[alerts]`). Times are the host's
//! local time, as `corral alerts` prints them.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use corral_engine::schedule::local_time;
use corral_types::{AlertInfo, HumanDuration};
use maud::{html, Markup};

use super::layout::{html_response, shell, PageError, Section, Viewer};
use crate::AppState;

/// Past alerts the page lists.
const HISTORY_SHOWN: usize = 200;

/// `GET /alerts`.
pub async fn page(State(state): State<AppState>, viewer: Viewer) -> Result<Response, PageError> {
    let firing = state.engine.alerts(false, 1000)?;
    let history = state.engine.alerts(true, HISTORY_SHOWN)?;
    let body = html! {
        h1 { "Alerts" }
        p.muted {
            "Alerts fire when a rule's condition has held for its " code { "for" } " and resolve once it has stopped; "
            "each is sent once, and again every " code { "[alerts] repeat" } " while it fires (docs/alerts.md)."
        }
        section aria-labelledby="firing" {
            h2 #firing { "Firing" }
            @if firing.is_empty() {
                p.ok { "No alert is firing." }
            } @else {
                (table(&firing, false, "Firing alerts"))
            }
        }
        (rules(&state))
        section aria-labelledby="history" {
            h2 #history { "History" }
            p.muted { "The newest " (HISTORY_SHOWN) " alerts; resolved ones leave after " code { "[alerts] keep_history" } "." }
            @if history.is_empty() {
                p { "No alert has fired yet." }
            } @else {
                (table(&history, true, "Alert history"))
            }
        }
    };
    Ok(html_response(
        StatusCode::OK,
        shell("Alerts", Some(&viewer), Section::Alerts, body),
    ))
}

/// The dashboard's banner while alerts fire: each one's severity, subject and summary (the
/// first few), and a link to the Alerts page.
pub fn firing_banner(firing: &[AlertInfo]) -> Markup {
    const SHOWN: usize = 5;
    html! {
        @if !firing.is_empty() {
            div #alerts-firing.alert role="alert" {
                strong { (firing.len()) @if firing.len() == 1 { " alert firing: " } @else { " alerts firing: " } }
                ul {
                    @for a in firing.iter().take(SHOWN) {
                        li { (a.severity) " · " (a.subject()) ": " (a.summary) }
                    }
                    @if firing.len() > SHOWN { li { "and " (firing.len() - SHOWN) " more" } }
                }
                a href="/alerts" { "all alerts" }
            }
        }
    }
}

fn table(list: &[AlertInfo], history: bool, caption: &str) -> Markup {
    html! {
        table.alerts {
            caption.visually-hidden { (caption) }
            thead {
                tr {
                    @if history { th scope="col" { "Alert" } th scope="col" { "State" } }
                    th scope="col" { "Severity" }
                    th scope="col" { "Rule" }
                    th scope="col" { "VM" }
                    th scope="col" { "What" }
                    th scope="col" { "Since" }
                    @if history { th scope="col" { "Resolved" } }
                    th scope="col" { "Notifications" }
                }
            }
            tbody {
                @for a in list {
                    tr data-alert=(a.id) {
                        @if history {
                            td { (a.id) }
                            td {
                                @if a.firing() { span.state.state-firing { "firing" } }
                                @else { span.state.state-resolved { "resolved" } }
                            }
                        }
                        td { span class=(format!("state state-{}", a.severity)) { (a.severity) } }
                        td { (a.rule) }
                        td {
                            @match &a.vm {
                                Some(vm) => a href=(format!("/vms/{vm}")) { (vm) },
                                None => span.muted { "host" },
                            }
                        }
                        td.message {
                            (a.summary)
                            @if let Some(n) = &a.resolved_note { " " span.muted { "(" (n) ")" } }
                        }
                        td { (local_time(a.since_ms)) }
                        @if history { td { @if let Some(r) = a.resolved_ms { (local_time(r)) } @else { "-" } } }
                        td { (notifications(a)) }
                    }
                }
            }
        }
    }
}

fn notifications(a: &AlertInfo) -> Markup {
    html! {
        @if a.notifications.is_empty() {
            span.muted { "-" }
        }
        @for n in &a.notifications {
            @let tries = if n.attempts == 1 { String::new() } else { format!(", {} tries", n.attempts) };
            span.notified class=(if n.ok { "ok" } else { "error" }) title=[n.error.as_deref()] {
                (n.notifier) " " (n.event) ": " (if n.ok { "sent" } else { "FAILED" }) (tries)
            }
            br;
        }
    }
}

/// The rules the daemon evaluates.
fn rules(state: &AppState) -> Markup {
    let cfg = state.engine.config();
    let rules = state.engine.alert_rules();
    let notifiers = cfg.notify.names();
    html! {
        section aria-labelledby="rules" {
            h2 #rules { "Rules" }
            p.muted {
                "Notifiers: "
                @if notifiers.is_empty() { "none configured (alerts are only recorded)" }
                @else { (notifiers.join(", ")) }
                ". Built in: crash " (on(cfg.alerts.crash)) ", backup_failed " (on(cfg.alerts.backup_failed)) ", backup_age "
                @match cfg.alerts.backup_max_age { Some(d) => { "after " (d) }, None => "off" }
                "; repeat "
                @if cfg.alerts.repeat.0.is_zero() { "never" } @else { "every " (HumanDuration(cfg.alerts.repeat.0)) }
                "."
            }
            @if rules.is_empty() {
                p { "No " code { "[[alert]]" } " rule in the host config." }
            } @else {
                table {
                    caption.visually-hidden { "Alert rules" }
                    thead { tr {
                        th scope="col" { "Rule" } th scope="col" { "Condition" } th scope="col" { "VMs" }
                        th scope="col" { "Severity" } th scope="col" { "Notify" }
                    } }
                    tbody {
                        @for r in &rules {
                            tr {
                                td { (r.name) }
                                td { (r.condition_text()) }
                                td { @if r.metric.per_vm() { (r.vms.describe()) } @else { span.muted { "host" } } }
                                td { span class=(format!("state state-{}", r.severity)) { (r.severity) } }
                                td { @if r.notify.is_empty() { "-" } @else { (r.notify.join(", ")) } }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn on(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}
