//! The evaluator driven by an injected clock: passes every 10 s of made-up time.

use super::*;
use crate::HostConfig;
use corral_types::{HostMetrics, VmCpu, VmMetrics};

const S: i64 = 1000;
const MIN: i64 = 60 * S;
const H: i64 = 60 * MIN;

fn vm(name: &str, state: RunState, cpu: Option<f64>) -> VmMetrics {
    let mut v = VmMetrics::configured(name, state, 1, 1 << 30);
    v.pid = state.is_active().then_some(42);
    v.cpu = state.is_active().then(|| VmCpu {
        percent: cpu,
        percent_of_vcpus: cpu,
        ..VmCpu::from_percent(1.0, 0.0, 1)
    });
    v
}

fn report(vms: Vec<VmMetrics>) -> MetricsReport {
    MetricsReport {
        taken_ms: 0,
        interval_ms: Some(10_000),
        host: HostMetrics {
            cpus: 2,
            cpu_percent: Some(10.0),
            memory_total_bytes: 100,
            memory_available_bytes: 50,
            load: [0.5, 0.5, 0.5],
            ..Default::default()
        },
        vms,
    }
}

fn running(cpu: f64) -> MetricsReport {
    report(vec![vm("web1", RunState::Running, Some(cpu))])
}

/// An evaluator over the rules and settings of a config text (notifier: a webhook).
fn evaluator(rules: &str) -> Evaluator {
    let text = format!("[notify.webhook]\nurl = \"http://127.0.0.1:9/\"\n{rules}");
    let cfg = HostConfig::parse(&text).unwrap();
    Evaluator::new(
        super::super::rules::compile_all(&cfg.alert, &cfg.notify),
        Settings::from_config(&cfg),
    )
}

fn events(c: &[AlertChange]) -> Vec<(AlertEvent, String)> {
    c.iter()
        .map(|c| {
            (
                c.event,
                format!("{}/{}", c.key.rule, c.key.vm.as_deref().unwrap_or("host")),
            )
        })
        .collect()
}

/// Runs passes every 10 s from `from` (inclusive) to `to` (exclusive); returns each change
/// with its time.
fn run(
    e: &mut Evaluator,
    from: i64,
    to: i64,
    report: impl Fn(i64) -> MetricsReport,
) -> Vec<(i64, AlertEvent, AlertInfo)> {
    let mut out = vec![];
    let mut t = from;
    while t < to {
        for c in e.evaluate(t, &report(t), None) {
            out.push((t, c.event, c.alert));
        }
        t += 10 * S;
    }
    out
}

const BUSY: &str = "[[alert]]\nname = \"busy\"\nmetric = \"cpu\"\nabove = \"90%\"\nfor = \"5m\"\n";

#[test]
fn fires_once_after_for_and_resolves_once() {
    let mut e = evaluator(BUSY);
    // Busy from 0: fires when it has held 5 minutes, not before, and only once.
    let got = run(&mut e, 0, 20 * MIN, |_| running(95.0));
    assert_eq!(got.len(), 1, "{got:?}");
    let (t, ev, a) = &got[0];
    assert_eq!((*t, *ev), (5 * MIN, AlertEvent::Fired));
    assert_eq!(
        (a.since_ms, a.fired_ms, a.value, a.threshold),
        (0, 5 * MIN, Some(95.0), Some(90.0))
    );
    assert_eq!(a.summary, "cpu is 95% (above 90% for 5m)");
    // Back to normal: resolves once it has been calm for keep_firing_for (= for, 5m).
    let got = run(&mut e, 20 * MIN, 40 * MIN, |_| running(20.0));
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!((got[0].0, got[0].1), (25 * MIN, AlertEvent::Resolved));
    assert_eq!(got[0].2.value, Some(20.0));
    assert_eq!(e.firing().count(), 0);
}

