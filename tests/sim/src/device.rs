//! The device: a router's whole state and the command engine that reads and changes it.
//!
//! [`Device`] holds the tables (see `model.rs`, `menus.rs`), identity, files, update state,
//! sessions and clients, and the boot clock. [`Device::exec`] runs one parsed API command
//! synchronously and writes its reply; anything that needs time or the socket (reboot, `/quit`,
//! `check-for-updates`, `listen`) is returned as an [`Effect`] for `api.rs` to carry out.
//! All methods take `now` so tests and the lazy session clock agree.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::menus::{
    self, ADDRESS_LIST, FILE, HS_PROFILE, HS_USER, PPP_PROFILE, PPP_SECRET, QUEUE, SERVICE, USER,
    USER_GROUP,
};
use crate::model::{CommandError, Kind, MenuSpec, Row, Table, format_id, parse_id};
use crate::personality::{Personality, format_duration, parse_duration};
use crate::query::Query;
use crate::reply::Reply;
use crate::sessions::{Client, ClientState, Service, Session, session_rates};

/// A parsed API command.
#[derive(Debug, Clone, Default)]
pub struct Command {
    /// The command word, e.g. `/ppp/secret/print`.
    pub word: String,
    /// `=name=value` attributes in order (`.id` included, `.proplist` not).
    pub attrs: Vec<(String, String)>,
    /// `?` query words.
    pub queries: Vec<String>,
    /// `.tag`.
    pub tag: Option<String>,
    /// `=.proplist=`.
    pub proplist: Option<Vec<String>>,
}

impl Command {
    /// Parses a sentence's words.
    pub fn parse(words: Vec<String>) -> Self {
        let mut it = words.into_iter();
        let mut cmd = Command {
            word: it.next().unwrap_or_default(),
            ..Default::default()
        };
        for w in it {
            if let Some(t) = w.strip_prefix(".tag=") {
                cmd.tag = Some(t.to_string());
            } else if w.starts_with('?') {
                cmd.queries.push(w);
            } else if let Some(body) = w.strip_prefix('=') {
                let (k, v) = body.split_once('=').unwrap_or((body, ""));
                if k == ".proplist" {
                    cmd.proplist = Some(
                        v.split(',')
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                            .collect(),
                    );
                } else {
                    cmd.attrs.push((k.to_string(), v.to_string()));
                }
            }
            // Other words are ignored, as RouterOS does with unknown API words [I].
        }
        cmd
    }

    /// An attribute's value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What `api.rs` must do after `exec`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Nothing: the reply is complete.
    Done,
    /// `/quit`: the `!fatal` is written; close the connection.
    Quit,
    /// `/system/reboot`: close every connection without a reply, go down.
    Reboot,
    /// The reply is complete; then reboot (backup load, update install).
    RebootAfterReply,
    /// `check-for-updates`: send the progressive rows.
    CheckForUpdates,
    /// `listen`: runs until cancelled.
    Listen,
}

/// Static settings of one router.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// Router index (0-based).
    pub index: usize,
    /// The login user.
    pub user: String,
    /// Its password.
    pub password: String,
    /// Ports shown in `/ip/service` (api, api-ssl, ssh).
    pub ports: (u16, u16, u16),
    /// Redial delay of simulated clients.
    pub redial: Duration,
}

/// Package update state.
#[derive(Debug, Clone)]
pub struct UpdateState {
    /// Installed version (what `/system/resource` reports).
    pub installed: String,
    /// Version the update server offers.
    pub latest: String,
    /// Whether a check ran (print shows latest-version and status only then).
    pub checked: bool,
    /// Channel.
    pub channel: String,
    /// RouterBOARD `current-firmware` when it lags the installed RouterOS (set through the
    /// control endpoint); `None`: the firmware matches the installed version.
    pub firmware: Option<String>,
}

/// A router's state.
#[derive(Debug)]
pub struct Device {
    /// Version behaviour.
    pub personality: Arc<Personality>,
    /// Static settings.
    pub config: DeviceConfig,
    /// Table menus by path.
    pub tables: HashMap<&'static str, Table>,
    /// `/system/identity` name.
    pub identity: String,
    /// File contents by name (rows live in the `/file` table).
    pub file_data: HashMap<String, Vec<u8>>,
    /// Package update state.
    pub update: UpdateState,
    /// Live sessions by active id.
    pub sessions: BTreeMap<u32, Session>,
    /// Simulated clients by (service, name).
    pub clients: BTreeMap<(Service, String), Client>,
    /// When the router (re)booted (in the future while it is down).
    pub boot: Instant,
    /// Wall-clock time of the boot.
    pub boot_wall: SystemTime,
    /// While down: when it comes up.
    pub down_until: Option<Instant>,
    /// CPU load figure (percent).
    pub cpu_load: u8,
    /// Memory load figure (percent of total used).
    pub memory_load: u8,
    /// `/user/active`: API logins by id (name, address the router sees, via).
    pub user_active: BTreeMap<u32, (String, String, &'static str)>,
    next_user_active: u32,
    next_active: u32,
    next_hs_active: u32,
    next_iface: u32,
    next_addr: u32,
    next_session_id: u32,
}

/// Whether a RouterOS `address=` list (comma-separated addresses or prefixes; empty: any)
/// allows `peer`.
pub fn address_allows(list: &str, peer: IpAddr) -> bool {
    let entries: Vec<&str> = list
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    entries.is_empty() || entries.iter().any(|e| prefix_contains(e, peer))
}

fn prefix_contains(entry: &str, peer: IpAddr) -> bool {
    let (addr, len) = match entry.split_once('/') {
        Some((a, l)) => (a, l.parse::<u32>().ok()),
        None => (entry, None),
    };
    let Ok(net) = addr.parse::<IpAddr>() else {
        return false;
    };
    // An IPv4-mapped peer (dual-stack listener) compares as IPv4.
    let peer = match peer {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, IpAddr::V4),
        v4 => v4,
    };
    match (net, peer) {
        (IpAddr::V4(n), IpAddr::V4(p)) => {
            let len = len.unwrap_or(32).min(32);
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(n) & mask == u32::from(p) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(p)) => {
            let len = len.unwrap_or(128).min(128);
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            u128::from(n) & mask == u128::from(p) & mask
        }
        _ => false,
    }
}

/// Longest downtime of a reboot (the control endpoint refuses more; a day is "down" for any test).
pub const MAX_DOWN: Duration = Duration::from_secs(24 * 3600);

/// When something `secs` from `now` happens, or `invalid value for argument NAME` when that is
/// beyond what the clock can represent (a client may write `timeout=99999999999999w`).
fn deadline(now: Instant, secs: u64, name: &str) -> Result<Instant, CommandError> {
    now.checked_add(Duration::from_secs(secs))
        .ok_or_else(|| CommandError::InvalidValue(name.to_string()))
}

fn bool_value(v: &str) -> Option<&'static str> {
    match v {
        "yes" | "true" => Some("true"),
        "no" | "false" => Some("false"),
        _ => None,
    }
}

fn parse_ipv4(s: &str) -> Option<[u8; 4]> {
    let mut out = [0u8; 4];
    let mut n = 0;
    for p in s.split('.') {
        if n == 4 || p.is_empty() || p.len() > 3 {
            return None;
        }
        out[n] = p.parse().ok()?;
        n += 1;
    }
    (n == 4).then_some(out)
}

/// Normalises one side of a rate pair: `10M` → `10000000`.
fn norm_rate(s: &str) -> Option<String> {
    crate::sessions::parse_rate(s).map(|v| v.to_string())
}

impl Device {
    /// A freshly booted router with its built-in rows.
    pub fn new(personality: Arc<Personality>, config: DeviceConfig, now: Instant) -> Self {
        let mut tables = HashMap::new();
        for spec in menus::table_specs(&personality) {
            let first = match spec.path {
                PPP_PROFILE | PPP_SECRET | HS_PROFILE | ADDRESS_LIST | QUEUE | FILE => 1,
                USER_GROUP => 4,
                USER => 2,
                _ => 0,
            };
            let path = spec.path;
            tables.insert(path, Table::new(Arc::new(spec), first));
        }
        let version = personality.version.to_string();
        let mut d = Device {
            identity: format!("sim-{}", config.index + 1),
            update: UpdateState {
                installed: version.clone(),
                latest: version,
                checked: false,
                channel: personality.channel.to_string(),
                firmware: None,
            },
            personality,
            config,
            tables,
            file_data: HashMap::new(),
            sessions: BTreeMap::new(),
            user_active: BTreeMap::new(),
            next_user_active: 0,
            clients: BTreeMap::new(),
            boot: now,
            boot_wall: SystemTime::now(),
            down_until: None,
            cpu_load: 1,
            memory_load: 20,
            next_active: 0x8000_0001,
            next_hs_active: 1,
            next_iface: 6,
            next_addr: 0,
            next_session_id: 0x8100_0000,
        };
        d.seed_builtins();
        d
    }

