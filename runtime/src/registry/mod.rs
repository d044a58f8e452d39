//! The connection registry: the verbs everything but the socket itself uses to reach a
//! tenant's connections (send, close, info, list a page, broadcast, count), over types
//! the gateway owns, so a registry on another machine fits behind the same trait.
//!
//! - `meta`: what is known about a connection from its upgrade ([`ConnectionMeta`]).
//! - `local`: the in-process registry and the socket task's end of a connection
//!   ([`Attachment`]).
//!
//! Each tenant has its own registry, so a lookup can only ever find the caller's own
//! tenant's connections. The socket task owns the socket; plugins and the management API
//! go through the verbs, which queue a message or ask for a close.

mod local;
mod meta;

use bytes::Bytes;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

pub use crate::close::Close;
pub use local::{Attachment, DetachHook, LocalRegistry};
pub use meta::{ConnectionMeta, Pairs, new_connection_id, now_ms};

/// A data message for a client, its payload shared rather than copied between
/// recipients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// A text frame.
    Text(Utf8Bytes),
    /// A binary frame.
    Binary(Bytes),
}

impl Payload {
    /// A text payload.
    pub fn text(text: impl Into<String>) -> Payload {
        Payload::Text(text.into().into())
    }

    /// Payload bytes: what the size limits and queue budgets count.
    pub fn len(&self) -> usize {
        match self {
            Payload::Text(text) => text.len(),
            Payload::Binary(bytes) => bytes.len(),
        }
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A received frame as a payload; `None` for control frames.
    pub fn from_message(message: Message) -> Option<Payload> {
        match message {
            Message::Text(text) => Some(Payload::Text(text)),
            Message::Binary(bytes) => Some(Payload::Binary(bytes)),
            _ => None,
        }
    }
}

impl From<Payload> for Message {
    fn from(payload: Payload) -> Message {
        match payload {
            Payload::Text(text) => Message::Text(text),
            Payload::Binary(bytes) => Message::Binary(bytes),
        }
    }
}

/// Why something could not be delivered to or done with a connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// No such open connection (closed, closing, or never existed in this tenant).
    #[error("the connection is gone")]
    Gone,
    /// The connection's outbound queue is full: the client is not reading fast enough.
    #[error("the connection's outbound queue is full")]
    QueueFull,
    /// In a cluster: the node holding the connection, or Redis, could not be reached
    /// in time; nothing was done. The text says which and what to do.
    #[error("{0}")]
    Unavailable(String),
}

impl From<Unavailable> for DeliveryError {
    fn from(err: Unavailable) -> Self {
        DeliveryError::Unavailable(err.0)
    }
}

/// A cluster-wide verb (list, broadcast, close all) could not reach every node it
/// needed, or Redis; the text says which and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

/// A connection as `info` describes it: its facts and when the client was last heard.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// Facts from the upgrade.
    pub meta: ConnectionMeta,
    /// When the client last sent a frame (ms since the epoch).
    pub last_active_at: u64,
    /// Whether it is closing: still described (its own `$disconnect` may ask), but
    /// sends and closes answer `Gone`.
    pub closing: bool,
}

/// One connection in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The connection id.
    pub id: std::sync::Arc<str>,
    /// The route template that matched.
    pub route: std::sync::Arc<str>,
    /// The request path below the tenant.
    pub path: String,
    /// When it connected (ms since the epoch).
    pub connected_at: u64,
    /// The client's address.
    pub source_ip: String,
    /// The client's `User-Agent`, if it sent one.
    pub user_agent: Option<String>,
    /// When the client last sent a frame (ms since the epoch), when the node listing it
    /// holds it (a cluster lists other nodes' connections from Redis, which does not
    /// keep it).
    pub last_active_at: Option<u64>,
}

/// Which connections `list` and `broadcast` reach.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only this route template.
    pub route: Option<String>,
    /// Only this exact request path.
    pub path: Option<String>,
}

