//! The REST API's management routes in-process on port 0, with the real engine and QEMU:
//! define/create/edit (If-Match)/delete, snapshots, clones, backup show/restore/verify/prune,
//! store gc; roles, names and bodies checked on every new route; the OpenAPI document.

mod common;
#[path = "common/http.rs"]
mod http;

use std::net::SocketAddr;
use std::time::Duration;

use common::Env;
use http::{http, request, start_server, Reply};
use serde_json::{json, Value};

struct Tokens {
    viewer: String,
    operator: String,
    admin: String,
}

fn tokens(env: &Env) -> Tokens {
    let t = |role: &str| {
        env.ok(&["token", "create", "--role", role, "--label", role])
            .trim()
            .to_string()
    };
    Tokens {
        viewer: t("viewer"),
        operator: t("operator"),
        admin: t("admin"),
    }
}

fn post(addr: SocketAddr, path: &str, token: &str, body: Value) -> Reply {
    http(addr, "POST", path, Some(token), Some(&body.to_string()))
}

/// Follows a `202` answer's job to its end; its final state.
fn finish_job(addr: SocketAddr, token: &str, accepted: &Reply) -> Value {
    assert_eq!(accepted.status, 202, "{}", accepted.body);
    let id = accepted.json()["job"]["id"].as_i64().unwrap();
    assert_eq!(
        accepted.header("location").as_deref(),
        Some(format!("/api/v1/jobs/{id}").as_str())
    );
    let mut job = Value::Null;
    let done = common::wait_for(Duration::from_secs(120), || {
        job = http(addr, "GET", &format!("/api/v1/jobs/{id}"), Some(token), None).json();
        job["state"] != "running"
    });
    assert!(done.is_ok(), "job {id} still runs: {job}");
    job
}

/// A 400 whose message names `what`.
fn bad(r: &Reply, what: &str) {
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.json()["error"].as_str().unwrap().contains(what), "{what}: {}", r.body);
}

