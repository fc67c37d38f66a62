//! corral as a munin plugin. Linked into munin's plugin dir under a name beginning with
//! `corral_` (`corral munin install` makes `corral_all`), the binary answers munin instead of
//! parsing a command line: `autoconf`, `config`, and fetch (no argument). It samples with the
//! engine directly — the counters are cumulative, so no daemon is needed — using the host
//! config as the CLI does (`CORRAL_CONFIG`, which munin sets from `env.CORRAL_CONFIG` in
//! plugin-conf.d). The graphs are in [`graphs`].

mod graphs;
pub mod install;

use std::ffi::OsStr;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use corral_engine::alerts::AlertRule;
use corral_engine::{Engine, HostConfig};
use corral_types::{Metric, NetworkMode, VmMetrics};

pub use graphs::VmLayout;
pub use install::{install, uninstall};

/// The plugin's name when the binary runs as one: argv[0]'s file name, if it begins with
/// `corral_`.
pub fn plugin_name(argv0: Option<&OsStr>) -> Option<String> {
    let name = Path::new(argv0?).file_name()?.to_str()?;
    name.starts_with("corral_").then(|| name.to_string())
}

/// Warning and critical levels set in the plugin's environment (`env.cpu_warning 80` in
/// plugin-conf.d), in percent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Levels {
    pub cpu: (Option<f64>, Option<f64>),
    pub memory: (Option<f64>, Option<f64>),
}

impl Levels {
    /// From `cpu_warning`, `cpu_critical`, `memory_warning`, `memory_critical`; a value that
    /// is not a number is an error naming the variable.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> anyhow::Result<Levels> {
        let num = |key: &str| -> anyhow::Result<Option<f64>> {
            match get(key) {
                None => Ok(None),
                Some(v) if v.trim().is_empty() => Ok(None),
                Some(v) => {
                    let t = v.trim().trim_end_matches('%');
                    t.parse::<f64>().map(Some).map_err(|_| {
                        anyhow::anyhow!("env.{key} = {v:?} is not a number; write a percentage such as `env.{key} 90`")
                    })
                }
            }
        };
        Ok(Levels {
            cpu: (num("cpu_warning")?, num("cpu_critical")?),
            memory: (num("memory_warning")?, num("memory_critical")?),
        })
    }
}

/// The warning and critical levels munin shows and checks for a VM's metric, in the metric's
/// unit (CPU: % of the VM's vCPUs; memory: resident % of configured): corral's own alert
/// rules (`[[alert]]` with `above`, the lowest of each severity that watches this VM), each
/// side overridden by the plugin's environment (`env.cpu_warning 80` in plugin-conf.d) when
/// that is set, for a munin that should warn at other levels than the mails do.
pub fn thresholds(levels: &Levels, rules: &[AlertRule], vm: &VmMetrics, metric: Metric) -> (Option<f64>, Option<f64>) {
    let (warning, critical) = corral_engine::alerts::thresholds(rules, &vm.name, &vm.tags, metric);
    let (env_warning, env_critical) = match metric {
        Metric::Cpu => levels.cpu,
        Metric::Memory => levels.memory,
        _ => (None, None),
    };
    (env_warning.or(warning), env_critical.or(critical))
}

/// What the specs say about each VM's disks and NIC.
fn layout(engine: &Engine) -> anyhow::Result<Vec<VmLayout>> {
    Ok(engine
        .records()?
        .into_iter()
        .map(|r| {
            let s = r.spec;
            VmLayout {
                name: s.name.to_string(),
                disks: s
                    .disks
                    .iter()
                    .enumerate()
                    .map(|(i, d)| {
                        if d.name.is_empty() {
                            format!("disk{i}")
                        } else {
                            d.name.clone()
                        }
                    })
                    .collect(),
                nic: s.guest_agent && s.network.mode != NetworkMode::None,
            }
        })
        .collect())
}

const NO_MULTIGRAPH: &str = "munin did not offer multigraph (MUNIN_CAP_MULTIGRAPH is not set): \
     corral's plugin needs munin 1.4 or later, run through munin-node or munin-run";

/// Whether the plugin can work here: `yes`, or `no (why)`. Creates nothing.
fn autoconf() -> String {
    if std::env::var_os("MUNIN_CAP_MULTIGRAPH").is_none_or(|v| v.is_empty()) {
        return format!("no ({NO_MULTIGRAPH})");
    }
    let cfg = match HostConfig::load() {
        Ok(c) => c,
        Err(e) => return format!("no ({e})"),
    };
    let db = cfg.data_dir.join("corral.db");
    if !db.exists() {
        return format!(
            "no (no corral registry at {}: no VM was ever defined with this config; set env.CORRAL_CONFIG \
             in plugin-conf.d if corral uses another)",
            db.display()
        );
    }
    "yes".into()
}