    fn builtin(&mut self, path: &'static str, id: u32, fields: &[(&str, &str)], removable: bool) {
        let Some(t) = self.tables.get_mut(path) else {
            return;
        };
        let spec = t.spec.clone();
        let mut vals: Vec<Option<String>> = spec
            .fields
            .iter()
            .map(|f| f.default.map(str::to_string))
            .collect();
        for (k, v) in fields {
            if let Some(i) = spec.field_index(k) {
                vals[i] = Some((*v).to_string());
            }
        }
        let _ = t.insert(vals, Some(id), !removable);
    }

    fn seed_builtins(&mut self) {
        self.builtin(
            PPP_PROFILE,
            0,
            &[("name", "default"), ("default", "true")],
            false,
        );
        self.builtin(
            PPP_PROFILE,
            0xFFFF_FFFE,
            &[
                ("name", "default-encryption"),
                ("use-encryption", "yes"),
                ("default", "true"),
            ],
            false,
        );
        self.builtin(HS_PROFILE, 0, &[("name", "default")], false);
        // `default-trial` exists once a hotspot is set up [U]; removable.
        self.builtin(HS_USER, 0, &[("name", "default-trial")], true);
        let v7 = self.personality.v7;
        let base = "local,telnet,ssh,ftp,reboot,read,write,policy,test,winbox,password,web,sniff,sensitive,api,romon";
        let full = if v7 {
            format!("{base},rest-api")
        } else {
            base.to_string()
        };
        let read = if v7 {
            "local,telnet,ssh,reboot,read,test,winbox,password,web,sniff,sensitive,api,romon,rest-api,!ftp,!write,!policy"
        } else {
            "local,telnet,ssh,reboot,read,test,winbox,password,web,sniff,sensitive,api,romon,!ftp,!write,!policy"
        };
        let write = if v7 {
            "local,telnet,ssh,reboot,read,write,test,winbox,password,web,sniff,sensitive,api,romon,rest-api,!ftp,!policy"
        } else {
            "local,telnet,ssh,reboot,read,write,test,winbox,password,web,sniff,sensitive,api,romon,!ftp,!policy"
        };
        self.builtin(USER_GROUP, 1, &[("name", "read"), ("policy", read)], false);
        self.builtin(
            USER_GROUP,
            2,
            &[("name", "write"), ("policy", write)],
            false,
        );
        self.builtin(USER_GROUP, 3, &[("name", "full"), ("policy", &full)], false);
        let user = self.config.user.clone();
        let pw = self.config.password.clone();
        let never = self.personality.never();
        self.builtin(
            USER,
            1,
            &[
                ("name", &user),
                ("group", "full"),
                ("password", &pw),
                ("last-logged-in", &never),
                ("comment", "system default user"),
            ],
            true,
        );
        let (api, api_ssl, ssh) = self.config.ports;
        let (api, api_ssl, ssh) = (api.to_string(), api_ssl.to_string(), ssh.to_string());
        // `.id` mapping of /ip/service is [U]; this follows the likeliest order.
        type Service<'a> = (u32, &'a str, &'a str, &'a [(&'a str, &'a str)]);
        let services: [Service<'_>; 8] = [
            (0, "telnet", "23", &[]),
            (1, "ftp", "21", &[]),
            (2, "www", "80", &[]),
            (3, "ssh", &ssh, &[]),
            (
                4,
                "www-ssl",
                "443",
                &[
                    ("certificate", "none"),
                    ("tls-version", "any"),
                    ("disabled", "true"),
                ],
            ),
            (5, "api", &api, &[]),
            (6, "winbox", "8291", &[]),
            (
                7,
                "api-ssl",
                &api_ssl,
                &[("certificate", "none"), ("tls-version", "any")],
            ),
        ];
        for (id, name, port, extra) in services {
            let mut f = vec![("name", name), ("port", port)];
            f.extend_from_slice(extra);
            self.builtin(SERVICE, id, &f, false);
        }
    }

    /// Whether the router is up.
    pub fn is_up(&self, now: Instant) -> bool {
        self.down_until.is_none_or(|t| now >= t)
    }

    /// Uptime in seconds.
    pub fn uptime(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.boot).as_secs()
    }

    fn wall(&self, now: Instant) -> SystemTime {
        self.boot_wall + now.saturating_duration_since(self.boot)
    }

    /// Reboots: drops every session and goes down for `down` (at most [`MAX_DOWN`]); the
    /// configuration is kept.
    pub fn reboot(&mut self, now: Instant, down: Duration) {
        let down = down.min(MAX_DOWN);
        let ids: Vec<u32> = self.sessions.keys().copied().collect();
        for id in ids {
            self.end_session(id, now, "hung-up");
        }
        let up = now + down;
        for c in self.clients.values_mut() {
            c.state = ClientState::Waiting {
                retry_at: up + self.config.redial,
                last_error: None,
            };
        }
        self.down_until = Some(up);
        self.boot = up;
        self.boot_wall = SystemTime::now() + down;
        self.update.checked = false;
    }

    /// Brings the lazy clocks up to `now`: expiries and client redials.
    pub fn tick(&mut self, now: Instant) {
        if !self.is_up(now) {
            return;
        }
        self.down_until = None;
        if let Some(t) = self.tables.get_mut(ADDRESS_LIST) {
            t.purge_expired(now);
        }
        let due: Vec<(Service, String)> = self
            .clients
            .iter()
            .filter(|(_, c)| matches!(c.state, ClientState::Waiting { retry_at, .. } if retry_at <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            let Some(c) = self.clients.get(&key).cloned() else {
                continue;
            };
            match self.dial(c.service, &c.name, &c.password, &c.mac, now) {
                Ok(id) => {
                    if let Some(c) = self.clients.get_mut(&key) {
                        c.state = ClientState::Online(id);
                        c.dials += 1;
                    }
                }
                Err(e) => {
                    let retry_at = now + self.config.redial;
                    if let Some(c) = self.clients.get_mut(&key) {
                        c.state = ClientState::Waiting {
                            retry_at,
                            last_error: Some(e),
                        };
                    }
                }
            }
        }
    }

    /// Checks login credentials against `/user`.
    pub fn authenticate(&self, name: &str, password: &str) -> bool {
        let Some(t) = self.tables.get(USER) else {
            return false;
        };
        let spec = &t.spec;
        let (Some(pi), Some(di)) = (spec.field_index("password"), spec.field_index("disabled"))
        else {
            return false;
        };
        t.find_key(name)
            .and_then(|id| t.get(id))
            .is_some_and(|r| r.get(pi).unwrap_or("") == password && r.get(di) != Some("true"))
    }

    /// Checks an API login the way RouterOS does beyond the password: the user's group must
    /// grant the `api` policy, and the user's `address` (if set) must allow `peer`.
    pub fn authorize(&self, name: &str, password: &str, peer: Option<IpAddr>) -> bool {
        if !self.authenticate(name, password) {
            return false;
        }
        let Some(t) = self.tables.get(USER) else {
            return false;
        };
        let Some(row) = t.find_key(name).and_then(|id| t.get(id)) else {
            return false;
        };
        let field = |n: &str| t.spec.field_index(n).and_then(|i| row.get(i)).unwrap_or("");
        if let Some(peer) = peer
            && !address_allows(field("address"), peer)
        {
            return false;
        }
        let group = field("group");
        let Some(g) = self.tables.get(USER_GROUP) else {
            return false;
        };
        let policy = g
            .find_key(group)
            .and_then(|id| g.get(id))
            .and_then(|r| g.spec.field_index("policy").and_then(|i| r.get(i)))
            .unwrap_or("");
        policy.split(',').any(|p| p.trim() == "api")
    }

    /// Whether `/ip/service` `service` allows connections from `peer` (its `address` list;
    /// empty allows everyone).
    pub fn service_allows(&self, service: &str, peer: IpAddr) -> bool {
        let Some(t) = self.tables.get(SERVICE) else {
            return true;
        };
        let Some(row) = t.find_key(service).and_then(|id| t.get(id)) else {
            return true;
        };
        let addr = t
            .spec
            .field_index("address")
            .and_then(|i| row.get(i))
            .unwrap_or("");
        address_allows(addr, peer)
    }

    /// Adds a `/user/active` row for an API login; returns its id.
    pub fn user_login(&mut self, name: &str, peer: Option<IpAddr>, via: &'static str) -> u32 {
        let id = self.next_user_active;
        self.next_user_active += 1;
        let address = peer.map(|p| p.to_string()).unwrap_or_default();
        self.user_active
            .insert(id, (name.to_string(), address, via));
        id
    }

    /// Removes a `/user/active` row (the connection closed).
    pub fn user_logout(&mut self, id: u32) {
        self.user_active.remove(&id);
    }

    fn user_active_rows(&self) -> Vec<Vec<(&'static str, String)>> {
        self.user_active
            .iter()
            .map(|(id, (name, address, via))| {
                vec![
                    (".id", format_id(*id)),
                    ("name", name.clone()),
                    ("address", address.clone()),
                    ("via", (*via).to_string()),
                    ("radius", "false".to_string()),
                ]
            })
            .collect()
    }

    /// Records a login in `/user` `last-logged-in`.
    pub fn note_login(&mut self, name: &str, now: Instant) {
        let date = self.personality.date(self.wall(now));
        if let Some(t) = self.tables.get_mut(USER)
            && let (Some(id), Some(i)) = (t.find_key(name), t.spec.field_index("last-logged-in"))
        {
            let _ = t.update(id, &[(i, Some(date))]);
        }
    }

    // ----------------------------------------------------------------------------- sessions

    fn user_row(&self, service: Service, name: &str) -> Option<(&Table, &Row)> {
        let t = self.tables.get(if service == Service::Pppoe {
            PPP_SECRET
        } else {
            HS_USER
        })?;
        let id = t.find_key(name)?;
        Some((t, t.get(id)?))
    }

    fn field<'a>(t: &Table, r: &'a Row, name: &str) -> Option<&'a str> {
        t.spec.field_index(name).and_then(|i| r.get(i))
    }

    /// Dials a session; the error says why it was refused.
    fn dial(
        &mut self,
        service: Service,
        name: &str,
        password: &str,
        mac: &str,
        now: Instant,
    ) -> Result<u32, String> {
        if !self.is_up(now) {
            return Err("router is down".into());
        }
        let (t, r) = self.user_row(service, name).ok_or("no such user")?;
        if Self::field(t, r, "disabled") == Some("true") {
            return Err("user is disabled".into());
        }
        if Self::field(t, r, "password").unwrap_or("") != password {
            return Err("wrong password".into());
        }
        if service == Service::Pppoe
            && !matches!(Self::field(t, r, "service"), Some("any" | "pppoe") | None)
        {
            return Err("service does not allow pppoe".into());
        }
        if self
            .sessions
            .values()
            .any(|s| s.service == service && s.name == name)
        {
            return Err("already connected".into());
        }
        let profile = Self::field(t, r, "profile")
            .unwrap_or("default")
            .to_string();
        let ptable = if service == Service::Pppoe {
            PPP_PROFILE
        } else {
            HS_PROFILE
        };
        let rate = self.tables.get(ptable).and_then(|pt| {
            let r = pt.get(pt.find_key(&profile)?)?;
            Self::field(pt, r, "rate-limit").map(str::to_string)
        });
        let (up, down) = session_rates(rate.as_deref());
        let n = self.next_addr;
        self.next_addr = (self.next_addr + 1) % 65_000;
        let second = if service == Service::Pppoe { 64 } else { 65 };
        let address = format!("10.{second}.{}.{}", n / 250, n % 250 + 2);
        let next = |n: &mut u32| {
            let id = *n;
            *n = n.wrapping_add(1);
            id
        };
        let id = if service == Service::Pppoe {
            next(&mut self.next_active)
        } else {
            next(&mut self.next_hs_active)
        };
        let iface_id = if service == Service::Pppoe {
            next(&mut self.next_iface)
        } else {
            0
        };
        self.next_session_id = self.next_session_id.wrapping_add(1);
        self.sessions.insert(
            id,
            Session {
                id,
                iface_id,
                service,
                name: name.to_string(),
                address,
                mac: mac.to_string(),
                profile,
                started: now,
                up_bps: up,
                down_bps: down,
                session_id: self.next_session_id,
            },
        );
        Ok(id)
    }

    /// Starts a client (control endpoint): it dials at once; refused dials are not kept.
    pub fn start_client(
        &mut self,
        service: Service,
        name: &str,
        password: &str,
        mac: Option<&str>,
        now: Instant,
    ) -> Result<u32, String> {
        self.tick(now);
        let mac = mac.map(str::to_string).unwrap_or_else(|| {
            let n = self.clients.len() as u32 + 1;
            format!(
                "02:00:00:{:02X}:{:02X}:{:02X}",
                (n >> 16) & 0xFF,
                (n >> 8) & 0xFF,
                n & 0xFF
            )
        });
        let id = self.dial(service, name, password, &mac, now)?;
        self.clients.insert(
            (service, name.to_string()),
            Client {
                service,
                name: name.to_string(),
                password: password.to_string(),
                mac,
                state: ClientState::Online(id),
                dials: 1,
            },
        );
        Ok(id)
    }

    /// Removes a client altogether (its session ends and it stops dialling).
    pub fn stop_client(&mut self, service: Service, name: &str, now: Instant) -> bool {
        let Some(c) = self.clients.remove(&(service, name.to_string())) else {
            return false;
        };
        if let ClientState::Online(id) = c.state {
            self.end_session(id, now, "user-request");
        }
        true
    }

    /// Ends a session (API remove, reboot); its client redials after the delay.
    fn end_session(&mut self, id: u32, now: Instant, reason: &str) {
        let Some(s) = self.sessions.remove(&id) else {
            return;
        };
        if s.service == Service::Pppoe {
            let date = self.personality.date(self.wall(now));
            if let Some(t) = self.tables.get_mut(PPP_SECRET)
                && let Some(rid) = t.find_key(&s.name)
            {
                let spec = t.spec.clone();
                let ch: Vec<(usize, Option<String>)> = [
                    ("last-logged-out", date),
                    ("last-caller-id", s.mac.clone()),
                    ("last-disconnect-reason", reason.to_string()),
                ]
                .into_iter()
                .filter_map(|(k, v)| spec.field_index(k).map(|i| (i, Some(v))))
                .collect();
                let _ = t.update(rid, &ch);
            }
        }
        if let Some(c) = self.clients.get_mut(&(s.service, s.name.clone()))
            && matches!(c.state, ClientState::Online(x) if x == id)
        {
            c.state = ClientState::Waiting {
                retry_at: now + self.config.redial,
                last_error: None,
            };
        }
    }

    // ------------------------------------------------------------------------------ engine

    /// Runs one command (not `/login`, `/cancel`), writing its reply.
    pub fn exec(
        &mut self,
        cmd: &Command,
        now: Instant,
        out: &mut Reply<'_>,
    ) -> Result<Effect, CommandError> {
        self.tick(now);
        let word = cmd.word.as_str();
        let (menu, verb) = match word.rsplit_once('/') {
            Some((m, v)) if word.starts_with('/') => (m, v),
            _ => return Err(CommandError::NoSuchDirectory(word.to_string())),
        };
        if menu.is_empty() {
            return match verb {
                "quit" => {
                    out.fatal("session terminated on request");
                    Ok(Effect::Quit)
                }
                "export" => self.api_export(cmd, now, out),
                _ => Err(unknown_path(word)),
            };
        }
        if self.tables.contains_key(menu) {
            return self.table_verb(menu, verb, cmd, now, out);
        }
        match menu {
            "/ppp/active" | "/ip/hotspot/active" => self.active_verb(menu, verb, cmd, now, out),
            "/user/active" => match verb {
                "print" | "getall" => self.print_owned(&self.user_active_rows(), cmd, out),
                _ => Err(CommandError::NoSuchCommand),
            },
            "/interface" => match verb {
                "print" | "getall" => self.print_owned(&self.interface_rows(now), cmd, out),
                "listen" => Ok(Effect::Listen),
                _ => Err(CommandError::NoSuchCommand),
            },
            "/system/resource" => match verb {
                "print" | "getall" => self.print_owned(&[self.resource_row(now)], cmd, out),
                _ => Err(CommandError::NoSuchCommand),
            },
            "/system/identity" => match verb {
                "print" | "getall" => {
                    self.print_owned(&[vec![("name", self.identity.clone())]], cmd, out)
                }
                "set" => {
                    // Every argument is checked before anything changes.
                    check_only(cmd, &["name"])?;
                    if let Some(v) = cmd.get("name") {
                        self.identity = v.to_string();
                    }
                    out.done();
                    Ok(Effect::Done)
                }
                _ => Err(CommandError::NoSuchCommand),
            },
            "/system/routerboard" => match verb {
                "print" | "getall" => self.print_owned(&[self.routerboard_row()], cmd, out),
                _ => Err(CommandError::NoSuchCommand),
            },
            "/system/package/update" => self.update_verb(verb, cmd, out),
            "/system/backup" => self.backup_verb(verb, cmd, now, out),
            "/system" => match verb {
                "reboot" => Ok(Effect::Reboot),
                _ => Err(unknown_path(word)),
            },
            _ => Err(unknown_path(word)),
        }
    }

    fn table_verb(
        &mut self,
        menu: &str,
        verb: &str,
        cmd: &Command,
        now: Instant,
        out: &mut Reply<'_>,
    ) -> Result<Effect, CommandError> {
        let Some(table) = self.tables.get(menu) else {
            return Err(CommandError::NoSuchCommand);
        };
        let spec = table.spec.clone();
        match verb {
            "print" | "getall" => {
                self.print_table(menu, cmd, now, out)?;
                Ok(Effect::Done)
            }
            "listen" => Ok(Effect::Listen),
            "add" if spec.add_remove => {
                let id = self.add_row(menu, &cmd.attrs, now)?;
                out.done_ret(&format_id(id));
                Ok(Effect::Done)
            }
            "set" => {
                let ids = self.targets(menu, cmd)?;
                let changes: Vec<(String, String)> = cmd
                    .attrs
                    .iter()
                    .filter(|(k, _)| k != ".id" && k != "numbers")
                    .cloned()
                    .collect();
                self.set_rows(menu, &ids, &changes, now)?;
                out.done();
                Ok(Effect::Done)
            }
            "enable" | "disable" if spec.has_disabled() => {
                let ids = self.targets(menu, cmd)?;
                check_only(cmd, &[".id", "numbers"])?;
                let v = if verb == "disable" { "yes" } else { "no" };
                self.set_rows(menu, &ids, &[("disabled".to_string(), v.to_string())], now)?;
                out.done();
                Ok(Effect::Done)
            }
            "comment" if spec.field_index("comment").is_some() => {
                let ids = self.targets(menu, cmd)?;
                check_only(cmd, &[".id", "numbers", "comment"])?;
                let c = cmd.get("comment").unwrap_or("").to_string();
                self.write_fields(
                    menu,
                    &ids,
                    vec![(spec.field_index("comment").unwrap_or(0), Some(c))],
                )?;
                out.done();
                Ok(Effect::Done)
            }
            "unset" => {
                let ids = self.targets(menu, cmd)?;
                check_only(cmd, &[".id", "numbers", "value-name"])?;
                let name = cmd.get("value-name").unwrap_or("");
                let i = spec
                    .field_index(name)
                    .ok_or_else(|| CommandError::UnknownParameter(name.to_string()))?;
                let f = &spec.fields[i];
                if f.read_only || spec.key.contains(&f.name) {
                    return Err(CommandError::Failure(format!(
                        "failure: can not unset {name}"
                    )));
                }
                self.write_fields(menu, &ids, vec![(i, f.default.map(str::to_string))])?;
                out.done();
                Ok(Effect::Done)
            }
            "remove" if spec.add_remove || menu == FILE => {
                let ids = self.targets(menu, cmd)?;
                check_only(cmd, &[".id", "numbers"])?;
                let t = self
                    .tables
                    .get_mut(menu)
                    .ok_or(CommandError::NoSuchCommand)?;
                if ids.iter().any(|id| t.get(*id).is_some_and(|r| r.builtin)) {
                    // Exact wording for removing built-ins is [U].
                    return Err(CommandError::Failure(
                        "failure: can not remove default item".into(),
                    ));
                }
                for id in ids {
                    if let Some(r) = t.remove(id)
                        && menu == FILE
                        && let Some(name) = r.get(0)
                    {
                        self.file_data.remove(name);
                    }
                }
                out.done();
                Ok(Effect::Done)
            }
            _ => Err(CommandError::NoSuchCommand),
        }
    }

    /// Ids named by `.id=` or `numbers=`.
    fn targets(&self, menu: &str, cmd: &Command) -> Result<Vec<u32>, CommandError> {
        let t = self.tables.get(menu).ok_or(CommandError::NoSuchItem)?;
        let n = cmd
            .get(".id")
            .or_else(|| cmd.get("numbers"))
            .ok_or(CommandError::NoSuchItem)?;
        t.resolve(n)
    }

    /// Validates and normalises a written value.
    fn normalise(
        &self,
        spec: &MenuSpec,
        name: &str,
        value: &str,
    ) -> Result<(usize, Option<String>), CommandError> {
        let i = spec
            .field_index(name)
            .ok_or_else(|| CommandError::UnknownParameter(name.to_string()))?;
        let f = &spec.fields[i];
        if f.read_only {
            return Err(CommandError::UnknownParameter(name.to_string()));
        }
        if name == "comment"
            && matches!(spec.path, PPP_SECRET | PPP_PROFILE)
            && !self.personality.ppp_comment_settable
        {
            return Err(CommandError::UnknownParameter(name.to_string()));
        }
        let no_match = || CommandError::NoMatch(name.to_string());
        let invalid = || CommandError::InvalidValue(name.to_string());
        let v = match f.kind {
            Kind::Text => value.to_string(),
            Kind::Bool => bool_value(value).ok_or_else(no_match)?.to_string(),
            Kind::Enum(choices) => {
                if !choices.contains(&value) {
                    return Err(no_match());
                }
                value.to_string()
            }
            Kind::Ref(menu, extra) => {
                let exists = extra.contains(&value)
                    || self
                        .tables
                        .get(menu)
                        .is_some_and(|t| t.find_key(value).is_some());
                if !exists {
                    return Err(no_match());
                }
                value.to_string()
            }
            Kind::Int => {
                value.parse::<u64>().map_err(|_| invalid())?;
                value.to_string()
            }
            Kind::Duration => {
                if value == "none" {
                    value.to_string()
                } else {
                    format_duration(parse_duration(value).ok_or_else(invalid)?)
                }
            }
            Kind::RatePair => {
                let mut it = value.split('/');
                let a = norm_rate(it.next().unwrap_or("")).ok_or_else(invalid)?;
                let b = match it.next() {
                    Some(b) => norm_rate(b).ok_or_else(invalid)?,
                    None => a.clone(),
                };
                format!("{a}/{b}")
            }
            Kind::Target => {
                let mut parts = Vec::new();
                for t in value.split(',') {
                    let (addr, len) = t.split_once('/').unwrap_or((t, "32"));
                    parse_ipv4(addr).ok_or_else(invalid)?;
                    let len: u8 = len.parse().map_err(|_| invalid())?;
                    if len > 32 {
                        return Err(invalid());
                    }
                    parts.push(format!("{addr}/{len}"));
                }
                parts.join(",")
            }
            Kind::Address => {
                if value.is_empty() {
                    return Ok((i, None));
                }
                parse_ipv4(value).ok_or_else(invalid)?;
                value.to_string()
            }
        };
        Ok((i, Some(v)))
    }

    /// Adds a row from API attributes.
    pub fn add_row(
        &mut self,
        menu: &str,
        attrs: &[(String, String)],
        now: Instant,
    ) -> Result<u32, CommandError> {
        let spec = self
            .tables
            .get(menu)
            .ok_or(CommandError::NoSuchCommand)?
            .spec
            .clone();
        let mut vals: Vec<Option<String>> = spec
            .fields
            .iter()
            .map(|f| f.default.map(str::to_string))
            .collect();
        let mut timeout = None;
        for (k, v) in attrs {
            let (i, v) = self.normalise(&spec, k, v)?;
            if k == "timeout" {
                timeout = v.as_deref().and_then(parse_duration).filter(|s| *s > 0);
            }
            vals[i] = v;
        }
        let date = self.personality.date(self.wall(now));
        match menu {
            PPP_SECRET => set_val(
                &spec,
                &mut vals,
                "last-logged-out",
                self.personality.never(),
            ),
            ADDRESS_LIST => {
                set_val(&spec, &mut vals, "creation-time", date);
                if timeout.is_some() {
                    set_val(&spec, &mut vals, "dynamic", "true".into());
                } else if let Some(i) = spec.field_index("timeout") {
                    vals[i] = None;
                }
            }
            QUEUE => {
                if let Some(i) = spec.field_index("name")
                    && vals[i].is_none()
                {
                    let t = self.tables.get(QUEUE).ok_or(CommandError::NoSuchCommand)?;
                    let mut n = t.len() + 1;
                    while t.find_key(&format!("queue{n}")).is_some() {
                        n += 1;
                    }
                    vals[i] = Some(format!("queue{n}"));
                }
            }
            _ => {}
        }
        for r in spec.required {
            if let Some(i) = spec.field_index(r)
                && vals[i].as_deref().is_none_or(str::is_empty)
            {
                // The wording for a missing required value is [U].
                return Err(CommandError::Failure(format!("failure: {r} not specified")));
            }
        }
        let expires = timeout
            .map(|secs| deadline(now, secs, "timeout"))
            .transpose()?;
        let t = self
            .tables
            .get_mut(menu)
            .ok_or(CommandError::NoSuchCommand)?;
        let id = t.insert(vals, None, false)?;
        if expires.is_some() {
            t.set_expiry(id, expires);
        }
        Ok(id)
    }

    fn set_rows(
        &mut self,
        menu: &str,
        ids: &[u32],
        attrs: &[(String, String)],
        now: Instant,
    ) -> Result<(), CommandError> {
        let spec = self
            .tables
            .get(menu)
            .ok_or(CommandError::NoSuchCommand)?
            .spec
            .clone();
        let mut changes = Vec::new();
        let mut expiry = None;
        for (k, v) in attrs {
            let (i, v) = self.normalise(&spec, k, v)?;
            if menu == ADDRESS_LIST && k == "timeout" {
                let secs = v.as_deref().and_then(parse_duration).filter(|s| *s > 0);
                expiry = Some(secs.map(|s| deadline(now, s, k)).transpose()?);
            }
            changes.push((i, v));
        }
        if let Some(e) = expiry {
            if let Some(i) = spec.field_index("dynamic") {
                changes.push((i, Some(e.is_some().to_string())));
            }
            if e.is_none()
                && let Some(i) = spec.field_index("timeout")
            {
                changes.push((i, None));
            }
        }
        self.write_fields(menu, ids, changes)?;
        if let Some(e) = expiry
            && let Some(t) = self.tables.get_mut(menu)
        {
            for id in ids {
                t.set_expiry(*id, e);
            }
        }
        Ok(())
    }

    fn write_fields(
        &mut self,
        menu: &str,
        ids: &[u32],
        changes: Vec<(usize, Option<String>)>,
    ) -> Result<(), CommandError> {
        let t = self
            .tables
            .get_mut(menu)
            .ok_or(CommandError::NoSuchCommand)?;
        t.update_many(ids, &changes)
    }

    // ------------------------------------------------------------------------------- print

    fn print_opts(cmd: &Command) -> Result<(bool, Query), CommandError> {
        let mut count_only = false;
        for (k, _) in &cmd.attrs {
            match k.as_str() {
                "count-only" => count_only = true,
                "detail" | "stats" | "without-paging" | "terse" | "brief" | "follow"
                | "follow-only" | "interval" | "from" | "value-list" | "where" | "as-value" => {}
                other => return Err(CommandError::UnknownParameter(other.to_string())),
            }
        }
        Ok((
            count_only,
            Query::parse(cmd.queries.iter().map(String::as_str)),
        ))
    }

    fn finish_print(&self, count: usize, count_only: bool, out: &mut Reply<'_>) {
        if count_only {
            out.done_ret(&count.to_string());
        } else {
            if count == 0 && self.personality.empty_sentence {
                out.empty();
            }
            out.done();
        }
    }

    /// Prints a table menu (the fast path: values are written straight from the rows).
    fn print_table(
        &self,
        menu: &str,
        cmd: &Command,
        now: Instant,
        out: &mut Reply<'_>,
    ) -> Result<(), CommandError> {
        let (count_only, query) = Self::print_opts(cmd)?;
        let t = self.tables.get(menu).ok_or(CommandError::NoSuchCommand)?;
        let spec = &t.spec;
        let from: Option<std::collections::HashSet<u32>> = match cmd.get("from") {
            Some(f) => Some(t.resolve(f)?.into_iter().collect()),
            None => None,
        };
        let timeout_i = spec.field_index("timeout");
        // Proplist: `None` = .id, `Some(i)` = field i; unknown names are skipped (no trap).
        let props: Option<Vec<Option<usize>>> = cmd.proplist.as_ref().map(|p| {
            p.iter()
                .filter_map(|n| {
                    if n == ".id" {
                        Some(None)
                    } else {
                        spec.field_index(n).map(Some)
                    }
                })
                .collect()
        });
        let mut count = 0;
        for row in t.select(&query) {
            if let Some(f) = &from
                && !f.contains(&row.id)
            {
                continue;
            }
            if row.expires.is_some_and(|e| e <= now) {
                continue;
            }
            if !query.is_empty() {
                let get = |n: &str| -> Option<Cow<'_, str>> {
                    if n == ".id" {
                        return Some(Cow::Owned(format_id(row.id)));
                    }
                    cell(spec, row, spec.field_index(n)?, timeout_i, now)
                };
                if !query.matches(get) {
                    continue;
                }
            }
            count += 1;
            if count_only {
                continue;
            }
            out.start("!re");
            match &props {
                None => {
                    out.attr(".id", &format_id(row.id));
                    for i in 0..spec.fields.len() {
                        if let Some(v) = cell(spec, row, i, timeout_i, now) {
                            out.attr(spec.fields[i].name, &v);
                        }
                    }
                }
                Some(props) => {
                    for p in props {
                        match p {
                            None => out.attr(".id", &format_id(row.id)),
                            Some(i) => {
                                if let Some(v) = cell(spec, row, *i, timeout_i, now) {
                                    out.attr(spec.fields[*i].name, &v);
                                }
                            }
                        }
                    }
                }
            }
            out.end();
        }
        self.finish_print(count, count_only, out);
        Ok(())
    }

    /// Prints computed rows (pairs in print order).
    fn print_owned(
        &self,
        rows: &[Vec<(&str, String)>],
        cmd: &Command,
        out: &mut Reply<'_>,
    ) -> Result<Effect, CommandError> {
        let (count_only, query) = Self::print_opts(cmd)?;
        let mut count = 0;
        for row in rows {
            let get = |n: &str| {
                row.iter()
                    .find(|(k, _)| *k == n)
                    .map(|(_, v)| Cow::Borrowed(v.as_str()))
            };
            if !query.matches(get) {
                continue;
            }
            count += 1;
            if count_only {
                continue;
            }
            out.start("!re");
            match &cmd.proplist {
                None => {
                    for (k, v) in row {
                        out.attr(k, v);
                    }
                }
                Some(p) => {
                    for n in p {
                        if let Some((k, v)) = row.iter().find(|(k, _)| k == n) {
                            out.attr(k, v);
                        }
                    }
                }
            }
            out.end();
        }
        self.finish_print(count, count_only, out);
        Ok(Effect::Done)
    }

    /// Rows of a table as JSON-friendly pairs (control endpoint).
    pub fn menu_rows(&self, path: &str, now: Instant) -> Option<Vec<Vec<(String, String)>>> {
        let own = |rows: Vec<Vec<(&str, String)>>| {
            rows.into_iter()
                .map(|r| r.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
                .collect()
        };
        match path {
            "/ppp/active" | "/ip/hotspot/active" => return Some(own(self.active_rows(path, now))),
            "/interface" => return Some(own(self.interface_rows(now))),
            "/user/active" => return Some(own(self.user_active_rows())),
            "/system/resource" => return Some(own(vec![self.resource_row(now)])),
            "/system/identity" => return Some(vec![vec![("name".into(), self.identity.clone())]]),
            _ => {}
        }
        let t = self.tables.get(path)?;
        Some(
            t.rows()
                .filter(|r| r.expires.is_none_or(|e| e > now))
                .map(|r| {
                    let mut v = vec![(".id".to_string(), format_id(r.id))];
                    for (i, f) in t.spec.fields.iter().enumerate() {
                        if let Some(x) = r.get(i) {
                            v.push((f.name.to_string(), x.to_string()));
                        }
                    }
                    v
                })
                .collect(),
        )
    }

    // ---------------------------------------------------------------------- computed menus

    fn active_rows(&self, menu: &str, now: Instant) -> Vec<Vec<(&'static str, String)>> {
        let ppp = menu == "/ppp/active";
        self.sessions
            .values()
            .filter(|s| (s.service == Service::Pppoe) == ppp)
            .map(|s| {
                let up = format_duration(now.saturating_duration_since(s.started).as_secs());
                if ppp {
                    // v7 has no byte counters here (they are on <pppoe-NAME>) [I]; v6 the same [U].
                    vec![
                        (".id", format_id(s.id)),
                        ("name", s.name.clone()),
                        ("service", "pppoe".into()),
                        ("caller-id", s.mac.clone()),
                        ("encoding", String::new()),
                        ("address", s.address.clone()),
                        ("uptime", up),
                        ("session-id", format!("0x{:X}", s.session_id)),
                        ("limit-bytes-in", "0".into()),
                        ("limit-bytes-out", "0".into()),
                        ("radius", "false".into()),
                    ]
                } else {
                    let (bin, bout) = s.bytes(now);
                    vec![
                        (".id", format_id(s.id)),
                        ("server", "hotspot1".into()),
                        ("user", s.name.clone()),
                        ("address", s.address.clone()),
                        ("mac-address", s.mac.clone()),
                        ("login-by", "http-chap".into()),
                        ("uptime", up),
                        ("idle-time", "0s".into()),
                        ("bytes-in", bin.to_string()),
                        ("bytes-out", bout.to_string()),
                        ("packets-in", (bin / 1000).to_string()),
                        ("packets-out", (bout / 1000).to_string()),
                        ("radius", "false".into()),
                        ("blocked", "false".into()),
                    ]
                }
            })
            .collect()
    }

    fn active_verb(
        &mut self,
        menu: &str,
        verb: &str,
        cmd: &Command,
        now: Instant,
        out: &mut Reply<'_>,
    ) -> Result<Effect, CommandError> {
        match verb {
            "print" | "getall" => self.print_owned(&self.active_rows(menu, now), cmd, out),
            "listen" => Ok(Effect::Listen),
            "remove" => {
                check_only(cmd, &[".id", "numbers"])?;
                let ppp = menu == "/ppp/active";
                let n = cmd
                    .get(".id")
                    .or_else(|| cmd.get("numbers"))
                    .ok_or(CommandError::NoSuchItem)?;
                let mut ids = Vec::new();
                for item in n.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    let found = self.sessions.values().find(|s| {
                        (s.service == Service::Pppoe) == ppp
                            && (Some(s.id) == parse_id(item) || s.name == item)
                    });
                    ids.push(found.ok_or(CommandError::NoSuchItem)?.id);
                }
                if ids.is_empty() {
                    return Err(CommandError::NoSuchItem);
                }
                for id in ids {
                    self.end_session(id, now, "hung-up");
                }
                out.done();
                Ok(Effect::Done)
            }
            _ => Err(CommandError::NoSuchCommand),
        }
    }

    fn interface_rows(&self, now: Instant) -> Vec<Vec<(&'static str, String)>> {
        let up = now.saturating_duration_since(self.boot).as_millis() as u64;
        let (mut sess_up, mut sess_down) = (0u64, 0u64);
        for s in self.sessions.values() {
            let (u, d) = s.bytes(now);
            // Rates come from client-written rate limits: saturate rather than overflow.
            sess_up = sess_up.saturating_add(u);
            sess_down = sess_down.saturating_add(d);
        }
        let since = self
            .personality
            .date(self.boot_wall + Duration::from_secs(5));
        let mut rows = Vec::new();
        for n in 1..=5u32 {
            // ether1 is the uplink: background traffic plus subscribers; the rest is quiet.
            let (rx, tx) = if n == 1 {
                (
                    up.saturating_mul(40).saturating_add(sess_down),
                    up.saturating_mul(10).saturating_add(sess_up),
                )
            } else {
                let quiet = up.saturating_mul(6 - u64::from(n));
                (
                    quiet.saturating_add(sess_up / 4),
                    quiet.saturating_mul(2).saturating_add(sess_down / 4),
                )
            };
            rows.push(vec![
                (".id", format_id(n)),
                ("name", format!("ether{n}")),
                ("default-name", format!("ether{n}")),
                ("type", "ether".into()),
                ("mtu", "1500".into()),
                ("actual-mtu", "1500".into()),
                ("l2mtu", "1598".into()),
                ("max-l2mtu", "9796".into()),
                (
                    "mac-address",
                    format!("48:A9:8A:{:02X}:00:{n:02X}", self.config.index as u8),
                ),
                ("last-link-up-time", since.clone()),
                ("link-downs", "0".into()),
                ("rx-byte", rx.to_string()),
                ("tx-byte", tx.to_string()),
                ("rx-packet", (rx / 800).to_string()),
                ("tx-packet", (tx / 800).to_string()),
                ("rx-drop", "0".into()),
                ("tx-drop", "0".into()),
                ("tx-queue-drop", "0".into()),
                ("rx-error", "0".into()),
                ("tx-error", "0".into()),
                ("running", "true".into()),
                ("disabled", "false".into()),
            ]);
        }
        for s in self
            .sessions
            .values()
            .filter(|s| s.service == Service::Pppoe)
        {
            let (u, d) = s.bytes(now);
            rows.push(vec![
                (".id", format_id(s.iface_id)),
                ("name", format!("<pppoe-{}>", s.name)),
                ("type", "pppoe-in".into()),
                ("mtu", "1480".into()),
                ("actual-mtu", "1480".into()),
                (
                    "last-link-up-time",
                    self.personality.date(self.wall(s.started)),
                ),
                ("link-downs", "0".into()),
                ("rx-byte", u.to_string()),
                ("tx-byte", d.to_string()),
                ("rx-packet", (u / 800).to_string()),
                ("tx-packet", (d / 800).to_string()),
                ("rx-drop", "0".into()),
                ("tx-drop", "0".into()),
                ("tx-queue-drop", "0".into()),
                ("rx-error", "0".into()),
                ("tx-error", "0".into()),
                ("running", "true".into()),
                ("dynamic", "true".into()),
                ("disabled", "false".into()),
            ]);
        }
        rows
    }

    fn resource_row(&self, now: Instant) -> Vec<(&'static str, String)> {
        let p = &self.personality;
        let b = p.board;
        let free = b.memory * u64::from(100 - self.memory_load.min(100)) / 100;
        let mut r = vec![
            ("uptime", format_duration(self.uptime(now))),
            ("version", p.version_string(&self.update.installed)),
            ("build-time", p.build_time.to_string()),
        ];
        if p.v7 {
            r.push(("factory-software", "7.1".into()));
        }
        let secs = self.uptime(now);
        r.extend([
            ("free-memory", free.to_string()),
            ("total-memory", b.memory.to_string()),
            ("cpu", b.cpu.to_string()),
            ("cpu-count", b.cpu_count.to_string()),
            ("cpu-frequency", b.cpu_mhz.to_string()),
            ("cpu-load", self.cpu_load.to_string()),
            ("free-hdd-space", "1003520000".into()),
            ("total-hdd-space", "1073741824".into()),
            ("write-sect-since-reboot", (1000 + secs / 10).to_string()),
            ("write-sect-total", (90_000 + secs / 10).to_string()),
            ("bad-blocks", "0".into()),
            ("architecture-name", b.arch.to_string()),
            ("board-name", b.model.to_string()),
            ("platform", "MikroTik".into()),
        ]);
        r
    }

    fn routerboard_row(&self) -> Vec<(&'static str, String)> {
        let p = &self.personality;
        vec![
            ("routerboard", "true".into()),
            ("model", p.board.model.to_string()),
            ("revision", "r2".into()),
            ("serial-number", self.serial()),
            ("firmware-type", p.board.firmware_type.to_string()),
            (
                "factory-firmware",
                if p.v7 { "7.1".into() } else { "6.43".into() },
            ),
            (
                "current-firmware",
                self.update
                    .firmware
                    .clone()
                    .unwrap_or_else(|| self.update.installed.clone()),
            ),
            ("upgrade-firmware", self.update.installed.clone()),
        ]
    }

    /// The serial number (derived from the router index).
    pub fn serial(&self) -> String {
        format!("HE{:08X}", 0x51A0_0000u32 + self.config.index as u32)
    }

    // ------------------------------------------------------------------- update and backup

    fn update_fields(&self, section: Option<(u32, &str)>) -> Vec<(&'static str, String)> {
        let mut r = vec![
            ("channel", self.update.channel.clone()),
            ("installed-version", self.update.installed.clone()),
        ];
        match section {
            Some((_, status)) => {
                if status != "finding out latest version..." && status != "getting changelog..." {
                    r.push(("latest-version", self.update.latest.clone()));
                }
                r.push(("status", status.to_string()));
            }
            None if self.update.checked => {
                r.push(("latest-version", self.update.latest.clone()));
                r.push(("status", self.update_status().to_string()));
            }
            None => {}
        }
        r
    }

    fn update_available(&self) -> bool {
        let (Ok(a), Ok(b)) = (
            crate::personality::Version::parse(&self.update.latest),
            crate::personality::Version::parse(&self.update.installed),
        ) else {
            return false;
        };
        a > b
    }

    fn update_status(&self) -> &'static str {
        if self.update_available() {
            "New version is available"
        } else {
            "System is already up to date"
        }
    }

    /// The progressive rows of `check-for-updates` (api.rs sends them with pauses).
    pub fn update_check_rows(&mut self) -> Vec<Vec<(&'static str, String)>> {
        self.update.checked = true;
        let final_status = self.update_status();
        [
            (0, "finding out latest version..."),
            (1, "getting changelog..."),
            (2, final_status),
        ]
        .into_iter()
        .map(|(n, st)| {
            let mut r = vec![(".section", n.to_string())];
            r.extend(self.update_fields(Some((n, st))));
            r
        })
        .collect()
    }

    fn update_verb(
        &mut self,
        verb: &str,
        cmd: &Command,
        out: &mut Reply<'_>,
    ) -> Result<Effect, CommandError> {
        match verb {
            "print" | "getall" => self.print_owned(&[self.update_fields(None)], cmd, out),
            "check-for-updates" => {
                check_only(cmd, &["once", "duration"])?;
                Ok(Effect::CheckForUpdates)
            }
            "set" => {
                // Every argument is checked before anything changes.
                check_only(cmd, &["channel"])?;
                if let Some(v) = cmd.get("channel") {
                    if !["stable", "long-term", "testing", "development"].contains(&v) {
                        return Err(CommandError::NoMatch("channel".into()));
                    }
                    self.update.channel = v.to_string();
                }
                out.done();
                Ok(Effect::Done)
            }
            "install" | "download" => {
                if !self.update_available() {
                    return Err(CommandError::Failure("System is already up to date".into()));
                }
                out.done();
                if verb == "install" {
                    self.update.installed = self.update.latest.clone();
                    return Ok(Effect::RebootAfterReply);
                }
                Ok(Effect::Done)
            }
            _ => Err(CommandError::NoSuchCommand),
        }
    }

    fn backup_verb(
        &mut self,
        verb: &str,
        cmd: &Command,
        now: Instant,
        out: &mut Reply<'_>,
    ) -> Result<Effect, CommandError> {
        match verb {
            "save" => {
                check_only(cmd, &["name", "password", "dont-encrypt", "encryption"])?;
                let dont = cmd.get("dont-encrypt").and_then(bool_value) == Some("true");
                let name = match cmd.get("name") {
                    Some(n) if !n.is_empty() => n.to_string(),
                    _ => format!("{}-{}", self.identity, self.uptime(now)),
                };
                let file = if name.ends_with(".backup") {
                    name
                } else {
                    format!("{name}.backup")
                };
                // Without password= the backup is keyed with the current user's password
                // (6.43+ behaviour); dont-encrypt=yes writes it in the clear.
                let key = if dont {
                    None
                } else {
                    Some(
                        cmd.get("password")
                            .unwrap_or(&self.config.password)
                            .to_string(),
                    )
                };
                let data = crate::backup::save(self, key.as_deref().filter(|k| !k.is_empty()));
                self.put_file(&file, data, now);
                // The API reply to save is [U]; a bare !done is the likeliest.
                out.done();
                Ok(Effect::Done)
            }
            "load" => {
                check_only(cmd, &["name", "password"])?;
                let name = cmd.get("name").ok_or(CommandError::NoSuchItem)?;
                let file = if self.file_data.contains_key(name) {
                    name.to_string()
                } else {
                    format!("{name}.backup")
                };
                let data = self
                    .file_data
                    .get(&file)
                    .ok_or(CommandError::NoSuchItem)?
                    .clone();
                let pw = cmd
                    .get("password")
                    .unwrap_or(&self.config.password)
                    .to_string();
                let snap = crate::backup::open(&data, &pw)
                    .map_err(|e| CommandError::Failure(e.to_string()))?;
                crate::backup::restore(self, snap)
                    .map_err(|e| CommandError::Failure(e.to_string()))?;
                out.done();
                Ok(Effect::RebootAfterReply)
            }
            _ => Err(CommandError::NoSuchCommand),
        }
    }

    fn api_export(
        &mut self,
        cmd: &Command,
        now: Instant,
        out: &mut Reply<'_>,
    ) -> Result<Effect, CommandError> {
        check_only(
            cmd,
            &[
                "file",
                "show-sensitive",
                "hide-sensitive",
                "terse",
                "compact",
                "verbose",
            ],
        )?;
        let show = cmd.get("show-sensitive").is_some();
        let hide = cmd.get("hide-sensitive").is_some();
        if let Some(f) = cmd.get("file") {
            let text = crate::export::export(self, now, show, hide);
            let name = if f.ends_with(".rsc") {
                f.to_string()
            } else {
                format!("{f}.rsc")
            };
            self.put_file(&name, text.into_bytes(), now);
        }
        // Without file= RouterOS does not stream the text over the API; a bare !done [U].
        out.done();
        Ok(Effect::Done)
    }

    // ------------------------------------------------------------------------------- files

    /// Writes (or replaces) a file.
    pub fn put_file(&mut self, name: &str, data: Vec<u8>, now: Instant) {
        let date = self.personality.date(self.wall(now));
        let kind = match name.rsplit_once('.').map(|(_, e)| e) {
            Some("backup") => "backup",
            Some("rsc") => "script",
            Some("npk") => "package",
            _ => "file",
        };
        let size = data.len().to_string();
        self.file_data.insert(name.to_string(), data);
        let Some(t) = self.tables.get_mut(FILE) else {
            return;
        };
        let vals = vec![
            Some(name.to_string()),
            Some(kind.to_string()),
            Some(size),
            Some(date),
        ];
        match t.find_key(name) {
            Some(id) => {
                let ch: Vec<(usize, Option<String>)> = vals.into_iter().enumerate().collect();
                let _ = t.update(id, &ch);
            }
            None => {
                let _ = t.insert(vals, None, false);
            }
        }
    }

    /// Removes a file.
    pub fn remove_file(&mut self, name: &str) -> bool {
        let Some(t) = self.tables.get_mut(FILE) else {
            return false;
        };
        match t.find_key(name) {
            Some(id) => {
                t.remove(id);
                self.file_data.remove(name);
                true
            }
            None => false,
        }
    }

    /// Files and sizes.
    pub fn files(&self) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = self
            .file_data
            .iter()
            .map(|(k, d)| (k.clone(), d.len() as u64))
            .collect();
        v.sort();
        v
    }

    /// Adds `n` secrets named `seed-N` (benchmarks), bypassing the API.
    pub fn seed_secrets(&mut self, n: usize, now: Instant) {
        let never = self.personality.never();
        let Some(t) = self.tables.get_mut(PPP_SECRET) else {
            return;
        };
        let spec = t.spec.clone();
        let base: Vec<Option<String>> = spec
            .fields
            .iter()
            .map(|f| f.default.map(str::to_string))
            .collect();
        let (ni, pi, li) = (
            spec.field_index("name"),
            spec.field_index("password"),
            spec.field_index("last-logged-out"),
        );
        let start = t.len();
        for k in start..start + n {
            let mut vals = base.clone();
            if let (Some(ni), Some(pi), Some(li)) = (ni, pi, li) {
                vals[ni] = Some(format!("seed-{k}"));
                vals[pi] = Some(format!("pw-{k}"));
                vals[li] = Some(never.clone());
            }
            let _ = t.insert(vals, None, false);
        }
        let _ = now;
    }
}

