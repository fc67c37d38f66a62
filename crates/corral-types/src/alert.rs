//! Threshold alerts: the host config's `[[alert]]` rules, `[alerts]` settings and `[notify.*]`
//! notifiers (config types, checked by the engine when the config loads), and what alerts
//! report: [`AlertInfo`] (`corral alerts --json`, `GET /api/v1/alerts`), the outcome of each
//! notification ([`NotificationOutcome`]) and the JSON body a webhook receives
//! ([`WebhookPayload`]). docs/alerts.md describes them for people.
//!
//! Times are Unix milliseconds (`*_ms`), like [`crate::JobInfo`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

use crate::human::HumanDuration;
use crate::ByteSize;

/// How urgent an alert is; it is said in every notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    #[default]
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A threshold as written in a rule: `"90%"`, `"50M"`, `4` or `2.5`. What it means depends on
/// the rule's metric (its [`crate::MetricUnit`]); the engine reads it when the config loads.
#[derive(Debug, Clone, PartialEq)]
pub enum ThresholdValue {
    Number(f64),
    Text(String),
}

impl fmt::Display for ThresholdValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ThresholdValue::Number(n) => write!(f, "{n}"),
            ThresholdValue::Text(t) => write!(f, "{t:?}"),
        }
    }
}

impl Serialize for ThresholdValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ThresholdValue::Number(n) => s.serialize_f64(*n),
            ThresholdValue::Text(t) => s.serialize_str(t),
        }
    }
}

impl<'de> Deserialize<'de> for ThresholdValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = ThresholdValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a threshold such as \"90%\", \"50M\" or 4")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ThresholdValue, E> {
                Ok(ThresholdValue::Number(v as f64))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ThresholdValue, E> {
                Ok(ThresholdValue::Number(v as f64))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ThresholdValue, E> {
                Ok(ThresholdValue::Number(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ThresholdValue, E> {
                Ok(ThresholdValue::Text(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// One `[[alert]]` entry of the host config:
///
/// ```toml
/// [[alert]]
/// name = "busy"
/// metric = "cpu"
/// above = "90%"
/// for = "5m"
/// vms = ["web*", "tag:prod"]
/// notify = ["mail"]
/// severity = "critical"
/// ```
///
/// Kept as written; the engine checks it (metric, threshold, selection, notifiers) when the
/// config loads and refuses a bad entry naming it and its line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRuleSpec {
    /// Unique among the rules; default: made from the metric and threshold (`cpu above 90%`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A metric name (`cpu`, `memory`, `disk_write`, `host_load`, …; [`crate::Metric`]).
    pub metric: String,
    /// Fires when the value is above this…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub above: Option<ThresholdValue>,
    /// …or below this (exactly one of the two).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub below: Option<ThresholdValue>,
    /// How long the condition must hold before the alert fires (default 0: at once).
    #[serde(rename = "for", default, skip_serializing_if = "Option::is_none")]
    pub for_: Option<HumanDuration>,
    /// How long the condition must have stopped before the alert resolves (default: `for`, at
    /// least 1m), so that a value going up and down around the threshold sends no storm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_firing_for: Option<HumanDuration>,
    /// VM name globs (`*`, `?`) and `tag:NAME`; default every VM. Not for host metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vms: Option<Vec<String>>,
    /// Notifier names (`mail`, `webhook`); default every configured one; `[]` records only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<Vec<String>>,
    #[serde(default)]
    pub severity: Severity,
}

/// `[alerts]`: settings of every alert and the built-in rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsSettings {
    /// Re-notify a still-firing alert this often ("0": never again).
    #[serde(default = "four_hours")]
    pub repeat: HumanDuration,
    /// Built-in: a VM whose QEMU died without a clean shutdown (state `crashed`).
    #[serde(default = "yes")]
    pub crash: bool,
    /// Built-in: a backup job that failed (or was interrupted), until the VM's next good backup.
    #[serde(default = "yes")]
    pub backup_failed: bool,
    /// Built-in: a VM that has backups, the newest older than this (`"36h"`; `"off"`, the
    /// default, turns it off).
    #[serde(
        default,
        deserialize_with = "duration_or_off",
        serialize_with = "ser_duration_or_off",
        skip_serializing_if = "Option::is_none"
    )]
    pub backup_max_age: Option<HumanDuration>,
    /// Notifiers of the built-in rules; default every configured one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<Vec<String>>,
    /// Resolved alerts older than this leave the history.
    #[serde(default = "ninety_days")]
    pub keep_history: HumanDuration,
}

impl Default for AlertsSettings {
    fn default() -> Self {
        AlertsSettings {
            repeat: four_hours(),
            crash: true,
            backup_failed: true,
            backup_max_age: None,
            notify: None,
            keep_history: ninety_days(),
        }
    }
}

fn yes() -> bool {
    true
}
fn four_hours() -> HumanDuration {
    HumanDuration(Duration::from_secs(4 * 3600))
}
fn ninety_days() -> HumanDuration {
    HumanDuration(Duration::from_secs(90 * 86400))
}

fn duration_or_off<'de, D: Deserializer<'de>>(d: D) -> Result<Option<HumanDuration>, D::Error> {
    struct V;
    impl de::Visitor<'_> for V {
        type Value = Option<HumanDuration>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a duration such as \"36h\", or \"off\"")
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
            if v {
                Err(E::custom("write a duration such as \"36h\" (or \"off\")"))
            } else {
                Ok(None)
            }
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok((v > 0).then(|| HumanDuration(Duration::from_secs(v))))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            u64::try_from(v)
                .map_err(|_| E::custom(format!("{v} is not a duration: it is negative")))
                .and_then(|v| self.visit_u64(v))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            if v.trim() == "off" {
                return Ok(None);
            }
            let d: HumanDuration = v.parse().map_err(E::custom)?;
            Ok((!d.0.is_zero()).then_some(d))
        }
    }
    d.deserialize_any(V)
}

fn ser_duration_or_off<S: Serializer>(v: &Option<HumanDuration>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(d) => d.serialize(s),
        None => s.serialize_str("off"),
    }
}

