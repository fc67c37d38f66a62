//! Alert notifications through real parts: a real SMTP server on loopback (Debian's
//! python3-aiosmtpd, with STARTTLS and AUTH over a certificate made here), a real HTTP
//! listener for the webhook, and an SMTP server that is down at first (retries; the
//! evaluator never waits).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use corral_engine::alerts::notify::{host_name, send_test};
use corral_engine::alerts::{Alerts, DeliveryOptions, Notifier};
use corral_engine::{Engine, HostConfig};
use corral_types::{AlertEvent, AlertInfo, HostMetrics, MetricsReport, RunState, VmCpu, VmMetrics, WebhookPayload};
use serde_json::Value;

const PYTHON: &str = "/usr/bin/python3";

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Fails (never skips) when the SMTP server's package is missing.
fn need_aiosmtpd() {
    let ok = Command::new(PYTHON)
        .args(["-c", "import aiosmtpd"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "the alert tests need Debian's python3-aiosmtpd (a real SMTP server on loopback) for {PYTHON}; \
         run scripts/install-deps.sh (or apt-get install python3-aiosmtpd)"
    );
}

/// A self-signed certificate for 127.0.0.1 and localhost: (cert.pem, key.pem).
fn certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let c = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, c.cert.pem()).unwrap();
    std::fs::write(&key, c.key_pair.serialize_pem()).unwrap();
    (cert, key)
}

/// aiosmtpd on `port`; each received message arrives on `messages` as JSON.
struct SmtpServer {
    child: Child,
    messages: mpsc::Receiver<Value>,
}

