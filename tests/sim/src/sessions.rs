//! Subscriber sessions and the simulated clients (CPEs) that dial them.
//!
//! A [`Client`] is a CPE with credentials; while connected it owns a [`Session`] (an entry of
//! `/ppp/active` or `/ip/hotspot/active`). Nothing ticks in the background: byte counters are
//! computed from elapsed time and the rate the profile allowed at dial time, and redials are
//! evaluated lazily whenever the router's state is looked at (`Device::tick`). When a session is
//! removed the client waits the redial delay, then dials with the user's *current* password,
//! profile and disabled state; a refused dial is retried on the same delay, as a CPE does.

use std::time::Instant;

/// Which kind of session.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    /// A PPPoE session of a `/ppp/secret`.
    Pppoe,
    /// A hotspot login of an `/ip/hotspot/user`.
    Hotspot,
}

/// A live session.
#[derive(Debug, Clone)]
pub struct Session {
    /// Id in `/ppp/active` or `/ip/hotspot/active`.
    pub id: u32,
    /// Id of the dynamic `<pppoe-NAME>` interface (PPP only).
    pub iface_id: u32,
    /// Service.
    pub service: Service,
    /// User name.
    pub name: String,
    /// Assigned address.
    pub address: String,
    /// Client MAC (caller-id).
    pub mac: String,
    /// Profile at dial time.
    pub profile: String,
    /// When it connected.
    pub started: Instant,
    /// Upload rate of the client (router rx), bytes/s.
    pub up_bps: u64,
    /// Download rate of the client (router tx), bytes/s.
    pub down_bps: u64,
    /// `session-id` value.
    pub session_id: u32,
}

impl Session {
    /// Bytes the client has sent and received so far: (upload, download).
    pub fn bytes(&self, now: Instant) -> (u64, u64) {
        let ms = now.saturating_duration_since(self.started).as_millis() as u64;
        (
            self.up_bps.saturating_mul(ms) / 1000,
            self.down_bps.saturating_mul(ms) / 1000,
        )
    }
}

/// What a client is doing.
#[derive(Debug, Clone)]
pub enum ClientState {
    /// Connected with this session id.
    Online(u32),
    /// Disconnected; dials again at `retry_at`. `last_error` says why the last dial failed.
    Waiting {
        /// Next dial.
        retry_at: Instant,
        /// Why the last attempt failed, if it did.
        last_error: Option<String>,
    },
}

/// A simulated CPE.
#[derive(Debug, Clone)]
pub struct Client {
    /// Service.
    pub service: Service,
    /// User name.
    pub name: String,
    /// Password it dials with.
    pub password: String,
    /// Its MAC address.
    pub mac: String,
    /// State.
    pub state: ClientState,
    /// Successful dials so far.
    pub dials: u32,
}

/// Parses a rate like `10M`, `512k`, `1G`, `1500` into bits/s.
pub fn parse_rate(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.chars().last()? {
        'k' | 'K' => (&s[..s.len() - 1], 1_000),
        'M' => (&s[..s.len() - 1], 1_000_000),
        'G' => (&s[..s.len() - 1], 1_000_000_000),
        _ => (s, 1),
    };
    if let Ok(n) = num.parse::<u64>() {
        return n.checked_mul(mult);
    }
    let f: f64 = num.parse().ok()?;
    (f.is_finite() && f >= 0.0).then_some((f * mult as f64) as u64)
}

/// Byte rates (upload, download) from a `rate-limit` of `rx/tx [...]`: the client uses a tenth
/// of what it may, or of 10 Mbit/s when unlimited.
pub fn session_rates(rate_limit: Option<&str>) -> (u64, u64) {
    let default = 10_000_000u64;
    let (rx, tx) = match rate_limit.and_then(|r| r.split_whitespace().next()) {
        Some(pair) => {
            let mut it = pair.split('/');
            let rx = it.next().and_then(parse_rate).unwrap_or(default);
            let tx = it.next().and_then(parse_rate).unwrap_or(rx);
            (rx, tx)
        }
        None => (default, default),
    };
    ((rx / 80).max(1), (tx / 80).max(1))
}
