//! Facts for monitoring beside resource use, cheap enough to read on every scrape: each VM's
//! last backup (from the store's manifests, each read once and remembered) and how many jobs
//! failed (a counter kept by the long-lived process that asks).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use corral_store::Store;

use crate::engine::backup::store_err;
use crate::engine::Engine;
use crate::error::EngineError;
use crate::registry::JobFailures;

/// A VM's newest backup.
#[derive(Debug, Clone, PartialEq)]
pub struct LastBackup {
    pub vm: String,
    pub id: String,
    /// When it ended (start plus duration), Unix seconds.
    pub end_unix_seconds: f64,
    pub duration_seconds: f64,
}

/// What a manifest says that monitoring needs.
#[derive(Debug, Clone)]
struct Brief {
    vm: String,
    start_unix: i64,
    duration_ms: u64,
}

/// Remembers the manifests it has read: a look lists the store's backup directory and reads
/// only the manifests of backups it has not seen, so it costs one `readdir` once every backup
/// is known. Backups that went (prune) are forgotten.
#[derive(Default)]
pub struct BackupFacts {
    seen: Mutex<HashMap<String, Brief>>,
}

impl BackupFacts {
    /// The newest backup of each VM that has one, by VM name. A store that does not exist yet
    /// has none; a manifest that cannot be read is left out (and tried again next time).
    pub fn last_per_vm(&self, engine: &Engine) -> Result<Vec<LastBackup>, EngineError> {
        let root = engine.store_path();
        let ids = Store::peek_backup_ids(&root).map_err(store_err)?;
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let present: HashSet<&String> = ids.iter().collect();
        seen.retain(|id, _| present.contains(id));
        for id in &ids {
            if seen.contains_key(id) {
                continue;
            }
            match Store::peek_manifest(&root, id) {
                Ok(m) => {
                    seen.insert(
                        id.clone(),
                        Brief {
                            vm: m.vm,
                            start_unix: m.time_unix,
                            duration_ms: m.stats.duration_ms,
                        },
                    );
                }
                Err(corral_store::StoreError::BackupNotFound(_)) => {} // deleted meanwhile
                Err(e) => tracing::warn!("metrics: backup {id}: {e}"),
            }
        }
        Ok(newest_per_vm(&seen))
    }
}

fn newest_per_vm(seen: &HashMap<String, Brief>) -> Vec<LastBackup> {
    let mut newest: BTreeMap<&str, (&String, &Brief)> = BTreeMap::new();
    for (id, b) in seen {
        let end = |b: &Brief| b.start_unix * 1000 + b.duration_ms as i64;
        match newest.get(b.vm.as_str()) {
            // Ids begin with the start time, so equal ends are ordered by id.
            Some((oid, o)) if (end(o), *oid) >= (end(b), id) => {}
            _ => {
                newest.insert(&b.vm, (id, b));
            }
        }
    }
    newest
        .into_values()
        .map(|(id, b)| LastBackup {
            vm: b.vm.clone(),
            id: id.clone(),
            end_unix_seconds: b.start_unix as f64 + b.duration_ms as f64 / 1000.0,
            duration_seconds: b.duration_ms as f64 / 1000.0,
        })
        .collect()
}

/// Failed jobs by kind, counted from when this counter was made: a Prometheus counter, which
/// only grows while the process lives. Failures are read from the job history, so jobs run
/// by the CLI count as well as the daemon's own; each is counted once, even after the history
/// drops its row.
pub struct JobFailureCounter {
    since_ms: i64,
    state: Mutex<Counted>,
}

#[derive(Default)]
struct Counted {
    /// The failed jobs already counted that the history still holds.
    ids: HashSet<i64>,
    totals: BTreeMap<String, u64>,
}

impl Counted {
    fn absorb(&mut self, now: JobFailures) {
        for k in now.kinds {
            self.totals.entry(k).or_insert(0);
        }
        let mut still = HashSet::with_capacity(now.failed.len());
        for (id, kind) in now.failed {
            if !self.ids.contains(&id) {
                *self.totals.entry(kind).or_insert(0) += 1;
            }
            still.insert(id);
        }
        self.ids = still;
    }
}

impl Default for JobFailureCounter {
    fn default() -> Self {
        JobFailureCounter::new()
    }
}

impl JobFailureCounter {
    /// Counts failures from now on.
    pub fn new() -> JobFailureCounter {
        JobFailureCounter {
            since_ms: crate::engine::jobs::now_ms(),
            state: Mutex::default(),
        }
    }

    /// Failures so far by job kind; every kind in the history is there, with 0 if none failed.
    pub fn totals(&self, engine: &Engine) -> Result<BTreeMap<String, u64>, EngineError> {
        let now = engine.reg().job_failures_since(self.since_ms)?;
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.absorb(now);
        Ok(state.totals.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_backup_of_each_vm_by_its_end() {
        let b = |vm: &str, start: i64, ms: u64| Brief {
            vm: vm.into(),
            start_unix: start,
            duration_ms: ms,
        };
        let seen = HashMap::from([
            ("a1".to_string(), b("a", 100, 5_000)),
            ("a2".to_string(), b("a", 102, 500)), // started later, ended earlier
            ("b1".to_string(), b("b", 50, 1_500)),
        ]);
        let last = newest_per_vm(&seen);
        assert_eq!(
            last,
            [
                LastBackup {
                    vm: "a".into(),
                    id: "a1".into(),
                    end_unix_seconds: 105.0,
                    duration_seconds: 5.0
                },
                LastBackup {
                    vm: "b".into(),
                    id: "b1".into(),
                    end_unix_seconds: 51.5,
                    duration_seconds: 1.5
                },
            ]
        );
    }

    #[test]
    fn failures_are_counted_once_and_never_go_down() {
        let mut c = Counted::default();
        let f = |kinds: &[&str], failed: &[(i64, &str)]| JobFailures {
            kinds: kinds.iter().map(|k| k.to_string()).collect(),
            failed: failed.iter().map(|(i, k)| (*i, k.to_string())).collect(),
        };
        c.absorb(f(&["backup", "clone"], &[]));
        assert_eq!(c.totals, BTreeMap::from([("backup".into(), 0), ("clone".into(), 0)]));
        c.absorb(f(&["backup", "clone"], &[(7, "backup")]));
        c.absorb(f(&["backup", "clone"], &[(7, "backup"), (9, "backup")]));
        assert_eq!(c.totals["backup"], 2);
        // The history dropped job 7 and 9: still 2; a new failure of a new kind adds to it.
        c.absorb(f(&["restore"], &[(12, "restore")]));
        assert_eq!(
            c.totals,
            BTreeMap::from([("backup".into(), 2), ("clone".into(), 0), ("restore".into(), 1)])
        );
    }
}
