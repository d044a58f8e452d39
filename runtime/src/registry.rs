//! The connection registry: what is known about each open connection and the handle to
//! reach it (a bounded outbound queue and a close request).
//!
//! Each tenant has its own registry, so a lookup can only ever find the caller's own
//! tenant's connections. The socket task owns the socket; everything else (plugins, the
//! management API) pushes into the queue or asks for a close.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A new connection id: 128 random bits from the OS-seeded CSPRNG, as unpadded
/// URL-safe base64 (22 characters), so it can be put in a URL without escaping.
pub fn new_connection_id() -> Arc<str> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bits: u128 = rand::random();
    let id: String = (0..22)
        .map(|i| ALPHABET[((bits >> (i * 6)) & 63) as usize] as char)
        .collect();
    id.into()
}

/// Name-value string pairs (headers, parameters) in two allocations rather than two per
/// pair: every open connection keeps its own for its whole life.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pairs {
    /// Every name and value, back to back.
    text: Box<str>,
    /// Where each pair's name and value end in `text`.
    ends: Box<[(u32, u32)]>,
}

impl Pairs {
    /// The pairs, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        let mut start = 0;
        self.ends.iter().map(move |&(name_end, value_end)| {
            let (name_end, value_end) = (name_end as usize, value_end as usize);
            let pair = (&self.text[start..name_end], &self.text[name_end..value_end]);
            start = value_end;
            pair
        })
    }

    /// The pairs as owned strings.
    pub fn to_vec(&self) -> Vec<(String, String)> {
        self.iter()
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect()
    }

    /// How many pairs there are.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
}

impl<N: AsRef<str>, V: AsRef<str>> FromIterator<(N, V)> for Pairs {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(pairs: I) -> Self {
        let mut text = String::new();
        let mut ends = Vec::new();
        for (name, value) in pairs {
            text.push_str(name.as_ref());
            let name_end = text.len() as u32;
            text.push_str(value.as_ref());
            ends.push((name_end, text.len() as u32));
        }
        Pairs {
            text: text.into_boxed_str(),
            ends: ends.into_boxed_slice(),
        }
    }
}

/// What is known about a connection from its upgrade request; it never changes.
#[derive(Debug, Clone)]
pub struct ConnectionMeta {
    /// The connection id.
    pub id: Arc<str>,
    /// The owning tenant.
    pub tenant: Arc<str>,
    /// The route template that matched.
    pub route: Arc<str>,
    /// The request path below the tenant, without the query.
    pub path: String,
    /// The request URI as sent (path and query).
    pub uri: String,
    /// Request headers, names lower-cased.
    pub headers: Pairs,
    /// Route template parameters.
    pub path_params: Pairs,
    /// Query parameters, decoded.
    pub query_params: Pairs,
    /// The client's IP address.
    pub source_ip: String,
    /// The client's `User-Agent`.
    pub user_agent: Option<String>,
    /// Subprotocols the client offered.
    pub requested_subprotocols: Vec<String>,
    /// The subprotocol chosen at connect.
    pub subprotocol: Option<String>,
    /// When the upgrade request arrived (ms since the epoch).
    pub connected_at: u64,
}

/// Why something could not be delivered to or done with a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// No such open connection (closed, closing, or never existed in this tenant).
    #[error("the connection is gone")]
    Gone,
    /// The connection's outbound queue is full: the client is not reading fast enough.
    #[error("the connection's outbound queue is full")]
    QueueFull,
}

/// An open connection as the registry holds it.
#[derive(Debug)]
pub struct Connection {
    /// Immutable facts from the upgrade.
    pub meta: ConnectionMeta,
    /// Last time the client sent a frame (ms since the epoch); read by get-info.
    last_active_at: AtomicU64,
    /// Messages for the socket task to write, bounded in bytes by `queued_bytes`. A
    /// plain deque rather than a channel: an empty one allocates nothing, and idle
    /// connections are most of them.
    queue: Mutex<VecDeque<Message>>,
    /// Wakes the socket task when `queue` gains a message.
    queue_notify: Notify,
    /// Payload bytes queued and not yet written; a slow client cannot grow memory.
    queued_bytes: AtomicUsize,
    /// The byte budget of the queue.
    max_queued_bytes: usize,
    /// Wakes replies waiting for room in the queue.
    space: Notify,
    /// How many replies wait on `space`; while zero, writes skip the notify.
    space_waiters: AtomicUsize,
    /// Set once the connection starts closing; sends then answer `Gone`.
    closing: AtomicBool,
    /// A close the socket task should send, set by `close` and taken by the socket task.
    close_request: Mutex<Option<CloseFrame>>,
    /// Wakes the socket task when a close is requested.
    close_notify: Notify,
}

