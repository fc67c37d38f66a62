//! Reading a history back as series for graphs: samples grouped into buckets of the range's
//! step, each with the average and the highest value. `hour` and `day` read the raw rows;
//! `month` reads the 5-minute averages (weighted by their sample counts) and, for the minutes
//! not rolled up yet, the raw rows, so a new host's month graph is not empty.

use std::collections::BTreeMap;

use corral_types::{HistoryRange, HistorySeries, MetricsHistory};
use rusqlite::{Connection, OptionalExtension, ToSql};

use super::schema::{Col, HOST_COLS, RUNNING, VM_COLS};
use super::{History, HistoryError};

/// One bucket being summed up: sample count, running samples, and per column the weighted
/// sum, its weight and the maximum.
#[derive(Default)]
struct Bucket {
    n: f64,
    up: f64,
    cols: Vec<(f64, f64, Option<f64>)>,
}

/// Whose rows to read: a VM's (by number) or the host's.
#[derive(Clone, Copy)]
enum Subject {
    Vm(i64),
    Host,
}

impl Subject {
    fn cols(self) -> &'static [Col] {
        match self {
            Subject::Vm(_) => &VM_COLS,
            Subject::Host => &HOST_COLS,
        }
    }
    fn table(self) -> &'static str {
        match self {
            Subject::Vm(_) => "vm",
            Subject::Host => "host",
        }
    }
}

/// `?1` step, `?2` from, `?3` to (exclusive), `?4` the VM. Columns: bucket, samples,
/// running samples, then sum, weight and max per column.
fn raw_sql(s: Subject) -> String {
    let aggs: Vec<String> = s
        .cols()
        .iter()
        .map(|c| format!("SUM({0}), COUNT({0}), MAX({0})", c.col))
        .collect();
    let (up, vm) = match s {
        Subject::Vm(_) => ("SUM(state IN (1, 2))", "vm = ?4 AND "),
        Subject::Host => ("0", ""),
    };
    format!(
        "SELECT t / ?1, COUNT(*), {up}, {aggs} FROM {table}_raw WHERE {vm}t >= ?2 AND t < ?3 GROUP BY t / ?1",
        aggs = aggs.join(", "),
        table = s.table()
    )
}

/// The same shape from the averages: each 5-minute row weighs its sample count.
fn avg_sql(s: Subject) -> String {
    let aggs: Vec<String> = s
        .cols()
        .iter()
        .map(|c| {
            format!(
                "SUM({0}_avg * n), SUM(n) FILTER (WHERE {0}_avg IS NOT NULL), MAX({0}_max)",
                c.col
            )
        })
        .collect();
    let (up, vm) = match s {
        Subject::Vm(_) => ("SUM(up)", "vm = ?4 AND "),
        Subject::Host => ("0", ""),
    };
    format!(
        "SELECT t / ?1, SUM(n), {up}, {aggs} FROM {table}_avg WHERE {vm}t >= ?2 AND t < ?3 GROUP BY t / ?1",
        aggs = aggs.join(", "),
        table = s.table()
    )
}

/// Adds the rows of `sql` over `[from, to)` to `buckets`.
fn gather(
    conn: &Connection,
    sql: &str,
    s: Subject,
    (step, from, to): (i64, i64, i64),
    buckets: &mut BTreeMap<i64, Bucket>,
) -> rusqlite::Result<()> {
    if from >= to {
        return Ok(());
    }
    let mut stmt = conn.prepare_cached(sql)?;
    let id;
    let mut p: Vec<&dyn ToSql> = vec![&step, &from, &to];
    if let Subject::Vm(vm) = s {
        id = vm;
        p.push(&id);
    }
    let ncols = s.cols().len();
    let mut rows = stmt.query(p.as_slice())?;
    while let Some(r) = rows.next()? {
        let b = buckets.entry(r.get(0)?).or_default();
        b.cols.resize(ncols, (0.0, 0.0, None));
        b.n += r.get::<_, Option<f64>>(1)?.unwrap_or(0.0);
        b.up += r.get::<_, Option<f64>>(2)?.unwrap_or(0.0);
        for (i, c) in b.cols.iter_mut().enumerate() {
            let sum: Option<f64> = r.get(3 + 3 * i)?;
            let weight: Option<f64> = r.get(4 + 3 * i)?;
            let max: Option<f64> = r.get(5 + 3 * i)?;
            c.0 += sum.unwrap_or(0.0);
            c.1 += weight.unwrap_or(0.0);
            c.2 = match (c.2, max) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
        }
    }
    Ok(())
}

