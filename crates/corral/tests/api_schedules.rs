//! Scheduled jobs over the REST API (in-process server, real engine, real config file and
//! backup store; stopped VMs with small disks, no guest boots): list, add/replace with a
//! kept comment, bad entries refused with the file unchanged, roles, run now with its
//! backups, run history, delete.

mod common;
#[path = "common/http.rs"]
mod http;

use common::Env;
use http::{http, start_server};
use serde_json::json;

const CONFIG: &str = r#"
# The lab backs up at night. (This comment must survive edits from the API.)
[[schedule]]
name = "lab"
calendar = "mon..fri 22:30"
action = "backup"
tags = ["lab"]
"#;

#[test]
fn schedules_are_listed_edited_run_and_deleted() {
    let env = Env::with_config(CONFIG);
    for (vm, tag) in [("a", "lab"), ("b", "lab"), ("c", "other")] {
        env.ok(&[
            "vm",
            "create",
            vm,
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
    env.ok(&["store", "init"]);
    let t = |role: &str| env.ok(&["token", "create", "--role", role]).trim().to_string();
    let (viewer, operator, admin) = (t("viewer"), t("operator"), t("admin"));
    let addr = start_server(&env);
    let config = env.dir_path().join("corral.toml");

    let r = http(addr, "GET", "/api/v1/schedules", Some(&viewer), None);
    assert_eq!(r.status, 200, "{}", r.body);
    let list = r.json();
    assert_eq!(list[0]["spec"]["name"], "lab");
    assert!(list[0]["next_run_ms"].as_i64().unwrap() > 0, "{list}");

    // Adding: admin only; bad entries are refused, naming the problem, with the file unchanged.
    let nightly = json!({"name": "nightly", "calendar": "daily 02:00", "action": "backup", "vms": ["c"], "full": true});
    let put = |tok: &str, name: &str, body: &serde_json::Value| {
        http(
            addr,
            "PUT",
            &format!("/api/v1/schedules/{name}"),
            Some(tok),
            Some(&body.to_string()),
        )
    };
    let before = std::fs::read(&config).unwrap();
    assert_eq!(put(&operator, "nightly", &nightly).status, 403);
    let mut bad = nightly.clone();
    bad["calendar"] = json!("mon..fir 22:30");
    let r = put(&admin, "nightly", &bad);
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].as_str().unwrap().contains("fir"), "{}", r.body);
    let mut unknown = nightly.clone();
    unknown["keep_forever"] = json!(1);
    let r = put(&admin, "nightly", &unknown);
    assert_eq!(r.status, 400);
    assert!(r.body.contains("keep_forever"), "{}", r.body);
    assert_eq!(put(&admin, "other", &nightly).status, 400, "name differs from the URL");
    assert_eq!(put(&admin, "..%2Fx", &nightly).status, 400);
    assert_eq!(std::fs::read(&config).unwrap(), before, "nothing written");

    let r = put(&admin, "nightly", &nightly);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["spec"]["calendar"], "daily 02:00");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(
        text.contains("This comment must survive") && text.contains("name = \"nightly\""),
        "{text}"
    );
    assert_eq!(
        env.json(&["schedule", "list"]).as_array().unwrap().len(),
        2,
        "the CLI sees it"
    );

    // Run now: operator; its backups are made and the run is recorded with each target.
    assert_eq!(
        http(addr, "POST", "/api/v1/schedules/lab/run", Some(&viewer), None).status,
        403
    );
    assert_eq!(
        http(addr, "POST", "/api/v1/schedules/nosuch/run", Some(&operator), None).status,
        404
    );
    let r = http(addr, "POST", "/api/v1/schedules/lab/run", Some(&operator), None);
    assert_eq!(r.status, 202, "{}", r.body);
    let mut runs = serde_json::Value::Null;
    let done = common::wait_for(std::time::Duration::from_secs(60), || {
        runs = http(addr, "GET", "/api/v1/schedules/lab/runs", Some(&viewer), None).json();
        runs[0]["outcome"] != "running" && !runs[0].is_null()
    });
    assert!(done.is_ok(), "{runs}");
    assert_eq!(runs[0]["outcome"], "ok", "{runs}");
    assert_eq!(runs[0]["manual"], true);
    let targets: Vec<&str> = runs[0]["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["target"].as_str().unwrap())
        .collect();
    assert_eq!(targets, ["a", "b"]);
    let backed: Vec<String> = env
        .json(&["backup", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["vm"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(backed, ["a", "b"], "only the lab VMs");
    let list = http(addr, "GET", "/api/v1/schedules", Some(&viewer), None).json();
    assert_eq!(list[0]["last_run"]["outcome"], "ok", "{list}");

    // Delete: admin only; the entry goes, the comment stays.
    assert_eq!(
        http(addr, "DELETE", "/api/v1/schedules/nightly", Some(&operator), None).status,
        403
    );
    assert_eq!(
        http(addr, "DELETE", "/api/v1/schedules/nosuch", Some(&admin), None).status,
        404
    );
    assert_eq!(
        http(addr, "DELETE", "/api/v1/schedules/nightly", Some(&admin), None).status,
        204
    );
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(
        !text.contains("nightly") && text.contains("This comment must survive"),
        "{text}"
    );

    // Every change is in the audit log.
    let audit = env.json(&["audit"]);
    for action in ["schedule-put", "schedule-run", "schedule-delete"] {
        assert!(
            audit.as_array().unwrap().iter().any(|l| l["action"] == action),
            "{action}: {audit}"
        );
    }
}
