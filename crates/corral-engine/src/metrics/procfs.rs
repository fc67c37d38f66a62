//! What /proc and statvfs say about processes, threads and the host. The parsers are pure
//! functions of the files' text (tested below); the readers around them return `None` when a
//! process went away between two reads.

use std::path::Path;

/// Clock ticks per second (`_SC_CLK_TCK`) and the page size, read once.
pub(crate) struct Units {
    pub ticks: f64,
    pub page: u64,
}

impl Units {
    pub fn get() -> &'static Units {
        static U: std::sync::OnceLock<Units> = std::sync::OnceLock::new();
        U.get_or_init(|| {
            use nix::unistd::{sysconf, SysconfVar};
            Units {
                ticks: sysconf(SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100).max(1) as f64,
                page: sysconf(SysconfVar::PAGE_SIZE).ok().flatten().unwrap_or(4096).max(1) as u64,
            }
        })
    }
}

/// User + system clock ticks from a `/proc/PID/stat` or `/proc/PID/task/TID/stat` line.
/// The command name (field 2) is in parentheses and may hold spaces (`CPU 0/TCG`), so the
/// fields are counted from the last `)`.
pub(crate) fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let after = stat.get(stat.rfind(')')? + 1..)?;
    let mut f = after.split_whitespace();
    // After the comm: state(3) ppid pgrp session tty_nr tpgid flags minflt cminflt majflt
    // cmajflt utime(14) stime(15).
    let utime: u64 = f.nth(11)?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Resident pages from `/proc/PID/statm` (its second field).
pub(crate) fn parse_statm_resident(statm: &str) -> Option<u64> {
    statm.split_whitespace().nth(1)?.parse().ok()
}

