//! The scheduler's notion of time, injected so that tests drive it: [`SystemClock`] for the
//! daemon, [`ManualClock`] for tests (time moves only when the test says so).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

pub type BoxFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
    /// The zone calendar expressions are read in.
    fn time_zone(&self) -> TimeZone;
    /// Resolves once `now() >= t`.
    fn sleep_until(&self, t: Timestamp) -> BoxFuture<'_>;
}

/// Wall-clock time in the host's zone (`TZ`, else `/etc/localtime`).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

/// Sleeps are cut into pieces this long and the wall clock read again after each, so a
/// clock that jumps (NTP, a suspended host) delays a due run by at most this much.
const RECHECK: Duration = Duration::from_secs(30);

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    fn time_zone(&self) -> TimeZone {
        TimeZone::system()
    }

    fn sleep_until(&self, t: Timestamp) -> BoxFuture<'_> {
        Box::pin(async move {
            loop {
                let left = t.duration_since(Timestamp::now());
                if left <= SignedDuration::ZERO {
                    return;
                }
                let left = Duration::try_from(left).unwrap_or(RECHECK);
                tokio::time::sleep(left.min(RECHECK)).await;
            }
        })
    }
}

/// A clock that stands still until [`ManualClock::set`] or [`ManualClock::advance`] moves
/// it; sleepers wake as soon as it passes their time. Clones share the same time.
#[derive(Clone)]
pub struct ManualClock {
    now: Arc<tokio::sync::watch::Sender<Timestamp>>,
    /// The time the latest `sleep_until` waits for.
    wake: Arc<tokio::sync::watch::Sender<Option<Timestamp>>>,
    tz: TimeZone,
}

impl ManualClock {
    pub fn new(start: Timestamp, tz: TimeZone) -> ManualClock {
        ManualClock {
            now: Arc::new(tokio::sync::watch::channel(start).0),
            wake: Arc::new(tokio::sync::watch::channel(None).0),
            tz,
        }
    }

    /// Resolves once something sleeps on this clock until `t` (a scheduler has planned
    /// its next run for `t`): lets a test move time only after the plan is made.
    pub async fn sleeping_until(&self, t: Timestamp) {
        let mut rx = self.wake.subscribe();
        let _ = rx.wait_for(|w| *w == Some(t)).await;
    }

    pub fn set(&self, t: Timestamp) {
        self.now.send_replace(t);
    }

    pub fn advance(&self, by: SignedDuration) {
        let t = *self.now.borrow();
        self.set(t.checked_add(by).expect("time within range"));
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.now.borrow()
    }

    fn time_zone(&self) -> TimeZone {
        self.tz.clone()
    }

    fn sleep_until(&self, t: Timestamp) -> BoxFuture<'_> {
        let mut rx = self.now.subscribe();
        self.wake.send_replace(Some(t));
        Box::pin(async move {
            // The sender lives as long as `self`, which outlives this future.
            let _ = rx.wait_for(|now| *now >= t).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn manual_clock_wakes_sleepers_when_moved_past_their_time() {
        let c = ManualClock::new("2025-01-01T00:00:00Z".parse().unwrap(), TimeZone::UTC);
        let due: Timestamp = "2025-01-01T02:00:00Z".parse().unwrap();
        let c2 = c.clone();
        let sleeper = tokio::spawn(async move { c2.sleep_until(due).await });
        c.sleeping_until(due).await;
        c.advance(SignedDuration::from_hours(1));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        c.advance(SignedDuration::from_hours(1));
        tokio::time::timeout(Duration::from_secs(5), sleeper)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(c.now(), due);
        // A time already passed does not wait.
        c.sleep_until(due).await;
    }
}
