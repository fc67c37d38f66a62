//! `corral vm …` and the host report printing.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use corral_engine::engine::save::SaveInfo;
use corral_engine::engine::CreateOptions;
use corral_engine::engine::StartInfo;
use corral_engine::qemu_args::{qemu_argv, shell_line, LaunchPlan};
use corral_engine::{Engine, HostReport};
use corral_types::ByteSize;

use crate::cli::{CreateArgs, VmCmd};
use crate::{output, progress};

fn absolute(p: Option<std::path::PathBuf>) -> anyhow::Result<Option<std::path::PathBuf>> {
    p.map(|p| std::path::absolute(&p).with_context(|| format!("bad path {}", p.display())))
        .transpose()
}

pub async fn run(engine: &Arc<Engine>, cmd: VmCmd, json: bool) -> anyhow::Result<()> {
    match cmd {
        VmCmd::Create(a) => create(engine, a, json),
        VmCmd::Define { file } => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let base = std::path::absolute(&file)?.parent().map(Path::to_path_buf);
            let spec = engine
                .define_toml(&text, base.as_deref())
                .with_context(|| format!("{} was not defined", file.display()))?;
            if json {
                output::json(&spec);
            } else {
                println!(
                    "defined VM {} (uuid {})",
                    spec.name,
                    spec.uuid.map(|u| u.to_string()).unwrap_or_default()
                );
            }
            Ok(())
        }
        VmCmd::Edit { name } => edit(engine, &name, json),
        VmCmd::Cdrom { name, iso, eject } => {
            let iso = if eject { None } else { absolute(iso)? };
            crate::disk::cdrom(engine, &name, iso.as_deref(), json).await
        }
        VmCmd::List => print_list(&engine.list().await?, json),
        VmCmd::Status { name } => print_status(&engine.status(&name).await?, json),
        VmCmd::Show { name, argv } => show(engine, &name, argv, json).await,
        VmCmd::Start { name } => print_start(&engine.start(&name).await?, json),
        VmCmd::Stop { name, timeout, force } => {
            print_stop(&engine.stop(&name, timeout.map(|t| t.0), force).await?, json)
        }
        VmCmd::Kill { name } => {
            engine.kill(&name).await?;
            done(json, &name, "killed")
        }
        VmCmd::Pause { name } => {
            engine.pause(&name).await?;
            done(json, &name, "paused")
        }
        VmCmd::Resume { name } => print_resume(&name, engine.resume(&name).await?, json),
        VmCmd::Save { name } => print_save(&engine.save(&name).await?, json),
        VmCmd::Delete { name, keep_disks } => print_deleted(&engine.delete(&name, keep_disks).await?, json),
        VmCmd::Clone {
            source,
            name,
            linked,
            full: _,
            from_snapshot,
        } => {
            let r = progress::with_progress(
                engine,
                json,
                engine.clone_vm(&source, &name, linked, from_snapshot.as_deref()),
            )
            .await?;
            print_cloned(&r, json)
        }
        VmCmd::Console { name, no_follow } => {
            let mut out = std::io::stdout();
            engine.console(&name, !no_follow, &mut out).await?;
            Ok(())
        }
    }
}

pub fn print_list(list: &[corral_types::VmStatus], json: bool) -> anyhow::Result<()> {
    if json {
        output::json(&list);
    } else if list.is_empty() {
        println!("no VMs defined yet; create one with `corral vm create NAME --disk 8G`");
    } else {
        output::table(&output::VM_HEADER, &output::vm_rows(list));
    }
    Ok(())
}

pub fn print_status(st: &corral_types::VmStatus, json: bool) -> anyhow::Result<()> {
    if json {
        output::json(st);
    } else {
        output::table(&output::VM_HEADER, &output::vm_rows(std::slice::from_ref(st)));
        if !st.last_log.is_empty() {
            println!("\nlast log lines:");
            for l in &st.last_log {
                println!("  {l}");
            }
        }
    }
    Ok(())
}

pub fn print_start(info: &StartInfo, json: bool) -> anyhow::Result<()> {
    if json {
        output::json(info);
    } else {
        let verb = if info.resumed { "resumed" } else { "started" };
        let vnc = info.vnc.as_ref().map(|v| format!(", VNC on {v}")).unwrap_or_default();
        println!("{verb} {} (pid {}{vnc}) in {} ms", info.name, info.pid, info.millis);
    }
    Ok(())
}

