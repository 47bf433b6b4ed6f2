//! Router operations: each job operation as an idempotent "make it so" by name (or key).
//!
//! Every operation reads the item first (`print ?name=… =.proplist=…`), then adds it, `set`s
//! only the fields that differ (values normalised before comparing: `yes`/`true`, `10M` /
//! `10000000`, `1h` / `3600`), or does nothing; a delete of an absent item is a no-op. So
//! executing an operation twice leaves the router as executing it once, and a retry after a
//! connection reset is always safe.
//!
//! **Managed scope.** Items tikfleet creates carry a comment starting with [`MARKER`]. An
//! existing item of the same name without the marker was made by hand: operations refuse to
//! touch it with `conflict`, unless called with [`Ownership::Adopt`], which takes it over (and
//! marks it). `/ip/hotspot/user/profile` has no comment field, so hotspot profiles are managed
//! by name alone (see [`Capabilities::hotspot_profile_comment`]).
//!
//! Disabling an account or changing its profile or password does not affect a live session,
//! so when an operation changes `profile`, `disabled` or `password` of an account it also
//! removes the account's active sessions (routeros.md, "Suspension, done properly"): the
//! subscriber's equipment dials again and gets the new terms (or, with an old password, is
//! refused).
//!
//! Built on [`crate::routeros`]; every command is observed there.

use tikfleet_shared::domain::{
    AccountKind, AccountRef, AddressListEntry, HotspotProfile, HotspotUser, PppProfile, PppSecret,
    Profile,
};
use tikfleet_shared::job::JobOp;
use tikfleet_shared::{ErrorCode, Secret};

use crate::routeros::{Capabilities, Cmd, DriverError, RouterOsClient, Row};

/// The comment prefix of items tikfleet manages.
pub const MARKER: &str = "tikfleet:";

/// What an operation may do to an existing item that lacks the [`MARKER`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Ownership {
    /// Touch only items carrying the marker; others are a `conflict`.
    #[default]
    ManagedOnly,
    /// Take over an unmarked item of the same name (it gets the marker).
    Adopt,
}

/// What an operation changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// The item was added.
    Created,
    /// These fields were changed (RouterOS names).
    Updated {
        /// Changed fields.
        fields: Vec<String>,
    },
    /// The item was removed.
    Deleted,
    /// The item was already as asked.
    Unchanged,
    /// Nothing to remove or disconnect.
    Absent,
}

/// The result of an operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpOutcome {
    /// What changed.
    pub change: Change,
    /// Active sessions removed so a change applies (or by a disconnect).
    pub sessions_disconnected: usize,
}

impl OpOutcome {
    fn of(change: Change) -> Self {
        Self {
            change,
            sessions_disconnected: 0,
        }
    }

    /// A short text for a job update (`updated profile, disabled; 1 session disconnected`).
    #[must_use]
    pub fn detail(&self) -> String {
        let change = match &self.change {
            Change::Created => "created".to_owned(),
            Change::Updated { fields } => format!("updated {}", fields.join(", ")),
            Change::Deleted => "deleted".to_owned(),
            Change::Unchanged => "unchanged".to_owned(),
            Change::Absent => "absent".to_owned(),
        };
        match self.sessions_disconnected {
            0 => change,
            1 => format!("{change}; 1 session disconnected"),
            n => format!("{change}; {n} sessions disconnected"),
        }
    }
}

/// Executes a router-level job operation with [`Ownership::ManagedOnly`].
///
/// # Errors
///
/// A classified [`DriverError`]; `conflict` for an unmarked item of the same name;
/// `no_such_item` for set-profile/enable/disable of a missing account; `invalid_request` for
/// the operations handled elsewhere (reboot, backup, restore, credential rotation, drift check).
pub async fn execute(client: &RouterOsClient, op: &JobOp) -> Result<OpOutcome, DriverError> {
    execute_with(client, op, Ownership::ManagedOnly).await
}

