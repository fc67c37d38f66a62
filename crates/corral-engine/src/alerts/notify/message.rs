//! What a notification says: the mail subject and body, the one-line text, and the webhook
//! body, made from an alert and what happened to it.

use corral_types::alert::WEBHOOK_VERSION;
use corral_types::{AlertEvent, AlertInfo, AlertKind, WebhookPayload};

use crate::schedule::local_time;

fn verb(event: AlertEvent) -> &'static str {
    match event {
        AlertEvent::Fired => "FIRING",
        AlertEvent::Resolved => "RESOLVED",
        AlertEvent::Repeated => "STILL FIRING",
        AlertEvent::Test => "TEST",
    }
}

/// `VM web1` or `the host`.
fn subject_of(a: &AlertInfo) -> String {
    match &a.vm {
        Some(vm) => format!("VM {vm}"),
        None => "the host".into(),
    }
}

/// `[corral] FIRING (critical): busy on VM web1 (lab-host)`.
pub fn subject(a: &AlertInfo, event: AlertEvent, host: &str) -> String {
    format!(
        "[corral] {} ({}): {} on {} ({host})",
        verb(event),
        a.severity,
        a.rule,
        subject_of(a)
    )
}

/// One line: for logs, chat messages, the webhook's `text`.
pub fn text(a: &AlertInfo, event: AlertEvent, host: &str) -> String {
    let mut s = format!(
        "{} {}: {} on {} ({host}): {}",
        verb(event),
        a.severity,
        a.rule,
        subject_of(a),
        a.summary
    );
    if event == AlertEvent::Resolved {
        if let Some(note) = &a.resolved_note {
            s.push_str(&format!(" [{note}]"));
        }
    }
    s
}

/// The mail body: what fired or resolved, for which VM, the value and threshold, since when,
/// and on which host.
pub fn body(a: &AlertInfo, event: AlertEvent, host: &str) -> String {
    let mut out = String::new();
    let what = match event {
        AlertEvent::Fired => "fired",
        AlertEvent::Resolved => "is resolved",
        AlertEvent::Repeated => "is still firing",
        AlertEvent::Test => "is a test",
    };
    out.push_str(&format!(
        "Alert {} {what} for {} on host {host}.\n\n",
        a.rule,
        subject_of(a)
    ));
    out.push_str(&format!("{}\n\n", a.summary));
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<11} {v}\n"));
    line("Host:", host.to_string());
    if let Some(vm) = &a.vm {
        line("VM:", vm.clone());
    }
    line("Severity:", a.severity.to_string());
    if let Some(m) = &a.metric {
        line("Metric:", m.clone());
    }
    if let Some(v) = a.value_text() {
        let label = if event == AlertEvent::Resolved {
            "Value now:"
        } else {
            "Value:"
        };
        line(label, v);
    }
    if let (Some(t), Some(c)) = (a.threshold_text(), a.comparison) {
        line("Threshold:", format!("{} {t}", c.as_str()));
    } else if let Some(t) = a.threshold_text() {
        line("Threshold:", t);
    }
    if let Some(j) = a.job_id {
        line("Job:", format!("{j} (`corral job show {j}`)"));
    }
    line("Since:", local_time(a.since_ms));
    if a.fired_ms != a.since_ms {
        line("Fired:", local_time(a.fired_ms));
    }
    if let Some(r) = a.resolved_ms {
        line("Resolved:", local_time(r));
    }
    if let Some(n) = &a.resolved_note {
        line("Note:", n.clone());
    }
    line("Alert id:", a.id.to_string());
    out.push('\n');
    out.push_str(match a.kind {
        AlertKind::Crash => "`corral vm status VM` shows the last lines of its QEMU and console logs.\n",
        AlertKind::BackupFailed | AlertKind::BackupAge => {
            "`corral job list` and `corral backup list VM` show the backups.\n"
        }
        AlertKind::Threshold => "",
    });
    out.push_str("`corral alerts` lists the firing alerts; `corral alerts --all` the history.\n");
    out
}

/// The webhook body.
pub fn payload(a: Option<&AlertInfo>, event: AlertEvent, host: &str, now_ms: i64) -> WebhookPayload {
    let alert = a.map(|a| AlertInfo {
        notifications: vec![],
        ..a.clone()
    });
    WebhookPayload {
        version: WEBHOOK_VERSION,
        event,
        host: host.to_string(),
        time_ms: now_ms,
        text: match a {
            Some(a) => text(a, event, host),
            None => format!("TEST: corral on {host} can reach this webhook"),
        },
        alert,
    }
}

/// The test message (`corral alerts test`).
pub fn test_subject(host: &str) -> String {
    format!("[corral] TEST: notifications from {host} work")
}

pub fn test_body(host: &str, now_ms: i64) -> String {
    format!(
        "This is a test notification from corral on host {host}, sent {} by `corral alerts test`.\n\n\
         Alerts from this host will come this way.\n",
        local_time(now_ms)
    )
}
