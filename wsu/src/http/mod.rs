//! The HTTP side of a connection: reading the upgrade request, the Origin policy, and the
//! responses wsu writes itself.

pub(crate) mod handshake;
pub(crate) mod origin;

pub use origin::{InvalidOrigin, OriginPolicy};