pub fn print_stop(o: &corral_types::StopOutcome, json: bool) -> anyhow::Result<()> {
    if json {
        output::json(o);
    } else if o.guest_initiated {
        println!(
            "{} powered off by the guest in {:.1} s",
            o.name,
            o.millis as f64 / 1000.0
        );
    } else if o.forced {
        println!("{} stopped by force after {:.1} s", o.name, o.millis as f64 / 1000.0);
    } else if o.millis == 0 {
        println!("{} had crashed; cleared what its QEMU left behind", o.name);
    } else {
        println!("{} stopped in {:.1} s", o.name, o.millis as f64 / 1000.0);
    }
    Ok(())
}

pub fn print_resume(name: &str, info: Option<StartInfo>, json: bool) -> anyhow::Result<()> {
    match info {
        Some(info) if json => {
            output::json(&info);
            Ok(())
        }
        Some(info) => {
            println!(
                "resumed {} from its saved state (pid {}) in {} ms",
                info.name, info.pid, info.millis
            );
            Ok(())
        }
        None => done(json, name, "resumed"),
    }
}

pub fn print_save(info: &SaveInfo, json: bool) -> anyhow::Result<()> {
    if json {
        output::json(info);
    } else {
        println!(
            "saved {} ({} of state) in {:.1} s; `corral vm start {}` resumes it",
            info.name,
            ByteSize(info.bytes).approx(),
            info.millis as f64 / 1000.0,
            info.name
        );
    }
    Ok(())
}

pub fn print_deleted(r: &corral_engine::engine::DeleteReport, json: bool) -> anyhow::Result<()> {
    if json {
        output::json(r);
    } else {
        println!("deleted VM {}", r.name);
        for p in &r.removed {
            println!("  removed {}", p.display());
        }
        for p in &r.kept {
            println!("  kept    {}", p.display());
        }
        if r.discarded_saved_state {
            println!("  discarded its saved state");
        }
    }
    Ok(())
}

pub fn print_cloned(r: &corral_types::CloneReport, json: bool) -> anyhow::Result<()> {
    if json {
        output::json(r);
    } else {
        let kind = if r.linked { "linked clone" } else { "full clone" };
        let at = r
            .from_snapshot
            .as_ref()
            .map(|s| format!(" at snapshot {s}"))
            .unwrap_or_default();
        println!("made {kind} {} of {}{at} in {} ms", r.name, r.source, r.millis);
        for d in &r.disks {
            match &d.base {
                Some(b) => println!("  {}: {} on base {}", d.disk, d.path.display(), b.display()),
                None => println!("  {}: {}", d.disk, d.path.display()),
            }
        }
        for c in &r.cleared {
            println!("  not copied: {c}");
        }
    }
    Ok(())
}

pub fn done(json: bool, name: &str, what: &str) -> anyhow::Result<()> {
    if json {
        output::json(&serde_json::json!({"name": name, "result": what}));
    } else {
        println!("{what} {name}");
    }
    Ok(())
}

fn create(engine: &Engine, a: CreateArgs, json: bool) -> anyhow::Result<()> {
    let spec = engine.create(CreateOptions {
        name: a.name,
        cpus: a.cpus,
        memory: a.memory,
        disks: a.disks,
        kernel: absolute(a.kernel)?,
        initrd: absolute(a.initrd)?,
        cmdline: a.cmdline,
        cdrom: absolute(a.cdrom)?,
        cdrom_once: a.cdrom_once,
        tags: a.tags,
        accel: a.accel,
        display: a.display,
        network: a.network,
        autostart: a.autostart,
        guest_agent: a.guest_agent,
        balloon: a.balloon,
    })?;
    if json {
        output::json(&spec);
    } else {
        println!(
            "created VM {} ({} vCPU, {} memory)",
            spec.name,
            spec.cpus,
            spec.memory.approx()
        );
        for d in &spec.disks {
            let size = d.size.map(|s| s.approx()).unwrap_or_else(|| "existing".into());
            println!(
                "  {} {} {} at {}",
                d.name,
                size,
                d.role,
                d.path.as_ref().map(|p| p.display().to_string()).unwrap_or_default()
            );
        }
        println!("start it with `corral vm start {}`", spec.name);
    }
    Ok(())
}

async fn show(engine: &Engine, name: &str, argv: bool, json: bool) -> anyhow::Result<()> {
    let rec = engine.get(name)?;
    let st = engine.status(name).await?;
    let paths = engine.paths(&rec.spec.name);
    let cmdline = if argv {
        let binary = engine.config().qemu.binary.clone();
        let accel = engine.config().resolve_accel(rec.spec.accel);
        Some(qemu_argv(
            &rec.spec,
            &LaunchPlan {
                binary: &binary,
                accel,
                paths: &paths,
                incoming: false,
            },
        ))
    } else {
        None
    };
    let console = paths.console_log().display().to_string();
    print_show(&st, &rec.spec, rec.generation, &console, cmdline, json)
}