#[test]
fn define_create_edit_delete_with_if_match() {
    let env = Env::new();
    let t = tokens(&env);
    let addr = start_server(&env);
    let before = common::tree_digest(&env.data_dir().join("vms"));

    // Bad specs change nothing and name the field.
    let r = post(
        addr,
        "/api/v1/vms",
        &t.admin,
        json!({"spec": {"name": "d1", "cpuz": 2}}),
    );
    bad(&r, "cpuz");
    let r = post(
        addr,
        "/api/v1/vms",
        &t.admin,
        json!({"spec": {"name": "d1", "disks": [{"sise": "64M"}]}}),
    );
    bad(&r, "disks[0]");
    bad(&r, "sise");
    bad(
        &post(addr, "/api/v1/vms", &t.admin, json!({"spec": {"name": "../x"}})),
        "name",
    );
    bad(
        &post(addr, "/api/v1/vms", &t.admin, json!({"spek": {"name": "d1"}})),
        "spek",
    );
    bad(
        &post(
            addr,
            "/api/v1/vms",
            &t.admin,
            json!({"create": {"name": "c1", "cpuz": 1}}),
        ),
        "cpuz",
    );
    bad(
        &post(
            addr,
            "/api/v1/vms",
            &t.admin,
            json!({"create": {"name": "c1", "cdrom": "rel.iso"}}),
        ),
        "create.cdrom",
    );
    assert_eq!(http(addr, "POST", "/api/v1/vms", Some(&t.admin), Some("{")).status, 400);
    assert_eq!(common::tree_digest(&env.data_dir().join("vms")), before);
    assert_eq!(env.json(&["vm", "list"]), json!([]));

    // Defining needs the admin role.
    let spec = json!({"spec": {"name": "d1", "cpus": 2, "memory": "128M", "disks": [{"size": "32M"}]}});
    assert_eq!(post(addr, "/api/v1/vms", &t.viewer, spec.clone()).status, 403);
    assert_eq!(post(addr, "/api/v1/vms", &t.operator, spec.clone()).status, 403);
    let r = post(addr, "/api/v1/vms", &t.admin, spec.clone());
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.header("location").as_deref(), Some("/api/v1/vms/d1"));
    assert_eq!(r.header("etag").as_deref(), Some("\"1\""));
    assert_eq!(r.json()["cpus"], 2);
    assert!(r.json()["disks"][0]["path"].as_str().unwrap().ends_with(".qcow2"));
    assert_eq!(env.json(&["vm", "list"])[0]["name"], "d1", "the CLI sees it");
    assert_eq!(post(addr, "/api/v1/vms", &t.admin, spec).status, 409);

    // Create from options, as `corral vm create`.
    let r = post(
        addr,
        "/api/v1/vms",
        &t.admin,
        json!({"create": {"name": "c1", "disks": ["32M"], "tags": ["web"], "display": "none"}}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["tags"], json!(["web"]));
    assert_eq!(env.json(&["vm", "show", "c1"])["spec"]["display"]["mode"], "none");

    // Edit: If-Match is required (428), must be current (412 with the current ETag).
    let shown = http(addr, "GET", "/api/v1/vms/d1", Some(&t.viewer), None);
    assert_eq!(shown.header("etag").as_deref(), Some("\"1\""));
    let mut new_spec = shown.json()["spec"].clone();
    new_spec["cpus"] = json!(3);
    let put = |if_match: Option<&str>, token: &str, body: &Value| {
        let auth = format!("Bearer {token}");
        let mut h = vec![("Authorization", auth.as_str())];
        if let Some(m) = if_match {
            h.push(("If-Match", m));
        }
        request(addr, "PUT", "/api/v1/vms/d1", &h, Some(&body.to_string()))
    };
    let r = put(None, &t.admin, &new_spec);
    assert_eq!(
        (r.status, r.json()["kind"].as_str()),
        (428, Some("precondition-required"))
    );
    assert_eq!(put(Some("\"1\""), &t.operator, &new_spec).status, 403);
    let r = put(Some("\"7\""), &t.admin, &new_spec);
    assert_eq!(
        (r.status, r.json()["kind"].as_str()),
        (412, Some("stale")),
        "{}",
        r.body
    );
    assert_eq!(r.header("etag").as_deref(), Some("\"1\""));
    bad(&put(Some("1"), &t.admin, &new_spec), "If-Match");
    let mut unknown = new_spec.clone();
    unknown["display"]["vnc_prot"] = json!(5990);
    let r = put(Some("\"1\""), &t.admin, &unknown);
    bad(&r, "display.vnc_prot");
    let mut renamed = new_spec.clone();
    renamed["name"] = json!("d2");
    bad(&put(Some("\"1\""), &t.admin, &renamed), "name cannot change");
    let r = put(Some("\"1\""), &t.admin, &new_spec);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("etag").as_deref(), Some("\"2\""));
    assert_eq!(r.json()["cpus"], 3);
    assert_eq!(env.json(&["vm", "show", "d1"])["generation"], 2);
    assert_eq!(env.json(&["vm", "show", "d1"])["spec"]["cpus"], 3);
    // The old ETag is stale now.
    assert_eq!(put(Some("\"1\""), &t.admin, &new_spec).status, 412);

    // Delete: If-Match honoured when given; admin only.
    let del = |token: &str, if_match: Option<&str>| {
        let auth = format!("Bearer {token}");
        let mut h = vec![("Authorization", auth.as_str())];
        if let Some(m) = if_match {
            h.push(("If-Match", m));
        }
        request(addr, "DELETE", "/api/v1/vms/d1", &h, None)
    };
    assert_eq!(del(&t.operator, None).status, 403);
    assert_eq!(del(&t.admin, Some("\"1\"")).status, 412);
    let r = del(&t.admin, Some("\"2\""));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["name"], "d1");
    assert!(!r.json()["removed"].as_array().unwrap().is_empty());
    assert_eq!(http(addr, "GET", "/api/v1/vms/d1", Some(&t.viewer), None).status, 404);
    assert_eq!(del(&t.admin, None).status, 404);

    // The audit log has every change, refused or not.
    let log = http(addr, "GET", "/api/v1/audit", Some(&t.admin), None).json();
    let has = |action: &str, result: &str| {
        log.as_array()
            .unwrap()
            .iter()
            .any(|l| l["action"] == action && l["result"].as_str().unwrap().starts_with(result))
    };
    assert!(has("define", "ok") && has("create", "ok") && has("edit", "ok"), "{log}");
    assert!(has("edit", "error") && has("delete", "ok"), "{log}");
}

