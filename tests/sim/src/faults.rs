//! Fault controls and command statistics of one router.
//!
//! [`Faults`] is both the live setting and the JSON body of `GET/PUT /routers/{i}/faults`
//! (PUT merges the fields it is given). [`Stats`] counts the commands the router saw, per path,
//! with timestamps so tests can count commands over a window.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Fault settings (all off by default).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Faults {
    /// Delay added before every reply, in ms (commands still overlap).
    pub delay_ms: u64,
    /// Service time per command in ms; commands of one router are served one at a time.
    pub service_ms: u64,
    /// Accept connections and close them at once.
    pub refuse: bool,
    /// Close each connection (without reply) when it sends a command after this many.
    pub drop_after: Option<u64>,
    /// Commands (full word, e.g. `/ppp/secret/add`) that answer `!trap =message=MESSAGE`.
    pub traps: BTreeMap<String, String>,
    /// `cpu-load` of `/system/resource` (percent).
    pub cpu_load: Option<u8>,
    /// Memory in use (percent of total), reflected in `free-memory`.
    pub memory_load: Option<u8>,
    /// How long a reboot keeps the router down, in ms.
    pub reboot_down_ms: Option<u64>,
    /// The API service hangs: API and API-SSL connections are accepted, but no command
    /// (`/login` included) is ever answered, on new and open connections alike; SSH still
    /// works. A reboot cures it (the flag clears when the router reboots).
    pub api_hung: bool,
}

/// A partial update of [`Faults`] (`PUT /routers/{i}/faults`): given fields replace, others stay.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultsPatch {
    /// See [`Faults::delay_ms`].
    pub delay_ms: Option<u64>,
    /// See [`Faults::service_ms`].
    pub service_ms: Option<u64>,
    /// See [`Faults::refuse`].
    pub refuse: Option<bool>,
    /// See [`Faults::drop_after`]; `0` clears it.
    pub drop_after: Option<u64>,
    /// See [`Faults::traps`] (replaces the whole map).
    pub traps: Option<BTreeMap<String, String>>,
    /// See [`Faults::cpu_load`].
    pub cpu_load: Option<u8>,
    /// See [`Faults::memory_load`].
    pub memory_load: Option<u8>,
    /// See [`Faults::reboot_down_ms`].
    pub reboot_down_ms: Option<u64>,
    /// See [`Faults::api_hung`].
    pub api_hung: Option<bool>,
}

impl Faults {
    /// Applies a patch.
    pub fn apply(&mut self, p: FaultsPatch) {
        if let Some(v) = p.delay_ms {
            self.delay_ms = v;
        }
        if let Some(v) = p.service_ms {
            self.service_ms = v;
        }
        if let Some(v) = p.refuse {
            self.refuse = v;
        }
        if let Some(v) = p.drop_after {
            self.drop_after = (v > 0).then_some(v);
        }
        if let Some(v) = p.traps {
            self.traps = v;
        }
        if let Some(v) = p.cpu_load {
            self.cpu_load = Some(v.min(100));
        }
        if let Some(v) = p.memory_load {
            self.memory_load = Some(v.min(100));
        }
        if let Some(v) = p.reboot_down_ms {
            self.reboot_down_ms = Some(v);
        }
        if let Some(v) = p.api_hung {
            self.api_hung = v;
        }
    }
}

/// How many timestamps are kept for windowed counts.
const HISTORY: usize = 1_000_000;

/// Longest command word counted under its own name (a client chooses the word, before login
/// too); longer ones are cut at a character boundary.
const MAX_PATH: usize = 128;

/// Most distinct command words counted; further ones are counted under [`OTHER`].
const MAX_PATHS: usize = 1024;

/// The `by_path` key of the words beyond [`MAX_PATHS`].
const OTHER: &str = "(other)";

/// Command counters.
#[derive(Debug)]
pub struct Stats {
    epoch: Instant,
    total: u64,
    by_path: BTreeMap<Arc<str>, u64>,
    recent: VecDeque<(Instant, Arc<str>)>,
    /// Connections accepted (including refused ones).
    pub connections: u64,
    /// Connections open now.
    pub open: u64,
    /// Commands being processed now.
    pub in_flight: u64,
    /// Highest `in_flight` seen.
    pub max_in_flight: u64,
}