/// A printed cell: hidden fields are never shown; a dynamic entry's `timeout` is the time left.
/// Otherwise it is the stored value, which `Table::select`'s key lookup relies on (no menu's
/// key is `timeout`).
fn cell<'a>(
    spec: &MenuSpec,
    row: &'a Row,
    i: usize,
    timeout_i: Option<usize>,
    now: Instant,
) -> Option<Cow<'a, str>> {
    if spec.fields[i].hidden {
        return None;
    }
    if Some(i) == timeout_i
        && let Some(exp) = row.expires
    {
        return Some(Cow::Owned(format_duration(
            exp.saturating_duration_since(now).as_secs(),
        )));
    }
    row.get(i).map(Cow::Borrowed)
}

fn set_val(spec: &MenuSpec, vals: &mut [Option<String>], name: &str, v: String) {
    if let Some(i) = spec.field_index(name) {
        vals[i] = Some(v);
    }
}

fn check_only(cmd: &Command, allowed: &[&str]) -> Result<(), CommandError> {
    match cmd
        .attrs
        .iter()
        .find(|(k, _)| !allowed.contains(&k.as_str()))
    {
        Some((k, _)) => Err(CommandError::UnknownParameter(k.clone())),
        None => Ok(()),
    }
}

/// The directories and menus the simulator knows, to tell "no such command" (known menu,
/// unknown verb) from "no such command or directory (x)" (unknown segment).
const KNOWN: &[&str] = &[
    "/ppp",
    "/ppp/secret",
    "/ppp/profile",
    "/ppp/active",
    "/ip",
    "/ip/hotspot",
    "/ip/hotspot/user",
    "/ip/hotspot/user/profile",
    "/ip/hotspot/active",
    "/ip/firewall",
    "/ip/firewall/address-list",
    "/ip/service",
    "/queue",
    "/queue/simple",
    "/user",
    "/user/group",
    "/user/active",
    "/system",
    "/system/resource",
    "/system/identity",
    "/system/routerboard",
    "/system/package",
    "/system/package/update",
    "/system/backup",
    "/file",
    "/interface",
];