/// Executes a router-level job operation.
///
/// # Errors
///
/// See [`execute`].
pub async fn execute_with(
    client: &RouterOsClient,
    op: &JobOp,
    ownership: Ownership,
) -> Result<OpOutcome, DriverError> {
    let o = ownership;
    match op {
        JobOp::UpsertPppSecret { secret, profile } => {
            if let Some(p) = profile.as_ref().filter(|p| p.name != BUILTIN_PROFILE) {
                profile_first(upsert_ppp_profile(client, p, o).await)?;
            }
            upsert_ppp_secret(client, secret, o).await
        }
        JobOp::DeletePppSecret { name } => remove(client, &PPP_SECRET, name, o).await,
        JobOp::UpsertHotspotUser { user, profile } => {
            // `/ip/hotspot/user/profile` has no comment to mark ours, so the built-in
            // `default` profile (always there, never ours) is never written.
            if let Some(p) = profile.as_ref().filter(|p| p.name != BUILTIN_PROFILE) {
                profile_first(upsert_hotspot_profile(client, p, o).await)?;
            }
            upsert_hotspot_user(client, user, o).await
        }
        JobOp::DeleteHotspotUser { name } => remove(client, &HOTSPOT_USER, name, o).await,
        JobOp::SetProfile { account, profile } => {
            let fields = vec![Field::set("profile", Kind::Text, profile)];
            patch_account(client, account, fields, o).await
        }
        JobOp::Enable { account } => {
            patch_account(client, account, vec![Field::bool("disabled", false)], o).await
        }
        JobOp::Disable { account } => {
            patch_account(client, account, vec![Field::bool("disabled", true)], o).await
        }
        JobOp::DisconnectSession { account } => {
            let n = disconnect(client, account.kind, &account.name).await?;
            Ok(OpOutcome {
                change: if n == 0 {
                    Change::Absent
                } else {
                    Change::Deleted
                },
                sessions_disconnected: n,
            })
        }
        JobOp::UpsertProfile { profile } => match profile {
            Profile::Ppp(p) => upsert_ppp_profile(client, p, o).await,
            Profile::Hotspot(p) => upsert_hotspot_profile(client, p, o).await,
        },
        JobOp::DeleteProfile { kind, name } => {
            let menu = match kind {
                AccountKind::Ppp => &PPP_PROFILE,
                AccountKind::Hotspot => &HOTSPOT_PROFILE,
            };
            remove(client, menu, name, o).await
        }
        JobOp::AddAddressListEntry { entry } => add_address(client, entry, o).await,
        JobOp::RemoveAddressListEntry { list, address } => {
            remove_address(client, list, address, o).await
        }
        JobOp::Reboot {}
        | JobOp::BackupNow { .. }
        | JobOp::Restore { .. }
        | JobOp::RotateCredentials {}
        | JobOp::Lockdown { .. }
        | JobOp::DriftCheck {}
        | JobOp::Enforce { .. } => Err(DriverError::new(
            ErrorCode::InvalidRequest,
            format!(
                "job operation {} is not handled by ops::execute (it needs the executor: \
                 reboot, backup, restore, credential rotation and drift check are separate)",
                op.name()
            ),
        )),
    }
}

// ---------------------------------------------------------------------------------------
// Menus and fields

/// A managed menu.
pub(crate) struct Menu {
    /// `/ppp/secret`.
    pub(crate) path: &'static str,
    /// For messages: `ppp secret`.
    pub(crate) noun: &'static str,
    /// Whether the menu has a `comment` (where the marker lives).
    comment: bool,
}

pub(crate) const PPP_SECRET: Menu = Menu {
    path: "/ppp/secret",
    noun: "ppp secret",
    comment: true,
};
pub(crate) const PPP_PROFILE: Menu = Menu {
    path: "/ppp/profile",
    noun: "ppp profile",
    comment: true,
};
pub(crate) const HOTSPOT_USER: Menu = Menu {
    path: "/ip/hotspot/user",
    noun: "hotspot user",
    comment: true,
};
pub(crate) const HOTSPOT_PROFILE: Menu = Menu {
    path: "/ip/hotspot/user/profile",
    noun: "hotspot user profile",
    comment: false,
};
pub(crate) const ADDRESS_LIST: Menu = Menu {
    path: "/ip/firewall/address-list",
    noun: "address-list entry",
    comment: true,
};

impl Menu {
    /// Whether this menu takes the marker at all on this router.
    pub(crate) fn has_comment(&self, caps: &Capabilities) -> bool {
        if self.path == HOTSPOT_PROFILE.path {
            caps.hotspot_profile_comment
        } else {
            self.comment
        }
    }

