//! Progress of engine jobs while a command runs: an indicatif bar on a terminal, JSON lines on
//! stderr with `--json` (stdout keeps the one JSON result), nothing otherwise.

use std::future::Future;
use std::io::IsTerminal;

use corral_engine::Engine;
use corral_types::{ByteSize, JobInfo, TransferBytes};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::broadcast::error::RecvError;

/// Shows one job's progress as it changes.
pub struct View {
    json: bool,
    bar: Option<ProgressBar>,
}

impl View {
    pub fn new(json: bool) -> View {
        View { json, bar: None }
    }

    pub fn show(&mut self, job: &JobInfo) {
        if self.json {
            eprintln!("{}", serde_json::json!({"event": "job", "job": job}));
            return;
        }
        if !std::io::stderr().is_terminal() {
            return;
        }
        let bar = self.bar.get_or_insert_with(|| {
            let b = ProgressBar::new(0);
            b.set_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {percent:>3}%  {binary_bytes}/{binary_total_bytes}  {eta}",
                )
                .expect("template")
                .progress_chars("=> "),
            );
            b
        });
        bar.set_message(match &job.bytes {
            Some(b) => format!("{} {}  {}", job.kind, job.target, transfer_line(b, job.started_ms)),
            None => format!("{} {}", job.kind, job.target),
        });
        bar.set_length(job.total.max(1));
        bar.set_position(job.done);
        if job.state.is_finished() {
            bar.finish_and_clear();
            self.bar = None;
        }
    }
}

/// `read 1.2G (340M/s)  new 800M  reused 400M  stored 310M`: what a backup or restore moved.
pub fn transfer_line(b: &TransferBytes, started_ms: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(started_ms);
    let secs = ((now - started_ms).max(1) as f64) / 1000.0;
    let rate = ByteSize((b.read as f64 / secs) as u64).approx();
    format!(
        "read {} ({rate}/s)  new {}  reused {}  stored {}",
        ByteSize(b.read).approx(),
        ByteSize(b.new).approx(),
        ByteSize(b.reused).approx(),
        ByteSize(b.stored).approx()
    )
}

/// Runs `work`, showing every job the engine reports meanwhile.
pub async fn with_progress<T>(engine: &Engine, json: bool, work: impl Future<Output = T>) -> T {
    let mut rx = engine.job_events();
    let mut view = View { json, bar: None };
    tokio::pin!(work);
    loop {
        tokio::select! {
            out = &mut work => {
                while let Ok(job) = rx.try_recv() {
                    view.show(&job);
                }
                if let Some(b) = view.bar.take() {
                    b.finish_and_clear();
                }
                return out;
            }
            ev = rx.recv() => match ev {
                Ok(job) => view.show(&job),
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return work.await,
            }
        }
    }
}
