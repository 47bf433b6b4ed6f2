//! RouterOS API connections (plain and TLS): login, dispatch, tags, `/cancel` and faults.
//!
//! One reader loop per connection decodes sentences; `/login`, `/quit` and `/cancel` are
//! handled inline, every other command runs as its own task so tagged commands overlap and
//! their replies interleave. Untagged commands are chained so their replies keep their order.
//! A writer task owns the socket half and writes whatever the tasks hand it. The network-delay
//! fault sleeps in the command's task (so delays overlap); the service-time fault holds the
//! router's service lock (so commands are served one at a time).
//!
//! Limits (a client's bad input costs it its connection, never the simulator its memory):
//! a word or sentence over the codec's limits (`word.rs`) ends the connection with `!fatal`;
//! at most [`MAX_IN_FLIGHT`] commands run per connection and at most [`MAX_UNSENT`] reply
//! bytes wait for the socket; beyond either the reader stops reading until there is room, so
//! TCP pushes back on the client and nothing is dropped.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio::task::{AbortHandle, JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

use crate::device::{Command, Effect};
use crate::model::CommandError;
use crate::reply::Reply;
use crate::router::{Router, lock};
use crate::word::Decoder;

/// Most commands one connection may have running (tagged ones overlap; untagged ones queue).
/// mikrotik-rs pipelines thousands of tagged commands, so this is generous; beyond it the
/// connection is not read until one finishes.
pub const MAX_IN_FLIGHT: usize = 4096;

/// Most reply bytes one connection may have queued for its socket (a client that does not
/// read its replies stops being read).
pub const MAX_UNSENT: usize = 64 * 1024 * 1024;

/// How long a connection at [`MAX_IN_FLIGHT`] waits for a command to finish before it is
/// closed (only `listen`s, or commands queued behind an untagged `listen`, never finish).
const SLOT_WAIT: Duration = Duration::from_secs(30);

/// How long a TLS client may take to finish its handshake.
const TLS_HANDSHAKE: Duration = Duration::from_secs(10);

enum Out {
    /// Reply bytes and their share of the connection's [`MAX_UNSENT`] budget.
    Data(Vec<u8>, OwnedSemaphorePermit),
    /// Answer once everything queued before is written to the socket.
    Flushed(oneshot::Sender<()>),
    Close,
}

/// The sending side of a connection's writer, with its byte budget.
#[derive(Clone)]
struct Sender {
    tx: mpsc::UnboundedSender<Out>,
    budget: Arc<Semaphore>,
}

impl Sender {
    fn new(tx: mpsc::UnboundedSender<Out>) -> Self {
        Self {
            tx,
            budget: Arc::new(Semaphore::new(MAX_UNSENT)),
        }
    }

    /// Queues reply bytes, waiting while the budget is spent (the writer returns it).
    async fn send(&self, data: Vec<u8>) {
        // A reply larger than the whole budget waits for all of it.
        let n = u32::try_from(data.len().min(MAX_UNSENT)).unwrap_or(u32::MAX);
        let Ok(permit) = self.budget.clone().acquire_many_owned(n).await else {
            return;
        };
        let _ = self.tx.send(Out::Data(data, permit));
    }

    /// Waits until everything queued so far is written out (or the connection is gone).
    async fn flushed(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Out::Flushed(done)).is_ok() {
            let _ = wait.await;
        }
    }

    fn close(&self) {
        let _ = self.tx.send(Out::Close);
    }
}

/// How a connection ends.
enum End {
    /// Flush what was written, then close.
    Graceful,
    /// Close at once.
    Abort,
}

/// Accepts connections until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    router: Arc<Router>,
    tls: Option<TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
) {
    let service = if tls.is_some() { "api-ssl" } else { "api" };
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                warn!(router = router.index, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        lock(&router.stats).connections += 1;
        let allowed = lock(&router.device).service_allows(service, peer.ip());
        if !router.accepts(service) || !allowed {
            debug!(router = router.index, %peer, "refusing connection");
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let shutdown = shutdown.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => connection_from(stream, router, shutdown, Some(peer.ip()), service).await,
                Some(acc) => match tokio::time::timeout(TLS_HANDSHAKE, acc.accept(stream)).await {
                    Ok(Ok(s)) => {
                        connection_from(s, router, shutdown, Some(peer.ip()), service).await;
                    }
                    Ok(Err(e)) => debug!(error = %e, "tls handshake failed"),
                    Err(_) => debug!(%peer, "tls handshake timed out"),
                },
            }
        });
    }
}

