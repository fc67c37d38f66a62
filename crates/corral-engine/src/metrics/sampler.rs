//! The daemon's sampler: one pass every `metrics.interval`, each turned into rates against
//! the pass before. Front ends read the latest pass (`latest`), or wait for the next one
//! (`subscribe`); what a pass feeds (history, alerts) hangs off `pass`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use corral_types::MetricsReport;

use super::history::History;
use super::with_rates;
use crate::engine::Engine;
use crate::error::EngineError;

/// How long the last pass took and when it ran (for logs and the benchmark).
#[derive(Debug, Clone, Copy, Default)]
pub struct PassCost {
    pub wall: Duration,
    pub passes: u64,
    /// How long the last pass's history write took (zero without a history).
    pub history_write: Duration,
}

pub struct Sampler {
    engine: Arc<Engine>,
    /// The last raw sample (counters), that the next pass's rates are computed against.
    before: Mutex<Option<MetricsReport>>,
    latest: tokio::sync::watch::Sender<Option<Arc<MetricsReport>>>,
    cost: Mutex<PassCost>,
    /// Where every pass is kept, once `open_history` ran (the daemon; `corral metrics` keeps
    /// none), or why it could not be opened.
    history: OnceLock<Result<Arc<History>, String>>,
    /// The last history write failed (logged once, not every pass).
    history_failing: AtomicBool,
    /// One pass at a time: the loop's, or a caller's that found none yet.
    passing: tokio::sync::Mutex<()>,
}

impl Sampler {
    pub fn new(engine: Arc<Engine>) -> Sampler {
        Sampler {
            engine,
            before: Mutex::new(None),
            latest: tokio::sync::watch::channel(None).0,
            cost: Mutex::new(PassCost::default()),
            history: OnceLock::new(),
            history_failing: AtomicBool::new(false),
            passing: tokio::sync::Mutex::new(()),
        }
    }

    /// Opens `<data_dir>/metrics.db` and keeps every pass in it from now on. A failure is
    /// returned and remembered (the API says it); sampling goes on without a history.
    pub fn open_history(&self) -> Result<(), super::HistoryError> {
        let opened = History::open(self.engine.config()).map(Arc::new);
        let kept = opened.as_ref().map(Arc::clone).map_err(|e| e.to_string());
        let _ = self.history.set(kept);
        opened.map(|_| ())
    }

    /// The history, or why there is none.
    pub fn history(&self) -> Result<Arc<History>, String> {
        match self.history.get() {
            Some(Ok(h)) => Ok(h.clone()),
            Some(Err(e)) => Err(format!("the metrics history could not be opened: {e}")),
            None => Err("no metrics history is kept here (only `corral serve` keeps one)".to_string()),
        }
    }

