//! How results look: aligned tables and short sentences for people, JSON with `--json`.

use corral_types::{ByteSize, VmStatus};
use serde::Serialize;

pub fn json<T: Serialize + ?Sized>(v: &T) {
    println!("{}", serde_json::to_string_pretty(v).expect("serialisable"));
}

/// Prints rows as a table with left-aligned columns.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{:<w$}  ", c, w = widths[i]));
            }
        }
        println!("{}", s.trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r.clone());
    }
}

pub fn uptime(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d{}h", s / 86400, (s % 86400) / 3600),
    }
}

pub fn vm_rows(list: &[VmStatus]) -> Vec<Vec<String>> {
    list.iter()
        .map(|v| {
            vec![
                v.name.clone(),
                v.state.to_string(),
                v.cpus.to_string(),
                ByteSize(v.memory).approx(),
                v.uptime_seconds.map(uptime).unwrap_or_else(|| "-".into()),
                v.vnc.clone().unwrap_or_else(|| "-".into()),
                if v.tags.is_empty() {
                    "-".into()
                } else {
                    v.tags.join(",")
                },
            ]
        })
        .collect()
}

pub const VM_HEADER: [&str; 7] = ["NAME", "STATE", "CPUS", "MEMORY", "UPTIME", "VNC", "TAGS"];