async fn writer<W: AsyncWrite + Unpin>(w: W, mut rx: mpsc::UnboundedReceiver<Out>) {
    let mut w = BufWriter::with_capacity(64 * 1024, w);
    while let Some(msg) = rx.recv().await {
        match msg {
            Out::Data(b, permit) => {
                if w.write_all(&b).await.is_err() {
                    return;
                }
                drop(permit);
            }
            Out::Flushed(done) => {
                if w.flush().await.is_err() {
                    return;
                }
                let _ = done.send(());
                continue;
            }
            Out::Close => {
                let _ = w.flush().await;
                let _ = w.shutdown().await;
                return;
            }
        }
        if rx.is_empty() && w.flush().await.is_err() {
            return;
        }
    }
}

/// Serves one connection.
pub async fn connection<S>(stream: S, router: Arc<Router>, shutdown: watch::Receiver<bool>)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    connection_from(stream, router, shutdown, None, "api").await;
}

/// Serves one connection from `peer` (the address `/user/active` shows and `/user`
/// `address=` is checked against) on `service` (`api` or `api-ssl`).
pub async fn connection_from<S>(
    stream: S,
    router: Arc<Router>,
    mut shutdown: watch::Receiver<bool>,
    peer: Option<IpAddr>,
    via: &'static str,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (rd, wr) = tokio::io::split(stream);
    let (tx, rx) = mpsc::unbounded_channel();
    let tx = Sender::new(tx);
    let mut writer = tokio::spawn(writer(wr, rx));
    let mut reboots = router.reboots.subscribe();
    lock(&router.stats).open += 1;
    let mut conn = Conn {
        router: router.clone(),
        tx: tx.clone(),
        logged_in: false,
        commands: 0,
        running: Arc::new(Mutex::new(HashMap::new())),
        slots: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        tasks: JoinSet::new(),
        last_untagged: None,
        seq: 0,
        peer,
        via,
        active: None,
    };
    let end = tokio::select! {
        e = conn.read_loop(rd) => e,
        _ = reboots.changed() => End::Abort,
        _ = shutdown.changed() => End::Abort,
    };
    conn.tasks.abort_all();
    if let Some(id) = conn.active.take() {
        lock(&router.device).user_logout(id);
    }
    match end {
        End::Graceful => {
            tx.close();
            let _ = tokio::time::timeout(Duration::from_secs(5), &mut writer).await;
        }
        End::Abort => writer.abort(),
    }
    let mut st = lock(&router.stats);
    st.open = st.open.saturating_sub(1);
}

/// A running command: its tag (if any) and the handle that aborts its task.
struct Entry {
    tag: Option<String>,
    handle: Option<AbortHandle>,
}

/// Running commands by a per-connection sequence number (a client may reuse a tag; each
/// command still gets its reply).
type Running = Arc<Mutex<HashMap<u64, Entry>>>;

struct Conn {
    router: Arc<Router>,
    tx: Sender,
    logged_in: bool,
    commands: u64,
    running: Running,
    /// One permit per running command ([`MAX_IN_FLIGHT`]).
    slots: Arc<Semaphore>,
    tasks: JoinSet<()>,
    last_untagged: Option<JoinHandle<()>>,
    seq: u64,
    /// The client's address as the router sees it.
    peer: Option<IpAddr>,
    /// `api` or `api-ssl` (`/user/active` `via`).
    via: &'static str,
    /// This connection's `/user/active` row, once logged in.
    active: Option<u32>,
}

impl Conn {
    async fn read_loop<R: AsyncRead + Unpin>(&mut self, mut rd: R) -> End {
        let mut buf = vec![0u8; 64 * 1024];
        let mut dec = Decoder::new();
        loop {
            let n = match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return End::Abort,
                Ok(n) => n,
            };
            dec.push(&buf[..n]);
            loop {
                match dec.next_sentence() {
                    Ok(Some(words)) => {
                        if let Some(end) = self.sentence(words).await {
                            return end;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        warn!(router = self.router.index, error = %e, "closing api connection: bad api stream");
                        // The stream cannot be resynchronised; say why, then close ([I]: what
                        // RouterOS sends here is unconfirmed).
                        let mut out = Vec::new();
                        Reply::new(&mut out, None).fatal(&e.to_string());
                        self.send(out).await;
                        return End::Graceful;
                    }
                }
            }
            while self.tasks.try_join_next().is_some() {}
        }
    }

