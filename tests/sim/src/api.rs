//! RouterOS API connections (plain and TLS): login, dispatch, tags, `/cancel` and faults.
//!
//! One reader loop per connection decodes sentences; `/login`, `/quit` and `/cancel` are
//! handled inline, every other command runs as its own task so tagged commands overlap and
//! their replies interleave. Untagged commands are chained so their replies keep their order.
//! A writer task owns the socket half and writes whatever the tasks hand it. The network-delay
//! fault sleeps in the command's task (so delays overlap); the service-time fault holds the
//! router's service lock (so commands are served one at a time).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

use crate::device::{Command, Effect};
use crate::model::CommandError;
use crate::reply::Reply;
use crate::router::{Router, lock};
use crate::word::Decoder;

enum Out {
    Data(Vec<u8>),
    Close,
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
        if !router.accepts(service) {
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
                None => connection(stream, router, shutdown).await,
                Some(acc) => match acc.accept(stream).await {
                    Ok(s) => connection(s, router, shutdown).await,
                    Err(e) => debug!(error = %e, "tls handshake failed"),
                },
            }
        });
    }
}

async fn writer<W: AsyncWrite + Unpin>(w: W, mut rx: mpsc::UnboundedReceiver<Out>) {
    let mut w = BufWriter::with_capacity(64 * 1024, w);
    while let Some(msg) = rx.recv().await {
        match msg {
            Out::Data(b) => {
                if w.write_all(&b).await.is_err() {
                    return;
                }
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
pub async fn connection<S>(stream: S, router: Arc<Router>, mut shutdown: watch::Receiver<bool>)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (rd, wr) = tokio::io::split(stream);
    let (tx, rx) = mpsc::unbounded_channel();
    let mut writer = tokio::spawn(writer(wr, rx));
    let mut reboots = router.reboots.subscribe();
    lock(&router.stats).open += 1;
    let mut conn = Conn {
        router: router.clone(),
        tx: tx.clone(),
        logged_in: false,
        commands: 0,
        running: Arc::new(Mutex::new(HashMap::new())),
        tasks: JoinSet::new(),
        last_untagged: None,
        seq: 0,
    };
    let end = tokio::select! {
        e = conn.read_loop(rd) => e,
        _ = reboots.changed() => End::Abort,
        _ = shutdown.changed() => End::Abort,
    };
    conn.tasks.abort_all();
    match end {
        End::Graceful => {
            let _ = tx.send(Out::Close);
            let _ = tokio::time::timeout(Duration::from_secs(5), &mut writer).await;
        }
        End::Abort => writer.abort(),
    }
    let mut st = lock(&router.stats);
    st.open = st.open.saturating_sub(1);
}

type Running = Arc<Mutex<HashMap<String, Option<AbortHandle>>>>;

struct Conn {
    router: Arc<Router>,
    tx: mpsc::UnboundedSender<Out>,
    logged_in: bool,
    commands: u64,
    running: Running,
    tasks: JoinSet<()>,
    last_untagged: Option<JoinHandle<()>>,
    seq: u64,
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
                        debug!(router = self.router.index, error = %e, "bad api stream");
                        return End::Abort;
                    }
                }
            }
            while self.tasks.try_join_next().is_some() {}
        }
    }

    fn send(&self, data: Vec<u8>) {
        let _ = self.tx.send(Out::Data(data));
    }

    async fn sentence(&mut self, words: Vec<String>) -> Option<End> {
        let cmd = Command::parse(words);
        let now = Instant::now();
        lock(&self.router.stats).record(&cmd.word, now);
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
                    let ok = dev.authenticate(user, cmd.get("password").unwrap_or(""));
                    if ok {
                        dev.note_login(user, now);
                    }
                    ok
                };
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                if ok {
                    self.logged_in = true;
                    reply.done();
                    self.send(out);
                    None
                } else {
                    reply.error(&CommandError::Failure(
                        "invalid user name or password (6)".into(),
                    ));
                    self.send(out);
                    Some(End::Graceful)
                }
            }
            "/quit" => {
                reply.fatal("session terminated on request");
                self.send(out);
                Some(End::Graceful)
            }
            _ if !self.logged_in => {
                // RouterOS's reply to commands before login is unconfirmed; `not logged in`
                // with the connection kept open is the likeliest [I].
                reply.error(&CommandError::NotLoggedIn);
                self.send(out);
                None
            }
            "/cancel" => {
                let buf = self.cancel(&cmd);
                self.send(buf);
                None
            }
            _ => {
                self.spawn(cmd);
                None
            }
        }
    }

    /// `/cancel [=tag=N]`: the cancelled command's trap, then cancel's own `!done`, then the
    /// cancelled command's `!done`. Without `=tag=` every running command is cancelled.
    /// Cancelling an unknown or finished tag gets a bare `!done` [U].
    fn cancel(&mut self, cmd: &Command) -> Vec<u8> {
        let targets: Vec<(String, Option<AbortHandle>)> = {
            let mut running = lock(&self.running);
            match cmd.get("tag") {
                Some(t) => running
                    .remove(t)
                    .map(|h| vec![(t.to_string(), h)])
                    .unwrap_or_default(),
                None => running.drain().collect(),
            }
        };
        let mut buf = Vec::new();
        for (tag, handle) in &targets {
            if let Some(h) = handle {
                h.abort();
            }
            if !tag.starts_with('\0') {
                Reply::new(&mut buf, Some(tag)).trap(&CommandError::Interrupted);
            } else {
                Reply::new(&mut buf, None).trap(&CommandError::Interrupted);
            }
        }
        Reply::new(&mut buf, cmd.tag.as_deref()).done();
        for (tag, _) in &targets {
            let t = (!tag.starts_with('\0')).then_some(tag.as_str());
            Reply::new(&mut buf, t).done();
        }
        buf
    }

    fn spawn(&mut self, cmd: Command) {
        let key = match &cmd.tag {
            Some(t) => t.clone(),
            None => {
                self.seq += 1;
                format!("\0{}", self.seq)
            }
        };
        lock(&self.running).insert(key.clone(), None);
        let prev = if cmd.tag.is_none() {
            self.last_untagged.take()
        } else {
            None
        };
        let task = Task {
            router: self.router.clone(),
            tx: self.tx.clone(),
            running: self.running.clone(),
            key: key.clone(),
        };
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let untagged = cmd.tag.is_none();
        let handle = self.tasks.spawn(async move {
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
        if let Some(slot) = lock(&self.running).get_mut(&key) {
            *slot = Some(handle);
        }
    }
}

/// One command running in its own task.
struct Task {
    router: Arc<Router>,
    tx: mpsc::UnboundedSender<Out>,
    running: Running,
    key: String,
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
    fn send(&self, data: Vec<u8>) {
        let _ = self.tx.send(Out::Data(data));
    }

    /// Sends the final reply unless the command was cancelled meanwhile.
    fn finish(&self, data: Vec<u8>) {
        if lock(&self.running).remove(&self.key).is_some() {
            self.send(data);
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
            let g = self.router.service.lock().await;
            tokio::time::sleep(service).await;
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
            Effect::Done | Effect::Quit => self.finish(out),
            Effect::Reboot => {
                lock(&self.running).remove(&self.key);
                self.router.reboot(None);
            }
            Effect::RebootAfterReply => {
                self.finish(out);
                // Let the writer flush the reply before the connections close.
                tokio::time::sleep(Duration::from_millis(20)).await;
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
                        self.finish(buf);
                    } else {
                        self.send(buf);
                        tokio::time::sleep(Duration::from_millis(30)).await;
                    }
                }
            }
            Effect::Listen => std::future::pending::<()>().await,
        }
    }
}
