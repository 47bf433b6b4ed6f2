//! A tiny query builder: SQL text with numbered `$n` placeholders, which PostgreSQL and SQLite
//! both accept (sqlx's own `QueryBuilder` writes `?` for the Any driver, which PostgreSQL
//! does not), and the values bound to them.

use sqlx::any::{AnyArguments, AnyQueryResult, AnyRow};
use sqlx::{Any, Arguments as _, Encode, Executor, Type};

/// SQL text and its bound values.
pub(crate) struct Sql {
    text: String,
    args: AnyArguments<'static>,
    n: usize,
    error: Option<String>,
}

impl Sql {
    /// Starts a query with `text`.
    pub(crate) fn new(text: &str) -> Self {
        Self {
            text: text.to_owned(),
            args: AnyArguments::default(),
            n: 0,
            error: None,
        }
    }

    /// Appends SQL text (never a value: values go through [`bind`](Self::bind)).
    pub(crate) fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    /// Appends a placeholder for `value`.
    pub(crate) fn bind<T>(&mut self, value: T) -> &mut Self
    where
        T: 'static + Send + Encode<'static, Any> + Type<Any>,
    {
        self.n += 1;
        self.text.push('$');
        self.text.push_str(&self.n.to_string());
        if let Err(e) = self.args.add(value) {
            self.error.get_or_insert(e.to_string());
        }
        self
    }

    fn parts(self) -> Result<(String, AnyArguments<'static>), sqlx::Error> {
        match self.error {
            Some(e) => Err(sqlx::Error::Encode(e.into())),
            None => Ok((self.text, self.args)),
        }
    }

    pub(crate) async fn fetch_all<'c, E>(self, e: E) -> Result<Vec<AnyRow>, sqlx::Error>
    where
        E: Executor<'c, Database = Any>,
    {
        let (text, args) = self.parts()?;
        sqlx::query_with(&text, args).fetch_all(e).await
    }

    pub(crate) async fn fetch_optional<'c, E>(self, e: E) -> Result<Option<AnyRow>, sqlx::Error>
    where
        E: Executor<'c, Database = Any>,
    {
        let (text, args) = self.parts()?;
        sqlx::query_with(&text, args).fetch_optional(e).await
    }

    pub(crate) async fn fetch_one<'c, E>(self, e: E) -> Result<AnyRow, sqlx::Error>
    where
        E: Executor<'c, Database = Any>,
    {
        let (text, args) = self.parts()?;
        sqlx::query_with(&text, args).fetch_one(e).await
    }

    pub(crate) async fn execute<'c, E>(self, e: E) -> Result<AnyQueryResult, sqlx::Error>
    where
        E: Executor<'c, Database = Any>,
    {
        let (text, args) = self.parts()?;
        sqlx::query_with(&text, args).execute(e).await
    }
}

/// Appends `(v1, v2, ...)` as bound values; `ids` must not be empty.
pub(crate) fn push_in(q: &mut Sql, ids: impl IntoIterator<Item = String>) {
    q.push("(");
    for (i, id) in ids.into_iter().enumerate() {
        if i > 0 {
            q.push(", ");
        }
        q.bind(id);
    }
    q.push(")");
}
