//! Background work on the controller's clock: [`Periodic`] runs a piece of work at once and
//! then every interval until shut down. The alert evaluation, health retention, backup
//! retention, the backup schedule and rotation scheduling are each one.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::clock::SharedClock;

/// A task running `work` at once, then every `interval` of the clock (the interval counts
/// from the end of a run), until [`Periodic::shutdown`].
#[derive(Debug)]
pub struct Periodic {
    stop: Arc<tokio::sync::Notify>,
    task: JoinHandle<()>,
}

impl Periodic {
    /// Starts it on the current runtime.
    #[must_use]
    pub fn start<F, Fut>(clock: SharedClock, interval: Duration, mut work: F) -> Self
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let stop = Arc::new(tokio::sync::Notify::new());
        let stopped = Arc::clone(&stop);
        let task = tokio::spawn(async move {
            loop {
                work().await;
                let next = clock.now().saturating_add(interval);
                tokio::select! {
                    () = stopped.notified() => break,
                    () = clock.sleep_until(next) => {}
                }
            }
        });
        Self { stop, task }
    }

    /// Stops it (a run under way finishes first) and waits for it.
    pub async fn shutdown(self) {
        self.stop.notify_one();
        let _ = self.task.await;
    }
}
