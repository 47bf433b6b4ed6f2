//! The generic table engine: menu specs, rows with ids, key indexes and the command errors.
//!
//! A [`MenuSpec`] lists a menu's fields in print order with their kinds, defaults and flags, the
//! key fields that must be unique and the message RouterOS gives for a duplicate. A [`Table`]
//! holds ordered rows (by id; ids are `*HEX`, never reused) with a key→id index. Values that
//! need other menus (references) are checked by the device (`device.rs`), not here.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use crate::query::Query;

#[cfg(test)]
thread_local! {
    /// Set by tests to make [`Table::select`] scan every row, to compare it with the index.
    pub(crate) static FULL_SCAN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A command failure, sent as `!trap` (the text is RouterOS's message).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CommandError {
    /// A row with the same key exists; carries the menu's own message.
    #[error("{0}")]
    Duplicate(&'static str),
    /// An id or name that matches no row.
    #[error("no such item")]
    NoSuchItem,
    /// A value outside a field's choices or a reference to a missing item.
    #[error("input does not match any value of {0}")]
    NoMatch(String),
    /// A malformed value (address, number, duration).
    #[error("invalid value for argument {0}")]
    InvalidValue(String),
    /// An attribute the command does not take.
    #[error("unknown parameter {0}")]
    UnknownParameter(String),
    /// A known menu without that verb.
    #[error("no such command")]
    NoSuchCommand,
    /// A path segment that is no menu (sent as two traps, then `!done`).
    #[error("no such command or directory ({0})")]
    NoSuchDirectory(String),
    /// A command other than `/login` before logging in (the text is [I]).
    #[error("not logged in")]
    NotLoggedIn,
    /// A cancelled command.
    #[error("interrupted")]
    Interrupted,
    /// Any other failure, with RouterOS's text (`failure: …`, injected traps).
    #[error("{0}")]
    Failure(String),
}

impl CommandError {
    /// The `=category=` RouterOS sends with this trap, if any (most traps carry none).
    pub fn category(&self) -> Option<u8> {
        match self {
            Self::NoSuchDirectory(_) => Some(0),
            Self::Interrupted => Some(2),
            _ => None,
        }
    }
}

/// How a field's written value is checked and normalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Any text.
    Text,
    /// `yes`/`no`/`true`/`false`, stored as `true`/`false`.
    Bool,
    /// One of the listed values.
    Enum(&'static [&'static str]),
    /// The key of a row in another menu, or one of the listed extra values.
    Ref(&'static str, &'static [&'static str]),
    /// A non-negative integer.
    Int,
    /// A duration (`30m`, `1d`); `none` allowed when the default is `none`.
    Duration,
    /// A rate pair normalised to bits/s: `10M/10M` → `10000000/10000000`.
    RatePair,
    /// An address or prefix; a bare address gets `/32` (queue targets).
    Target,
    /// An IPv4 address.
    Address,
}

/// One field of a menu.
#[derive(Debug, Clone)]
pub struct Field {
    /// The field name as on the wire.
    pub name: &'static str,
    /// How values are checked.
    pub kind: Kind,
    /// Stored at add when not given; `None` means absent until set.
    pub default: Option<&'static str>,
    /// Read-only (cannot be written).
    pub read_only: bool,
    /// Never printed (the `/user` password).
    pub hidden: bool,
    /// A secret: hidden in v7 exports unless `show-sensitive`.
    pub sensitive: bool,
}

impl Field {
    /// A writable text field without default.
    pub const fn new(name: &'static str) -> Self {
        Self {
            name,
            kind: Kind::Text,
            default: None,
            read_only: false,
            hidden: false,
            sensitive: false,
        }
    }
    /// With a kind.
    pub const fn kind(mut self, kind: Kind) -> Self {
        self.kind = kind;
        self
    }
    /// With a default.
    pub const fn def(mut self, d: &'static str) -> Self {
        self.default = Some(d);
        self
    }
    /// Read-only.
    pub const fn ro(mut self) -> Self {
        self.read_only = true;
        self
    }
    /// Never printed.
    pub const fn hidden(mut self) -> Self {
        self.hidden = true;
        self.sensitive = true;
        self
    }
    /// Sensitive in exports.
    pub const fn sensitive(mut self) -> Self {
        self.sensitive = true;
        self
    }
}

/// A menu of rows.
#[derive(Debug, Clone)]
pub struct MenuSpec {
    /// API path, e.g. `/ppp/secret`.
    pub path: &'static str,
    /// Fields in print order.
    pub fields: Vec<Field>,
    /// Fields whose values together must be unique (empty: no uniqueness).
    pub key: &'static [&'static str],
    /// Message for a duplicate key.
    pub dup_msg: &'static str,
    /// Fields `add` requires.
    pub required: &'static [&'static str],
    /// Whether `add` and `remove` exist.
    pub add_remove: bool,
    index: HashMap<&'static str, usize>,
}

