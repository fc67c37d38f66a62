//! The disk-layer commands (`corral disk info/overlay/commit/consolidate`), `corral image …`
//! and `corral job …`.

use corral_engine::Engine;
use corral_types::{ByteSize, DiskChain, JobInfo};

use crate::cli::{DiskCmd, ImageCmd, JobCmd};
use crate::{output, progress};

fn size(b: u64) -> String {
    ByteSize(b).approx()
}

fn print_chains(vm: &str, chains: &[DiskChain]) {
    for c in chains {
        let ratio = c
            .overlay_ratio
            .map(|r| format!(", overlay {r:.1}% of the layers below"))
            .unwrap_or_default();
        println!(
            "{vm} {} ({} virtual, {} layer{}{ratio})",
            c.disk,
            size(c.virtual_size),
            c.layers.len(),
            if c.layers.len() == 1 { "" } else { "s" }
        );
        let rows: Vec<Vec<String>> = c
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let mut what = vec![];
                if i == 0 {
                    what.push("active".to_string());
                }
                if l.base {
                    what.push("base".into());
                }
                if !l.used_by.is_empty() {
                    what.push(format!("used by {}", l.used_by.join(", ")));
                }
                if l.snapshots > 0 {
                    what.push(format!("{} snapshot(s)", l.snapshots));
                }
                vec![
                    format!("  {}{}", "  ".repeat(i.min(8)), l.path.display()),
                    l.format.clone(),
                    size(l.allocated),
                    what.join(", "),
                ]
            })
            .collect();
        output::table(&["  LAYER", "FORMAT", "ALLOCATED", ""], &rows);
        if let Some(why) = &c.over_limit {
            let hint = if c.committable {
                format!(
                    "`corral disk consolidate {vm}` or `corral disk commit {vm} {}` merges it",
                    c.disk
                )
            } else {
                "it cannot be merged (its base is shared by linked clones)".to_string()
            };
            println!("  ! over the consolidation policy: {why}; {hint}");
        }
    }
}

pub async fn run(engine: &Engine, cmd: DiskCmd, json: bool) -> anyhow::Result<()> {
    match cmd {
        DiskCmd::Info { vm } => {
            let chains = engine.disk_info(&vm)?;
            if json {
                output::json(&chains);
            } else {
                print_chains(&vm, &chains);
            }
        }
        DiskCmd::Overlay { vm, disk } => {
            let chains = engine.disk_overlay(&vm, disk.as_deref()).await?;
            if json {
                output::json(&chains);
            } else {
                for c in &chains {
                    println!(
                        "{vm} {}: new overlay {} on {} (now read-only)",
                        c.disk,
                        c.layers[0].path.display(),
                        c.layers[1].path.display()
                    );
                }
            }
        }
        DiskCmd::Commit { vm, disk } => {
            let reports = progress::with_progress(engine, json, engine.disk_commit(&vm, disk.as_deref())).await?;
            if json {
                output::json(&reports);
            } else {
                for r in &reports {
                    println!(
                        "{vm} {}: merged {} ({}) into {}{} in {} ms",
                        r.disk,
                        r.overlay.display(),
                        size(r.merged_bytes),
                        r.into.display(),
                        if r.live { " while running" } else { "" },
                        r.millis
                    );
                }
            }
        }
        DiskCmd::Consolidate { vm, all: _ } => {
            let items = progress::with_progress(engine, json, engine.disk_consolidate(vm.as_deref())).await?;
            let failed = items.iter().filter(|i| i.action == "failed").count();
            if json {
                output::json(&items);
            } else {
                let rows: Vec<Vec<String>> = items
                    .iter()
                    .map(|i| {
                        vec![
                            i.vm.clone(),
                            i.disk.clone(),
                            i.action.clone(),
                            i.reason.clone().unwrap_or_default(),
                        ]
                    })
                    .collect();
                output::table(&["VM", "DISK", "ACTION", "WHY"], &rows);
            }
            if failed > 0 {
                anyhow::bail!("{failed} disk(s) could not be consolidated (see above)");
            }
        }
        DiskCmd::Add { .. } | DiskCmd::Resize { .. } | DiskCmd::Remove { .. } => {
            unreachable!("handled in disk.rs")
        }
    }
    Ok(())
}

pub fn image(engine: &Engine, cmd: ImageCmd, json: bool) -> anyhow::Result<()> {
    match cmd {
        ImageCmd::List => {
            let list = engine.image_list()?;
            if json {
                output::json(&list);
            } else if list.is_empty() {
                println!("no base images; `corral vm clone SRC NEW --linked` makes one");
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|i| {
                        vec![
                            i.path.display().to_string(),
                            i.owner.clone(),
                            i.snapshot.clone().unwrap_or_else(|| "-".into()),
                            size(i.allocated),
                            i.clones.to_string(),
                            i.used_by.join(", "),
                        ]
                    })
                    .collect();
                output::table(&["IMAGE", "OWNER", "SNAPSHOT", "ALLOCATED", "CLONES", "USED BY"], &rows);
            }
        }
    }
    Ok(())
}

fn job_row(j: &JobInfo) -> Vec<String> {
    let progress = match j.fraction() {
        Some(f) => format!("{:.0}%", f * 100.0),
        None => "-".into(),
    };
    let took = j
        .finished_ms
        .map(|f| format!("{:.1}s", (f - j.started_ms) as f64 / 1000.0))
        .unwrap_or_else(|| "-".into());
    vec![
        j.id.to_string(),
        j.vm.clone(),
        j.kind.clone(),
        j.state.to_string(),
        progress,
        took,
        format!(
            "{}{}",
            j.target,
            j.message.as_ref().map(|m| format!(": {m}")).unwrap_or_default()
        ),
    ]
}

pub fn job(engine: &Engine, cmd: JobCmd, json: bool) -> anyhow::Result<()> {
    let list = match cmd {
        JobCmd::List { vm, limit } => engine.jobs(vm.as_deref(), limit)?,
        JobCmd::Show { id } => vec![engine.job(id)?],
    };
    print_jobs(&list, json)
}

pub fn print_jobs(list: &[corral_types::JobInfo], json: bool) -> anyhow::Result<()> {
    if json {
        output::json(&list);
    } else {
        let rows: Vec<Vec<String>> = list.iter().map(job_row).collect();
        output::table(&["ID", "VM", "KIND", "STATE", "DONE", "TOOK", "WHAT"], &rows);
    }
    Ok(())
}
