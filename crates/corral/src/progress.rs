//! Progress of engine jobs while a command runs: an indicatif bar on a terminal, JSON lines on
//! stderr with `--json` (stdout keeps the one JSON result), nothing otherwise.

use std::future::Future;
use std::io::IsTerminal;

use corral_engine::Engine;
use corral_types::JobInfo;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::broadcast::error::RecvError;

struct View {
    json: bool,
    bar: Option<ProgressBar>,
}

impl View {
    fn show(&mut self, job: &JobInfo) {
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
        bar.set_message(format!("{} {}", job.kind, job.target));
        bar.set_length(job.total.max(1));
        bar.set_position(job.done);
        if job.state.is_finished() {
            bar.finish_and_clear();
            self.bar = None;
        }
    }
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
