//! The daemon's metrics history against a real guest under TCG: the in-process server samples
//! every second into `metrics.db`; a spinning vCPU, `dd` to the disk and the QEMU process's
//! memory show in the API's series and as SVG graphs on the VM page; the Host page; ranges,
//! names and roles checked as on every other route.

mod common;
#[path = "common/http.rs"]
mod http;

use std::net::SocketAddr;
use std::time::Duration;

use common::web::{add_user, get, login};
use common::Env;
use http::{http, start_server, Reply};
use serde_json::Value;

fn series<'a>(h: &'a Value, name: &str) -> &'a Value {
    h["series"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no series {name} in {h}"))
}

/// The highest of a series' `field` (`avg` or `max`) values, if any.
fn highest(h: &Value, name: &str, field: &str) -> Option<f64> {
    series(h, name)[field]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_f64)
        .reduce(f64::max)
}

fn ok_json(addr: SocketAddr, path: &str, token: &str) -> Value {
    let r = http(addr, "GET", path, Some(token), None);
    assert_eq!(r.status, 200, "{path}: {}", r.body);
    r.json()
}

/// The `<figure>` of graph `id` in a page.
fn figure<'a>(page: &'a str, id: &str) -> &'a str {
    let at = page
        .find(&format!("id=\"{id}-title\""))
        .unwrap_or_else(|| panic!("no graph {id} in the page"));
    let start = page[..at].rfind("<figure").unwrap();
    let end = at + page[at..].find("</figure>").unwrap();
    &page[start..end]
}

fn error_of(r: &Reply) -> String {
    r.json()["error"].as_str().unwrap_or_default().to_string()
}

