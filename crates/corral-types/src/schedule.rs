//! Scheduled jobs: the `[[schedule]]` entries of the host config ([`ScheduleSpec`]) and what
//! the scheduler reports about them ([`ScheduleStatus`], [`ScheduleRun`]). The same shapes are
//! printed by `corral schedule list --json` and served by the REST API.
//!
//! Times are Unix milliseconds (`*_ms`), like [`crate::JobInfo`]. The calendar expression is
//! kept as the text the user wrote; the engine parses it (and refuses a bad one when the
//! config loads or a schedule is saved).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::name::VmName;

/// What a schedule does when it is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ScheduleAction {
    /// `corral backup run` of each selected VM.
    Backup,
    /// `corral backup verify` of the selected VMs' backups (`all`: the whole store).
    Verify,
    /// `corral backup prune` of each selected VM with the schedule's keep-* rules.
    Prune,
    /// `corral store gc`: the whole store, no selection.
    Gc,
}

impl ScheduleAction {
    pub fn as_str(self) -> &'static str {
        match self {
            ScheduleAction::Backup => "backup",
            ScheduleAction::Verify => "verify",
            ScheduleAction::Prune => "prune",
            ScheduleAction::Gc => "gc",
        }
    }
}

impl fmt::Display for ScheduleAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `[[schedule]]` entry:
///
/// ```toml
/// [[schedule]]
/// name = "nightly"
/// calendar = "mon..fri 22:30"
/// action = "backup"
/// tags = ["prod"]
/// ```
///
/// Exactly one selection (`vms`, `tags` or `all = true`) for backup, verify and prune; none
/// for gc. `full` and `skeleton` only for backup; the keep-* rules (at least one) only for
/// prune. [`ScheduleSpec::check`] enforces this; the engine also parses the calendar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// Same rule as VM names: 1-63 of `A-Z a-z 0-9 . _ -`.
    pub name: String,
    /// A calendar expression such as `daily 02:00` or `mon..fri 22:30` (docs/schedules.md).
    pub calendar: String,
    pub action: ScheduleAction,
    /// These VMs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vms: Vec<String>,
    /// Every VM with one of these tags, resolved when the schedule runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Every VM (for verify: every backup in the store; for prune: every VM with backups).
    #[serde(default, skip_serializing_if = "is_false")]
    pub all: bool,
    /// Backup: read every disk in full (still stores only new chunks).
    #[serde(default, skip_serializing_if = "is_false")]
    pub full: bool,
    /// Backup: system disks only (`true`), every disk (`false`); unset: each VM's own
    /// `[backup] skeleton`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skeleton: Option<bool>,
    /// Prune: the rules of `corral backup prune` (`corral_store::PrunePolicy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_daily: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_weekly: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_monthly: Option<u32>,
    /// A disabled schedule is kept in the config but never runs by itself (`run now` still
    /// works).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}
fn is_true(b: &bool) -> bool {
    *b
}
fn is_false(b: &bool) -> bool {
    !*b
}

/// A schedule entry that makes no sense; the message says which field and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ScheduleSpecError(pub String);

