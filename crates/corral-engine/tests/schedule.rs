//! The scheduler with an injected clock, over real backups: stopped VMs with small qcow2
//! disks are backed up through `qemu-storage-daemon` into a real store (no guest boots).
//! Time moves only when a test moves it; the tests wait on real events, never on minutes.

use std::fs::OpenOptions;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use corral_engine::schedule::{ManualClock, Scheduler};
use corral_engine::{CreateOptions, Engine, EngineError, HostConfig};
use corral_types::{ByteSize, DisplayMode, NetworkMode, ScheduleOutcome, ScheduleRun};
use jiff::tz::TimeZone;
use jiff::Timestamp;
use tokio::sync::broadcast::Receiver;
use tokio::sync::oneshot;

struct Env {
    dir: tempfile::TempDir,
    engine: Arc<Engine>,
    clock: ManualClock,
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// An engine whose config file holds `schedules`, a clock at `start` (UTC), and VMs with tags.
fn env(schedules: &str, start: &str, vms: &[(&str, &[&str])]) -> Env {
    let dir = tempfile::Builder::new().prefix("cs").tempdir_in("/tmp").unwrap();
    let path = dir.path().join("corral.toml");
    std::fs::write(
        &path,
        format!(
            "data_dir = \"{0}/data\"\nrun_dir = \"{0}/run\"\n[qemu]\naccel = \"tcg\"\n\n{schedules}",
            dir.path().display()
        ),
    )
    .unwrap();
    let engine = Arc::new(Engine::open(HostConfig::load_file(&path, true).unwrap()).unwrap());
    for (name, tags) in vms {
        engine
            .create(CreateOptions {
                name: name.to_string(),
                disks: vec![ByteSize(4 << 20)],
                display: Some(DisplayMode::None),
                network: Some(NetworkMode::None),
                tags: tags.iter().map(|t| t.to_string()).collect(),
                ..Default::default()
            })
            .unwrap();
    }
    Env {
        dir,
        engine,
        clock: ManualClock::new(ts(start), TimeZone::UTC),
    }
}

/// A running scheduler; `stop` shuts it down and waits for its runs.
struct Running {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Env {
    fn start(&self) -> Running {
        let (stop, rx) = oneshot::channel::<()>();
        let s = Scheduler::new(self.engine.clone(), self.clock.clone());
        let task = tokio::spawn(s.run(async move {
            let _ = rx.await;
        }));
        Running { stop, task }
    }

    fn store(&self) -> std::path::PathBuf {
        self.dir.path().join("data/backups")
    }

    /// Moves the clock to `t` once the scheduler waits for exactly that time.
    async fn reach(&self, t: &str) {
        tokio::time::timeout(Duration::from_secs(20), self.clock.sleeping_until(ts(t)))
            .await
            .unwrap_or_else(|_| panic!("the scheduler never planned a run at {t}"));
        self.clock.set(ts(t));
    }
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .expect("the scheduler stops")
            .unwrap();
    }
}

/// The next event that is not a run starting (an end or a skip).
async fn next_end(rx: &mut Receiver<ScheduleRun>) -> ScheduleRun {
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let r = rx.recv().await.expect("events");
            if r.outcome != ScheduleOutcome::Running {
                return r;
            }
        }
    })
    .await
    .expect("a run ended")
}

async fn next_start(rx: &mut Receiver<ScheduleRun>) -> ScheduleRun {
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let r = rx.recv().await.expect("events");
            if r.outcome == ScheduleOutcome::Running {
                return r;
            }
        }
    })
    .await
    .expect("a run started")
}

/// Nothing further happens (a short real pause: only for asserting absence).
async fn quiet(rx: &mut Receiver<ScheduleRun>) {
    tokio::time::sleep(Duration::from_millis(300)).await;
    if let Ok(r) = rx.try_recv() {
        panic!("unexpected run: {r:?}");
    }
}

