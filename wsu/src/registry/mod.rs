//! Who is where: namespaces, their rooms, and their members.

mod group;
mod handlers;
mod namespace;

pub(crate) use group::Group;
pub(crate) use handlers::HandlerMap;
pub use namespace::NamespaceInfo;
pub(crate) use namespace::{HandlerEntry, Namespace, Targets};
