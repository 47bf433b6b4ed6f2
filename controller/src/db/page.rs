//! Keyset pagination, the same for every list: items in id order (UUIDv7 ids sort by creation
//! time), `limit` at a time, and an opaque cursor (base64url of the last id) for the next page.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::DbError;
use super::sql::Sql;

/// The default page size.
pub const DEFAULT_LIMIT: u32 = 50;
/// The largest page size.
pub const MAX_LIMIT: u32 = 500;

/// Which page to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageRequest {
    limit: u32,
    after: Option<String>,
}

impl Default for PageRequest {
    fn default() -> Self {
        Self {
            limit: DEFAULT_LIMIT,
            after: None,
        }
    }
}

impl PageRequest {
    /// A page of `limit` (1 to [`MAX_LIMIT`], default [`DEFAULT_LIMIT`]) after `cursor`.
    ///
    /// # Errors
    /// The limit is out of range or the cursor is not one this API handed out.
    pub fn parse(limit: Option<u32>, cursor: Option<&str>) -> Result<Self, DbError> {
        let limit = limit.unwrap_or(DEFAULT_LIMIT);
        if limit == 0 || limit > MAX_LIMIT {
            return Err(DbError::Invalid(format!(
                "limit must be between 1 and {MAX_LIMIT}"
            )));
        }
        let after = match cursor {
            None | Some("") => None,
            Some(c) => Some(decode_cursor(c).ok_or_else(|| {
                DbError::Invalid("cursor is not valid; use a next_cursor this API returned".into())
            })?),
        };
        Ok(Self { limit, after })
    }

    /// The page size.
    #[must_use]
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// Appends ` AND <id> > <after>` (when there is a cursor), the order and the limit (one
    /// extra row tells whether another page follows).
    pub(crate) fn apply(&self, q: &mut Sql, id_column: &str) {
        if let Some(after) = &self.after {
            q.push(" AND ")
                .push(id_column)
                .push(" > ")
                .bind(after.clone());
        }
        q.push(" ORDER BY ")
            .push(id_column)
            .push(" LIMIT ")
            .bind(i64::from(self.limit) + 1);
    }

    /// Cuts the extra row and makes the cursor.
    pub(crate) fn finish<T>(&self, mut items: Vec<T>, id_of: impl Fn(&T) -> String) -> Page<T> {
        let limit = self.limit as usize;
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|last| encode_cursor(&id_of(last)))
        } else {
            None
        };
        Page { items, next_cursor }
    }
}

/// One page of a list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    /// The items, in id order.
    pub items: Vec<T>,
    /// The cursor of the next page, if there is one.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Maps the items.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next_cursor: self.next_cursor,
        }
    }
}

fn encode_cursor(id: &str) -> String {
    URL_SAFE_NO_PAD.encode(id.as_bytes())
}

fn decode_cursor(cursor: &str) -> Option<String> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    uuid::Uuid::parse_str(&text).ok()?;
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let id = uuid::Uuid::now_v7().to_string();
        let c = encode_cursor(&id);
        assert_eq!(decode_cursor(&c), Some(id));
        assert_eq!(decode_cursor("!!"), None);
        assert_eq!(decode_cursor(&encode_cursor("not-an-id")), None);
    }

    #[test]
    fn limits() {
        assert!(PageRequest::parse(Some(0), None).is_err());
        assert!(PageRequest::parse(Some(MAX_LIMIT + 1), None).is_err());
        assert_eq!(
            PageRequest::parse(None, None).unwrap().limit(),
            DEFAULT_LIMIT
        );
        assert!(PageRequest::parse(Some(5), Some("zz")).is_err());
    }

    #[test]
    fn finish_sets_the_cursor_only_when_more_follow() {
        let page = PageRequest::parse(Some(2), None).unwrap();
        let ids: Vec<String> = (0..3).map(|_| uuid::Uuid::now_v7().to_string()).collect();
        let p = page.finish(ids.clone(), Clone::clone);
        assert_eq!(p.items.len(), 2);
        assert_eq!(
            decode_cursor(p.next_cursor.as_deref().unwrap()),
            Some(ids[1].clone())
        );
        let p = page.finish(ids[..2].to_vec(), Clone::clone);
        assert_eq!(p.next_cursor, None);
    }
}
