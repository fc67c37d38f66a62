//! The daemon's alerts: each sampler pass goes through the alert evaluator (which records
//! changes in the history and queues notifications; the delivery tasks retry on their own and
//! never hold up the sampler). The evaluator reads the registry and, now and then, the
//! store's manifests, so it runs on the blocking pool, one pass at a time.

use std::sync::Arc;
use std::time::Duration;

use corral_engine::alerts::{Alerts, DeliveryOptions, Notifier};
use corral_engine::metrics::Sampler;
use tokio_util::sync::CancellationToken;

/// Runs until `stop`; then gives queued notifications a few seconds to go out.
pub async fn run(sampler: Arc<Sampler>, stop: CancellationToken) {
    let engine = sampler.engine().clone();
    let notifier = Notifier::for_engine(&engine, DeliveryOptions::default());
    let mut alerts = match Alerts::new(engine, Some(notifier.clone())) {
        Ok(a) => Some(a),
        Err(e) => {
            tracing::warn!("alerts are off: cannot read the alert history: {e}");
            None
        }
    };
    let mut passes = sampler.subscribe();
    while alerts.is_some() {
        tokio::select! {
            _ = stop.cancelled() => break,
            changed = passes.changed() => if changed.is_err() { break },
        }
        let Some(report) = passes.borrow_and_update().clone() else {
            continue;
        };
        // Rates (and so threshold values) need a pass before; the first one only sets the stage.
        if report.interval_ms.is_none() {
            continue;
        }
        let mut a = alerts.take().expect("checked by the loop");
        let done = tokio::task::spawn_blocking(move || {
            a.evaluate(report.taken_ms, &report);
            a
        })
        .await;
        match done {
            Ok(a) => alerts = Some(a),
            Err(e) => tracing::error!("alerts stopped: the evaluator failed: {e}"),
        }
    }
    drop(alerts);
    notifier.close(Duration::from_secs(5)).await;
}