#[test]
fn names_roles_and_bodies_on_every_new_route() {
    let env = Env::new();
    env.create_guest("web", "");
    let t = tokens(&env);
    let addr = start_server(&env);
    let id = "20240101T000000.000Z-0000abcd";
    // (method, path, body): every new route that takes a name, with `../x` in it.
    let named: Vec<(&str, String, Value)> = vec![
        ("PUT", "/api/v1/vms/..%2Fx".into(), json!({"name": "x"})),
        ("DELETE", "/api/v1/vms/..%2Fx".into(), Value::Null),
        ("GET", "/api/v1/vms/..%2Fx/snapshots".into(), Value::Null),
        ("POST", "/api/v1/vms/..%2Fx/snapshots".into(), json!({"name": "s"})),
        ("POST", "/api/v1/vms/web/snapshots".into(), json!({"name": "../x"})),
        ("GET", "/api/v1/vms/web/snapshots/..%2Fx".into(), Value::Null),
        ("DELETE", "/api/v1/vms/web/snapshots/..%2Fx".into(), Value::Null),
        ("POST", "/api/v1/vms/web/snapshots/..%2Fx/revert".into(), Value::Null),
        ("POST", "/api/v1/vms/..%2Fx/clone".into(), json!({"name": "c"})),
        ("POST", "/api/v1/vms/web/clone".into(), json!({"name": "../x"})),
        ("GET", "/api/v1/backups/..%2Fx".into(), Value::Null),
        ("POST", "/api/v1/backups/..%2Fx/restore".into(), Value::Null),
        ("POST", format!("/api/v1/backups/{id}/restore"), json!({"as": "../x"})),
        ("POST", "/api/v1/backups/verify".into(), json!({"ids": ["../x"]})),
        ("POST", "/api/v1/backups/verify".into(), json!({"vms": ["../x"]})),
        (
            "POST",
            "/api/v1/backups/prune".into(),
            json!({"vms": ["../x"], "keep_last": 1}),
        ),
    ];
    for (method, path, body) in &named {
        let body = (!body.is_null()).then(|| body.to_string());
        let r = request(
            addr,
            method,
            path,
            &[("Authorization", &format!("Bearer {}", t.admin)), ("If-Match", "\"1\"")],
            body.as_deref(),
        );
        assert_eq!(r.status, 400, "{method} {path}: {}", r.body);
    }
    // A viewer may not change anything.
    let mutating: Vec<(&str, String, Value)> = vec![
        ("POST", "/api/v1/vms".into(), json!({"create": {"name": "v"}})),
        ("PUT", "/api/v1/vms/web".into(), json!({"name": "web"})),
        ("DELETE", "/api/v1/vms/web".into(), Value::Null),
        ("POST", "/api/v1/vms/web/snapshots".into(), json!({"name": "s"})),
        ("DELETE", "/api/v1/vms/web/snapshots/s".into(), Value::Null),
        ("POST", "/api/v1/vms/web/snapshots/s/revert".into(), Value::Null),
        ("POST", "/api/v1/vms/web/clone".into(), json!({"name": "c"})),
        ("POST", format!("/api/v1/backups/{id}/restore"), json!({"as": "r"})),
        (
            "POST",
            format!("/api/v1/backups/{id}/restore"),
            json!({"in_place": true}),
        ),
        ("POST", "/api/v1/backups/verify".into(), json!({"all": true})),
        (
            "POST",
            "/api/v1/backups/prune".into(),
            json!({"all": true, "keep_last": 1}),
        ),
        ("POST", "/api/v1/store/gc".into(), Value::Null),
    ];
    for (method, path, body) in &mutating {
        let body = (!body.is_null()).then(|| body.to_string());
        let r = request(
            addr,
            method,
            path,
            &[
                ("Authorization", &format!("Bearer {}", t.viewer)),
                ("If-Match", "\"1\""),
            ],
            body.as_deref(),
        );
        assert_eq!(r.status, 403, "{method} {path}: {}", r.body);
    }
    // Unknown fields are named; bad selections are explained.
    bad(
        &post(
            addr,
            "/api/v1/vms/web/snapshots",
            &t.operator,
            json!({"name": "s", "memroy": false}),
        ),
        "memroy",
    );
    bad(
        &post(
            addr,
            "/api/v1/vms/web/clone",
            &t.admin,
            json!({"name": "c", "linkd": true}),
        ),
        "linkd",
    );
    bad(
        &post(
            addr,
            &format!("/api/v1/backups/{id}/restore"),
            &t.admin,
            json!({"inplace": true}),
        ),
        "inplace",
    );
    bad(&post(addr, "/api/v1/backups/verify", &t.operator, json!({})), "all");
    bad(
        &post(addr, "/api/v1/backups/prune", &t.operator, json!({"all": true})),
        "keep_last",
    );
    bad(
        &post(
            addr,
            "/api/v1/backups/prune",
            &t.operator,
            json!({"all": true, "keep_lats": 1}),
        ),
        "keep_lats",
    );
    // Well-formed but unknown: 404s.
    assert_eq!(
        http(addr, "GET", &format!("/api/v1/backups/{id}"), Some(&t.viewer), None).status,
        404
    );
    assert_eq!(
        http(addr, "GET", "/api/v1/vms/web/snapshots/nope", Some(&t.viewer), None).status,
        404
    );
    assert_eq!(
        http(
            addr,
            "DELETE",
            "/api/v1/vms/web/snapshots/nope",
            Some(&t.operator),
            None
        )
        .status,
        404
    );
    assert_eq!(
        post(addr, "/api/v1/vms/nosuch/clone", &t.admin, json!({"name": "c"})).status,
        404
    );
    assert_eq!(
        env.json(&["vm", "list"]).as_array().unwrap().len(),
        1,
        "nothing was made"
    );

    // The OpenAPI document: served without credentials, the same as the committed copy, and
    // every path in it is routed (an unauthenticated call gets 401, not 404 or 405).
    let r = http(addr, "GET", "/api/v1/openapi.json", None, None);
    assert_eq!(r.status, 200);
    let committed =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/api/openapi.json"))
            .unwrap();
    assert_eq!(
        r.body, committed,
        "regenerate: UPDATE_OPENAPI=1 cargo test -p corral-server openapi"
    );
    let doc = r.json();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let concrete = path
            .replace("{name}", "web")
            .replace("{snap}", "s")
            .replace("{id}", "1")
            .replace("{action}", "start");
        for method in item.as_object().unwrap().keys() {
            let r = http(addr, &method.to_uppercase(), &concrete, None, None);
            assert!(
                ![404, 405].contains(&r.status),
                "{method} {path} is documented but not routed: {}",
                r.status
            );
        }
    }
}

