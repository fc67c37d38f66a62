//! `corral munin install` / `uninstall`: the `corral_all` link in munin's plugin dir and the
//! plugin's section in plugin-conf.d. Both are idempotent and say what they changed.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Serialize;

use crate::output;

/// The plugin's name in munin's plugin dir.
pub const PLUGIN: &str = "corral_all";
/// The plugin-conf.d file.
pub const CONF: &str = "corral";
const HEADER: &str = "# corral's munin plugin: written by `corral munin install`, removed by `corral munin uninstall`.";

#[derive(Serialize)]
struct Installed {
    plugin: PathBuf,
    target: PathBuf,
    plugin_changed: bool,
    conf: PathBuf,
    conf_changed: bool,
    /// The CORRAL_CONFIG the plugin gets (none: the default /etc/corral/corral.toml).
    corral_config: Option<PathBuf>,
    try_it: String,
}

#[derive(Serialize)]
struct Removed {
    plugin: PathBuf,
    plugin_removed: bool,
    conf: PathBuf,
    conf_removed: bool,
}

fn check_dir(dir: &Path, what: &str, flag: &str) -> anyhow::Result<()> {
    if !dir.is_dir() {
        bail!(
            "{what} {} does not exist: is munin-node installed (`apt install munin-node`)? Or name the \
             right one with {flag}",
            dir.display()
        );
    }
    Ok(())
}

/// What the plugin-conf.d file says: run as root (corral's registry, sockets and disks are
/// root's), with the config the CLI uses now unless it is the default.
fn conf_text(config: Option<&Path>) -> String {
    let mut t =
        format!("{HEADER}\n# It reads corral's registry and VM monitors, which are root's.\n[corral_*]\nuser root\n");
    if let Some(c) = config {
        t.push_str(&format!("env.CORRAL_CONFIG {}\n", c.display()));
    }
    t
}

/// The config file the plugin should read: `--config`, else `$CORRAL_CONFIG`, made absolute;
/// `None` for the default.
pub fn config_for_plugin(flag: Option<&Path>) -> anyhow::Result<Option<PathBuf>> {
    let env = std::env::var_os("CORRAL_CONFIG").filter(|v| !v.is_empty());
    let Some(p) = flag.map(Path::to_path_buf).or(env.map(PathBuf::from)) else {
        return Ok(None);
    };
    let abs = std::path::absolute(&p).with_context(|| format!("the config path {}", p.display()))?;
    if abs == Path::new(corral_engine::config::DEFAULT_CONFIG) {
        return Ok(None);
    }
    if abs.to_str().is_none_or(|s| s.contains('\n') || s.trim() != s) {
        bail!(
            "the config path {:?} cannot be written in munin's plugin-conf.d (a line per setting); \
             move the config to a plainer path",
            abs
        );
    }
    Ok(Some(abs))
}

