//! The evaluator: a pure state machine. Each pass gets the time (injected: tests drive it),
//! a [`MetricsReport`] and, when known, the backup facts; it answers what changed
//! ([`AlertChange`]: fired, resolved, repeated). No I/O: `Alerts` (mod.rs) records the
//! changes in the history and hands them to the notifier.
//!
//! Per alert (rule × VM, or rule × host):
//! - it **fires once** when the condition has held for the rule's `for`;
//! - it **resolves once** when the condition has not held for `keep_firing_for` (default:
//!   `for`, at least 1 minute), so a value that flaps around the threshold fires once and
//!   stays firing instead of sending a mail per sample;
//! - while firing it is sent again only every `[alerts] repeat`;
//! - a value that cannot be known this pass (a running VM's rate in a report without an
//!   interval) changes nothing; a VM without QEMU has no value, which does not hold;
//! - when its VM disappears (deleted or renamed), its rule leaves the config, or the VM no
//!   longer matches the rule's `vms`, an open alert is closed **quietly**: resolved in the
//!   history with a note, no notification (nobody needs a mail saying a deleted VM is fine).
//!
//! Built-in rules: `crash` (state `crashed`: fires once per crash, resolves when the VM runs
//! again or is stopped), `backup_failed` (once per failed or interrupted backup job; a new
//! failure while open is sent at once as a repeat naming the new job; resolves at the VM's
//! next successful backup job), `backup_age` (VMs that have at least one backup: the newest
//! is older than `[alerts] backup_max_age`; never-backed-up VMs are not watched).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use corral_types::{
    AlertEvent, AlertInfo, AlertKind, AlertUnit, Comparison, HumanDuration, MetricsReport, RunState, Severity,
};

use super::rules::{unit_of, AlertRule};
use crate::config::HostConfig;

/// `[alerts]` as the evaluator uses it.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Zero: no repeats.
    pub repeat: Duration,
    pub crash: bool,
    pub backup_failed: bool,
    pub backup_max_age: Option<Duration>,
    /// Notifiers of the built-in rules.
    pub builtin_notify: Vec<String>,
}

impl Settings {
    pub fn from_config(cfg: &HostConfig) -> Settings {
        Settings {
            repeat: cfg.alerts.repeat.0,
            crash: cfg.alerts.crash,
            backup_failed: cfg.alerts.backup_failed,
            backup_max_age: cfg.alerts.backup_max_age.map(|d| d.0),
            builtin_notify: super::rules::resolve_notify(cfg.alerts.notify.as_deref(), &cfg.notify).unwrap_or_default(),
        }
    }
}

/// Which alert: a rule and its VM (none for the host).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AlertKey {
    pub rule: String,
    pub vm: Option<String>,
}

impl AlertKey {
    fn new(rule: &str, vm: Option<&str>) -> AlertKey {
        AlertKey {
            rule: rule.to_string(),
            vm: vm.map(str::to_string),
        }
    }
}

/// What the backup rules need to know, per VM.
#[derive(Debug, Clone, Default)]
pub struct BackupFacts {
    pub vms: HashMap<String, VmBackups>,
}

#[derive(Debug, Clone, Default)]
pub struct VmBackups {
    /// The newest finished backup job.
    pub last_job: Option<BackupJob>,
    /// When the newest backup in the store was taken (Unix ms).
    pub newest_backup_ms: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct BackupJob {
    pub id: i64,
    /// Failed or interrupted.
    pub failed: bool,
    pub finished_ms: i64,
    pub message: Option<String>,
}

/// One thing that happened to an alert in a pass.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertChange {
    pub key: AlertKey,
    pub event: AlertEvent,
    /// The alert after the change (its `id` is 0 until the history has it).
    pub alert: AlertInfo,
    /// Who is told: empty for a quiet close, or a rule with `notify = []`.
    pub notify: Vec<String>,
}

/// What a pass sees of one alert's condition.
enum Obs {
    /// It holds, with this value.
    Holds(Option<f64>),
    /// It does not hold (the value, if any).
    Clear(Option<f64>),
    /// Cannot be told this pass: nothing changes.
    Unknown,
}

#[derive(Debug, Default)]
struct Track {
    /// The condition has held continuously since.
    holding_since: Option<i64>,
    /// While open: the condition has not held since.
    clear_since: Option<i64>,
    open: Option<AlertInfo>,
}

pub struct Evaluator {
    rules: Vec<AlertRule>,
    settings: Settings,
    tracks: BTreeMap<AlertKey, Track>,
    /// Per VM, the newest failed backup job already alerted on.
    seen_failed_job: HashMap<String, i64>,
}

