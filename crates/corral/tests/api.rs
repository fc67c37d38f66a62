//! The REST API in-process on port 0, with the real engine and a real QEMU guest: tokens and
//! roles (401/403), VM actions, name validation, body checking, the audit log.

mod common;
#[path = "common/http.rs"]
mod http;

use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream};

use common::Env;
use http::{http, request, start_server};

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
    let _ = common::wait_for(std::time::Duration::from_secs(30), || {
        let j = http(addr, "GET", &format!("/api/v1/jobs/{job}"), Some(&viewer), None).json();
        state = j["state"].as_str().unwrap().to_string();
        state != "running"
    });
    assert_eq!(state, "succeeded");
    let b = http(addr, "GET", "/api/v1/backups?vm=web", Some(&viewer), None).json();
    assert_eq!(b.as_array().unwrap().len(), 1, "{b}");
    // The job keeps the call's result (what a 200 would have answered): the backup report.
    let mut result = serde_json::Value::Null;
    let _ = common::wait_for(std::time::Duration::from_secs(5), || {
        result = http(addr, "GET", &format!("/api/v1/jobs/{job}"), Some(&viewer), None).json()["result"].clone();
        !result.is_null()
    });
    assert_eq!(result["ok"]["id"], b[0]["id"], "{result}");
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

    // Without --password-stdin the password is asked for twice on a real terminal (a pty from
    // util-linux `script`), not echoed; two different answers change nothing.
    let passwd_on_tty = |answers: [&str; 2]| {
        let line = format!("{} user passwd ann", env!("CARGO_BIN_EXE_corral"));
        let c = env.cmd();
        let mut child = std::process::Command::new("script")
            .args(["-qec", &line, "/dev/null"])
            .envs(c.get_envs().filter_map(|(k, v)| Some((k, v?))))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let mut seen = String::new();
        // Each answer is typed once its prompt shows, as a person would.
        for (prompt, answer) in ["New password:", "Again:"].into_iter().zip(answers) {
            let mut buf = [0u8; 256];
            while !seen.contains(prompt) {
                let n = stdout.read(&mut buf).unwrap();
                assert!(n > 0, "no prompt {prompt:?}: {seen}");
                seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
            stdin.write_all(format!("{answer}\n").as_bytes()).unwrap();
        }
        drop(stdin);
        stdout.read_to_string(&mut seen).unwrap();
        (child.wait().unwrap(), seen)
    };
    let (differ, out) = passwd_on_tty(["first new password", "second new password"]);
    assert!(!differ.success(), "{out}");
    assert!(out.contains("New password:") && out.contains("differ"), "{out}");
    let (same, out) = passwd_on_tty(["the new password 1", "the new password 1"]);
    assert!(same.success(), "{out}");
    assert!(!out.contains("the new password 1"), "the password was echoed: {out}");
    let engine = corral_engine::Engine::open(
        corral_engine::HostConfig::load_file(&env.dir_path().join("corral.toml"), true).unwrap(),
    )
    .unwrap();
    assert!(engine.user_login("ann", "the new password 1").unwrap().is_some());
    assert!(engine.user_login("ann", "a long enough password").unwrap().is_none());
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
    let env = Env::new();
    let tok = env.ok(&["token", "create", "--role", "viewer"]).trim().to_string();
    let (mut child, _lines, line) = spawn_serve(&env, &["--tls"]);
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
    let port = url.trim_end_matches('/').rsplit(':').next().unwrap().to_string();
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
    sigterm(&child);
    let status = child.wait().unwrap();
    assert!(status.success(), "SIGTERM ends serve cleanly: {status}");
    // The next start keeps the same certificate (clients may have pinned it).
    let before = std::fs::read(&cert).unwrap();
    let (mut again, _l2, _) = spawn_serve(&env, &["--tls"]);
    assert_eq!(std::fs::read(&cert).unwrap(), before);
    sigterm(&again);
    assert!(again.wait().unwrap().success());
}

