//! The REST API in-process on port 0, with the real engine and a real QEMU guest: tokens and
//! roles (401/403), VM actions, name validation, body checking, the audit log.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use common::Env;

struct Reply {
    status: u16,
    head: String,
    body: String,
}

impl Reply {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// One HTTP/1.1 request over a fresh connection (`Connection: close`), read to the end.
fn http(addr: SocketAddr, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    let body = body.unwrap_or("");
    req.push_str(&format!(
        "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ));
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    Reply {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

/// Starts the API server in this process on 127.0.0.1:0; returns its address.
fn start_server(env: &Env) -> SocketAddr {
    let cfg = corral_engine::HostConfig::load_file(&env.dir_path().join("corral.toml"), true).unwrap();
    let engine = Arc::new(corral_engine::Engine::open(cfg).unwrap());
    engine.watch_idle_vms(); // as `corral serve` does
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let opts = corral_server::ServeOptions {
                listen: "127.0.0.1:0".parse().unwrap(),
                insecure_http: false,
                tls: None,
            };
            let listener = corral_server::bind(&opts).await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            corral_server::serve(engine, listener, std::future::pending())
                .await
                .unwrap();
        });
    });
    rx.recv().unwrap()
}

#[test]
fn tokens_roles_actions_names_bodies_and_audit() {
    let env = Env::new();
    env.create_guest("web", "");
    let token = |role: &str, label: &str| {
        env.ok(&["token", "create", "--role", role, "--label", label])
            .trim()
            .to_string()
    };
    let (viewer, operator, admin) = (
        token("viewer", "dash"),
        token("operator", "ops"),
        token("admin", "root"),
    );
    assert!(viewer.starts_with("corral_"));
    let addr = start_server(&env);

    // No or a wrong token: 401 with a Bearer challenge.
    let r = http(addr, "GET", "/api/v1/vms", None, None);
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(
        r.head.to_ascii_lowercase().contains("www-authenticate: bearer"),
        "{}",
        r.head
    );
    assert_eq!(http(addr, "GET", "/api/v1/vms", Some("corral_0000"), None).status, 401);

    // A viewer reads, but may not act.
    let r = http(addr, "GET", "/api/v1/vms", Some(&viewer), None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()[0]["name"], "web");
    let r = http(addr, "POST", "/api/v1/vms/web/start", Some(&viewer), None);
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.json()["error"].as_str().unwrap().contains("operator"), "{}", r.body);
    assert_eq!(env.state("web"), "stopped");

    // Names from the URL are validated like on the command line.
    let r = http(addr, "POST", "/api/v1/vms/..%2Fx/start", Some(&operator), None);
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(http(addr, "GET", "/api/v1/vms/nosuch", Some(&viewer), None).status, 404);

    // An operator starts the real guest; show has the state and an ETag.
    let r = http(addr, "POST", "/api/v1/vms/web/start", Some(&operator), None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["status"]["state"], "running", "{}", r.body);
    assert_eq!(env.state("web"), "running", "the CLI sees what the API did");
    let r = http(addr, "GET", "/api/v1/vms/web", Some(&viewer), None);
    assert_eq!(r.json()["status"]["state"], "running");
    assert!(r.head.to_ascii_lowercase().contains("etag: \""), "{}", r.head);
    // Starting again is a conflict, not a crash.
    assert_eq!(
        http(addr, "POST", "/api/v1/vms/web/start", Some(&operator), None).status,
        409
    );