    /// Whether the comment must be written with the `comment` verb instead of `add`/`set`.
    pub(crate) fn comment_by_verb(&self, caps: &Capabilities) -> bool {
        matches!(self.path, "/ppp/secret" | "/ppp/profile") && !caps.ppp_comment_on_add
    }
}

/// How values of a field compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Text,
    Bool,
    Rate,
    Duration,
    Address,
}

#[derive(Clone, Debug)]
pub(crate) enum Want {
    Set(String),
    Secret(Secret),
    /// Back to the default / absent.
    Unset,
}

/// One field of a managed item as tikfleet wants it.
#[derive(Clone, Debug)]
pub(crate) struct Field {
    pub(crate) name: &'static str,
    pub(crate) kind: Kind,
    pub(crate) want: Want,
}

impl Field {
    fn set(name: &'static str, kind: Kind, value: impl Into<String>) -> Self {
        Self {
            name,
            kind,
            want: Want::Set(value.into()),
        }
    }

    fn bool(name: &'static str, value: bool) -> Self {
        Self::set(name, Kind::Bool, if value { "yes" } else { "no" })
    }

    fn opt(name: &'static str, kind: Kind, value: Option<&str>) -> Self {
        Self {
            name,
            kind,
            want: value.map_or(Want::Unset, |v| Want::Set(v.to_owned())),
        }
    }

    fn secret(name: &'static str, value: &Secret) -> Self {
        Self {
            name,
            kind: Kind::Text,
            want: Want::Secret(value.clone()),
        }
    }

    /// Whether the router's value (`None`: absent) already is what we want.
    pub(crate) fn satisfied_by(&self, current: Option<&str>) -> bool {
        match &self.want {
            Want::Set(v) => {
                current.is_some_and(|c| normalize(self.kind, c) == normalize(self.kind, v))
            }
            Want::Secret(s) => current == Some(s.expose()),
            Want::Unset => matches!(current, None | Some("" | "none")),
        }
    }
}

/// Normalises a value for comparison.
pub(crate) fn normalize(kind: Kind, v: &str) -> String {
    let v = v.trim();
    match kind {
        Kind::Text => v.to_owned(),
        Kind::Bool => match v.to_ascii_lowercase().as_str() {
            "yes" | "true" => "true".to_owned(),
            "no" | "false" => "false".to_owned(),
            other => other.to_owned(),
        },
        Kind::Rate => v
            .split(|c: char| c == '/' || c.is_whitespace())
            .filter(|t| !t.is_empty())
            .map(|t| rate(t).map_or_else(|| t.to_ascii_lowercase(), |n| n.to_string()))
            .collect::<Vec<_>>()
            .join("/"),
        Kind::Duration => duration_secs(v).map_or_else(|| v.to_owned(), |n| n.to_string()),
        Kind::Address => v.strip_suffix("/32").unwrap_or(v).to_owned(),
    }
}

