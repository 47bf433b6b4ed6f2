//! Gathers the store calls of many sessions into batched ones.
//!
//! One staff change can wake thousands of sessions at once (a plan used on every router).
//! Each session then needs the same reads (routers, desired states, jobs, cancels) and, once
//! the agent acks, the same small writes (jobs delivered, states stored). Asked one session
//! at a time that is several queries and a transaction per agent, all queueing for the same
//! few database connections (and, on SQLite, for its one write lock), so the last agent waits
//! for everyone's. Instead a session hands its call to a [`Batcher`] task, which takes
//! whatever is waiting (up to `HubConfig::read_batch` calls) and makes one store call for all
//! of them ([`HubStore::push_reads`], [`HubStore::record_deliveries`]), with a bounded number
//! of batches at a time. While a batch runs the next one fills: a lone change costs one small
//! batch, a fleet-wide one a few large ones.

use std::future::Future;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use super::store::{Delivered, HubStore, PushRead, PushRequest};

type Reply<A> = oneshot::Sender<Result<A, String>>;

/// A handle to a batching task; cheap to clone. The task ends when every handle is gone.
#[derive(Debug)]
pub(crate) struct Batcher<Q, A> {
    tx: mpsc::UnboundedSender<(Q, Reply<A>)>,
}

impl<Q, A> Clone for Batcher<Q, A> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

impl<Q: Send + 'static, A: Send + 'static> Batcher<Q, A> {
    /// Starts the task (inside a Tokio runtime): `call` answers a batch of at most
    /// `max_batch` questions with one answer each, in order; at most `in_flight` run at once.
    pub(crate) fn spawn<F, Fut>(max_batch: usize, in_flight: usize, call: F) -> Self
    where
        F: Fn(Vec<Q>) -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<Vec<A>>> + Send + 'static,
    {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(rx, max_batch.max(1), in_flight.max(1), call));
        Self { tx }
    }

    /// Asks `question` in the next batch and waits for its answer.
    pub(crate) async fn call(&self, question: Q) -> anyhow::Result<A> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((question, reply))
            .map_err(|_| anyhow::anyhow!("the hub's store batcher stopped"))?;
        match answer.await {
            Ok(Ok(a)) => Ok(a),
            Ok(Err(e)) => Err(anyhow::anyhow!(e)),
            Err(_) => Err(anyhow::anyhow!("a batch of hub store calls failed")),
        }
    }
}

async fn run<Q, A, F, Fut>(
    mut rx: mpsc::UnboundedReceiver<(Q, Reply<A>)>,
    max_batch: usize,
    in_flight: usize,
    call: F,
) where
    Q: Send + 'static,
    A: Send + 'static,
    F: Fn(Vec<Q>) -> Fut,
    Fut: Future<Output = anyhow::Result<Vec<A>>> + Send + 'static,
{
    let mut running = JoinSet::new();
    loop {
        tokio::select! {
            next = rx.recv(), if running.len() < in_flight => {
                let Some(first) = next else { break };
                let mut batch = vec![first];
                while batch.len() < max_batch {
                    match rx.try_recv() {
                        Ok(more) => batch.push(more),
                        Err(_) => break,
                    }
                }
                let (questions, replies): (Vec<Q>, Vec<Reply<A>>) = batch.into_iter().unzip();
                let answers = call(questions);
                running.spawn(async move { answer(replies, answers.await) });
            }
            Some(done) = running.join_next(), if !running.is_empty() => {
                if let Err(e) = done {
                    // The replies were dropped with the task: the callers see an error.
                    tracing::error!(error = %e, "a batch of hub store calls panicked");
                }
            }
        }
    }
    while running.join_next().await.is_some() {}
}

fn answer<A>(replies: Vec<Reply<A>>, answers: anyhow::Result<Vec<A>>) {
    let error = match answers {
        Ok(answers) if answers.len() == replies.len() => {
            for (reply, a) in replies.into_iter().zip(answers) {
                let _ = reply.send(Ok(a));
            }
            return;
        }
        Ok(answers) => format!(
            "the store answered {} of {} calls",
            answers.len(),
            replies.len()
        ),
        Err(e) => format!("{e:#}"),
    };
    for reply in replies {
        let _ = reply.send(Err(error.clone()));
    }
}

/// The hub's two batchers over its store.
#[derive(Debug)]
pub(crate) struct Batches {
    /// What to push ([`HubStore::push_reads`]); two batches at a time.
    pub reads: Batcher<PushRequest, PushRead>,
    /// What agents acknowledged ([`HubStore::record_deliveries`]); one transaction at a time.
    pub writes: Batcher<Delivered, ()>,
}

impl Batches {
    pub(crate) fn spawn<H: HubStore>(store: &H, max_batch: usize) -> Self {
        let reader = store.clone();
        let writer = store.clone();
        Self {
            reads: Batcher::spawn(max_batch, 2, move |requests: Vec<PushRequest>| {
                let store = reader.clone();
                async move { store.push_reads(&requests).await }
            }),
            writes: Batcher::spawn(max_batch, 1, move |batch: Vec<Delivered>| {
                let store = writer.clone();
                async move {
                    store.record_deliveries(&batch).await?;
                    Ok(vec![(); batch.len()])
                }
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn concurrent_calls_share_batches_and_get_their_own_answers() {
        let largest = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&largest);
        let batcher = Batcher::spawn(100, 2, move |questions: Vec<u32>| {
            seen.fetch_max(questions.len(), Ordering::SeqCst);
            async move { Ok(questions.into_iter().map(|q| q * 2).collect()) }
        });
        let mut tasks = JoinSet::new();
        for q in 0..300u32 {
            let batcher = batcher.clone();
            tasks.spawn(async move { (q, batcher.call(q).await.unwrap()) });
        }
        let mut answered = 0;
        while let Some(done) = tasks.join_next().await {
            let (q, a) = done.unwrap();
            assert_eq!(a, q * 2);
            answered += 1;
        }
        assert_eq!(answered, 300);
        assert!(largest.load(Ordering::SeqCst) <= 100);
    }

    #[tokio::test]
    async fn a_failed_batch_fails_each_call_in_it() {
        let batcher = Batcher::spawn(10, 1, |_: Vec<u32>| async {
            Err::<Vec<u32>, _>(anyhow::anyhow!("database down"))
        });
        let e = batcher.call(1).await.unwrap_err();
        assert!(e.to_string().contains("database down"), "{e}");
        let short = Batcher::spawn(10, 1, |_: Vec<u32>| async { Ok(Vec::<u32>::new()) });
        assert!(short.call(1).await.is_err(), "a missing answer is an error");
    }
}