/// Links `corral_all` to this binary and writes plugin-conf.d/corral.
pub fn install(plugin_dir: &Path, conf_dir: &Path, config: Option<PathBuf>, json: bool) -> anyhow::Result<()> {
    check_dir(plugin_dir, "munin's plugin dir", "--plugin-dir")?;
    check_dir(conf_dir, "munin's plugin configuration dir", "--conf-dir")?;
    let target = std::env::current_exe().context("cannot tell where the corral binary is")?;
    let link = plugin_dir.join(PLUGIN);
    let plugin_changed = match std::fs::symlink_metadata(&link) {
        Ok(m) if m.file_type().is_symlink() => {
            if std::fs::read_link(&link)? == target {
                false
            } else {
                // Replace atomically: a new link under another name, renamed over the old one.
                let tmp = plugin_dir.join(format!(".{PLUGIN}.{}", std::process::id()));
                let _ = std::fs::remove_file(&tmp);
                symlink(&target, &tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
                std::fs::rename(&tmp, &link).with_context(|| format!("cannot replace {}", link.display()))?;
                true
            }
        }
        Ok(_) => bail!(
            "{} exists and is not a link to corral; move it away and run this again",
            link.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            symlink(&target, &link).with_context(|| format!("cannot create {}", link.display()))?;
            true
        }
        Err(e) => return Err(e).with_context(|| format!("cannot look at {}", link.display())),
    };
    let conf = conf_dir.join(CONF);
    let text = conf_text(config.as_deref());
    let conf_changed = match std::fs::read_to_string(&conf) {
        Ok(old) if old == text => false,
        Ok(old) if !old.starts_with(HEADER) => bail!(
            "{} exists and was not written by corral; merge its settings by hand ([corral_*], user root{}) \
             or move it away",
            conf.display(),
            config
                .as_ref()
                .map(|c| format!(", env.CORRAL_CONFIG {}", c.display()))
                .unwrap_or_default()
        ),
        Ok(_) | Err(_) => {
            let tmp = conf_dir.join(format!(".{CONF}.{}", std::process::id()));
            std::fs::write(&tmp, &text).with_context(|| format!("cannot write {}", tmp.display()))?;
            std::fs::rename(&tmp, &conf).with_context(|| format!("cannot write {}", conf.display()))?;
            true
        }
    };
    let r = Installed {
        try_it: format!("munin-run {PLUGIN} config && munin-run {PLUGIN}"),
        plugin: link,
        target,
        plugin_changed,
        conf,
        conf_changed,
        corral_config: config,
    };
    if json {
        output::json(&r);
        return Ok(());
    }
    let verb = |changed: bool, done: &str| {
        if changed {
            done.to_string()
        } else {
            "unchanged:".to_string()
        }
    };
    println!(
        "{} {} → {}",
        verb(r.plugin_changed, "linked"),
        r.plugin.display(),
        r.target.display()
    );
    println!(
        "{} {} (runs as root{})",
        verb(r.conf_changed, "wrote"),
        r.conf.display(),
        r.corral_config
            .as_ref()
            .map(|c| format!(", CORRAL_CONFIG={}", c.display()))
            .unwrap_or_default()
    );
    println!("try it: {}", r.try_it);
    if r.plugin_changed || r.conf_changed {
        println!("then restart munin-node (`systemctl restart munin-node`) so that it picks the plugin up");
    }
    Ok(())
}

/// Removes the link (only a link) and the conf file (only corral's).
pub fn uninstall(plugin_dir: &Path, conf_dir: &Path, json: bool) -> anyhow::Result<()> {
    let link = plugin_dir.join(PLUGIN);
    let plugin_removed = match std::fs::symlink_metadata(&link) {
        Ok(m) if m.file_type().is_symlink() => {
            std::fs::remove_file(&link).with_context(|| format!("cannot remove {}", link.display()))?;
            true
        }
        Ok(_) => bail!("{} is not a link to corral; leaving it", link.display()),
        Err(_) => false,
    };
    let conf = conf_dir.join(CONF);
    let conf_removed = match std::fs::read_to_string(&conf) {
        Ok(t) if t.starts_with(HEADER) => {
            std::fs::remove_file(&conf).with_context(|| format!("cannot remove {}", conf.display()))?;
            true
        }
        Ok(_) => bail!("{} was not written by corral; leaving it", conf.display()),
        Err(_) => false,
    };
    let r = Removed {
        plugin: link,
        plugin_removed,
        conf,
        conf_removed,
    };
    if json {
        output::json(&r);
        return Ok(());
    }
    for (removed, p) in [(r.plugin_removed, &r.plugin), (r.conf_removed, &r.conf)] {
        println!("{} {}", if removed { "removed" } else { "not there:" }, p.display());
    }
    if r.plugin_removed || r.conf_removed {
        println!("restart munin-node (`systemctl restart munin-node`) so that it forgets the plugin");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_runs_as_root_and_names_a_config_only_when_not_the_default() {
        let t = conf_text(None);
        assert!(t.starts_with(HEADER) && t.contains("\n[corral_*]\nuser root\n"), "{t}");
        assert!(!t.contains("env."), "{t}");
        let t = conf_text(Some(Path::new("/srv/corral.toml")));
        assert!(t.ends_with("user root\nenv.CORRAL_CONFIG /srv/corral.toml\n"), "{t}");
    }

    #[test]
    fn the_default_config_is_not_written_and_relative_ones_are_made_absolute() {
        let default = Path::new(corral_engine::config::DEFAULT_CONFIG);
        assert_eq!(config_for_plugin(Some(default)).unwrap(), None);
        let rel = config_for_plugin(Some(Path::new("x/corral.toml"))).unwrap().unwrap();
        assert!(rel.is_absolute() && rel.ends_with("x/corral.toml"), "{rel:?}");
        assert!(config_for_plugin(Some(Path::new("/a\nb"))).is_err());
    }
}
