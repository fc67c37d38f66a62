//! Alert history rows (schema v6): written by the daemon's evaluator and its delivery tasks,
//! read by `corral alerts`, the API and the web page.

use std::collections::HashMap;

use corral_types::{AlertInfo, AlertKind, AlertUnit, Comparison, NotificationOutcome, Severity};
use rusqlite::{params, Row};

use super::Registry;
use crate::error::EngineError;

const COLUMNS: &str = "id, rule, kind, vm, metric, severity, comparison, value, threshold, unit, summary, job_id, \
                       since_ms, fired_ms, resolved_ms, resolved_note, last_notified_ms, notifications";

fn row_to_alert(r: &Row<'_>) -> rusqlite::Result<AlertInfo> {
    let notifications: String = r.get(17)?;
    Ok(AlertInfo {
        id: r.get(0)?,
        rule: r.get(1)?,
        kind: AlertKind::parse(&r.get::<_, String>(2)?).unwrap_or(AlertKind::Threshold),
        vm: r.get(3)?,
        metric: r.get(4)?,
        severity: if r.get::<_, String>(5)? == "critical" {
            Severity::Critical
        } else {
            Severity::Warning
        },
        comparison: r.get::<_, Option<String>>(6)?.map(|c| {
            if c == "below" {
                Comparison::Below
            } else {
                Comparison::Above
            }
        }),
        value: r.get(7)?,
        threshold: r.get(8)?,
        unit: r.get::<_, Option<String>>(9)?.and_then(|u| AlertUnit::parse(&u)),
        summary: r.get(10)?,
        job_id: r.get(11)?,
        since_ms: r.get(12)?,
        fired_ms: r.get(13)?,
        resolved_ms: r.get(14)?,
        resolved_note: r.get(15)?,
        last_notified_ms: r.get(16)?,
        notifications: serde_json::from_str(&notifications).unwrap_or_default(),
    })
}