/// `[notify]`: where alerts are sent. Each table present is one notifier, named after it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mail: Option<MailNotify>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookNotify>,
}

impl NotifyConfig {
    /// The configured notifiers' names, in a fixed order.
    pub fn names(&self) -> Vec<&'static str> {
        let mut v = vec![];
        if self.mail.is_some() {
            v.push("mail");
        }
        if self.webhook.is_some() {
            v.push("webhook");
        }
        v
    }
}

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MailTls {
    /// Plain connection upgraded with STARTTLS, which must succeed (submission, port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (SMTPS, port 465).
    Tls,
    /// No encryption: only to a server on this host (port 25).
    None,
}

impl MailTls {
    pub fn default_port(self) -> u16 {
        match self {
            MailTls::Starttls => 587,
            MailTls::Tls => 465,
            MailTls::None => 25,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            MailTls::Starttls => "starttls",
            MailTls::Tls => "tls",
            MailTls::None => "none",
        }
    }
}

/// `[notify.mail]`: mail through an SMTP server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailNotify {
    /// The SMTP server's host name (checked against its certificate) or address.
    pub server: String,
    /// Default: 587 for starttls, 465 for tls, 25 for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default)]
    pub tls: MailTls,
    /// Log in as this user (with the password in `password_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// A file holding the password (first line), readable by corral only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// The sender: `corral@example.org` or `corral <corral@example.org>`.
    pub from: String,
    /// The recipients.
    pub to: Vec<String>,
    /// A PEM file with the CA certificate(s) that signed the server's certificate (a private
    /// CA); without it the usual public CAs are trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
}

impl MailNotify {
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(self.tls.default_port())
    }
}