impl MenuSpec {
    /// Builds a spec and its field index.
    pub fn new(
        path: &'static str,
        fields: Vec<Field>,
        key: &'static [&'static str],
        dup_msg: &'static str,
        required: &'static [&'static str],
        add_remove: bool,
    ) -> Self {
        let index = fields
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name, i))
            .collect();
        Self {
            path,
            fields,
            key,
            dup_msg,
            required,
            add_remove,
            index,
        }
    }

    /// The index of a field.
    pub fn field_index(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// Whether the menu has a `disabled` field (enable/disable work).
    pub fn has_disabled(&self) -> bool {
        self.index.contains_key("disabled")
    }
}

/// A row: an id and one optional value per spec field.
#[derive(Debug, Clone)]
pub struct Row {
    /// Numeric id (`*HEX` on the wire).
    pub id: u32,
    /// Values aligned with the spec's fields.
    pub vals: Vec<Option<String>>,
    /// Built-in rows cannot be removed.
    pub builtin: bool,
    /// For dynamic address-list entries: when the entry expires.
    pub expires: Option<Instant>,
}

impl Row {
    /// A field's value by index.
    pub fn get(&self, i: usize) -> Option<&str> {
        self.vals.get(i).and_then(|v| v.as_deref())
    }
}

/// Formats an id as RouterOS does: `*1A`.
pub fn format_id(id: u32) -> String {
    format!("*{id:X}")
}

/// Parses `*1A` into an id.
pub fn parse_id(s: &str) -> Option<u32> {
    u32::from_str_radix(s.strip_prefix('*')?, 16).ok()
}

/// The rows of one menu.
#[derive(Debug, Clone)]
pub struct Table {
    /// The menu's spec.
    pub spec: std::sync::Arc<MenuSpec>,
    rows: BTreeMap<u32, Row>,
    by_key: HashMap<String, u32>,
    next_id: u32,
}

impl Table {
    /// An empty table whose first id is `first_id`.
    pub fn new(spec: std::sync::Arc<MenuSpec>, first_id: u32) -> Self {
        Self {
            spec,
            rows: BTreeMap::new(),
            by_key: HashMap::new(),
            next_id: first_id,
        }
    }

    fn key_of(&self, vals: &[Option<String>]) -> Option<String> {
        if self.spec.key.is_empty() {
            return None;
        }
        let mut k = String::new();
        for (n, name) in self.spec.key.iter().enumerate() {
            if n > 0 {
                k.push('\0');
            }
            let i = self.spec.field_index(name)?;
            k.push_str(vals.get(i).and_then(|v| v.as_deref()).unwrap_or(""));
        }
        Some(k)
    }

    /// Rows in id order.
    pub fn rows(&self) -> impl Iterator<Item = &Row> {
        self.rows.values()
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// A row by id.
    pub fn get(&self, id: u32) -> Option<&Row> {
        self.rows.get(&id)
    }

    /// The rows a print with `query` must look at, in id order: every row, or, when the
    /// query pins this table's single key field ([`Query::pinned`]), only the row the key
    /// index gives for that value (or none). The caller still evaluates the whole query on
    /// each row, so the result is a full scan's provided its getter reads the key field's
    /// stored value (hidden fields, which print as absent, are never looked up).
    pub fn select<'a>(&'a self, query: &Query) -> impl Iterator<Item = &'a Row> + 'a {
        let pinned = self.pinned_row(query);
        let all = pinned.is_none().then(|| self.rows.values());
        pinned
            .flatten()
            .into_iter()
            .chain(all.into_iter().flatten())
    }

