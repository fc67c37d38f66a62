//! `GET /api/v1/events`: server-sent events of job progress and VM state changes.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use corral_engine::Engine;

use crate::auth::Caller;
use crate::AppState;

/// How often the event stream looks for VM state changes.
const STATE_POLL: Duration = Duration::from_secs(1);

struct EventFeed {
    engine: Arc<Engine>,
    stop: tokio_util::sync::CancellationToken,
    jobs: tokio::sync::broadcast::Receiver<corral_types::JobInfo>,
    tick: tokio::time::Interval,
    /// Each VM's state as last sent (`None` before the first look: that look sends all).
    states: Option<std::collections::HashMap<String, corral_types::RunState>>,
    pending: std::collections::VecDeque<axum::response::sse::Event>,
}

/// Server-sent events: job progress and VM state changes.
///
/// `job` events carry a job's progress (as `GET /api/v1/jobs/ID` shows it) for jobs this
/// daemon runs; `vm` events carry a VM's status (as in `GET /api/v1/vms`) when its state
/// changes, first every VM once. `lagged` says how many events a slow reader missed.
#[utoipa::path(
    get, operation_id = "events", path = "/api/v1/events", tag = "jobs",
    responses(
        (status = 200, description = "An endless `text/event-stream`; each event's data is a JobInfo (`job`) or a VmStatus (`vm`)",
            content_type = "text/event-stream", body = String),
        (status = 401, description = "No valid credentials", body = crate::error::ErrorBody),
    )
)]
pub async fn events(
    State(state): State<AppState>,
    _c: Caller,
) -> axum::response::sse::Sse<
    impl futures_util::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>,
> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let feed = EventFeed {
        jobs: state.engine.job_events(),
        engine: state.engine.clone(),
        stop: state.stop.clone(),
        tick: tokio::time::interval(STATE_POLL),
        states: None,
        pending: Default::default(),
    };
    let stream = futures_util::stream::unfold(feed, |mut f| async move {
        loop {
            if let Some(ev) = f.pending.pop_front() {
                return Some((Ok(ev), f));
            }
            tokio::select! {
                // The daemon is stopping: end the stream so the connection can close.
                _ = f.stop.cancelled() => return None,
                job = f.jobs.recv() => match job {
                    Ok(j) => {
                        let ev = Event::default().event("job").json_data(&j).unwrap_or_default();
                        return Some((Ok(ev), f));
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        return Some((Ok(Event::default().event("lagged").data(n.to_string())), f));
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                },
                _ = f.tick.tick() => {
                    let Ok(list) = f.engine.list().await else { continue };
                    let old = f.states.take().unwrap_or_default();
                    let mut now = std::collections::HashMap::new();
                    for st in list {
                        if old.get(&st.name) != Some(&st.state) {
                            f.pending.push_back(Event::default().event("vm").json_data(&st).unwrap_or_default());
                        }
                        now.insert(st.name, st.state);
                    }
                    f.states = Some(now);
                }
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