    // Bodies: unknown fields and bad JSON are 400s that name the problem.
    let r = http(
        addr,
        "POST",
        "/api/v1/vms/web/stop",
        Some(&operator),
        Some(r#"{"forse": true}"#),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("forse"), "{}", r.body);
    assert_eq!(
        http(addr, "POST", "/api/v1/vms/web/stop", Some(&operator), Some("{")).status,
        400
    );
    assert_eq!(env.state("web"), "running");
    let r = http(
        addr,
        "POST",
        "/api/v1/vms/web/stop",
        Some(&operator),
        Some(r#"{"force": true}"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(env.state("web"), "stopped");
    assert_eq!(
        http(addr, "POST", "/api/v1/vms/web/reboot", Some(&operator), None).status,
        404
    );

    // A backup answers 202 with its job at once; the job is followed to its end.
    assert_eq!(
        http(addr, "POST", "/api/v1/vms/web/backup", Some(&viewer), None).status,
        403
    );
    let r = http(
        addr,
        "POST",
        "/api/v1/vms/web/backup",
        Some(&operator),
        Some(r#"{"fulll": true}"#),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    let r = http(
        addr,
        "POST",
        "/api/v1/vms/web/backup",
        Some(&operator),
        Some(r#"{"full": true}"#),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let job = r.json()["job"]["id"].as_i64().unwrap();
    assert!(r.head.contains(&format!("/api/v1/jobs/{job}")), "{}", r.head);
    let mut state = String::new();
    for _ in 0..300 {
        let j = http(addr, "GET", &format!("/api/v1/jobs/{job}"), Some(&viewer), None).json();
        state = j["state"].as_str().unwrap().to_string();
        if state != "running" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(state, "succeeded");
    let b = http(addr, "GET", "/api/v1/backups?vm=web", Some(&viewer), None).json();
    assert_eq!(b.as_array().unwrap().len(), 1, "{b}");
    assert_eq!(b[0]["kind"], "full");
    assert_eq!(
        env.json(&["backup", "list", "web"])[0]["id"],
        b[0]["id"],
        "the CLI sees it"
    );
    assert_eq!(
        http(addr, "POST", "/api/v1/vms/nosuch/backup", Some(&operator), None).status,
        404
    );

    // Jobs are readable; unknown paths are JSON 404s.
    assert_eq!(
        http(addr, "GET", "/api/v1/jobs?limit=5", Some(&viewer), None).status,
        200
    );
    assert_eq!(
        http(addr, "GET", "/api/v1/jobs?limt=5", Some(&viewer), None).status,
        400
    );
    let r = http(addr, "GET", "/api/v2/vms", Some(&viewer), None);
    assert_eq!((r.status, r.json()["kind"].as_str()), (404, Some("not-found")));

    // The audit log: admin only; it names who did what and how it ended.
    assert_eq!(http(addr, "GET", "/api/v1/audit", Some(&operator), None).status, 403);
    let r = http(addr, "GET", "/api/v1/audit", Some(&admin), None);
    assert_eq!(r.status, 200);
    let log = r.json();
    let lines: Vec<(String, String, String)> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["who"].as_str().unwrap().to_string(),
                l["action"].as_str().unwrap().to_string(),
                l["result"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        lines
            .iter()
            .any(|(w, a, r)| w.contains("ops") && a == "start" && r == "ok"),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|(_, a, r)| a == "start" && r.starts_with("error")),
        "{lines:?}"
    );
    assert!(lines.iter().any(|(_, a, r)| a == "stop" && r == "ok"), "{lines:?}");
    // The backup's line is written when its task ends, just after its job: wait for it.
    let backed_up = common::wait_for(std::time::Duration::from_secs(10), || {
        let log = http(addr, "GET", "/api/v1/audit", Some(&admin), None).json();
        log.as_array()
            .unwrap()
            .iter()
            .any(|l| l["action"] == "backup" && l["result"].as_str().unwrap().starts_with("ok: backup"))
    });
    assert!(backed_up.is_ok(), "no audit line for the API backup");
    let api_len = http(addr, "GET", "/api/v1/audit", Some(&admin), None)
        .json()
        .as_array()
        .unwrap()
        .len();
    assert_eq!(
        env.json(&["audit"]).as_array().unwrap().len(),
        api_len,
        "the CLI reads the same log"
    );

    // Revoked tokens stop working at once.
    let id = env.json(&["token", "list"]).as_array().unwrap()[0]["id"]
        .as_i64()
        .unwrap();
    env.ok(&["token", "revoke", &id.to_string()]);
    assert_eq!(http(addr, "GET", "/api/v1/vms", Some(&viewer), None).status, 401);
}

#[test]
fn serve_refuses_plain_http_beyond_loopback_and_users_are_checked() {
    let env = Env::new();
    // Plain HTTP beyond loopback is refused unless asked for by name (the CLI picks TLS there).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let plain = |insecure_http| corral_server::ServeOptions {
        listen: "0.0.0.0:0".parse().unwrap(),
        insecure_http,
        tls: None,
    };
    let err = rt.block_on(corral_server::bind(&plain(false))).unwrap_err().to_string();
    assert!(err.contains("not a loopback address"), "{err}");
    assert!(rt.block_on(corral_server::bind(&plain(true))).is_ok());
    let add = |name: &str, pw: &str| {
        let mut c = env.cmd();
        c.args(["user", "add", name, "--role", "viewer", "--password-stdin"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{pw}\n").as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    assert!(add("ann", "a long enough password").status.success());
    let short = add("bob", "short");
    assert_eq!(
        short.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&short.stderr)
    );
    assert!(!add("ann", "another long password").status.success(), "duplicate user");
    let users = env.json(&["user", "list"]);
    assert_eq!(users.as_array().unwrap().len(), 1);
    assert_eq!(users[0]["role"], "viewer");
    // The password is not in the registry in clear.
    let db = std::fs::read(env.data_dir().join("corral.db")).unwrap();
    assert!(!String::from_utf8_lossy(&db).contains("a long enough password"));
}

/// Reads a server-sent event stream until `pred` holds for the text so far (or 30 s pass).
fn read_events_until(s: &mut TcpStream, seen: &mut String, pred: impl Fn(&str) -> bool) -> bool {
    s.set_read_timeout(Some(std::time::Duration::from_millis(500))).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut buf = [0u8; 8192];
    while std::time::Instant::now() < deadline {
        if pred(seen) {
            return true;
        }
        match s.read(&mut buf) {
            Ok(0) => return pred(seen),
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(_) => {}
        }
    }
    pred(seen)
}

#[test]
fn events_stream_vm_states_and_job_progress() {
    let env = Env::new();
    env.create_guest("ev", "");
    let op = env.ok(&["token", "create", "--role", "operator"]).trim().to_string();
    let addr = start_server(&env);
    assert_eq!(http(addr, "GET", "/api/v1/events", None, None).status, 401);

    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET /api/v1/events HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {op}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let mut seen = String::new();
    // First every VM once, as it is now.
    assert!(
        read_events_until(&mut s, &mut seen, |t| t.contains("event: vm")
            && t.contains("\"stopped\"")),
        "{seen}"
    );
    assert!(seen.starts_with("HTTP/1.1 200") && seen.to_ascii_lowercase().contains("text/event-stream"));
    // A state change made elsewhere (the CLI) shows up.
    env.ok(&["vm", "start", "ev"]);
    assert!(
        read_events_until(&mut s, &mut seen, |t| t.contains("\"running\"")),
        "{seen}"
    );
    env.ok(&["vm", "kill", "ev"]);
    // A job the daemon runs streams its progress to the end.
    let r = http(addr, "POST", "/api/v1/vms/ev/backup", Some(&op), None);
    assert_eq!(r.status, 202, "{}", r.body);
    assert!(
        read_events_until(&mut s, &mut seen, |t| t.contains("event: job")
            && t.contains("\"succeeded\"")),
        "{seen}"
    );
    assert!(seen.contains("\"kind\":\"backup\""), "{seen}");
}

/// `corral serve --tls` as a real process, checked with a real client (curl): the self-signed
/// certificate is made once, trusted only when given, and SIGTERM ends the server cleanly.
#[test]
fn https_with_a_self_signed_certificate_and_sigterm() {
    use std::io::BufRead;
    let env = Env::new();
    let tok = env.ok(&["token", "create", "--role", "viewer"]).trim().to_string();
    let mut child = env
        .cmd()
        .args(["serve", "--listen", "127.0.0.1:0", "--tls"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let line = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.contains("listening on"))
        .expect("serve says where it listens");
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("https://"))
        .unwrap()
        .to_string();
    let cert = env.data_dir().join("tls/cert.pem");
    assert!(line.contains(cert.to_str().unwrap()), "{line}");
    let key_mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(env.data_dir().join("tls/key.pem"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(key_mode & 0o077, 0, "the key is private");
    let port = url.trim_end_matches("/api/v1").rsplit(':').next().unwrap().to_string();
    let curl = |extra: &[&str]| {
        std::process::Command::new("curl")
            .args(["-sS", "--max-time", "10", "-H", &format!("Authorization: Bearer {tok}")])
            .args(extra)
            .output()
            .unwrap()
    };
    let ok = curl(&[
        "--cacert",
        cert.to_str().unwrap(),
        &format!("https://localhost:{port}/api/v1/vms"),
    ]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "[]");
    let untrusted = curl(&[&format!("https://localhost:{port}/api/v1/vms")]);
    assert!(
        !untrusted.status.success(),
        "curl must not trust a self-signed certificate it was not given"
    );
    let plain = curl(&[&format!("http://127.0.0.1:{port}/api/v1/vms")]);
    assert!(!plain.status.success() || !String::from_utf8_lossy(&plain.stdout).starts_with('['));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "SIGTERM ends serve cleanly: {status}");
    // The next start keeps the same certificate (clients may have pinned it).
    let before = std::fs::read(&cert).unwrap();
    let mut again = env
        .cmd()
        .args(["serve", "--listen", "127.0.0.1:0", "--tls"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut l2 = std::io::BufReader::new(again.stderr.take().unwrap()).lines();
    assert!(l2.by_ref().map_while(Result::ok).any(|l| l.contains("listening on")));
    assert_eq!(std::fs::read(&cert).unwrap(), before);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(again.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(again.wait().unwrap().success());
}
