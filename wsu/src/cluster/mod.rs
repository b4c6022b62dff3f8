//! Scale-out: many wsu nodes as one server, on an existing broker.
//!
//! Give each node an [`Engine`] with [`ServerBuilder::engine`](crate::ServerBuilder::engine):
//! `wsu-redis` (Redis pub/sub), `wsu-nats` (NATS) or, inside one process, a [`MemoryBroker`].
//! Broadcasts then reach the connections of every node, and [`Server::cluster`](crate::Server::cluster)
//! answers queries (rooms, members, connections) and runs remote operations (join, leave,
//! disconnect) cluster-wide. Without an engine a server is a single node and pays nothing for
//! any of this.
//!
//! The inter-node format is versioned and described in `PROTOCOL.md`; what each fault costs
//! (broker restart, network loss, a node dying) is in the README.

mod config;
mod engine;
mod handle;
pub(crate) mod local;
mod memory;
pub(crate) mod node;
mod streams;
pub(crate) mod wire;

pub use config::ClusterConfig;
pub(crate) use handle::ask;
pub use handle::{AckReport, Cluster, ClusterError, SocketInfo};

pub use engine::{Engine, EngineError, EngineFuture, EngineReceiver, EngineSink, SinkEvent};
pub use memory::{MemoryBroker, MemoryEngine};
pub use streams::{StreamLimits, StreamPos, StreamRead, Streams};