impl Connection {
    /// A connection record and the receiving end of its outbound queue, which holds at
    /// most `queue_bytes` of payload.
    pub fn new(meta: ConnectionMeta, queue_bytes: usize) -> (Arc<Connection>, Outbound) {
        let connection = Connection {
            last_active_at: AtomicU64::new(meta.connected_at),
            meta,
            queue: Mutex::new(VecDeque::new()),
            queue_notify: Notify::new(),
            queued_bytes: AtomicUsize::new(0),
            max_queued_bytes: queue_bytes,
            space: Notify::new(),
            space_waiters: AtomicUsize::new(0),
            closing: AtomicBool::new(false),
            close_request: Mutex::new(None),
            close_notify: Notify::new(),
        };
        let connection = Arc::new(connection);
        let outbound = Outbound {
            connection: connection.clone(),
        };
        (connection, outbound)
    }

    /// The connection id.
    pub fn id(&self) -> &str {
        &self.meta.id
    }

    /// When the client last sent a frame (ms since the epoch).
    pub fn last_active_at(&self) -> u64 {
        self.last_active_at.load(Ordering::Relaxed)
    }

    /// Records client activity now.
    pub fn touch(&self) {
        self.last_active_at.store(now_ms(), Ordering::Relaxed);
    }

    /// Whether the connection has started closing.
    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Takes `len` bytes of the queue's budget, if there is room.
    fn reserve(&self, len: usize) -> bool {
        let mut queued = self.queued_bytes.load(Ordering::Relaxed);
        loop {
            // An empty queue takes any one message, so a message at the size limit always fits.
            if queued > 0 && queued + len > self.max_queued_bytes {
                return false;
            }
            match self.queued_bytes.compare_exchange_weak(
                queued,
                queued + len,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => queued = now,
            }
        }
    }

    /// Returns `len` bytes to the budget once written (socket task only).
    pub fn release(&self, len: usize) {
        self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
        if self.space_waiters.load(Ordering::Acquire) > 0 {
            self.space.notify_waiters();
        }
    }

    /// Payload bytes queued and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes.load(Ordering::Relaxed)
    }

    fn enqueue(&self, message: Message) -> Result<(), DeliveryError> {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(message);
        self.queue_notify.notify_one();
        Ok(())
    }

    /// Queues a message without waiting.
    pub fn send(&self, message: Message) -> Result<(), DeliveryError> {
        if self.is_closing() {
            return Err(DeliveryError::Gone);
        }
        let len = message.len();
        if !self.reserve(len) {
            return Err(DeliveryError::QueueFull);
        }
        self.enqueue(message)
    }

    /// Queues a message, waiting for room: for replies to the sender, so a client that
    /// does not read stops being read (TCP back-pressure) instead of losing replies.
    pub async fn send_reply(&self, message: Message) -> Result<(), DeliveryError> {
        let len = message.len();
        loop {
            if self.is_closing() {
                return Err(DeliveryError::Gone);
            }
            let space = self.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            self.space_waiters.fetch_add(1, Ordering::AcqRel);
            let reserved = self.reserve(len);
            if !reserved {
                space.await;
            }
            self.space_waiters.fetch_sub(1, Ordering::AcqRel);
            if reserved {
                return self.enqueue(message);
            }
        }
    }

    /// Asks the socket task to close with `frame`. The first close wins; a connection
    /// already closing answers `Gone`.
    pub fn close(&self, frame: CloseFrame) -> Result<(), DeliveryError> {
        if self.closing.swap(true, Ordering::AcqRel) {
            return Err(DeliveryError::Gone);
        }
        *self.close_request.lock().unwrap_or_else(|e| e.into_inner()) = Some(frame);
        self.close_notify.notify_one();
        self.space.notify_waiters();
        Ok(())
    }

    /// Marks the connection closing without sending anything (the peer already closed).
    pub fn mark_closing(&self) {
        self.closing.store(true, Ordering::Release);
        // Replies waiting for room must see that none will come.
        self.space.notify_waiters();
    }

    /// Waits until a close is requested and takes it (socket task only).
    pub async fn close_requested(&self) -> CloseFrame {
        loop {
            // A request exists only once `closing` is set: skip the lock until then.
            if self.is_closing()
                && let Some(frame) = self
                    .close_request
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take()
            {
                return frame;
            }
            self.close_notify.notified().await;
        }
    }
}

