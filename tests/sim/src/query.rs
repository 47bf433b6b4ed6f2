//! Print queries: the `?` words of a `print` and their stack evaluation.
//!
//! Plain terms (`?name=x`, `?=name=x`, `?name`, `?-name`, `?<name=v`, `?>name=v`) each push one
//! boolean; `?#` words run stack operations (`!` not, `&` and, `|` or, `.` duplicate the top,
//! digits push a copy of the value at that index from the bottom). At the end every value left
//! on the stack is ANDed; an empty query matches every row. Comparisons with `<`/`>` are numeric
//! when both sides parse as integers and lexical otherwise. Popping an empty stack yields `true`
//! ([U]: RouterOS's behaviour on malformed stacks is unconfirmed).

use std::borrow::Cow;

/// One query word, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Term {
    /// `?name=value` or `?=name=value`.
    Eq(String, String),
    /// `?name`: the row has the property.
    Has(String),
    /// `?-name`: the row lacks the property.
    Lacks(String),
    /// `?<name=value`.
    Less(String, String),
    /// `?>name=value`.
    Greater(String, String),
    /// `?#ops`.
    Ops(String),
}

/// A parsed query.
#[derive(Debug, Clone, Default)]
pub struct Query {
    terms: Vec<Term>,
}

impl Query {
    /// Parses query words (each starting with `?`); other words are ignored.
    pub fn parse<'a>(words: impl IntoIterator<Item = &'a str>) -> Self {
        let terms = words.into_iter().filter_map(parse_term).collect();
        Self { terms }
    }

    /// Whether the query has no terms (matches everything).
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The value a row's `field` must equal for the query to match it, when the query is a
    /// plain conjunction holding `?field=value` (or `?=field=value`): every row it matches
    /// reads `value` there, an absent property reading as empty as in [`Query::matches`].
    /// `None` when that is not certain: no such term, or a stack operation other than `&`.
    /// (Terms and `&` only ever AND values, popping an empty stack yields AND's identity
    /// `true`, and the final stack is ANDed, so such a query is the AND of its terms.)
    pub fn pinned(&self, field: &str) -> Option<&str> {
        let conjunction = self.terms.iter().all(|t| match t {
            Term::Ops(ops) => ops.bytes().all(|b| b == b'&'),
            _ => true,
        });
        if !conjunction {
            return None;
        }
        self.terms.iter().find_map(|t| match t {
            Term::Eq(n, v) if n == field => Some(v.as_str()),
            _ => None,
        })
    }

    /// Evaluates the query against a row, given a property getter.
    pub fn matches<'r>(&self, get: impl Fn(&str) -> Option<Cow<'r, str>>) -> bool {
        if self.terms.is_empty() {
            return true;
        }
        let mut stack: Vec<bool> = Vec::with_capacity(self.terms.len());
        for t in &self.terms {
            match t {
                Term::Eq(n, v) => stack.push(get(n).as_deref().unwrap_or("") == v),
                Term::Has(n) => stack.push(get(n).is_some()),
                Term::Lacks(n) => stack.push(get(n).is_none()),
                Term::Less(n, v) => stack.push(get(n).is_some_and(|x| compare(&x, v).is_lt())),
                Term::Greater(n, v) => stack.push(get(n).is_some_and(|x| compare(&x, v).is_gt())),
                Term::Ops(ops) => run_ops(ops, &mut stack),
            }
        }
        stack.iter().all(|b| *b)
    }
}

fn parse_term(word: &str) -> Option<Term> {
    let body = word.strip_prefix('?')?;
    if let Some(ops) = body.strip_prefix('#') {
        return Some(Term::Ops(ops.to_string()));
    }
    let split = |s: &str| -> (String, Option<String>) {
        match s.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (s.to_string(), None),
        }
    };
    Some(match body.as_bytes().first() {
        Some(b'=') => {
            let (n, v) = split(&body[1..]);
            Term::Eq(n, v.unwrap_or_default())
        }
        Some(b'-') => Term::Lacks(body[1..].to_string()),
        Some(b'<') => {
            let (n, v) = split(&body[1..]);
            Term::Less(n, v.unwrap_or_default())
        }
        Some(b'>') => {
            let (n, v) = split(&body[1..]);
            Term::Greater(n, v.unwrap_or_default())
        }
        _ => match split(body) {
            (n, Some(v)) => Term::Eq(n, v),
            (n, None) => Term::Has(n),
        },
    })
}

