//! Delivery of alert notifications, away from the evaluator: [`Notifier::send`] only puts the
//! notification on a bounded queue (one per notifier, so a dead SMTP server holds up no
//! webhook) and returns at once. A task per notifier delivers in order, retries a failure
//! with a doubling pause (logged as a warning naming the server), and reports each outcome
//! to an [`OutcomeSink`] (the alert history). A full queue drops the notification, logs it
//! and records it as failed.
//!
//! - `mail`: SMTP with lettre; `webhook`: JSON POST with ureq; `message`: what they say.

pub mod mail;
pub mod message;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use corral_types::{AlertEvent, AlertInfo, NotificationOutcome, NotifyConfig};
use tokio::sync::mpsc;

use crate::engine::jobs::now_ms;

/// Where delivery outcomes go (the alert history: `Alerts` records them by alert id).
pub trait OutcomeSink: Send + Sync + 'static {
    fn record(&self, alert_id: i64, outcome: &NotificationOutcome);
}

impl<F: Fn(i64, &NotificationOutcome) + Send + Sync + 'static> OutcomeSink for F {
    fn record(&self, alert_id: i64, outcome: &NotificationOutcome) {
        self(alert_id, outcome)
    }
}

/// How deliveries are made and retried.
#[derive(Debug, Clone)]
pub struct DeliveryOptions {
    /// The host's name, said in every message (and the SMTP greeting).
    pub host: String,
    /// Notifications waiting per notifier; more are dropped (and recorded as failed).
    pub queue: usize,
    /// Tries per notification, the first included.
    pub attempts: u32,
    /// The pause after the first failure; it doubles up to `max_pause`.
    pub first_pause: Duration,
    pub max_pause: Duration,
    /// One try's limit (connect, TLS, the whole SMTP dialogue or HTTP call).
    pub timeout: Duration,
}

impl Default for DeliveryOptions {
    /// 8 tries over about 20 minutes (pauses 10 s, 20 s, 40 s, … up to 10 min).
    fn default() -> Self {
        DeliveryOptions {
            host: host_name(),
            queue: 256,
            attempts: 8,
            first_pause: Duration::from_secs(10),
            max_pause: Duration::from_secs(600),
            timeout: Duration::from_secs(30),
        }
    }
}

/// This host's name (`/proc/sys/kernel/hostname`), or `localhost`.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

struct Outgoing {
    alert: AlertInfo,
    event: AlertEvent,
}

/// One configured notifier's settings.
#[derive(Clone)]
enum Channel {
    Mail(corral_types::MailNotify),
    Webhook(corral_types::WebhookNotify),
}

impl Channel {
    fn name(&self) -> &'static str {
        match self {
            Channel::Mail(_) => "mail",
            Channel::Webhook(_) => "webhook",
        }
    }

    /// `smtp.example.org:587` or the URL: for logs.
    fn target(&self) -> String {
        match self {
            Channel::Mail(m) => mail::server_name(m),
            Channel::Webhook(w) => w.url.clone(),
        }
    }

    async fn deliver(&self, alert: Option<&AlertInfo>, event: AlertEvent, o: &DeliveryOptions) -> Result<(), String> {
        match self {
            Channel::Mail(m) => {
                let (subject, body) = match alert {
                    Some(a) => (message::subject(a, event, &o.host), message::body(a, event, &o.host)),
                    None => (message::test_subject(&o.host), message::test_body(&o.host, now_ms())),
                };
                mail::send(m, &o.host, &subject, body, o.timeout).await
            }
            Channel::Webhook(w) => {
                webhook::send(w, &message::payload(alert, event, &o.host, now_ms()), o.timeout).await
            }
        }
    }
}

fn channels(cfg: &NotifyConfig) -> Vec<Channel> {
    let mut v = vec![];
    if let Some(m) = &cfg.mail {
        v.push(Channel::Mail(m.clone()));
    }
    if let Some(w) = &cfg.webhook {
        v.push(Channel::Webhook(w.clone()));
    }
    v
}