/// `[notify.webhook]`: a JSON POST ([`WebhookPayload`]) to a URL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookNotify {
    /// `https://…` (or `http://…`).
    pub url: String,
    /// Extra request headers, e.g. `{ Authorization = "Bearer …" }`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// A PEM file with the CA certificate(s) of a private CA, for an `https` URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
}

/// What an alert watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// An `[[alert]]` rule on a metric.
    Threshold,
    /// Built-in: the VM's QEMU died without a clean shutdown.
    Crash,
    /// Built-in: a backup job of the VM failed.
    BackupFailed,
    /// Built-in: the VM's newest backup is older than `[alerts] backup_max_age`.
    BackupAge,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::Threshold => "threshold",
            AlertKind::Crash => "crash",
            AlertKind::BackupFailed => "backup_failed",
            AlertKind::BackupAge => "backup_age",
        }
    }
    pub fn parse(s: &str) -> Option<AlertKind> {
        [
            AlertKind::Threshold,
            AlertKind::Crash,
            AlertKind::BackupFailed,
            AlertKind::BackupAge,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// How a value and its threshold are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AlertUnit {
    /// 0–100.
    Percent,
    BytesPerSecond,
    /// A plain number (load).
    Number,
    /// An age (backups).
    Seconds,
}

impl AlertUnit {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertUnit::Percent => "percent",
            AlertUnit::BytesPerSecond => "bytes_per_second",
            AlertUnit::Number => "number",
            AlertUnit::Seconds => "seconds",
        }
    }
    pub fn parse(s: &str) -> Option<AlertUnit> {
        [
            AlertUnit::Percent,
            AlertUnit::BytesPerSecond,
            AlertUnit::Number,
            AlertUnit::Seconds,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }

    /// A value for people: `93.5%`, `52M/s`, `4.25`, `1d13h`.
    pub fn format(self, v: f64) -> String {
        match self {
            AlertUnit::Percent => format!("{}%", round1(v)),
            AlertUnit::BytesPerSecond => format!("{}/s", ByteSize(v.max(0.0).round() as u64).approx()),
            AlertUnit::Number => format!("{}", (v * 100.0).round() / 100.0),
            AlertUnit::Seconds => {
                HumanDuration(Duration::from_secs(v.max(0.0).round() as u64).max(Duration::from_secs(1))).to_string()
            }
        }
    }
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// Which side of the threshold fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Comparison {
    Above,
    Below,
}

impl Comparison {
    pub fn as_str(self) -> &'static str {
        match self {
            Comparison::Above => "above",
            Comparison::Below => "below",
        }
    }
    /// Whether `value` is on the firing side of `threshold`.
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Comparison::Above => value > threshold,
            Comparison::Below => value < threshold,
        }
    }
}

/// What a notification says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum AlertEvent {
    /// The condition has held for the rule's `for`.
    Fired,
    /// It stopped holding (for `keep_firing_for`).
    Resolved,
    /// Still firing after `[alerts] repeat` (or: the backup failed again).
    Repeated,
    /// `corral alerts test`.
    Test,
}

impl AlertEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertEvent::Fired => "fired",
            AlertEvent::Resolved => "resolved",
            AlertEvent::Repeated => "repeated",
            AlertEvent::Test => "test",
        }
    }
}

impl fmt::Display for AlertEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How one notification went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NotificationOutcome {
    /// `mail` or `webhook`.
    pub notifier: String,
    pub event: AlertEvent,
    /// Delivered (the SMTP server took the message; the webhook answered 2xx).
    pub ok: bool,
    /// Tries made (failed ones are retried with a growing pause).
    pub attempts: u32,
    /// When it was delivered or given up.
    pub time_ms: i64,
    /// The last error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One alert: firing (no `resolved_ms`) or past, as `corral alerts --json` prints it and
/// `GET /api/v1/alerts` serves it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AlertInfo {
    pub id: i64,
    /// The rule's name (`crash`, `backup_failed` and `backup_age` for the built-in ones).
    pub rule: String,
    pub kind: AlertKind,
    /// The VM, for a per-VM rule; none for a host metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<String>,
    /// The metric of a threshold rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    pub severity: Severity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comparison: Option<Comparison>,
    /// The value when it fired (updated while it fires), in `unit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<AlertUnit>,
    /// One line for people: `cpu 97.3% above 90% for 5m`, `backup job 42 failed: …`.
    pub summary: String,
    /// The failed backup job (backup_failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<i64>,
    /// Since when the condition held (the alert fired `for` later).
    pub since_ms: i64,
    pub fired_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_ms: Option<i64>,
    /// Why it was closed when that was not its condition ending (`the VM was deleted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_note: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_notified_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notifications: Vec<NotificationOutcome>,
}

