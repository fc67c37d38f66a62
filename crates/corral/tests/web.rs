//! The web page in-process on port 0, with the real engine and a real QEMU guest: login and
//! its limits, escaping, CSRF on forms, roles, actions through the forms, the VM page, the
//! security headers.

mod common;

use std::time::Duration;

use common::web::{add_user, get, login, post_form, start_server, Reply};
use common::Env;

fn assert_security_headers(r: &Reply) {
    let csp = r.header("content-security-policy").expect("a CSP");
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert_eq!(r.header("x-frame-options").as_deref(), Some("DENY"));
    assert_eq!(r.header("referrer-policy").as_deref(), Some("same-origin"));
}

/// Polls the jobs page until the newest job of `kind` on `vm` ended; its state.
fn wait_job(env: &Env, vm: &str, kind: &str) -> String {
    let mut state = String::new();
    let _ = common::wait_for(Duration::from_secs(120), || {
        let jobs = env.json(&["job", "list", "--vm", vm]);
        state = jobs
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["kind"] == kind)
            .map(|j| j["state"].as_str().unwrap().to_string())
            .unwrap_or_default();
        !state.is_empty() && state != "running"
    });
    state
}

#[test]
fn first_start_says_how_to_add_a_user_and_logins_are_limited() {
    let env = Env::new();
    let addr = start_server(&env);

    // Not logged in: every page leads to the login form.
    for path in ["/", "/jobs", "/vms/x", "/schedules"] {
        let r = get(addr, path, None);
        assert_eq!(r.status, 303, "{path}: {}", r.body);
        assert_eq!(r.header("location").as_deref(), Some("/login"), "{path}");
    }
    // Nobody exists yet: the page says how to make the first user, and has no default.
    let r = get(addr, "/login", None);
    assert_eq!(r.status, 200);
    assert_security_headers(&r);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    assert!(r.body.contains("corral user add NAME --role admin"), "{}", r.body);
    assert!(!r.body.to_lowercase().contains("default password:"), "{}", r.body);

    add_user(&env, "ann", "admin", "correct horse battery");
    let r = get(addr, "/login", None);
    assert!(!r.body.contains("corral user add"), "the hint goes once a user exists");

    // A wrong password is a 401 page saying so, with the name kept in the form.
    let r = post_form(addr, "/login", None, &[("user", "ann"), ("password", "nope")]);
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.body.contains("wrong user name or password"), "{}", r.body);
    assert!(r.body.contains("value=\"ann\""), "{}", r.body);
    assert!(r.header("set-cookie").is_none());
    // A form without its fields is a 400 page, not a crash.
    assert_eq!(post_form(addr, "/login", None, &[("user", "ann")]).status, 400);

    // The right one: a cookie, the dashboard, and /login now goes there.
    let (cookie, csrf) = login(addr, "ann", "correct horse battery");
    assert_eq!(
        get(addr, "/login", Some(&cookie)).header("location").as_deref(),
        Some("/")
    );
    let r = get(addr, "/", Some(&cookie));
    assert!(r.body.contains("No VMs yet"), "{}", r.body);
    assert_eq!(get(addr, "/schedules", Some(&cookie)).status, 200);

    // Our files are served with a cache policy, and unknown pages are HTML 404s.
    let js = get(addr, "/static/corral.js", None);
    assert_eq!(js.status, 200);
    assert!(js.header("content-type").unwrap().contains("javascript"));
    assert!(js.header("cache-control").unwrap().contains("max-age"));
    assert!(r.body.contains("/static/corral.js?v="), "pages link the versioned file");
    assert_eq!(get(addr, "/static/nope.js", None).status, 404);
    let r = get(addr, "/no/such/page", Some(&cookie));
    assert_eq!(r.status, 404);
    assert!(r.header("content-type").unwrap().starts_with("text/html"), "{}", r.head);
    assert_security_headers(&r);
    // The API keeps its JSON answers.
    assert_eq!(get(addr, "/api/v1/nope", None).json()["kind"], "not-found");

    // Logging out needs the token too, and ends the session.
    assert_eq!(post_form(addr, "/logout", Some(&cookie), &[("csrf", "0")]).status, 403);
    let r = post_form(addr, "/logout", Some(&cookie), &[("csrf", &csrf)]);
    assert_eq!((r.status, r.header("location").as_deref()), (303, Some("/login")));
    assert!(r.header("set-cookie").unwrap().contains("Max-Age=0"));
    assert_eq!(get(addr, "/", Some(&cookie)).status, 303);

    // Failed logins: after the free ones, a 429 page with the wait, even with the password.
    for _ in 0..6 {
        post_form(addr, "/login", None, &[("user", "ann"), ("password", "guess")]);
    }
    let r = post_form(
        addr,
        "/login",
        None,
        &[("user", "ann"), ("password", "correct horse battery")],
    );
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(r.body.contains("try again in"), "{}", r.body);
}