#[test]
fn sessions_need_their_csrf_token_and_logins_are_rate_limited() {
    let env = Env::new();
    env.create_guest("web", "");
    common::web::add_user(&env, "ann", "operator", "correct horse battery");
    let addr = start_server(&env);
    let login = |user: &str, pw: &str| {
        let body = serde_json::json!({"user": user, "password": pw}).to_string();
        request(addr, "POST", "/api/v1/login", &[], Some(&body))
    };

    let r = login("ann", "wrong password");
    assert_eq!((r.status, r.json()["kind"].as_str()), (401, Some("unauthorized")));
    let r = request(
        addr,
        "POST",
        "/api/v1/login",
        &[],
        Some(r#"{"user":"ann","password":"x","otp":1}"#),
    );
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].as_str().unwrap().contains("otp"), "{}", r.body);

    let r = login("ann", "correct horse battery");
    assert_eq!(r.status, 200, "{}", r.body);
    let set = r.header("set-cookie").expect("a session cookie");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attr), "{set}");
    }
    assert!(!set.contains("Secure"), "no Secure on plain loopback HTTP: {set}");
    let cookie = set.split(';').next().unwrap().to_string();
    let csrf = r.json()["csrf"].as_str().unwrap().to_string();
    assert_eq!(r.json()["role"], "operator");

    // Reading with the cookie works; mutating needs the CSRF token as well.
    let r = request(addr, "GET", "/api/v1/vms", &[("Cookie", &cookie)], None);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()[0]["name"], "web");
    let r = request(addr, "POST", "/api/v1/vms/web/pause", &[("Cookie", &cookie)], None);
    assert_eq!((r.status, r.json()["kind"].as_str()), (403, Some("csrf")), "{}", r.body);
    let r = request(
        addr,
        "POST",
        "/api/v1/vms/web/pause",
        &[("Cookie", &cookie), ("X-CSRF-Token", "0000")],
        None,
    );
    assert_eq!(r.status, 403);
    // With the token the call goes through to the engine (a stopped VM cannot pause: 409).
    let r = request(
        addr,
        "POST",
        "/api/v1/vms/web/pause",
        &[("Cookie", &cookie), ("X-CSRF-Token", &csrf)],
        None,
    );
    assert_eq!(
        (r.status, r.json()["kind"].as_str()),
        (409, Some("wrong-state")),
        "{}",
        r.body
    );
    let who = request(addr, "GET", "/api/v1/whoami", &[("Cookie", &cookie)], None).json();
    assert_eq!(
        (who["who"].as_str(), who["csrf"].as_str()),
        (Some("user ann"), Some(csrf.as_str()))
    );

    // Logging out ends that session only.
    let second = login("ann", "correct horse battery").header("set-cookie").unwrap();
    let second = second.split(';').next().unwrap();
    let r = request(addr, "POST", "/api/v1/logout", &[("Cookie", second)], None);
    assert_eq!(r.status, 204);
    assert!(r.header("set-cookie").unwrap().contains("Max-Age=0"));
    assert_eq!(
        request(addr, "GET", "/api/v1/vms", &[("Cookie", second)], None).status,
        401
    );
    assert_eq!(
        request(addr, "GET", "/api/v1/vms", &[("Cookie", &cookie)], None).status,
        200
    );

    // A deleted user's session ends at once.
    env.ok(&["user", "delete", "ann"]);
    assert_eq!(
        request(addr, "GET", "/api/v1/vms", &[("Cookie", &cookie)], None).status,
        401
    );

    // An unknown cookie is no login.
    assert_eq!(
        request(addr, "GET", "/api/v1/vms", &[("Cookie", "corral_session=nope")], None).status,
        401
    );

    // Failed logins: after the free ones, the name is refused for a while (429), even with the
    // right password, and the refusals are in the audit log.
    for _ in 0..6 {
        login("carol", "guess");
    }
    let r = login("carol", "guess");
    assert_eq!(
        (r.status, r.json()["kind"].as_str()),
        (429, Some("rate-limited")),
        "{}",
        r.body
    );
    let audit = env.json(&["audit"]);
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["action"] == "login" && l["result"].as_str().unwrap().contains("rate limited")),
        "{audit}"
    );
}

#[test]
fn sigterm_lets_a_running_backup_finish_and_ends_event_streams() {
    let env = Env::new();
    env.create_guest("big", "");
    env.ok(&[
        "disk", "add", "big", "--size", "400M", "--role", "data", "--name", "data1",
    ]);
    // 256 MiB of random data to read, so the backup is still running when SIGTERM comes
    // (the test holds either way; the "waiting" line is only printed if it was).
    let img = common::disk_path(&env, "big", 1);
    let src = env.dir_path().join("random.bin");
    let mut f = std::fs::File::create(&src).unwrap();
    std::io::copy(
        &mut std::fs::File::open("/dev/urandom").unwrap().take(256 << 20),
        &mut f,
    )
    .unwrap();
    drop(f);
    common::qemu_io(&img, &format!("write -q -s {} 0 256M", src.display()));
    std::fs::remove_file(&src).unwrap();
    env.ok(&["store", "init"]);
    let op = env.ok(&["token", "create", "--role", "operator"]).trim().to_string();

    let (mut child, lines, line) = spawn_serve(&env, &[]);
    let addr: SocketAddr = line
        .split("http://")
        .nth(1)
        .unwrap()
        .trim_end_matches('/')
        .parse()
        .unwrap();
    // An open event stream must not hold the daemon up.
    let mut events = TcpStream::connect(addr).unwrap();
    write!(
        events,
        "GET /api/v1/events HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {op}\r\n\r\n"
    )
    .unwrap();
    let mut seen = String::new();
    assert!(
        read_events_until(&mut events, &mut seen, |t| t.contains("event: vm")),
        "{seen}"
    );

    let r = http(addr, "POST", "/api/v1/vms/big/backup", Some(&op), None);
    assert_eq!(r.status, 202, "{}", r.body);
    let job = r.json()["job"]["id"].as_i64().unwrap();
    sigterm(&child);
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}: {rest:?}");
    assert!(rest.iter().any(|l| l.contains("stopped")), "{rest:?}");
    eprintln!("serve said: {rest:?}");
    // The job finished as a success, its backup is in the store, and it verifies.
    let shown = env.json(&["job", "show", &job.to_string()]);
    assert_eq!(shown[0]["state"], "succeeded", "{shown}");
    let ids = env.json(&["backup", "list", "big"]);
    assert_eq!(ids.as_array().unwrap().len(), 1, "{ids}");
    env.ok(&["backup", "verify", "big"]);
    // Nothing listens any more.
    assert!(TcpStream::connect(addr).is_err());
}

type StderrLines = std::io::Lines<std::io::BufReader<std::process::ChildStderr>>;

/// Starts `corral serve --listen 127.0.0.1:0 EXTRA…` as a process; returns it, the rest of
/// its stderr, and its "listening on" line (read before returning: the readiness signal).
fn spawn_serve(env: &Env, extra: &[&str]) -> (std::process::Child, StderrLines, String) {
    let mut child = env
        .cmd()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(extra)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let line = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.contains("listening on"))
        .expect("serve says where it listens");
    (child, lines, line)
}

fn sigterm(child: &std::process::Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
}