    /// Writes a pass to the history on a blocking thread. A failure is logged (once until
    /// writes work again) and never stops sampling.
    async fn keep(&self, report: &Arc<MetricsReport>) -> Duration {
        let Some(Ok(history)) = self.history.get() else {
            return Duration::ZERO;
        };
        let (history, r) = (history.clone(), report.clone());
        let t0 = Instant::now();
        let result = tokio::task::spawn_blocking(move || history.record(&r))
            .await
            .unwrap_or_else(|e| Err(super::HistoryError::Panicked(e.to_string())));
        let took = t0.elapsed();
        match result {
            Ok(()) => {
                if self.history_failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("metrics: history writes work again");
                }
                tracing::debug!("metrics: history write took {took:?}");
            }
            Err(e) => {
                if !self.history_failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!("metrics: a pass could not be kept in the history (sampling goes on): {e}");
                }
            }
        }
        took
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Samples every VM and the host; the report has rates from the second pass on.
    pub async fn pass(&self) -> Result<Arc<MetricsReport>, EngineError> {
        let _one = self.passing.lock().await;
        self.pass_now().await
    }

    /// The latest pass, or a pass now if none has run yet (a caller racing the loop's first
    /// pass waits for it rather than sampling and keeping a second one).
    pub async fn latest_or_pass(&self) -> Result<Arc<MetricsReport>, EngineError> {
        let _one = self.passing.lock().await;
        match self.latest() {
            Some(r) => Ok(r),
            None => self.pass_now().await,
        }
    }

    async fn pass_now(&self) -> Result<Arc<MetricsReport>, EngineError> {
        let t0 = Instant::now();
        let now = self.engine.metrics_sample(&[]).await?;
        let report = {
            let mut before = self.before.lock().unwrap_or_else(|p| p.into_inner());
            let r = match before.as_ref() {
                Some(b) => with_rates(now.clone(), b),
                None => now.clone(),
            };
            *before = Some(now);
            Arc::new(r)
        };
        let wall = t0.elapsed();
        self.latest.send_replace(Some(report.clone()));
        let history_write = self.keep(&report).await;
        {
            let mut c = self.cost.lock().unwrap_or_else(|p| p.into_inner());
            c.wall = wall;
            c.passes += 1;
            c.history_write = history_write;
            let running = report.vms.iter().filter(|v| v.pid.is_some()).count();
            tracing::debug!(
                "metrics pass {}: {} VMs ({running} running) in {:.2} ms",
                c.passes,
                report.vms.len(),
                c.wall.as_secs_f64() * 1000.0
            );
        }
        Ok(report)
    }

    /// The latest pass, if one has run.
    pub fn latest(&self) -> Option<Arc<MetricsReport>> {
        self.latest.borrow().clone()
    }

    /// Wakes on every pass.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Option<Arc<MetricsReport>>> {
        self.latest.subscribe()
    }

    pub fn cost(&self) -> PassCost {
        *self.cost.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs a pass every `metrics.interval` until `stop` resolves. A failed pass is logged and
    /// the next one runs on time; a slow pass delays the next rather than piling up.
    pub async fn run(&self, stop: impl std::future::Future<Output = ()>) {
        let mut tick = tokio::time::interval(self.engine.config().metrics.interval.0);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = tick.tick() => {
                    if let Err(e) = self.pass().await {
                        tracing::warn!("metrics: a sampling pass failed: {e}");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(dir: &std::path::Path) -> Arc<Engine> {
        let cfg = crate::config::HostConfig::parse(&format!(
            "data_dir = \"{0}/data\"\nrun_dir = \"{0}/run\"\n",
            dir.display()
        ))
        .unwrap();
        Arc::new(Engine::open(cfg).unwrap())
    }

    /// Two callers finding no pass yet get the same one, sampled once.
    #[tokio::test]
    async fn callers_racing_for_a_first_pass_share_one() {
        let dir = tempfile::tempdir().unwrap();
        let s = Sampler::new(engine(dir.path()));
        let (a, b) = tokio::join!(s.latest_or_pass(), s.latest_or_pass());
        assert!(Arc::ptr_eq(&a.unwrap(), &b.unwrap()));
        assert_eq!(s.cost().passes, 1);
        // Later calls take the latest; a pass of the loop makes a new one.
        let c = s.latest_or_pass().await.unwrap();
        assert_eq!(s.cost().passes, 1);
        let d = s.pass().await.unwrap();
        assert!(!Arc::ptr_eq(&c, &d));
        assert_eq!(s.cost().passes, 2);
    }

    /// Passes land in the history; a broken history is reported by `record` but the passes
    /// go on (and `latest` moves), and a sampler without one (the CLI's) says so.
    #[tokio::test]
    async fn passes_are_kept_and_a_failing_history_never_stops_sampling() {
        let dir = tempfile::tempdir().unwrap();
        let s = Sampler::new(engine(dir.path()));
        assert!(s.history().err().unwrap().contains("only `corral serve`"));
        s.open_history().unwrap();
        let h = s.history().unwrap();
        assert_eq!(h.path(), dir.path().join("data/metrics.db"));
        s.pass().await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        s.pass().await.unwrap();
        assert!(h.row_counts().unwrap().contains(&("host_raw", 2)));
        assert!(s.cost().history_write > Duration::ZERO);

        // Another connection breaks the file under the daemon: writes fail, passes do not.
        let c = rusqlite::Connection::open(h.path()).unwrap();
        c.execute_batch("DROP TABLE host_raw;").unwrap();
        drop(c);
        let before = s.latest().unwrap().taken_ms;
        tokio::time::sleep(Duration::from_millis(5)).await;
        let r = s.pass().await.unwrap();
        assert!(r.taken_ms > before && s.latest().unwrap().taken_ms == r.taken_ms);
        assert!(s.history_failing.load(Ordering::Relaxed));
        assert_eq!(s.cost().passes, 3);
    }
}