#[test]
fn dashboard_vm_page_and_forms_on_a_real_guest() {
    let env = Env::new();
    env.create_guest("web", "");
    // A description with markup: it must show as text, never as markup.
    let spec = env.dir_path().join("xss.toml");
    std::fs::write(
        &spec,
        "name = \"xss\"\ndescription = \"<script>alert(1)</script> & \\\"quoted\\\"\"\ntags = [\"lab\", \"db-1\"]\n[[disks]]\nsize = \"16M\"\n",
    )
    .unwrap();
    env.ok(&["vm", "define", spec.to_str().unwrap()]);
    add_user(&env, "ann", "operator", "correct horse battery");
    add_user(&env, "vic", "viewer", "another long password");
    let addr = start_server(&env);
    let (cookie, csrf) = login(addr, "ann", "correct horse battery");

    // The dashboard lists both VMs with state, tags, vCPUs and memory; markup is escaped.
    let r = get(addr, "/", Some(&cookie));
    assert_security_headers(&r);
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    for want in [
        "href=\"/vms/web\"",
        "href=\"/vms/xss\"",
        "192 MiB",
        "db-1",
        "state-stopped",
    ] {
        assert!(r.body.contains(want), "{want} missing: {}", r.body);
    }
    assert!(!r.body.contains("<script>alert"), "unescaped: {}", r.body);
    assert!(
        r.body
            .contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;quoted&quot;"),
        "{}",
        r.body
    );
    assert!(r.body.contains("value=\"start\""), "an operator gets buttons");
    // No inline script: everything comes from our file (the CSP forbids the rest).
    assert_eq!(r.body.matches("<script").count(), 1, "{}", r.body);
    // The filter works without JavaScript too.
    let f = get(addr, "/?q=db-1", Some(&cookie));
    assert!(f.body.contains("href=\"/vms/xss\"") && !f.body.contains("href=\"/vms/web\""));

    // A form post without the CSRF field, or with a wrong one: 403 and nothing happens.
    let r = post_form(addr, "/vms/web/action", Some(&cookie), &[("action", "start")]);
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("CSRF"), "{}", r.body);
    let wrong = "0".repeat(64);
    let r = post_form(
        addr,
        "/vms/web/action",
        Some(&cookie),
        &[("action", "start"), ("csrf", &wrong)],
    );
    assert_eq!(r.status, 403);
    // Another user's token is no good either.
    let (vcookie, vcsrf) = login(addr, "vic", "another long password");
    let r = post_form(
        addr,
        "/vms/web/action",
        Some(&cookie),
        &[("action", "start"), ("csrf", &vcsrf)],
    );
    assert_eq!(r.status, 403);
    assert_eq!(env.state("web"), "stopped");

    // A viewer sees no buttons, and a post with their own valid token is still refused.
    let r = get(addr, "/", Some(&vcookie));
    assert!(r.body.contains("href=\"/vms/web\""));
    assert!(!r.body.contains("name=\"action\""), "{}", r.body);
    let r = post_form(
        addr,
        "/vms/web/action",
        Some(&vcookie),
        &[("action", "start"), ("csrf", &vcsrf)],
    );
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("operator"), "{}", r.body);
    assert!(!get(addr, "/vms/web", Some(&vcookie)).body.contains("name=\"action\""));
    assert_eq!(env.state("web"), "stopped");

    // The form starts the real guest and comes back to the dashboard.
    let r = post_form(
        addr,
        "/vms/web/action",
        Some(&cookie),
        &[("action", "start"), ("csrf", &csrf), ("from", "dashboard")],
    );
    assert_eq!(
        (r.status, r.header("location").as_deref()),
        (303, Some("/")),
        "{}",
        r.body
    );
    assert_eq!(env.state("web"), "running");
    env.wait_ready("web", 1);
    let r = get(addr, "/", Some(&cookie));
    assert!(r.body.contains("state-running"), "{}", r.body);
    // Starting again: the engine's refusal as a page with its status.
    let r = post_form(
        addr,
        "/vms/web/action",
        Some(&cookie),
        &[("action", "start"), ("csrf", &csrf)],
    );
    assert_eq!(r.status, 409, "{}", r.body);

    // The VM page: definition, the disk's chain, the serial console's last lines.
    let r = get(addr, "/vms/web", Some(&cookie));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_security_headers(&r);
    for want in [
        "disk0",
        "disk0.qcow2",
        "qcow2",
        "CORRAL-GUEST-READY",
        "name = &quot;web&quot;",
        "Force stop",
    ] {
        assert!(r.body.contains(want), "{want} missing from the VM page: {}", r.body);
    }
    let r = get(addr, "/vms/xss", Some(&cookie));
    assert!(
        !r.body.contains("<script>alert") && r.body.contains("&lt;script&gt;"),
        "{}",
        r.body
    );
    assert_eq!(get(addr, "/vms/nosuch", Some(&cookie)).status, 404);
    assert_eq!(get(addr, "/vms/..%2Fx", Some(&cookie)).status, 400);

    // A backup from the form runs as a job and goes to the jobs page.
    let r = post_form(
        addr,
        "/vms/web/action",
        Some(&cookie),
        &[("action", "backup"), ("csrf", &csrf)],
    );
    assert_eq!(
        (r.status, r.header("location").as_deref()),
        (303, Some("/jobs")),
        "{}",
        r.body
    );
    assert_eq!(wait_job(&env, "web", "backup"), "succeeded");
    let jobs = get(addr, "/jobs", Some(&cookie));
    assert!(jobs.body.contains("state-succeeded"), "{}", jobs.body);
    assert!(jobs.body.contains("<progress"), "{}", jobs.body);
    let backup = env.json(&["backup", "list", "web"])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(get(addr, "/vms/web", Some(&cookie)).body.contains(&backup));

    // Stopping asks first (without JavaScript: a page); only the confirmed post acts.
    let r = post_form(
        addr,
        "/vms/web/action",
        Some(&cookie),
        &[("action", "kill"), ("csrf", &csrf), ("from", "vm")],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body.contains("Force stop web?") && r.body.contains("name=\"confirmed\""),
        "{}",
        r.body
    );
    assert_eq!(env.state("web"), "running");
    let r = post_form(
        addr,
        "/vms/web/action",
        Some(&cookie),
        &[
            ("action", "kill"),
            ("csrf", &csrf),
            ("from", "vm"),
            ("confirmed", "yes"),
        ],
    );
    assert_eq!(
        (r.status, r.header("location").as_deref()),
        (303, Some("/vms/web")),
        "{}",
        r.body
    );
    assert_eq!(env.state("web"), "stopped");

    // Restores: in place asks first; as a new VM makes one.
    let r = post_form(
        addr,
        "/vms/web/restore",
        Some(&cookie),
        &[("csrf", &csrf), ("backup", &backup), ("mode", "in-place")],
    );
    assert_eq!(r.status, 200);
    assert!(r.body.contains("Restore in place"), "{}", r.body);
    let r = post_form(
        addr,
        "/vms/web/restore",
        Some(&cookie),
        &[
            ("csrf", &csrf),
            ("backup", &backup),
            ("mode", "new"),
            ("as_name", "web2"),
        ],
    );
    assert_eq!(
        (r.status, r.header("location").as_deref()),
        (303, Some("/jobs")),
        "{}",
        r.body
    );
    assert_eq!(wait_job(&env, "web2", "restore"), "succeeded");
    assert_eq!(env.state("web2"), "stopped");

    // The audit log names the web user for what the forms did.
    let audit = env.json(&["audit"]);
    let did =
        |action: &str| {
            audit.as_array().unwrap().iter().any(|l| {
                l["who"] == "user ann" && l["action"] == action && l["result"].as_str().unwrap().starts_with("ok")
            })
        };
    assert!(did("start") && did("kill"), "{audit}");
    let backed_up = common::wait_for(Duration::from_secs(10), || {
        env.json(&["audit"])
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["who"] == "user ann" && l["action"] == "backup")
    });
    assert!(backed_up.is_ok(), "no audit line for the backup");
}