fn ms(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

/// A new alert's fields.
fn alert(
    rule: &str,
    kind: AlertKind,
    vm: Option<&str>,
    severity: Severity,
    since_ms: i64,
    summary: String,
) -> AlertInfo {
    AlertInfo {
        id: 0,
        rule: rule.to_string(),
        kind,
        vm: vm.map(str::to_string),
        metric: None,
        severity,
        comparison: None,
        value: None,
        threshold: None,
        unit: None,
        summary,
        job_id: None,
        since_ms,
        fired_ms: since_ms,
        resolved_ms: None,
        resolved_note: None,
        last_notified_ms: None,
        notifications: vec![],
    }
}

fn threshold_alert(rule: &AlertRule, vm: Option<&str>, since_ms: i64, value: Option<f64>) -> AlertInfo {
    let unit = unit_of(rule.metric);
    let value_text = value.map(|v| unit.format(v)).unwrap_or_else(|| "unknown".into());
    let mut summary = format!(
        "{} is {value_text} ({} {}",
        rule.metric,
        rule.comparison.as_str(),
        rule.threshold_text()
    );
    if !rule.for_.is_zero() {
        summary.push_str(&format!(" for {}", HumanDuration(rule.for_)));
    }
    summary.push(')');
    AlertInfo {
        metric: Some(rule.metric.to_string()),
        comparison: Some(rule.comparison),
        value,
        threshold: Some(rule.threshold),
        unit: Some(unit),
        ..alert(&rule.name, AlertKind::Threshold, vm, rule.severity, since_ms, summary)
    }
}

impl Evaluator {
    pub fn new(rules: Vec<AlertRule>, settings: Settings) -> Evaluator {
        Evaluator {
            rules,
            settings,
            tracks: BTreeMap::new(),
            seen_failed_job: HashMap::new(),
        }
    }

    /// Takes up the alerts the history has open (after a restart they neither fire again nor
    /// get lost) and, per VM, the newest failed backup job already alerted on.
    pub fn restore(&mut self, open: Vec<AlertInfo>, seen_failed_job: HashMap<String, i64>) {
        for a in open {
            let key = AlertKey::new(&a.rule, a.vm.as_deref());
            if let (AlertKind::BackupFailed, Some(vm), Some(job)) = (a.kind, &a.vm, a.job_id) {
                let seen = self.seen_failed_job.entry(vm.clone()).or_default();
                *seen = (*seen).max(job);
            }
            let t = self.tracks.entry(key).or_default();
            t.holding_since = Some(a.since_ms);
            t.open = Some(a);
        }
        for (vm, job) in seen_failed_job {
            let seen = self.seen_failed_job.entry(vm).or_default();
            *seen = (*seen).max(job);
        }
    }

    /// The history's id of a fired alert.
    pub fn assign_id(&mut self, key: &AlertKey, id: i64) {
        if let Some(a) = self.tracks.get_mut(key).and_then(|t| t.open.as_mut()) {
            a.id = id;
        }
    }

    /// The open alerts.
    pub fn firing(&self) -> impl Iterator<Item = &AlertInfo> {
        self.tracks.values().filter_map(|t| t.open.as_ref())
    }

    pub fn rules(&self) -> &[AlertRule] {
        &self.rules
    }

    /// One pass at `now_ms`. `backups` is `None` when the backup facts are not known this
    /// pass: the backup rules then keep their state.
    pub fn evaluate(&mut self, now_ms: i64, report: &MetricsReport, backups: Option<&BackupFacts>) -> Vec<AlertChange> {
        let mut changes = vec![];
        let mut seen: HashSet<AlertKey> = HashSet::new();
        let rules = std::mem::take(&mut self.rules);
        for rule in &rules {
            let timing = (ms(rule.for_), ms(rule.keep_firing_for));
            if rule.metric.per_vm() {
                for vm in report.vms.iter().filter(|v| rule.vms.matches(&v.name, &v.tags)) {
                    let key = AlertKey::new(&rule.name, Some(&vm.name));
                    seen.insert(key.clone());
                    let obs = match rule.metric.of_vm(vm) {
                        Some(v) if rule.comparison.holds(v, rule.threshold) => Obs::Holds(Some(v)),
                        Some(v) => Obs::Clear(Some(v)),
                        None if vm.state.is_active() => Obs::Unknown,
                        None => Obs::Clear(None),
                    };
                    let make = |since, v| threshold_alert(rule, Some(&vm.name), since, v);
                    self.step(now_ms, key, obs, timing, &rule.notify, &make, &mut changes);
                }
            } else {
                let key = AlertKey::new(&rule.name, None);
                seen.insert(key.clone());
                let obs = match rule.metric.of_host(&report.host) {
                    Some(v) if rule.comparison.holds(v, rule.threshold) => Obs::Holds(Some(v)),
                    Some(v) => Obs::Clear(Some(v)),
                    None => Obs::Unknown,
                };
                let make = |since, v| threshold_alert(rule, None, since, v);
                self.step(now_ms, key, obs, timing, &rule.notify, &make, &mut changes);
            }
        }
        self.rules = rules;

        let notify = self.settings.builtin_notify.clone();
        if self.settings.crash {
            for vm in &report.vms {
                let key = AlertKey::new("crash", Some(&vm.name));
                seen.insert(key.clone());
                let obs = if vm.state == RunState::Crashed {
                    Obs::Holds(None)
                } else {
                    Obs::Clear(None)
                };
                let make = |since, _| {
                    alert(
                        "crash",
                        AlertKind::Crash,
                        Some(&vm.name),
                        Severity::Critical,
                        since,
                        format!("{} crashed: its QEMU process ended without a clean shutdown", vm.name),
                    )
                };
                self.step(now_ms, key, obs, (0, 0), &notify, &make, &mut changes);
            }
        }

        for vm in &report.vms {
            for (rule, on) in [
                ("backup_failed", self.settings.backup_failed),
                ("backup_age", self.settings.backup_max_age.is_some()),
            ] {
                if on {
                    seen.insert(AlertKey::new(rule, Some(&vm.name)));
                }
            }
            let Some(b) = backups else { continue };
            let facts = b.vms.get(&vm.name).cloned().unwrap_or_default();
            if self.settings.backup_failed {
                self.backup_failed(now_ms, &vm.name, facts.last_job.as_ref(), &notify, &mut changes);
            }
            if let (Some(max), Some(newest)) = (self.settings.backup_max_age, facts.newest_backup_ms) {
                let age_s = (now_ms - newest).max(0) as f64 / 1000.0;
                let key = AlertKey::new("backup_age", Some(&vm.name));
                let obs = if age_s > max.as_secs_f64() {
                    Obs::Holds(Some(age_s))
                } else {
                    Obs::Clear(Some(age_s))
                };
                let make = |since, v: Option<f64>| AlertInfo {
                    value: v,
                    threshold: Some(max.as_secs_f64()),
                    unit: Some(AlertUnit::Seconds),
                    comparison: Some(Comparison::Above),
                    ..alert(
                        "backup_age",
                        AlertKind::BackupAge,
                        Some(&vm.name),
                        Severity::Warning,
                        since,
                        format!(
                            "the newest backup of {} is {} old (more than {})",
                            vm.name,
                            AlertUnit::Seconds.format(v.unwrap_or(0.0)),
                            HumanDuration(max)
                        ),
                    )
                };
                self.step(now_ms, key, obs, (0, 0), &notify, &make, &mut changes);
            }
        }

        self.close_unseen(now_ms, report, &seen, &mut changes);
        changes
    }

    /// Advances one alert by what this pass saw. `timing` is (`for`, `keep_firing_for`) in ms.
    #[allow(clippy::too_many_arguments)]
    fn step(
        &mut self,
        now: i64,
        key: AlertKey,
        obs: Obs,
        (for_ms, keep_ms): (i64, i64),
        notify: &[String],
        make: &dyn Fn(i64, Option<f64>) -> AlertInfo,
        changes: &mut Vec<AlertChange>,
    ) {
        let repeat = ms(self.settings.repeat);
        let t = self.tracks.entry(key.clone()).or_default();
        let change = match obs {
            Obs::Unknown => None,
            Obs::Holds(value) => {
                t.clear_since = None;
                let since = *t.holding_since.get_or_insert(now);
                match &mut t.open {
                    Some(a) => {
                        let fresh = make(a.since_ms, value);
                        a.value = fresh.value;
                        a.summary = fresh.summary;
                        let last = a.last_notified_ms.unwrap_or(a.fired_ms);
                        (repeat > 0 && now - last >= repeat).then(|| {
                            a.last_notified_ms = Some(now);
                            (AlertEvent::Repeated, a.clone())
                        })
                    }
                    None if now - since >= for_ms => {
                        let mut a = make(since, value);
                        a.fired_ms = now;
                        a.last_notified_ms = Some(now);
                        t.open = Some(a.clone());
                        Some((AlertEvent::Fired, a))
                    }
                    None => None,
                }
            }
            Obs::Clear(value) => {
                t.holding_since = None;
                let clear_since = t.open.as_ref().map(|_| *t.clear_since.get_or_insert(now));
                match clear_since {
                    Some(cs) if now - cs >= keep_ms => {
                        let mut a = t.open.take().expect("open");
                        t.clear_since = None;
                        a.resolved_ms = Some(now);
                        if value.is_some() {
                            a.value = value;
                        }
                        Some((AlertEvent::Resolved, a))
                    }
                    _ => None,
                }
            }
        };
        if let Some((event, alert)) = change {
            changes.push(AlertChange {
                key,
                event,
                alert,
                notify: notify.to_vec(),
            });
        }
    }

    fn backup_failed(
        &mut self,
        now: i64,
        vm: &str,
        job: Option<&BackupJob>,
        notify: &[String],
        changes: &mut Vec<AlertChange>,
    ) {
        let key = AlertKey::new("backup_failed", Some(vm));
        let Some(job) = job else {
            return;
        };
        let seen = self.seen_failed_job.get(vm).copied().unwrap_or(0);
        let repeat = ms(self.settings.repeat);
        let t = self.tracks.entry(key.clone()).or_default();
        let make = || {
            let mut summary = format!("backup job {} of {vm} failed", job.id);
            if let Some(m) = &job.message {
                summary.push_str(&format!(": {m}"));
            }
            AlertInfo {
                job_id: Some(job.id),
                ..alert(
                    "backup_failed",
                    AlertKind::BackupFailed,
                    Some(vm),
                    Severity::Warning,
                    job.finished_ms,
                    summary,
                )
            }
        };
        let change = if job.failed && job.id > seen {
            self.seen_failed_job.insert(vm.to_string(), job.id);
            match &mut t.open {
                // Failed again while open: said at once, naming the new job.
                Some(a) => {
                    let fresh = make();
                    a.job_id = fresh.job_id;
                    a.summary = fresh.summary;
                    a.last_notified_ms = Some(now);
                    Some((AlertEvent::Repeated, a.clone()))
                }
                None => {
                    let mut a = make();
                    a.fired_ms = now;
                    a.last_notified_ms = Some(now);
                    t.holding_since = Some(a.since_ms);
                    t.open = Some(a.clone());
                    Some((AlertEvent::Fired, a))
                }
            }
        } else if !job.failed && t.open.as_ref().is_some_and(|a| a.job_id.is_none_or(|j| job.id > j)) {
            let mut a = t.open.take().expect("open");
            t.holding_since = None;
            a.resolved_ms = Some(now);
            a.resolved_note = Some(format!("backup job {} succeeded", job.id));
            Some((AlertEvent::Resolved, a))
        } else if let Some(a) = t.open.as_mut().filter(|_| repeat > 0) {
            let last = a.last_notified_ms.unwrap_or(a.fired_ms);
            (now - last >= repeat).then(|| {
                a.last_notified_ms = Some(now);
                (AlertEvent::Repeated, a.clone())
            })
        } else {
            None
        };
        if let Some((event, alert)) = change {
            changes.push(AlertChange {
                key,
                event,
                alert,
                notify: notify.to_vec(),
            });
        }
    }

    /// Open alerts nothing looked at this pass are closed quietly; other state of them goes.
    fn close_unseen(
        &mut self,
        now: i64,
        report: &MetricsReport,
        seen: &HashSet<AlertKey>,
        changes: &mut Vec<AlertChange>,
    ) {
        let gone: Vec<AlertKey> = self.tracks.keys().filter(|k| !seen.contains(k)).cloned().collect();
        for key in gone {
            let t = self.tracks.remove(&key).expect("present");
            let Some(mut a) = t.open else { continue };
            let vm_defined = key.vm.as_ref().is_none_or(|v| report.vms.iter().any(|m| &m.name == v));
            let builtin = super::rules::BUILTIN_RULES.contains(&key.rule.as_str());
            let rule_known = builtin || self.rules.iter().any(|r| r.name == key.rule);
            let note = if !vm_defined {
                "the VM is no longer defined"
            } else if builtin {
                "the built-in rule was turned off in [alerts]"
            } else if !rule_known {
                "the rule is no longer in the config"
            } else {
                "the rule no longer watches this VM"
            };
            a.resolved_ms = Some(now);
            a.resolved_note = Some(note.to_string());
            changes.push(AlertChange {
                key,
                event: AlertEvent::Resolved,
                alert: a,
                notify: vec![],
            });
        }
    }
}

#[cfg(test)]
#[path = "eval_tests.rs"]
mod tests;
