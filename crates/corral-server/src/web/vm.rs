//! `/vms/NAME`: one VM's resource use (graphs over `?range=hour|day|month`), spec, disks
//! with their backing chains, snapshots, backups (with restore), recent jobs and the end of
//! its serial console log.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path as FsPath;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use corral_engine::engine::backup::BackupSummary;
use corral_types::{DiskChain, VmSpec, VmStatus};
use maud::{html, Markup};

use super::actions::buttons;
use super::jobs;
use super::layout::{bytes, duration, html_response, shell, time_ms, PageError, Section, Viewer};
use super::resources::{range_switch, vm_graphs};
use crate::api::metrics::{read_history, RangeQuery, Subject};
use crate::error::{bad_query, vm_name};
use crate::AppState;

/// Lines of the console log shown.
const LOG_LINES: usize = 50;
/// How much of the end of the console log is read to find them.
const LOG_TAIL_BYTES: u64 = 64 * 1024;

/// `GET /vms/NAME?range=`. Parts the engine cannot read (a missing image, no backup store,
/// no metrics history) say so in their section; the rest of the page still shows.
pub async fn page(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(name): Path<String>,
    q: Result<Query<RangeQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, PageError> {
    let name = vm_name(&name)?;
    let Query(q) = q.map_err(bad_query)?;
    let range = q.range()?;
    let engine = &state.engine;
    let rec = engine.get(name.as_str())?;
    let history = read_history(&state, Subject::Vm(name.clone()), range).await;
    let status = engine.status(name.as_str()).await?;
    let spec = &rec.spec;
    let chains = engine.disk_info(name.as_str());
    let snapshots = engine.snapshot_list(name.as_str());
    let backups: Result<Vec<BackupSummary>, _> = engine
        .backup_list(Some(name.as_str()))
        .map(|l| l.iter().rev().map(Into::into).collect());
    let recent = engine.jobs(Some(name.as_str()), 10)?;
    let log = spec
        .serial_log
        .then(|| log_tail(&engine.paths(&spec.name).console_log(), LOG_LINES));
    let act = viewer.can_act();
    let body = html! {
        p.crumbs { a href="/" { "VMs" } " / " (spec.name) }
        section.vm-head data-live data-vm=(status.name) data-state=(status.state.as_str()) aria-labelledby="vm-title" {
            h1 #vm-title { (spec.name) " " span data-field="state" class=(format!("state state-{}", status.state)) { (status.state) } }
            @if let Some(d) = &spec.description { p.desc { (d) } }
            (facts(&status))
            @if act { (buttons(spec.name.as_str(), status.state, viewer.csrf(), "vm", true)) }
        }
        div #notices role="status" aria-live="polite" {}
        (jobs::failure_banner(&recent))
        section aria-labelledby="resources" {
            div.section-head {
                h2 #resources { "Resource use" }
                (range_switch(range, "resources"))
            }
            @match &history {
                Ok(h) => (vm_graphs(h, spec.memory.0)),
                Err(e) => p.muted { (e.message()) },
            }
        }
        section aria-labelledby="spec" {
            h2 #spec { "Definition" }
            (spec_list(spec))
            details {
                summary { "The whole definition (TOML, generation " (rec.generation) ")" }
                pre.toml { code { (spec.to_toml()) } }
            }
        }
        section aria-labelledby="disks" {
            h2 #disks { "Disks" }
            @match &chains {
                Ok(chains) => { @for c in chains { (chain(c)) } @if chains.is_empty() { p { "No disks." } } }
                Err(e) => p.error { (e) },
            }
        }
        section aria-labelledby="snapshots" {
            h2 #snapshots { "Snapshots" }
            @match &snapshots {
                Ok(s) if s.is_empty() => p.muted { "No snapshots." },
                Ok(s) => table {
                    thead { tr { th scope="col" { "Name" } th scope="col" { "Taken" } th scope="col" { "Memory" } th scope="col" { "Description" } } }
                    tbody {
                        @for sn in s {
                            tr {
                                th scope="row" { (sn.name) }
                                td { (time_ms(sn.date * 1000)) }
                                td { @if sn.memory { (bytes(sn.vm_state_size)) } @else { "disks only" } }
                                td { (sn.description.as_deref().unwrap_or("")) }
                            }
                        }
                    }
                },
                Err(e) => p.muted { (e) },
            }
        }
        section aria-labelledby="backups" {
            h2 #backups { "Backups" }
            @match &backups {
                Ok(b) if b.is_empty() => p.muted { "No backups of this VM yet." },
                Ok(b) => (backup_table(spec.name.as_str(), b, act.then(|| viewer.csrf()))),
                Err(e) => p.error { (e) },
            }
        }
        section aria-labelledby="vm-jobs" {
            h2 #vm-jobs { "Recent jobs" }
            (jobs::table(&recent, 10, Some(spec.name.as_str()), "Recent jobs of this VM"))
        }
        section aria-labelledby="console" {
            h2 #console { "Serial console (last " (LOG_LINES) " lines)" }
            @match &log {
                None => p.muted { "This VM keeps no console log (serial_log = false)." },
                Some(Ok(text)) if text.is_empty() => p.muted { "The console log is empty." },
                Some(Ok(text)) => pre.console tabindex="0" aria-label="Serial console output" { (text) },
                Some(Err(_)) => p.muted { "No console log yet: the VM has not been started." },
            }
        }
    };
    let title = spec.name.to_string();
    Ok(html_response(
        StatusCode::OK,
        shell(&title, Some(&viewer), Section::Vms, body),
    ))
}

fn facts(st: &VmStatus) -> Markup {
    html! {
        p.facts {
            (st.cpus) " vCPUs · " (bytes(st.memory))
            " · uptime " span data-field="uptime" data-empty="–" { @if let Some(s) = st.uptime_seconds { (duration(s)) } @else { "–" } }
            " · pid " span data-field="pid" data-empty="–" { @if let Some(pid) = st.pid { (pid) } @else { "–" } }
            @if let Some(v) = &st.vnc { " · VNC " (v) }
        }
        @if !st.last_log.is_empty() {
            div.alert role="alert" {
                p { strong { "The VM crashed. " } "The last lines of its logs:" }
                pre { @for l in &st.last_log { (l) "\n" } }
            }
        }
    }
}

fn spec_list(spec: &VmSpec) -> Markup {
    let path = |p: &Option<std::path::PathBuf>| p.as_ref().map(|p| p.display().to_string());
    html! {
        dl.spec {
            dt { "vCPUs" } dd { (spec.cpus) }
            dt { "Memory" } dd { (bytes(spec.memory.0)) }
            dt { "Machine" } dd { (spec.machine) ", accel " (spec.accel) }
            dt { "Tags" } dd { @for t in &spec.tags { span.tag { (t) } " " } @if spec.tags.is_empty() { "none" } }
            dt { "Autostart" } dd { @if spec.autostart { "yes" } @else { "no" } }
            dt { "Boot" } dd {
                (spec.boot.from)
                @if let Some(k) = path(&spec.boot.kernel) { ", kernel " code { (k) } }
                @if let Some(i) = path(&spec.boot.initrd) { ", initrd " code { (i) } }
            }
            dt { "Network" } dd { (spec.network.mode) }
            dt { "Display" } dd { (spec.display.mode) }
            dt { "Guest agent" } dd { @if spec.guest_agent { "yes" } @else { "no" } }
            dt { "Balloon" } dd { @if spec.balloon { "yes" } @else { "no" } }
        }
    }
}

/// A disk's backing chain, active layer first.
fn chain(c: &DiskChain) -> Markup {
    html! {
        table.chain {
            caption { (c.disk) " · " (bytes(c.virtual_size))
                @if let Some(r) = c.overlay_ratio { " · active layer " (format!("{r:.0}")) "% of the rest" }
                @if let Some(w) = &c.over_limit { " · " strong { "would consolidate: " (w) } }
            }
            thead { tr {
                th scope="col" { "Layer" } th scope="col" { "File" } th scope="col" { "Format" }
                th scope="col" class="num" { "Allocated" } th scope="col" class="num" { "Size" } th scope="col" { "Notes" }
            } }
            tbody {
                @for (i, l) in c.layers.iter().enumerate() {
                    tr {
                        td { @if i == 0 { "active" } @else { "backing " (i) } }
                        td { code { (l.path.display()) } }
                        td { (l.format) }
                        td.num { (bytes(l.allocated)) }
                        td.num { (bytes(l.virtual_size)) }
                        td {
                            @if l.base { "base · " }
                            @if let Some(o) = &l.owner { "of " (o) }
                            @if !l.used_by.is_empty() { " · used by " (l.used_by.join(", ")) }
                            @if l.snapshots > 0 { " · " (l.snapshots) " snapshots" }
                        }
                    }
                }
            }
        }
    }
}

/// The VM's backups, newest first; `csrf` (operators) adds the restore forms.
fn backup_table(vm: &str, list: &[BackupSummary], csrf: Option<&str>) -> Markup {
    html! {
        table.backups {
            thead { tr {
                th scope="col" { "Backup" } th scope="col" { "Kind" } th scope="col" { "Taken" }
                th scope="col" class="num" { "Size" } th scope="col" class="num" { "New" } th scope="col" { "Took" }
                @if csrf.is_some() { th scope="col" { "Restore" } }
            } }
            tbody {
                @for b in list {
                    tr {
                        th scope="row" { code { (b.id) } }
                        td { (b.kind) }
                        td { (b.time.get(..19).unwrap_or(&b.time).replace('T', " ")) " UTC" }
                        td.num { (bytes(b.logical_size)) }
                        td.num { (bytes(b.new_bytes)) }
                        td { (duration(b.duration_ms / 1000)) }
                        @if let Some(csrf) = csrf { td { (restore_forms(vm, &b.id, csrf)) } }
                    }
                }
            }
        }
    }
}

fn restore_forms(vm: &str, id: &str, csrf: &str) -> Markup {
    let field = format!("as-{id}");
    html! {
        form.inline method="post" action=(format!("/vms/{vm}/restore")) {
            input type="hidden" name="csrf" value=(csrf);
            input type="hidden" name="backup" value=(id);
            input type="hidden" name="mode" value="new";
            label for=(field) { "As new VM" }
            input #(field) type="text" name="as_name" required size="12" pattern="[A-Za-z0-9][A-Za-z0-9._-]*";
            button type="submit" { "Restore" }
        }
        form.inline method="post" action=(format!("/vms/{vm}/restore")) {
            input type="hidden" name="csrf" value=(csrf);
            input type="hidden" name="backup" value=(id);
            input type="hidden" name="mode" value="in-place";
            input type="hidden" name="confirmed" value="";
            button.danger type="submit" aria-label=(format!("Restore {vm} in place from {id}"))
                data-confirm=(format!("Restore {vm} in place from backup {id}? Its disks are overwritten: everything written since the backup is lost. The VM must be stopped.")) {
                "In place…"
            }
        }
    }
}

/// The last `lines` lines of a log file, as text fit to show: control characters (terminal
/// escapes, carriage returns) are dropped; the page escapes the rest.
fn log_tail(path: &FsPath, lines: usize) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let start = len.saturating_sub(LOG_TAIL_BYTES);
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::with_capacity((len - start) as usize);
    f.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    // Starting mid-file, the first line is probably cut: leave it out.
    let text = if start > 0 {
        text.split_once('\n').map(|(_, r)| r).unwrap_or("")
    } else {
        &text
    };
    let clean = strip_controls(text);
    let all: Vec<&str> = clean.lines().collect();
    Ok(all[all.len().saturating_sub(lines)..].join("\n"))
}

/// Drops ANSI escape sequences (`ESC [ … letter`) and other control characters but newlines
/// and tabs.
fn strip_controls(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for n in chars.by_ref() {
                    if n.is_ascii_alphabetic() || n == '~' {
                        break;
                    }
                }
            }
            continue;
        }
        if c == '\n' || c == '\t' || !c.is_control() {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_tail_keeps_the_last_lines_without_terminal_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("console.log");
        let mut text = String::new();
        for i in 0..200 {
            text.push_str(&format!("line {i}\r\n"));
        }
        text.push_str("\u{1b}[1;32mgreen\u{1b}[0m <b>\n");
        std::fs::write(&p, text).unwrap();
        let tail = log_tail(&p, 3).unwrap();
        assert_eq!(tail, "line 198\nline 199\ngreen <b>");
        assert!(log_tail(&dir.path().join("none"), 3).is_err());
    }
}
