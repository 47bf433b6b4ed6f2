//! Time, injectable: everything in the agent and the controller that schedules (retry
//! backoff, token buckets, lifecycle deadlines, probes, token expiry) asks a [`Clock`] instead
//! of the system, so tests move time by hand and never sleep.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use tikfleet_shared::UnixMillis;
use tokio::sync::watch;

/// A future that completes when the clock reaches a moment.
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Where the agent and the controller get the time from.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// Now, as wall-clock milliseconds.
    fn now(&self) -> UnixMillis;
    /// Completes once `now() >= at`.
    fn sleep_until(&self, at: UnixMillis) -> Sleep;
}

/// A shared clock handle.
pub type SharedClock = Arc<dyn Clock>;

/// The system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixMillis {
        UnixMillis::from_system_time(SystemTime::now())
    }

    fn sleep_until(&self, at: UnixMillis) -> Sleep {
        let wait = at.as_millis().saturating_sub(self.now().as_millis()).max(0);
        Box::pin(tokio::time::sleep(Duration::from_millis(
            u64::try_from(wait).unwrap_or(0),
        )))
    }
}

/// A clock that moves only when a test says so; sleepers wake when it passes their moment.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<UnixMillis>>,
    tick: watch::Sender<UnixMillis>,
}

impl ManualClock {
    /// A clock standing at `start`.
    #[must_use]
    pub fn new(start: UnixMillis) -> Self {
        let (tick, _) = watch::channel(start);
        Self {
            now: Arc::new(Mutex::new(start)),
            tick,
        }
    }

    /// Moves the clock forward and wakes every sleeper whose moment has come.
    pub fn advance(&self, by: Duration) {
        let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        let now = {
            let mut now = self
                .now
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            *now = UnixMillis::new(now.as_millis().saturating_add(by));
            *now
        };
        self.tick.send_replace(now);
    }

    /// Sets the clock to `at` (never backwards).
    pub fn set(&self, at: UnixMillis) {
        let now = {
            let mut now = self
                .now
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            *now = (*now).max(at);
            *now
        };
        self.tick.send_replace(now);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> UnixMillis {
        *self
            .now
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn sleep_until(&self, at: UnixMillis) -> Sleep {
        let mut rx = self.tick.subscribe();
        Box::pin(async move {
            // The sender lives as long as the clock; if it is gone nobody can advance time.
            let _ = rx.wait_for(|now| *now >= at).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn manual_clock_wakes_sleepers_when_it_passes_their_moment() {
        let clock = ManualClock::new(UnixMillis::new(1_000));
        let sleeper = tokio::spawn(clock.sleep_until(UnixMillis::new(1_500)));
        clock.advance(Duration::from_millis(499));
        assert!(!sleeper.is_finished());
        clock.advance(Duration::from_millis(1));
        tokio::time::timeout(Duration::from_secs(5), sleeper)
            .await
            .expect("sleeper woke")
            .expect("no panic");
        assert_eq!(clock.now(), UnixMillis::new(1_500));
    }

    #[tokio::test]
    async fn a_moment_in_the_past_is_already_due() {
        let clock = ManualClock::new(UnixMillis::new(10));
        tokio::time::timeout(
            Duration::from_secs(5),
            clock.sleep_until(UnixMillis::new(5)),
        )
        .await
        .expect("due at once");
        tokio::time::timeout(
            Duration::from_secs(5),
            SystemClock.sleep_until(UnixMillis::EPOCH),
        )
        .await
        .expect("due at once");
    }
}
