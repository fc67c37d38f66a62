//! Alerts at the front ends, over a real config and registry (no guest boots: the alerts are
//! made by the engine's evaluator from a metrics sample, as the daemon does): `corral alerts`
//! (firing, `--all`, `--json`), `GET /api/v1/alerts`, the Alerts page, and `corral alerts
//! test` against real loopback webhook listeners (one answering 200, one 500).

mod common;
#[path = "common/http.rs"]
mod http;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use common::web::{add_user, get, login, start_server};
use common::Env;
use corral_engine::alerts::Alerts;
use corral_types::{HostMetrics, MetricsReport, RunState, VmCpu, VmMetrics};
use http::http;

/// A loopback HTTP server answering every request with `status`; each request's body arrives
/// on the channel.
fn listener(status: &'static str) -> (u16, mpsc::Receiver<String>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut s) = conn else { return };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut len = 0;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            let _ = r.read_exact(&mut body);
            let _ = write!(s, "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            let _ = tx.send(String::from_utf8_lossy(&body).into_owned());
        }
    });
    (port, rx)
}

fn vm(name: &str, state: RunState, cpu: Option<f64>) -> VmMetrics {
    let mut v = VmMetrics::configured(name, state, 1, 1 << 30);
    v.cpu = cpu.map(|c| VmCpu::from_percent(1.0, c, 1));
    v
}

fn report(vms: Vec<VmMetrics>) -> MetricsReport {
    MetricsReport {
        taken_ms: 0,
        interval_ms: Some(10_000),
        host: HostMetrics {
            cpus: 1,
            ..Default::default()
        },
        vms,
    }
}

/// The evaluator of this env's config (recording only), as the daemon would run it: db busy
/// (fires), web1 crashed and then running again (fires, resolves).
fn make_alerts(env: &Env) {
    let cfg = corral_engine::HostConfig::load_file(&env.config, true).unwrap();
    let engine = Arc::new(corral_engine::Engine::open(cfg).unwrap());
    let mut alerts = Alerts::new(engine, None).unwrap();
    let t0 = 1_700_000_000_000;
    let c = alerts.evaluate(
        t0,
        &report(vec![
            vm("web1", RunState::Crashed, None),
            vm("db", RunState::Running, Some(97.0)),
        ]),
    );
    assert_eq!(c.len(), 2, "{c:?}");
    let c = alerts.evaluate(
        t0 + 10_000,
        &report(vec![
            vm("web1", RunState::Running, Some(1.0)),
            vm("db", RunState::Running, Some(97.0)),
        ]),
    );
    assert_eq!(c.len(), 1, "{c:?}");
}

const RULES: &str = "[[alert]]\nname = \"busy\"\nmetric = \"cpu\"\nabove = \"90%\"\nseverity = \"critical\"\n";

#[test]
fn alerts_show_in_the_cli_the_api_and_the_page() {
    let (port, _bodies) = listener("200 OK");
    let env = Env::with_config(&format!(
        "[notify.webhook]\nurl = \"http://127.0.0.1:{port}/\"\n{RULES}"
    ));
    assert!(env.ok(&["alerts"]).contains("no alert is firing"));
    make_alerts(&env);

    // The CLI: firing by default, the history with --all.
    let firing = env.json(&["alerts"]);
    let firing = firing.as_array().unwrap();
    assert_eq!(firing.len(), 1, "{firing:?}");
    assert_eq!(
        (&firing[0]["rule"], &firing[0]["vm"], &firing[0]["severity"]),
        (&"busy".into(), &"db".into(), &"critical".into())
    );
    assert_eq!(firing[0]["value"], 97.0);
    let all = env.json(&["alerts", "--all"]);
    assert_eq!(all.as_array().unwrap().len(), 2);
    assert_eq!(all[0]["rule"], "crash");
    assert!(all[0]["resolved_ms"].is_i64(), "{all}");
    let text = env.ok(&["alerts", "--all"]);
    assert!(
        text.contains("ENDED") && text.contains("resolved") && text.contains("crash"),
        "{text}"
    );

    // The API.
    let addr = start_server(&env);
    let token = env.ok(&["token", "create", "--role", "viewer"]).trim().to_string();
    assert_eq!(http(addr, "GET", "/api/v1/alerts", None, None).status, 401);
    let r = http(addr, "GET", "/api/v1/alerts", Some(&token), None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json().as_array().unwrap().len(), 1);
    assert_eq!(r.json()[0]["summary"], "cpu is 97% (above 90%)");
    let r = http(addr, "GET", "/api/v1/alerts?all=true&limit=1", Some(&token), None);
    assert_eq!(r.json().as_array().unwrap().len(), 1);
    assert_eq!(r.json()[0]["rule"], "crash", "newest first");
    assert_eq!(
        http(addr, "GET", "/api/v1/alerts?everything=1", Some(&token), None).status,
        400
    );

    // The page, linked from the navigation.
    add_user(&env, "vi", "viewer", "pass-word-1");
    let (cookie, _) = login(addr, "vi", "pass-word-1");
    let dash = get(addr, "/", Some(&cookie)).body;
    assert!(dash.contains("href=\"/alerts\""));
    // The dashboard says what fires (the resolved crash is not there).
    assert!(
        dash.contains("1 alert firing: ") && dash.contains("critical · db: cpu is 97% (above 90%)"),
        "{dash}"
    );
    assert!(!dash.contains("web1 crashed"), "{dash}");
    let page = get(addr, "/alerts", Some(&cookie));
    assert_eq!(page.status, 200);
    let b = &page.body;
    assert!(
        b.contains("<h2 id=\"firing\">Firing</h2>") && !b.contains("No alert is firing"),
        "{b}"
    );
    assert!(
        b.contains("cpu is 97% (above 90%)") && b.contains("href=\"/vms/db\""),
        "{b}"
    );
    assert!(b.contains("state-resolved") && b.contains("web1 crashed"), "{b}");
    assert!(
        b.contains("cpu above 90%") && b.contains("Notifiers: webhook"),
        "the rules: {b}"
    );
    assert_eq!(get(addr, "/alerts", None).status, 303, "needs a login");
}

