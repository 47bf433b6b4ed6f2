//! A fault-injecting TCP proxy for link tests: it forwards loopback connections to a target
//! and, on command, cuts every live connection at once (mid-frame if data is flowing) or
//! refuses new ones, as a flaky site uplink does. Its target can change while it runs
//! ([`Proxy::set_target`]), so a client can be given the proxy's address before the server
//! behind it exists, or keep it across a server restart on another port.
//!
//! ```text
//! agent ──▶ Proxy (127.0.0.1:random) ──▶ hub
//!              ▲ cut() / set_refusing() / flap()
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rand::{Rng as _, SeedableRng as _};
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug)]
struct Control {
    /// Bumped by [`Proxy::cut`]; every connection task watches it and drops its sockets.
    cuts: watch::Sender<u64>,
    refusing: AtomicBool,
    /// Where new connections go.
    target: Mutex<SocketAddr>,
    accepted: AtomicU64,
    refused: AtomicU64,
}

/// A running proxy. Dropping it stops accepting; live connections end with their peers.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    control: Arc<Control>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Listen on an ephemeral loopback port and forward every connection to `target`.
    ///
    /// # Errors
    /// The listener cannot be bound.
    pub async fn start(target: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind((target.ip(), 0)).await?;
        let addr = listener.local_addr()?;
        let control = Arc::new(Control {
            cuts: watch::channel(0).0,
            refusing: AtomicBool::new(false),
            target: Mutex::new(target),
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        });
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&control)));
        Ok(Self {
            addr,
            control,
            task,
        })
    }

    /// Where clients connect.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Forward new connections to `target` from now on (live ones keep their peer).
    pub fn set_target(&self, target: SocketAddr) {
        *self
            .control
            .target
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = target;
    }

    /// Drop every live connection now (both sides see a reset or an EOF).
    pub fn cut(&self) {
        self.control.cuts.send_modify(|n| *n += 1);
    }

    /// While `true`, new connections are accepted and closed at once (the link is down).
    pub fn set_refusing(&self, refusing: bool) {
        self.control.refusing.store(refusing, Ordering::SeqCst);
    }

    /// Connections forwarded so far.
    #[must_use]
    pub fn accepted(&self) -> u64 {
        self.control.accepted.load(Ordering::SeqCst)
    }

    /// Connections refused so far.
    #[must_use]
    pub fn refused(&self) -> u64 {
        self.control.refused.load(Ordering::SeqCst)
    }

    /// Cuts performed so far.
    #[must_use]
    pub fn cuts(&self) -> u64 {
        *self.control.cuts.borrow()
    }

    /// Flap the link for `total`: cut every live connection after a random up-time between
    /// `up.0` and `up.1`, then refuse new connections for a random down-time between `down.0`
    /// and `down.1`, and again, until `total` has passed; the link is left up. `seed` makes
    /// the schedule repeatable. Returns the number of cuts.
    pub async fn flap(
        &self,
        total: Duration,
        up: (Duration, Duration),
        down: (Duration, Duration),
        seed: u64,
    ) -> u64 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let deadline = tokio::time::Instant::now() + total;
        let mut cuts = 0;
        loop {
            let up_for = rng.random_range(up.0..=up.1);
            if tokio::time::Instant::now() + up_for >= deadline {
                tokio::time::sleep_until(deadline).await;
                break;
            }
            tokio::time::sleep(up_for).await;
            self.set_refusing(true);
            self.cut();
            cuts += 1;
            let down_for = rng.random_range(down.0..=down.1);
            tokio::time::sleep(down_for.min(deadline - tokio::time::Instant::now())).await;
            self.set_refusing(false);
            if tokio::time::Instant::now() >= deadline {
                break;
            }
        }
        self.set_refusing(false);
        cuts
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut();
    }
}

async fn accept_loop(listener: TcpListener, control: Arc<Control>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        if control.refusing.load(Ordering::SeqCst) {
            control.refused.fetch_add(1, Ordering::SeqCst);
            reset(&client);
            drop(client);
            continue;
        }
        control.accepted.fetch_add(1, Ordering::SeqCst);
        let target = *control
            .target
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let cuts = control.cuts.subscribe();
        tokio::spawn(forward(client, target, cuts));
    }
}

/// Close with RST instead of FIN, as a dead link or a middlebox does.
fn reset(stream: &TcpStream) {
    let _ = stream.set_zero_linger();
}

async fn forward(mut client: TcpStream, target: SocketAddr, mut cuts: watch::Receiver<u64>) {
    cuts.mark_unchanged();
    let Ok(mut server) = TcpStream::connect(target).await else {
        reset(&client);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {
            let _ = client.shutdown().await;
            let _ = server.shutdown().await;
        }
        _ = cuts.changed() => {
            reset(&client);
            reset(&server);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt as _;

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn forwards_cuts_and_refuses() {
        tokio::time::timeout(Duration::from_secs(20), async {
            let proxy = Proxy::start(echo_server().await).await.unwrap();
            let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
            c.write_all(b"ping").await.unwrap();
            let mut buf = [0u8; 4];
            c.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"ping");

            proxy.cut();
            let mut rest = Vec::new();
            // A cut connection ends (reset or EOF), it does not hang.
            let _ = c.read_to_end(&mut rest).await;
            assert!(rest.is_empty());

            proxy.set_refusing(true);
            let mut r = TcpStream::connect(proxy.addr()).await.unwrap();
            let n = r.read(&mut buf).await.unwrap_or(0);
            assert_eq!(n, 0);
            assert_eq!(proxy.refused(), 1);

            proxy.set_refusing(false);
            let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
            c.write_all(b"pong").await.unwrap();
            c.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"pong");
            assert_eq!(proxy.accepted(), 2);
        })
        .await
        .unwrap();
    }
}