    /// `Some(candidate)` when the key index answers `query`, `None` for a full scan.
    fn pinned_row(&self, query: &Query) -> Option<Option<&Row>> {
        #[cfg(test)]
        if FULL_SCAN.get() {
            return None;
        }
        let &[key] = self.spec.key else { return None };
        let i = self.spec.field_index(key)?;
        if self.spec.fields[i].hidden {
            return None;
        }
        // The index reads an absent key as "", as `?name=` does.
        let value = query.pinned(key)?;
        Some(self.find_key(value).and_then(|id| self.rows.get(&id)))
    }

    /// The id of the row with this single-field key (name).
    pub fn find_key(&self, key: &str) -> Option<u32> {
        self.by_key.get(key).copied()
    }

    /// The next id `insert` will use, and the id counter (for backups).
    pub fn next_id(&self) -> u32 {
        self.next_id
    }

    /// Inserts a row with the next id (or `id` for built-ins), checking key uniqueness.
    pub fn insert(
        &mut self,
        vals: Vec<Option<String>>,
        id: Option<u32>,
        builtin: bool,
    ) -> Result<u32, CommandError> {
        let key = self.key_of(&vals);
        if let Some(k) = &key
            && self.by_key.contains_key(k)
        {
            return Err(CommandError::Duplicate(self.spec.dup_msg));
        }
        let id = match id {
            Some(id) => id,
            None => {
                let id = self.next_id;
                self.next_id = self.next_id.wrapping_add(1);
                id
            }
        };
        if let Some(k) = key {
            self.by_key.insert(k, id);
        }
        self.rows.insert(
            id,
            Row {
                id,
                vals,
                builtin,
                expires: None,
            },
        );
        Ok(id)
    }

    /// Applies changes `(field index, value)` to a row, checking key uniqueness.
    pub fn update(
        &mut self,
        id: u32,
        changes: &[(usize, Option<String>)],
    ) -> Result<(), CommandError> {
        let row = self.rows.get(&id).ok_or(CommandError::NoSuchItem)?;
        let old_key = self.key_of(&row.vals);
        let mut vals = row.vals.clone();
        for (i, v) in changes {
            if let Some(slot) = vals.get_mut(*i) {
                *slot = v.clone();
            }
        }
        let new_key = self.key_of(&vals);
        if new_key != old_key {
            if let Some(k) = &new_key
                && self.by_key.contains_key(k)
            {
                return Err(CommandError::Duplicate(self.spec.dup_msg));
            }
            if let Some(k) = &old_key {
                self.by_key.remove(k);
            }
            if let Some(k) = new_key {
                self.by_key.insert(k, id);
            }
        }
        if let Some(row) = self.rows.get_mut(&id) {
            row.vals = vals;
        }
        Ok(())
    }

    /// Applies the same changes to several rows, all or none: a missing row or a key clash
    /// (with another row, or between the rows themselves) changes nothing.
    pub fn update_many(
        &mut self,
        ids: &[u32],
        changes: &[(usize, Option<String>)],
    ) -> Result<(), CommandError> {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        let mut updated = Vec::with_capacity(ids.len());
        let mut new_keys: HashMap<String, u32> = HashMap::new();
        for id in &ids {
            let row = self.rows.get(id).ok_or(CommandError::NoSuchItem)?;
            let mut vals = row.vals.clone();
            for (i, v) in changes {
                if let Some(slot) = vals.get_mut(*i) {
                    *slot = v.clone();
                }
            }
            if let Some(k) = self.key_of(&vals) {
                let taken_by_other = self
                    .by_key
                    .get(&k)
                    .is_some_and(|owner| ids.binary_search(owner).is_err());
                if taken_by_other || new_keys.insert(k, *id).is_some() {
                    return Err(CommandError::Duplicate(self.spec.dup_msg));
                }
            }
            updated.push((*id, vals));
        }
        for (id, _) in &updated {
            if let Some(k) = self.rows.get(id).and_then(|r| self.key_of(&r.vals)) {
                self.by_key.remove(&k);
            }
        }
        self.by_key.extend(new_keys);
        for (id, vals) in updated {
            if let Some(row) = self.rows.get_mut(&id) {
                row.vals = vals;
            }
        }
        Ok(())
    }

