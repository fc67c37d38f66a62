//! The API client behind `--remote URL` (or `CORRAL_REMOTE`): the same commands, sent to a
//! `corral serve` elsewhere with a bearer token, and printed as they would be printed here.
//!
//! The token comes from `CORRAL_TOKEN` or the file named by `--token-file` /
//! `CORRAL_TOKEN_FILE` (never from a command-line argument, which other users can read in
//! `ps`). A self-signed server certificate is trusted with `--ca-cert FILE` / `CORRAL_CA_CERT`.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use corral_types::JobInfo;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// An error the server answered: its `kind` maps to the same exit code as a local error.
#[derive(Debug)]
pub struct RemoteError {
    pub kind: String,
    pub message: String,
}

impl std::fmt::Display for RemoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RemoteError {}

pub struct Remote {
    base: String,
    token: String,
    agent: ureq::Agent,
}

impl Remote {
    /// A client for `url` (`http://host:8006` or `https://…`, with or without `/api/v1`).
    pub fn new(url: &str, token_file: Option<&Path>, ca_cert: Option<&Path>) -> anyhow::Result<Remote> {
        let base = url.trim_end_matches('/').trim_end_matches("/api/v1").to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            anyhow::bail!("--remote {url:?}: give the server's URL, like https://host:8006");
        }
        let token = match (std::env::var("CORRAL_TOKEN"), token_file) {
            (_, Some(f)) => std::fs::read_to_string(f)
                .with_context(|| format!("cannot read the token file {}", f.display()))?
                .trim()
                .to_string(),
            (Ok(t), None) => t.trim().to_string(),
            (Err(_), None) => anyhow::bail!(
                "--remote needs a token: set CORRAL_TOKEN (or --token-file FILE) to one made on the server with \
                 `corral token create --role operator`"
            ),
        };
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(ca) = ca_cert {
            let pem = std::fs::read(ca).with_context(|| format!("cannot read the CA certificate {}", ca.display()))?;
            let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                anyhow::bail!("{} holds no PEM certificate", ca.display());
            }
            tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .tls_config(tls.build())
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .build()
            .into();
        Ok(Remote { base, token, agent })
    }

    /// One call; a non-2xx answer becomes a [`RemoteError`] with the server's message.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<(u16, Value)> {
        let url = format!("{}/api/v1{path}", self.base);
        let auth = format!("Bearer {}", self.token);
        let sent = match (method, body) {
            ("GET", _) => self.agent.get(&url).header("Authorization", &auth).call(),
            ("DELETE", _) => self.agent.delete(&url).header("Authorization", &auth).call(),
            ("POST", Some(b)) => self.agent.post(&url).header("Authorization", &auth).send_json(b),
            ("POST", None) => self.agent.post(&url).header("Authorization", &auth).send_empty(),
            ("PUT", Some(b)) => self.agent.put(&url).header("Authorization", &auth).send_json(b),
            _ => anyhow::bail!("internal: no {method} call without a body"),
        };
        let mut resp = sent.with_context(|| format!("cannot reach corral serve at {}", self.base))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .read_to_string()
            .with_context(|| format!("reading the answer to {method} {path}"))?;
        let value: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .with_context(|| format!("{method} {path}: the server answered {status} with no JSON: {text}"))?
        };
        if (200..300).contains(&status) {
            return Ok((status, value));
        }
        let message = value["error"].as_str().map(str::to_string).unwrap_or(text);
        let kind = value["kind"].as_str().unwrap_or(match status {
            401 | 403 => "unauthorized",
            404 => "not-found",
            _ => "error",
        });
        Err(RemoteError {
            kind: kind.to_string(),
            message,
        }
        .into())
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let (_, v) = self.call("GET", path, None)?;
        serde_json::from_value(v).with_context(|| format!("GET {path}: an answer this corral does not understand"))
    }

    /// A VM action (`POST /vms/NAME/ACTION`): its `result`.
    pub fn action<T: DeserializeOwned>(&self, vm: &str, action: &str, body: Option<&Value>) -> anyhow::Result<T> {
        let path = format!("/vms/{}/{action}", encode(vm));
        let (_, v) = self.call("POST", &path, body)?;
        serde_json::from_value(v["result"].clone())
            .with_context(|| format!("POST {path}: an answer this corral does not understand"))
    }

    /// A call that may start a job (202): follows the job to its end, showing its progress as
    /// a local job's is shown, and returns what the call would have answered.
    pub fn job_call<T: DeserializeOwned>(&self, path: &str, body: Option<&Value>, json: bool) -> anyhow::Result<T> {
        let (status, v) = self.call("POST", path, body)?;
        let v = if status == 202 {
            let id = v["job"]["id"]
                .as_i64()
                .with_context(|| format!("POST {path}: 202 without a job"))?;
            self.follow(id, json)?
        } else {
            v
        };
        serde_json::from_value(v).with_context(|| format!("POST {path}: an answer this corral does not understand"))
    }

    /// Polls job `id` until it ends; its kept result (or its error).
    fn follow(&self, id: i64, json: bool) -> anyhow::Result<Value> {
        let mut view = crate::progress::View::new(json);
        let mut ended_polls = 0;
        loop {
            let v: Value = self.get(&format!("/jobs/{id}"))?;
            let job: JobInfo = serde_json::from_value(v.clone()).context("a job this corral does not understand")?;
            view.show(&job);
            match v.get("result") {
                Some(r) if r.get("ok").is_some() => return Ok(r["ok"].clone()),
                Some(r) => {
                    return Err(RemoteError {
                        kind: r["kind"].as_str().unwrap_or("error").to_string(),
                        message: r["error"].as_str().unwrap_or("the job failed").to_string(),
                    }
                    .into())
                }
                None if job.state.is_finished() => {
                    // The result is kept just after the job ends; a daemon that restarted
                    // meanwhile no longer has it.
                    ended_polls += 1;
                    if ended_polls > 10 {
                        anyhow::bail!(
                            "job {id} ended ({}) but the server no longer has its result: {}",
                            job.state,
                            job.message.unwrap_or_default()
                        );
                    }
                }
                None => {}
            }
            std::thread::sleep(Duration::from_millis(if job.state.is_finished() { 100 } else { 300 }));
        }
    }
}

