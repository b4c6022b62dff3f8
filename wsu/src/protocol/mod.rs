//! The wire protocol: the JSON envelope, name rules and close codes. See `PROTOCOL.md`.

pub(crate) mod close;
pub(crate) mod envelope;
pub(crate) mod hello;
pub(crate) mod names;

pub use close::CloseCode;
pub use envelope::MessageType;
