//! The web page's schedules in-process, over a real config file and a real backup store with
//! stopped VMs (no guest boots): the list, roles, the add form writing the config file (and
//! refusing bad input or a missing CSRF token without touching it), run now with its backup,
//! a failed run on the page and the dashboard, delete after confirmation.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::web::{add_user, get, login, post_form, start_server, Reply};
use common::Env;

const CONFIG: &str = r#"
# The lab is backed up every weekday evening
[[schedule]]
name = "lab"
calendar = "mon..fri 22:30"
action = "backup"
tags = ["lab"]

[[schedule]]
name = "nobody"
calendar = "daily 01:00"
action = "verify"
tags = ["nobody"]
"#;

fn config(env: &Env) -> String {
    std::fs::read_to_string(env.dir_path().join("corral.toml")).unwrap()
}

/// Polls a schedule's page until its newest run has ended; the page.
fn wait_run(addr: SocketAddr, cookie: &str, name: &str) -> Reply {
    let mut page = None;
    let ended = common::wait_for(Duration::from_secs(120), || {
        let r = get(addr, &format!("/schedules/{name}"), Some(cookie));
        let done = r.body.contains("data-run=") && !r.body.contains("data-outcome=\"running\"");
        page = Some(r);
        done
    });
    let page = page.unwrap();
    assert!(ended.is_ok(), "the run of {name} did not end: {}", page.body);
    page
}

/// The `[[schedule]]` add form's fields, with defaults for the rest.
fn schedule_fields<'a>(csrf: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut f = vec![("csrf", csrf), ("skeleton", "default"), ("enabled", "on")];
    f.extend_from_slice(extra);
    f
}

