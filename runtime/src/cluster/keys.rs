//! Every Redis key and channel the cluster uses, under the configured prefix.
//!
//! - `{p}:node:{node}`: the node's heartbeat, expiring after `node_timeout`.
//! - `{p}:nodes`: every node that registered and was not yet swept or shut down.
//! - `{p}:conns:{node}`: the node's connections, id → tenant: what a sweep claims.
//! - `{p}:tenant:{tenant}`: the tenant's connections, a sorted set of ids (all score
//!   0, so ordered by id): the cluster-wide cap, count and pages with a stable token.
//! - `{p}:info:{tenant}`: id → `{"r": route, "p": path, "c": connected_at}`, for lists
//!   and for running a swept connection's `$disconnect`.
//! - `{p}:replay:{tenant}:{digest}`: a signed write seen, until it could no longer be
//!   replayed.
//! - `{p}:inbox:{node}`: the node's pub/sub channel (requests and replies).

/// The key and channel names of one cluster.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Names under `prefix`.
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_owned(),
        }
    }

    /// The node's heartbeat key.
    pub fn heartbeat(&self, node: &str) -> String {
        format!("{}:node:{node}", self.prefix)
    }

    /// The set of registered nodes.
    pub fn nodes(&self) -> String {
        format!("{}:nodes", self.prefix)
    }

    /// The node's connections (id → tenant).
    pub fn conns(&self, node: &str) -> String {
        format!("{}:conns:{node}", self.prefix)
    }

    /// The tenant's connection ids.
    pub fn tenant(&self, tenant: &str) -> String {
        format!("{}:tenant:{tenant}", self.prefix)
    }

    /// The tenant's connection facts (id → JSON).
    pub fn info(&self, tenant: &str) -> String {
        format!("{}:info:{tenant}", self.prefix)
    }

    /// A signed write of the tenant, by the hex of its digest.
    pub fn replay(&self, tenant: &str, digest: &str) -> String {
        format!("{}:replay:{tenant}:{digest}", self.prefix)
    }

    /// The node's inbox channel.
    pub fn inbox(&self, node: &str) -> String {
        format!("{}:inbox:{node}", self.prefix)
    }
}
