//! Editing `[[schedule]]` tables: round trips keep everything else byte for byte; bad input
//! leaves the file as it was.

use std::os::unix::fs::PermissionsExt;

use corral_types::{ScheduleAction, ScheduleSpec};

use super::*;

const CONFIG: &str = r#"# corral host config
data_dir = "DATA"   # keep this comment
run_dir = "RUN"

[qemu]
accel = "tcg"   # no KVM here

# Nightly backups of production
[[schedule]]
name = "nightly"
calendar = "mon..fri 22:30"   # after office hours
action = "backup"
tags = ["prod"]   # the tag on prod VMs
full = true

[backup]
zstd_level = 1
"#;

fn nightly() -> ScheduleSpec {
    let mut s = ScheduleSpec::new("nightly", "daily 23:00", ScheduleAction::Backup);
    s.tags = vec!["prod".into(), "db".into()];
    s
}

#[test]
fn put_replaces_in_place_and_keeps_comments_and_everything_else() {
    let out = put_text(CONFIG, &nightly()).unwrap();
    let want = CONFIG
        .replace("\"mon..fri 22:30\"", "\"daily 23:00\"")
        .replace("[\"prod\"]", "[\"prod\", \"db\"]")
        .replace("full = true\n", "");
    assert_eq!(out, want);
    let cfg = HostConfig::parse(&out.replace("DATA", "/d").replace("RUN", "/r")).unwrap();
    assert_eq!(cfg.schedule, vec![nightly()]);
}

#[test]
fn put_adds_a_new_table_after_the_others_and_delete_removes_it() {
    let mut gc = ScheduleSpec::new("weekly-gc", "sun 05:00", ScheduleAction::Gc);
    gc.enabled = false;
    let out = put_text(CONFIG, &gc).unwrap();
    // It goes right after the other schedules; the rest is untouched.
    let added = "[[schedule]]\nname = \"weekly-gc\"\ncalendar = \"sun 05:00\"\naction = \"gc\"\nenabled = false\n\n";
    assert_eq!(out, CONFIG.replace("[backup]", &format!("{added}[backup]")));
    let cfg = HostConfig::parse(&out.replace("DATA", "/d").replace("RUN", "/r")).unwrap();
    assert_eq!(cfg.schedule.len(), 2);
    assert_eq!(cfg.schedule[1], gc);
    // Deleting it gives the original back.
    assert_eq!(delete_text(&out, "weekly-gc").unwrap().as_deref(), Some(CONFIG));
    assert_eq!(delete_text(&out, "nope").unwrap(), None);
    // Deleting the last one removes the key altogether.
    let none = delete_text(CONFIG, "nightly").unwrap().unwrap();
    assert!(!none.contains("schedule") && none.contains("# keep this comment") && none.contains("[backup]"));
}

#[test]
fn put_into_an_empty_or_missing_file() {
    let mut p = ScheduleSpec::new("prune", "daily 04:00", ScheduleAction::Prune);
    p.all = true;
    p.keep_daily = Some(7);
    p.keep_weekly = Some(4);
    let out = put_text("", &p).unwrap();
    assert_eq!(
        out,
        "[[schedule]]\nname = \"prune\"\ncalendar = \"daily 04:00\"\naction = \"prune\"\nall = true\nkeep_daily = 7\nkeep_weekly = 4\n"
    );
    assert_eq!(HostConfig::parse(&out).unwrap().schedule, vec![p]);
}

#[test]
fn other_shapes_of_schedule_are_refused() {
    let e = put_text("schedule = []\n", &nightly()).unwrap_err();
    assert!(e.contains("not written as [[schedule]]"), "{e}");
    let e = put_text("[schedule]\nname = 1\n", &nightly()).unwrap_err();
    assert!(e.contains("not written as [[schedule]]"), "{e}");
    assert!(put_text("= broken", &nightly()).unwrap_err().contains("not valid TOML"));
}