/// The handle the evaluator sends through. Cloning shares the queues; when every clone is
/// dropped the tasks deliver what is queued and end.
#[derive(Clone)]
pub struct Notifier {
    queues: Arc<Vec<(&'static str, mpsc::Sender<Outgoing>)>>,
    sink: Arc<dyn OutcomeSink>,
    /// The delivery tasks, so a daemon can wait for them at shutdown.
    tasks: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Notifier {
    /// Starts one delivery task per configured notifier on the current tokio runtime.
    pub fn start(cfg: &NotifyConfig, opts: DeliveryOptions, sink: Arc<dyn OutcomeSink>) -> Notifier {
        let mut queues = vec![];
        let mut handles = vec![];
        for ch in channels(cfg) {
            let (tx, rx) = mpsc::channel(opts.queue.max(1));
            queues.push((ch.name(), tx));
            handles.push(tokio::spawn(worker(ch, rx, opts.clone(), sink.clone())));
        }
        Notifier {
            queues: Arc::new(queues),
            sink,
            tasks: Arc::new(std::sync::Mutex::new(handles)),
        }
    }

    /// Queues `event` of `alert` for each notifier named; never waits. Returns how many were
    /// queued (a full queue or an unknown name drops that one, logged and recorded).
    pub fn send(&self, alert: &AlertInfo, event: AlertEvent, notifiers: &[String]) -> usize {
        let mut queued = 0;
        for name in notifiers {
            let Some((_, tx)) = self.queues.iter().find(|(n, _)| n == name) else {
                tracing::warn!(notifier = %name, alert = alert.id, "no such notifier is configured; notification dropped");
                continue;
            };
            match tx.try_send(Outgoing {
                alert: alert.clone(),
                event,
            }) {
                Ok(()) => queued += 1,
                Err(e) => {
                    let why = match e {
                        mpsc::error::TrySendError::Full(_) => "its queue is full (the server has been failing)",
                        mpsc::error::TrySendError::Closed(_) => "its delivery task has ended",
                    };
                    tracing::warn!(notifier = %name, alert = alert.id, "{event} notification of {:?} dropped: {why}", alert.rule);
                    self.sink.record(
                        alert.id,
                        &NotificationOutcome {
                            notifier: name.clone(),
                            event,
                            ok: false,
                            attempts: 0,
                            time_ms: now_ms(),
                            error: Some(format!("dropped: {why}")),
                        },
                    );
                }
            }
        }
        queued
    }

    /// Stops taking notifications and waits (at most `within`) for the queued ones to be
    /// delivered or given up.
    pub async fn close(self, within: Duration) {
        let handles = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        drop(self);
        let all = async {
            for h in handles {
                let _ = h.await;
            }
        };
        let _ = tokio::time::timeout(within, all).await;
    }
}

async fn worker(ch: Channel, mut rx: mpsc::Receiver<Outgoing>, o: DeliveryOptions, sink: Arc<dyn OutcomeSink>) {
    while let Some(job) = rx.recv().await {
        let mut attempts = 0;
        let mut pause = o.first_pause;
        let outcome = loop {
            attempts += 1;
            match ch.deliver(Some(&job.alert), job.event, &o).await {
                Ok(()) => {
                    if attempts > 1 {
                        tracing::info!(notifier = ch.name(), server = %ch.target(), alert = job.alert.id, "delivered after {attempts} tries");
                    }
                    break Ok(());
                }
                Err(e) if attempts >= o.attempts => {
                    tracing::warn!(notifier = ch.name(), server = %ch.target(), alert = job.alert.id,
                        "{} notification of {:?} given up after {attempts} tries: {e}", job.event, job.alert.rule);
                    break Err(e);
                }
                Err(e) => {
                    tracing::warn!(notifier = ch.name(), server = %ch.target(), alert = job.alert.id,
                        "{} notification of {:?} failed (try {attempts} of {}), trying again in {}: {e}",
                        job.event, job.alert.rule, o.attempts, corral_types::HumanDuration(pause));
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(o.max_pause);
                }
            }
        };
        sink.record(
            job.alert.id,
            &NotificationOutcome {
                notifier: ch.name().into(),
                event: job.event,
                ok: outcome.is_ok(),
                attempts,
                time_ms: now_ms(),
                error: outcome.err(),
            },
        );
    }
}

/// `corral alerts test`: one test notification through each configured notifier (or only
/// `only`), one try each, and how each went. An unknown or unconfigured name is an error.
pub async fn send_test(
    cfg: &NotifyConfig,
    only: Option<&str>,
    opts: &DeliveryOptions,
) -> Result<Vec<NotificationOutcome>, String> {
    let all = channels(cfg);
    if all.is_empty() {
        return Err(
            "no notifier is configured: add [notify.mail] or [notify.webhook] to the host config (docs/alerts.md)"
                .into(),
        );
    }
    let chosen: Vec<Channel> = match only {
        None => all,
        Some(n) => {
            let c: Vec<Channel> = all.iter().filter(|c| c.name() == n).cloned().collect();
            if c.is_empty() {
                return Err(format!(
                    "{n:?} is not a configured notifier; the configured ones: {}",
                    cfg.names().join(", ")
                ));
            }
            c
        }
    };
    let mut out = vec![];
    for ch in chosen {
        let r = ch.deliver(None, AlertEvent::Test, opts).await;
        if let Err(e) = &r {
            tracing::warn!(notifier = ch.name(), server = %ch.target(), "test notification failed: {e}");
        }
        out.push(NotificationOutcome {
            notifier: ch.name().into(),
            event: AlertEvent::Test,
            ok: r.is_ok(),
            attempts: 1,
            time_ms: now_ms(),
            error: r.err(),
        });
    }
    Ok(out)
}