/// The host's busy and idle clock ticks (all CPUs) and its CPU count, from `/proc/stat`.
pub(crate) fn parse_proc_stat(text: &str) -> Option<(u64, u64, u32)> {
    let mut lines = text.lines();
    let first = lines.next()?;
    let mut f = first
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(|v| v.parse::<u64>().unwrap_or(0));
    // user nice system idle iowait irq softirq steal (guest time is already in user/nice).
    let v: Vec<u64> = (0..8).map(|_| f.next().unwrap_or(0)).collect();
    let busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
    let idle = v[3] + v[4];
    let cpus = lines
        .take_while(|l| l.starts_with("cpu"))
        .filter(|l| l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count() as u32;
    Some((busy, idle, cpus.max(1)))
}

/// `MemTotal` and `MemAvailable` in bytes, from `/proc/meminfo`.
pub(crate) fn parse_meminfo(text: &str) -> Option<(u64, u64)> {
    let get = |key: &str| -> Option<u64> {
        let line = text
            .lines()
            .find(|l| l.starts_with(key) && l[key.len()..].starts_with(':'))?;
        let kb: u64 = line[key.len() + 1..].split_whitespace().next()?.parse().ok()?;
        Some(kb * 1024)
    };
    Some((get("MemTotal")?, get("MemAvailable")?))
}

/// The 1, 5 and 15 minute load averages from `/proc/loadavg`.
pub(crate) fn parse_loadavg(text: &str) -> Option<[f64; 3]> {
    let mut f = text.split_whitespace().map(|v| v.parse::<f64>().ok());
    Some([f.next()??, f.next()??, f.next()??])
}

fn read(path: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// CPU seconds (user + system) of a whole process, every thread that ever ran included.
pub(crate) fn process_cpu_seconds(pid: u32) -> Option<f64> {
    Some(parse_stat_ticks(&read(format!("/proc/{pid}/stat"))?)? as f64 / Units::get().ticks)
}

/// CPU seconds of one thread of a process.
pub(crate) fn thread_cpu_seconds(pid: u32, tid: u32) -> Option<f64> {
    Some(parse_stat_ticks(&read(format!("/proc/{pid}/task/{tid}/stat"))?)? as f64 / Units::get().ticks)
}

/// Resident memory of a process, bytes.
pub(crate) fn process_rss_bytes(pid: u32) -> Option<u64> {
    Some(parse_statm_resident(&read(format!("/proc/{pid}/statm"))?)? * Units::get().page)
}

/// The host's CPU, memory and load. Missing files give zeros rather than no sample.
pub(crate) fn host(filesystems: Vec<corral_types::FsUsage>) -> corral_types::HostMetrics {
    let ticks = Units::get().ticks;
    let (busy, idle, cpus) = read("/proc/stat")
        .as_deref()
        .and_then(parse_proc_stat)
        .unwrap_or((0, 0, 1));
    let (total, available) = read("/proc/meminfo")
        .as_deref()
        .and_then(parse_meminfo)
        .unwrap_or((0, 0));
    corral_types::HostMetrics {
        cpus,
        cpu_busy_seconds_total: busy as f64 / ticks,
        cpu_idle_seconds_total: idle as f64 / ticks,
        cpu_percent: None,
        memory_total_bytes: total,
        memory_available_bytes: available,
        load: read("/proc/loadavg")
            .as_deref()
            .and_then(parse_loadavg)
            .unwrap_or([0.0; 3]),
        filesystems,
    }
}

/// The size and free space of the file system holding `path`; a directory not made yet is
/// measured where it will be made (its nearest existing parent).
pub(crate) fn fs_usage(role: &str, path: &Path) -> Option<corral_types::FsUsage> {
    let mut at = path;
    while !at.exists() {
        at = at.parent()?;
    }
    let st = nix::sys::statvfs::statvfs(at).ok()?;
    let frag = st.fragment_size() as u64;
    Some(corral_types::FsUsage {
        role: role.to_string(),
        path: path.display().to_string(),
        size_bytes: st.blocks() as u64 * frag,
        available_bytes: st.blocks_available() as u64 * frag,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_ticks_skip_a_comm_with_spaces_and_parentheses() {
        let line = "4242 (CPU 0/TCG) (x) S 1 4242 4242 0 -1 4194368 1000 0 0 0 250 37 0 0 20 0 5 0 123456 0 0";
        assert_eq!(parse_stat_ticks(line), Some(287));
        assert_eq!(parse_stat_ticks("4242 (short"), None);
        assert_eq!(parse_stat_ticks("1 (a) S 1"), None);
    }

    #[test]
    fn statm_second_field_is_resident_pages() {
        assert_eq!(parse_statm_resident("118765 66556 3071 1642 0 90000 0\n"), Some(66556));
        assert_eq!(parse_statm_resident("1"), None);
    }

    #[test]
    fn proc_stat_busy_idle_and_cpus() {
        let text =
            "cpu  100 5 50 1000 20 3 2 1 7 0\ncpu0 50 2 25 500 10 1 1 0 0 0\ncpu1 50 3 25 500 10 2 1 1 0 0\nintr 1 2\n";
        // busy = user + nice + system + irq + softirq + steal; idle = idle + iowait
        assert_eq!(parse_proc_stat(text), Some((161, 1020, 2)));
        assert_eq!(parse_proc_stat("intr 1\n"), None);
    }

    #[test]
    fn meminfo_and_loadavg() {
        let m = "MemTotal:       24000000 kB\nMemFree:         100 kB\nMemAvailable:   12000000 kB\n";
        assert_eq!(parse_meminfo(m), Some((24000000 * 1024, 12000000 * 1024)));
        assert_eq!(parse_meminfo("MemTotal: 1 kB\n"), None);
        assert_eq!(parse_loadavg("0.11 0.98 1.47 2/93 26984\n"), Some([0.11, 0.98, 1.47]));
        assert_eq!(parse_loadavg("0.11 x"), None);
    }

    #[test]
    fn this_process_and_host_are_readable() {
        let me = std::process::id();
        assert!(process_rss_bytes(me).unwrap() > 1024 * 1024);
        assert!(process_cpu_seconds(me).is_some());
        let h = host(vec![fs_usage("data", Path::new("/nonexistent/below/root")).unwrap()]);
        assert!(h.cpus >= 1 && h.memory_total_bytes >= h.memory_available_bytes && h.memory_total_bytes > 0);
        assert!(h.filesystems[0].size_bytes > 0, "{:?}", h.filesystems);
    }
}
