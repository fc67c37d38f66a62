//! Alerts (docs/alerts.md): `[[alert]]` threshold rules on the metrics and the built-in
//! rules (VM crashed, backup failed, backup too old), evaluated on each metrics sample; each
//! alert fires once, resolves once and is repeated only every `[alerts] repeat`; the history
//! is kept in the registry (schema v6, `alerts` table) and notifications go out by mail or
//! webhook from their own tasks.
//!
//! - `rules`: `[[alert]]` → [`AlertRule`], the config checks, [`thresholds`] for munin.
//! - `eval`: the pure state machine ([`Evaluator`]), driven by an injected time.
//! - `history`: the engine's side of the history (`Engine::alerts`), backup facts.
//! - `notify`: [`Notifier`] (bounded queue, retries), mail (lettre) and webhook (ureq).
//! - here: [`Alerts`], what the daemon's sampling loop calls.

pub mod eval;
mod history;
pub mod notify;
pub mod rules;

pub use eval::{AlertChange, AlertKey, BackupFacts, BackupJob, Evaluator, Settings, VmBackups};
pub use notify::{DeliveryOptions, Notifier, OutcomeSink};
pub use rules::{threshold_ranges, thresholds, AlertRule};

use std::sync::Arc;

use corral_types::{AlertEvent, AlertInfo, MetricsReport, NotificationOutcome};

use crate::engine::Engine;
use crate::error::EngineError;

/// Resolved alerts beyond this many leave the history even before `[alerts] keep_history`.
const KEEP_RESOLVED: usize = 10_000;
const PRUNE_EVERY_MS: i64 = 3600 * 1000;

/// The alerts of a daemon: the evaluator over the engine's config, its history in the
/// registry, and the notifier it hands changes to. Made once; [`Alerts::evaluate`] on each
/// metrics sample.
pub struct Alerts {
    engine: Arc<Engine>,
    eval: Evaluator,
    notifier: Option<Notifier>,
    manifests: crate::metrics::BackupFacts,
    last_prune_ms: Option<i64>,
}

impl Alerts {
    /// The rules of `engine`'s config; the alerts the history has open are taken up (they do
    /// not fire again). Without a notifier, alerts are only recorded.
    pub fn new(engine: Arc<Engine>, notifier: Option<Notifier>) -> Result<Alerts, EngineError> {
        let mut eval = Evaluator::new(engine.alert_rules(), Settings::from_config(engine.config()));
        let (open, seen) = {
            let reg = engine.reg();
            (reg.alerts_open()?, reg.alerts_failed_backup_jobs()?)
        };
        eval.restore(open, seen);
        Ok(Alerts {
            engine,
            eval,
            notifier,
            manifests: Default::default(),
            last_prune_ms: None,
        })
    }

    /// One pass at `now_ms` (Unix ms) over a sample (with rates: `interval_ms` set): records
    /// every change in the history, queues the notifications (never waits for them), and
    /// returns the changes. Reads the backup jobs (and the manifests of backups it has not seen)
    /// for the built-in rules. Errors of the history are logged, never returned: alerts go on.
    pub fn evaluate(&mut self, now_ms: i64, report: &MetricsReport) -> Vec<AlertChange> {
        let facts = history::backup_facts(&self.engine, &self.manifests);
        let mut changes = self.eval.evaluate(now_ms, report, facts.as_ref());
        for c in &mut changes {
            let reg = self.engine.reg();
            let stored = if c.event == AlertEvent::Fired {
                reg.alert_insert(&c.alert).map(|id| {
                    c.alert.id = id;
                    self.eval.assign_id(&c.key, id);
                })
            } else {
                reg.alert_update(&c.alert)
            };
            if let Err(e) = stored {
                tracing::warn!(rule = %c.alert.rule, "cannot record the alert in the history: {e}");
            }
        }
        for c in &changes {
            tracing::info!(
                alert = c.alert.id,
                "alert {} {}: {} on {}: {}",
                c.alert.rule,
                c.event,
                c.alert.severity,
                c.alert.subject(),
                c.alert.summary
            );
            if let (Some(n), false) = (&self.notifier, c.notify.is_empty()) {
                n.send(&c.alert, c.event, &c.notify);
            }
        }
        if self.last_prune_ms.is_none_or(|t| now_ms - t >= PRUNE_EVERY_MS) {
            self.last_prune_ms = Some(now_ms);
            let keep = self.engine.config().alerts.keep_history.0.as_millis() as i64;
            match self.engine.reg().alerts_prune(now_ms - keep, KEEP_RESOLVED) {
                Ok(0) => {}
                Ok(n) => tracing::info!("alerts: {n} old resolved alerts left the history"),
                Err(e) => tracing::warn!("alerts: cannot prune the history: {e}"),
            }
        }
        changes
    }

    /// The open alerts as this evaluator sees them.
    pub fn firing(&self) -> Vec<AlertInfo> {
        self.eval.firing().cloned().collect()
    }

    pub fn rules(&self) -> &[AlertRule] {
        self.eval.rules()
    }
}

impl Notifier {
    /// The daemon's notifier: the engine's `[notify]` settings, outcomes into its history.
    /// Starts the delivery tasks on the current tokio runtime.
    pub fn for_engine(engine: &Arc<Engine>, opts: DeliveryOptions) -> Notifier {
        let e = Arc::clone(engine);
        let sink = move |id: i64, o: &NotificationOutcome| e.alert_record_notification(id, o);
        Notifier::start(&engine.config().notify, opts, Arc::new(sink))
    }
}
