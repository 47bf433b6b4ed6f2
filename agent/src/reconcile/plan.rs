//! The diff: from a router's rows and its desired state to the commands that make the router
//! match, and the drift found on the way. Pure: no I/O, so every rule is tested on its own.
//!
//! For every managed item kind the router's rows are keyed like the desired items (name, or
//! `list/address` for address-list entries) and each pair falls into one case:
//!
//! | router | item | what happens |
//! | --- | --- | --- |
//! | absent | desired | `add` (with the marker) |
//! | present, not ours | desired | conflict: reported, left alone (unless adopted) |
//! | present, ours | desired, fields differ | one `set` of the differing fields (+ `unset`s) |
//! | present, ours | not desired | `remove` |
//! | present, not ours | not desired | nothing: an administrator's item |
//!
//! "Ours" means the comment starts with [`MARKER`](crate::ops::MARKER), or — for an item added
//! by a pass that died before it could write the marker (RouterOS before 7.15 takes no
//! comment on `/ppp add`) — that its key is in the pass journal. Hotspot user profiles have no
//! comment: a desired one is ours by name, and one is removed only if the last applied state
//! had it.
//!
//! **Staff change or drift.** A difference on an item that staff changed since the last
//! applied state (`prev`) is simply applied. A difference on an item staff did not change is
//! *drift* (the router moved): it is corrected under policy `enforce` (or when staff enforce
//! that item) and reported as a finding either way; under `report` it is left as it is.
//!
//! Password values are compared but never copied into a finding: both sides read
//! `<redacted>`.

use std::collections::{BTreeSet, HashMap, HashSet};

use tikfleet_shared::domain::{
    AccountKind, AccountRef, DesiredState, DriftPolicy, ItemKind, ItemRef, Profile,
};
use tikfleet_shared::record::{DriftAction, DriftFinding};
use tikfleet_shared::secret::REDACTED;

use crate::ops::{self, Field, Kind, Menu, Want};
use crate::routeros::{Capabilities, Cmd, Row};

/// What a pass may touch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every item, under the drift policy.
    All(DriftPolicy),
    /// Only these items, whatever the policy; `adopt` takes over unmarked items of these
    /// names.
    Only {
        /// The items.
        items: BTreeSet<ItemRef>,
        /// Take over unmarked items.
        adopt: bool,
    },
}

/// The menus a pass reads, with the fields it needs.
pub(crate) fn print_command(kind: ItemKind) -> Cmd {
    let props: &[&str] = match kind {
        ItemKind::PppProfile => &[
            ".id",
            "name",
            "comment",
            "rate-limit",
            "address-list",
            "local-address",
            "remote-address",
            "dns-server",
            "only-one",
        ],
        ItemKind::HotspotProfile => &[
            ".id",
            "name",
            "rate-limit",
            "address-list",
            "session-timeout",
            "idle-timeout",
            "shared-users",
        ],
        ItemKind::PppSecret => &[
            ".id",
            "name",
            "comment",
            "password",
            "service",
            "profile",
            "disabled",
            "remote-address",
        ],
        ItemKind::HotspotUser => &[
            ".id",
            "name",
            "comment",
            "password",
            "profile",
            "server",
            "mac-address",
            "disabled",
        ],
        ItemKind::AddressListEntry => &[".id", "list", "address", "comment", "dynamic"],
    };
    Cmd::new(format!("{}/print", kind.path())).proplist(props)
}

pub(crate) fn menu(kind: ItemKind) -> &'static Menu {
    match kind {
        ItemKind::PppProfile => &ops::PPP_PROFILE,
        ItemKind::HotspotProfile => &ops::HOTSPOT_PROFILE,
        ItemKind::PppSecret => &ops::PPP_SECRET,
        ItemKind::HotspotUser => &ops::HOTSPOT_USER,
        ItemKind::AddressListEntry => &ops::ADDRESS_LIST,
    }
}