/// How a schedule picks its targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection<'a> {
    None,
    Vms(&'a [String]),
    Tags(&'a [String]),
    All,
}

impl ScheduleSpec {
    /// A minimal spec (tests, the web page's "new schedule" form).
    pub fn new(name: &str, calendar: &str, action: ScheduleAction) -> ScheduleSpec {
        ScheduleSpec {
            name: name.into(),
            calendar: calendar.into(),
            action,
            vms: vec![],
            tags: vec![],
            all: false,
            full: false,
            skeleton: None,
            keep_last: None,
            keep_daily: None,
            keep_weekly: None,
            keep_monthly: None,
            enabled: true,
        }
    }

    pub fn selection(&self) -> Selection<'_> {
        if self.all {
            Selection::All
        } else if !self.vms.is_empty() {
            Selection::Vms(&self.vms)
        } else if !self.tags.is_empty() {
            Selection::Tags(&self.tags)
        } else {
            Selection::None
        }
    }

    /// `all`, `vms: a,b`, `tags: prod`, or `-` (gc): for tables.
    pub fn selection_text(&self) -> String {
        match self.selection() {
            Selection::None => "-".into(),
            Selection::All => "all".into(),
            Selection::Vms(v) => format!("vms: {}", v.join(",")),
            Selection::Tags(t) => format!("tags: {}", t.join(",")),
        }
    }

    fn has_keep(&self) -> bool {
        [self.keep_last, self.keep_daily, self.keep_weekly, self.keep_monthly]
            .iter()
            .any(Option::is_some)
    }

    /// Checks everything but the calendar's grammar (the engine parses that).
    pub fn check(&self) -> Result<(), ScheduleSpecError> {
        let bad = |m: String| Err(ScheduleSpecError(m));
        if let Err(e) = VmName::new(&self.name) {
            return bad(format!("schedule {e}"));
        }
        if self.calendar.trim().is_empty() {
            return bad("calendar is empty; write e.g. calendar = \"daily 02:00\" (docs/schedules.md)".into());
        }
        let kinds = [!self.vms.is_empty(), !self.tags.is_empty(), self.all];
        let n = kinds.iter().filter(|k| **k).count();
        let action = self.action;
        if action == ScheduleAction::Gc {
            if n > 0 {
                return bad("action gc works on the whole store: remove vms, tags and all".into());
            }
        } else if n == 0 {
            return bad(format!(
                "action {action} needs a selection: vms = [\"web1\"], tags = [\"prod\"] or all = true"
            ));
        } else if n > 1 {
            return bad("give exactly one of vms, tags and all = true (they cannot be combined)".into());
        }
        for v in &self.vms {
            if let Err(e) = VmName::new(v) {
                return bad(format!("vms: invalid VM {e}"));
            }
        }
        if let Some(t) = self.tags.iter().find(|t| t.trim().is_empty()) {
            return bad(format!("tags: {t:?} is empty; remove it"));
        }
        if action != ScheduleAction::Backup && (self.full || self.skeleton.is_some()) {
            return bad(format!(
                "full and skeleton apply to backup schedules only; remove them from this {action} schedule"
            ));
        }
        if action == ScheduleAction::Prune {
            if !self.has_keep() {
                return bad(
                    "action prune needs at least one of keep_last, keep_daily, keep_weekly, keep_monthly \
                     (without one, prune would delete every backup)"
                        .into(),
                );
            }
            if [self.keep_last, self.keep_daily, self.keep_weekly, self.keep_monthly]
                .iter()
                .all(|k| k.unwrap_or(0) == 0)
            {
                return bad("the keep-* rules are all 0, which would delete every backup; keep at least one".into());
            }
        } else if self.has_keep() {
            return bad(format!(
                "keep_last/keep_daily/keep_weekly/keep_monthly apply to prune schedules only; remove them from \
                 this {action} schedule"
            ));
        }
        Ok(())
    }
}

/// How a schedule run ended (or that it is still going).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ScheduleOutcome {
    Running,
    /// Every target worked.
    Ok,
    /// At least one target failed, or the selection could not be resolved.
    Failed,
    /// Not run: the previous run of the same schedule was still going.
    Skipped,
    /// The process running it ended before it finished (derived, like interrupted jobs).
    Interrupted,
}

impl ScheduleOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            ScheduleOutcome::Running => "running",
            ScheduleOutcome::Ok => "ok",
            ScheduleOutcome::Failed => "failed",
            ScheduleOutcome::Skipped => "skipped",
            ScheduleOutcome::Interrupted => "interrupted",
        }
    }

    pub fn parse(s: &str) -> Option<ScheduleOutcome> {
        Some(match s {
            "running" => ScheduleOutcome::Running,
            "ok" => ScheduleOutcome::Ok,
            "failed" => ScheduleOutcome::Failed,
            "skipped" => ScheduleOutcome::Skipped,
            "interrupted" => ScheduleOutcome::Interrupted,
            _ => return None,
        })
    }
}

impl fmt::Display for ScheduleOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened to one target (a VM, or the store for gc and `verify all`) in a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScheduleTarget {
    /// A VM name, or `store`.
    pub target: String,
    pub ok: bool,
    /// The job that did the work, where the operation runs as a job (backups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<i64>,
    /// The backup a backup target made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
    /// A one-line result: `incremental, 12.0M new`, `kept 7, removed 2`, `freed 1.2G`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One run of a schedule, as recorded in the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScheduleRun {
    pub id: i64,
    pub schedule: String,
    pub action: ScheduleAction,
    /// The calendar time this run was for (missing for `run now`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot_ms: Option<i64>,
    pub started_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<i64>,
    pub outcome: ScheduleOutcome,
    /// Started late: it makes up for one or more times missed while corral was not running.
    #[serde(default)]
    pub caught_up: bool,
    /// Started by hand (`corral schedule run`, the web page's "run now").
    #[serde(default)]
    pub manual: bool,
    /// A summary (`2 of 3 VMs backed up`), why it was skipped, or why it failed as a whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default)]
    pub targets: Vec<ScheduleTarget>,
}

/// A schedule with its next and last run: `corral schedule list --json`, the dashboard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScheduleStatus {
    pub spec: ScheduleSpec,
    /// When it runs next (missing when disabled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run_ms: Option<i64>,
    /// The newest finished (or skipped, or interrupted) run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<ScheduleRun>,
    /// A run is going now (in this process or another corral).
    pub running: bool,
}