#[test]
fn history_of_a_busy_guest_in_the_api_and_as_graphs() {
    let env = Env::with_config("[metrics]\ninterval = \"1s\"\n");
    env.boot_guest("busy", "");
    env.create_guest("idle", "");
    let db = env.data_dir().join("metrics.db");
    // `corral metrics` samples without keeping any history.
    env.json(&["metrics", "--interval", "1s"]);
    assert!(!db.exists(), "the CLI made {}", db.display());

    let viewer = env.ok(&["token", "create", "--role", "viewer"]).trim().to_string();
    let addr = start_server(&env);
    let mut con = env.console("busy");
    con.ok("(while :; do :; done) >/dev/null 2>&1 &");
    con.ok("(for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do \
         dd if=/dev/zero of=/dev/vda bs=64k count=32 conv=fsync; sleep 0.3; done) >/dev/null 2>&1 &");

    // Passes every second; 10-second points: wait until the busy ones show.
    let mut hour = Value::Null;
    let shown = common::wait_for(Duration::from_secs(90), || {
        hour = ok_json(addr, "/api/v1/vms/busy/metrics?range=hour", &viewer);
        let busy_points = series(&hour, "cpu_percent_of_vcpus")["avg"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v.as_f64().is_some_and(|c| c > 20.0))
            .count();
        // Three points, so the page draws a line rather than dots.
        busy_points >= 3 && highest(&hour, "disk_write_bytes_per_second", "max").is_some_and(|w| w > 256.0 * 1024.0)
    });
    assert!(shown.is_ok(), "the busy guest never showed in its history: {hour:#}");
    assert!(db.exists(), "the daemon keeps {}", db.display());
    assert_eq!(hour["subject"], "busy");
    assert_eq!(hour["range"], "hour");
    assert_eq!(hour["source"], "raw");
    assert_eq!(
        (hour["step_ms"].as_i64(), hour["interval_ms"].as_i64()),
        (Some(10_000), Some(1000))
    );
    let times: Vec<i64> = hour["times_ms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_i64().unwrap())
        .collect();
    assert!(!times.is_empty() && times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
    assert!(hour["from_ms"].as_i64().unwrap() <= times[0] && times[times.len() - 1] <= hour["to_ms"].as_i64().unwrap());
    for s in hour["series"].as_array().unwrap() {
        assert_eq!(s["avg"].as_array().unwrap().len(), times.len(), "{s}");
        assert_eq!(s["max"].as_array().unwrap().len(), times.len(), "{s}");
    }
    // Plausible figures: resident memory well above zero and below what QEMU could take.
    let rss = highest(&hour, "rss_bytes", "avg").unwrap();
    assert!(rss > (32 << 20) as f64 && rss < (1u64 << 30) as f64, "RSS {rss}");
    assert_eq!(series(&hour, "rss_bytes")["unit"], "bytes");
    assert!(highest(&hour, "cpu_percent", "max").unwrap() > 20.0);
    assert!(highest(&hour, "disk_write_ops_per_second", "max").unwrap() > 0.0);
    assert_eq!(highest(&hour, "running_percent", "avg"), Some(100.0));

    // A stopped VM has points (its state) but no figures.
    let idle = ok_json(addr, "/api/v1/vms/idle/metrics", &viewer);
    assert!(!idle["times_ms"].as_array().unwrap().is_empty(), "{idle}");
    assert_eq!(highest(&idle, "cpu_percent", "avg"), None);
    assert_eq!(highest(&idle, "running_percent", "max"), Some(0.0));

    // A day in 5-minute points; a month from the samples not yet averaged.
    let day = ok_json(addr, "/api/v1/vms/busy/metrics?range=day", &viewer);
    assert_eq!(day["step_ms"], 300_000);
    assert!(highest(&day, "cpu_percent_of_vcpus", "max").unwrap() > 20.0, "{day}");
    let month = ok_json(addr, "/api/v1/vms/busy/metrics?range=month", &viewer);
    assert_eq!(month["source"], "average");
    assert!(
        highest(&month, "rss_bytes", "max").unwrap() > (32 << 20) as f64,
        "{month}"
    );

    let host = ok_json(addr, "/api/v1/host/metrics?range=hour", &viewer);
    assert_eq!(host["subject"], "host");
    assert!(highest(&host, "cpu_percent", "max").unwrap() > 0.0, "{host}");
    assert!(highest(&host, "memory_used_bytes", "avg").unwrap() > 0.0);
    let data = highest(&host, "data_used_percent", "avg").unwrap();
    assert!(data > 0.0 && data <= 100.0, "{data}");

    // The latest pass, with rates over about a second.
    let latest = ok_json(addr, "/api/v1/metrics", &viewer);
    let ms = latest["interval_ms"].as_u64().unwrap();
    assert!((500..5000).contains(&ms), "{ms}");
    let busy = latest["vms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "busy")
        .unwrap();
    assert_eq!(busy["state"], "running");

    // Ranges, names and credentials are checked as everywhere.
    let r = http(addr, "GET", "/api/v1/vms/busy/metrics?range=week", Some(&viewer), None);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        error_of(&r).contains("\"week\"") && error_of(&r).contains("hour, day or month"),
        "{}",
        r.body
    );
    let r = http(addr, "GET", "/api/v1/host/metrics?range=", Some(&viewer), None);
    assert_eq!(r.status, 400, "{}", r.body);
    let r = http(addr, "GET", "/api/v1/host/metrics?rnage=day", Some(&viewer), None);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("rnage"), "{}", r.body);
    let r = http(addr, "GET", "/api/v1/vms/nope/metrics", Some(&viewer), None);
    assert_eq!(
        (r.status, r.json()["kind"].as_str()),
        (404, Some("not-found")),
        "{}",
        r.body
    );
    let r = http(addr, "GET", "/api/v1/vms/..%2Fx/metrics", Some(&viewer), None);
    assert_eq!(r.status, 400, "{}", r.body);
    for path in ["/api/v1/metrics", "/api/v1/host/metrics", "/api/v1/vms/busy/metrics"] {
        assert_eq!(http(addr, "GET", path, None, None).status, 401, "{path}");
    }

    // The VM page: a Resource use section with an SVG graph per figure, drawn from the same
    // series, for a viewer too.
    add_user(&env, "vic", "viewer", "a long enough password");
    let (cookie, _) = login(addr, "vic", "a long enough password");
    let page = get(addr, "/vms/busy", Some(&cookie));
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("id=\"resources\""), "{}", page.body);
    let cpu = figure(&page.body, "g-cpu");
    assert!(cpu.contains("<svg") && cpu.contains("role=\"img\""), "{cpu}");
    assert!(cpu.contains("<path class=\"line s0\" d=\"M"), "no CPU line: {cpu}");
    assert!(cpu.contains("CPU: average"), "no text summary: {cpu}");
    let mem = figure(&page.body, "g-memory");
    assert!(
        mem.contains("class=\"area s0\"") && mem.contains("configured 192 MiB"),
        "{mem}"
    );
    let disk = figure(&page.body, "g-disk");
    assert!(
        disk.contains("Write: average") && disk.contains("class=\"line s1\""),
        "{disk}"
    );
    assert!(
        figure(&page.body, "g-net").contains("guest agent"),
        "no NIC: the graph says why"
    );
    assert!(
        page.body
            .contains("href=\"?range=hour#resources\" aria-current=\"true\""),
        "{}",
        page.body
    );
    assert!(
        !page.body.contains(" style="),
        "an inline style attribute: the CSP would block it"
    );
    let month = get(addr, "/vms/busy?range=month", Some(&cookie));
    assert_eq!(month.status, 200);
    assert!(month
        .body
        .contains("href=\"?range=month#resources\" aria-current=\"true\""));
    // A new host's month is one 2 h 30 min point so far: a dot.
    let cpu = figure(&month.body, "g-cpu");
    assert!(
        cpu.contains("class=\"dot s0\"") || cpu.contains("class=\"line s0\""),
        "{cpu}"
    );
    let bad = get(addr, "/vms/busy?range=week", Some(&cookie));
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("hour, day or month"), "{}", bad.body);

    // The Host page: what VMs are given, and the host's graphs.
    let day = get(addr, "/host?range=day", Some(&cookie));
    assert_eq!(day.status, 200, "{}", day.body);
    assert!(day.body.contains("href=\"?range=day#resources\" aria-current=\"true\""));
    let host = get(addr, "/host", Some(&cookie));
    assert_eq!(host.status, 200, "{}", host.body);
    assert!(
        host.body.contains("href=\"/host\" aria-current=\"page\""),
        "{}",
        host.body
    );
    assert!(
        host.body.contains("What the VMs are given") && host.body.contains("384 MiB"),
        "{}",
        host.body
    );
    assert!(
        figure(&host.body, "g-host-cpu").contains("class=\"line s0\""),
        "{}",
        host.body
    );
    assert!(figure(&host.body, "g-host-load").contains("15 min"));
    assert!(figure(&host.body, "g-host-space").contains("Data: average"));
    let csp = host.header("content-security-policy").unwrap();
    assert!(csp.contains("default-src 'self'"), "{csp}");

    let wal = std::fs::metadata(env.data_dir().join("metrics.db-wal")).map_or(0, |m| m.len());
    let rows = corral_engine::metrics::History::open_at(&db, &Default::default())
        .unwrap()
        .row_counts()
        .unwrap();
    println!(
        "metrics.db with 2 VMs: {} bytes + {wal} bytes of WAL; rows {rows:?}",
        std::fs::metadata(&db).unwrap().len()
    );
}