    async fn send(&self, data: Vec<u8>) {
        self.tx.send(data).await;
    }

    async fn sentence(&mut self, words: Vec<String>) -> Option<End> {
        let cmd = Command::parse(words);
        let now = Instant::now();
        lock(&self.router.stats).record(&cmd.word, now);
        if self.router.api_hung() {
            // A hung API service (fault): nothing is ever answered; a reboot closes this.
            return None;
        }
        let (drop_after, delay) = {
            let f = lock(&self.router.faults);
            (f.drop_after, Duration::from_millis(f.delay_ms))
        };
        if cmd.word != "/login" {
            self.commands += 1;
            if drop_after.is_some_and(|n| self.commands > n) {
                debug!(router = self.router.index, "dropping connection (fault)");
                return Some(End::Abort);
            }
        }
        let tag = cmd.tag.clone();
        let mut out = Vec::new();
        let mut reply = Reply::new(&mut out, tag.as_deref());
        match cmd.word.as_str() {
            "/login" => {
                let user = cmd.get("name").unwrap_or("");
                let ok = {
                    let mut dev = lock(&self.router.device);
                    let ok = dev.authorize(user, cmd.get("password").unwrap_or(""), self.peer);
                    if ok {
                        dev.note_login(user, now);
                        if let Some(old) = self.active.take() {
                            dev.user_logout(old);
                        }
                        self.active = Some(dev.user_login(user, self.peer, self.via));
                    }
                    ok
                };
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                if ok {
                    self.logged_in = true;
                    reply.done();
                    self.send(out).await;
                    None
                } else {
                    reply.error(&CommandError::Failure(
                        "invalid user name or password (6)".into(),
                    ));
                    self.send(out).await;
                    Some(End::Graceful)
                }
            }
            "/quit" => {
                reply.fatal("session terminated on request");
                self.send(out).await;
                Some(End::Graceful)
            }
            _ if !self.logged_in => {
                // RouterOS's reply to commands before login is unconfirmed; `not logged in`
                // with the connection kept open is the likeliest [I].
                reply.error(&CommandError::NotLoggedIn);
                self.send(out).await;
                None
            }
            "/cancel" => {
                let buf = self.cancel(&cmd);
                self.send(buf).await;
                None
            }
            _ => self.spawn(cmd).await,
        }
    }

    /// `/cancel [=tag=N]`: the cancelled command's trap, then cancel's own `!done`, then the
    /// cancelled command's `!done`. Without `=tag=` every running command is cancelled.
    /// Cancelling an unknown or finished tag gets a bare `!done` [U].
    fn cancel(&mut self, cmd: &Command) -> Vec<u8> {
        let mut targets: Vec<(u64, Entry)> = {
            let mut running = lock(&self.running);
            let keys: Vec<u64> = running
                .iter()
                .filter(|(_, e)| cmd.get("tag").is_none_or(|t| e.tag.as_deref() == Some(t)))
                .map(|(k, _)| *k)
                .collect();
            keys.into_iter()
                .filter_map(|k| running.remove(&k).map(|e| (k, e)))
                .collect()
        };
        targets.sort_by_key(|(k, _)| *k);
        let mut buf = Vec::new();
        for (_, e) in &targets {
            if let Some(h) = &e.handle {
                h.abort();
            }
            Reply::new(&mut buf, e.tag.as_deref()).trap(&CommandError::Interrupted);
        }
        Reply::new(&mut buf, cmd.tag.as_deref()).done();
        for (_, e) in &targets {
            Reply::new(&mut buf, e.tag.as_deref()).done();
        }
        buf
    }

    /// Runs a command in its own task once a slot is free: at [`MAX_IN_FLIGHT`] the connection
    /// is not read further until a command finishes, and is closed if none does in
    /// [`SLOT_WAIT`].
    async fn spawn(&mut self, cmd: Command) -> Option<End> {
        let slot = match tokio::time::timeout(SLOT_WAIT, self.slots.clone().acquire_owned()).await {
            Ok(Ok(slot)) => slot,
            Ok(Err(_)) => return Some(End::Abort),
            Err(_) => {
                warn!(
                    router = self.router.index,
                    limit = MAX_IN_FLIGHT,
                    "closing api connection: too many commands in progress"
                );
                let mut out = Vec::new();
                Reply::new(&mut out, None).fatal("too many commands in progress");
                self.send(out).await;
                return Some(End::Graceful);
            }
        };
        while self.tasks.try_join_next().is_some() {}
        self.seq += 1;
        let key = self.seq;
        lock(&self.running).insert(
            key,
            Entry {
                tag: cmd.tag.clone(),
                handle: None,
            },
        );
        let prev = if cmd.tag.is_none() {
            self.last_untagged.take()
        } else {
            None
        };
        let task = Task {
            router: self.router.clone(),
            tx: self.tx.clone(),
            running: self.running.clone(),
            key,
        };
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let untagged = cmd.tag.is_none();
        let handle = self.tasks.spawn(async move {
            let _slot = slot;
            if let Some(p) = prev {
                let _ = p.await;
            }
            task.run(cmd).await;
            let _ = done_tx.send(());
        });
        if untagged {
            self.last_untagged = Some(tokio::spawn(async move {
                let _ = done_rx.await;
            }));
        }
        if let Some(e) = lock(&self.running).get_mut(&key) {
            e.handle = Some(handle);
        }
        None
    }
}