/// A desired item in the form the diff works on.
struct Wanted {
    item: ItemRef,
    /// Attributes that make the key on `add` (`name`, or `list` and `address`).
    key_attrs: Vec<(&'static str, String)>,
    fields: Vec<Field>,
    /// The comment it should carry (the marker and its own text).
    comment: String,
    /// The account, for session disconnects.
    account: Option<AccountRef>,
    /// Identity of the item's content, to tell staff changes from drift.
    fingerprint: Vec<u8>,
}

fn fingerprint<T: serde::Serialize>(item: &T) -> Vec<u8> {
    // MessagePack of the item as the controller sent it; a failure (never seen) makes every
    // item look changed by staff, which applies it rather than reporting drift.
    rmp_serde::to_vec(item).unwrap_or_default()
}

/// The key of an address-list entry: `list/address`, the address without a `/32`.
pub(crate) fn address_key(list: &str, address: &str) -> String {
    format!("{list}/{}", ops::normalize(Kind::Address, address))
}

fn wanted(state: &DesiredState) -> Vec<Wanted> {
    let mut out = Vec::with_capacity(
        state.profiles.len()
            + state.ppp_secrets.len()
            + state.hotspot_users.len()
            + state.address_list_entries.len(),
    );
    for p in &state.profiles {
        if p.name() == ops::BUILTIN_PROFILE {
            // Every router has it and it is never ours.
            continue;
        }
        let (kind, fields, comment) = match p {
            Profile::Ppp(p) => (
                ItemKind::PppProfile,
                ops::ppp_profile_fields(p),
                p.comment.as_deref(),
            ),
            Profile::Hotspot(p) => (
                ItemKind::HotspotProfile,
                ops::hotspot_profile_fields(p),
                p.comment.as_deref(),
            ),
        };
        out.push(Wanted {
            item: ItemRef {
                kind,
                key: p.name().to_owned(),
            },
            key_attrs: vec![("name", p.name().to_owned())],
            fields,
            comment: ops::marked(comment),
            account: None,
            fingerprint: fingerprint(p),
        });
    }
    for s in &state.ppp_secrets {
        out.push(Wanted {
            item: ItemRef {
                kind: ItemKind::PppSecret,
                key: s.name.clone(),
            },
            key_attrs: vec![("name", s.name.clone())],
            fields: ops::ppp_secret_fields(s),
            comment: ops::marked(s.comment.as_deref()),
            account: Some(AccountRef {
                kind: AccountKind::Ppp,
                name: s.name.clone(),
            }),
            fingerprint: fingerprint(s),
        });
    }
    for u in &state.hotspot_users {
        out.push(Wanted {
            item: ItemRef {
                kind: ItemKind::HotspotUser,
                key: u.name.clone(),
            },
            key_attrs: vec![("name", u.name.clone())],
            fields: ops::hotspot_user_fields(u),
            comment: ops::marked(u.comment.as_deref()),
            account: Some(AccountRef {
                kind: AccountKind::Hotspot,
                name: u.name.clone(),
            }),
            fingerprint: fingerprint(u),
        });
    }
    for e in &state.address_list_entries {
        out.push(Wanted {
            item: ItemRef {
                kind: ItemKind::AddressListEntry,
                key: address_key(&e.list, &e.address),
            },
            key_attrs: vec![("list", e.list.clone()), ("address", e.address.clone())],
            fields: Vec::new(),
            comment: ops::marked(e.comment.as_deref()),
            account: None,
            fingerprint: fingerprint(e),
        });
    }
    out
}

/// The key of a router row of `kind`, if it has one.
fn row_key(kind: ItemKind, row: &Row) -> Option<String> {
    match kind {
        ItemKind::AddressListEntry => Some(address_key(row.get("list")?, row.get("address")?)),
        _ => row.get("name").cloned(),
    }
}

/// One unit of work: the commands for one item (pipelined together: they touch different
/// fields), and the findings that become `failed` if one of them fails.
#[derive(Debug)]
pub(crate) struct Step {
    /// The item.
    pub(crate) item: ItemRef,
    /// Its commands.
    pub(crate) cmds: Vec<Cmd>,
    /// Indexes into [`Plan::findings`] this step corrects.
    pub(crate) findings: Vec<usize>,
    /// An account whose sessions must reconnect once the step succeeded.
    pub(crate) reconnect: Option<AccountRef>,
    /// Added without its marker (RouterOS before 7.15): mark it after the adds.
    pub(crate) mark_later: Option<String>,
}

/// What a pass will do, in phases that respect dependencies: profiles are made before the
/// accounts that use them, and removed after the accounts that used them.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// Profile adds and sets.
    pub(crate) profiles: Vec<Step>,
    /// Account and address-list adds, sets and removes.
    pub(crate) accounts: Vec<Step>,
    /// Profile removes.
    pub(crate) profile_removes: Vec<Step>,
    /// Every difference that is drift (not a staff change), and conflicts.
    pub(crate) findings: Vec<DriftFinding>,
    /// Desired items compared.
    pub(crate) items_checked: u64,
    /// Desired items left alone because an administrator's item holds their name.
    pub(crate) conflicts: u32,
}

