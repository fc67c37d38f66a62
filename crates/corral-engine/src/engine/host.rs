//! Host-wide operations: stop or save every VM (host shutdown), start the autostart VMs
//! (host boot). VMs are handled concurrently; one VM's failure does not stop the others.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::task::JoinSet;

use super::state::observe;
use super::Engine;
use crate::error::EngineError;

/// What happened to each VM.
#[derive(Debug, Clone, Serialize)]
pub struct HostReport {
    pub results: Vec<HostItem>,
    pub millis: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct HostItem {
    pub name: String,
    /// `stopped`, `forced`, `saved`, `started`, `resumed`, or `failed`.
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl HostItem {
    fn new(name: String, result: Result<&str, EngineError>) -> HostItem {
        match result {
            Ok(outcome) => HostItem {
                name,
                outcome: outcome.into(),
                error: None,
            },
            Err(e) => HostItem {
                name,
                outcome: "failed".into(),
                error: Some(e.to_string()),
            },
        }
    }
}

impl HostReport {
    /// Waits for every task and gathers their results, by VM name.
    async fn collect(mut set: JoinSet<HostItem>, t0: Instant) -> HostReport {
        let mut results = vec![];
        while let Some(r) = set.join_next().await {
            if let Ok(item) = r {
                results.push(item);
            }
        }
        results.sort_by(|a, b| a.name.cmp(&b.name));
        HostReport {
            results,
            millis: t0.elapsed().as_millis() as u64,
        }
    }

    pub fn failures(&self) -> usize {
        self.results.iter().filter(|r| r.outcome == "failed").count()
    }
}

impl Engine {
    /// Stops (or, with `save`, saves) every running VM and waits until all have closed.
    /// With `save`, a VM whose save fails is stopped instead, so the host can go down.
    pub async fn stop_all(self: &Arc<Self>, save: bool, timeout: Option<Duration>) -> Result<HostReport, EngineError> {
        let t0 = Instant::now();
        let mut set = JoinSet::new();
        for r in self.records()? {
            let paths = self.paths(&r.spec.name);
            if !observe(&r.spec, &paths).await.state.is_active() {
                continue;
            }
            let eng = Arc::clone(self);
            let name = r.spec.name.to_string();
            set.spawn(async move {
                if save {
                    match eng.save(&name).await {
                        Ok(_) => {
                            return HostItem {
                                name,
                                outcome: "saved".into(),
                                error: None,
                            }
                        }
                        Err(e) => tracing::warn!(vm = %name, "save failed ({e}); stopping it instead"),
                    }
                }
                let r = eng.stop(&name, timeout, false).await;
                HostItem::new(name, r.map(|o| if o.forced { "forced" } else { "stopped" }))
            });
        }
        Ok(HostReport::collect(set, t0).await)
    }

    /// Starts every VM marked `autostart` that is not running (a saved one resumes).
    pub async fn start_autostart(self: &Arc<Self>) -> Result<HostReport, EngineError> {
        let t0 = Instant::now();
        let mut set = JoinSet::new();
        for r in self.records()? {
            if !r.spec.autostart {
                continue;
            }
            let state = observe(&r.spec, &self.paths(&r.spec.name)).await.state;
            if state.is_active() {
                continue;
            }
            let eng = Arc::clone(self);
            let name = r.spec.name.to_string();
            set.spawn(async move {
                let r = eng.start(&name).await;
                HostItem::new(name, r.map(|i| if i.resumed { "resumed" } else { "started" }))
            });
        }
        Ok(HostReport::collect(set, t0).await)
    }
}
