//! `corral disk …` and `corral vm cdrom`: dispatch and output. Each command is one engine
//! call (`corral_engine::engine::diskmgmt`).

use std::path::Path;

use corral_engine::engine::DiskAddOptions;
use corral_engine::Engine;
use corral_types::ByteSize;

use crate::cli::DiskCmd;
use crate::output;

fn how(live: bool) -> &'static str {
    if live {
        "live; the guest sees it now"
    } else {
        "takes effect at the next start"
    }
}

pub async fn run(engine: &Engine, cmd: DiskCmd, json: bool) -> anyhow::Result<()> {
    match cmd {
        DiskCmd::Add {
            vm,
            size,
            role,
            name,
            bus,
        } => {
            let r = engine.disk_add(&vm, DiskAddOptions { name, size, role, bus }).await?;
            if json {
                output::json(&r);
            } else {
                println!(
                    "added {} disk {} ({}, {}) to {vm} at {} ({})",
                    r.role,
                    r.disk,
                    ByteSize(r.size).approx(),
                    r.bus,
                    r.path.display(),
                    how(r.live)
                );
            }
        }
        DiskCmd::Resize { vm, disk, size } => {
            let r = engine.disk_resize(&vm, &disk, size).await?;
            if json {
                output::json(&r);
            } else if r.previous_size == Some(r.size) {
                println!(
                    "disk {disk} of {vm} is already {}; nothing to do",
                    ByteSize(r.size).approx()
                );
            } else {
                println!(
                    "grew disk {disk} of {vm} from {} to {} ({}); grow the partition and file system in the guest to use it",
                    ByteSize(r.previous_size.unwrap_or_default()).approx(),
                    ByteSize(r.size).approx(),
                    if r.live { "live" } else { "image resized" }
                );
            }
        }
        DiskCmd::Remove {
            vm,
            disk,
            keep_file,
            timeout,
        } => {
            let r = engine.disk_remove(&vm, &disk, keep_file, timeout.map(|t| t.0)).await?;
            if json {
                output::json(&r);
            } else {
                let from = if r.live {
                    " (unplugged from the running guest)"
                } else {
                    ""
                };
                println!("removed disk {disk} from {vm}{from}");
                match &r.kept_because {
                    None => println!("deleted {}", r.path.display()),
                    Some(why) => println!("kept {}: {why}", r.path.display()),
                }
            }
        }
        layers => return crate::layers::run(engine, layers, json).await,
    }
    Ok(())
}

pub async fn cdrom(engine: &Engine, vm: &str, iso: Option<&Path>, json: bool) -> anyhow::Result<()> {
    let r = engine.cdrom(vm, iso).await?;
    if json {
        output::json(&r);
        return Ok(());
    }
    let when = if r.live { "" } else { " (at the next start)" };
    match (&r.cdrom, &r.previous) {
        (Some(p), _) => println!("{vm}'s CD-ROM drive now holds {}{when}", p.display()),
        (None, Some(p)) => println!("ejected {} from {vm}{when}", p.display()),
        (None, None) => println!("{vm}'s CD-ROM drive is empty"),
    }
    Ok(())
}
