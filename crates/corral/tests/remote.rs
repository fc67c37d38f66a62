//! `--remote URL`: the same commands against a real `corral serve` (in this process, real
//! engine, real QEMU guest) print what they print locally, and fail the same way.

mod common;
#[path = "common/http.rs"]
mod http;

use std::process::Output;

use common::Env;

fn remote(env: &Env, url: &str, token: Option<&str>, args: &[&str]) -> Output {
    let mut c = env.cmd();
    c.arg("--remote").arg(url).args(args).env_remove("CORRAL_TOKEN");
    if let Some(t) = token {
        c.env("CORRAL_TOKEN", t);
    }
    c.output().unwrap()
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// A VM's status without what moves by itself between two looks.
fn steady(mut v: serde_json::Value) -> serde_json::Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("uptime_seconds");
    }
    v
}

#[test]
fn remote_commands_print_what_local_ones_print() {
    let env = Env::with_config("[metrics]\ninterval = \"1s\"\n");
    env.create_guest("rm", "");
    env.create_guest("other", "");
    env.ok(&["store", "init"]);
    let op = env.ok(&["token", "create", "--role", "operator"]).trim().to_string();
    let viewer = env.ok(&["token", "create", "--role", "viewer"]).trim().to_string();
    let url = format!("http://{}", http::start_server(&env));
    let r = |args: &[&str]| remote(&env, &url, Some(&op), args);

    // Reading: byte for byte the same, as a table and as JSON.
    assert_eq!(text(&r(&["vm", "list"])), env.ok(&["vm", "list"]));
    assert_eq!(json(&r(&["vm", "list", "--json"])), env.json(&["vm", "list"]));
    assert_eq!(text(&r(&["vm", "show", "rm"])), env.ok(&["vm", "show", "rm"]));
    assert_eq!(
        json(&r(&["vm", "show", "rm", "--json"])),
        env.json(&["vm", "show", "rm"])
    );

    // Acting: the server does it, the client says it as the local command would.
    let out = r(&["vm", "start", "rm"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text(&out).starts_with("started rm (pid "), "{}", text(&out));
    env.wait_ready("rm", 1);
    assert_eq!(env.state("rm"), "running");
    assert_eq!(
        steady(json(&r(&["vm", "status", "rm", "--json"]))),
        steady(env.json(&["vm", "status", "rm"]))
    );

    // A backup is followed as a job to its end; the report is the engine's.
    let out = r(&["backup", "run", "rm", "--json"]);
    let reports = json(&out);
    let local = env.json(&["backup", "list", "rm"]);
    assert_eq!(reports[0]["id"], local[0]["id"], "{reports}");
    assert_eq!(reports[0]["vm"], "rm");
    let progress = String::from_utf8_lossy(&out.stderr);
    assert!(
        progress.contains("\"event\":\"job\""),
        "job progress on stderr: {progress}"
    );
    let out = r(&["backup", "run", "--all"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = text(&out);
    assert!(
        said.contains("backed up other as ") && said.contains("backed up rm as "),
        "{said}"
    );
    assert_eq!(json(&r(&["backup", "list", "--json"])), env.json(&["backup", "list"]));
    assert_eq!(text(&r(&["backup", "list"])), env.ok(&["backup", "list"]));
    assert_eq!(json(&r(&["job", "list", "--json"])), env.json(&["job", "list"]));

    // Failing the same way: same message and exit code as locally.
    let local = env.run(&["vm", "start", "nosuch"]);
    let far = r(&["vm", "start", "nosuch"]);
    assert_eq!(far.status.code(), local.status.code());
    assert_eq!(far.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&far.stderr),
        String::from_utf8_lossy(&local.stderr)
    );
    let far = r(&["vm", "start", "rm"]);
    assert_eq!(far.status.code(), Some(3), "{}", String::from_utf8_lossy(&far.stderr));
    let far = r(&["backup", "run", "--tag", "nosuchtag"]);
    assert_eq!(far.status.code(), Some(2));

    // Metrics: the daemon's latest pass (every second here), printed as locally.
    let mut m = serde_json::Value::Null;
    common::wait_for(std::time::Duration::from_secs(20), || {
        m = json(&remote(&env, &url, Some(&viewer), &["metrics", "rm", "--json"]));
        m["vms"][0]["state"] == "running" && m["vms"][0]["cpu"].is_object()
    })
    .unwrap_or_else(|_| panic!("the daemon's metrics never showed rm running: {m}"));
    assert_eq!(m["vms"].as_array().map(Vec::len), Some(1), "{m}");
    assert_eq!(m["vms"][0]["name"], "rm");
    assert_eq!(m["vms"][0]["state"], "running");
    assert!(m["vms"][0]["cpu"]["seconds_total"].as_f64().unwrap() > 0.0, "{m}");
    assert!(text(&r(&["metrics"])).starts_with("host: "));
    let out = r(&["metrics", "nosuch"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("nosuch"));

    // A viewer may read but not act; no token, or a wrong one, is a clear refusal.
    assert!(remote(&env, &url, Some(&viewer), &["vm", "list"]).status.success());
    let out = remote(&env, &url, Some(&viewer), &["vm", "stop", "rm"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("operator role"),
        "{out:?}"
    );
    let out = remote(&env, &url, None, &["vm", "list"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("CORRAL_TOKEN"), "{out:?}");
    let out = remote(&env, &url, Some("corral_wrong"), &["vm", "list"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown or revoked token"),
        "{out:?}"
    );
    // A command that needs the server's files says so.
    let out = r(&["vm", "console", "rm"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not available with --remote"),
        "{out:?}"
    );

    let out = r(&["vm", "stop", "rm", "--json"]);
    let stopped = json(&out);
    assert_eq!(stopped["name"], "rm");
    assert_eq!(env.state("rm"), "stopped");

    // Snapshots, clones, deletes and schedules, the same way.
    let admin = env.ok(&["token", "create", "--role", "admin"]).trim().to_string();
    let a = |args: &[&str]| remote(&env, &url, Some(&admin), args);
    let out = a(&["snapshot", "create", "rm", "s1", "--description", "before"]);
    assert_eq!(text(&out), "took snapshot s1 of rm (disks only)\n", "{out:?}");
    assert_eq!(
        text(&a(&["snapshot", "list", "rm"])),
        env.ok(&["snapshot", "list", "rm"])
    );
    assert_eq!(
        json(&a(&["snapshot", "list", "rm", "--json"])),
        env.json(&["snapshot", "list", "rm"])
    );
    let out = a(&["snapshot", "revert", "rm", "s1"]);
    assert_eq!(text(&out), "rm is back at snapshot s1\n", "{out:?}");
    assert_eq!(
        text(&a(&["snapshot", "delete", "rm", "s1"])),
        "deleted snapshot s1 of rm\n"
    );
    assert_eq!(env.json(&["snapshot", "list", "rm"]), serde_json::json!([]));
    // The revert dropped the backup bitmap (it tracked changes since the last backup, not since
    // the snapshot): the next backup reads everything again instead of missing changes.
    let next = env.json(&["backup", "run", "rm"]);
    assert!(next[0]["kind"] == "full" || next[0]["fell_back"].is_string(), "{next}");
    let out = a(&["vm", "clone", "rm", "rm2", "--linked", "--json"]);
    let clone = json(&out);
    assert_eq!(
        (clone["name"].as_str(), clone["linked"].as_bool()),
        (Some("rm2"), Some(true))
    );
    assert_eq!(env.state("rm2"), "stopped", "the server made it");
    let out = a(&["vm", "delete", "rm2"]);
    assert!(text(&out).starts_with("deleted VM rm2\n"), "{out:?}");
    assert_eq!(text(&a(&["schedule", "list"])), env.ok(&["schedule", "list"]));

    // A restore as a new VM: a job on the server, the local report here.
    let id = env.json(&["backup", "list", "rm"])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = a(&["backup", "restore", &id, "--as", "rm3"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text(&out).starts_with(&format!("restored backup {id} as VM rm3\n")),
        "{out:?}"
    );
    assert_eq!(env.state("rm3"), "stopped");
}