/// `vm show`: status, spec and (with `--argv`) the QEMU command line.
pub fn print_show(
    st: &corral_types::VmStatus,
    spec: &corral_types::VmSpec,
    generation: i64,
    console: &str,
    cmdline: Option<Vec<String>>,
    json: bool,
) -> anyhow::Result<()> {
    if json {
        let mut v = serde_json::to_value(st)?;
        v["spec"] = serde_json::to_value(spec)?;
        v["generation"] = generation.into();
        v["console_log"] = console.into();
        if let Some(c) = &cmdline {
            v["argv"] = serde_json::to_value(c)?;
        }
        output::json(&v);
        return Ok(());
    }
    println!("name:     {}", st.name);
    println!("uuid:     {}", st.uuid);
    println!(
        "state:    {}{}",
        st.state,
        st.pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    );
    if let Some(u) = st.uptime_seconds {
        println!("uptime:   {}", output::uptime(u));
    }
    if let Some(v) = &st.vnc {
        println!("vnc:      {v}");
    }
    println!("console:  {console}");
    for l in &st.last_log {
        println!("  {l}");
    }
    println!("\n# spec (generation {generation})");
    print!("{}", spec.to_toml());
    if let Some(c) = cmdline {
        println!("\n# QEMU command line\n{}", shell_line(&c));
    }
    Ok(())
}

/// Opens the spec in an editor; applies it when it validates, otherwise changes nothing.
fn edit(engine: &Engine, name: &str, json: bool) -> anyhow::Result<()> {
    let rec = engine.get(name)?;
    let original = rec.spec.to_toml();
    // Private (0600) and unguessable: the spec may carry a kernel command line.
    let file = tempfile::Builder::new()
        .prefix(&format!("corral-edit-{}-", rec.spec.name))
        .suffix(".toml")
        .tempfile()
        .context("cannot create a temporary file for the editor")?;
    let tmp = file.path().to_path_buf();
    std::fs::write(&tmp, &original).with_context(|| format!("cannot write {}", tmp.display()))?;
    let editor = std::env::var("VISUAL")
        .or_else(|_| std::env::var("EDITOR"))
        .unwrap_or_else(|_| "vi".into());
    let result = (|| loop {
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{editor} \"$1\""))
            .arg("sh")
            .arg(&tmp)
            .status()
            .with_context(|| format!("cannot run the editor {editor:?}; set $EDITOR"))?;
        if !status.success() {
            bail!("the editor {editor:?} exited with {status}; nothing changed");
        }
        let text = std::fs::read_to_string(&tmp)?;
        if text == original {
            return Ok(None);
        }
        match engine.update_toml(name, &text, rec.generation) {
            Ok(spec) => return Ok(Some(spec)),
            Err(e) if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() => {
                eprintln!("corral: {e}\nEdit again? [Y/n] ");
                let mut ans = String::new();
                std::io::stdin().read_line(&mut ans)?;
                if ans.trim().eq_ignore_ascii_case("n") {
                    bail!("nothing changed");
                }
            }
            Err(e) => return Err(anyhow::Error::new(e).context("nothing changed")),
        }
    })();
    drop(file);
    match result? {
        None => {
            if json {
                output::json(&rec.spec);
            } else {
                println!("no changes to {name}");
            }
        }
        Some(spec) => {
            if json {
                output::json(&spec);
            } else {
                println!("updated {name}; changes apply at its next cold start");
            }
        }
    }
    Ok(())
}

pub fn print_host_report(r: &HostReport, json: bool, verb: &str) -> anyhow::Result<()> {
    if json {
        output::json(r);
    } else if r.results.is_empty() {
        println!("no VMs to act on");
    } else {
        let rows: Vec<Vec<String>> = r
            .results
            .iter()
            .map(|i| vec![i.name.clone(), i.outcome.clone(), i.error.clone().unwrap_or_default()])
            .collect();
        output::table(&["NAME", "RESULT", "ERROR"], &rows);
        println!(
            "{} VMs {verb} in {:.1} s",
            r.results.len() - r.failures(),
            r.millis as f64 / 1000.0
        );
    }
    if r.failures() > 0 {
        bail!("{} of {} VMs failed", r.failures(), r.results.len());
    }
    Ok(())
}
