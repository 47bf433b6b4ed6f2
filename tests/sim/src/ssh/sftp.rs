//! The `sftp` subsystem: the router's `/file` list served as one flat directory `/`.
//!
//! A file opened for reading is a snapshot taken at `open`; a file opened for writing is
//! buffered and handed to [`SshDevice::file_write`] whole at `close` (an upload the client
//! abandons leaves the device unchanged). Paths `/name`, `name` and `./name` all mean the file
//! `name`; `/`, `.` and `` mean the directory. Binary-safe: the bytes go through untouched.

use std::collections::HashMap;
use std::sync::Arc;

use russh_sftp::protocol::{
    Attrs, Data, File, FileAttributes, Handle, Name, OpenFlags, Status, StatusCode, Version,
};
use tracing::{debug, warn};

use super::SshDevice;

/// Largest file an upload may build (offset + length); larger writes fail.
const MAX_FILE_SIZE: usize = 256 * 1024 * 1024;

/// Most bytes one `read` answers with (clients ask for 32 KiB or so).
const MAX_READ: u32 = 64 * 1024;

/// Most handles one session may hold open.
const MAX_HANDLES: usize = 1024;

/// Most bytes one session's open handles may hold together (read snapshots and uploads), so
/// 1024 handles on a large file cannot take 1024 copies of it.
const MAX_HELD: usize = 512 * 1024 * 1024;

/// Mode bits of a regular file, `-rw-r--r--`.
const FILE_MODE: u32 = 0o100_644;

/// Mode bits of the directory, `drwxr-xr-x`.
const DIR_MODE: u32 = 0o040_755;

/// One SFTP session's state: its open handles.
pub(super) struct FileServer {
    device: Arc<dyn SshDevice>,
    handles: HashMap<String, Open>,
    next_handle: u64,
}

/// What a handle refers to.
enum Open {
    /// The root directory; `listed` once its entries were sent.
    Dir { listed: bool },
    /// A file and its bytes (a snapshot when read, the new contents when written).
    File {
        name: String,
        data: Vec<u8>,
        writable: bool,
        append: bool,
    },
}

/// Where a path points in the flat file system.
#[derive(Debug, PartialEq, Eq)]
enum Target<'a> {
    Root,
    File(&'a str),
}

/// Resolves a client path: leading `/` and `./` are dropped, so `/a`, `a` and `./a` are `a`.
fn resolve(path: &str) -> Target<'_> {
    let mut rest = path;
    loop {
        let trimmed = rest.trim_start_matches('/');
        match trimmed.strip_prefix("./") {
            Some(after) => rest = after,
            None => {
                rest = trimmed;
                break;
            }
        }
    }
    let rest = rest.trim_end_matches('/');
    match rest {
        "" | "." | ".." => Target::Root,
        name => Target::File(name),
    }
}

fn dir_attrs() -> FileAttributes {
    FileAttributes {
        size: Some(0),
        uid: Some(0),
        gid: Some(0),
        permissions: Some(DIR_MODE),
        atime: Some(0),
        mtime: Some(0),
        ..FileAttributes::default()
    }
}

fn file_attrs(size: u64) -> FileAttributes {
    FileAttributes {
        size: Some(size),
        uid: Some(0),
        gid: Some(0),
        permissions: Some(FILE_MODE),
        atime: Some(0),
        mtime: Some(0),
        ..FileAttributes::default()
    }
}

fn ok(id: u32) -> Status {
    Status {
        id,
        status_code: StatusCode::Ok,
        error_message: "Ok".to_owned(),
        language_tag: "en-US".to_owned(),
    }
}

impl FileServer {
    pub(super) fn new(device: Arc<dyn SshDevice>) -> Self {
        Self {
            device,
            handles: HashMap::new(),
            next_handle: 0,
        }
    }

    /// Fails every request while the device is down (rebooting).
    fn check_up(&self) -> Result<(), StatusCode> {
        if self.device.is_up() {
            Ok(())
        } else {
            Err(StatusCode::NoConnection)
        }
    }

    /// Bytes the open handles hold.
    fn held(&self) -> usize {
        self.handles
            .values()
            .map(|h| match h {
                Open::File { data, .. } => data.len(),
                Open::Dir { .. } => 0,
            })
            .sum()
    }

    /// Refuses to hold `more` bytes beyond [`MAX_HELD`].
    fn reserve(&self, more: usize) -> Result<(), StatusCode> {
        if self.held().saturating_add(more) > MAX_HELD {
            warn!("sftp session holds too many bytes in open files");
            return Err(StatusCode::Failure);
        }
        Ok(())
    }

