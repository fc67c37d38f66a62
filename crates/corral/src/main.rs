//! The `corral` command. Parses arguments, opens the engine, runs one operation and prints
//! its result; all VM logic lives in `corral-engine`.

mod alerts;
mod backup;
mod cli;
mod disk;
mod layers;
mod metrics;
mod munin;
mod output;
mod progress;
mod remote;
mod schedule;
mod server;
mod snapshot;
mod vm;

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use corral_engine::{Engine, EngineError, HostConfig};

use cli::{Cli, Command, HostCmd};

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("CORRAL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours on a terminal only: logs piped to a file or journald stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

fn load_config(cli: &Cli) -> Result<HostConfig, EngineError> {
    match &cli.config {
        Some(p) => HostConfig::load_file(p, true),
        None => HostConfig::load(),
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // Needs neither the config nor the data dir.
    if let Command::Schedule(cli::ScheduleCmd::Check { expr, count }) = &cli.command {
        return schedule::check(expr, *count as usize, cli.json);
    }
    // Needs the config only to check it and name it.
    if let Command::Munin(cmd) = &cli.command {
        return match cmd {
            cli::MuninCmd::Install { plugin_dir, conf_dir } => {
                load_config(&cli)?;
                let config = munin::install::config_for_plugin(cli.config.as_deref())?;
                munin::install(plugin_dir, conf_dir, config, cli.json)
            }
            cli::MuninCmd::Uninstall { plugin_dir, conf_dir } => munin::uninstall(plugin_dir, conf_dir, cli.json),
        };
    }
    let cfg = load_config(&cli)?;
    let engine = std::sync::Arc::new(Engine::open(cfg).context("cannot open the corral data directory")?);
    match cli.command {
        Command::Vm(cmd) => vm::run(&engine, cmd, cli.json).await,
        Command::Snapshot(cmd) => snapshot::run(&engine, cmd, cli.json).await,
        Command::Disk(cmd) => disk::run(&engine, cmd, cli.json).await,
        Command::Image(cmd) => layers::image(&engine, cmd, cli.json),
        Command::Job(cmd) => layers::job(&engine, cmd, cli.json),
        Command::Backup(cmd) => backup::run(&engine, cmd, cli.json).await,
        Command::Store(cmd) => backup::store(&engine, cmd, cli.json),
        Command::Schedule(cmd) => schedule::run(&engine, cmd, cli.json).await,
        Command::Alerts(args) => alerts::run(&engine, args, cli.json).await,
        Command::Serve {
            listen,
            insecure_http,
            tls,
            tls_cert,
            tls_key,
        } => {
            let tls = match (tls_cert, tls_key) {
                (Some(cert), Some(key)) => Some(corral_server::TlsSource::Files { cert, key }),
                _ if tls || (!listen.ip().is_loopback() && !insecure_http) => {
                    Some(corral_server::TlsSource::SelfSigned {
                        dir: engine.config().data_dir.join("tls"),
                    })
                }
                _ => None,
            };
            server::serve(
                engine.clone(),
                corral_server::ServeOptions {
                    listen,
                    insecure_http,
                    tls,
                },
            )
            .await
        }
        Command::Metrics {
            vms,
            interval,
            watch,
            summary,
            once,
        } => {
            let mode = match (summary, once, watch) {
                (true, _, _) => metrics::Mode::Summary,
                (_, true, _) => metrics::Mode::Once,
                (_, _, true) => metrics::Mode::Watch(interval.0),
                _ => metrics::Mode::Over(interval.0),
            };
            metrics::run(&engine, &vms, mode, cli.json).await
        }
        Command::Munin(_) => unreachable!("handled above"),
        Command::User(cmd) => server::user(&engine, cmd, cli.json),
        Command::Token(cmd) => server::token(&engine, cmd, cli.json),
        Command::Audit { limit } => server::audit(&engine, limit, cli.json),
        Command::Host(HostCmd::StopAll { save, timeout }) => {
            let report = engine.stop_all(save, timeout.map(|t| t.0)).await?;
            vm::print_host_report(&report, cli.json, if save { "saved or stopped" } else { "stopped" })
        }
        Command::Host(HostCmd::StartAutostart) => {
            let report = engine.start_autostart().await?;
            vm::print_host_report(&report, cli.json, "started")
        }
    }
}

/// The error and its causes on one line. Engine errors already print their cause in their
/// own message, so a cause whose text is already there is not repeated.
fn message(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if msg.contains(&text) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&text);
    }
    msg
}

fn main() -> ExitCode {
    // Linked as `corral_*` in munin's plugin dir: answer munin, not a command line.
    if let Some(name) = munin::plugin_name(std::env::args_os().next().as_deref()) {
        init_logging(0);
        return munin::plugin_main(&name);
    }
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let json = cli.json;
    let rt = match cli.command {
        // The daemon answers many callers at once: one worker per CPU, at most four (its
        // calls are short, and every worker costs a stack and an allocator arena).
        Command::Serve { .. } => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get().min(4)))
            .enable_all()
            .build(),
        // One command, one thing at a time.
        _ => tokio::runtime::Builder::new_current_thread().enable_all().build(),
    }
    .expect("tokio runtime");
    let result = match cli.remote.clone() {
        // A remote command is blocking HTTP calls, no engine and no runtime.
        Some(url) => remote::Remote::new(&url, cli.token_file.as_deref(), cli.ca_cert.as_deref())
            .and_then(|r| remote::run(&r, cli.command, json)),
        None => rt.block_on(run(cli)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let kind = e
                .downcast_ref::<EngineError>()
                .map(|e| e.kind().to_string())
                .or_else(|| e.downcast_ref::<remote::RemoteError>().map(|r| r.kind.clone()))
                .unwrap_or_else(|| "error".into());
            let kind = kind.as_str();
            if json {
                let msg = message(&e);
                eprintln!("{}", serde_json::json!({"error": msg, "kind": kind}));
            } else {
                eprintln!("corral: {}", message(&e));
            }
            ExitCode::from(match kind {
                "invalid" | "not-found" | "exists" | "missing-file" | "config" => 2,
                "busy" | "wrong-state" | "in-use" => 3,
                _ => 1,
            })
        }
    }
}