/// A calendar expression tried out (`corral schedule check`, the web page's form).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CalendarCheck {
    /// As given.
    pub calendar: String,
    /// The same calendar in its normal form (`mon..fri 22:30`, `*:00,15,30,45`).
    pub normalized: String,
    /// The zone the times are in (an IANA name, or `local`).
    pub time_zone: String,
    /// The next times it is due, as Unix milliseconds…
    pub next_ms: Vec<i64>,
    /// …and as local times for people (`Mon 2025-06-02 22:30 CEST`).
    pub next: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ScheduleSpec, String> {
        let s: ScheduleSpec = toml::from_str(text).map_err(|e| e.message().to_string())?;
        s.check().map_err(|e| e.0)?;
        Ok(s)
    }

    #[test]
    fn accepts_each_action_with_its_options() {
        let s =
            parse("name = \"n\"\ncalendar = \"daily 02:00\"\naction = \"backup\"\ntags = [\"prod\"]\nfull = true\n")
                .unwrap();
        assert_eq!(s.selection(), Selection::Tags(&["prod".to_string()]));
        assert!(s.enabled && s.full && s.skeleton.is_none());
        let s =
            parse("name = \"p\"\ncalendar = \"sun 04:00\"\naction = \"prune\"\nall = true\nkeep_daily = 7\n").unwrap();
        assert_eq!(s.keep_daily, Some(7));
        let s = parse("name = \"g\"\ncalendar = \"sun 05:00\"\naction = \"gc\"\nenabled = false\n").unwrap();
        assert!(!s.enabled);
        parse("name = \"v\"\ncalendar = \"sat 01:00\"\naction = \"verify\"\nvms = [\"a\", \"b\"]\n").unwrap();
    }

    #[test]
    fn rejects_nonsense_with_a_clear_message() {
        let cases = [
            (
                "name = \"n\"\ncalendar = \"daily\"\naction = \"backup\"\n",
                "needs a selection",
            ),
            (
                "name = \"n\"\ncalendar = \"daily\"\naction = \"backup\"\nall = true\ntags = [\"x\"]\n",
                "exactly one",
            ),
            (
                "name = \"n\"\ncalendar = \"daily\"\naction = \"gc\"\nall = true\n",
                "whole store",
            ),
            (
                "name = \"n\"\ncalendar = \"daily\"\naction = \"verify\"\nall = true\nfull = true\n",
                "backup schedules only",
            ),
            (
                "name = \"n\"\ncalendar = \"daily\"\naction = \"prune\"\nall = true\n",
                "at least one",
            ),
            (
                "name = \"n\"\ncalendar = \"daily\"\naction = \"prune\"\nall = true\nkeep_last = 0\n",
                "all 0",
            ),
            (
                "name = \"n\"\ncalendar = \"daily\"\naction = \"backup\"\nall = true\nkeep_last = 3\n",
                "prune schedules only",
            ),
            (
                "name = \"../x\"\ncalendar = \"daily\"\naction = \"gc\"\n",
                "schedule name",
            ),
            ("name = \"n\"\ncalendar = \" \"\naction = \"gc\"\n", "calendar is empty"),
            (
                "name = \"n\"\ncalendar = \"daily\"\naction = \"backup\"\nvms = [\"a/b\"]\n",
                "vms: invalid",
            ),
            (
                "name = \"n\"\ncalendar = \"daily\"\naction = \"copy\"\n",
                "unknown variant `copy`",
            ),
            (
                "name = \"n\"\ncalendar = \"daily\"\naction = \"gc\"\nevery = 1\n",
                "unknown field `every`",
            ),
            ("calendar = \"daily\"\naction = \"gc\"\n", "missing field `name`"),
        ];
        for (text, want) in cases {
            let e = parse(text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn json_shapes_are_stable() {
        let s = ScheduleSpec::new("n", "daily 02:00", ScheduleAction::Backup);
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"name": "n", "calendar": "daily 02:00", "action": "backup"}),
            "defaults are left out"
        );
        let run = ScheduleRun {
            id: 1,
            schedule: "n".into(),
            action: ScheduleAction::Gc,
            slot_ms: Some(1000),
            started_ms: 1001,
            finished_ms: Some(2000),
            outcome: ScheduleOutcome::Ok,
            caught_up: true,
            manual: false,
            message: None,
            targets: vec![ScheduleTarget {
                target: "store".into(),
                ok: true,
                job: None,
                backup: None,
                detail: Some("freed 0B".into()),
                error: None,
            }],
        };
        let back: ScheduleRun = serde_json::from_value(serde_json::to_value(&run).unwrap()).unwrap();
        assert_eq!(back, run);
        assert_eq!(serde_json::to_value(&run).unwrap()["outcome"], "ok");
    }
}
