//! `corral schedule …`: dispatch and output.

use std::sync::Arc;

use corral_engine::schedule::{check_calendar, local_time};
use corral_engine::Engine;
use corral_types::{ScheduleOutcome, ScheduleRun, ScheduleStatus};

use crate::cli::ScheduleCmd;
use crate::output;

pub async fn run(engine: &Arc<Engine>, cmd: ScheduleCmd, json: bool) -> anyhow::Result<()> {
    match cmd {
        ScheduleCmd::List => print_list(&engine.schedules()?, json),
        ScheduleCmd::Run { name } => {
            let handle = engine.schedule_run_now(&name)?;
            let run = crate::progress::with_progress(engine, json, handle).await?;
            if json {
                output::json(&run);
            } else {
                print_run(&run);
            }
            if run.outcome != ScheduleOutcome::Ok {
                anyhow::bail!(
                    "schedule {name} {}: {}",
                    run.outcome,
                    run.message.as_deref().unwrap_or("")
                );
            }
        }
        ScheduleCmd::Check { expr, count } => check(&expr, count as usize, json)?,
    }
    Ok(())
}

pub fn print_list(list: &[ScheduleStatus], json: bool) {
    if json {
        output::json(&list);
    } else {
        let rows: Vec<Vec<String>> = list.iter().map(row).collect();
        output::table(
            &["NAME", "CALENDAR", "ACTION", "SELECTION", "NEXT", "LAST", "RESULT"],
            &rows,
        );
    }
}

pub fn check(expr: &str, count: usize, json: bool) -> anyhow::Result<()> {
    let c = check_calendar(expr, count)?;
    if json {
        output::json(&c);
    } else {
        println!("{} (normalized: {}), in {}:", c.calendar, c.normalized, c.time_zone);
        for t in &c.next {
            println!("  {t}");
        }
    }
    Ok(())
}

fn result_text(s: &ScheduleStatus) -> String {
    if s.running {
        return "running".into();
    }
    let Some(r) = &s.last_run else {
        return "-".into();
    };
    let mut text = r.outcome.to_string();
    if r.caught_up {
        text.push_str(" (catch-up)");
    }
    if r.manual {
        text.push_str(" (by hand)");
    }
    if matches!(r.outcome, ScheduleOutcome::Failed | ScheduleOutcome::Skipped) {
        if let Some(m) = &r.message {
            text.push_str(&format!(": {m}"));
        }
    }
    text
}

fn row(s: &ScheduleStatus) -> Vec<String> {
    vec![
        s.spec.name.clone(),
        s.spec.calendar.clone(),
        s.spec.action.to_string(),
        s.spec.selection_text(),
        match (s.spec.enabled, s.next_run_ms) {
            (false, _) => "disabled".into(),
            (true, Some(t)) => local_time(t),
            (true, None) => "never".into(),
        },
        s.last_run
            .as_ref()
            .map(|r| local_time(r.started_ms))
            .unwrap_or_else(|| "-".into()),
        result_text(s),
    ]
}

fn print_run(r: &ScheduleRun) {
    let took = r
        .finished_ms
        .map(|f| format!(" in {:.1}s", (f - r.started_ms) as f64 / 1000.0))
        .unwrap_or_default();
    println!(
        "schedule {} ({}): {}{took}: {}",
        r.schedule,
        r.action,
        r.outcome,
        r.message.as_deref().unwrap_or("")
    );
    for t in &r.targets {
        let mut line = format!("  {}: ", t.target);
        if t.ok {
            line.push_str(&format!("ok, {}", t.detail.as_deref().unwrap_or("")));
        } else {
            line.push_str(&format!("FAILED: {}", t.error.as_deref().unwrap_or("")));
        }
        let refs: Vec<String> = t
            .backup
            .iter()
            .map(|b| format!("backup {b}"))
            .chain(t.job.map(|j| format!("job {j}")))
            .collect();
        if !refs.is_empty() {
            line.push_str(&format!(" ({})", refs.join(", ")));
        }
        println!("{line}");
    }
}
