//! tikfleet-e2e: end-to-end and conformance tests. The tests live in `tests/`; this library
//! holds only helpers they share.

pub mod fleet;
pub mod mikrotik_scenario;
pub mod proxy;