    fn add_handle(&mut self, open: Open) -> Result<String, StatusCode> {
        if self.handles.len() >= MAX_HANDLES {
            warn!("sftp session holds too many open handles");
            return Err(StatusCode::Failure);
        }
        self.next_handle += 1;
        let handle = format!("h{}", self.next_handle);
        self.handles.insert(handle.clone(), open);
        Ok(handle)
    }

    /// The attributes of a path, or `NoSuchFile`.
    fn attrs_of(&self, path: &str) -> Result<FileAttributes, StatusCode> {
        self.check_up()?;
        match resolve(path) {
            Target::Root => Ok(dir_attrs()),
            Target::File(name) => self
                .device
                .file_list()
                .into_iter()
                .find(|(listed, _)| listed == name)
                .map(|(_, size)| file_attrs(size))
                .ok_or(StatusCode::NoSuchFile),
        }
    }
}

impl russh_sftp::server::Handler for FileServer {
    type Error = StatusCode;

    fn unimplemented(&self) -> Self::Error {
        StatusCode::OpUnsupported
    }

    async fn init(
        &mut self,
        version: u32,
        _extensions: HashMap<String, String>,
    ) -> Result<Version, Self::Error> {
        debug!(version, "sftp init");
        Ok(Version::new())
    }

    async fn open(
        &mut self,
        id: u32,
        filename: String,
        pflags: OpenFlags,
        _attrs: FileAttributes,
    ) -> Result<Handle, Self::Error> {
        self.check_up()?;
        let Target::File(name) = resolve(&filename) else {
            return Err(StatusCode::Failure);
        };
        let writable = pflags.intersects(
            OpenFlags::WRITE | OpenFlags::APPEND | OpenFlags::CREATE | OpenFlags::TRUNCATE,
        );
        let existing = self.device.file_read(name);
        let data = if writable {
            match existing {
                Some(_) if pflags.contains(OpenFlags::CREATE | OpenFlags::EXCLUDE) => {
                    return Err(StatusCode::Failure);
                }
                None if !pflags.contains(OpenFlags::CREATE) => {
                    return Err(StatusCode::NoSuchFile);
                }
                _ if pflags.contains(OpenFlags::TRUNCATE) => Vec::new(),
                existing => existing.unwrap_or_default(),
            }
        } else {
            existing.ok_or(StatusCode::NoSuchFile)?
        };
        self.reserve(data.len())?;
        debug!(file = name, writable, "sftp open");
        let handle = self.add_handle(Open::File {
            name: name.to_owned(),
            data,
            writable,
            append: pflags.contains(OpenFlags::APPEND),
        })?;
        Ok(Handle { id, handle })
    }

    async fn close(&mut self, id: u32, handle: String) -> Result<Status, Self::Error> {
        match self.handles.remove(&handle) {
            Some(Open::File {
                name,
                data,
                writable: true,
                ..
            }) => {
                self.check_up()?;
                debug!(file = %name, size = data.len(), "sftp upload complete");
                self.device.file_write(&name, data);
                Ok(ok(id))
            }
            Some(_) => Ok(ok(id)),
            None => Err(StatusCode::Failure),
        }
    }

    async fn read(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        len: u32,
    ) -> Result<Data, Self::Error> {
        self.check_up()?;
        let Some(Open::File { data, .. }) = self.handles.get(&handle) else {
            return Err(StatusCode::Failure);
        };
        let start = usize::try_from(offset).map_err(|_| StatusCode::Eof)?;
        if start >= data.len() {
            return Err(StatusCode::Eof);
        }
        let len = len.min(MAX_READ) as usize;
        let end = data.len().min(start.saturating_add(len));
        Ok(Data {
            id,
            data: data[start..end].to_vec(),
        })
    }

    async fn write(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        bytes: Vec<u8>,
    ) -> Result<Status, Self::Error> {
        self.check_up()?;
        let held = self.held();
        let Some(Open::File {
            data,
            writable: true,
            append,
            ..
        }) = self.handles.get_mut(&handle)
        else {
            return Err(StatusCode::PermissionDenied);
        };
        let start = if *append {
            data.len()
        } else {
            usize::try_from(offset).map_err(|_| StatusCode::Failure)?
        };
        let end = start
            .checked_add(bytes.len())
            .filter(|end| *end <= MAX_FILE_SIZE)
            .filter(|end| held.saturating_add(end.saturating_sub(data.len())) <= MAX_HELD)
            .ok_or(StatusCode::Failure)?;
        if data.len() < end {
            data.resize(end, 0);
        }
        data[start..end].copy_from_slice(&bytes);
        Ok(ok(id))
    }

