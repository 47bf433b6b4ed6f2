//! tikfleet-sim placeholder.