/// A path segment: names are already restricted to safe characters, but a bad one must reach
/// the server as itself (to be refused there), not as a different path.
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Runs one command against the server.
pub fn run(remote: &Remote, command: crate::cli::Command, json: bool) -> anyhow::Result<()> {
    use crate::cli::{BackupCmd, Command, JobCmd, ScheduleCmd, SnapshotCmd, VmCmd};
    use corral_engine::engine::backup::{BackupReport, BackupSummary};
    use corral_types::{StopOutcome, VmStatus};
    use serde_json::json;

    match command {
        Command::Vm(VmCmd::List) => crate::vm::print_list(&remote.get::<Vec<VmStatus>>("/vms")?, json),
        Command::Vm(VmCmd::Status { name }) => {
            let v: Value = remote.get(&format!("/vms/{}", encode(&name)))?;
            crate::vm::print_status(&serde_json::from_value(v["status"].clone())?, json)
        }
        Command::Vm(VmCmd::Show { name, argv }) => {
            if argv {
                anyhow::bail!("`vm show --argv` needs the server's QEMU setup: run it on the server");
            }
            let v: Value = remote.get(&format!("/vms/{}", encode(&name)))?;
            let st: VmStatus = serde_json::from_value(v["status"].clone())?;
            let spec: corral_types::VmSpec = serde_json::from_value(v["spec"].clone())?;
            let generation = v["generation"].as_i64().unwrap_or_default();
            crate::vm::print_show(
                &st,
                &spec,
                generation,
                v["console_log"].as_str().unwrap_or("-"),
                None,
                json,
            )
        }
        Command::Vm(VmCmd::Start { name }) => crate::vm::print_start(&remote.action(&name, "start", None)?, json),
        Command::Vm(VmCmd::Stop { name, timeout, force }) => {
            let body = json!({"timeout_s": timeout.map(|t| t.0.as_secs()), "force": force});
            crate::vm::print_stop(&remote.action::<StopOutcome>(&name, "stop", Some(&body))?, json)
        }
        Command::Vm(VmCmd::Save { name }) => crate::vm::print_save(&remote.action(&name, "save", None)?, json),
        Command::Vm(VmCmd::Resume { name }) => {
            let info = remote.action(&name, "resume", None)?;
            crate::vm::print_resume(&name, info, json)
        }
        Command::Vm(VmCmd::Pause { name }) => {
            remote.action::<Value>(&name, "pause", None)?;
            crate::vm::done(json, &name, "paused")
        }
        Command::Vm(VmCmd::Kill { name }) => {
            remote.action::<Value>(&name, "kill", None)?;
            crate::vm::done(json, &name, "killed")
        }
        Command::Backup(BackupCmd::Run {
            vms,
            tag,
            all,
            exclude,
            full,
            skeleton,
            all_disks,
        }) => {
            let skeleton = match (skeleton, all_disks) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            };
            let selected = select(remote, &vms, &tag, all, &exclude)?;
            let mut reports = vec![];
            for vm in &selected {
                let body = json!({"full": full, "skeleton": skeleton});
                let r: BackupReport = remote.job_call(&format!("/vms/{}/backup", encode(vm)), Some(&body), json)?;
                crate::backup::print_backup_line(&r, json);
                reports.push(r);
            }
            if json {
                crate::output::json(&reports);
            }
            Ok(())
        }
        Command::Backup(BackupCmd::Restore {
            id,
            as_name,
            disks,
            in_place,
        }) => {
            let body = json!({"as": as_name, "disks": disks, "in_place": in_place});
            let r = remote.job_call(&format!("/backups/{}/restore", encode(&id)), Some(&body), json)?;
            crate::backup::print_restore(&r, json);
            Ok(())
        }
        Command::Backup(BackupCmd::List { vm }) => {
            let path = match &vm {
                Some(v) => format!("/backups?vm={}", encode(v)),
                None => "/backups".into(),
            };
            crate::backup::print_backup_list(&remote.get::<Vec<BackupSummary>>(&path)?, json);
            Ok(())
        }
        Command::Vm(VmCmd::Delete { name, keep_disks }) => {
            let (_, v) = remote.call(
                "DELETE",
                &format!("/vms/{}?keep_disks={keep_disks}", encode(&name)),
                None,
            )?;
            crate::vm::print_deleted(&serde_json::from_value(v)?, json)
        }
        Command::Vm(VmCmd::Clone {
            source,
            name,
            linked,
            full: _,
            from_snapshot,
        }) => {
            let body = json!({"name": name, "linked": linked, "from_snapshot": from_snapshot});
            let r = remote.job_call(&format!("/vms/{}/clone", encode(&source)), Some(&body), json)?;
            crate::vm::print_cloned(&r, json)
        }
        Command::Snapshot(SnapshotCmd::List { vm }) => {
            let list: Vec<corral_engine::engine::snapshot::SnapshotInfo> =
                remote.get(&format!("/vms/{}/snapshots", encode(&vm)))?;
            crate::snapshot::print_list(&vm, &list, json);
            Ok(())
        }
        Command::Snapshot(SnapshotCmd::Create {
            vm,
            name,
            description,
            no_memory,
        }) => {
            let body = json!({"name": name, "description": description, "no_memory": no_memory});
            let s = remote.job_call(&format!("/vms/{}/snapshots", encode(&vm)), Some(&body), json)?;
            crate::snapshot::print_created(&vm, &s, json);
            Ok(())
        }
        Command::Snapshot(SnapshotCmd::Revert { vm, name }) => {
            let path = format!("/vms/{}/snapshots/{}/revert", encode(&vm), encode(&name));
            let s = remote.job_call(&path, None, json)?;
            crate::snapshot::print_reverted(&vm, &s, json);
            Ok(())
        }
        Command::Snapshot(SnapshotCmd::Delete { vm, name }) => {
            remote.call(
                "DELETE",
                &format!("/vms/{}/snapshots/{}", encode(&vm), encode(&name)),
                None,
            )?;
            crate::snapshot::print_deleted(&vm, &name, json);
            Ok(())
        }
        Command::Schedule(ScheduleCmd::List) => {
            crate::schedule::print_list(&remote.get::<Vec<corral_types::ScheduleStatus>>("/schedules")?, json);
            Ok(())
        }
        Command::Job(JobCmd::List { vm, limit }) => {
            let path = match &vm {
                Some(v) => format!("/jobs?vm={}&limit={limit}", encode(v)),
                None => format!("/jobs?limit={limit}"),
            };
            crate::layers::print_jobs(&remote.get::<Vec<JobInfo>>(&path)?, json)
        }
        Command::Alerts(crate::cli::AlertsArgs { cmd: None, all, limit }) => {
            let list: Vec<corral_types::AlertInfo> = remote.get(&format!("/alerts?all={all}&limit={limit}"))?;
            crate::alerts::print_list(&list, all, json);
            Ok(())
        }
        Command::Job(JobCmd::Show { id }) => {
            crate::layers::print_jobs(&[remote.get::<JobInfo>(&format!("/jobs/{id}"))?], json)
        }
        // The daemon's latest pass: its rates are over its own `[metrics] interval`, so
        // `--interval` only paces `--watch` here.
        Command::Metrics {
            vms,
            interval,
            watch,
            summary: false,
            once: _,
        } => {
            let mut last = None;
            loop {
                let mut r: corral_types::MetricsReport = remote.get("/metrics")?;
                if let Some(missing) = vms.iter().find(|n| !r.vms.iter().any(|v| &v.name == *n)) {
                    anyhow::bail!("no VM named {missing:?} on the server (`corral vm list` shows them)");
                }
                if !vms.is_empty() {
                    r.vms.retain(|v| vms.contains(&v.name));
                }
                if last != Some(r.taken_ms) {
                    last = Some(r.taken_ms);
                    crate::metrics::print(&r, json, watch);
                }
                if !watch {
                    return Ok(());
                }
                std::thread::sleep(interval.0.max(std::time::Duration::from_secs(1)));
            }
        }
        other => anyhow::bail!(
            "`corral {}` is not available with --remote: run it on the server (or unset CORRAL_REMOTE)",
            command_name(&other)
        ),
    }
}