#[test]
fn alerts_test_reports_each_notifier_and_fails_when_one_fails() {
    let (good, bodies) = listener("200 OK");
    let env = Env::with_config(&format!("[notify.webhook]\nurl = \"http://127.0.0.1:{good}/hook\"\n"));
    let out = env.ok(&["alerts", "test"]);
    assert!(out.contains("webhook: test notification sent"), "{out}");
    let body: serde_json::Value = serde_json::from_str(&bodies.recv_timeout(Duration::from_secs(10)).unwrap()).unwrap();
    assert_eq!((&body["event"], &body["version"]), (&"test".into(), &1.into()));
    assert!(body.get("alert").is_none());
    let out = env.json(&["alerts", "test", "--notify", "webhook"]);
    assert_eq!(out[0]["ok"], true);

    // Mail is not configured here: bad input (exit 2), naming what is.
    let out = env.run(&["alerts", "test", "--notify", "mail"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("\"mail\" is not a configured notifier") && err.contains("webhook"),
        "{err}"
    );

    // A webhook answering 500: reported, and the command fails.
    let (bad, _) = listener("500 Internal Server Error");
    let env = Env::with_config(&format!("[notify.webhook]\nurl = \"http://127.0.0.1:{bad}/hook\"\n"));
    let out = env.run(&["alerts", "test"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("webhook: FAILED") && stdout.contains("500"), "{stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("did not get through webhook"));
}

#[test]
fn a_bad_alert_rule_stops_the_config_from_loading() {
    let env = Env::with_config("[[alert]]\nname = \"busy\"\nmetric = \"cpu\"\nabove = \"150%\"\n");
    let out = env.run(&["alerts"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("[[alert]] \"busy\" at line") && err.contains("at most 100%"),
        "{err}"
    );
}

/// The whole chain in a running daemon: the sampler's passes go through the evaluator and
/// the webhook gets what fired, for a guest spinning its vCPU (a threshold rule with `for`)
/// and then for its QEMU killed (the built-in crash rule).
#[test]
fn the_daemon_alerts_on_a_busy_guest_and_on_its_crash() {
    let (port, bodies) = listener("200 OK");
    let env = Env::with_config(&format!(
        "[metrics]\ninterval = \"1s\"\n[notify.webhook]\nurl = \"http://127.0.0.1:{port}/hook\"\n\
         [[alert]]\nname = \"hot\"\nmetric = \"cpu\"\nabove = \"40%\"\nfor = \"2s\"\nvms = [\"g\"]\n"
    ));
    env.boot_guest("g", "");
    let addr = start_server(&env);
    // Wait for the webhook body of `event` for `rule` (other bodies are skipped).
    let wait = |event: &str, rule: &str| -> serde_json::Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let body = bodies
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no {event} webhook for {rule} in 90 s"));
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            if v["event"] == event && v["alert"]["rule"] == rule {
                return v;
            }
        }
    };

    let mut con = env.console("g");
    con.ok("(while :; do :; done) >/dev/null 2>&1 &");
    let hot = wait("fired", "hot");
    assert_eq!(hot["alert"]["vm"], "g", "{hot}");
    assert!(hot["alert"]["value"].as_f64().unwrap() > 40.0, "{hot}");
    assert_eq!(hot["alert"]["threshold"], 40.0, "{hot}");

    let pid: i32 = std::fs::read_to_string(env.vm_run("g").join("qemu.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    let crash = wait("fired", "crash");
    assert_eq!(crash["alert"]["vm"], "g", "{crash}");
    assert_eq!(crash["alert"]["severity"], "critical", "{crash}");
    // The CPU alert of a VM that no longer runs does not stay open.
    let firing = env.json(&["alerts"]);
    let rules: Vec<&str> = firing
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["rule"].as_str().unwrap())
        .collect();
    assert!(rules.contains(&"crash"), "{firing}");
    let _ = addr;
}
