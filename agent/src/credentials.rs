//! Router credential rotation and API lockdown: the `rotate_credentials` and `lockdown` jobs.
//!
//! The executor calls [`rotate`] and [`lockdown`] with the router's current client (logged in
//! with the registry's credential) and the [`Registry`] that holds it.
//!
//! # Rotation
//!
//! 1. *Clean up*: every `/user` named `tikfleet-…` with the `tikfleet:` comment marker that
//!    is not the registry's current user is removed (the pending user of an interrupted run
//!    among them), and the pending record is cleared. Other users are never touched.
//! 2. The group [`GROUP`] is made so, with [`POLICIES`].
//! 3. A new user `tikfleet-<8 hex>` with a 40-character random password is recorded as
//!    pending in the registry (sealed, durable) *before* it is created on the router.
//! 4. `/user/add` (password sent as a secret: never in the audit record).
//! 5. A fresh connection logs in as the new user (login and version read).
//! 6. The registry switches to the new user, durably, in one transaction that also drops the
//!    pending record.
//! 7. The old user is removed through the new user's connection, if rotation made it
//!    (name and marker); an administrator's account the router was added with is kept (the detail says
//!    so): it may be the account people use, and locking them out is worse than leaving it.
//!
//! A crash or a lost connection at any step leaves the registry's credential working: up to
//! step 6 it is the old one, untouched; from step 6 it is the new one, verified at step 5.
//! The next run's step 1 removes what was left behind (the pending user, or the old
//! `tikfleet-…` user).
//!
//! # Lockdown
//!
//! Reads the addresses the router sees the agent's API sessions come from (`/user/active`,
//! the current user's `api` sessions), sets `/ip/service` `api`, `api-ssl` and `ssh`
//! `address=` to those (as /32 or /128) plus the admin networks, then logs in afresh. If that
//! login fails, the previous addresses are put back and the job fails. The detail says
//! whether the plain API is still enabled while API-SSL is available.

use std::net::IpAddr;
use std::sync::Arc;

use rand::Rng;
use rand::distr::Alphanumeric;
use tikfleet_shared::{ErrorCode, Secret};

use crate::clock::SharedClock;
use crate::registry::Registry;
use crate::router::RouterEndpoint;
use crate::routeros::{Cmd, CommandObserver, DriverConfig, DriverError, RouterOsClient, Row};

/// The router group rotated users are made in.
pub const GROUP: &str = "tikfleet";

/// The prefix of every user rotation makes (and may remove).
pub const USER_PREFIX: &str = "tikfleet-";

/// The policies of [`GROUP`]: `api` (the driver), `read`/`write` (reconcile, jobs),
/// `sensitive` (PPP and hotspot passwords are compared by the reconciler), `policy` (user and
/// group management: the next rotation), `ssh` and `ftp` (`/export`, backups over SFTP),
/// `reboot` (reboot, restore), `test` (diagnostics). Not granted: `local`, `telnet`,
/// `winbox`, `web`, `password`, `sniff`, `romon`, `rest-api`.
pub const POLICIES: &str = "read,write,policy,api,ssh,ftp,reboot,sensitive,test";

/// What a rotation or a lockdown needs besides the router's client.
#[derive(Clone)]
pub struct Context {
    /// Driver settings for the verifying login.
    pub driver: DriverConfig,
    /// The clock.
    pub clock: SharedClock,
    /// Where the verifying connection's commands are audited.
    pub observer: Arc<dyn CommandObserver>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").finish_non_exhaustive()
    }
}

/// The steps of a rotation, in order (tests stop a run after each one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    /// Stale users removed.
    CleanedUp,
    /// The group is made so.
    Group,
    /// The new user is recorded as pending.
    Pending,
    /// The new user exists on the router.
    Created,
    /// A fresh login as the new user worked.
    Verified,
    /// The registry uses the new user.
    Switched,
    /// The old user is removed (or kept).
    Done,
}

impl Step {
    /// Every step, in order.
    pub const ALL: [Step; 7] = [
        Self::CleanedUp,
        Self::Group,
        Self::Pending,
        Self::Created,
        Self::Verified,
        Self::Switched,
        Self::Done,
    ];
}

fn internal(e: impl std::fmt::Display) -> DriverError {
    DriverError::new(ErrorCode::Internal, e.to_string())
}

