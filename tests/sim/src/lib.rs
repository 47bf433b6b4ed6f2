//! tikfleet-sim: a RouterOS device you can run (API, API-SSL, SSH/SFTP, control endpoint).

pub mod ssh;
