//! Who is where: namespaces, their rooms, and their members.

mod group;
mod namespace;

pub(crate) use group::Group;
pub use namespace::NamespaceInfo;
pub(crate) use namespace::{HandlerEntry, Namespace, Targets};