impl ListFilter {
    /// Whether `meta` passes the filter.
    pub fn matches(&self, meta: &ConnectionMeta) -> bool {
        self.route.as_deref().is_none_or(|r| *meta.route == *r)
            && self.path.as_deref().is_none_or(|p| meta.path == p)
    }
}

/// Which page of a listing to return.
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    /// Only ids after this one (the previous page's `next`).
    pub after: Option<String>,
    /// At most this many; `None` for all of them, in no particular order.
    pub limit: Option<usize>,
}

/// A page of a listing: open connections ordered by id (when a limit was asked for).
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// The connections on this page.
    pub items: Vec<Listed>,
    /// Where the next page starts, when there is one.
    pub next: Option<String>,
}

/// What a broadcast did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Broadcast {
    /// Recipients whose queue took the message.
    pub queued: u32,
    /// Recipients skipped because their queue was full.
    pub full: u32,
}

/// A place under the tenant's cluster-wide connection cap, taken before `$connect`
/// runs; given back when dropped, unless [`Admission::attached`] says the connection
/// took it for its life.
#[derive(Default)]
pub struct Admission {
    release: Option<Box<dyn FnOnce() + Send>>,
}

impl Admission {
    /// A place that `release` gives back.
    pub fn releasing(release: impl FnOnce() + Send + 'static) -> Admission {
        Admission {
            release: Some(Box::new(release)),
        }
    }

    /// The connection is registered: its departure gives the place back.
    pub fn attached(mut self) {
        self.release = None;
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            release();
        }
    }
}

/// The tenant is at its cluster-wide connection cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the tenant is at its connection limit across the cluster")]
pub struct AtCapacity;

/// The connections of one tenant, as verbs. The in-process implementation is
/// [`LocalRegistry`]; a clustered one answers the same verbs for connections held by
/// other nodes.
#[async_trait::async_trait]
pub trait Registry: Send + Sync + std::fmt::Debug {
    /// Whether verbs may wait on other nodes (a cluster); a local registry's never wait.
    fn may_wait(&self) -> bool {
        false
    }
    /// A new connection id. In a cluster it names the node, so verbs go straight there.
    fn new_id(&self) -> std::sync::Arc<str> {
        new_connection_id()
    }
    /// Takes a place for connection `id` under the tenant's cap of `max` connections
    /// across every node (on one node, the socket's slot is the place).
    async fn admit(&self, _id: &str, _max: usize) -> Result<Admission, AtCapacity> {
        Ok(Admission::default())
    }
    /// Registers a connection upgraded on this node and gives its socket task the
    /// connection's end: the outbound queue and close requests. Dropping the
    /// [`Attachment`] removes the connection.
    async fn attach(&self, meta: ConnectionMeta, queue_bytes: usize) -> Attachment;
    /// Queues a message for an open connection, without waiting.
    async fn send(&self, id: &str, payload: Payload) -> Result<(), DeliveryError>;
    /// Asks an open connection to close; the first close wins, later ones are `Gone`.
    async fn close(&self, id: &str, close: Close) -> Result<(), DeliveryError>;
    /// Describes a registered connection, closing ones included.
    async fn info(&self, id: &str) -> Result<ConnectionInfo, DeliveryError>;
    /// A page of the open connections matching `filter` (closing ones are left out).
    async fn list(&self, filter: &ListFilter, page: PageRequest) -> Result<Page, Unavailable>;
    /// Queues `payload` for every open connection matching `filter` but `except`.
    async fn broadcast(
        &self,
        filter: &ListFilter,
        payload: Payload,
        except: Option<&str>,
    ) -> Result<Broadcast, Unavailable>;
    /// Asks every open connection to close; returns how many will.
    async fn close_all(&self, close: Close) -> Result<usize, Unavailable>;
    /// How many connections are registered (closing ones included, until they are gone).
    async fn count(&self) -> usize;
}
