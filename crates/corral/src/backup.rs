//! `corral backup …`: dispatch and output.

use corral_engine::engine::backup::BackupSummary;
use corral_engine::Engine;
use corral_types::ByteSize;

use crate::cli::BackupCmd;
use crate::output;

fn size(b: u64) -> String {
    ByteSize(b).approx()
}

pub async fn run(engine: &Engine, cmd: BackupCmd, json: bool) -> anyhow::Result<()> {
    match cmd {
        BackupCmd::Run { vms, full, skeleton } => {
            let mut reports = vec![];
            for vm in &vms {
                let r = engine.backup_run(vm, full, skeleton).await?;
                if !json {
                    let s = &r.stats;
                    println!(
                        "backed up {} as {} ({}): read {}, new {} ({} stored), {} chunks from the parent, in {} ms",
                        r.vm,
                        r.id,
                        r.kind,
                        size(s.bytes_read),
                        size(s.new_bytes),
                        size(s.stored_bytes),
                        s.parent_chunks,
                        s.duration_ms
                    );
                    if let Some(why) = &r.fell_back {
                        println!("  read in full instead of incrementally: {why}");
                    }
                    if r.frozen.is_none() {
                        println!("  crash-consistent (no guest agent froze the filesystems)");
                    }
                }
                reports.push(r);
            }
            if json {
                output::json(&reports);
            }
        }
        BackupCmd::List { vm } => {
            let list: Vec<BackupSummary> = engine.backup_list(vm.as_deref())?.iter().map(Into::into).collect();
            if json {
                output::json(&list);
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|b| {
                        vec![
                            b.id.clone(),
                            b.vm.clone(),
                            b.kind.clone(),
                            b.time.clone(),
                            size(b.logical_size),
                            size(b.new_bytes),
                            format!("{:.1}s", b.duration_ms as f64 / 1000.0),
                        ]
                    })
                    .collect();
                output::table(&["ID", "VM", "KIND", "TIME", "SIZE", "NEW", "TOOK"], &rows);
            }
        }
        BackupCmd::Restore { id, as_name } => {
            let spec = engine.backup_restore(&id, &as_name).await?;
            if json {
                output::json(&serde_json::json!({"id": id, "vm": spec.name.as_str()}));
            } else {
                println!("restored backup {id} as VM {}", spec.name);
            }
        }
    }
    Ok(())
}