impl Registry {
    /// Records a fired alert; its id.
    pub fn alert_insert(&self, a: &AlertInfo) -> Result<i64, EngineError> {
        self.conn
            .prepare_cached(
                "INSERT INTO alerts (rule, kind, vm, metric, severity, comparison, value, threshold, unit, summary,
                     job_id, since_ms, fired_ms, resolved_ms, resolved_note, last_notified_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    a.rule,
                    a.kind.as_str(),
                    a.vm,
                    a.metric,
                    a.severity.as_str(),
                    a.comparison.map(|c| c.as_str()),
                    a.value,
                    a.threshold,
                    a.unit.map(|u| u.as_str()),
                    a.summary,
                    a.job_id,
                    a.since_ms,
                    a.fired_ms,
                    a.resolved_ms,
                    a.resolved_note,
                    a.last_notified_ms,
                ])
            })
            .map_err(self.db())?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Stores what changes while an alert lives: value, summary, job, notification time, end.
    pub fn alert_update(&self, a: &AlertInfo) -> Result<(), EngineError> {
        self.conn
            .prepare_cached(
                "UPDATE alerts SET value = ?2, summary = ?3, job_id = ?4, last_notified_ms = ?5, resolved_ms = ?6,
                     resolved_note = ?7 WHERE id = ?1",
            )
            .and_then(|mut st| {
                st.execute(params![
                    a.id,
                    a.value,
                    a.summary,
                    a.job_id,
                    a.last_notified_ms,
                    a.resolved_ms,
                    a.resolved_note
                ])
            })
            .map_err(self.db())?;
        Ok(())
    }

    /// Appends a notification's outcome to its alert.
    pub fn alert_add_notification(&self, id: i64, outcome: &NotificationOutcome) -> Result<(), EngineError> {
        let json = serde_json::to_string(outcome).expect("serialisable");
        self.conn
            .prepare_cached(
                "UPDATE alerts SET notifications = json_insert(notifications, '$[#]', json(?2)) WHERE id = ?1",
            )
            .and_then(|mut st| st.execute(params![id, json]))
            .map_err(self.db())?;
        Ok(())
    }

    /// The open alerts, oldest first.
    pub fn alerts_open(&self) -> Result<Vec<AlertInfo>, EngineError> {
        let mut st = self
            .conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM alerts WHERE resolved_ms IS NULL ORDER BY id"
            ))
            .map_err(self.db())?;
        let rows = st.query_map([], row_to_alert).map_err(self.db())?;
        rows.collect::<Result<_, _>>().map_err(self.db())
    }

    /// Every alert, newest first.
    pub fn alerts_history(&self, limit: usize) -> Result<Vec<AlertInfo>, EngineError> {
        let mut st = self
            .conn
            .prepare_cached(&format!("SELECT {COLUMNS} FROM alerts ORDER BY id DESC LIMIT ?1"))
            .map_err(self.db())?;
        let rows = st.query_map([limit as i64], row_to_alert).map_err(self.db())?;
        rows.collect::<Result<_, _>>().map_err(self.db())
    }

    /// Per VM, the newest failed backup job an alert was made for.
    pub fn alerts_failed_backup_jobs(&self) -> Result<HashMap<String, i64>, EngineError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT vm, MAX(job_id) FROM alerts WHERE kind = 'backup_failed' AND vm IS NOT NULL
                     AND job_id IS NOT NULL GROUP BY vm",
            )
            .map_err(self.db())?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .map_err(self.db())?;
        rows.collect::<Result<_, _>>().map_err(self.db())
    }

    /// Deletes resolved alerts that ended before `before_ms`, and beyond the newest `keep`
    /// resolved ones; open alerts stay. How many went.
    pub fn alerts_prune(&self, before_ms: i64, keep: usize) -> Result<usize, EngineError> {
        let n = self
            .conn
            .execute(
                "DELETE FROM alerts WHERE resolved_ms IS NOT NULL AND (resolved_ms < ?1 OR id NOT IN
                     (SELECT id FROM alerts WHERE resolved_ms IS NOT NULL ORDER BY id DESC LIMIT ?2))",
                params![before_ms, keep as i64],
            )
            .map_err(self.db())?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_types::AlertEvent;

    fn alert(rule: &str, vm: Option<&str>, fired_ms: i64) -> AlertInfo {
        AlertInfo {
            id: 0,
            rule: rule.into(),
            kind: AlertKind::Threshold,
            vm: vm.map(str::to_string),
            metric: Some("cpu".into()),
            severity: Severity::Critical,
            comparison: Some(Comparison::Above),
            value: Some(95.5),
            threshold: Some(90.0),
            unit: Some(AlertUnit::Percent),
            summary: "cpu is 95.5% (above 90%)".into(),
            job_id: None,
            since_ms: fired_ms - 1,
            fired_ms,
            resolved_ms: None,
            resolved_note: None,
            last_notified_ms: Some(fired_ms),
            notifications: vec![],
        }
    }

    #[test]
    fn alerts_round_trip_collect_outcomes_and_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::open(&dir.path().join("r.db")).unwrap();
        let mut a = alert("busy", Some("web1"), 1000);
        a.id = reg.alert_insert(&a).unwrap();
        assert_eq!(reg.alerts_open().unwrap(), [a.clone()]);
        let out = |ok, attempts| NotificationOutcome {
            notifier: "mail".into(),
            event: AlertEvent::Fired,
            ok,
            attempts,
            time_ms: 1500,
            error: (!ok).then(|| "SMTP server x:587: connection refused".into()),
        };
        reg.alert_add_notification(a.id, &out(false, 3)).unwrap();
        reg.alert_add_notification(a.id, &out(true, 1)).unwrap();
        a.resolved_ms = Some(2000);
        a.value = Some(10.0);
        reg.alert_update(&a).unwrap();
        let got = &reg.alerts_history(10).unwrap()[0];
        assert_eq!(got.notifications, [out(false, 3), out(true, 1)]);
        assert_eq!((got.resolved_ms, got.value), (Some(2000), Some(10.0)));
        assert!(reg.alerts_open().unwrap().is_empty());

        let mut b = alert("backup_failed", Some("db"), 3000);
        b.kind = AlertKind::BackupFailed;
        b.job_id = Some(7);
        b.id = reg.alert_insert(&b).unwrap();
        assert_eq!(reg.alerts_failed_backup_jobs().unwrap(), [("db".to_string(), 7)].into());

        // Resolved before the cut go; open ones stay whatever their age.
        let old_open = reg.alert_insert(&alert("old", None, 10)).unwrap();
        assert_eq!(reg.alerts_prune(2500, 100).unwrap(), 1);
        let ids: Vec<i64> = reg.alerts_history(10).unwrap().iter().map(|a| a.id).collect();
        assert_eq!(ids, [old_open, b.id]);
        // And at most `keep` resolved ones are kept.
        for i in 0..5 {
            let mut r = alert("flappy", Some("x"), 5000 + i);
            r.resolved_ms = Some(6000 + i);
            reg.alert_insert(&r).unwrap();
        }
        assert_eq!(reg.alerts_prune(0, 2).unwrap(), 3);
        assert_eq!(reg.alerts_history(10).unwrap().len(), 4);
    }
}