fn unknown_path(word: &str) -> CommandError {
    let mut prefix = String::new();
    let segs: Vec<&str> = word.trim_start_matches('/').split('/').collect();
    for (n, seg) in segs.iter().enumerate() {
        prefix.push('/');
        prefix.push_str(seg);
        if !KNOWN.contains(&prefix.as_str()) {
            // The last segment of a known menu is a verb: "no such command".
            if n == segs.len() - 1 && n > 0 {
                return CommandError::NoSuchCommand;
            }
            return CommandError::NoSuchDirectory((*seg).to_string());
        }
    }
    CommandError::NoSuchCommand
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::FULL_SCAN;
    use proptest::prelude::*;

    fn device(version: &str, now: Instant) -> Device {
        let config = DeviceConfig {
            index: 0,
            user: "admin".into(),
            password: "pw".into(),
            ports: (8728, 8729, 22),
            redial: Duration::from_secs(2),
        };
        Device::new(
            Arc::new(Personality::for_version(version).unwrap()),
            config,
            now,
        )
    }

    /// Runs one command and returns its encoded reply, error included (as text: the words'
    /// length prefixes show as control characters).
    fn run(d: &mut Device, words: Vec<String>, now: Instant) -> String {
        let mut buf = Vec::new();
        let mut out = Reply::new(&mut buf, None);
        if let Err(e) = d.exec(&Command::parse(words), now, &mut out) {
            out.error(&e);
        }
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// Names with characters that matter to the protocol or the index (`=`, `,`, `*`, `?`,
    /// spaces, empty, numbers, non-ASCII, NUL).
    fn name() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => "[ab]{1,2}",
            1 => Just(String::new()),
            2 => prop::sample::select(vec![
                "a=b", "=a", "?a", "*1", "*3", " a", "a ", "a,b", "A", "é", "1", "10", "\0",
                "default", "seed-1",
            ])
            .prop_map(str::to_string),
        ]
    }

    /// A row reference: a name or an id.
    fn target() -> impl Strategy<Value = String> {
        prop_oneof![name(), (0u32..8).prop_map(|i| format!("*{i:X}"))]
    }

    /// A command that changes the table (adds, renames, unsets, removes, comments, disables).
    fn change(menu: &'static str) -> impl Strategy<Value = Vec<String>> {
        let w = move |verb: &str| format!("{menu}/{verb}");
        prop_oneof![
            4 => (name(), proptest::option::of("[xy]{0,1}")).prop_map(move |(n, c)| {
                let mut v = vec![w("add"), format!("=name={n}")];
                v.extend(c.map(|c| format!("=comment={c}")));
                v
            }),
            2 => (target(), name())
                .prop_map(move |(t, n)| vec![w("set"), format!("=numbers={t}"), format!("=name={n}")]),
            1 => (target(), prop::sample::select(vec!["name", "comment"])).prop_map(
                move |(t, f)| vec![w("unset"), format!("=numbers={t}"), format!("=value-name={f}")]
            ),
            1 => target().prop_map(move |t| vec![w("remove"), format!("=numbers={t}")]),
            1 => target().prop_map(move |t| vec![w("disable"), format!("=numbers={t}")]),
        ]
    }

    /// One query word: mostly `?name=`, with every other kind of term and stack operation.
    fn query_word() -> impl Strategy<Value = String> {
        let ops = vec!["&", "&&", "", "!", "|", ".", "0", "1", "&!", "x", "|&"];
        prop_oneof![
            4 => name().prop_map(|n| format!("?name={n}")),
            2 => name().prop_map(|n| format!("?=name={n}")),
            3 => prop::sample::select(ops).prop_map(|o| format!("?#{o}")),
            1 => name().prop_map(|n| format!("?<name={n}")),
            1 => name().prop_map(|n| format!("?>name={n}")),
            1 => "[xy]{0,1}".prop_map(|c| format!("?comment={c}")),
            1 => prop::sample::select(vec![
                "?name", "?-name", "?-comment", "?comment", "?disabled=true", "?=disabled=false",
                "?.id=*1", "?password=", "?default=true", "?nosuch=",
            ])
            .prop_map(str::to_string),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// `print` through the key index answers exactly as a scan of every row: same rows,
        /// same order, same count, same errors, for random tables and queries.
        #[test]
        fn indexed_print_matches_full_scan(
            menu in prop::sample::select(vec![PPP_SECRET, PPP_PROFILE]),
            changes in proptest::collection::vec(change(PPP_SECRET), 0..24),
            queries in proptest::collection::vec(
                (
                    proptest::collection::vec(query_word(), 0..6),
                    prop::sample::select(vec!["", "=count-only=", "=.proplist=.id,name"]),
                    proptest::option::of(target()),
                ),
                1..8,
            ),
            v6 in any::<bool>(),
        ) {
            let now = Instant::now();
            let mut d = device(if v6 { "6.49.10" } else { "7.18" }, now);
            for mut words in changes {
                // The same changes on either menu (`PPP_SECRET` stands in for it).
                words[0] = words[0].replacen(PPP_SECRET, menu, 1);
                run(&mut d, words, now);
            }
            for (terms, opt, from) in queries {
                let mut words = vec![format!("{menu}/print")];
                if !opt.is_empty() {
                    words.push(opt.to_string());
                }
                words.extend(from.map(|f| format!("=from={f}")));
                words.extend(terms);
                let indexed = run(&mut d, words.clone(), now);
                FULL_SCAN.set(true);
                let scanned = run(&mut d, words.clone(), now);
                FULL_SCAN.set(false);
                prop_assert_eq!(indexed, scanned, "{:?}", words);
            }
        }
    }

    #[test]
    fn pinned_print_finds_the_row_among_many() {
        let now = Instant::now();
        let mut d = device("7.16.2", now);
        d.seed_secrets(1000, now);
        let t = &d.tables[PPP_SECRET];
        let q = |w: &[&str]| Query::parse(w.iter().copied());
        assert_eq!(t.select(&q(&["?name=seed-7"])).count(), 1);
        assert_eq!(t.select(&q(&["?name=nobody"])).count(), 0);
        assert_eq!(t.select(&q(&["?name=seed-7", "?#!"])).count(), 1000);
        let reply = run(
            &mut d,
            vec![
                "/ppp/secret/print".into(),
                "=.proplist=.id,name".into(),
                "?name=seed-7".into(),
            ],
            now,
        );
        let mut expected = Vec::new();
        let mut out = Reply::new(&mut expected, None);
        out.start("!re");
        out.attr(".id", "*8");
        out.attr("name", "seed-7");
        out.end();
        out.done();
        assert_eq!(reply.as_bytes(), expected);
    }

    #[test]
    fn address_lists_allow_by_prefix() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(address_allows("", ip("203.0.113.9")));
        assert!(address_allows("10.0.0.0/8, 127.0.0.1", ip("127.0.0.1")));
        assert!(address_allows("10.0.0.0/8", ip("10.200.1.1")));
        assert!(!address_allows("10.0.0.0/8", ip("11.0.0.1")));
        assert!(address_allows("0.0.0.0/0", ip("192.0.2.1")));
        assert!(address_allows("2001:db8::/32", ip("2001:db8::7")));
        assert!(!address_allows("2001:db8::/32", ip("10.0.0.1")));
        assert!(address_allows("127.0.0.1/32", ip("::ffff:127.0.0.1")));
        assert!(!address_allows("nonsense", ip("127.0.0.1")));
    }

    #[test]
    fn api_logins_need_the_api_policy_and_an_allowed_address() {
        let now = Instant::now();
        let mut d = device("7.16.2", now);
        let local = Some("127.0.0.1".parse().unwrap());
        assert!(d.authorize("admin", "pw", local));
        assert!(!d.authorize("admin", "wrong", local));
        let group = d.tables.get_mut(USER_GROUP).unwrap();
        let gid = group.find_key("full").unwrap();
        let pi = group.spec.field_index("policy").unwrap();
        group
            .update(gid, &[(pi, Some("read,write,!api".to_string()))])
            .unwrap();
        assert!(!d.authorize("admin", "pw", local));
        let group = d.tables.get_mut(USER_GROUP).unwrap();
        group
            .update(gid, &[(pi, Some("read,api".to_string()))])
            .unwrap();
        let users = d.tables.get_mut(USER).unwrap();
        let uid = users.find_key("admin").unwrap();
        let ai = users.spec.field_index("address").unwrap();
        users
            .update(uid, &[(ai, Some("10.0.0.0/8".to_string()))])
            .unwrap();
        assert!(!d.authorize("admin", "pw", local));
        assert!(d.authorize("admin", "pw", Some("10.1.2.3".parse().unwrap())));
        let id = d.user_login("admin", Some("10.1.2.3".parse().unwrap()), "api");
        assert_eq!(d.user_active_rows()[0][2].1, "10.1.2.3");
        d.user_logout(id);
        assert!(d.user_active_rows().is_empty());
    }
}