#[test]
fn a_short_spike_does_not_fire() {
    let mut e = evaluator(BUSY);
    // 4m50s busy, one calm sample, busy again: `for` starts over.
    let got = run(&mut e, 0, 11 * MIN, |t| running(if t == 290 * S { 10.0 } else { 95.0 }));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, 300 * S + 5 * MIN, "the hold restarted after the calm sample");
}

#[test]
fn a_flapping_value_fires_once_and_resolves_once_when_it_settles() {
    let mut e = evaluator("[[alert]]\nname = \"busy\"\nmetric = \"cpu\"\nabove = \"90%\"\n");
    // Above and below on alternate samples for an hour: one notification, not 180.
    let got = run(&mut e, 0, H, |t| {
        running(if (t / (10 * S)) % 2 == 0 { 95.0 } else { 50.0 })
    });
    assert_eq!(
        got.iter().map(|g| (g.0, g.1)).collect::<Vec<_>>(),
        [(0, AlertEvent::Fired)]
    );
    // Settles below (from the hour's last sample, which was calm): resolved after a full
    // minute of calm (the default keep_firing_for).
    let got = run(&mut e, H, 2 * H, |_| running(50.0));
    assert_eq!(
        got.iter().map(|g| (g.0, g.1)).collect::<Vec<_>>(),
        [(H - 10 * S + MIN, AlertEvent::Resolved)]
    );
}

#[test]
fn a_firing_alert_repeats_only_every_repeat() {
    let mut e = evaluator(&format!("[alerts]\nrepeat = \"1h\"\n{BUSY}"));
    let got = run(&mut e, 0, 3 * H, |_| running(99.0));
    assert_eq!(
        got.iter().map(|g| (g.0, g.1)).collect::<Vec<_>>(),
        [
            (5 * MIN, AlertEvent::Fired),
            (5 * MIN + H, AlertEvent::Repeated),
            (5 * MIN + 2 * H, AlertEvent::Repeated)
        ]
    );
    assert_eq!(got[2].2.last_notified_ms, Some(5 * MIN + 2 * H));
    // repeat = "0": never again.
    let mut e = evaluator(&format!("[alerts]\nrepeat = \"0\"\n{BUSY}"));
    assert_eq!(run(&mut e, 0, 10 * H, |_| running(99.0)).len(), 1);
}

#[test]
fn unknown_values_change_nothing_and_a_stopped_vm_resolves() {
    let mut e = evaluator("[[alert]]\nname = \"busy\"\nmetric = \"cpu\"\nabove = \"90%\"\nkeep_firing_for = \"0\"\n");
    assert_eq!(
        events(&e.evaluate(0, &running(95.0), None)),
        [(AlertEvent::Fired, "busy/web1".into())]
    );
    // A single sample (no interval, so no rates) of the running VM: nothing known, nothing changes.
    let mut single = running(0.0);
    single.interval_ms = None;
    single.vms[0].cpu.as_mut().unwrap().percent_of_vcpus = None;
    assert!(e.evaluate(10 * S, &single, None).is_empty());
    assert_eq!(e.firing().count(), 1);
    // Stopped: no value, and that does not hold.
    let stopped = report(vec![vm("web1", RunState::Stopped, None)]);
    assert_eq!(
        events(&e.evaluate(20 * S, &stopped, None)),
        [(AlertEvent::Resolved, "busy/web1".into())]
    );
}

