//! tikfleet-shared: domain types, the agent⇄controller protocol and its codec, error codes.
//! No I/O, no async runtime.

pub mod protocol {
    //! Placeholder until the protocol module lands.
    /// Current protocol version.
    pub const PROTOCOL_VERSION: u16 = 1;
}
