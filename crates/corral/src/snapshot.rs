//! `corral snapshot …`

use corral_engine::engine::snapshot::SnapshotInfo;
use corral_engine::Engine;
use corral_types::ByteSize;

use crate::cli::SnapshotCmd;
use crate::{output, progress};

fn date(secs: i64) -> String {
    // UTC, ISO-like, without pulling in a date crate for one column.
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil-from-days (proleptic Gregorian).
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z.rem_euclid(146097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{m:02}:{s:02}")
}

pub async fn run(engine: &Engine, cmd: SnapshotCmd, json: bool) -> anyhow::Result<()> {
    match cmd {
        SnapshotCmd::Create {
            vm,
            name,
            description,
            no_memory,
        } => {
            let s = progress::with_progress(
                engine,
                json,
                engine.snapshot_create(&vm, &name, description.as_deref(), no_memory),
            )
            .await?;
            print_created(&vm, &s, json);
        }
        SnapshotCmd::List { vm } => print_list(&vm, &engine.snapshot_list(&vm)?, json),
        SnapshotCmd::Revert { vm, name } => {
            let s = progress::with_progress(engine, json, engine.snapshot_revert(&vm, &name)).await?;
            print_reverted(&vm, &s, json);
        }
        SnapshotCmd::Delete { vm, name } => {
            engine.snapshot_delete(&vm, &name).await?;
            print_deleted(&vm, &name, json);
        }
    }
    Ok(())
}

pub fn print_created(vm: &str, s: &SnapshotInfo, json: bool) {
    if json {
        output::json(s);
    } else {
        let what = if s.memory {
            format!("disks and {} of memory", ByteSize(s.vm_state_size).approx())
        } else {
            "disks only".into()
        };
        println!("took snapshot {} of {vm} ({what})", s.name);
    }
}

pub fn print_list(vm: &str, list: &[SnapshotInfo], json: bool) {
    if json {
        output::json(&list);
    } else if list.is_empty() {
        println!("{vm} has no snapshots; take one with `corral snapshot create {vm} NAME`");
    } else {
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|s| {
                vec![
                    s.name.clone(),
                    date(s.date),
                    if s.memory { "yes".into() } else { "no".into() },
                    if s.memory {
                        ByteSize(s.vm_state_size).approx()
                    } else {
                        "-".into()
                    },
                    output::uptime(s.vm_clock_seconds as u64),
                    s.description.clone().unwrap_or_default(),
                ]
            })
            .collect();
        output::table(
            &["NAME", "DATE (UTC)", "MEMORY", "VM STATE", "VM CLOCK", "DESCRIPTION"],
            &rows,
        );
        println!(
            "disk space of all layers: {}",
            ByteSize(list[0].disk_allocated).approx()
        );
    }
}

pub fn print_reverted(vm: &str, s: &SnapshotInfo, json: bool) {
    if json {
        output::json(s);
    } else {
        println!("{vm} is back at snapshot {}", s.name);
    }
}

pub fn print_deleted(vm: &str, name: &str, json: bool) {
    if json {
        output::json(&serde_json::json!({"vm": vm, "deleted": name}));
    } else {
        println!("deleted snapshot {name} of {vm}");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates() {
        assert_eq!(super::date(0), "1970-01-01 00:00:00");
        assert_eq!(super::date(1795308839), "2026-11-22 00:53:59");
        assert_eq!(super::date(951782400), "2000-02-29 00:00:00");
    }
}
