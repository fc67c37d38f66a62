//! Retention: which backups of a VM a keep-last/daily/weekly/monthly policy keeps.
//! [`select`] is a pure function; [`Store::prune`] applies it.

use serde::{Deserialize, Serialize};

use crate::error::{Result, StoreError};
use crate::lock;
use crate::manifest::date_from_days;
use crate::store::Store;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrunePolicy {
    /// The newest N backups.
    pub keep_last: u32,
    /// The newest backup of each of the N newest days (UTC) that have backups.
    pub keep_daily: u32,
    /// Same per ISO week (Monday to Sunday, UTC).
    pub keep_weekly: u32,
    /// Same per calendar month (UTC).
    pub keep_monthly: u32,
}

impl PrunePolicy {
    pub fn is_empty(&self) -> bool {
        self.keep_last == 0 && self.keep_daily == 0 && self.keep_weekly == 0 && self.keep_monthly == 0
    }
}

/// Why a backup is kept (empty: removed).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reasons {
    pub last: bool,
    pub daily: bool,
    pub weekly: bool,
    pub monthly: bool,
}

impl Reasons {
    pub fn keep(&self) -> bool {
        self.last || self.daily || self.weekly || self.monthly
    }
}

/// For backups given as (id, unix seconds) in any order, returns per input position why it
/// is kept. Newest first by (time, id); each rule walks that order and keeps the first
/// backup of each new period until it has kept N. An all-zero policy keeps nothing.
pub fn select(backups: &[(String, i64)], policy: &PrunePolicy) -> Vec<Reasons> {
    let mut order: Vec<usize> = (0..backups.len()).collect();
    order.sort_by(|&a, &b| {
        (backups[b].1, &backups[b].0).cmp(&(backups[a].1, &backups[a].0))
    });
    let mut out = vec![Reasons::default(); backups.len()];
    for &i in order.iter().take(policy.keep_last as usize) {
        out[i].last = true;
    }
    let day = |t: i64| t.div_euclid(86400);
    let rules: [(u32, &dyn Fn(i64) -> i64, fn(&mut Reasons)); 3] = [
        (policy.keep_daily, &day, |r| r.daily = true),
        // Days since the epoch of the period's Monday (1970-01-01 was a Thursday).
        (policy.keep_weekly, &|t| day(t) - (day(t) + 3).rem_euclid(7), |r| r.weekly = true),
        (
            policy.keep_monthly,
            &|t| {
                let (y, m, _) = date_from_days(day(t));
                y * 12 + m as i64
            },
            |r| r.monthly = true,
        ),
    ];
    for (n, period, mark) in rules {
        let mut last_period = None;
        let mut kept = 0;
        for &i in &order {
            if kept >= n {
                break;
            }
            let p = period(backups[i].1);
            if last_period != Some(p) {
                last_period = Some(p);
                mark(&mut out[i]);
                kept += 1;
            }
        }
    }
    out
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneDecision {
    pub id: String,
    pub time: String,
    pub keep: bool,
    pub reasons: Reasons,
}

impl Store {
    /// Applies `policy` to one VM's backups, oldest first in the result; deletes the others
    /// unless `dry_run`. Chunks are freed by the next gc. A policy that keeps nothing is
    /// refused rather than deleting every backup.
    pub fn prune(&self, vm: &str, policy: &PrunePolicy, dry_run: bool) -> Result<Vec<PruneDecision>> {
        if policy.is_empty() {
            return Err(StoreError::Invalid(
                "the prune policy keeps nothing; give at least one keep-* count".into(),
            ));
        }
        let _l = lock::shared(self.root())?;
        let list = self.list(Some(vm))?;
        let input: Vec<(String, i64)> = list.iter().map(|m| (m.id.clone(), m.time_unix)).collect();
        let reasons = select(&input, policy);
        let decisions: Vec<PruneDecision> = list
            .into_iter()
            .zip(reasons)
            .map(|(m, r)| PruneDecision {
                id: m.id,
                time: m.time,
                keep: r.keep(),
                reasons: r,
            })
            .collect();
        if !dry_run {
            for d in decisions.iter().filter(|d| !d.keep) {
                self.delete_locked(&d.id)?;
            }
        }
        Ok(decisions)
    }
}
