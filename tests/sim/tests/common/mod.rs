//! Test helpers: a tiny RouterOS API client (on the simulator's own codec), a minimal HTTP
//! client for the control endpoint, and polling with a deadline.

#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tikfleet_sim::word::{Decoder, encode_sentence};
use tikfleet_sim::{Config, Running};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

pub const LIMIT: Duration = Duration::from_secs(20);

/// Runs a test body with a timeout.
pub async fn within<F: Future<Output = ()>>(f: F) {
    tokio::time::timeout(LIMIT, f)
        .await
        .expect("test timed out");
}

/// A config for tests: loopback, port 0, short delays.
pub fn config(version: &str) -> Config {
    Config {
        version: version.into(),
        redial: Duration::from_millis(50),
        reboot_down: Duration::from_millis(200),
        ..Config::local()
    }
}

pub async fn start(version: &str) -> Running {
    tikfleet_sim::start(config(version)).await.expect("start")
}

pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

pub struct Client {
    s: Box<dyn Stream>,
    dec: Decoder,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Self {
        Self::over(Box::new(TcpStream::connect(addr).await.expect("connect")))
    }

    pub fn over(s: Box<dyn Stream>) -> Self {
        Self {
            s,
            dec: Decoder::new(),
        }
    }

    pub async fn login(addr: SocketAddr) -> Self {
        let mut c = Self::connect(addr).await;
        let r = c.cmd(&["/login", "=name=admin", "=password=admin"]).await;
        assert_eq!(r, vec![vec!["!done".to_string()]]);
        c
    }

    pub async fn send(&mut self, words: &[&str]) {
        let mut out = Vec::new();
        encode_sentence(words, &mut out);
        self.s.write_all(&out).await.expect("write");
    }

    /// The next sentence, or `None` when the peer closed.
    pub async fn recv(&mut self) -> Option<Vec<String>> {
        let mut buf = [0u8; 8192];
        loop {
            if let Some(s) = self.dec.next_sentence().expect("valid stream") {
                return Some(s);
            }
            match self.s.read(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.dec.push(&buf[..n]),
            }
        }
    }

    /// Sends an untagged command and collects sentences up to its `!done` (or `!fatal`).
    pub async fn cmd(&mut self, words: &[&str]) -> Vec<Vec<String>> {
        self.send(words).await;
        let mut out = Vec::new();
        loop {
            let s = self.recv().await.expect("reply");
            let end = s[0] == "!done" || s[0] == "!fatal";
            out.push(s);
            if end {
                return out;
            }
        }
    }

    /// Whether the peer closed the connection.
    pub async fn closed(&mut self) -> bool {
        self.recv().await.is_none()
    }
}

/// The `=name=value` attributes of a sentence.
pub fn attr<'a>(s: &'a [String], name: &str) -> Option<&'a str> {
    let p = format!("={name}=");
    s.iter().find_map(|w| w.strip_prefix(p.as_str()))
}

/// The `!re` rows of a reply.
pub fn rows(r: &[Vec<String>]) -> Vec<Vec<String>> {
    r.iter().filter(|s| s[0] == "!re").cloned().collect()
}

/// The first trap message of a reply.
pub fn trap(r: &[Vec<String>]) -> Option<String> {
    r.iter()
        .find(|s| s[0] == "!trap")
        .and_then(|s| attr(s, "message").map(str::to_string))
}

/// A minimal HTTP/1.1 request; returns (status, body).
pub async fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect control");
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).await.expect("read");
    let text = String::from_utf8_lossy(&resp).to_string();
    let status = text.get(9..12).and_then(|x| x.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

pub async fn json(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> serde_json::Value {
    let (status, b) = http(addr, method, path, body).await;
    assert!(status < 300, "{method} {path}: {status} {b}");
    serde_json::from_str(&b).expect("json")
}

/// Polls `f` until it returns `Some`, up to the test limit.
pub async fn poll<T, F, Fut>(mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    loop {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn api(r: &Running) -> SocketAddr {
    r.routers[0].api.expect("api")
}

pub fn control(r: &Running) -> SocketAddr {
    r.control.expect("control")
}

pub type Shared<T> = Arc<T>;