#[test]
fn snapshots_clones_backups_and_restores_on_the_real_guest() {
    let env = Env::new();
    env.create_guest("web", "");
    let t = tokens(&env);
    let addr = start_server(&env);
    let (op, admin, viewer) = (t.operator.as_str(), t.admin.as_str(), t.viewer.as_str());

    // A stopped VM's snapshot is made at once: 201 with its place.
    let r = post(
        addr,
        "/api/v1/vms/web/snapshots",
        op,
        json!({"name": "cold", "description": "before boot"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.header("location").as_deref(), Some("/api/v1/vms/web/snapshots/cold"));
    assert_eq!(
        (r.json()["name"].as_str(), r.json()["memory"].as_bool()),
        (Some("cold"), Some(false))
    );
    bad(
        &post(addr, "/api/v1/vms/web/snapshots", op, json!({"name": "cold"})),
        "already exists",
    );
    let list = http(addr, "GET", "/api/v1/vms/web/snapshots", Some(viewer), None).json();
    assert_eq!(list[0]["description"], "before boot");
    assert_eq!(env.json(&["snapshot", "list", "web"]), list, "the CLI's JSON");
    let r = http(addr, "POST", "/api/v1/vms/web/snapshots/cold/revert", Some(op), None);
    assert_eq!((r.status, r.json()["name"].as_str()), (200, Some("cold")), "{}", r.body);

    // Clones: linked (from the snapshot) at once, full as a job.
    let r = post(
        addr,
        "/api/v1/vms/web/clone",
        admin,
        json!({"name": "lnk", "linked": true, "from_snapshot": "cold"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.header("location").as_deref(), Some("/api/v1/vms/lnk"));
    assert_eq!(r.json()["linked"], true);
    let r = post(addr, "/api/v1/vms/web/clone", admin, json!({"name": "full"}));
    let job = finish_job(addr, viewer, &r);
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["kind"], "clone");
    assert_eq!(http(addr, "GET", "/api/v1/vms/full", Some(viewer), None).status, 200);
    assert_eq!(
        post(addr, "/api/v1/vms/web/clone", admin, json!({"name": "full"})).status,
        409
    );

    // A running VM's snapshot with memory, and a revert to it, are jobs.
    let r = http(addr, "POST", "/api/v1/vms/web/start", Some(op), None);
    assert_eq!(r.status, 200, "{}", r.body);
    env.wait_ready("web", 1);
    let r = post(addr, "/api/v1/vms/web/snapshots", op, json!({"name": "hot"}));
    let job = finish_job(addr, viewer, &r);
    assert_eq!(
        (job["state"].as_str(), job["kind"].as_str()),
        (Some("succeeded"), Some("snapshot")),
        "{job}"
    );
    let hot = http(addr, "GET", "/api/v1/vms/web/snapshots/hot", Some(viewer), None).json();
    assert_eq!(hot["memory"], true, "{hot}");
    let r = http(addr, "POST", "/api/v1/vms/web/snapshots/hot/revert", Some(op), None);
    let job = finish_job(addr, viewer, &r);
    assert_eq!(
        (job["state"].as_str(), job["kind"].as_str()),
        (Some("succeeded"), Some("revert")),
        "{job}"
    );
    assert_eq!(env.state("web"), "running");
    let r = http(addr, "DELETE", "/api/v1/vms/web/snapshots/hot", Some(op), None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json(), json!({"vm": "web", "deleted": "hot"}));

    // A backup of the running guest, then the guest goes.
    let r = post(addr, "/api/v1/vms/web/backup", op, json!({"full": true}));
    assert_eq!(finish_job(addr, viewer, &r)["state"], "succeeded");
    assert_eq!(http(addr, "POST", "/api/v1/vms/web/kill", Some(op), None).status, 200);
    let id = http(addr, "GET", "/api/v1/backups?vm=web", Some(viewer), None).json()[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let m = http(addr, "GET", &format!("/api/v1/backups/{id}"), Some(viewer), None);
    assert_eq!(m.status, 200, "{}", m.body);
    assert_eq!(m.json(), env.json(&["backup", "show", &id]), "the CLI's JSON");

    // Restore as a new VM: a job; the VM exists after it.
    let r = post(
        addr,
        &format!("/api/v1/backups/{id}/restore"),
        admin,
        json!({"as": "back"}),
    );
    let job = finish_job(addr, viewer, &r);
    assert_eq!(
        (job["state"].as_str(), job["kind"].as_str()),
        (Some("succeeded"), Some("restore")),
        "{job}"
    );
    let back = http(addr, "GET", "/api/v1/vms/back", Some(viewer), None);
    assert_eq!(back.status, 200, "{}", back.body);
    assert_eq!(back.json()["status"]["state"], "stopped");
    // Restoring onto a name in use is refused before any job.
    assert_eq!(
        post(
            addr,
            &format!("/api/v1/backups/{id}/restore"),
            admin,
            json!({"as": "back"})
        )
        .status,
        409
    );

    // Verify (by id, by VM, all), prune (dry run, then for real), gc.
    for body in [json!({"ids": [id]}), json!({"vms": ["web"]}), json!({"all": true})] {
        let r = post(addr, "/api/v1/backups/verify", op, body.clone());
        assert_eq!(r.status, 200, "{body}: {}", r.body);
        let v = r.json();
        assert_eq!(
            (v["backups_checked"].as_u64(), v["problems"].as_array().map(Vec::len)),
            (Some(1), Some(0)),
            "{v}"
        );
    }
    let r = post(addr, "/api/v1/vms/web/backup", op, json!({}));
    assert_eq!(finish_job(addr, viewer, &r)["state"], "succeeded");
    let r = post(
        addr,
        "/api/v1/backups/prune",
        op,
        json!({"vms": ["web"], "keep_last": 1, "dry_run": true}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let d = r.json();
    assert_eq!(d.as_array().unwrap().len(), 2, "{d}");
    assert_eq!(
        d.as_array()
            .unwrap()
            .iter()
            .filter(|i| i["decision"]["keep"] == true)
            .count(),
        1,
        "{d}"
    );
    assert_eq!(
        env.json(&["backup", "list", "web"]).as_array().unwrap().len(),
        2,
        "dry run"
    );
    let r = post(addr, "/api/v1/backups/prune", op, json!({"all": true, "keep_last": 1}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(env.json(&["backup", "list", "web"]).as_array().unwrap().len(), 1);
    let r = http(addr, "POST", "/api/v1/store/gc", Some(op), None);
    assert_eq!(r.status, 200, "{}", r.body);

    // Deleting a VM that linked clones stand on is refused; its clones first.
    let del = |vm: &str| http(addr, "DELETE", &format!("/api/v1/vms/{vm}"), Some(admin), None);
    assert_eq!(del("web").status, 409);
    for vm in ["lnk", "full", "back", "web"] {
        assert_eq!(del(vm).status, 200, "{vm}");
    }
    assert_eq!(env.json(&["vm", "list"]), json!([]));
}
