//! Restores: the parts of a stored binary backup an agent fetches for a `restore` job.
//!
//! A restore job names its backup by id, size and SHA-256 (see `Db::request_restore`); the
//! agent then asks the hub for the file part by part (`backup_fetch` → `backup_part`), so no
//! frame and no memory on either side ever holds more than one part. A part is read straight
//! from the stored base64 text with `SUBSTR` (a byte range of the file is a character range
//! of its base64, after aligning to 3 bytes), so the controller never loads the whole file.
//!
//! An agent may fetch only binary backups of its own routers: any other id (another
//! agent's or tenant's, a text export, no such backup) is the same `None`, which the hub
//! answers with `not_found`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use tikfleet_shared::AgentId;
use uuid::Uuid;

use super::sql::Sql;
use super::{Db, DbError, RowExt as _};

/// A byte range of a stored backup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupRange {
    /// The file's size in bytes.
    pub total: u64,
    /// The bytes from the requested offset (empty at or past the end).
    pub data: Vec<u8>,
}

/// The base64 characters holding bytes `offset..offset + len` of a file: the character
/// range (1-based start, count) and how many decoded bytes to skip at its front.
fn b64_window(offset: u64, len: u64) -> (u64, u64, usize) {
    let skip = offset % 3;
    let aligned = offset - skip;
    let span = len + skip;
    let start = aligned / 3 * 4 + 1;
    let count = span.div_ceil(3) * 4;
    (start, count, skip as usize)
}

impl Db {
    /// Bytes `offset..offset + max` of binary backup `backup_id`, for `agent`: `None` unless
    /// it is a binary backup of one of the agent's routers (in the agent's tenant).
    ///
    /// # Errors
    /// The database failed, or the stored bytes are damaged.
    pub async fn backup_range_for_agent(
        &self,
        agent: AgentId,
        backup_id: &str,
        offset: u64,
        max: usize,
    ) -> Result<Option<BackupRange>, DbError> {
        let Ok(id) = backup_id.parse::<Uuid>() else {
            return Ok(None);
        };
        let mut q = Sql::new(
            "SELECT b.size, b.router_id, b.blob_sha256 FROM backups b \
             JOIN routers r ON r.id = b.router_id AND r.tenant_id = b.tenant_id \
             JOIN agents a ON a.id = r.agent_id AND a.tenant_id = r.tenant_id \
             WHERE b.kind = 'binary' AND b.id = ",
        );
        q.bind(id.to_string())
            .push(" AND r.agent_id = ")
            .bind(agent.to_string());
        let Some(row) = q.fetch_optional(self.pool()).await? else {
            return Ok(None);
        };
        let total = row.uint("size")?;
        let (router, blob) = (row.text("router_id")?, row.text("blob_sha256")?);
        let len = total.saturating_sub(offset).min(max as u64);
        if len == 0 {
            return Ok(Some(BackupRange {
                total,
                data: Vec::new(),
            }));
        }
        let (start, count, skip) = b64_window(offset, len);
        // Plain integers computed here, so they are written into the SQL rather than bound:
        // PostgreSQL's SUBSTR takes INTEGER arguments, which a bound BIGINT does not match.
        let mut q = Sql::new(&format!(
            "SELECT SUBSTR(data, {start}, {count}) AS part FROM backup_blobs WHERE router_id = "
        ));
        q.bind(router).push(" AND sha256 = ").bind(blob);
        let row = q
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| DbError::Corrupt(format!("backup {id} has no stored bytes")))?;
        let decoded = B64
            .decode(row.text("part")?)
            .map_err(|e| DbError::Corrupt(format!("backup {id}: {e}")))?;
        let end = (skip + len as usize).min(decoded.len());
        if decoded.len() < skip + len as usize {
            return Err(DbError::Corrupt(format!(
                "backup {id} holds fewer bytes than its size {total}"
            )));
        }
        Ok(Some(BackupRange {
            total,
            data: decoded[skip..end].to_vec(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cover_the_requested_bytes() {
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let text = B64.encode(&data);
        for offset in [0u64, 1, 2, 3, 4, 5, 299, 997, 999] {
            for len in [1u64, 2, 3, 4, 7, 300] {
                let len = len.min(data.len() as u64 - offset);
                let (start, count, skip) = b64_window(offset, len);
                let from = (start - 1) as usize;
                let to = (from + count as usize).min(text.len());
                let part = B64.decode(&text[from..to]).unwrap();
                let got = &part[skip..skip + len as usize];
                assert_eq!(
                    got,
                    &data[offset as usize..(offset + len) as usize],
                    "offset {offset} len {len}"
                );
            }
        }
    }
}
