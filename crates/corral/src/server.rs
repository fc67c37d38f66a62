//! `corral serve`, `corral user`, `corral token`, `corral audit`.

use std::io::BufRead;
use std::sync::Arc;

use anyhow::Context;
use corral_engine::Engine;
use corral_server::ServeOptions;

use crate::cli::{TokenCmd, UserCmd};
use crate::output;

pub async fn serve(engine: Arc<Engine>, opts: ServeOptions) -> anyhow::Result<()> {
    let listener = corral_server::bind(&opts).await?;
    // Every GET /api/v1/vms lists every VM: remember the idle ones until their files change.
    engine.watch_idle_vms();
    let addr = listener.local_addr().context("the listening address")?;
    if engine.users()?.is_empty() && engine.tokens()?.is_empty() {
        eprintln!(
            "corral serve: nobody can log in yet (there is no default password). Create the first admin with \
             `corral user add NAME --role admin` (it asks for the password), or a token for scripts with \
             `corral token create --role admin`"
        );
    }
    // The handlers are in place before "listening" is printed: a SIGTERM right after it must
    // not find the default action (death by signal) still there.
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let state = corral_server::AppState::new(engine.clone(), opts.tls.is_some());
    let (stop, cancel) = (state.stop.clone(), state.cancel.clone());
    // The scheduled jobs of the config's [[schedule]] entries: they stop starting at the first
    // signal (runs going on are waited for); the second drops them (recorded as interrupted).
    let scheduler = corral_engine::schedule::Scheduler::new(engine, corral_engine::schedule::SystemClock);
    let (sched_stop, sched_cancel) = (stop.clone(), cancel.clone());
    let schedules = tokio::spawn(async move {
        tokio::select! {
            _ = scheduler.run(async move { sched_stop.cancelled().await }) => {}
            _ = sched_cancel.cancelled() => {}
        }
    });
    // First signal: take no new work and let running jobs finish. Second: cancel them.
    tokio::spawn(async move {
        for (i, token) in [stop, cancel].into_iter().enumerate() {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            if i == 0 {
                eprintln!("corral serve: stopping (calls in flight finish; VMs keep running)");
            } else {
                eprintln!("corral serve: cancelling the running jobs");
            }
            token.cancel();
        }
    });
    match &opts.tls {
        Some(source) => {
            let cert = corral_server::tls_certificate(source)?;
            eprintln!(
                "corral serve: listening on https://{addr}/ (certificate {})",
                cert.display()
            );
        }
        None => eprintln!("corral serve: listening on http://{addr}/"),
    }
    corral_server::run(state, listener, opts.tls.as_ref()).await?;
    let _ = schedules.await;
    eprintln!("corral serve: stopped");
    Ok(())
}

/// A password from stdin's first line, or asked for twice on the terminal (not echoed).
fn read_password(from_stdin: bool) -> anyhow::Result<String> {
    let mut line = String::new();
    if from_stdin {
        std::io::stdin().lock().read_line(&mut line)?;
        return Ok(line.trim_end_matches(['\n', '\r']).to_string());
    }
    let first = prompt_hidden("New password: ")?;
    let second = prompt_hidden("Again: ")?;
    if first != second {
        anyhow::bail!("the two passwords differ; nothing was changed");
    }
    Ok(first)
}

/// Reads a line from the controlling terminal with echo off (restored even on error).
fn prompt_hidden(prompt: &str) -> anyhow::Result<String> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    use std::io::Write;
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .context("no terminal to ask for the password on: give it with --password-stdin")?;
    let saved = tcgetattr(&tty).context("no terminal to ask for the password on: use --password-stdin")?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    quiet.local_flags.insert(LocalFlags::ECHONL);
    // Echo goes off before the prompt shows, so nothing typed after the prompt is echoed.
    tcsetattr(&tty, SetArg::TCSANOW, &quiet).context("turning terminal echo off")?;
    (&tty).write_all(prompt.as_bytes())?;
    let mut line = String::new();
    let read = std::io::BufReader::new(&tty).read_line(&mut line);
    let restored = tcsetattr(&tty, SetArg::TCSANOW, &saved);
    read.context("reading the password")?;
    restored.context("turning terminal echo back on")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

pub fn user(engine: &Engine, cmd: UserCmd, json: bool) -> anyhow::Result<()> {
    match cmd {
        UserCmd::Add {
            name,
            role,
            password_stdin,
        } => {
            let pw = read_password(password_stdin)?;
            engine.user_add(&name, role, &pw)?;
            if json {
                output::json(&serde_json::json!({"user": name, "role": role}));
            } else {
                println!("added user {name} ({role})");
            }
        }
        UserCmd::Passwd { name, password_stdin } => {
            let pw = read_password(password_stdin)?;
            engine.user_passwd(&name, &pw)?;
            if !json {
                println!("password of {name} changed");
            }
        }
        UserCmd::List => {
            let users = engine.users()?;
            if json {
                output::json(&users);
            } else {
                let rows: Vec<Vec<String>> = users.iter().map(|u| vec![u.name.clone(), u.role.to_string()]).collect();
                output::table(&["NAME", "ROLE"], &rows);
            }
        }
        UserCmd::Delete { name } => {
            engine.user_delete(&name)?;
            if !json {
                println!("deleted user {name}");
            }
        }
    }
    Ok(())
}

pub fn token(engine: &Engine, cmd: TokenCmd, json: bool) -> anyhow::Result<()> {
    match cmd {
        TokenCmd::Create { role, label } => {
            let (t, secret) = engine.token_create(role, &label)?;
            if json {
                output::json(&serde_json::json!({"id": t.id, "role": t.role, "label": t.label, "token": secret}));
            } else {
                // The token alone on stdout, so `T=$(corral token create --role viewer)` works.
                println!("{secret}");
                eprintln!("token {} ({role}) created; it is shown only this once", t.id);
            }
        }
        TokenCmd::List => {
            let tokens = engine.tokens()?;
            if json {
                output::json(&tokens);
            } else {
                let rows: Vec<Vec<String>> = tokens
                    .iter()
                    .map(|t| vec![t.id.to_string(), t.role.to_string(), t.label.clone()])
                    .collect();
                output::table(&["ID", "ROLE", "LABEL"], &rows);
            }
        }
        TokenCmd::Revoke { id } => {
            engine.token_revoke(id)?;
            if !json {
                println!("revoked token {id}");
            }
        }
    }
    Ok(())
}

pub fn audit(engine: &Engine, limit: usize, json: bool) -> anyhow::Result<()> {
    let rows = engine.audit_log(limit)?;
    if json {
        output::json(&rows);
    } else {
        let table: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                vec![
                    r.time_ms.to_string(),
                    r.who.clone(),
                    r.action.clone(),
                    r.target.clone(),
                    r.result.clone(),
                ]
            })
            .collect();
        output::table(&["TIME_MS", "WHO", "ACTION", "TARGET", "RESULT"], &table);
    }
    Ok(())
}