fn registry_err(e: crate::registry::RegistryError) -> DriverError {
    DriverError::new(e.code(), e.to_string())
}

/// A new user name: `tikfleet-` and 8 lowercase hex digits.
fn new_username() -> String {
    format!("{USER_PREFIX}{:08x}", rand::rng().random::<u32>())
}

/// A new password: 40 alphanumeric characters (about 238 bits), no character RouterOS or a
/// shell would treat specially.
fn new_password() -> Secret {
    let pw: String = rand::rng()
        .sample_iter(&Alphanumeric)
        .take(40)
        .map(char::from)
        .collect();
    Secret::new(pw)
}

async fn users(client: &RouterOsClient) -> Result<Vec<Row>, DriverError> {
    client
        .run(Cmd::new("/user/print").proplist(&[".id", "name", "group", "comment"]))
        .await
}

/// The comment rotated users carry; with the name prefix, what marks a user as tikfleet's.
pub const USER_COMMENT: &str = "tikfleet: agent login (rotated)";

/// Whether rotation made this `/user` row (name prefix and the `tikfleet:` marker).
fn is_ours(row: &Row) -> bool {
    row.get("name").is_some_and(|n| n.starts_with(USER_PREFIX))
        && row
            .get("comment")
            .is_some_and(|c| c.starts_with("tikfleet:"))
}

async fn remove_user(client: &RouterOsClient, row: &Row) -> Result<(), DriverError> {
    let Some(id) = row.get(".id") else {
        return Err(internal("a /user row without .id"));
    };
    match client.run(Cmd::new("/user/remove").attr(".id", id)).await {
        Ok(_) => Ok(()),
        // Removed meanwhile: what we wanted.
        Err(e) if e.message().contains("no such item") => Ok(()),
        Err(e) => Err(e),
    }
}

async fn ensure_group(client: &RouterOsClient) -> Result<(), DriverError> {
    let rows = client
        .run(
            Cmd::new("/user/group/print")
                .proplist(&[".id", "name", "policy"])
                .query_eq("name", GROUP),
        )
        .await?;
    match rows.first() {
        None => {
            client
                .run(
                    Cmd::new("/user/group/add")
                        .attr("name", GROUP)
                        .attr("policy", POLICIES),
                )
                .await?;
        }
        Some(row) if !same_policies(row.get("policy").map_or("", String::as_str)) => {
            let id = row
                .get(".id")
                .ok_or_else(|| internal("a group without .id"))?;
            client
                .run(
                    Cmd::new("/user/group/set")
                        .attr(".id", id)
                        .attr("policy", POLICIES),
                )
                .await?;
        }
        Some(_) => {}
    }
    Ok(())
}

/// Whether a group's policy string grants exactly [`POLICIES`] (RouterOS lists the denied
/// ones with `!`).
fn same_policies(policy: &str) -> bool {
    let mut have: Vec<&str> = policy
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty() && !p.starts_with('!'))
        .collect();
    let mut want: Vec<&str> = POLICIES.split(',').collect();
    have.sort_unstable();
    want.sort_unstable();
    have == want
}

/// Logs in afresh as `endpoint` (login and version read), then returns that client.
async fn fresh_login(
    endpoint: RouterEndpoint,
    ctx: &Context,
) -> Result<RouterOsClient, DriverError> {
    let mut driver = ctx.driver.clone();
    driver.pool_size = 1;
    RouterOsClient::connect(
        endpoint,
        driver,
        ctx.clock.clone(),
        Arc::clone(&ctx.observer),
    )
    .await
}

/// Rotates the router's credential (see the module documentation); the result is the
/// job's detail.
///
/// # Errors
///
/// The failing step's error; the registry's credential works whatever step failed.
pub async fn rotate(
    client: &RouterOsClient,
    registry: &Registry,
    ctx: &Context,
) -> Result<String, DriverError> {
    rotate_until(client, registry, ctx, Step::Done).await
}