impl SmtpServer {
    fn start(port: u16, mode: &str, tls: Option<&(PathBuf, PathBuf)>) -> SmtpServer {
        need_aiosmtpd();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/smtp_server.py");
        let mut cmd = Command::new(PYTHON);
        cmd.arg(script)
            .args(["--port", &port.to_string(), "--mode", mode])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        if let Some((cert, key)) = tls {
            cmd.arg("--cert").arg(cert).arg("--key").arg(key);
        }
        let mut child = cmd.spawn().expect("start the SMTP server");
        let out = BufReader::new(child.stdout.take().unwrap());
        let (ready_tx, ready_rx) = mpsc::channel();
        let (tx, messages) = mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines() {
                let Ok(line) = line else { break };
                if line == "READY" {
                    let _ = ready_tx.send(());
                } else if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    let _ = tx.send(v);
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the SMTP server did not say READY");
        SmtpServer { child, messages }
    }

    fn next(&self, within: Duration) -> Value {
        self.messages
            .recv_timeout(within)
            .expect("no message reached the SMTP server")
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn vm(name: &str, state: RunState, cpu: Option<f64>) -> VmMetrics {
    let mut v = VmMetrics::configured(name, state, 2, 1 << 30);
    v.cpu = cpu.map(|c| VmCpu::from_percent(10.0, c, 2));
    v
}

fn report(vms: Vec<VmMetrics>) -> MetricsReport {
    MetricsReport {
        taken_ms: 0,
        interval_ms: Some(10_000),
        host: HostMetrics {
            cpus: 2,
            cpu_percent: Some(5.0),
            memory_total_bytes: 100,
            memory_available_bytes: 90,
            load: [0.1; 3],
            ..Default::default()
        },
        vms,
    }
}

/// An engine on a temporary data dir with `extra` appended to its config.
fn engine(dir: &Path, extra: &str) -> Arc<Engine> {
    let text = format!(
        "data_dir = \"{}\"\nrun_dir = \"{}\"\n{extra}",
        dir.join("data").display(),
        dir.join("run").display()
    );
    let cfg = HostConfig::parse(&text).unwrap_or_else(|e| panic!("config: {e}\n{text}"));
    Arc::new(Engine::open(cfg).unwrap())
}

fn quick_retries() -> DeliveryOptions {
    DeliveryOptions {
        first_pause: Duration::from_millis(300),
        max_pause: Duration::from_secs(1),
        attempts: 60,
        timeout: Duration::from_secs(10),
        ..DeliveryOptions::default()
    }
}

/// Waits until the history has an alert matching `f`.
async fn history_until(engine: &Engine, what: &str, f: impl Fn(&AlertInfo) -> bool) -> AlertInfo {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(a) = engine.alerts(true, 50).unwrap().into_iter().find(&f) {
            return a;
        }
        assert!(
            Instant::now() < deadline,
            "the history never showed {what}: {:#?}",
            engine.alerts(true, 50)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_goes_through_a_real_smtp_server_with_starttls_and_auth() {
    let dir = tempfile::tempdir().unwrap();
    let tls = certificate(dir.path());
    let port = free_port();
    let server = SmtpServer::start(port, "starttls", Some(&tls));
    let password = dir.path().join("smtp-password");
    std::fs::write(&password, "s3cret\n").unwrap();
    let mail = format!(
        "[notify.mail]\nserver = \"127.0.0.1\"\nport = {port}\ntls = \"starttls\"\nusername = \"corral\"\n\
         password_file = \"{}\"\nfrom = \"corral <corral@lab.example>\"\nto = [\"ops@lab.example\", \"pager@lab.example\"]\n\
         ca_cert = \"{}\"\n",
        password.display(),
        tls.0.display()
    );
    let engine = engine(
        dir.path(),
        &format!("{mail}[[alert]]\nname = \"busy\"\nmetric = \"cpu\"\nabove = \"90%\"\nkeep_firing_for = \"0\"\nseverity = \"critical\"\n"),
    );
    let notifier = Notifier::for_engine(&engine, quick_retries());
    let mut alerts = Alerts::new(engine.clone(), Some(notifier)).unwrap();
    let host = host_name();

    let t0 = now_ms();
    let changes = alerts.evaluate(t0, &report(vec![vm("web1", RunState::Running, Some(97.0))]));
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].event, AlertEvent::Fired);

    let m = server.next(Duration::from_secs(30));
    assert_eq!(m["from"], "corral@lab.example");
    assert_eq!(m["to"], serde_json::json!(["ops@lab.example", "pager@lab.example"]));
    assert_eq!(m["authenticated"], true, "{m}");
    assert_eq!(
        m["subject"].as_str().unwrap(),
        format!("[corral] FIRING (critical): busy on VM web1 ({host})")
    );
    let body = m["body"].as_str().unwrap();
    for want in [
        format!("Alert busy fired for VM web1 on host {host}."),
        "cpu is 97% (above 90%)".to_string(),
        "Value:      97%".to_string(),
        "Threshold:  above 90%".to_string(),
        "Since:".to_string(),
        format!("Host:       {host}"),
    ] {
        assert!(body.contains(&want), "the body lacks {want:?}:\n{body}");
    }
    let a = history_until(&engine, "the delivered mail", |a| !a.notifications.is_empty()).await;
    assert_eq!(
        (
            a.notifications[0].ok,
            a.notifications[0].attempts,
            a.notifications[0].event
        ),
        (true, 1, AlertEvent::Fired),
        "{a:#?}"
    );

    // Back to normal: one RESOLVED mail.
    let changes = alerts.evaluate(t0 + 10_000, &report(vec![vm("web1", RunState::Running, Some(20.0))]));
    assert_eq!(changes[0].event, AlertEvent::Resolved);
    let m = server.next(Duration::from_secs(30));
    assert_eq!(
        m["subject"].as_str().unwrap(),
        format!("[corral] RESOLVED (critical): busy on VM web1 ({host})")
    );
    assert!(m["body"].as_str().unwrap().contains("Value now:  20%"), "{m}");

    // `corral alerts test` through the same server; with a wrong password it says why.
    let opts = DeliveryOptions::default();
    let out = send_test(&engine.config().notify, Some("mail"), &opts).await.unwrap();
    assert!(out[0].ok, "{out:?}");
    assert!(server.next(Duration::from_secs(30))["subject"]
        .as_str()
        .unwrap()
        .starts_with("[corral] TEST"));
    std::fs::write(&password, "wrong\n").unwrap();
    let out = send_test(&engine.config().notify, None, &opts).await.unwrap();
    assert!(!out[0].ok);
    let e = out[0].error.as_deref().unwrap();
    assert!(
        e.contains(&format!("SMTP server 127.0.0.1:{port}")) && e.contains("535"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn implicit_tls_and_an_untrusted_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let tls = certificate(dir.path());
    let port = free_port();
    let server = SmtpServer::start(port, "tls", Some(&tls));
    let password = dir.path().join("pw");
    std::fs::write(&password, "s3cret").unwrap();
    let cfg = |ca: &str| {
        format!(
            "[notify.mail]\nserver = \"localhost\"\nport = {port}\ntls = \"tls\"\nusername = \"corral\"\npassword_file = \"{}\"\nfrom = \"corral@lab.example\"\nto = [\"ops@lab.example\"]\n{ca}",
            password.display()
        )
    };
    let opts = DeliveryOptions::default();
    let good = engine(dir.path(), &cfg(&format!("ca_cert = \"{}\"\n", tls.0.display())));
    let out = send_test(&good.config().notify, Some("mail"), &opts).await.unwrap();
    assert!(out[0].ok, "{out:?}");
    assert_eq!(server.next(Duration::from_secs(30))["authenticated"], true);
    // Without the private CA the certificate is not trusted: refused, nothing sent.
    let dir2 = tempfile::tempdir().unwrap();
    let untrusting = engine(dir2.path(), &cfg(""));
    let out = send_test(&untrusting.config().notify, Some("mail"), &opts)
        .await
        .unwrap();
    assert!(!out[0].ok);
    assert!(out[0].error.as_deref().unwrap().contains("certificate"), "{out:?}");
    assert!(server.messages.recv_timeout(Duration::from_millis(500)).is_err());
}

/// A one-request HTTP/1.1 server: answers `status` and hands over (request head, body).
fn http_listener(status: &'static str) -> (u16, mpsc::Receiver<(String, Vec<u8>)>) {
    let l = StdListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut s) = conn else { return };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut head = String::new();
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            let mut body = vec![0; len];
            std::io::Read::read_exact(&mut r, &mut body).unwrap();
            write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Length: 4\r\nConnection: close\r\n\r\nnope"
            )
            .unwrap();
            let _ = tx.send((head, body));
        }
    });
    (port, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_posts_the_documented_json_to_a_real_listener() {
    let dir = tempfile::tempdir().unwrap();
    let (port, requests) = http_listener("200 OK");
    let engine = engine(
        dir.path(),
        &format!(
            "[notify.webhook]\nurl = \"http://127.0.0.1:{port}/hooks/corral\"\nheaders = {{ Authorization = \"Bearer t0ken\", X-Team = \"ops\" }}\n"
        ),
    );
    let mut alerts = Alerts::new(engine.clone(), Some(Notifier::for_engine(&engine, quick_retries()))).unwrap();
    let changes = alerts.evaluate(now_ms(), &report(vec![vm("db", RunState::Crashed, None)]));
    assert_eq!(changes.len(), 1);
    let id = changes[0].alert.id;
    assert!(id > 0, "recorded before it was sent");

    let (head, body) = requests.recv_timeout(Duration::from_secs(30)).expect("no webhook call");
    let lower = head.to_ascii_lowercase();
    assert!(head.starts_with("POST /hooks/corral HTTP/1.1"), "{head}");
    assert!(lower.contains("content-type: application/json"), "{head}");
    assert!(head.contains("Bearer t0ken") && lower.contains("x-team: ops"), "{head}");
    let p: WebhookPayload = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (p.version, p.event, p.host.as_str()),
        (1, AlertEvent::Fired, host_name().as_str())
    );
    let a = p.alert.expect("the alert");
    assert_eq!((a.id, a.rule.as_str(), a.vm.as_deref()), (id, "crash", Some("db")));
    assert!(p.text.contains("FIRING critical: crash on VM db"), "{}", p.text);
    // The raw JSON has the documented field names.
    let v: Value = serde_json::from_slice(&body).unwrap();
    for k in ["version", "event", "host", "time_ms", "text", "alert"] {
        assert!(v.get(k).is_some(), "no {k} in {v}");
    }
    assert_eq!(v["alert"]["kind"], "crash");
    let a = history_until(&engine, "the webhook's outcome", |a| {
        a.id == id && !a.notifications.is_empty()
    })
    .await;
    assert!(
        a.notifications[0].ok && a.notifications[0].notifier == "webhook",
        "{a:#?}"
    );

    // A webhook that answers 503 is a failure naming the status.
    let (port, _requests) = http_listener("503 Service Unavailable");
    let dir2 = tempfile::tempdir().unwrap();
    let bad = engine_with_webhook(dir2.path(), port);
    let out = send_test(&bad.config().notify, Some("webhook"), &DeliveryOptions::default())
        .await
        .unwrap();
    assert!(!out[0].ok);
    assert!(out[0].error.as_deref().unwrap().contains("503"), "{out:?}");
}

fn engine_with_webhook(dir: &Path, port: u16) -> Arc<Engine> {
    engine(dir, &format!("[notify.webhook]\nurl = \"http://127.0.0.1:{port}/\"\n"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_smtp_server_is_retried_and_never_holds_up_evaluation() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port(); // nobody listens there yet
    let engine = engine(
        dir.path(),
        &format!("[notify.mail]\nserver = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\nfrom = \"corral@lab.example\"\nto = [\"ops@lab.example\"]\n"),
    );
    // The error names the server.
    let out = send_test(&engine.config().notify, None, &DeliveryOptions::default())
        .await
        .unwrap();
    assert!(!out[0].ok);
    assert!(
        out[0]
            .error
            .as_deref()
            .unwrap()
            .contains(&format!("SMTP server 127.0.0.1:{port}")),
        "{out:?}"
    );

    let mut alerts = Alerts::new(engine.clone(), Some(Notifier::for_engine(&engine, quick_retries()))).unwrap();
    let t0 = now_ms();
    let started = Instant::now();
    let c1 = alerts.evaluate(
        t0,
        &report(vec![vm("a", RunState::Crashed, None), vm("b", RunState::Running, None)]),
    );
    let c2 = alerts.evaluate(
        t0 + 10_000,
        &report(vec![vm("a", RunState::Crashed, None), vm("b", RunState::Crashed, None)]),
    );
    let took = started.elapsed();
    assert_eq!((c1.len(), c2.len()), (1, 1));
    assert!(
        took < Duration::from_millis(500),
        "evaluate waited for the mail server: {took:?}"
    );

    // A few failed tries later nothing is delivered or given up yet.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(engine
        .alerts(true, 10)
        .unwrap()
        .iter()
        .all(|a| a.notifications.is_empty()));

    // The server comes up: both queued mails arrive, the first after more than one try.
    let server = SmtpServer::start(port, "none", None);
    let subjects: Vec<String> = (0..2)
        .map(|_| {
            server.next(Duration::from_secs(30))["subject"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(
        subjects[0].contains("crash on VM a") && subjects[1].contains("crash on VM b"),
        "{subjects:?}"
    );
    let a = history_until(&engine, "the retried mail", |a| {
        a.vm.as_deref() == Some("a") && !a.notifications.is_empty()
    })
    .await;
    let n = &a.notifications[0];
    assert!(n.ok && n.attempts >= 2, "{n:?}");
}
