//! Cluster settings.

use std::time::Duration;

/// Settings of a node's cluster layer, given to [`ServerBuilder::cluster`](crate::ServerBuilder::cluster).
///
/// ```
/// use std::time::Duration;
/// let config = wsu::cluster::ClusterConfig::default()
///     .prefix("chat")
///     .heartbeat(Duration::from_secs(1), Duration::from_secs(3));
/// # let _ = config;
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClusterConfig {
    /// Prefix of every topic (default `"wsu"`): nodes with the same prefix on the same broker
    /// form one cluster. Letters, digits, `-` and `_`.
    pub prefix: String,
    /// How often a node announces itself (default 2 s).
    pub heartbeat_interval: Duration,
    /// A node not heard from for this long is dropped from the membership, with its
    /// connections (default 6 s).
    pub node_timeout: Duration,
    /// How long a cluster query waits for the other nodes' answers (default 5 s).
    pub request_timeout: Duration,
    /// Inbound messages waiting to be handled (default 8192); beyond it they are dropped and
    /// counted in [`Stats::cluster_dropped`](crate::Stats::cluster_dropped).
    pub inbound_capacity: usize,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            prefix: "wsu".to_owned(),
            heartbeat_interval: Duration::from_secs(2),
            node_timeout: Duration::from_secs(6),
            request_timeout: Duration::from_secs(5),
            inbound_capacity: 8192,
        }
    }
}

impl ClusterConfig {
    /// Set the topic prefix.
    pub fn prefix(mut self, prefix: &str) -> Self {
        prefix.clone_into(&mut self.prefix);
        self
    }

    /// Set the heartbeat interval and the node timeout.
    pub fn heartbeat(mut self, interval: Duration, node_timeout: Duration) -> Self {
        self.heartbeat_interval = interval;
        self.node_timeout = node_timeout;
        self
    }

    /// Set the request timeout of cluster queries.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    pub(crate) fn check(&self) -> Result<(), &'static str> {
        if self.prefix.is_empty()
            || !self
                .prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("prefix must be non-empty: letters, digits, `-`, `_`");
        }
        if self.heartbeat_interval.is_zero() || self.node_timeout <= self.heartbeat_interval {
            return Err("node_timeout must be longer than a non-zero heartbeat interval");
        }
        if self.request_timeout.is_zero() || self.inbound_capacity == 0 {
            return Err("request_timeout and inbound_capacity must be greater than zero");
        }
        Ok(())
    }
}