fn engine_with(dir: &std::path::Path, text: Option<&str>) -> (Engine, std::path::PathBuf) {
    let path = dir.join("corral.toml");
    let d = dir.display().to_string();
    if let Some(t) = text {
        std::fs::write(
            &path,
            t.replace("DATA", &format!("{d}/data"))
                .replace("RUN", &format!("{d}/run")),
        )
        .unwrap();
    }
    // A missing file: the engine runs on defaults, but with the dirs of this test.
    let mut cfg = HostConfig::load_file(&path, false).unwrap();
    if text.is_none() {
        cfg.data_dir = dir.join("data");
        cfg.run_dir = dir.join("run");
    }
    (Engine::open(cfg).unwrap(), path)
}

#[test]
fn engine_put_and_delete_change_the_file_and_the_current_list() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, path) = engine_with(dir.path(), Some(CONFIG));
    assert_eq!(engine.schedule_specs()[0].calendar, "mon..fri 22:30");
    let mut gc = ScheduleSpec::new("gc", "sun 05:00", ScheduleAction::Gc);
    engine.schedule_put(gc.clone()).unwrap();
    assert_eq!(engine.schedule_specs().len(), 2);
    gc.calendar = "sat 05:00".into();
    engine.schedule_put(gc.clone()).unwrap();
    assert_eq!(engine.schedule_specs()[1], gc);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("# Nightly backups of production") && text.contains("\"sat 05:00\""));
    engine.schedule_delete("gc").unwrap();
    assert_eq!(engine.schedule_specs().len(), 1);
    let e = engine.schedule_delete("gc").unwrap_err();
    assert!(matches!(e, EngineError::NoSuchSchedule(_)), "{e}");
    // No temporary files are left behind.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.contains("tmp"))
        .collect();
    assert!(names.is_empty(), "{names:?}");
}

#[test]
fn bad_input_leaves_the_file_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, path) = engine_with(dir.path(), Some(CONFIG));
    let before = std::fs::read(&path).unwrap();
    let mut bad_cal = nightly();
    bad_cal.calendar = "mon..fir 22:30".into();
    let mut bad_sel = nightly();
    bad_sel.all = true;
    let mut bad_name = nightly();
    bad_name.name = "../x".into();
    for (spec, want) in [
        (bad_cal, "unknown day `fir`"),
        (bad_sel, "exactly one"),
        (bad_name, "contains '/'"),
    ] {
        let e = engine.schedule_put(spec).unwrap_err();
        assert_eq!(e.kind(), "invalid");
        assert!(e.to_string().contains(want), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }
    assert_eq!(engine.schedule_specs()[0].calendar, "mon..fri 22:30");

    // A file broken by hand meanwhile: refused, untouched.
    std::fs::write(&path, b"data_dir = 5\n").unwrap();
    let e = engine.schedule_put(nightly()).unwrap_err();
    assert!(e.to_string().contains("fix the file first"), "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), b"data_dir = 5\n");
}

#[test]
fn a_read_only_file_is_refused_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, path) = engine_with(dir.path(), Some(CONFIG));
    let before = std::fs::read(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
    let e = engine.schedule_put(nightly()).unwrap_err();
    assert!(
        e.to_string().contains("read-only") && e.to_string().contains("chmod"),
        "{e}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn a_host_on_defaults_gets_a_config_file_written() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, path) = engine_with(dir.path(), None);
    assert!(!path.exists());
    engine.schedule_put(nightly()).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(HostConfig::parse(&text).unwrap().schedule, vec![nightly()]);
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o644);
    // An engine without a file to edit says so.
    let cfg = HostConfig::parse(&format!(
        "data_dir = \"{0}/d2\"\nrun_dir = \"{0}/r2\"\n",
        dir.path().display()
    ))
    .unwrap();
    let e = Engine::open(cfg).unwrap().schedule_put(nightly()).unwrap_err();
    assert!(e.to_string().contains("without a config file"), "{e}");
}