/// `10M` → 10 000 000, `512k` → 512 000, `2G`, plain numbers.
fn rate(t: &str) -> Option<u64> {
    let (num, mult) = match t.chars().last()? {
        'k' | 'K' => (&t[..t.len() - 1], 1_000),
        'M' => (&t[..t.len() - 1], 1_000_000),
        'G' => (&t[..t.len() - 1], 1_000_000_000),
        _ => (t, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

/// `1w2d3h4m5s`, `01:02:03`, `1d02:03:04`, `3600` → seconds.
fn duration_secs(v: &str) -> Option<u64> {
    if let Ok(n) = v.parse::<u64>() {
        return Some(n);
    }
    let (days, clock) = match v.split_once('d') {
        Some((d, rest)) if rest.contains(':') => (d.parse::<u64>().ok()?, rest),
        _ => (0, v),
    };
    if clock.contains(':') {
        let mut secs = 0u64;
        for part in clock.split(':') {
            secs = secs
                .checked_mul(60)?
                .checked_add(part.parse::<u64>().ok()?)?;
        }
        return Some(days * 86_400 + secs);
    }
    let mut total = 0u64;
    let mut num = String::new();
    for c in v.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit = match c {
            'w' => 604_800,
            'd' => 86_400,
            'h' => 3_600,
            'm' => 60,
            's' => 1,
            _ => return None,
        };
        total = total.checked_add(num.parse::<u64>().ok()?.checked_mul(unit)?)?;
        num.clear();
    }
    if !num.is_empty() {
        return None;
    }
    Some(total)
}

/// The comment tikfleet writes: the marker, then the item's own comment.
pub(crate) fn marked(comment: Option<&str>) -> String {
    match comment.map(str::trim) {
        Some(c) if !c.is_empty() && !c.starts_with(MARKER) => format!("{MARKER} {c}"),
        Some(c) if !c.is_empty() => c.to_owned(),
        _ => MARKER.to_owned(),
    }
}

pub(crate) fn is_marked(row: &Row) -> bool {
    row.get("comment").is_some_and(|c| c.starts_with(MARKER))
}

fn conflict(menu: &Menu, key: &str) -> DriverError {
    DriverError::new(
        ErrorCode::Conflict,
        format!(
            "{} {key} exists on the router but was not made by tikfleet (its comment lacks \
             {MARKER:?}); not touched: adopt it explicitly or rename one of them",
            menu.noun
        ),
    )
}

// ---------------------------------------------------------------------------------------
// The generic engine

/// Reads the item(s) matching `query` (plus an optional client-side filter), with `fields`.
async fn find(
    client: &RouterOsClient,
    menu: &Menu,
    query: &[(&str, &str)],
    fields: &[Field],
    keep: impl Fn(&Row) -> bool,
) -> Result<Option<Row>, DriverError> {
    let mut props: Vec<&str> = vec![".id", "comment"];
    props.extend(query.iter().map(|(k, _)| *k));
    props.extend(fields.iter().map(|f| f.name));
    if menu.path == ADDRESS_LIST.path {
        props.push("address");
    }
    let mut cmd = Cmd::new(format!("{}/print", menu.path)).proplist(&props);
    for (k, v) in query {
        cmd = cmd.query_eq(*k, *v);
    }
    let rows = client.run(cmd).await?;
    Ok(rows.into_iter().find(|r| keep(r)))
}

pub(crate) fn id_of(row: &Row, menu: &Menu) -> Result<String, DriverError> {
    row.get(".id").cloned().ok_or_else(|| {
        DriverError::new(
            ErrorCode::RouterError,
            format!("the router listed a {} without .id", menu.noun),
        )
    })
}

pub(crate) fn with_field(cmd: Cmd, f: &Field) -> Cmd {
    match &f.want {
        Want::Set(v) => cmd.attr(f.name, v.clone()),
        Want::Secret(s) => cmd.secret(f.name, s),
        Want::Unset => cmd,
    }
}

/// Adds, updates or leaves the item named by `key` so that it has `fields` (and the marker).
async fn ensure(
    client: &RouterOsClient,
    menu: &Menu,
    key: (&str, &str),
    fields: Vec<Field>,
    comment: Option<&str>,
    ownership: Ownership,
) -> Result<Change, DriverError> {
    let caps = client.caps();
    let with_comment = menu.has_comment(&caps);
    let row = match find(client, menu, &[key], &fields, |_| true).await? {
        Some(row) => row,
        None => match add_item(client, menu, key, &fields, comment, &caps).await {
            // Someone (the reconciler, a job beside this one) added it between our print
            // and our add: it exists now, so make that one right instead.
            Err(e) if e.code() == ErrorCode::DuplicateName => {
                find(client, menu, &[key], &fields, |_| true)
                    .await?
                    .ok_or(e)?
            }
            other => return other,
        },
    };
    if with_comment && !is_marked(&row) && ownership == Ownership::ManagedOnly {
        return Err(conflict(menu, key.1));
    }
    let mut fields: Vec<Field> = fields
        .into_iter()
        .filter(|f| !f.satisfied_by(row.get(f.name).map(String::as_str)))
        .collect();
    let want_comment = marked(comment);
    let comment_differs = with_comment && row.get("comment") != Some(&want_comment);
    if fields.is_empty() && !comment_differs {
        return Ok(Change::Unchanged);
    }
    let id = id_of(&row, menu)?;
    let mut changed: Vec<String> = fields.iter().map(|f| f.name.to_owned()).collect();
    let mut cmds = Vec::new();
    let unsets: Vec<Field> = fields
        .iter()
        .filter(|f| matches!(f.want, Want::Unset))
        .cloned()
        .collect();
    fields.retain(|f| !matches!(f.want, Want::Unset));
    let comment_by_verb = menu.comment_by_verb(&caps);
    if comment_differs {
        changed.push("comment".to_owned());
        if comment_by_verb {
            cmds.push(
                Cmd::new(format!("{}/comment", menu.path))
                    .attr(".id", id.clone())
                    .attr("comment", want_comment.clone()),
            );
        }
    }
    if !fields.is_empty() || (comment_differs && !comment_by_verb) {
        let mut set = Cmd::new(format!("{}/set", menu.path)).attr(".id", id.clone());
        for f in &fields {
            set = with_field(set, f);
        }
        if comment_differs && !comment_by_verb {
            set = set.attr("comment", want_comment);
        }
        cmds.push(set);
    }
    for f in &unsets {
        cmds.push(
            Cmd::new(format!("{}/unset", menu.path))
                .attr(".id", id.clone())
                .attr("value-name", f.name),
        );
    }
    // The set, unsets and comment touch different fields: pipeline them.
    for r in client.run_many(cmds).await {
        r?;
    }
    Ok(Change::Updated { fields: changed })
}

/// Adds the item named by `key` with `fields` and the marker.
async fn add_item(
    client: &RouterOsClient,
    menu: &Menu,
    key: (&str, &str),
    fields: &[Field],
    comment: Option<&str>,
    caps: &Capabilities,
) -> Result<Change, DriverError> {
    let with_comment = menu.has_comment(caps);
    let mut add = Cmd::new(format!("{}/add", menu.path)).attr(key.0, key.1);
    for f in fields {
        add = with_field(add, f);
    }
    let comment_after = with_comment && menu.comment_by_verb(caps);
    if with_comment && !comment_after {
        add = add.attr("comment", marked(comment));
    }
    client.run(add).await?;
    if comment_after {
        // RouterOS before 7.15 takes no `comment=` on /ppp add: set it with the verb. If
        // the agent dies between the two, the next run sees an unmarked item (conflict).
        let row = find(client, menu, &[key], &[], |_| true)
            .await?
            .ok_or_else(|| {
                DriverError::new(
                    ErrorCode::NoSuchItem,
                    format!("{} {} vanished after add", menu.noun, key.1),
                )
            })?;
        client
            .run(
                Cmd::new(format!("{}/comment", menu.path))
                    .attr(".id", id_of(&row, menu)?)
                    .attr("comment", marked(comment)),
            )
            .await?;
    }
    Ok(Change::Created)
}

/// Removes the item if present (and ours).
async fn remove_found(
    client: &RouterOsClient,
    menu: &Menu,
    key: &str,
    row: Option<Row>,
    ownership: Ownership,
) -> Result<Change, DriverError> {
    let Some(row) = row else {
        return Ok(Change::Absent);
    };
    if menu.has_comment(&client.caps()) && !is_marked(&row) && ownership == Ownership::ManagedOnly {
        return Err(conflict(menu, key));
    }
    let cmd = Cmd::new(format!("{}/remove", menu.path)).attr(".id", id_of(&row, menu)?);
    match client.run(cmd).await {
        Ok(_) => Ok(Change::Deleted),
        // Removed by someone else between our print and remove: the goal holds.
        Err(e) if e.code() == ErrorCode::NoSuchItem => Ok(Change::Absent),
        Err(e) => Err(e),
    }
}

async fn remove(
    client: &RouterOsClient,
    menu: &Menu,
    name: &str,
    ownership: Ownership,
) -> Result<OpOutcome, DriverError> {
    let row = find(client, menu, &[("name", name)], &[], |_| true).await?;
    remove_found(client, menu, name, row, ownership)
        .await
        .map(OpOutcome::of)
}

// ---------------------------------------------------------------------------------------
// Accounts

fn account_menu(kind: AccountKind) -> &'static Menu {
    match kind {
        AccountKind::Ppp => &PPP_SECRET,
        AccountKind::Hotspot => &HOTSPOT_USER,
    }
}

/// Whether a change of these fields needs the account's sessions to reconnect.
fn needs_reconnect(change: &Change) -> bool {
    matches!(change, Change::Updated { fields }
        if fields.iter().any(|f| matches!(f.as_str(), "profile" | "disabled" | "password")))
}

async fn finish_account(
    client: &RouterOsClient,
    kind: AccountKind,
    name: &str,
    change: Change,
) -> Result<OpOutcome, DriverError> {
    let sessions_disconnected = if needs_reconnect(&change) {
        disconnect(client, kind, name).await?
    } else {
        0
    };
    Ok(OpOutcome {
        change,
        sessions_disconnected,
    })
}

/// The profile every RouterOS has in `/ppp/profile` and `/ip/hotspot/user/profile`.
pub(crate) const BUILTIN_PROFILE: &str = "default";

/// The outcome of the profile an account job carries: a profile that exists but is not ours
/// (an administrator's, or a built-in one), or that a job running beside this one added first,
/// is left as it is — the account only needs it to exist — and any other error fails the job.
fn profile_first(outcome: Result<OpOutcome, DriverError>) -> Result<(), DriverError> {
    match outcome {
        Ok(_) => Ok(()),
        // Another account job on the same new plan added the profile between our print and
        // our add: it exists now, which is all this account needs.
        Err(e) if matches!(e.code(), ErrorCode::Conflict | ErrorCode::DuplicateName) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The fields of a PPP secret (its key, `name`, aside).
pub(crate) fn ppp_secret_fields(s: &PppSecret) -> Vec<Field> {
    vec![
        Field::secret("password", &s.password),
        Field::set("service", Kind::Text, s.service.as_str()),
        Field::set("profile", Kind::Text, &s.profile),
        Field::bool("disabled", s.disabled),
        Field::opt("remote-address", Kind::Address, s.remote_address.as_deref()),
    ]
}

/// The fields of a hotspot user (its key, `name`, aside).
pub(crate) fn hotspot_user_fields(u: &HotspotUser) -> Vec<Field> {
    vec![
        Field::secret("password", &u.password),
        Field::set("profile", Kind::Text, &u.profile),
        Field::set("server", Kind::Text, u.server.as_deref().unwrap_or("all")),
        Field::opt("mac-address", Kind::Text, u.mac_address.as_deref()),
        Field::bool("disabled", u.disabled),
    ]
}

/// The fields of a PPP profile (its key, `name`, aside).
pub(crate) fn ppp_profile_fields(p: &PppProfile) -> Vec<Field> {
    let mut fields = vec![
        Field::opt("rate-limit", Kind::Rate, p.rate_limit.as_deref()),
        Field::opt("address-list", Kind::Text, p.address_list.as_deref()),
        Field::opt("local-address", Kind::Text, p.local_address.as_deref()),
        Field::opt("remote-address", Kind::Text, p.remote_address.as_deref()),
        Field::opt("dns-server", Kind::Text, p.dns_server.as_deref()),
    ];
    if let Some(only_one) = p.only_one {
        fields.push(Field::bool("only-one", only_one));
    }
    fields
}

/// The fields of a hotspot user profile (its key, `name`, aside).
pub(crate) fn hotspot_profile_fields(p: &HotspotProfile) -> Vec<Field> {
    let secs = |s: Option<u64>| s.map(|s| format!("{s}s"));
    let mut fields = vec![
        Field::opt("rate-limit", Kind::Rate, p.rate_limit.as_deref()),
        Field::opt("address-list", Kind::Text, p.address_list.as_deref()),
        Field::opt(
            "session-timeout",
            Kind::Duration,
            secs(p.session_timeout_secs).as_deref(),
        ),
        Field::opt(
            "idle-timeout",
            Kind::Duration,
            secs(p.idle_timeout_secs).as_deref(),
        ),
    ];
    if let Some(n) = p.shared_users {
        fields.push(Field::set("shared-users", Kind::Text, n.to_string()));
    }
    fields
}

async fn upsert_ppp_secret(
    client: &RouterOsClient,
    s: &PppSecret,
    o: Ownership,
) -> Result<OpOutcome, DriverError> {
    let fields = ppp_secret_fields(s);
    let change = ensure(
        client,
        &PPP_SECRET,
        ("name", &s.name),
        fields,
        s.comment.as_deref(),
        o,
    )
    .await?;
    finish_account(client, AccountKind::Ppp, &s.name, change).await
}

async fn upsert_hotspot_user(
    client: &RouterOsClient,
    u: &HotspotUser,
    o: Ownership,
) -> Result<OpOutcome, DriverError> {
    let fields = hotspot_user_fields(u);
    let change = ensure(
        client,
        &HOTSPOT_USER,
        ("name", &u.name),
        fields,
        u.comment.as_deref(),
        o,
    )
    .await?;
    finish_account(client, AccountKind::Hotspot, &u.name, change).await
}

/// Changes some fields of an existing account (set profile, enable, disable).
async fn patch_account(
    client: &RouterOsClient,
    account: &AccountRef,
    fields: Vec<Field>,
    o: Ownership,
) -> Result<OpOutcome, DriverError> {
    let menu = account_menu(account.kind);
    let row = find(client, menu, &[("name", &account.name)], &fields, |_| true)
        .await?
        .ok_or_else(|| {
            DriverError::new(
                ErrorCode::NoSuchItem,
                format!(
                    "{} {} does not exist on the router",
                    menu.noun, account.name
                ),
            )
        })?;
    if !is_marked(&row) && o == Ownership::ManagedOnly {
        return Err(conflict(menu, &account.name));
    }
    let todo: Vec<Field> = fields
        .into_iter()
        .filter(|f| !f.satisfied_by(row.get(f.name).map(String::as_str)))
        .collect();
    let change = if todo.is_empty() {
        Change::Unchanged
    } else {
        let mut set = Cmd::new(format!("{}/set", menu.path)).attr(".id", id_of(&row, menu)?);
        for f in &todo {
            set = with_field(set, f);
        }
        if o == Ownership::Adopt && !is_marked(&row) {
            // Adopting marks the item so later operations see it as ours.
            set = set.attr("comment", marked(row.get("comment").map(String::as_str)));
        }
        client.run(set).await?;
        Change::Updated {
            fields: todo.iter().map(|f| f.name.to_owned()).collect(),
        }
    };
    finish_account(client, account.kind, &account.name, change).await
}

/// Removes the account's active sessions; returns how many. No session is not an error.
///
/// # Errors
///
/// A classified [`DriverError`] from the print or remove.
pub async fn disconnect(
    client: &RouterOsClient,
    kind: AccountKind,
    name: &str,
) -> Result<usize, DriverError> {
    let (path, key) = match kind {
        AccountKind::Ppp => ("/ppp/active", "name"),
        AccountKind::Hotspot => ("/ip/hotspot/active", "user"),
    };
    let rows = client
        .run(
            Cmd::new(format!("{path}/print"))
                .proplist(&[".id", key])
                .query_eq(key, name),
        )
        .await?;
    let ids: Vec<&str> = rows
        .iter()
        .filter(|r| r.get(key).is_none_or(|v| v == name))
        .filter_map(|r| r.get(".id").map(String::as_str))
        .collect();
    if ids.is_empty() {
        return Ok(0);
    }
    let cmd = Cmd::new(format!("{path}/remove")).attr(".id", ids.join(","));
    match client.run(cmd).await {
        Ok(_) => Ok(ids.len()),
        // The session ended between print and remove.
        Err(e) if e.code() == ErrorCode::NoSuchItem => Ok(0),
        Err(e) => Err(e),
    }
}

// ---------------------------------------------------------------------------------------
// Profiles

async fn upsert_ppp_profile(
    client: &RouterOsClient,
    p: &PppProfile,
    o: Ownership,
) -> Result<OpOutcome, DriverError> {
    let fields = ppp_profile_fields(p);
    ensure(
        client,
        &PPP_PROFILE,
        ("name", &p.name),
        fields,
        p.comment.as_deref(),
        o,
    )
    .await
    .map(OpOutcome::of)
}

async fn upsert_hotspot_profile(
    client: &RouterOsClient,
    p: &HotspotProfile,
    o: Ownership,
) -> Result<OpOutcome, DriverError> {
    let fields = hotspot_profile_fields(p);
    ensure(
        client,
        &HOTSPOT_PROFILE,
        ("name", &p.name),
        fields,
        p.comment.as_deref(),
        o,
    )
    .await
    .map(OpOutcome::of)
}

// ---------------------------------------------------------------------------------------
// Address lists (key: list + address)

async fn find_address(
    client: &RouterOsClient,
    list: &str,
    address: &str,
) -> Result<Option<Row>, DriverError> {
    let want = normalize(Kind::Address, address);
    find(client, &ADDRESS_LIST, &[("list", list)], &[], |r| {
        r.get("address")
            .is_some_and(|a| normalize(Kind::Address, a) == want)
    })
    .await
}

async fn add_address(
    client: &RouterOsClient,
    entry: &AddressListEntry,
    o: Ownership,
) -> Result<OpOutcome, DriverError> {
    let key = format!("{} {}", entry.list, entry.address);
    let want_comment = marked(entry.comment.as_deref());
    match find_address(client, &entry.list, &entry.address).await? {
        None => {
            client
                .run(
                    Cmd::new("/ip/firewall/address-list/add")
                        .attr("list", entry.list.clone())
                        .attr("address", entry.address.clone())
                        .attr("comment", want_comment),
                )
                .await?;
            Ok(OpOutcome::of(Change::Created))
        }
        Some(row) if !is_marked(&row) && o == Ownership::ManagedOnly => {
            Err(conflict(&ADDRESS_LIST, &key))
        }
        Some(row) if row.get("comment") == Some(&want_comment) => {
            Ok(OpOutcome::of(Change::Unchanged))
        }
        Some(row) => {
            client
                .run(
                    Cmd::new("/ip/firewall/address-list/set")
                        .attr(".id", id_of(&row, &ADDRESS_LIST)?)
                        .attr("comment", want_comment),
                )
                .await?;
            Ok(OpOutcome::of(Change::Updated {
                fields: vec!["comment".into()],
            }))
        }
    }
}

async fn remove_address(
    client: &RouterOsClient,
    list: &str,
    address: &str,
    o: Ownership,
) -> Result<OpOutcome, DriverError> {
    let row = find_address(client, list, address).await?;
    remove_found(client, &ADDRESS_LIST, &format!("{list} {address}"), row, o)
        .await
        .map(OpOutcome::of)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_before_comparing() {
        let check = |kind, a: &str, b: &str| {
            assert_eq!(normalize(kind, a), normalize(kind, b), "{a} vs {b}");
        };
        check(Kind::Bool, "yes", "true");
        check(Kind::Bool, "no", "false");
        check(Kind::Rate, "10M", "10000000");
        check(Kind::Rate, "10M/20M", "10000000/20000000");
        check(Kind::Rate, "512k/1M", "512000/1000000");
        check(Kind::Duration, "1h", "3600");
        check(Kind::Duration, "1h", "3600s");
        check(Kind::Duration, "1d02:00:00", "26h");
        check(Kind::Duration, "1w", "7d");
        check(Kind::Address, "10.0.0.1/32", "10.0.0.1");
        assert_ne!(normalize(Kind::Rate, "10M"), normalize(Kind::Rate, "1M"));
        assert_ne!(normalize(Kind::Bool, "yes"), normalize(Kind::Bool, "no"));
    }

    #[test]
    fn unset_is_satisfied_by_absence() {
        let f = Field::opt("remote-address", Kind::Address, None);
        assert!(f.satisfied_by(None));
        assert!(f.satisfied_by(Some("")));
        assert!(!f.satisfied_by(Some("10.0.0.1")));
        let f = Field::secret("password", &Secret::new("pw"));
        assert!(f.satisfied_by(Some("pw")));
        assert!(!f.satisfied_by(None));
    }

    #[test]
    fn marker_comments() {
        assert_eq!(marked(None), "tikfleet:");
        assert_eq!(marked(Some("")), "tikfleet:");
        assert_eq!(marked(Some("Alice")), "tikfleet: Alice");
        assert_eq!(marked(Some("tikfleet: Alice")), "tikfleet: Alice");
        let mut row = Row::new();
        assert!(!is_marked(&row));
        row.insert("comment".into(), "tikfleet: Alice".into());
        assert!(is_marked(&row));
    }

    #[test]
    fn details() {
        let o = OpOutcome {
            change: Change::Updated {
                fields: vec!["profile".into(), "disabled".into()],
            },
            sessions_disconnected: 1,
        };
        assert_eq!(
            o.detail(),
            "updated profile, disabled; 1 session disconnected"
        );
        assert_eq!(OpOutcome::of(Change::Absent).detail(), "absent");
    }
}