/// `GET /routers/{i}/stats`.
#[derive(Debug, Serialize)]
pub struct StatsView {
    /// Commands seen since start (or reset).
    pub total: u64,
    /// Per command word.
    pub by_path: BTreeMap<String, u64>,
    /// The window asked for (ms), if any.
    pub window_ms: Option<u64>,
    /// Commands within the window.
    pub in_window: Option<u64>,
    /// Per command word within the window.
    pub in_window_by_path: Option<BTreeMap<String, u64>>,
    /// Milliseconds since the first command of the window to the last (0 with fewer than 2).
    pub span_ms: u64,
    /// Timestamps (ms since start/reset) of the last up to 1000 commands.
    pub recent_ms: Vec<u64>,
    /// Connections accepted.
    pub connections: u64,
    /// Connections open.
    pub open: u64,
    /// Most commands processed at once.
    pub max_in_flight: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            total: 0,
            by_path: BTreeMap::new(),
            recent: VecDeque::new(),
            connections: 0,
            open: 0,
            in_flight: 0,
            max_in_flight: 0,
        }
    }
}

impl Stats {
    /// Records one command (memory stays bounded whatever words a client sends).
    pub fn record(&mut self, path: &str, now: Instant) {
        self.total += 1;
        let mut cut = path.len().min(MAX_PATH);
        while !path.is_char_boundary(cut) {
            cut -= 1;
        }
        let mut path = &path[..cut];
        if self.by_path.len() >= MAX_PATHS && !self.by_path.contains_key(path) {
            path = OTHER;
        }
        let key = match self.by_path.get_key_value(path) {
            Some((k, _)) => k.clone(),
            None => Arc::from(path),
        };
        *self.by_path.entry(key.clone()).or_default() += 1;
        if self.recent.len() == HISTORY {
            self.recent.pop_front();
        }
        self.recent.push_back((now, key));
    }

    /// Clears the counters (open connection counts stay).
    pub fn reset(&mut self) {
        let (open, in_flight) = (self.open, self.in_flight);
        *self = Self {
            open,
            in_flight,
            ..Self::default()
        };
    }

    /// A snapshot, with counts over the last `window` if given.
    pub fn view(&self, window: Option<Duration>, now: Instant) -> StatsView {
        let in_window: Vec<&(Instant, Arc<str>)> = match window {
            Some(w) => self
                .recent
                .iter()
                .filter(|(t, _)| now.saturating_duration_since(*t) <= w)
                .collect(),
            None => self.recent.iter().collect(),
        };
        let span_ms = match (in_window.first(), in_window.last()) {
            (Some(a), Some(b)) => b.0.saturating_duration_since(a.0).as_millis() as u64,
            _ => 0,
        };
        let by = window.map(|_| {
            let mut m = BTreeMap::new();
            for (_, p) in &in_window {
                *m.entry(p.to_string()).or_default() += 1;
            }
            m
        });
        let skip = self.recent.len().saturating_sub(1000);
        StatsView {
            total: self.total,
            by_path: self
                .by_path
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            window_ms: window.map(|w| w.as_millis() as u64),
            in_window: window.map(|_| in_window.len() as u64),
            in_window_by_path: by,
            span_ms,
            recent_ms: self
                .recent
                .iter()
                .skip(skip)
                .map(|(t, _)| t.saturating_duration_since(self.epoch).as_millis() as u64)
                .collect(),
            connections: self.connections,
            open: self.open,
            max_in_flight: self.max_in_flight,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_memory_is_bounded_whatever_the_words() {
        let mut st = Stats::default();
        let now = Instant::now();
        let long = "é".repeat(1000);
        st.record(&long, now);
        for n in 0..2 * MAX_PATHS {
            st.record(&format!("/x/{n}"), now);
        }
        let v = st.view(None, now);
        assert_eq!(v.total, 2 * MAX_PATHS as u64 + 1);
        assert_eq!(v.by_path.len(), MAX_PATHS + 1);
        assert!(v.by_path.keys().all(|k| k.len() <= MAX_PATH));
        assert_eq!(v.by_path.get(OTHER), Some(&(MAX_PATHS as u64 + 1)));
    }
}
