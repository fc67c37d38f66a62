//! The real monitoring clients the metrics tests check corral against, unpacked from Debian's
//! packages by `scripts/install-deps.sh` into `$XDG_CACHE_HOME/corral/tools` (default
//! `~/.cache`). A missing tool fails the test with what to run; it never skips it.
#![allow(dead_code)]

use std::path::PathBuf;

/// `$XDG_CACHE_HOME/corral/tools`, or `~/.cache/corral/tools`.
pub fn tools_dir() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache"));
    cache.join("corral/tools")
}

fn require(path: PathBuf, what: &str) -> PathBuf {
    assert!(
        path.exists(),
        "{what} is not at {}: run scripts/install-deps.sh (it unpacks munin-run and promtool from \
         Debian's munin-node and prometheus packages there, installing nothing)",
        path.display()
    );
    path
}

/// promtool (`check metrics` reads stdin).
pub fn promtool() -> PathBuf {
    require(tools_dir().join("prometheus/usr/bin/promtool"), "promtool")
}

/// The root of the unpacked munin-node and its Perl libraries.
pub fn munin_root() -> PathBuf {
    let root = tools_dir().join("munin");
    require(root.join("usr/sbin/munin-run"), "munin-run");
    root
}

/// `perl -T -I... munin-run`: munin-run is a taint-mode script, so its libraries go on
/// perl's command line (PERL5LIB is ignored under -T).
pub fn munin_run() -> std::process::Command {
    let r = munin_root();
    let mut c = std::process::Command::new("perl");
    c.arg("-T")
        .arg("-I")
        .arg(r.join("usr/share/perl5"))
        .arg("-I")
        .arg(r.join("usr/lib/x86_64-linux-gnu/perl5/5.36"))
        .arg(r.join("usr/sbin/munin-run"));
    c
}