const NIGHTLY: &str =
    "[[schedule]]\nname = \"nightly\"\ncalendar = \"daily 02:00\"\naction = \"backup\"\nvms = [\"a\"]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_at_its_time_and_then_catches_up_once_after_downtime() {
    let gc = "[[schedule]]\nname = \"gc\"\ncalendar = \"daily 03:00\"\naction = \"gc\"\n";
    let env = env(&format!("{NIGHTLY}\n{gc}"), "2025-06-02T01:00:00Z", &[("a", &[])]);
    let mut rx = env.engine.schedule_events();
    let s = env.start();
    env.reach("2025-06-02T02:00:00Z").await;
    let first = next_start(&mut rx).await;
    assert_eq!(first.slot_ms, Some(ts("2025-06-02T02:00:00Z").as_millisecond()));
    let r = next_end(&mut rx).await;
    assert_eq!(
        (r.outcome, r.caught_up, r.manual),
        (ScheduleOutcome::Ok, false, false),
        "{r:?}"
    );
    assert_eq!(r.targets.len(), 1);
    let t = &r.targets[0];
    assert!(t.ok && t.target == "a", "{t:?}");
    let backups = env.engine.backup_list(Some("a")).unwrap();
    assert_eq!(t.backup.as_deref(), Some(backups[0].id.as_str()));
    let job = env.engine.job(t.job.expect("the backup's job")).unwrap();
    assert_eq!((job.kind.as_str(), job.vm.as_str()), ("backup", "a"));
    // The store exists now: gc at 03:00 collects it.
    env.reach("2025-06-02T03:00:00Z").await;
    let g = next_end(&mut rx).await;
    assert_eq!((g.schedule.as_str(), g.outcome), ("gc", ScheduleOutcome::Ok), "{g:?}");
    assert!(g.targets[0].detail.as_deref().unwrap().starts_with("freed"), "{g:?}");
    s.stop().await;

    // Down from Monday 03:00 to Thursday 10:00: Tuesday's, Wednesday's and Thursday's 02:00
    // were missed. The restarted scheduler runs the backup once, now, as a catch-up.
    env.clock.set(ts("2025-06-05T10:00:00Z"));
    let s = env.start();
    // Both run at once (gc waits for the backup's hold on the store): in either order.
    let (mut r, mut g) = (next_end(&mut rx).await, next_end(&mut rx).await);
    if r.schedule == "gc" {
        std::mem::swap(&mut r, &mut g);
    }
    assert_eq!(r.schedule, "nightly");
    assert_eq!((r.outcome, r.caught_up), (ScheduleOutcome::Ok, true), "{r:?}");
    assert_eq!(r.slot_ms, Some(ts("2025-06-03T02:00:00Z").as_millisecond()));
    let msg = r.message.as_deref().unwrap();
    assert!(msg.contains("catch-up") && msg.contains("3 times missed"), "{msg}");
    assert_eq!(
        (g.schedule.as_str(), g.outcome, g.caught_up),
        ("gc", ScheduleOutcome::Ok, true),
        "gc caught up too: {g:?}"
    );
    quiet(&mut rx).await;
    // Then back on the calendar.
    env.reach("2025-06-06T02:00:00Z").await;
    let r = next_end(&mut rx).await;
    assert_eq!((r.schedule.as_str(), r.caught_up), ("nightly", false), "{r:?}");
    s.stop().await;

    // A restart right after has nothing to catch up.
    let s = env.start();
    quiet(&mut rx).await;
    s.stop().await;
    let runs = env.engine.schedule_runs(Some("nightly"), 100).unwrap();
    assert_eq!(runs.len(), 3, "{runs:?}");
    assert_eq!(env.engine.backup_list(Some("a")).unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_that_never_ran_has_nothing_to_catch_up_and_edits_apply_at_once() {
    let env = env(NIGHTLY, "2025-06-05T10:00:00Z", &[("a", &[])]);
    let mut rx = env.engine.schedule_events();
    let s = env.start();
    env.clock.sleeping_until(ts("2025-06-06T02:00:00Z")).await;
    quiet(&mut rx).await;
    // A new schedule, added while the scheduler sleeps, runs at its first time.
    let mut gc = corral_types::ScheduleSpec::new("gc", "daily 11:00", corral_types::ScheduleAction::Gc);
    env.engine.schedule_put(gc.clone()).unwrap();
    env.reach("2025-06-05T11:00:00Z").await;
    let r = next_end(&mut rx).await;
    assert_eq!(r.schedule, "gc");
    // No store yet: gc has nothing to do, which is fine.
    assert_eq!(r.outcome, ScheduleOutcome::Ok, "{r:?}");
    assert!(r.targets[0].detail.as_deref().unwrap().contains("no backups yet"));
    // Disabled: it no longer runs by itself.
    gc.enabled = false;
    env.engine.schedule_put(gc).unwrap();
    env.reach("2025-06-06T02:00:00Z").await;
    assert_eq!(next_end(&mut rx).await.schedule, "nightly");
    env.clock.set(ts("2025-06-06T11:00:00Z"));
    quiet(&mut rx).await;
    let st = env.engine.schedules().unwrap();
    assert_eq!(st[1].spec.name, "gc");
    assert_eq!(st[1].next_run_ms, None, "disabled");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_still_going_makes_the_next_time_skip() {
    let verify = "[[schedule]]\nname = \"check\"\ncalendar = \"*:0/15\"\naction = \"verify\"\nall = true\n";
    let env = env(verify, "2025-06-02T01:50:00Z", &[("a", &[])]);
    env.engine.backup_run("a", false, None).await.unwrap();
    // Another process holds the store exclusively (as `corral store gc` does): verify waits.
    let lock = nix::fcntl::Flock::lock(
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(env.store().join("lock"))
            .unwrap(),
        nix::fcntl::FlockArg::LockExclusive,
    )
    .unwrap();
    let mut rx = env.engine.schedule_events();
    let s = env.start();
    env.reach("2025-06-02T02:00:00Z").await;
    let started = next_start(&mut rx).await;
    assert_eq!(started.schedule, "check");
    assert!(env.engine.schedules().unwrap()[0].running);
    // A manual run is refused meanwhile.
    let e = env.engine.schedule_run_now("check").unwrap_err();
    assert!(matches!(e, EngineError::ScheduleBusy { .. }), "{e}");
    assert!(e.to_string().contains("already running"), "{e}");
    // 02:15 comes while it waits: skipped, and recorded.
    env.reach("2025-06-02T02:15:00Z").await;
    let skip = next_end(&mut rx).await;
    assert_eq!(skip.outcome, ScheduleOutcome::Skipped, "{skip:?}");
    assert_eq!(skip.slot_ms, Some(ts("2025-06-02T02:15:00Z").as_millisecond()));
    assert!(skip.message.as_deref().unwrap().contains("still going"), "{skip:?}");
    // The store is free again: the first run ends well; 02:30 runs normally.
    drop(lock);
    let r = next_end(&mut rx).await;
    assert_eq!((r.outcome, r.id), (ScheduleOutcome::Ok, started.id), "{r:?}");
    assert!(r.targets[0].detail.as_deref().unwrap().contains("intact"), "{r:?}");
    env.reach("2025-06-02T02:30:00Z").await;
    assert_eq!(next_end(&mut rx).await.outcome, ScheduleOutcome::Ok);
    s.stop().await;
    let outcomes: Vec<ScheduleOutcome> = env
        .engine
        .schedule_runs(Some("check"), 10)
        .unwrap()
        .iter()
        .map(|r| r.outcome)
        .collect();
    assert_eq!(
        outcomes,
        [ScheduleOutcome::Ok, ScheduleOutcome::Skipped, ScheduleOutcome::Ok],
        "newest first"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_failing_vm_does_not_stop_the_others_and_the_run_fails() {
    let lab = "[[schedule]]\nname = \"lab\"\ncalendar = \"daily 02:00\"\naction = \"backup\"\ntags = [\"lab\"]\n";
    let prune =
        "[[schedule]]\nname = \"prune\"\ncalendar = \"sun 04:00\"\naction = \"prune\"\nall = true\nkeep_last = 1\n";
    let named =
        "[[schedule]]\nname = \"named\"\ncalendar = \"sun 04:00\"\naction = \"backup\"\nvms = [\"gone\", \"other\"]\n";
    let env = env(
        &format!("{lab}\n{prune}\n{named}"),
        "2025-06-02T01:00:00Z",
        &[("a", &["lab"]), ("b", &["lab"]), ("c", &["lab"]), ("other", &[])],
    );
    // b is busy (another corral operation holds its lock).
    let lock =
        corral_engine::lock::lock_vm(&corral_engine::paths::lock_dir(env.engine.config()), "b", "snapshot").unwrap();
    let mut rx = env.engine.schedule_events();
    let s = env.start();
    env.reach("2025-06-02T02:00:00Z").await;
    let r = next_end(&mut rx).await;
    assert_eq!(r.outcome, ScheduleOutcome::Failed, "{r:?}");
    let by: Vec<(&str, bool)> = r.targets.iter().map(|t| (t.target.as_str(), t.ok)).collect();
    assert_eq!(by, [("a", true), ("b", false), ("c", true)]);
    assert!(r.targets[1].error.as_deref().unwrap().contains("busy"), "{r:?}");
    assert_eq!(r.message.as_deref(), Some("2 of 3 backed up; failed: b"));
    let status = env.engine.schedules().unwrap();
    let last = status[0].last_run.as_ref().unwrap();
    assert_eq!((last.outcome, status[0].running), (ScheduleOutcome::Failed, false));
    s.stop().await;
    drop(lock);

    // Run now (by hand), after b is free: all three, then prune keeps the newest of each.
    let r = env.engine.schedule_run_now("lab").unwrap().await.unwrap();
    assert_eq!(
        (r.outcome, r.manual, r.slot_ms),
        (ScheduleOutcome::Ok, true, None),
        "{r:?}"
    );
    assert_eq!(env.engine.backup_list(Some("a")).unwrap().len(), 2);
    let p = env.engine.schedule_run_now("prune").unwrap().await.unwrap();
    assert_eq!(p.outcome, ScheduleOutcome::Ok, "{p:?}");
    let details: Vec<(&str, &str)> = p
        .targets
        .iter()
        .map(|t| (t.target.as_str(), t.detail.as_deref().unwrap()))
        .collect();
    assert_eq!(
        details,
        [
            ("a", "kept 1, removed 1"),
            ("b", "kept 1, removed 0"),
            ("c", "kept 1, removed 1")
        ]
    );
    // A VM named in the schedule that no longer exists fails alone.
    let r = env.engine.schedule_run_now("named").unwrap().await.unwrap();
    let by: Vec<(&str, bool)> = r.targets.iter().map(|t| (t.target.as_str(), t.ok)).collect();
    assert_eq!(by, [("gone", false), ("other", true)], "{r:?}");
    assert!(
        r.targets[0].error.as_deref().unwrap().contains("no VM named gone"),
        "{r:?}"
    );
    assert!(matches!(
        env.engine.schedule_run_now("nope"),
        Err(EngineError::NoSuchSchedule(_))
    ));
}

#[test]
fn a_run_left_running_by_a_dead_process_reads_as_interrupted() {
    let env = env(NIGHTLY, "2025-06-02T01:00:00Z", &[]);
    let db = env.dir.path().join("data/corral.db");
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let conn = rusqlite::Connection::open(Path::new(&db)).unwrap();
    conn.execute(
        "INSERT INTO schedule_runs (schedule, action, slot_ms, started_ms, outcome, pid) VALUES ('nightly', 'backup', 1, 1, 'running', ?1)",
        [dead],
    )
    .unwrap();
    let st = &env.engine.schedules().unwrap()[0];
    assert!(!st.running);
    assert_eq!(st.last_run.as_ref().unwrap().outcome, ScheduleOutcome::Interrupted);
}