impl Plan {
    /// Steps in all phases.
    pub(crate) fn steps(&self) -> usize {
        self.profiles.len() + self.accounts.len() + self.profile_removes.len()
    }

    /// Items added without a marker, to journal before the adds are sent.
    pub(crate) fn unmarked_adds(&self) -> Vec<ItemRef> {
        self.profiles
            .iter()
            .chain(&self.accounts)
            .filter(|s| s.mark_later.is_some())
            .map(|s| s.item.clone())
            .collect()
    }
}

/// The inputs of [`diff`].
pub(crate) struct Inputs<'a> {
    /// The state to reach.
    pub(crate) desired: &'a DesiredState,
    /// The last state a pass finished (to tell staff changes from drift); `None` before the
    /// first.
    pub(crate) prev: Option<&'a DesiredState>,
    /// The router's rows per kind.
    pub(crate) rows: &'a HashMap<ItemKind, Vec<Row>>,
    /// Items added unmarked by an interrupted pass: ours, though their comment lacks it.
    pub(crate) journal: &'a HashSet<ItemRef>,
    /// Items a job changed after this desired state was stored: the job is newer intent, so
    /// the pass leaves them alone (the next state will agree with the job).
    pub(crate) skip: &'a HashSet<ItemRef>,
    /// Items jobs changed since the last applied state, for this state or an older one: a
    /// difference there comes from staff changes still on their way, not from the router.
    pub(crate) touched: &'a HashSet<ItemRef>,
    /// What this router's version can do.
    pub(crate) caps: &'a Capabilities,
    /// What the pass may touch.
    pub(crate) scope: &'a Scope,
}

fn redact(field: &Field, v: Option<String>) -> Option<String> {
    match field.want {
        Want::Secret(_) => v.map(|_| REDACTED.to_owned()),
        _ => v,
    }
}

fn want_text(field: &Field) -> Option<String> {
    match &field.want {
        // In the router's own words (`true`/`false`), as the router's value reads.
        Want::Set(v) if field.kind == Kind::Bool => Some(ops::normalize(Kind::Bool, v)),
        Want::Set(v) => Some(v.clone()),
        Want::Secret(_) => Some(REDACTED.to_owned()),
        Want::Unset => None,
    }
}

/// Whether changing this field needs the account's sessions to reconnect.
fn needs_reconnect(field: &str) -> bool {
    matches!(field, "profile" | "disabled" | "password")
}