/// The socket task's end of a connection's outbound queue. Dropping it (the socket task
/// ended) marks the connection closing, so later sends answer `Gone`, and frees what is
/// still queued.
#[derive(Debug)]
pub struct Outbound {
    connection: Arc<Connection>,
}

impl Outbound {
    /// Takes every queued message, in order, without waiting.
    pub fn take_all(&mut self) -> VecDeque<Message> {
        std::mem::take(
            &mut *self
                .connection
                .queue
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        )
    }

    /// Takes the oldest queued message, if any.
    pub fn try_recv(&mut self) -> Option<Message> {
        self.connection
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
    }

    /// Waits for messages and takes every queued one, in order.
    pub async fn recv_all(&mut self) -> VecDeque<Message> {
        loop {
            let queued = self.take_all();
            if !queued.is_empty() {
                return queued;
            }
            // `notify_one` leaves a permit when nobody waits, so a message queued
            // between the check and this wait is not missed.
            self.connection.queue_notify.notified().await;
        }
    }

    /// Waits for a message and takes the oldest.
    pub async fn recv(&mut self) -> Message {
        loop {
            if let Some(message) = self.try_recv() {
                return message;
            }
            self.connection.queue_notify.notified().await;
        }
    }
}

impl Drop for Outbound {
    fn drop(&mut self) {
        self.connection.mark_closing();
        let dropped = self.take_all();
        let len = dropped.iter().map(Message::len).sum();
        self.connection.release(len);
    }
}

/// Which connections `list` returns.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only this route template.
    pub route: Option<String>,
    /// Only this exact request path.
    pub path: Option<String>,
}

impl ListFilter {
    fn matches(&self, meta: &ConnectionMeta) -> bool {
        self.route.as_deref().is_none_or(|r| *meta.route == *r)
            && self.path.as_deref().is_none_or(|p| meta.path == p)
    }
}

/// The connections of one tenant. The in-process implementation is [`LocalRegistry`];
/// a clustered one shares the same shape.
pub trait Registry: Send + Sync + std::fmt::Debug {
    /// Adds an open connection.
    fn insert(&self, connection: Arc<Connection>);
    /// Removes a connection; its id is never reused.
    fn remove(&self, id: &str);
    /// An open (or closing) connection by id.
    fn get(&self, id: &str) -> Option<Arc<Connection>>;
    /// Open connections matching `filter` (closing ones are left out).
    fn list(&self, filter: &ListFilter) -> Vec<Arc<Connection>>;
    /// How many connections are registered.
    fn len(&self) -> usize;
    /// Whether none is registered.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The in-process registry: a concurrent map from id to connection.
#[derive(Debug, Default)]
pub struct LocalRegistry {
    connections: DashMap<Arc<str>, Arc<Connection>>,
}

impl Registry for LocalRegistry {
    fn insert(&self, connection: Arc<Connection>) {
        self.connections
            .insert(connection.meta.id.clone(), connection);
    }

    fn remove(&self, id: &str) {
        self.connections.remove(id);
    }

    fn get(&self, id: &str) -> Option<Arc<Connection>> {
        self.connections.get(id).map(|entry| entry.value().clone())
    }

    fn list(&self, filter: &ListFilter) -> Vec<Arc<Connection>> {
        self.connections
            .iter()
            .filter(|entry| !entry.is_closing() && filter.matches(&entry.meta))
            .map(|entry| entry.value().clone())
            .collect()
    }

