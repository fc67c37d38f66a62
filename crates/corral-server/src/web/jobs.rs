//! `/jobs`: recent jobs with their progress; our script keeps the rows live from the `job`
//! events of `/api/v1/events` (and adds rows for jobs that start meanwhile).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use corral_types::{JobInfo, JobState};
use maud::{html, Markup};

use super::layout::{duration, html_response, shell, time_ms, PageError, Section, Viewer};
use crate::AppState;

/// How many jobs the page lists.
const JOBS_SHOWN: usize = 100;

/// `GET /jobs`.
pub async fn page(State(state): State<AppState>, viewer: Viewer) -> Result<Response, PageError> {
    let jobs = state.engine.jobs(None, JOBS_SHOWN)?;
    let body = html! {
        h1 { "Jobs" }
        p.muted { "The newest first; running jobs update as they progress." }
        div #notices role="status" aria-live="polite" {}
        (table(&jobs, JOBS_SHOWN, None, "All recent jobs"))
    };
    Ok(html_response(
        StatusCode::OK,
        shell("Jobs", Some(&viewer), Section::Jobs, body),
    ))
}

/// A job table that our script keeps live: `max` rows at most, only `vm`'s jobs if given.
pub fn table(jobs: &[JobInfo], max: usize, vm: Option<&str>, caption: &str) -> Markup {
    html! {
        table.jobs data-live data-jobs data-max=(max) data-jobs-vm=[vm] {
            caption.visually-hidden { (caption) }
            thead {
                tr {
                    th scope="col" { "Job" }
                    th scope="col" { "VM" }
                    th scope="col" { "Kind" }
                    th scope="col" { "Target" }
                    th scope="col" { "State" }
                    th scope="col" { "Progress" }
                    th scope="col" { "Started" }
                    th scope="col" { "Took" }
                    th scope="col" { "Message" }
                }
            }
            tbody {
                @for j in jobs {
                    (row(j))
                }
                @if jobs.is_empty() {
                    tr.empty { td colspan="9" { "No jobs yet." } }
                }
            }
        }
        // What the script fills in for a job that appears while the page is open.
        template.job-row {
            (row_shell(None))
        }
    }
}

fn row(j: &JobInfo) -> Markup {
    row_shell(Some(j))
}

/// A job's row; `None` is the empty shell of the template (same cells, same fields).
fn row_shell(j: Option<&JobInfo>) -> Markup {
    let id = j.map(|j| j.id.to_string()).unwrap_or_default();
    let state = j.map(|j| j.state.as_str()).unwrap_or("");
    html! {
        tr #(format!("job-{id}")) data-job=(id) data-state=(state) {
            td data-field="id" { (id) }
            td data-field="vm" {
                @if let Some(j) = j { a href=(format!("/vms/{}", j.vm)) { (j.vm) } }
            }
            td data-field="kind" { @if let Some(j) = j { (j.kind) } }
            td data-field="target" { @if let Some(j) = j { (j.target) } }
            td { span data-field="state" class=(format!("state state-{state}")) { (state) } }
            td.progress {
                @match j {
                    Some(j) => (progress(j)),
                    None => { progress data-field="progress" aria-label="Progress" {} span data-field="percent" {} },
                }
            }
            td data-field="started" { @if let Some(j) = j { (time_ms(j.started_ms)) } }
            td data-field="took" {
                @if let Some(ms) = j.and_then(|j| j.finished_ms.map(|f| f - j.started_ms)) {
                    (duration((ms.max(0) / 1000) as u64))
                }
            }
            td.message data-field="message" { @if let Some(m) = j.and_then(|j| j.message.as_deref()) { (m) } }
        }
    }
}

/// A `<progress>` (indeterminate while a running job's total is unknown) and its percentage.
fn progress(j: &JobInfo) -> Markup {
    let label = format!("Progress of job {}", j.id);
    let (value, max) = match (j.state, j.total) {
        (JobState::Succeeded, 0) => (Some(1), 1),
        (_, 0) => (None, 1),
        (_, t) => (Some(j.done.min(t)), t),
    };
    let percent = match (j.state, value) {
        (JobState::Running, None) => String::new(),
        (_, Some(v)) => format!("{}%", v * 100 / max),
        (_, None) => String::new(),
    };
    html! {
        progress data-field="progress" aria-label=(label) max=(max) value=[value] {}
        " "
        span data-field="percent" { (percent) }
    }
}

/// The failed job people should see: the newest failed (or interrupted) one that no later
/// successful job of the same kind on the same VM has made up for.
pub fn last_failure(jobs: &[JobInfo]) -> Option<&JobInfo> {
    jobs.iter().enumerate().find_map(|(i, j)| {
        let failed = matches!(j.state, JobState::Failed | JobState::Interrupted);
        let made_up = jobs[..i]
            .iter()
            .any(|n| n.vm == j.vm && n.kind == j.kind && n.state == JobState::Succeeded);
        (failed && !made_up).then_some(j)
    })
}

/// The banner of the last failure (hidden but present, so the script can fill it live).
pub fn failure_banner(jobs: &[JobInfo]) -> Markup {
    let f = last_failure(jobs);
    html! {
        div #last-failure.alert role="alert" hidden[f.is_none()] {
            @if let Some(j) = f {
                strong { "Last failed job: " }
                (j.kind) " of " a href=(format!("/vms/{}", j.vm)) { (j.vm) }
                " (job " (j.id) ", " (time_ms(j.finished_ms.unwrap_or(j.started_ms))) ")"
                @if let Some(m) = &j.message { ": " (m) }
                " · " a href="/jobs" { "all jobs" }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: i64, vm: &str, kind: &str, state: JobState) -> JobInfo {
        JobInfo {
            id,
            vm: vm.into(),
            kind: kind.into(),
            target: String::new(),
            state,
            done: 0,
            total: 0,
            started_ms: 0,
            finished_ms: None,
            message: None,
            pid: 1,
            bytes: None,
        }
    }

    #[test]
    fn a_failure_shows_until_a_later_success_of_the_same_kind_and_vm() {
        use JobState::*;
        // Newest first.
        let jobs = vec![
            job(4, "a", "backup", Succeeded),
            job(3, "b", "backup", Failed),
            job(2, "a", "backup", Failed),
        ];
        assert_eq!(last_failure(&jobs).map(|j| j.id), Some(3));
        let jobs = vec![job(5, "b", "restore", Succeeded), job(3, "b", "backup", Failed)];
        assert_eq!(last_failure(&jobs).map(|j| j.id), Some(3));
        let jobs = vec![job(6, "b", "backup", Succeeded), job(3, "b", "backup", Failed)];
        assert_eq!(last_failure(&jobs), None);
    }
}
