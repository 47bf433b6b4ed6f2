//! Wire tests for tikfleet-shared: one integration binary (faster to build than several).
//!
//! - `strategies`: proptest strategies for every wire type.
//! - `fixtures`: fixed-value envelopes, one per message shape, for the golden file.
//! - `roundtrip`: every message variant survives encode → decode (and JSON).
//! - `fuzz`: the decoder never panics on arbitrary or mutated bytes.
//! - `golden`: committed frames still decode (wire compatibility with deployed agents).
//! - `session`: a model test of acks, duplicates and resends over a lossy link.

mod fixtures;
mod fuzz;
mod golden;
mod roundtrip;
mod session;
mod strategies;
