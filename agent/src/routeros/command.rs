//! [`Cmd`]: one RouterOS API command as the driver sends it, and [`Row`], one `!re` reply.
//!
//! A `Cmd` knows which of its values are secrets ([`Cmd::secret`]), so it can build the wire
//! command with the value and the audit parameters without it.

use std::collections::BTreeMap;

use mikrotik_rs::{Command, CommandBuilder};
use tikfleet_shared::Secret;
use tikfleet_shared::record::AuditParams;

/// One reply row (`!re`): attribute name → value (`.id` included).
pub type Row = BTreeMap<String, String>;

#[derive(Clone, Debug)]
enum Word {
    Attr(String, String),
    Secret(String, Secret),
    QueryEq(String, String),
    Proplist(String),
}

/// A command: a path such as `/ppp/secret/print`, attributes and queries.
#[derive(Clone, Debug)]
pub struct Cmd {
    path: String,
    words: Vec<Word>,
}

impl Cmd {
    /// A command word, e.g. `/ppp/secret/add`.
    #[must_use]
    pub fn new(path: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            words: Vec::new(),
        }
    }

    /// `=key=value`. Keys that look secret are still redacted in the audit params.
    #[must_use]
    pub fn attr(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.words.push(Word::Attr(key.into(), value.into()));
        self
    }

    /// `=key=value` for a secret value: sent to the router, never audited.
    #[must_use]
    pub fn secret(mut self, key: impl Into<String>, value: &Secret) -> Self {
        self.words.push(Word::Secret(key.into(), value.clone()));
        self
    }

    /// `?key=value` (print only).
    #[must_use]
    pub fn query_eq(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.words.push(Word::QueryEq(key.into(), value.into()));
        self
    }

    /// `=.proplist=a,b,c` (print only).
    #[must_use]
    pub fn proplist(mut self, fields: &[&str]) -> Self {
        self.words.push(Word::Proplist(fields.join(",")));
        self
    }

    /// The command word.
    #[must_use]
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The value of a plain attribute, if set (secrets are not returned).
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&str> {
        self.words.iter().find_map(|w| match w {
            Word::Attr(k, v) if k == key => Some(v.as_str()),
            _ => None,
        })
    }

    /// The parameters for the audit log, secrets redacted.
    #[must_use]
    pub fn audit_params(&self) -> AuditParams {
        let mut p = AuditParams::new();
        for w in &self.words {
            match w {
                Word::Attr(k, v) => p.insert(k.clone(), v.clone()),
                Word::Secret(k, s) => p.insert_secret(k.clone(), s),
                Word::QueryEq(k, v) => p.insert(format!("?{k}"), v.clone()),
                Word::Proplist(v) => p.insert(".proplist", v.clone()),
            };
        }
        p
    }

    /// The wire command, with a fresh tag.
    pub(crate) fn build(&self) -> Command {
        let mut b = CommandBuilder::new().command(&self.path);
        for w in &self.words {
            b = match w {
                Word::Attr(k, v) => b.attribute(k, Some(v)),
                Word::Secret(k, s) => b.attribute(k, Some(s.expose())),
                Word::QueryEq(k, v) => b.query_equal(k, v),
                Word::Proplist(v) => b.attribute(".proplist", Some(v)),
            };
        }
        b.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_params_never_carry_secrets() {
        let cmd = Cmd::new("/ppp/secret/add")
            .attr("name", "alice")
            .secret("password", &Secret::new("hunter2"))
            .attr("private-key", "k3y")
            .query_eq("name", "alice")
            .proplist(&[".id", "name"]);
        let p = cmd.audit_params();
        assert_eq!(p.get("name"), Some("alice"));
        assert_eq!(p.get("password"), Some(tikfleet_shared::secret::REDACTED));
        assert_eq!(
            p.get("private-key"),
            Some(tikfleet_shared::secret::REDACTED)
        );
        assert_eq!(p.get("?name"), Some("alice"));
        assert_eq!(p.get(".proplist"), Some(".id,name"));
        assert!(!format!("{cmd:?}").contains("hunter2"));
        let wire = cmd.build().into_data();
        assert!(wire.windows(7).any(|w| w == b"hunter2"));
    }
}
