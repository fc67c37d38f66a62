//! Asynchronous events reach every subscriber.

mod common;

use std::time::Duration;

use common::Qemu;
use corral_qmp::Event;
use tokio::sync::broadcast::Receiver;

const WAIT: Duration = Duration::from_secs(10);

/// Next event named `name`, skipping others; panics after `WAIT`.
async fn next_named(rx: &mut Receiver<Event>, name: &str) -> Event {
    tokio::time::timeout(WAIT, async {
        loop {
            let ev = rx.recv().await.expect("event channel");
            if ev.name == name {
                return ev;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {name} event within {WAIT:?}"))
}

#[tokio::test]
async fn stop_and_cont_produce_events() {
    // A real (paused) PC under TCG.
    let qemu = Qemu::start(&["-M", "pc", "-accel", "tcg", "-S"]);
    let qmp = qemu.connect().await;
    let mut rx = qmp.events();
    let mut rx2 = qmp.events();

    qmp.execute("cont", None).await.unwrap();
    let resume = next_named(&mut rx, "RESUME").await;
    let status = qmp.execute("query-status", None).await.unwrap();
    assert_eq!(status["running"], true, "{status}");

    qmp.execute("stop", None).await.unwrap();
    let stop = next_named(&mut rx, "STOP").await;

    let (s1, us1) = resume.timestamp.expect("RESUME has a timestamp");
    let (s2, us2) = stop.timestamp.expect("STOP has a timestamp");
    assert!(s1 > 1_600_000_000 && (0..1_000_000).contains(&us1));
    assert!((s2, us2) >= (s1, us1), "STOP before RESUME?");

    // A second subscriber sees the same sequence, in order.
    let first = next_named(&mut rx2, "RESUME").await;
    assert_eq!(first.timestamp, resume.timestamp);
    let second = next_named(&mut rx2, "STOP").await;
    assert_eq!(second.timestamp, stop.timestamp);
}

#[tokio::test]
async fn event_data_is_carried() {
    let qemu = Qemu::start(&["-M", "none", "-S"]);
    let qmp = qemu.connect().await;
    let mut rx = qmp.events();
    qmp.execute("cont", None).await.unwrap();
    next_named(&mut rx, "RESUME").await;

    // QEMU emits RESUME before the reply to `cont`, so a subscriber made now
    // must not see it: events are not replayed, the next one is STOP.
    let mut late = qmp.events();
    qmp.execute("stop", None).await.unwrap();
    next_named(&mut rx, "STOP").await;
    let first = tokio::time::timeout(WAIT, late.recv()).await.unwrap().unwrap();
    assert_eq!(first.name, "STOP");

    // `system_reset` reports who asked, in the event data.
    qmp.execute("system_reset", None).await.unwrap();
    let reset = next_named(&mut rx, "RESET").await;
    assert_eq!(reset.data["guest"], false, "{:?}", reset.data);
}