    /// Sets the expiry of a row.
    pub fn set_expiry(&mut self, id: u32, at: Option<Instant>) {
        if let Some(r) = self.rows.get_mut(&id) {
            r.expires = at;
        }
    }

    /// Removes a row.
    pub fn remove(&mut self, id: u32) -> Option<Row> {
        let row = self.rows.remove(&id)?;
        if let Some(k) = self.key_of(&row.vals) {
            self.by_key.remove(&k);
        }
        Some(row)
    }

    /// Removes rows whose expiry has passed.
    pub fn purge_expired(&mut self, now: Instant) {
        let dead: Vec<u32> = self
            .rows
            .values()
            .filter(|r| r.expires.is_some_and(|t| t <= now))
            .map(|r| r.id)
            .collect();
        for id in dead {
            self.remove(id);
        }
    }

    /// Resolves `numbers=`/`.id=`: a comma list of `*HEX` ids or key values (names).
    pub fn resolve(&self, numbers: &str) -> Result<Vec<u32>, CommandError> {
        let mut out = Vec::new();
        for item in numbers.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let id = match parse_id(item) {
                Some(id) if self.rows.contains_key(&id) => id,
                // `no such item` for `.id` and `numbers=` misses alike: when RouterOS adds the
                // `(4)` suffix is unresolved (routeros-replies.md §15) [U].
                Some(_) => return Err(CommandError::NoSuchItem),
                None => self.find_key(item).ok_or(CommandError::NoSuchItem)?,
            };
            out.push(id);
        }
        if out.is_empty() {
            return Err(CommandError::NoSuchItem);
        }
        Ok(out)
    }

    /// A table of the same menu holding `rows` (backup restore), or `None` if they are not a
    /// consistent table: two rows with one id or one key. Ids stay never reused: the counter
    /// is moved past the highest id.
    pub fn restored(&self, rows: Vec<Row>, next_id: u32) -> Option<Table> {
        let mut t = Table::new(self.spec.clone(), next_id);
        for r in rows {
            if let Some(k) = t.key_of(&r.vals)
                && t.by_key.insert(k, r.id).is_some()
            {
                return None;
            }
            if r.vals.len() != t.spec.fields.len() || t.rows.contains_key(&r.id) {
                return None;
            }
            if r.id >= t.next_id && !r.builtin {
                t.next_id = r.id.checked_add(1)?;
            }
            t.rows.insert(r.id, r);
        }
        Some(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn ids_keys_and_resolve() {
        let spec = Arc::new(MenuSpec::new(
            "/t",
            vec![Field::new("name"), Field::new("x")],
            &["name"],
            "failure: dup",
            &["name"],
            true,
        ));
        let mut t = Table::new(spec, 1);
        let a = t.insert(vec![Some("a".into()), None], None, false).unwrap();
        let b = t.insert(vec![Some("b".into()), None], None, false).unwrap();
        assert_eq!(
            t.insert(vec![Some("a".into()), None], None, false),
            Err(CommandError::Duplicate("failure: dup"))
        );
        assert_eq!(t.resolve("a,*2").unwrap(), vec![a, b]);
        assert_eq!(
            t.update(b, &[(0, Some("a".into()))]),
            Err(CommandError::Duplicate("failure: dup"))
        );
        t.remove(a);
        let c = t.insert(vec![Some("a".into()), None], None, false).unwrap();
        assert_eq!(c, 3, "ids are never reused");
        assert_eq!(format_id(0xFFFF_FFFE), "*FFFFFFFE");
        assert_eq!(t.resolve("zz"), Err(CommandError::NoSuchItem));
    }
}