/// Computes the plan.
pub(crate) fn diff(inputs: &Inputs<'_>) -> Plan {
    let Inputs {
        desired,
        prev,
        rows,
        journal,
        skip,
        touched,
        caps,
        scope,
    } = inputs;
    let mut plan = Plan::default();
    let prev_items: Option<HashMap<ItemRef, Vec<u8>>> = prev.map(|p| {
        wanted(p)
            .into_iter()
            .map(|w| (w.item, w.fingerprint))
            .collect()
    });
    let (policy, only, adopt) = match scope {
        Scope::All(policy) => (*policy, None, false),
        Scope::Only { items, adopt } => (DriftPolicy::Enforce, Some(items), *adopt),
    };
    let in_scope = |item: &ItemRef| only.is_none_or(|o| o.contains(item)) && !skip.contains(item);
    let staff_changed = |w: &Wanted| {
        touched.contains(&w.item)
            || prev_items
                .as_ref()
                .is_none_or(|p| p.get(&w.item) != Some(&w.fingerprint))
    };
    let fix_drift = policy == DriftPolicy::Enforce;

    let mut by_key: HashMap<ItemKind, HashMap<String, &Row>> = HashMap::new();
    for kind in ItemKind::ALL {
        let map = by_key.entry(kind).or_default();
        for row in rows.get(&kind).map_or(&[][..], Vec::as_slice) {
            if row
                .get("dynamic")
                .is_some_and(|d| d == "true" || d == "yes")
            {
                continue;
            }
            if let Some(key) = row_key(kind, row) {
                map.entry(key).or_insert(row);
            }
        }
    }

    let wanted = wanted(desired);
    let mut desired_keys: HashSet<&ItemRef> = HashSet::with_capacity(wanted.len());
    for w in &wanted {
        if !desired_keys.insert(&w.item) || !in_scope(&w.item) {
            continue;
        }
        plan.items_checked += 1;
        let menu = menu(w.item.kind);
        let with_comment = menu.has_comment(caps);
        let staff = staff_changed(w);
        let fix = staff || fix_drift;
        let row = by_key[&w.item.kind].get(&w.item.key).copied();
        let Some(row) = row else {
            let action = if fix {
                DriftAction::Corrected
            } else {
                DriftAction::Reported
            };
            let finding = (!staff).then(|| {
                push_finding(
                    &mut plan,
                    DriftFinding {
                        item: w.item.clone(),
                        field: None,
                        router_value: None,
                        desired_value: Some("present".into()),
                        managed: true,
                        action,
                    },
                )
            });
            if fix {
                let step = add_step(w, menu, caps, with_comment, finding);
                phase(&mut plan, w.item.kind, false).push(step);
            }
            continue;
        };
        let ours = !with_comment
            || ops::is_marked(row)
            || journal.contains(&w.item)
            || (adopt && only.is_some());
        if !ours {
            plan.conflicts += 1;
            push_finding(
                &mut plan,
                DriftFinding {
                    item: w.item.clone(),
                    field: None,
                    router_value: Some("made by hand (no tikfleet marker)".into()),
                    desired_value: Some("managed by tikfleet".into()),
                    managed: false,
                    action: DriftAction::Conflict,
                },
            );
            continue;
        }
        let differing: Vec<&Field> = w
            .fields
            .iter()
            .filter(|f| !f.satisfied_by(row.get(f.name).map(String::as_str)))
            .collect();
        let comment_differs = with_comment && row.get("comment") != Some(&w.comment);
        if differing.is_empty() && !comment_differs {
            continue;
        }
        let action = if fix {
            DriftAction::Corrected
        } else {
            DriftAction::Reported
        };
        let mut findings = Vec::new();
        if !staff {
            for f in &differing {
                findings.push(push_finding(
                    &mut plan,
                    DriftFinding {
                        item: w.item.clone(),
                        field: Some(f.name.to_owned()),
                        router_value: redact(f, row.get(f.name).cloned()),
                        desired_value: want_text(f),
                        managed: true,
                        action,
                    },
                ));
            }
            if comment_differs {
                findings.push(push_finding(
                    &mut plan,
                    DriftFinding {
                        item: w.item.clone(),
                        field: Some("comment".into()),
                        router_value: row.get("comment").cloned(),
                        desired_value: Some(w.comment.clone()),
                        managed: true,
                        action,
                    },
                ));
            }
        }
        if !fix {
            continue;
        }
        let Some(id) = row.get(".id") else {
            continue;
        };
        let mut cmds = Vec::new();
        let sets: Vec<&&Field> = differing
            .iter()
            .filter(|f| !matches!(f.want, Want::Unset))
            .collect();
        let comment_verb = comment_differs && menu.comment_by_verb(caps);
        if !sets.is_empty() || (comment_differs && !comment_verb) {
            let mut set = Cmd::new(format!("{}/set", menu.path)).attr(".id", id.clone());
            for f in sets {
                set = ops::with_field(set, f);
            }
            if comment_differs && !comment_verb {
                set = set.attr("comment", w.comment.clone());
            }
            cmds.push(set);
        }
        for f in differing.iter().filter(|f| matches!(f.want, Want::Unset)) {
            cmds.push(
                Cmd::new(format!("{}/unset", menu.path))
                    .attr(".id", id.clone())
                    .attr("value-name", f.name),
            );
        }
        if comment_verb {
            cmds.push(
                Cmd::new(format!("{}/comment", menu.path))
                    .attr(".id", id.clone())
                    .attr("comment", w.comment.clone()),
            );
        }
        let reconnect = differing
            .iter()
            .any(|f| needs_reconnect(f.name))
            .then(|| w.account.clone())
            .flatten();
        phase(&mut plan, w.item.kind, false).push(Step {
            item: w.item.clone(),
            cmds,
            findings,
            reconnect,
            mark_later: None,
        });
    }

    // Router items that are ours but no longer desired.
    let prev_hotspot_profiles: HashSet<&str> = prev
        .map(|p| {
            p.profiles
                .iter()
                .filter(|p| matches!(p, Profile::Hotspot(_)))
                .map(Profile::name)
                .collect()
        })
        .unwrap_or_default();
    for kind in ItemKind::ALL {
        let menu = menu(kind);
        let with_comment = menu.has_comment(caps);
        let mut keys: Vec<(&String, &&Row)> = by_key[&kind].iter().collect();
        keys.sort_by(|a, b| a.0.cmp(b.0));
        for (key, row) in keys {
            let item = ItemRef {
                kind,
                key: key.clone(),
            };
            if desired_keys.contains(&item) || !in_scope(&item) {
                continue;
            }
            let ours = if with_comment {
                ops::is_marked(row) || journal.contains(&item)
            } else {
                key != ops::BUILTIN_PROFILE && prev_hotspot_profiles.contains(key.as_str())
            };
            if !ours {
                continue;
            }
            let staff = touched.contains(&item)
                || prev_items.as_ref().is_none_or(|p| p.contains_key(&item));
            let fix = staff || fix_drift;
            let finding = (!staff).then(|| {
                push_finding(
                    &mut plan,
                    DriftFinding {
                        item: item.clone(),
                        field: None,
                        router_value: Some("present".into()),
                        desired_value: None,
                        managed: true,
                        action: if fix {
                            DriftAction::Corrected
                        } else {
                            DriftAction::Reported
                        },
                    },
                )
            });
            if !fix {
                continue;
            }
            let Some(id) = row.get(".id") else { continue };
            let reconnect = match kind {
                ItemKind::PppSecret => Some(AccountKind::Ppp),
                ItemKind::HotspotUser => Some(AccountKind::Hotspot),
                _ => None,
            }
            .map(|kind| AccountRef {
                kind,
                name: key.clone(),
            });
            phase(&mut plan, kind, true).push(Step {
                item,
                cmds: vec![Cmd::new(format!("{}/remove", menu.path)).attr(".id", id.clone())],
                findings: finding.into_iter().collect(),
                reconnect,
                mark_later: None,
            });
        }
    }
    plan
}