/// [`rotate`], stopping with an `internal` error right after `stop` (unless `stop` is
/// [`Step::Done`]): tests use it to interrupt a rotation at every step.
///
/// # Errors
///
/// As [`rotate`].
pub async fn rotate_until(
    client: &RouterOsClient,
    registry: &Registry,
    ctx: &Context,
    stop: Step,
) -> Result<String, DriverError> {
    let check = |step: Step| {
        if step == stop && step != Step::Done {
            Err(DriverError::new(
                ErrorCode::Internal,
                format!("rotation interrupted after {step:?} (test)"),
            ))
        } else {
            Ok(())
        }
    };
    let router = client.endpoint().id;
    let current = registry.get(router).map_err(registry_err)?;

    // 1. Clean up what an interrupted run left: tikfleet users that are not the current one.
    let rows = users(client).await?;
    let mut removed = 0;
    for row in &rows {
        let name = row.get("name").map_or("", String::as_str);
        if is_ours(row) && name != current.username {
            remove_user(client, row).await?;
            removed += 1;
        }
    }
    registry
        .clear_rotation(router)
        .await
        .map_err(registry_err)?;
    if removed > 0 {
        tracing::info!(router = %router, removed, "removed stale tikfleet router users");
    }
    check(Step::CleanedUp)?;

    // 2. The group.
    ensure_group(client).await?;
    check(Step::Group)?;

    // 3. The new user, durable before it exists.
    let username = new_username();
    let password = new_password();
    registry
        .begin_rotation(router, &username, &password)
        .await
        .map_err(registry_err)?;
    check(Step::Pending)?;

    // 4. Create it.
    client
        .run(
            Cmd::new("/user/add")
                .attr("name", &username)
                .attr("group", GROUP)
                .secret("password", &password)
                .attr("comment", USER_COMMENT),
        )
        .await?;
    check(Step::Created)?;

    // 5. Log in with it.
    let endpoint = RouterEndpoint {
        username: username.clone(),
        password: password.clone(),
        ..current.clone()
    };
    let verified = fresh_login(endpoint, ctx).await.map_err(|e| {
        DriverError::new(
            e.code(),
            format!("the new router user could not log in: {}", e.message()),
        )
    })?;
    check(Step::Verified)?;

    // 6. Switch the vault.
    let previous = registry
        .finish_rotation(router, &username, &password)
        .await
        .map_err(registry_err)?;
    tracing::info!(router = %router, user = %username, "router credential rotated");
    check(Step::Switched)?;

    // 7. Remove the old user through the new login, if tikfleet made it.
    let rows = users(&verified).await?;
    let old = rows
        .iter()
        .find(|r| r.get("name").map(String::as_str) == Some(previous.as_str()));
    let detail = if let Some(row) = old.filter(|r| is_ours(r)) {
        remove_user(&verified, row).await?;
        format!("rotated: now {username}; removed {previous}")
    } else {
        format!(
            "rotated: now {username} (group {GROUP}); kept {previous}, the account the router \
             was added with: disable it or change its password by hand if nobody uses it"
        )
    };
    Ok(detail)
}

/// Parses an admin network (`10.0.0.0/24`, `192.0.2.7`, `2001:db8::/32`).
fn parse_network(text: &str) -> Result<String, DriverError> {
    let bad = || {
        DriverError::new(
            ErrorCode::InvalidRequest,
            format!("invalid admin network {text:?}: expected an address or address/prefix"),
        )
    };
    let text = text.trim();
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) => (a, Some(l.parse::<u8>().map_err(|_| bad())?)),
        None => (text, None),
    };
    let ip: IpAddr = addr.parse().map_err(|_| bad())?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = len.unwrap_or(max);
    if len > max {
        return Err(bad());
    }
    Ok(format!("{ip}/{len}"))
}

/// The services lockdown restricts.
pub const SERVICES: [&str; 3] = ["api", "api-ssl", "ssh"];