/// `vm console`, `disk add`…: the words that name a command, for messages.
fn command_name(c: &crate::cli::Command) -> String {
    let debug = format!("{c:?}");
    // `Vm(Console { … })` → `vm console`: the leading variant names, up to the first field
    // (a field's value must not be taken for a subcommand: `Serve { tls_cert: None, … }`).
    debug
        .split(|ch: char| !ch.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .take_while(|w| w.chars().next().is_some_and(char::is_uppercase))
        .map(|w| {
            let mut out = String::new();
            for (i, ch) in w.chars().enumerate() {
                if ch.is_uppercase() && i > 0 {
                    out.push('-');
                }
                out.push(ch.to_ascii_lowercase());
            }
            out
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The VMs a `backup run` selects, by the same rule as the local command, among the
/// server's VMs.
fn select(
    remote: &Remote,
    vms: &[String],
    tags: &[String],
    all: bool,
    exclude: &[String],
) -> anyhow::Result<Vec<String>> {
    let list: Vec<corral_types::VmStatus> = remote.get("/vms")?;
    let known: Vec<(String, Vec<String>)> = list.into_iter().map(|s| (s.name, s.tags)).collect();
    Ok(corral_engine::engine::backup::select_vms(
        &known, vms, tags, all, exclude,
    )?)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    fn name(args: &[&str]) -> String {
        let cli = crate::cli::Cli::parse_from(std::iter::once("corral").chain(args.iter().copied()));
        super::command_name(&cli.command)
    }

    #[test]
    fn command_names_stop_at_the_first_field() {
        assert_eq!(name(&["serve"]), "serve");
        assert_eq!(name(&["vm", "console", "Web"]), "vm console");
        assert_eq!(name(&["host", "stop-all"]), "host stop-all");
        assert_eq!(name(&["disk", "info", "a"]), "disk info");
    }
}
