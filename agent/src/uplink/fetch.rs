//! Backup parts for restores: a `restore` job asks, the uplink's session carries the question
//! to the controller (`backup_fetch`) and the answer back (`backup_part`).
//!
//! [`BackupFetcher`] is the meeting point, shared by the executor's backups
//! ([`Backups::with_restores`](crate::backup::Backups::with_restores)) and the uplink
//! ([`Uplink::with_fetcher`](super::Uplink::with_fetcher)). A request waits in the fetcher
//! until a welcomed session takes it; the session then owns it until the controller's answer
//! arrives. When that connection ends first, the request is dropped and [`BackupFetcher::fetch`]
//! returns [`FetchError::LinkDropped`]: the caller asks again (from the bytes it has staged),
//! and the next connection carries it. Nothing here is durable; the staged file is.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use tikfleet_shared::protocol::{BackupFetch, BackupPart};
use tokio::sync::{Notify, oneshot};

/// Why a part did not arrive.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// The request or its answer was lost with the connection (ask again).
    #[error("the link to the controller dropped before the backup part arrived")]
    LinkDropped,
}

/// One request for a part, with the way to answer it.
#[derive(Debug)]
pub struct PendingFetch {
    request: BackupFetch,
    reply: oneshot::Sender<BackupPart>,
}

impl PendingFetch {
    /// What is asked for.
    #[must_use]
    pub fn request(&self) -> &BackupFetch {
        &self.request
    }

    /// Whether the asker gave up waiting (an answer would reach nobody).
    #[must_use]
    pub fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }

    /// Answers the request (the asker may have given up; then nothing happens).
    pub fn answer(self, part: BackupPart) {
        let _ = self.reply.send(part);
    }
}

#[derive(Debug, Default)]
struct Inner {
    queue: Mutex<VecDeque<PendingFetch>>,
    notify: Notify,
}

/// Where restores ask for backup parts and the uplink (or a test) serves them. Clones share
/// one queue.
#[derive(Clone, Debug, Default)]
pub struct BackupFetcher {
    inner: Arc<Inner>,
}

impl BackupFetcher {
    /// An empty fetcher.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<PendingFetch>> {
        self.inner
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Asks for a part and waits for the answer (no time limit: the caller bounds it).
    ///
    /// # Errors
    ///
    /// [`FetchError::LinkDropped`] when the request was dropped unanswered (its connection
    /// ended).
    pub async fn fetch(&self, request: BackupFetch) -> Result<BackupPart, FetchError> {
        let (reply, answer) = oneshot::channel();
        self.queue().push_back(PendingFetch { request, reply });
        self.inner.notify.notify_waiters();
        answer.await.map_err(|_| FetchError::LinkDropped)
    }

    /// Takes every waiting request (the uplink's session sends them).
    #[must_use]
    pub fn take(&self) -> Vec<PendingFetch> {
        self.queue().drain(..).collect()
    }

    /// Waits for the next request (for a server other than the uplink, such as a test).
    pub async fn next(&self) -> PendingFetch {
        loop {
            let notified = self.inner.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(pending) = self.queue().pop_front() {
                return pending;
            }
            notified.await;
        }
    }

    /// Completes when a request may have been added since the future was enabled (the
    /// session enables it before it takes the queue, so no request is missed).
    pub(crate) fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.inner.notify.notified()
    }
}

#[cfg(test)]
mod tests {
    use tikfleet_shared::JobId;

    use super::*;

    fn request(offset: u64) -> BackupFetch {
        BackupFetch {
            job_id: JobId::from_bytes([1; 16]),
            backup_id: "b".into(),
            offset,
        }
    }

    #[tokio::test]
    async fn answers_reach_the_asker_and_a_dropped_request_is_reported() {
        let fetcher = BackupFetcher::new();
        let server = fetcher.clone();
        let serve = tokio::spawn(async move {
            let first = server.next().await;
            let offset = first.request().offset;
            first.answer(BackupPart {
                job_id: JobId::from_bytes([1; 16]),
                backup_id: "b".into(),
                offset,
                total: 3,
                data: vec![1, 2, 3],
                error: None,
            });
            // The second is dropped unanswered, as a connection that ends drops it.
            drop(server.next().await);
        });
        let part = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            fetcher.fetch(request(0)).await
        })
        .await
        .expect("answered in time")
        .expect("answered");
        assert_eq!(part.data, [1, 2, 3]);
        let dropped = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            fetcher.fetch(request(3)).await
        })
        .await
        .expect("in time");
        assert_eq!(dropped, Err(FetchError::LinkDropped));
        serve.await.unwrap();
        assert!(fetcher.take().is_empty());

        // An asker that gave up leaves its request marked abandoned.
        let gave_up = tokio::time::timeout(std::time::Duration::from_millis(1), async {
            fetcher.fetch(request(6)).await
        })
        .await;
        assert!(gave_up.is_err(), "nobody answered");
        let left = fetcher.take();
        assert_eq!(left.len(), 1);
        assert!(left[0].abandoned());
        assert_eq!(left[0].request().offset, 6);
    }
}
