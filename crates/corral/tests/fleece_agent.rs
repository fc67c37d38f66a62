//! The backup point in time of a VM with the guest agent: its filesystems are frozen around
//! the switch and thawed again, with the real `qemu-ga` in the test guest.

mod common;

use std::time::Duration;

use common::{guest, Env};
use corral_engine::engine::agent::GuestAgent;
use corral_engine::engine::fleece::FleeceRequest;
use corral_engine::{Engine, HostConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_agent_freezes_around_the_switch_and_always_thaws() {
    let env = Env::new();
    let g = guest();
    env.create_guest_from("qga", &g.kernel, &g.initrd_qga, "", &["--guest-agent"]);
    env.create_guest("plain", "");
    for vm in ["qga", "plain"] {
        env.ok(&["vm", "start", vm]);
    }
    env.wait_ready("qga", 1);
    env.wait_ready("plain", 1);
    let engine = Engine::open(HostConfig::load_file(&env.config, true).unwrap()).unwrap();
    let req = |new: &str| FleeceRequest {
        disk: "disk0".into(),
        since_bitmap: None,
        new_bitmap: new.into(),
        ..Default::default()
    };

    // The agent starts a moment after the ready marker: retry until it answers guest-sync
    // (each try waits up to 1 s for the reply).
    let sock = env.vm_run("qga").join("qga.sock");
    let mut agent = None;
    for _ in 0..50 {
        if let Ok(a) = GuestAgent::connect(&sock, Duration::from_secs(1)).await {
            agent = Some(a);
            break;
        }
    }
    let mut agent = agent.expect("the guest agent answers");
    assert_eq!(agent.freeze_status(Duration::from_secs(5)).await.unwrap(), "thawed");
    drop(agent); // one client at a time on the agent's channel

    let f = engine.fleece_open("qga", &[req("q1")]).await.unwrap();
    assert!(f.frozen.is_some(), "the agent was asked to freeze");
    engine.fleece_close(f, true).await.unwrap();
    let mut agent = GuestAgent::connect(&sock, Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        agent.freeze_status(Duration::from_secs(5)).await.unwrap(),
        "thawed",
        "thawed after the switch"
    );
    drop(agent);

    // Without an agent the point in time is crash-consistent, and says so.
    let f = engine.fleece_open("plain", &[req("p1")]).await.unwrap();
    assert_eq!(f.frozen, None);
    engine.fleece_close(f, true).await.unwrap();
    // A backup through the CLI is frozen by the agent too, and its drill waits for the
    // restored guest's agent to answer a ping (no console line needed).
    let b = env.json(&["backup", "run", "qga"]);
    assert!(b[0]["frozen"].as_u64().is_some(), "{b}");
    for vm in ["qga", "plain"] {
        env.ok(&["vm", "kill", vm]);
    }
    let d = env.json(&["backup", "drill", b[0]["id"].as_str().unwrap(), "--timeout", "90s"]);
    assert_eq!(d["passed"], true, "{d}");
    assert_eq!(d["sign"], "guest-agent ping", "{d}");
}
