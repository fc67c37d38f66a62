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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

/// A period rule: how many periods to keep, the period of a time, what to mark.
type Rule<'a> = (u32, &'a dyn Fn(i64) -> i64, fn(&mut Reasons));

/// For backups given as (id, unix seconds) in any order, returns per input position why it
/// is kept. Newest first by (time, id); each rule walks that order and keeps the first
/// backup of each new period until it has kept N. An all-zero policy keeps nothing.
pub fn select(backups: &[(String, i64)], policy: &PrunePolicy) -> Vec<Reasons> {
    let mut order: Vec<usize> = (0..backups.len()).collect();
    order.sort_by(|&a, &b| (backups[b].1, &backups[b].0).cmp(&(backups[a].1, &backups[a].0)));
    let mut out = vec![Reasons::default(); backups.len()];
    for &i in order.iter().take(policy.keep_last as usize) {
        out[i].last = true;
    }
    let day = |t: i64| t.div_euclid(86400);
    let rules: [Rule; 3] = [
        (policy.keep_daily, &day, |r| r.daily = true),
        // Days since the epoch of the period's Monday (1970-01-01 was a Thursday).
        (policy.keep_weekly, &|t| day(t) - (day(t) + 3).rem_euclid(7), |r| {
            r.weekly = true
        }),
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86400;
    // 2024-01-01T00:00:00Z, a Monday.
    const T0: i64 = 1_704_067_200;

    fn backups(times: &[i64]) -> Vec<(String, i64)> {
        times
            .iter()
            .enumerate()
            .map(|(i, &t)| (format!("b{i:03}"), t))
            .collect()
    }

    fn kept(b: &[(String, i64)], p: PrunePolicy) -> Vec<String> {
        let r = select(b, &p);
        let mut k: Vec<String> = b
            .iter()
            .zip(&r)
            .filter(|(_, r)| r.keep())
            .map(|(b, _)| b.0.clone())
            .collect();
        k.sort();
        k
    }

    #[test]
    fn keep_last_takes_newest_whatever_the_input_order() {
        let b = backups(&[T0 + 50, T0 + 10, T0 + 30, T0 + 20]);
        let p = PrunePolicy {
            keep_last: 2,
            ..Default::default()
        };
        assert_eq!(kept(&b, p), vec!["b000", "b002"]);
    }

    #[test]
    fn daily_keeps_newest_of_each_day() {
        // Two backups a day for five days.
        let times: Vec<i64> = (0..5)
            .flat_map(|d| [T0 + d * DAY + 3600, T0 + d * DAY + 7200])
            .collect();
        let b = backups(&times);
        let p = PrunePolicy {
            keep_daily: 3,
            ..Default::default()
        };
        // Days 4, 3, 2: the later backup of each.
        assert_eq!(kept(&b, p), vec!["b005", "b007", "b009"]);
    }

    #[test]
    fn days_without_backups_do_not_count() {
        let b = backups(&[T0, T0 + 10 * DAY, T0 + 20 * DAY]);
        let p = PrunePolicy {
            keep_daily: 2,
            ..Default::default()
        };
        assert_eq!(kept(&b, p), vec!["b001", "b002"]);
    }

    #[test]
    fn weekly_periods_start_on_monday() {
        // Sunday 2024-01-07 23:00 and Monday 2024-01-08 01:00 are different ISO weeks;
        // Monday 01-01 and Sunday 01-07 are the same.
        let b = backups(&[T0 + 3600, T0 + 6 * DAY + 82800, T0 + 7 * DAY + 3600]);
        let p = PrunePolicy {
            keep_weekly: 5,
            ..Default::default()
        };
        assert_eq!(kept(&b, p), vec!["b001", "b002"]);
    }

    #[test]
    fn monthly_uses_calendar_months() {
        // Jan 31 23:59:59 and Feb 1 00:00:00, Feb 29 (leap year), Mar 1.
        let jan31 = T0 + 31 * DAY - 1;
        let b = backups(&[T0, jan31, jan31 + 1, T0 + 59 * DAY + 10, T0 + 60 * DAY]);
        let p = PrunePolicy {
            keep_monthly: 12,
            ..Default::default()
        };
        assert_eq!(kept(&b, p), vec!["b001", "b003", "b004"]);
        let p = PrunePolicy {
            keep_monthly: 1,
            ..Default::default()
        };
        assert_eq!(kept(&b, p), vec!["b004"]);
    }

    #[test]
    fn rules_combine_and_report_reasons() {
        // One backup a day for 60 days.
        let times: Vec<i64> = (0..60).map(|d| T0 + d * DAY + 100).collect();
        let b = backups(&times);
        let p = PrunePolicy {
            keep_last: 2,
            keep_daily: 7,
            keep_weekly: 4,
            keep_monthly: 3,
        };
        let r = select(&b, &p);
        let newest = &r[59];
        assert!(newest.last && newest.daily && newest.weekly && newest.monthly);
        // Daily: 53..=59; weekly: newest of 4 weeks (Sundays 55, 48, 41 and day 59's week);
        // monthly: 59 (Feb 29), 30 (Jan 31).
        let k = kept(&b, p);
        assert_eq!(
            k,
            vec!["b030", "b041", "b048", "b053", "b054", "b055", "b056", "b057", "b058", "b059"]
        );
        assert!(r[30].monthly && !r[30].daily);
        assert!(!r[0].keep());
    }

    #[test]
    fn empty_policy_keeps_nothing_and_same_time_ties_break_by_id() {
        let b = backups(&[T0, T0, T0]);
        assert!(kept(&b, PrunePolicy::default()).is_empty());
        let p = PrunePolicy {
            keep_last: 1,
            ..Default::default()
        };
        assert_eq!(kept(&b, p), vec!["b002"]);
        let p = PrunePolicy {
            keep_daily: 1,
            ..Default::default()
        };
        assert_eq!(kept(&b, p), vec!["b002"]);
    }
}