fn compare(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.parse::<i128>(), b.parse::<i128>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        _ => a.cmp(b),
    }
}

fn run_ops(ops: &str, stack: &mut Vec<bool>) {
    let bytes = ops.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'!' => {
                let v = stack.pop().unwrap_or(true);
                stack.push(!v);
            }
            b'&' => {
                let a = stack.pop().unwrap_or(true);
                let b = stack.pop().unwrap_or(true);
                stack.push(a && b);
            }
            b'|' => {
                let a = stack.pop().unwrap_or(true);
                let b = stack.pop().unwrap_or(true);
                stack.push(a || b);
            }
            b'.' => {
                let v = stack.last().copied().unwrap_or(true);
                stack.push(v);
            }
            b'0'..=b'9' => {
                let start = i;
                while i + 1 < bytes.len() && bytes[i + 1].is_ascii_digit() {
                    i += 1;
                }
                let idx: usize = ops[start..=i].parse().unwrap_or(usize::MAX);
                let v = stack.get(idx).copied().unwrap_or(true);
                stack.push(v);
            }
            _ => {}
        }
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(k: &str) -> Option<Cow<'static, str>> {
        let v = match k {
            "name" => Some("alice"),
            "type" => Some("ether"),
            "mtu" => Some("1500"),
            "comment" => Some(""),
            _ => None,
        };
        v.map(Cow::Borrowed)
    }

    fn check(words: &[&str], expected: bool) {
        let q = Query::parse(words.iter().copied());
        assert_eq!(q.matches(row), expected, "{words:?}");
    }

    #[test]
    fn terms_and_stack() {
        check(&[], true);
        check(&["?name=alice"], true);
        check(&["?=name=alice"], true);
        check(&["?name=bob"], false);
        check(&["?name"], true);
        check(&["?-name"], false);
        check(&["?-disabled"], true);
        check(&["?>mtu=999"], true);
        check(&["?<mtu=999"], false);
        check(&["?type=vlan", "?type=ether", "?#|"], true);
        check(&["?type=vlan", "?type=ether", "?#|!"], false);
        check(&["?type=vlan", "?name=alice", "?#&"], false);
        check(&["?type=vlan", "?#!"], true);
        check(&["?name=alice", "?type=vlan", "?#0"], false);
        check(&["?#&&|!"], false);
    }

    #[test]
    fn pinned_only_for_conjunctions() {
        let pinned = |words: &[&str]| {
            Query::parse(words.iter().copied())
                .pinned("name")
                .map(str::to_string)
        };
        assert_eq!(pinned(&["?name=a"]), Some("a".into()));
        assert_eq!(pinned(&["?=name=a=b"]), Some("a=b".into()));
        assert_eq!(pinned(&["?name="]), Some(String::new()));
        assert_eq!(
            pinned(&["?disabled=false", "?name=a", "?#&"]),
            Some("a".into())
        );
        assert_eq!(
            pinned(&["?#&&", "?name=a", "?-comment", "?#"]),
            Some("a".into())
        );
        assert_eq!(pinned(&[]), None);
        assert_eq!(pinned(&["?name"]), None);
        assert_eq!(pinned(&["?>name=a"]), None);
        assert_eq!(pinned(&["?comment=a"]), None);
        for ops in ["?#!", "?#|", "?#.", "?#0", "?#&!", "?#x"] {
            assert_eq!(pinned(&["?name=a", "?name=b", ops]), None, "{ops}");
        }
    }
}