async fn sample_graphs(levels: &Levels) -> anyhow::Result<Vec<graphs::Graph>> {
    let cfg = HostConfig::load()?;
    let db = cfg.data_dir.join("corral.db");
    anyhow::ensure!(
        db.exists(),
        "no corral registry at {}; is env.CORRAL_CONFIG set in munin's plugin-conf.d? (`corral munin install` writes it)",
        db.display()
    );
    let engine = Engine::open(cfg).context("cannot open the corral data directory")?;
    let report = engine.metrics_sample(&[]).await?;
    let layout = layout(&engine)?;
    let rules = engine.alert_rules();
    let limits = |vm: &VmMetrics, m: Metric| thresholds(levels, &rules, vm, m);
    Ok(graphs::graphs(&report, &layout, &limits))
}

/// Runs as the munin plugin `name`: `autoconf`, `config` or fetch (no argument).
pub fn plugin_main(name: &str) -> ExitCode {
    let arg = std::env::args().nth(1);
    let result = (|| -> anyhow::Result<()> {
        match arg.as_deref() {
            Some("autoconf") => {
                println!("{}", autoconf());
                return Ok(());
            }
            None | Some("config") | Some("fetch") => {}
            Some(other) => anyhow::bail!("unknown argument {other:?}: munin plugins take autoconf, config or nothing"),
        }
        anyhow::ensure!(
            std::env::var_os("MUNIN_CAP_MULTIGRAPH").is_some_and(|v| !v.is_empty()),
            "{NO_MULTIGRAPH}"
        );
        let levels = Levels::from_env(|k| std::env::var(k).ok())?;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let graphs = rt.block_on(sample_graphs(&levels))?;
        let text = if arg.as_deref() == Some("config") {
            graphs::config(&graphs)
        } else {
            graphs::fetch(&graphs)
        };
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())?;
        out.flush()?;
        Ok(())
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {}", crate::message(&e));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_names_begin_with_corral_() {
        let n = |s: &str| plugin_name(Some(OsStr::new(s)));
        assert_eq!(n("/etc/munin/plugins/corral_all").as_deref(), Some("corral_all"));
        assert_eq!(n("corral_x").as_deref(), Some("corral_x"));
        assert_eq!(n("/usr/bin/corral"), None);
        assert_eq!(n("/tmp/corral_dir/corral"), None);
        assert_eq!(plugin_name(None), None);
    }

    #[test]
    fn levels_from_the_environment() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        let l = Levels::from_env(env(&[
            ("cpu_warning", "80"),
            ("memory_critical", " 95% "),
            ("cpu_critical", ""),
        ]))
        .unwrap();
        assert_eq!(l.cpu, (Some(80.0), None));
        assert_eq!(l.memory, (None, Some(95.0)));
        let e = Levels::from_env(env(&[("memory_warning", "lots")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("env.memory_warning") && e.contains("lots"), "{e}");
        let vm: VmMetrics = serde_json::from_value(serde_json::json!({
            "name": "web", "state": "running", "vcpus": 1, "memory_bytes": 1024, "tags": ["prod"]
        }))
        .unwrap();
        assert_eq!(thresholds(&l, &[], &vm, Metric::Cpu), (Some(80.0), None));
        assert_eq!(thresholds(&l, &[], &vm, Metric::DiskRead), (None, None));

        // The alert rules that watch the VM give the levels; the environment overrides a side.
        let cfg = HostConfig::parse(
            "[[alert]]\nmetric = \"cpu\"\nabove = \"70%\"\nvms = [\"tag:prod\"]\nseverity = \"critical\"\n\n\
             [[alert]]\nmetric = \"memory\"\nabove = \"90%\"\nvms = [\"db*\"]\n",
        )
        .unwrap();
        let rules = corral_engine::alerts::rules::compile_all(&cfg.alert, &cfg.notify);
        assert_eq!(rules.len(), 2);
        let none = Levels::from_env(env(&[])).unwrap();
        assert_eq!(thresholds(&none, &rules, &vm, Metric::Cpu), (None, Some(70.0)));
        assert_eq!(thresholds(&l, &rules, &vm, Metric::Cpu), (Some(80.0), Some(70.0)));
        assert_eq!(
            thresholds(&none, &rules, &vm, Metric::Memory),
            (None, None),
            "db* does not match web"
        );
    }
}