#[test]
fn schedules_are_listed_edited_run_and_deleted_from_the_page() {
    let env = Env::with_config(CONFIG);
    env.ok(&[
        "vm",
        "create",
        "a",
        "--disk",
        "8M",
        "--display",
        "none",
        "--network",
        "none",
        "--tag",
        "lab",
    ]);
    let cfg_path = env.dir_path().join("corral.toml");
    let addr = start_server(&env);
    add_user(&env, "ann", "admin", "admin password 1");
    add_user(&env, "oli", "operator", "operator password 1");
    add_user(&env, "vic", "viewer", "viewer password 1");
    let (admin, csrf) = login(addr, "ann", "admin password 1");
    let (op, op_csrf) = login(addr, "oli", "operator password 1");
    let (viewer, viewer_csrf) = login(addr, "vic", "viewer password 1");

    // The config's schedules, with their calendar, selection and next run.
    let r = get(addr, "/schedules", Some(&admin));
    assert_eq!(r.status, 200, "{}", r.body);
    for want in [
        "href=\"/schedules/lab\"",
        "mon..fri 22:30",
        "tags: lab",
        "tags: nobody",
        "Add a schedule",
    ] {
        assert!(r.body.contains(want), "{want}: {}", r.body);
    }
    // A viewer reads, with no form but logging out; an operator may only run.
    let r = get(addr, "/schedules", Some(&viewer));
    assert!(r.body.contains("mon..fri 22:30"), "{}", r.body);
    assert_eq!(r.body.matches("method=\"post\"").count(), 1, "{}", r.body);
    let r = get(addr, "/schedules/lab", Some(&op));
    assert!(r.body.contains("Run now") && !r.body.contains("Save schedule") && !r.body.contains("Delete"));
    let r = post_form(addr, "/schedules/lab/run", Some(&viewer), &[("csrf", &viewer_csrf)]);
    assert_eq!(r.status, 403, "{}", r.body);

    // A calendar check lists the next five times; a bad expression says what is wrong.
    let r = get(addr, "/schedules?check=daily+02%3A00", Some(&viewer));
    assert_eq!(r.status, 200);
    assert_eq!(r.body.matches("02:00 ").count(), 5, "{}", r.body);
    let r = get(addr, "/schedules?check=mon..fir+22%3A30", Some(&viewer));
    assert_eq!(r.status, 400);
    assert!(r.body.contains("unknown day `fir`"), "{}", r.body);

    // Adding: refused without the right token or role, and on bad input, with the file as it was.
    let before = std::fs::read(&cfg_path).unwrap();
    let weekly = [
        ("name", "weekly"),
        ("calendar", "sun 03:00"),
        ("action", "prune"),
        ("all", "on"),
        ("keep_daily", "7"),
    ];
    let mut no_token = schedule_fields("", &weekly);
    no_token.remove(0);
    assert_eq!(post_form(addr, "/schedules", Some(&admin), &no_token).status, 403);
    let r = post_form(
        addr,
        "/schedules",
        Some(&admin),
        &schedule_fields(&"0".repeat(64), &weekly),
    );
    assert_eq!(r.status, 403);
    let r = post_form(addr, "/schedules", Some(&op), &schedule_fields(&op_csrf, &weekly));
    assert_eq!(r.status, 403, "{}", r.body);
    let bad = [
        ("name", "weekly"),
        ("calendar", "mon..fir 22:30"),
        ("action", "backup"),
        ("vms", "a"),
    ];
    let r = post_form(addr, "/schedules", Some(&admin), &schedule_fields(&csrf, &bad));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("unknown day `fir`"), "{}", r.body);
    assert!(
        r.body.contains("value=\"mon..fir 22:30\""),
        "the form keeps what was typed"
    );
    let r = post_form(
        addr,
        "/schedules",
        Some(&admin),
        &schedule_fields(
            &csrf,
            &[("name", "x"), ("calendar", "daily"), ("action", "prune"), ("all", "on")],
        ),
    );
    assert_eq!(r.status, 400);
    assert!(r.body.contains("at least one of keep_last"), "{}", r.body);
    assert_eq!(
        std::fs::read(&cfg_path).unwrap(),
        before,
        "bad input leaves the file alone"
    );

    // The right one lands in the file; the other entries and the comment stay.
    let r = post_form(addr, "/schedules", Some(&admin), &schedule_fields(&csrf, &weekly));
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(r
        .header("location")
        .unwrap()
        .starts_with("/schedules/weekly?done=saved"));
    let text = config(&env);
    assert!(
        text.contains("name = \"weekly\"") && text.contains("keep_daily = 7"),
        "{text}"
    );
    assert!(text.contains("# The lab is backed up every weekday evening") && text.contains("name = \"lab\""));
    let r = get(addr, "/schedules/weekly", Some(&admin));
    assert!(
        r.body.contains("keep_daily 7") && r.body.contains("readonly"),
        "{}",
        r.body
    );

    // Run now: a redirect at once, then the run with its backup.
    let r = post_form(addr, "/schedules/lab/run", Some(&op), &[("csrf", &op_csrf)]);
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(r.header("location").unwrap().starts_with("/schedules/lab?done=started"));
    let again = post_form(addr, "/schedules/lab/run", Some(&op), &[("csrf", &op_csrf)]);
    if again.status != 303 {
        assert_eq!(again.status, 409, "{}", again.body);
        assert!(again.body.contains("already running"), "{}", again.body);
    }
    let page = wait_run(addr, &admin, "lab");
    assert!(page.body.contains("data-outcome=\"ok\""), "{}", page.body);
    let backups = env.json(&["backup", "list"]);
    let id = backups[0]["id"].as_str().unwrap();
    assert!(page.body.contains(id), "the run names its backup {id}: {}", page.body);

    // A run that fails is marked on the page, and the dashboard says so.
    assert!(!get(addr, "/", Some(&viewer)).body.contains("schedule-failures"));
    assert_eq!(
        post_form(addr, "/schedules/nobody/run", Some(&op), &[("csrf", &op_csrf)]).status,
        303
    );
    let page = wait_run(addr, &admin, "nobody");
    assert!(page.body.contains("data-outcome=\"failed\""), "{}", page.body);
    let r = get(addr, "/schedules", Some(&viewer));
    assert!(
        r.body.contains("data-schedule=\"nobody\" class=\"failed\""),
        "{}",
        r.body
    );
    let r = get(addr, "/", Some(&viewer));
    assert!(r.body.contains("id=\"schedule-failures\""), "{}", r.body);
    assert!(r.body.contains("no VM has the tag") && r.body.contains("href=\"/schedules/nobody\""));

    // Delete: a confirmation page first (nothing changes), then out of the file.
    let r = post_form(addr, "/schedules/weekly/delete", Some(&admin), &[("csrf", &csrf)]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("Delete schedule weekly?") && r.body.contains("name=\"confirmed\" value=\"yes\""));
    assert!(config(&env).contains("name = \"weekly\""));
    let r = post_form(
        addr,
        "/schedules/weekly/delete",
        Some(&admin),
        &[("csrf", &csrf), ("confirmed", "yes")],
    );
    assert_eq!(r.status, 303, "{}", r.body);
    let text = config(&env);
    assert!(
        !text.contains("weekly") && text.contains("# The lab is backed up"),
        "{text}"
    );
    assert_eq!(get(addr, "/schedules/weekly", Some(&admin)).status, 404);
}