/// 200 VMs: one page, one table, every VM once, quickly (no per-VM requests to make).
#[test]
fn the_dashboard_stays_one_quick_page_with_200_vms() {
    let env = Env::new();
    let cfg = corral_engine::HostConfig::load_file(&env.config, true).unwrap();
    let engine = corral_engine::Engine::open(cfg).unwrap();
    let kernel = common::guest().kernel.display().to_string();
    for i in 0..200 {
        let tag = if i % 2 == 0 { "even" } else { "odd" };
        let toml =
            format!("name = \"vm{i:03}\"\ntags = [\"{tag}\"]\nmemory = \"256M\"\n[boot]\nkernel = \"{kernel}\"\n");
        engine.define_toml(&toml, None).unwrap();
    }
    add_user(&env, "ann", "operator", "correct horse battery");
    let addr = start_server(&env);
    let (cookie, _) = login(addr, "ann", "correct horse battery");
    let t = std::time::Instant::now();
    let r = get(addr, "/", Some(&cookie));
    let took = t.elapsed();
    assert_eq!(r.status, 200);
    assert_eq!(r.body.matches("<tr data-vm=").count(), 200);
    assert!(r.body.contains("200 VMs"), "the count is shown");
    eprintln!("dashboard with 200 VMs: {} KiB in {took:?}", r.body.len() / 1024);
    assert!(r.body.len() < 600 * 1024, "{} bytes", r.body.len());
    assert!(took < Duration::from_secs(5), "{took:?}");
    let odd = get(addr, "/?q=odd", Some(&cookie));
    assert_eq!(odd.body.matches("<tr data-vm=").count(), 100);
}