impl AlertInfo {
    pub fn firing(&self) -> bool {
        self.resolved_ms.is_none()
    }
    /// `web1` or `host`.
    pub fn subject(&self) -> &str {
        self.vm.as_deref().unwrap_or("host")
    }
    /// The value for people, if there is one.
    pub fn value_text(&self) -> Option<String> {
        Some(self.unit?.format(self.value?))
    }
    pub fn threshold_text(&self) -> Option<String> {
        Some(self.unit?.format(self.threshold?))
    }
}

/// The JSON body a `[notify.webhook]` receives (`POST`, `Content-Type: application/json`).
/// `version` changes only when a field changes meaning or goes away.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookPayload {
    /// 1.
    pub version: u32,
    pub event: AlertEvent,
    /// The host corral runs on.
    pub host: String,
    /// When this was sent.
    pub time_ms: i64,
    /// One line for people (a chat message can show just this).
    pub text: String,
    /// The alert (absent for a test).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<AlertInfo>,
}

pub const WEBHOOK_VERSION: u32 = 1;

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct T {
        #[serde(default)]
        alerts: AlertsSettings,
        #[serde(default)]
        alert: Vec<AlertRuleSpec>,
    }

    #[test]
    fn rules_and_settings_read_from_toml() {
        let t: T = toml::from_str(
            "[alerts]\nrepeat = \"1h\"\nbackup_max_age = \"36h\"\n[[alert]]\nmetric = \"cpu\"\nabove = \"90%\"\nfor = \"5m\"\n[[alert]]\nmetric = \"host_load\"\nabove = 4\nseverity = \"critical\"\n",
        )
        .unwrap();
        assert_eq!(t.alerts.repeat.0, Duration::from_secs(3600));
        assert_eq!(t.alerts.backup_max_age.unwrap().0, Duration::from_secs(36 * 3600));
        assert!(t.alerts.crash && t.alerts.backup_failed);
        assert_eq!(t.alert[0].above, Some(ThresholdValue::Text("90%".into())));
        assert_eq!(t.alert[0].for_.unwrap().0, Duration::from_secs(300));
        assert_eq!(t.alert[1].above, Some(ThresholdValue::Number(4.0)));
        assert_eq!(t.alert[1].severity, Severity::Critical);
        let off: T = toml::from_str("[alerts]\nbackup_max_age = \"off\"\n").unwrap();
        assert_eq!(off.alerts.backup_max_age, None);
        let e = toml::from_str::<T>("[[alert]]\nmetric = \"cpu\"\nabove = \"9%\"\nfor = \"soon\"\n")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("line 4") && e.contains("not a duration"), "{e}");
    }

    #[test]
    fn values_read_for_people() {
        assert_eq!(AlertUnit::Percent.format(93.456), "93.5%");
        assert_eq!(AlertUnit::BytesPerSecond.format(52.0 * 1048576.0), "52M/s");
        assert_eq!(AlertUnit::Number.format(4.256), "4.26");
        assert_eq!(AlertUnit::Seconds.format(37.0 * 3600.0), "1d13h");
        assert!(Comparison::Above.holds(91.0, 90.0) && !Comparison::Above.holds(90.0, 90.0));
        assert!(Comparison::Below.holds(1.0, 2.0));
    }
}