    fn len(&self) -> usize {
        self.connections.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

    fn meta(path: &str) -> ConnectionMeta {
        ConnectionMeta {
            id: new_connection_id(),
            tenant: "t".into(),
            route: "/chat/{room}".into(),
            path: path.into(),
            uri: path.into(),
            headers: Pairs::default(),
            path_params: Pairs::default(),
            query_params: Pairs::default(),
            source_ip: "127.0.0.1".into(),
            user_agent: None,
            requested_subprotocols: vec![],
            subprotocol: None,
            connected_at: now_ms(),
        }
    }

    #[test]
    fn pairs_keep_order_duplicates_and_empty_strings() {
        let pairs: Pairs = [("a", "1"), ("", ""), ("a", "two"), ("é", "")]
            .into_iter()
            .collect();
        assert_eq!(pairs.len(), 4);
        assert_eq!(
            pairs.iter().collect::<Vec<_>>(),
            vec![("a", "1"), ("", ""), ("a", "two"), ("é", "")]
        );
        assert_eq!(pairs.to_vec()[2], ("a".to_string(), "two".to_string()));
        assert!(Pairs::default().is_empty());
    }

    #[test]
    fn ids_are_url_safe_and_distinct() {
        let ids: std::collections::HashSet<_> = (0..1000).map(|_| new_connection_id()).collect();
        assert_eq!(ids.len(), 1000);
        for id in &ids {
            assert_eq!(id.len(), 22);
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            );
        }
    }

    #[test]
    fn send_fills_the_byte_budget_then_refuses() {
        let (conn, mut rx) = Connection::new(meta("/chat/a"), 4);
        assert_eq!(conn.send(Message::text("12")), Ok(()));
        assert_eq!(conn.send(Message::text("34")), Ok(()));
        assert_eq!(conn.send(Message::text("5")), Err(DeliveryError::QueueFull));
        let written = rx.try_recv().unwrap();
        assert_eq!(written, Message::text("12"));
        conn.release(written.len());
        assert_eq!(conn.queued_bytes(), 2);
        assert_eq!(conn.send(Message::text("5")), Ok(()));
    }

    #[test]
    fn an_empty_queue_takes_one_oversized_message() {
        let (conn, _rx) = Connection::new(meta("/chat/a"), 4);
        assert_eq!(conn.send(Message::text("123456")), Ok(()));
        assert_eq!(conn.send(Message::text("1")), Err(DeliveryError::QueueFull));
    }

    #[tokio::test]
    async fn a_reply_waits_for_room() {
        let (conn, mut rx) = Connection::new(meta("/chat/a"), 2);
        conn.send(Message::text("ab")).unwrap();
        let waiting = {
            let conn = conn.clone();
            tokio::spawn(async move { conn.send_reply(Message::text("cd")).await })
        };
        let first = rx.recv().await;
        conn.release(first.len());
        assert_eq!(waiting.await.unwrap(), Ok(()));
        assert_eq!(rx.recv().await, Message::text("cd"));
    }

    #[tokio::test]
    async fn close_is_requested_once_and_then_sends_are_gone() {
        let (conn, _rx) = Connection::new(meta("/chat/a"), 2);
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        };
        assert_eq!(conn.close(frame.clone()), Ok(()));
        assert_eq!(conn.close(frame.clone()), Err(DeliveryError::Gone));
        assert_eq!(conn.send(Message::text("late")), Err(DeliveryError::Gone));
        assert_eq!(conn.close_requested().await, frame);
    }

    #[test]
    fn list_filters_and_skips_closing() {
        let registry = LocalRegistry::default();
        let (a, _ra) = Connection::new(meta("/chat/a"), 1);
        let (b, _rb) = Connection::new(meta("/chat/b"), 1);
        let (c, _rc) = Connection::new(meta("/chat/a"), 1);
        for conn in [&a, &b, &c] {
            registry.insert(conn.clone());
        }
        let in_a = ListFilter {
            path: Some("/chat/a".into()),
            ..Default::default()
        };
        assert_eq!(registry.list(&in_a).len(), 2);
        c.mark_closing();
        assert_eq!(registry.list(&in_a).len(), 1);
        assert_eq!(registry.list(&ListFilter::default()).len(), 2);
        assert!(
            registry.get(c.id()).is_some(),
            "a closing connection still answers get"
        );
        registry.remove(c.id());
        assert!(registry.get(c.id()).is_none());
        assert_eq!(registry.len(), 2);
    }
}