/// Restricts the router's management services (see the module documentation); the result
/// is the job's detail.
///
/// # Errors
///
/// `invalid_request` for a bad admin network or when the agent's address cannot be read
/// (nothing changed); the verifying login's error after a rollback; the rollback's error if
/// that failed too.
pub async fn lockdown(
    client: &RouterOsClient,
    admin_networks: &[String],
    ctx: &Context,
) -> Result<String, DriverError> {
    let endpoint = client.endpoint().clone();
    let mut allowed = Vec::new();
    // The agent's addresses as the router sees them: the API sessions of its user.
    let active = client
        .run(
            Cmd::new("/user/active/print")
                .proplist(&["name", "address", "via"])
                .query_eq("name", &endpoint.username),
        )
        .await?;
    for row in &active {
        let via = row.get("via").map_or("", String::as_str);
        if !via.starts_with("api") {
            continue;
        }
        if let Some(addr) = row.get("address").and_then(|a| a.parse::<IpAddr>().ok()) {
            let net = format!("{addr}/{}", if addr.is_ipv4() { 32 } else { 128 });
            if !allowed.contains(&net) {
                allowed.push(net);
            }
        }
    }
    if allowed.is_empty() {
        return Err(DriverError::new(
            ErrorCode::InvalidRequest,
            "cannot tell the address the router sees the agent connect from (/user/active \
             lists no API session of its user); nothing was changed",
        ));
    }
    let agent_addrs = allowed.join(",");
    for net in admin_networks {
        let net = parse_network(net)?;
        if !allowed.contains(&net) {
            allowed.push(net);
        }
    }
    let address = allowed.join(",");

    let rows = client
        .run(Cmd::new("/ip/service/print").proplist(&[".id", "name", "address", "disabled"]))
        .await?;
    let find = |name: &str| {
        rows.iter()
            .find(|r| r.get("name").map(String::as_str) == Some(name))
    };
    let mut previous = Vec::new();
    for name in SERVICES {
        let Some(row) = find(name) else { continue };
        let Some(id) = row.get(".id") else { continue };
        let old = row.get("address").cloned().unwrap_or_default();
        previous.push((id.clone(), name, old));
    }
    let set = |id: &str, address: &str| {
        Cmd::new("/ip/service/set")
            .attr(".id", id)
            .attr("address", address)
    };
    let results = client
        .run_many(
            previous
                .iter()
                .map(|(id, _, _)| set(id, &address))
                .collect(),
        )
        .await;
    let changed = results.iter().any(Result::is_ok);
    let failed = results.into_iter().find_map(Result::err);
    let verify = match failed {
        Some(e) => Err(e),
        None => fresh_login(endpoint.clone(), ctx).await.map(drop),
    };
    if let Err(e) = verify {
        if changed {
            let rollback = client
                .run_many(previous.iter().map(|(id, _, old)| set(id, old)).collect())
                .await;
            if let Some(r) = rollback.into_iter().find_map(Result::err) {
                return Err(DriverError::new(
                    r.code(),
                    format!(
                        "lockdown failed ({}) and rolling back /ip/service failed too: {}",
                        e.message(),
                        r.message()
                    ),
                ));
            }
        }
        tracing::warn!(router = %endpoint.id, error = %e, "lockdown rolled back");
        return Err(DriverError::new(
            e.code(),
            format!(
                "lockdown rolled back: a fresh login failed after restricting /ip/service: {}",
                e.message()
            ),
        ));
    }
    let enabled = |name: &str| {
        find(name).is_some_and(|r| r.get("disabled").map(String::as_str) != Some("true"))
    };
    let services: Vec<&str> = previous.iter().map(|(_, n, _)| *n).collect();
    let mut detail = format!(
        "locked down {}: address={address} (agent as the router sees it: {agent_addrs})",
        services.join(", ")
    );
    if enabled("api") && enabled("api-ssl") {
        detail.push_str(
            "; warning: the plain API is still enabled while API-SSL is available (passwords \
             cross the network in clear text): move the agent to API-SSL and disable `api`",
        );
    }
    Ok(detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_are_normalised() {
        assert_eq!(parse_network("10.0.0.0/24").unwrap(), "10.0.0.0/24");
        assert_eq!(parse_network(" 192.0.2.7 ").unwrap(), "192.0.2.7/32");
        assert_eq!(parse_network("2001:db8::/32").unwrap(), "2001:db8::/32");
        assert!(parse_network("10.0.0.0/33").is_err());
        assert!(parse_network("example.com").is_err());
        assert!(parse_network("10.0.0.1,10.0.0.2").is_err());
    }

    #[test]
    fn policies_compare_as_sets() {
        assert!(same_policies(
            "test,read,write,policy,api,ssh,ftp,reboot,sensitive,!local,!winbox"
        ));
        assert!(!same_policies("read,write,api"));
    }

    #[test]
    fn generated_credentials() {
        let a = new_username();
        assert!(a.starts_with(USER_PREFIX) && a.len() == USER_PREFIX.len() + 8);
        assert_eq!(new_password().expose().len(), 40);
        assert_ne!(new_password().expose(), new_password().expose());
    }
}