impl History {
    /// A VM's history over `range` ending at `now_ms`. A VM the history has no rows of
    /// (new, or never sampled) has no points.
    pub fn vm_history(&self, vm: &str, range: HistoryRange, now_ms: i64) -> Result<MetricsHistory, HistoryError> {
        let conn = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        let id: Option<i64> = conn
            .query_row("SELECT id FROM vms WHERE name = ?1", [vm], |r| r.get(0))
            .optional()
            .map_err(self.db())?;
        self.read(&conn, vm, id.map(Subject::Vm), range, now_ms)
    }

    /// The host's history over `range` ending at `now_ms`.
    pub fn host_history(&self, range: HistoryRange, now_ms: i64) -> Result<MetricsHistory, HistoryError> {
        let conn = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        self.read(&conn, "host", Some(Subject::Host), range, now_ms)
    }

    fn read(
        &self,
        conn: &Connection,
        name: &str,
        subject: Option<Subject>,
        range: HistoryRange,
        now: i64,
    ) -> Result<MetricsHistory, HistoryError> {
        let db = self.db();
        let step = range.step_ms(self.interval_ms);
        let from = (now - range.span_ms()).div_euclid(step) * step;
        let to = now + 1;
        let mut buckets = BTreeMap::new();
        let vm = matches!(subject, Some(Subject::Vm(_))) || subject.is_none();
        if let Some(s) = subject {
            if range == HistoryRange::Month {
                let rolled: Option<i64> = conn
                    .query_row("SELECT value FROM meta WHERE key = 'rolled_to'", [], |r| r.get(0))
                    .optional()
                    .map_err(&db)?;
                let split = rolled.unwrap_or(from).clamp(from, to);
                gather(conn, &avg_sql(s), s, (step, from, split), &mut buckets).map_err(&db)?;
                gather(conn, &raw_sql(s), s, (step, split, to), &mut buckets).map_err(&db)?;
            } else {
                gather(conn, &raw_sql(s), s, (step, from, to), &mut buckets).map_err(&db)?;
            }
        }
        let cols: &[Col] = if vm { &VM_COLS } else { &HOST_COLS };
        let mut series: Vec<HistorySeries> = cols
            .iter()
            .enumerate()
            .map(|(i, c)| HistorySeries {
                name: c.name.to_string(),
                label: c.label.to_string(),
                unit: c.unit,
                avg: buckets
                    .values()
                    .map(|b| b.cols.get(i).and_then(|&(sum, w, _)| (w > 0.0).then(|| sum / w)))
                    .collect(),
                max: buckets.values().map(|b| b.cols.get(i).and_then(|c| c.2)).collect(),
            })
            .collect();
        if vm {
            let share = |b: &Bucket| (b.n > 0.0).then(|| 100.0 * b.up / b.n);
            series.push(HistorySeries {
                name: RUNNING.name.to_string(),
                label: RUNNING.label.to_string(),
                unit: RUNNING.unit,
                avg: buckets.values().map(share).collect(),
                max: buckets
                    .values()
                    .map(|b| share(b).map(|_| if b.up > 0.0 { 100.0 } else { 0.0 }))
                    .collect(),
            });
        }
        Ok(MetricsHistory {
            subject: name.to_string(),
            range,
            from_ms: from,
            to_ms: now,
            step_ms: step,
            gap_ms: range.gap_ms(self.interval_ms),
            interval_ms: self.interval_ms,
            source: if range == HistoryRange::Month { "average" } else { "raw" }.to_string(),
            times_ms: buckets.keys().map(|b| b * step).collect(),
            series,
        })
    }
}
