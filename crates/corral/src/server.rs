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
            "corral serve: nobody can log in yet. Create an admin token with `corral token create --role admin` \
             (or a user with `corral user add NAME --role admin --password-stdin`)"
        );
    }
    // The handler is in place before "listening" is printed: a SIGTERM right after it must
    // not find the default action (death by signal) still there.
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        eprintln!("corral serve: stopping (calls in flight finish; VMs keep running)");
    };
    match &opts.tls {
        Some(source) => {
            let cert = corral_server::tls_certificate(source)?;
            eprintln!(
                "corral serve: listening on https://{addr}/api/v1 (certificate {})",
                cert.display()
            );
            corral_server::serve_tls(engine, listener, source, shutdown).await?;
        }
        None => {
            eprintln!("corral serve: listening on http://{addr}/api/v1");
            corral_server::serve(engine, listener, shutdown).await?;
        }
    }
    Ok(())
}

/// A password from stdin's first line, or asked for twice on the terminal.
fn read_password(from_stdin: bool) -> anyhow::Result<String> {
    let mut line = String::new();
    if from_stdin {
        std::io::stdin().lock().read_line(&mut line)?;
        return Ok(line.trim_end_matches(['\n', '\r']).to_string());
    }
    anyhow::bail!("give the password on stdin with --password-stdin (interactive prompts are not built yet)")
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