#[test]
fn a_vanished_vm_and_a_removed_rule_close_quietly() {
    let mut e = evaluator("[[alert]]\nname = \"busy\"\nmetric = \"cpu\"\nabove = \"90%\"\n");
    let two = report(vec![
        vm("web1", RunState::Running, Some(95.0)),
        vm("web2", RunState::Running, Some(95.0)),
    ]);
    assert_eq!(e.evaluate(0, &two, None).len(), 2);
    // web2 deleted: its alert is resolved with a note and nobody is told.
    let c = e.evaluate(10 * S, &running(95.0), None);
    assert_eq!(c.len(), 1);
    assert_eq!(
        (c[0].event, c[0].key.vm.as_deref()),
        (AlertEvent::Resolved, Some("web2"))
    );
    assert!(c[0].notify.is_empty());
    assert_eq!(c[0].alert.resolved_note.as_deref(), Some("the VM is no longer defined"));
    // A restart with the rule gone from the config: the open alert is closed quietly too.
    let open: Vec<AlertInfo> = e.firing().cloned().collect();
    let mut e2 = evaluator("");
    e2.restore(open, HashMap::new());
    let c = e2.evaluate(20 * S, &running(95.0), None);
    assert_eq!(events(&c), [(AlertEvent::Resolved, "busy/web1".into())]);
    assert!(c[0].notify.is_empty());
    assert_eq!(
        c[0].alert.resolved_note.as_deref(),
        Some("the rule is no longer in the config")
    );
}

#[test]
fn restored_alerts_do_not_fire_again() {
    let mut e = evaluator(BUSY);
    run(&mut e, 0, 6 * MIN, |_| running(95.0));
    let open: Vec<AlertInfo> = e.firing().cloned().collect();
    assert_eq!(open.len(), 1);
    let mut e2 = evaluator(BUSY);
    e2.restore(open, HashMap::new());
    assert!(run(&mut e2, 6 * MIN, 10 * MIN, |_| running(95.0)).is_empty());
    let got = run(&mut e2, 10 * MIN, 20 * MIN, |_| running(5.0));
    assert_eq!((got.len(), got[0].1), (1, AlertEvent::Resolved));
}

#[test]
fn crash_fires_once_per_crash_and_resolves_when_the_vm_runs_or_stops() {
    let mut e = evaluator("[alerts]\nrepeat = \"0\"\n");
    let state = |s| report(vec![vm("db", s, None)]);
    assert!(e.evaluate(0, &state(RunState::Running), None).is_empty());
    let c = e.evaluate(10 * S, &state(RunState::Crashed), None);
    assert_eq!(events(&c), [(AlertEvent::Fired, "crash/db".into())]);
    assert_eq!(c[0].alert.severity, Severity::Critical);
    assert!(c[0].alert.summary.contains("db crashed"));
    for t in 2..20 {
        assert!(e.evaluate(t * 10 * S, &state(RunState::Crashed), None).is_empty());
    }
    assert_eq!(
        events(&e.evaluate(200 * S, &state(RunState::Running), None)),
        [(AlertEvent::Resolved, "crash/db".into())]
    );
    // Crashes again: a new alert.
    assert_eq!(
        events(&e.evaluate(210 * S, &state(RunState::Crashed), None)),
        [(AlertEvent::Fired, "crash/db".into())]
    );
    assert_eq!(
        events(&e.evaluate(220 * S, &state(RunState::Stopped), None)),
        [(AlertEvent::Resolved, "crash/db".into())]
    );
    // Turned off: no crash alerts.
    let mut off = evaluator("[alerts]\ncrash = false\n");
    assert!(off.evaluate(0, &state(RunState::Crashed), None).is_empty());
}

fn facts(job: Option<(i64, bool)>, newest_backup_ms: Option<i64>) -> BackupFacts {
    BackupFacts {
        vms: [(
            "web1".to_string(),
            VmBackups {
                last_job: job.map(|(id, failed)| BackupJob {
                    id,
                    failed,
                    finished_ms: 0,
                    message: failed.then(|| "store full".to_string()),
                }),
                newest_backup_ms,
            },
        )]
        .into(),
    }
}