/// One command running in its own task.
struct Task {
    router: Arc<Router>,
    tx: Sender,
    running: Running,
    key: u64,
}

/// Counts a command in flight for the stats while alive.
struct InFlight(Arc<Router>);

impl InFlight {
    fn new(r: Arc<Router>) -> Self {
        let mut st = lock(&r.stats);
        st.in_flight += 1;
        st.max_in_flight = st.max_in_flight.max(st.in_flight);
        drop(st);
        Self(r)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut st = lock(&self.0.stats);
        st.in_flight = st.in_flight.saturating_sub(1);
    }
}

impl Task {
    async fn send(&self, data: Vec<u8>) {
        self.tx.send(data).await;
    }

    /// Sends the final reply unless the command was cancelled meanwhile.
    async fn finish(&self, data: Vec<u8>) {
        let running = lock(&self.running).remove(&self.key).is_some();
        if running {
            self.send(data).await;
        }
    }

    async fn run(self, cmd: Command) {
        let _in_flight = InFlight::new(self.router.clone());
        let (service, delay, trap, cpu, mem) = {
            let f = lock(&self.router.faults);
            (
                Duration::from_millis(f.service_ms),
                Duration::from_millis(f.delay_ms),
                f.traps.get(&cmd.word).cloned(),
                f.cpu_load,
                f.memory_load,
            )
        };
        let guard = if service.is_zero() {
            None
        } else {
            // Served after the commands ahead of it, or from its arrival if the router was
            // idle then (not from when this task got the lock: that is late by a tick).
            let arrived = tokio::time::Instant::now();
            let mut g = self.router.service.lock().await;
            let done = g.map_or(arrived, |free| free.max(arrived)) + service;
            *g = Some(done);
            tokio::time::sleep_until(done).await;
            Some(g)
        };
        let tag = cmd.tag.as_deref();
        let mut out = Vec::new();
        let effect = {
            let mut reply = Reply::new(&mut out, tag);
            match trap {
                Some(msg) => {
                    reply.error(&CommandError::Failure(msg));
                    Effect::Done
                }
                None => {
                    let mut dev = lock(&self.router.device);
                    let now = Instant::now();
                    if let Some(l) = cpu {
                        dev.cpu_load = l;
                    }
                    if let Some(m) = mem {
                        dev.memory_load = m;
                    }
                    match dev.exec(&cmd, now, &mut reply) {
                        Ok(e) => e,
                        Err(e) => {
                            reply.error(&e);
                            Effect::Done
                        }
                    }
                }
            }
        };
        drop(guard);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        match effect {
            Effect::Done | Effect::Quit => self.finish(out).await,
            Effect::Reboot => {
                lock(&self.running).remove(&self.key);
                self.router.reboot(None);
            }
            Effect::RebootAfterReply => {
                self.finish(out).await;
                // The reply reaches the client before the reboot closes the connection.
                self.tx.flushed().await;
                self.router.reboot(None);
            }
            Effect::CheckForUpdates => {
                let rows = lock(&self.router.device).update_check_rows();
                for (n, row) in rows.iter().enumerate() {
                    let mut buf = Vec::new();
                    let mut r = Reply::new(&mut buf, tag);
                    r.start("!re");
                    for (k, v) in row {
                        r.attr(k, v);
                    }
                    r.end();
                    if n + 1 == rows.len() {
                        r.done();
                        self.finish(buf).await;
                    } else {
                        self.send(buf).await;
                        tokio::time::sleep(Duration::from_millis(30)).await;
                    }
                }
            }
            Effect::Listen => std::future::pending::<()>().await,
        }
    }
}