    async fn lstat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        Ok(Attrs {
            id,
            attrs: self.attrs_of(&path)?,
        })
    }

    async fn stat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        Ok(Attrs {
            id,
            attrs: self.attrs_of(&path)?,
        })
    }

    async fn fstat(&mut self, id: u32, handle: String) -> Result<Attrs, Self::Error> {
        let attrs = match self.handles.get(&handle) {
            Some(Open::Dir { .. }) => dir_attrs(),
            Some(Open::File { data, .. }) => file_attrs(data.len() as u64),
            None => return Err(StatusCode::Failure),
        };
        Ok(Attrs { id, attrs })
    }

    /// Accepted and ignored: `/file` keeps no modes or times a client could set.
    async fn setstat(
        &mut self,
        id: u32,
        path: String,
        _attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        self.attrs_of(&path)?;
        Ok(ok(id))
    }

    /// Accepted and ignored, as [`Self::setstat`].
    async fn fsetstat(
        &mut self,
        id: u32,
        handle: String,
        _attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        if self.handles.contains_key(&handle) {
            Ok(ok(id))
        } else {
            Err(StatusCode::Failure)
        }
    }

    async fn opendir(&mut self, id: u32, path: String) -> Result<Handle, Self::Error> {
        match resolve(&path) {
            Target::Root => {
                self.check_up()?;
                let handle = self.add_handle(Open::Dir { listed: false })?;
                Ok(Handle { id, handle })
            }
            Target::File(_) => {
                self.attrs_of(&path)?;
                // A file, not a directory.
                Err(StatusCode::Failure)
            }
        }
    }

    async fn readdir(&mut self, id: u32, handle: String) -> Result<Name, Self::Error> {
        self.check_up()?;
        let Some(Open::Dir { listed }) = self.handles.get_mut(&handle) else {
            return Err(StatusCode::Failure);
        };
        if std::mem::replace(listed, true) {
            return Err(StatusCode::Eof);
        }
        let mut files = vec![File::new(".", dir_attrs()), File::new("..", dir_attrs())];
        files.extend(
            self.device
                .file_list()
                .into_iter()
                .map(|(name, size)| File::new(name, file_attrs(size))),
        );
        Ok(Name { id, files })
    }

    async fn remove(&mut self, id: u32, filename: String) -> Result<Status, Self::Error> {
        self.check_up()?;
        match resolve(&filename) {
            Target::Root => Err(StatusCode::Failure),
            Target::File(name) => {
                if self.device.file_remove(name) {
                    debug!(file = name, "sftp remove");
                    Ok(ok(id))
                } else {
                    Err(StatusCode::NoSuchFile)
                }
            }
        }
    }

    async fn mkdir(
        &mut self,
        _id: u32,
        _path: String,
        _attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        Err(StatusCode::OpUnsupported)
    }

    async fn rmdir(&mut self, _id: u32, _path: String) -> Result<Status, Self::Error> {
        Err(StatusCode::OpUnsupported)
    }

    async fn realpath(&mut self, id: u32, path: String) -> Result<Name, Self::Error> {
        let path = match resolve(&path) {
            Target::Root => "/".to_owned(),
            Target::File(name) => format!("/{name}"),
        };
        Ok(Name {
            id,
            files: vec![File::dummy(path)],
        })
    }

    /// A copy under the new name, then removal of the old one; fails if the new name exists
    /// (SFTP v3, as OpenSSH's server does).
    async fn rename(
        &mut self,
        id: u32,
        oldpath: String,
        newpath: String,
    ) -> Result<Status, Self::Error> {
        self.check_up()?;
        let (Target::File(old), Target::File(new)) = (resolve(&oldpath), resolve(&newpath)) else {
            return Err(StatusCode::Failure);
        };
        let data = self.device.file_read(old).ok_or(StatusCode::NoSuchFile)?;
        if old == new {
            return Ok(ok(id));
        }
        if self.device.file_read(new).is_some() {
            return Err(StatusCode::Failure);
        }
        self.device.file_write(new, data);
        self.device.file_remove(old);
        debug!(from = old, to = new, "sftp rename");
        Ok(ok(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_to_the_flat_directory() {
        for (path, expected) in [
            ("/", Target::Root),
            ("", Target::Root),
            (".", Target::Root),
            ("/.", Target::Root),
            ("./", Target::Root),
            ("/..", Target::Root),
            ("a.backup", Target::File("a.backup")),
            ("/a.backup", Target::File("a.backup")),
            ("./a.backup", Target::File("a.backup")),
            ("//./a.backup", Target::File("a.backup")),
            ("/flash/a.rsc", Target::File("flash/a.rsc")),
        ] {
            assert_eq!(resolve(path), expected, "{path:?}");
        }
    }
}
