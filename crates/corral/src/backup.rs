//! `corral backup …`: dispatch and output.

use corral_engine::engine::backup::{BackupReport, BackupSummary};
use corral_engine::engine::restore::RestoreRequest;
use corral_engine::Engine;
use corral_types::ByteSize;

use crate::cli::{BackupCmd, StoreCmd};
use crate::output;

fn size(b: u64) -> String {
    ByteSize(b).approx()
}

/// One backup's summary line (nothing with `--json`: the reports are printed together).
pub fn print_backup_line(r: &BackupReport, json: bool) {
    if json {
        return;
    }
    let s = &r.stats;
    let rate = s.bytes_read as f64 / (s.duration_ms.max(1) as f64 / 1000.0);
    println!(
        "backed up {} as {} ({}): read {}, new {} ({} stored), reused {}, {} chunks from the \
         parent, in {:.1}s ({}/s)",
        r.vm,
        r.id,
        r.kind,
        size(s.bytes_read),
        size(s.new_bytes),
        size(s.stored_bytes),
        size(s.reused_bytes),
        s.parent_chunks,
        s.duration_ms as f64 / 1000.0,
        size(rate as u64)
    );
    for w in &r.warnings {
        println!("  warning: {w}");
    }
    if let Some(why) = &r.fell_back {
        println!("  read in full instead of incrementally: {why}");
    }
    if r.frozen.is_none() {
        println!("  crash-consistent (no guest agent froze the filesystems)");
    }
}

pub fn print_restore(r: &corral_engine::engine::restore::RestoreReport, json: bool) {
    if json {
        output::json(r);
        return;
    }
    let written: u64 = r.disks.iter().map(|d| d.written).sum();
    if r.in_place {
        println!("restored backup {} over the disks of {}", r.backup, r.vm);
    } else {
        println!("restored backup {} as VM {}", r.backup, r.vm);
    }
    for d in &r.disks {
        println!(
            "  {}: {} ({}, {} written) {}",
            d.name,
            d.how,
            size(d.size),
            size(d.written),
            d.path.display()
        );
    }
    println!(
        "  {} in {:.1}s ({}/s)",
        size(written),
        r.millis as f64 / 1000.0,
        size((written as f64 / (r.millis.max(1) as f64 / 1000.0)) as u64)
    );
}

