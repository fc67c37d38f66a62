//! The daemon's sampler: one pass every `metrics.interval`, each turned into rates against
//! the pass before. Front ends read the latest pass (`latest`), or wait for the next one
//! (`subscribe`); what a pass feeds (history, alerts) hangs off `pass`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corral_types::MetricsReport;

use super::with_rates;
use crate::engine::Engine;
use crate::error::EngineError;

/// How long the last pass took and when it ran (for logs and the benchmark).
#[derive(Debug, Clone, Copy, Default)]
pub struct PassCost {
    pub wall: Duration,
    pub passes: u64,
}

pub struct Sampler {
    engine: Arc<Engine>,
    /// The last raw sample (counters), that the next pass's rates are computed against.
    before: Mutex<Option<MetricsReport>>,
    latest: tokio::sync::watch::Sender<Option<Arc<MetricsReport>>>,
    cost: Mutex<PassCost>,
}

impl Sampler {
    pub fn new(engine: Arc<Engine>) -> Sampler {
        Sampler {
            engine,
            before: Mutex::new(None),
            latest: tokio::sync::watch::channel(None).0,
            cost: Mutex::new(PassCost::default()),
        }
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Samples every VM and the host; the report has rates from the second pass on.
    pub async fn pass(&self) -> Result<Arc<MetricsReport>, EngineError> {
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
        {
            let mut c = self.cost.lock().unwrap_or_else(|p| p.into_inner());
            c.wall = t0.elapsed();
            c.passes += 1;
            let running = report.vms.iter().filter(|v| v.pid.is_some()).count();
            tracing::debug!(
                "metrics pass {}: {} VMs ({running} running) in {:.2} ms",
                c.passes,
                report.vms.len(),
                c.wall.as_secs_f64() * 1000.0
            );
        }
        self.latest.send_replace(Some(report.clone()));
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
