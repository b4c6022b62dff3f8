//! The public face of the cluster layer: [`Cluster`], its errors and reports.

use std::fmt;
use std::sync::Arc;

use super::node::Node;
use super::wire::{Filter, Op, Res};
use crate::server::Server;
use crate::{AckError, SocketId};

/// Why a cluster-wide query or operation did not complete.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClusterError {
    /// These nodes (ids) did not answer within the
    /// [request timeout](super::ClusterConfig::request_timeout); a node that died is dropped
    /// from the membership after the [node timeout](super::ClusterConfig::node_timeout) and is
    /// not asked any more.
    Timeout {
        /// The nodes that did not answer.
        missing: Vec<String>,
    },
    /// The request could not be published.
    Engine(super::EngineError),
}

impl fmt::Display for ClusterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClusterError::Timeout { missing } => {
                write!(f, "no answer from cluster node(s) {}", missing.join(", "))
            }
            ClusterError::Engine(e) => write!(f, "cluster request not sent: {e}"),
        }
    }
}

impl std::error::Error for ClusterError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClusterError::Engine(e) => Some(e),
            ClusterError::Timeout { .. } => None,
        }
    }
}

/// A connection somewhere in the cluster, as [`Broadcast::fetch_sockets`](crate::Broadcast::fetch_sockets)
/// reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SocketInfo {
    /// The connection's id.
    pub id: SocketId,
    /// The id of the node it is connected to.
    pub node: String,
    /// Its rooms in the namespace asked about.
    pub rooms: Vec<String>,
}

/// The answers to a broadcast with ack ([`Broadcast::emit_with_ack`](crate::Broadcast::emit_with_ack)).
#[derive(Debug)]
#[non_exhaustive]
pub struct AckReport<R> {
    /// How many connections the event was sent to, on every node that answered.
    pub expected: usize,
    /// Each connection's answer (an error for a timeout, a closed connection or a client's
    /// `error`), in no particular order.
    pub answers: Vec<(SocketId, Result<R, AckError>)>,
    /// Nodes that did not report (dead, or slower than the request timeout): their
    /// connections are in neither `expected` nor `answers`.
    pub missing_nodes: Vec<String>,
}

impl<R> AckReport<R> {
    /// Whether every expected connection answered with an ack.
    pub fn is_complete(&self) -> bool {
        self.missing_nodes.is_empty()
            && self.answers.len() == self.expected
            && self.answers.iter().all(|(_, r)| r.is_ok())
    }
}

/// This server's place in a cluster, from [`Server::cluster`]: node ids and membership, the
/// broker's state, and queries on connections of every node.
///
/// Broadcasts need nothing from here: with an engine, [`Server::emit`], [`Server::to`] and
/// every [`Broadcast`](crate::Broadcast) reach every node. Cluster-wide queries and operations
/// on sets of connections are on `Broadcast` too ([`fetch_sockets`](crate::Broadcast::fetch_sockets),
/// [`sockets_join`](crate::Broadcast::sockets_join), [`sockets_leave`](crate::Broadcast::sockets_leave),
/// [`disconnect_sockets`](crate::Broadcast::disconnect_sockets),
/// [`emit_with_ack`](crate::Broadcast::emit_with_ack)).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let broker = wsu::cluster::MemoryBroker::new();
/// let server = wsu::Server::builder().engine(broker.engine()).build().unwrap();
/// let cluster = server.cluster().unwrap();
/// assert_eq!(cluster.engine(), "memory");
/// let rooms = cluster.rooms("/").await.unwrap();
/// assert!(rooms.is_empty());
/// # }
/// ```
#[derive(Clone)]
pub struct Cluster {
    pub(crate) server: Server,
    pub(crate) node: Arc<Node>,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.node.id)
            .field("engine", &self.node.engine.name())
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// This node's id (16 hex characters, random at start).
    pub fn node_id(&self) -> &str {
        &self.node.id
    }

    /// The other live nodes' ids, sorted: those heard from within the node timeout.
    pub fn peers(&self) -> Vec<String> {
        self.node.peers()
    }

    /// The engine's name.
    pub fn engine(&self) -> &'static str {
        self.node.engine.name()
    }

    /// Whether the engine is connected to the broker (false during an outage).
    pub fn is_connected(&self) -> bool {
        self.node.is_connected()
    }

    /// Rooms with members in `namespace`, on any node, sorted.
    ///
    /// # Errors
    /// [`ClusterError`] when a live node does not answer in time or the request cannot be sent.
    pub async fn rooms(&self, namespace: &str) -> Result<Vec<String>, ClusterError> {
        let filter = Filter {
            ns: namespace.to_owned(),
            ..Filter::default()
        };
        let mut rooms = self.server.local_rooms(namespace);
        for (_, res) in ask(&self.server, Some(&self.node), filter, Op::Rooms).await? {
            if let Res::Rooms { rooms: r } = res {
                rooms.extend(r);
            }
        }
        rooms.sort();
        rooms.dedup();
        Ok(rooms)
    }

    /// The rooms of connection `id` in `namespace`, wherever it is; `None` if no node has it
    /// there.
    ///
    /// # Errors
    /// As [`rooms`](Self::rooms).
    pub async fn socket_rooms(
        &self,
        namespace: &str,
        id: SocketId,
    ) -> Result<Option<Vec<String>>, ClusterError> {
        let found = self.server.of(namespace).socket(id).fetch_sockets().await?;
        Ok(found.into_iter().next().map(|s| s.rooms))
    }

    /// Close connection `id` (1000), wherever it is. Returns whether a node had it.
    ///
    /// # Errors
    /// As [`rooms`](Self::rooms).
    pub async fn disconnect(&self, id: SocketId) -> Result<bool, ClusterError> {
        let n = self.server.of("/").socket(id).disconnect_sockets().await?;
        Ok(n > 0)
    }
}

/// Ask every live peer (not this node) and collect one answer each.
pub(crate) async fn ask(
    _server: &Server,
    node: Option<&Arc<Node>>,
    filter: Filter,
    op: Op,
) -> Result<Vec<(String, Res)>, ClusterError> {
    let Some(node) = node else {
        return Ok(Vec::new());
    };
    let req = node.open_request(None, filter, op, b"")?;
    let deadline = tokio::time::Instant::now() + node.config.request_timeout;
    let (answers, missing) = node.collect(req, deadline).await;
    if missing.is_empty() {
        Ok(answers)
    } else {
        Err(ClusterError::Timeout { missing })
    }
}
