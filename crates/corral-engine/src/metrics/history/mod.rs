//! The daemon's metrics history: `<data_dir>/metrics.db`, what the graphs of the web page
//! and `GET /api/v1/{vms/NAME,host}/metrics` read.
//!
//! A file of its own, not a table of the registry (`corral.db`): a pass writes every
//! `metrics.interval`, and the registry's write lock is what every `corral vm start` or
//! `define` waits on. Here the only writer is the daemon's sampler, so history writes never
//! contend with the registry's lock, and a damaged or deleted history loses graphs only.
//!
//! Each pass is one transaction (one raw row per VM and one for the host). WAL with
//! `synchronous=NORMAL`: a commit does not wait for the disk (a power cut may lose the last
//! passes, never corrupt the file). Maintenance runs on time, not every pass: once a
//! 5-minute bucket has passed, its raw rows are rolled up into averages and maxima; every
//! prune period (a quarter of `raw_retention`, at most an hour) raw rows older than
//! `raw_retention`, averages older than `average_retention` and every row of VMs that no
//! longer exist are deleted, and freed pages go back to the file system once they are a
//! quarter of the file. The size is then bounded by the number of VMs and the retentions
//! (docs/metrics.md has the figures).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use corral_types::MetricsReport;
use rusqlite::{params, Connection, OptionalExtension, ToSql};

use crate::config::{HostConfig, MetricsConfig};

mod query;
mod schema;
#[cfg(test)]
mod tests;

use schema::{BUCKET_MS, SCHEMA_VERSION};

/// The history file in a data dir.
pub fn history_path(cfg: &HostConfig) -> PathBuf {
    cfg.data_dir.join("metrics.db")
}

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error(
        "metrics history {}: {source}; the file holds the graphs' data only: if this persists, stop `corral serve`, \
         move the file away and a new history starts",
        path.display()
    )]
    Db {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "metrics history {}: schema version {found} is newer than this corral knows ({SCHEMA_VERSION}); upgrade \
         corral, or move the file away to start a new history",
        path.display()
    )]
    Newer { path: PathBuf, found: i64 },
    #[error("metrics history: the write panicked: {0}")]
    Panicked(String),
}

/// What the writer keeps between passes.
struct Writer {
    conn: Connection,
    /// VM name → its number in `vms`.
    ids: HashMap<String, i64>,
    /// Buckets before this instant are rolled up (`meta.rolled_to`); `None` before the
    /// first pass ever.
    rolled_to: Option<i64>,
    /// When the last prune ran (this process; a new one prunes at its first pass).
    last_prune: Option<i64>,
}

pub struct History {
    path: PathBuf,
    interval_ms: i64,
    raw_retention_ms: i64,
    average_retention_ms: i64,
    writer: Mutex<Writer>,
    /// Reads (the API, the web page) on their own connection: in WAL mode they see the last
    /// committed pass and never wait for a write.
    reader: Mutex<Connection>,
}

fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl History {
    /// Opens (or makes) `<data_dir>/metrics.db`.
    pub fn open(cfg: &HostConfig) -> Result<History, HistoryError> {
        History::open_at(&history_path(cfg), &cfg.metrics)
    }

    pub fn open_at(path: &Path, m: &MetricsConfig) -> Result<History, HistoryError> {
        let db = |source| HistoryError::Db {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(db)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(db)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(db)?;
        if version > SCHEMA_VERSION {
            return Err(HistoryError::Newer {
                path: path.to_path_buf(),
                found: version,
            });
        }
        if version == 0 {
            // auto_vacuum can only be chosen before the first table exists.
            conn.pragma_update(None, "auto_vacuum", "INCREMENTAL").map_err(db)?;
        }
        conn.pragma_update(None, "journal_mode", "WAL").map_err(db)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(db)?;
        // The WAL file is cut back to this after a checkpoint instead of keeping its peak.
        conn.pragma_update(None, "journal_size_limit", 4 << 20).map_err(db)?;
        if version == 0 {
            conn.execute_batch(&format!("BEGIN; {} COMMIT;", schema::ddl()))
                .map_err(db)?;
        }
        let rolled_to = conn
            .query_row("SELECT value FROM meta WHERE key = 'rolled_to'", [], |r| r.get(0))
            .optional()
            .map_err(db)?;
        let reader = Connection::open(path).map_err(db)?;
        reader.busy_timeout(std::time::Duration::from_secs(5)).map_err(db)?;
        reader.pragma_update(None, "query_only", true).map_err(db)?;
        Ok(History {
            path: path.to_path_buf(),
            interval_ms: ms(m.interval.0),
            raw_retention_ms: ms(m.raw_retention.0),
            average_retention_ms: ms(m.average_retention.0),
            writer: Mutex::new(Writer {
                conn,
                ids: HashMap::new(),
                rolled_to,
                last_prune: None,
            }),
            reader: Mutex::new(reader),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn db(&self) -> impl Fn(rusqlite::Error) -> HistoryError + '_ {
        |source| HistoryError::Db {
            path: self.path.clone(),
            source,
        }
    }

    /// How often raw rows are pruned: a quarter of their retention, between 5 minutes and an
    /// hour. Raw rows thus stay at most `raw_retention` plus this.
    fn prune_every_ms(&self) -> i64 {
        (self.raw_retention_ms / 4).clamp(BUCKET_MS, 3_600_000)
    }

    /// Writes one pass (at its `taken_ms`) in one transaction, then rolls up and prunes if
    /// their time has come (the pass's time is "now", so tests can inject time).
    pub fn record(&self, report: &MetricsReport) -> Result<(), HistoryError> {
        let db = self.db();
        let mut guard = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let w = &mut *guard;
        let t = report.taken_ms;
        let tx = w.conn.transaction().map_err(&db)?;
        {
            let mut vm_row = tx.prepare_cached(&schema::insert_vm_raw()).map_err(&db)?;
            for vm in &report.vms {
                let id = match w.ids.get(&vm.name) {
                    Some(id) => *id,
                    None => {
                        tx.execute("INSERT OR IGNORE INTO vms (name) VALUES (?1)", [&vm.name])
                            .map_err(&db)?;
                        let id: i64 = tx
                            .query_row("SELECT id FROM vms WHERE name = ?1", [&vm.name], |r| r.get(0))
                            .map_err(&db)?;
                        w.ids.insert(vm.name.clone(), id);
                        id
                    }
                };
                let state = schema::state_code(vm.state);
                let values = schema::vm_values(vm);
                let mut p: Vec<&dyn ToSql> = vec![&id, &t, &state];
                p.extend(values.iter().map(|v| v as &dyn ToSql));
                vm_row.execute(p.as_slice()).map_err(&db)?;
            }
            let values = schema::host_values(&report.host);
            let mut p: Vec<&dyn ToSql> = vec![&t];
            p.extend(values.iter().map(|v| v as &dyn ToSql));
            tx.prepare_cached(&schema::insert_host_raw())
                .map_err(&db)?
                .execute(p.as_slice())
                .map_err(&db)?;
        }
        if w.rolled_to.is_none() {
            // The first pass ever: averaging starts with its bucket.
            let start = t.div_euclid(BUCKET_MS) * BUCKET_MS;
            tx.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('rolled_to', ?1)",
                [start],
            )
            .map_err(&db)?;
            w.rolled_to = Some(start);
        }
        tx.commit().map_err(&db)?;
        self.roll_up(w, t)?;
        if w.last_prune
            .is_none_or(|last| t - last >= self.prune_every_ms() || t < last)
        {
            let names: HashSet<&str> = report.vms.iter().map(|v| v.name.as_str()).collect();
            self.prune(w, t, &names)?;
            w.last_prune = Some(t);
        }
        Ok(())
    }

    /// Rolls every bucket that ended by `now` into averages. A clock set back leaves the
    /// buckets already rolled alone (their raw rows are then missing from the averages).
    fn roll_up(&self, w: &mut Writer, now: i64) -> Result<(), HistoryError> {
        let db = self.db();
        let due = now.div_euclid(BUCKET_MS) * BUCKET_MS;
        let Some(from) = w.rolled_to.filter(|&from| due > from) else {
            return Ok(());
        };
        let tx = w.conn.transaction().map_err(&db)?;
        {
            let ids: Vec<i64> = tx
                .prepare_cached("SELECT id FROM vms")
                .map_err(&db)?
                .query_map([], |r| r.get(0))
                .map_err(&db)?
                .collect::<Result<_, _>>()
                .map_err(&db)?;
            let mut vm = tx.prepare_cached(&schema::rollup_vm()).map_err(&db)?;
            for id in ids {
                vm.execute(params![id, from, due]).map_err(&db)?;
            }
            tx.prepare_cached(&schema::rollup_host())
                .map_err(&db)?
                .execute(params![from, due])
                .map_err(&db)?;
            tx.execute("UPDATE meta SET value = ?1 WHERE key = 'rolled_to'", [due])
                .map_err(&db)?;
        }
        tx.commit().map_err(&db)?;
        w.rolled_to = Some(due);
        Ok(())
    }

    /// Deletes what has aged out (raw rows only once rolled up) and every row of the VMs not
    /// in `names` (the VMs that exist now); gives freed pages back once they are a quarter
    /// of the file.
    fn prune(&self, w: &mut Writer, now: i64, names: &HashSet<&str>) -> Result<(), HistoryError> {
        let db = self.db();
        let raw_cut = (now - self.raw_retention_ms).min(w.rolled_to.unwrap_or(now));
        let avg_cut = now - self.average_retention_ms;
        let tx = w.conn.transaction().map_err(&db)?;
        {
            let vms: Vec<(i64, String)> = tx
                .prepare_cached("SELECT id, name FROM vms")
                .map_err(&db)?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(&db)?
                .collect::<Result<_, _>>()
                .map_err(&db)?;
            for (id, name) in vms {
                if names.contains(name.as_str()) {
                    tx.execute("DELETE FROM vm_raw WHERE vm = ?1 AND t < ?2", params![id, raw_cut])
                        .map_err(&db)?;
                    tx.execute("DELETE FROM vm_avg WHERE vm = ?1 AND t < ?2", params![id, avg_cut])
                        .map_err(&db)?;
                } else {
                    for sql in [
                        "DELETE FROM vm_raw WHERE vm = ?1",
                        "DELETE FROM vm_avg WHERE vm = ?1",
                        "DELETE FROM vms WHERE id = ?1",
                    ] {
                        tx.execute(sql, [id]).map_err(&db)?;
                    }
                    w.ids.remove(&name);
                }
            }
            tx.execute("DELETE FROM host_raw WHERE t < ?1", [raw_cut])
                .map_err(&db)?;
            tx.execute("DELETE FROM host_avg WHERE t < ?1", [avg_cut])
                .map_err(&db)?;
        }
        tx.commit().map_err(&db)?;
        let pages: i64 = w
            .conn
            .pragma_query_value(None, "page_count", |r| r.get(0))
            .map_err(&db)?;
        let free: i64 = w
            .conn
            .pragma_query_value(None, "freelist_count", |r| r.get(0))
            .map_err(&db)?;
        if free > 64 && free * 4 > pages {
            // One page per step: run it to its end.
            let mut vacuum = w.conn.prepare("PRAGMA incremental_vacuum").map_err(&db)?;
            let mut rows = vacuum.query([]).map_err(&db)?;
            while rows.next().map_err(&db)?.is_some() {}
        }
        Ok(())
    }

    /// Row counts of the tables (for tests and the size figures in the docs).
    pub fn row_counts(&self) -> Result<Vec<(&'static str, i64)>, HistoryError> {
        let db = self.db();
        let conn = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        ["vms", "vm_raw", "vm_avg", "host_raw", "host_avg"]
            .into_iter()
            .map(|t| {
                conn.query_row(&format!("SELECT COUNT(*) FROM {t}"), [], |r| r.get(0))
                    .map(|n| (t, n))
                    .map_err(&db)
            })
            .collect()
    }

    /// Bytes the history takes on disk: the database and its WAL.
    pub fn size_on_disk(&self) -> u64 {
        let wal = PathBuf::from(format!("{}-wal", self.path.display()));
        [&self.path, &wal]
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    }
}
