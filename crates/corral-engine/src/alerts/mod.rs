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