pub fn print_backup_list(list: &[BackupSummary], json: bool) {
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

pub async fn run(engine: &Engine, cmd: BackupCmd, json: bool) -> anyhow::Result<()> {
    match cmd {
        BackupCmd::Run {
            vms,
            tag,
            all,
            exclude,
            full,
            skeleton,
            all_disks,
        } => {
            // None: each VM's own default (`[backup] skeleton` in its spec).
            let skeleton = match (skeleton, all_disks) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            };
            let selected = engine.backup_select(&vms, &tag, all, &exclude)?;
            let mut reports = vec![];
            for vm in &selected {
                let r = crate::progress::with_progress(engine, json, engine.backup_run(vm, full, skeleton)).await?;
                print_backup_line(&r, json);
                reports.push(r);
            }
            if json {
                output::json(&reports);
            }
        }
        BackupCmd::List { vm } => {
            let list: Vec<BackupSummary> = engine.backup_list(vm.as_deref())?.iter().map(Into::into).collect();
            print_backup_list(&list, json);
        }
        BackupCmd::Verify { ids, all: _ } => {
            let r = engine.backup_verify(&ids)?;
            if json {
                output::json(&r);
            } else {
                println!(
                    "checked {} backup(s), {} chunks ({})",
                    r.backups_checked,
                    r.chunks_checked,
                    size(r.bytes_checked)
                );
                for p in &r.problems {
                    println!("chunk {} {}", p.hash, p.problem);
                    for u in &p.used_by {
                        println!(
                            "  used by backup {} ({}) disk {} at offset {}",
                            u.backup, u.vm, u.disk, u.offset
                        );
                    }
                }
                for b in &r.broken {
                    println!("backup {} cannot be read: {}", b.backup, b.error);
                }
            }
            if !r.problems.is_empty() || !r.broken.is_empty() {
                anyhow::bail!(
                    "{} bad chunk(s) and {} unreadable backup(s) in the store",
                    r.problems.len(),
                    r.broken.len()
                );
            }
        }
        BackupCmd::Prune {
            vm,
            all,
            keep_last,
            keep_daily,
            keep_weekly,
            keep_monthly,
            dry_run,
        } => {
            let policy = corral_store_policy(keep_last, keep_daily, keep_weekly, keep_monthly);
            let vms: Vec<String> = if all {
                engine.backup_vms()?
            } else {
                vm.into_iter().collect()
            };
            let mut out = vec![];
            for vm in &vms {
                for d in engine.backup_prune(vm, &policy, dry_run)? {
                    if !json {
                        let verb = match (d.keep, dry_run) {
                            (true, _) => "keep",
                            (false, true) => "would remove",
                            (false, false) => "removed",
                        };
                        println!("{vm} {} {} {verb}", d.id, d.time);
                    }
                    out.push(serde_json::json!({"vm": vm, "decision": d}));
                }
            }
            if json {
                output::json(&out);
            }
        }
        BackupCmd::Show { id } => {
            let m = engine.backup_manifest(&id)?;
            if json {
                output::json(&m);
            } else {
                let b = BackupSummary::from(&m);
                println!("backup {} of {} ({}), {}", b.id, b.vm, b.kind, b.time);
                if let Some(p) = &b.parent {
                    println!("  parent {p}");
                }
                for d in &m.disks {
                    let what = if d.stored {
                        "stored"
                    } else {
                        "recorded only (comes back empty)"
                    };
                    println!(
                        "  disk {} {} {} {}: {what}",
                        d.info.name,
                        size(d.info.size),
                        d.info.bus,
                        d.info.role
                    );
                }
                let s = &m.stats;
                println!(
                    "  read {}, new {} ({} stored), reused {}, {} chunks from the parent, {} zero, {} ms",
                    size(s.bytes_read),
                    size(s.new_bytes),
                    size(s.stored_bytes),
                    size(s.reused_bytes),
                    s.parent_chunks,
                    s.zero_chunks,
                    s.duration_ms
                );
            }
        }
        BackupCmd::Drill {
            id,
            expect_line,
            timeout,
        } => {
            let r = engine.backup_drill(&id, expect_line.as_deref(), timeout.0).await?;
            if json {
                output::json(&r);
            } else if r.passed {
                println!(
                    "drill of {} ({}) passed: {} after {} ms",
                    r.backup, r.vm, r.sign, r.millis
                );
            } else {
                println!(
                    "drill of {} ({}) FAILED: no {} within {} ms",
                    r.backup, r.vm, r.sign, r.millis
                );
                for l in &r.last_console {
                    println!("  console: {l}");
                }
            }
            if !r.passed {
                anyhow::bail!("the restored VM showed no sign of life");
            }
        }
        BackupCmd::Restore {
            id,
            as_name,
            disks,
            in_place,
        } => {
            let req = RestoreRequest {
                id,
                as_name,
                disks,
                in_place,
            };
            let r = crate::progress::with_progress(engine, json, engine.backup_restore(&req)).await?;
            print_restore(&r, json);
        }
    }
    Ok(())
}

fn corral_store_policy(last: u32, daily: u32, weekly: u32, monthly: u32) -> corral_engine::engine::backup::PrunePolicy {
    corral_engine::engine::backup::PrunePolicy {
        keep_last: last,
        keep_daily: daily,
        keep_weekly: weekly,
        keep_monthly: monthly,
    }
}

pub fn store(engine: &Engine, cmd: StoreCmd, json: bool) -> anyhow::Result<()> {
    match cmd {
        StoreCmd::Init => {
            let st = engine.backup_store_for_writing()?;
            let c = st.config();
            if json {
                output::json(&serde_json::json!({"path": st.root(), "config": c}));
            } else {
                println!(
                    "backup store at {} ({} chunks, zstd level {})",
                    st.root().display(),
                    size(c.chunk_size as u64),
                    c.zstd_level
                );
            }
        }
        StoreCmd::Gc => {
            let r = engine.store_gc()?;
            if json {
                output::json(&r);
            } else {
                println!(
                    "freed {} ({} chunks, {} packs deleted, {} repacked, {} leftovers of killed backups)",
                    size(r.bytes_freed),
                    r.chunks_freed,
                    r.packs_deleted,
                    r.packs_repacked,
                    r.debris_files
                );
            }
        }
    }
    Ok(())
}
