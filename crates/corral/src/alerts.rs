//! `corral alerts [--all]` and `corral alerts test`: dispatch and output.

use corral_engine::alerts::notify::send_test;
use corral_engine::alerts::DeliveryOptions;
use corral_engine::schedule::local_time;
use corral_engine::{Engine, EngineError};
use corral_types::AlertInfo;

use crate::cli::{AlertsArgs, AlertsCmd};
use crate::output;

pub async fn run(engine: &Engine, args: AlertsArgs, json: bool) -> anyhow::Result<()> {
    match args.cmd {
        None => {
            print_list(&engine.alerts(args.all, args.limit)?, args.all, json);
            Ok(())
        }
        Some(AlertsCmd::Test { notify }) => test(engine, notify.as_deref(), json).await,
    }
}

pub fn print_list(list: &[AlertInfo], all: bool, json: bool) {
    if json {
        output::json(&list);
        return;
    }
    if list.is_empty() {
        println!(
            "{}",
            if all {
                "no alert has fired yet"
            } else {
                "no alert is firing (`corral alerts --all` shows the history)"
            }
        );
        return;
    }
    let mut header = vec!["ID", "STATE", "SEVERITY", "RULE", "VM", "SINCE"];
    if all {
        header.push("ENDED");
    }
    header.extend(["NOTIFIED", "SUMMARY"]);
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|a| {
            let mut r = vec![
                a.id.to_string(),
                if a.firing() { "firing" } else { "resolved" }.to_string(),
                a.severity.to_string(),
                a.rule.clone(),
                a.vm.clone().unwrap_or_else(|| "(host)".into()),
                local_time(a.since_ms),
            ];
            if all {
                r.push(a.resolved_ms.map(local_time).unwrap_or_else(|| "-".into()));
            }
            r.push(notified(a));
            let mut summary = a.summary.clone();
            if let Some(n) = &a.resolved_note {
                summary.push_str(&format!(" [{n}]"));
            }
            r.push(summary);
            r
        })
        .collect();
    output::table(&header, &rows);
}

/// `mail ok, webhook FAILED`: the last outcome per notifier.
fn notified(a: &AlertInfo) -> String {
    let mut last: Vec<(&str, bool)> = vec![];
    for n in &a.notifications {
        match last.iter_mut().find(|(name, _)| *name == n.notifier) {
            Some(e) => e.1 = n.ok,
            None => last.push((&n.notifier, n.ok)),
        }
    }
    if last.is_empty() {
        return "-".into();
    }
    last.iter()
        .map(|(n, ok)| format!("{n} {}", if *ok { "ok" } else { "FAILED" }))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn test(engine: &Engine, only: Option<&str>, json: bool) -> anyhow::Result<()> {
    let outcomes = send_test(&engine.config().notify, only, &DeliveryOptions::default())
        .await
        .map_err(EngineError::BadRequest)?;
    if json {
        output::json(&outcomes);
    } else {
        for o in &outcomes {
            match &o.error {
                None => println!("{}: test notification sent", o.notifier),
                Some(e) => println!("{}: FAILED: {e}", o.notifier),
            }
        }
    }
    let failed: Vec<&str> = outcomes.iter().filter(|o| !o.ok).map(|o| o.notifier.as_str()).collect();
    if !failed.is_empty() {
        anyhow::bail!(
            "the test notification did not get through {} (see above; check [notify] in the host config, docs/alerts.md)",
            failed.join(" and ")
        );
    }
    Ok(())
}
