//! `corral schedule list/run/check` through the real binary, with a real config file and a
//! real backup store (stopped VMs with small qcow2 disks: no guest boots).

mod common;

use common::Env;

const SCHEDULES: &str = r#"
# Lab machines every weekday evening
[[schedule]]
name = "lab"
calendar = "mon..fri 22:30"
action = "backup"
tags = ["lab"]

[[schedule]]
name = "prune"
calendar = "sun 04:00"
action = "prune"
all = true
keep_last = 1

[[schedule]]
name = "gc"
calendar = "sun 05:00"
action = "gc"
enabled = false

[[schedule]]
name = "nobody"
calendar = "daily 01:00"
action = "verify"
tags = ["nobody"]
"#;

fn vm(env: &Env, name: &str, tag: &str) {
    env.ok(&[
        "vm",
        "create",
        name,
        "--disk",
        "8M",
        "--display",
        "none",
        "--network",
        "none",
        "--tag",
        tag,
    ]);
}

#[test]
fn list_run_and_check_against_a_real_store() {
    let env = Env::with_config(SCHEDULES);
    vm(&env, "a", "lab");
    vm(&env, "b", "lab");
    vm(&env, "c", "other");

    let table = env.ok(&["schedule", "list"]);
    let header = table.lines().next().unwrap();
    for col in ["NAME", "CALENDAR", "ACTION", "SELECTION", "NEXT", "LAST", "RESULT"] {
        assert!(header.contains(col), "{table}");
    }
    assert!(table.contains("tags: lab") && table.contains("disabled"), "{table}");
    let list = env.json(&["schedule", "list"]);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 4);
    assert_eq!(list[0]["spec"]["name"], "lab");
    assert!(list[0]["next_run_ms"].as_i64().unwrap() > 0);
    assert!(list[0].get("last_run").is_none() && list[2].get("next_run_ms").is_none());

    // Run the backup schedule by hand: both lab VMs, not c.
    let out = env.ok(&["schedule", "run", "lab"]);
    assert!(
        out.contains("schedule lab (backup): ok") && out.contains("2 of 2 backed up"),
        "{out}"
    );
    assert!(out.contains("  a: ok, full") && out.contains("(backup "), "{out}");
    let backups = env.json(&["backup", "list"]);
    let vms: Vec<&str> = backups
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["vm"].as_str().unwrap())
        .collect();
    assert_eq!(vms, ["a", "b"]);
    // --json: the run on stdout, the backups' job progress on stderr.
    let out = env.run(&["schedule", "run", "lab", "--json"]);
    assert!(out.status.success());
    let run: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (run["outcome"].as_str(), run["manual"].as_bool()),
        (Some("ok"), Some(true))
    );
    assert!(
        run["targets"][0]["detail"].as_str().unwrap().starts_with("incremental"),
        "{run}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"event\":\"job\""));

    let prune = env.json(&["schedule", "run", "prune"]);
    let kept: Vec<&str> = prune["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["detail"].as_str().unwrap())
        .collect();
    assert_eq!(kept, ["kept 1, removed 1", "kept 1, removed 1"]);
    // A disabled schedule still runs by hand.
    let out = env.ok(&["schedule", "run", "gc"]);
    assert!(out.contains("store: ok, freed"), "{out}");

    // A selection that matches nothing: the run fails (exit 1) and says why; it is recorded.
    let err = env.fails(&["schedule", "run", "nobody"]);
    assert!(
        err.contains("schedule nobody failed") && err.contains("no VM has the tag \"nobody\""),
        "{err}"
    );
    let list = env.json(&["schedule", "list"]);
    let outcome = |i: usize| list[i]["last_run"]["outcome"].as_str().unwrap().to_string();
    assert_eq!(
        [outcome(0), outcome(1), outcome(2), outcome(3)],
        ["ok", "ok", "ok", "failed"]
    );
    let table = env.ok(&["schedule", "list"]);
    assert!(
        table.contains("failed (by hand): selection: no VM has the tag") && table.contains("ok (by hand)"),
        "{table}"
    );

    // Unknown schedule: bad input.
    let out = env.run(&["schedule", "run", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no schedule named \"nope\""));
}

#[test]
fn check_lists_the_next_times_and_refuses_bad_expressions() {
    let env = Env::new();
    let out = env
        .cmd()
        .env("TZ", "UTC")
        .args(["schedule", "check", "daily 02:00", "--count", "3", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let c: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(c["normalized"], "02:00");
    let next: Vec<i64> = c["next_ms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(next.len(), 3);
    assert_eq!((next[1] - next[0], next[2] - next[1]), (86_400_000, 86_400_000));
    assert!(c["next"][0].as_str().unwrap().ends_with("02:00 UTC"), "{c}");

    let out = env.ok(&["schedule", "check", "mon..fri 22:30"]);
    assert_eq!(out.lines().count(), 6, "a line and five times: {out}");

    // Bad input: exit 2, what is wrong, and no config needed for it.
    let out = env
        .cmd()
        .env("CORRAL_CONFIG", "/nonexistent/corral.toml")
        .args(["schedule", "check", "mon..fir 22:30"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`mon..fir 22:30`: unknown day `fir`; days are mon tue wed thu fri sat sun"),
        "{err}"
    );
    assert!(env.run(&["schedule", "check", "daily", "--count", "0"]).status.code() == Some(2));
}

#[test]
fn a_bad_schedule_in_the_config_stops_every_command_with_its_line() {
    let env = Env::with_config("[[schedule]]\nname = \"x\"\ncalendar = \"daily 25:00\"\naction = \"gc\"\n");
    let out = env.run(&["vm", "list"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("[[schedule]] \"x\" at line 5") && err.contains("hour 25 is out of range 0-23"),
        "{err}"
    );
}