fn push_finding(plan: &mut Plan, finding: DriftFinding) -> usize {
    plan.findings.push(finding);
    plan.findings.len() - 1
}

fn phase(plan: &mut Plan, kind: ItemKind, remove: bool) -> &mut Vec<Step> {
    match (kind, remove) {
        (ItemKind::PppProfile | ItemKind::HotspotProfile, false) => &mut plan.profiles,
        (ItemKind::PppProfile | ItemKind::HotspotProfile, true) => &mut plan.profile_removes,
        _ => &mut plan.accounts,
    }
}

fn add_step(
    w: &Wanted,
    menu: &Menu,
    caps: &Capabilities,
    with_comment: bool,
    finding: Option<usize>,
) -> Step {
    let mut add = Cmd::new(format!("{}/add", menu.path));
    for (k, v) in &w.key_attrs {
        add = add.attr(*k, v.clone());
    }
    for f in &w.fields {
        add = ops::with_field(add, f);
    }
    let later = with_comment && menu.comment_by_verb(caps);
    if with_comment && !later {
        add = add.attr("comment", w.comment.clone());
    }
    Step {
        item: w.item.clone(),
        cmds: vec![add],
        findings: finding.into_iter().collect(),
        reconnect: None,
        mark_later: later.then(|| w.comment.clone()),
    }
}

#[cfg(test)]
mod tests;
