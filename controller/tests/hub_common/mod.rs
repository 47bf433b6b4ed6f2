//! Helpers for the hub tests: an in-memory store and a scripted agent client.

pub mod client;
pub mod store;