#[test]
fn a_failed_backup_fires_once_per_job_and_resolves_at_the_next_good_one() {
    let mut e = evaluator("[alerts]\nrepeat = \"0\"\n");
    let r = running(1.0);
    assert!(e.evaluate(0, &r, Some(&facts(Some((4, false)), None))).is_empty());
    let c = e.evaluate(10 * S, &r, Some(&facts(Some((5, true)), None)));
    assert_eq!(events(&c), [(AlertEvent::Fired, "backup_failed/web1".into())]);
    assert_eq!(c[0].alert.job_id, Some(5));
    assert!(c[0].alert.summary.contains("backup job 5 of web1 failed: store full"));
    // The same failed job on later passes: nothing.
    assert!(e.evaluate(20 * S, &r, Some(&facts(Some((5, true)), None))).is_empty());
    // Facts unknown this pass: nothing either (the alert stays open).
    assert!(e.evaluate(25 * S, &r, None).is_empty());
    // Another failure while open: said at once, naming the new job.
    let c = e.evaluate(30 * S, &r, Some(&facts(Some((6, true)), None)));
    assert_eq!(events(&c), [(AlertEvent::Repeated, "backup_failed/web1".into())]);
    assert_eq!(c[0].alert.job_id, Some(6));
    // The next good backup resolves it.
    let c = e.evaluate(40 * S, &r, Some(&facts(Some((7, false)), None)));
    assert_eq!(events(&c), [(AlertEvent::Resolved, "backup_failed/web1".into())]);
    // After a restart the history says job 6 was alerted on: an old failure does not fire again.
    let mut e2 = evaluator("");
    e2.restore(vec![], [("web1".to_string(), 6)].into());
    assert!(e2.evaluate(0, &r, Some(&facts(Some((6, true)), None))).is_empty());
    assert_eq!(e2.evaluate(10 * S, &r, Some(&facts(Some((8, true)), None))).len(), 1);
}

#[test]
fn an_old_backup_fires_only_for_vms_with_backups() {
    let mut e = evaluator("[alerts]\nbackup_max_age = \"36h\"\nrepeat = \"0\"\n");
    let r = running(1.0);
    let now = 100 * H;
    // Never backed up: not watched.
    assert!(e.evaluate(now, &r, Some(&facts(None, None))).is_empty());
    // 30 h old: fine; 40 h old: fires with the age as value.
    assert!(e.evaluate(now, &r, Some(&facts(None, Some(now - 30 * H)))).is_empty());
    let c = e.evaluate(now + 10 * H, &r, Some(&facts(None, Some(now - 30 * H))));
    assert_eq!(events(&c), [(AlertEvent::Fired, "backup_age/web1".into())]);
    assert_eq!(
        (c[0].alert.value, c[0].alert.threshold),
        (Some(40.0 * 3600.0), Some(36.0 * 3600.0))
    );
    assert!(
        c[0].alert.summary.contains("is 1d16h old (more than 1d12h)"),
        "{}",
        c[0].alert.summary
    );
    // A new backup resolves it.
    let c = e.evaluate(now + 11 * H, &r, Some(&facts(None, Some(now + 11 * H))));
    assert_eq!(events(&c), [(AlertEvent::Resolved, "backup_age/web1".into())]);
}

#[test]
fn host_and_below_rules() {
    let mut e = evaluator(
        "[[alert]]\nname = \"load\"\nmetric = \"host_load\"\nabove = 4\n[[alert]]\nname = \"idle\"\nmetric = \"cpu\"\nbelow = \"1%\"\nvms = [\"tag:batch\"]\n",
    );
    let mut r = running(0.5);
    r.host.load = [6.0, 1.0, 1.0];
    // web1 has no tag batch: only the host rule fires.
    assert_eq!(
        events(&e.evaluate(0, &r, None)),
        [(AlertEvent::Fired, "load/host".into())]
    );
    r.vms[0].tags = vec!["batch".into()];
    assert_eq!(
        events(&e.evaluate(10 * S, &r, None)),
        [(AlertEvent::Fired, "idle/web1".into())]
    );
    // The tag goes: quietly closed.
    r.vms[0].tags.clear();
    let c = e.evaluate(20 * S, &r, None);
    assert_eq!(events(&c), [(AlertEvent::Resolved, "idle/web1".into())]);
    assert_eq!(
        c[0].alert.resolved_note.as_deref(),
        Some("the rule no longer watches this VM")
    );
}
