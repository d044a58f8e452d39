//! The in-process registry: a concurrent map from id to connection, each with a bounded
//! outbound queue and a close request that its socket task serves.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use dashmap::DashMap;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

use super::{
    Broadcast, Close, ConnectionInfo, ConnectionMeta, DeliveryError, ListFilter, Listed, Page,
    PageRequest, Payload, Registry, Unavailable, now_ms,
};

/// Told of every connection that leaves the registry (a cluster unregisters it).
pub type DetachHook = Box<dyn Fn(&ConnectionMeta) + Send + Sync>;

/// An open connection as the registry holds it; only this module sees it.
#[derive(Debug)]
struct Connection {
    /// Immutable facts from the upgrade.
    meta: ConnectionMeta,
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
    fn new(meta: ConnectionMeta, queue_bytes: usize) -> Connection {
        Connection {
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
        }
    }

    /// The connection id.
    fn id(&self) -> &str {
        &self.meta.id
    }

    /// When the client last sent a frame (ms since the epoch).
    fn last_active_at(&self) -> u64 {
        self.last_active_at.load(Ordering::Relaxed)
    }

    /// Records client activity now.
    fn touch(&self) {
        self.last_active_at.store(now_ms(), Ordering::Relaxed);
    }

    /// Whether the connection has started closing.
    fn is_closing(&self) -> bool {
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
    fn release(&self, len: usize) {
        self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
        if self.space_waiters.load(Ordering::Acquire) > 0 {
            self.space.notify_waiters();
        }
    }

    /// Payload bytes queued and not yet written.
    fn queued_bytes(&self) -> usize {
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
    fn send(&self, message: Message) -> Result<(), DeliveryError> {
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
    async fn send_reply(&self, message: Message) -> Result<(), DeliveryError> {
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
    fn close(&self, frame: CloseFrame) -> Result<(), DeliveryError> {
        if self.closing.swap(true, Ordering::AcqRel) {
            return Err(DeliveryError::Gone);
        }
        *self.close_request.lock().unwrap_or_else(|e| e.into_inner()) = Some(frame);
        self.close_notify.notify_one();
        self.space.notify_waiters();
        Ok(())
    }

    /// Marks the connection closing without sending anything (the peer already closed).
    fn mark_closing(&self) {
        self.closing.store(true, Ordering::Release);
        // Replies waiting for room must see that none will come.
        self.space.notify_waiters();
    }

    /// Waits until a close is requested and takes it (socket task only).
    async fn close_requested(&self) -> CloseFrame {
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

/// What the registry and every attachment share.
#[derive(Default)]
struct Shared {
    connections: DashMap<Arc<str>, Arc<Connection>>,
    /// The tenant's open-connections gauge: moved only where the map changes, so it
    /// equals the number registered whatever way a connection ends.
    gauge: Gauge,
    /// Told of each connection as it leaves.
    on_detach: Option<DetachHook>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("connections", &self.connections.len())
            .finish_non_exhaustive()
    }
}

/// The in-process registry of one tenant.
#[derive(Debug, Default, Clone)]
pub struct LocalRegistry {
    shared: Arc<Shared>,
}

impl LocalRegistry {
    /// An empty registry that keeps `gauge` equal to the number of its connections.
    pub fn new(gauge: Gauge) -> LocalRegistry {
        LocalRegistry::with_hook(gauge, None)
    }

    /// Like [`LocalRegistry::new`], telling `on_detach` of every connection that leaves.
    pub fn with_hook(gauge: Gauge, on_detach: Option<DetachHook>) -> LocalRegistry {
        LocalRegistry {
            shared: Arc::new(Shared {
                connections: DashMap::new(),
                gauge,
                on_detach,
            }),
        }
    }

    /// Whether connection `id` is registered (closing ones included).
    pub fn contains(&self, id: &str) -> bool {
        self.shared.connections.contains_key(id)
    }

    /// The facts of every registered connection (closing ones included), unordered.
    pub fn metas(&self) -> Vec<ConnectionMeta> {
        self.shared
            .connections
            .iter()
            .map(|entry| entry.meta.clone())
            .collect()
    }

    /// How many connections are registered, without waiting.
    pub fn len(&self) -> usize {
        self.shared.connections.len()
    }

    /// Whether none is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// An open connection (not closing) by id.
    fn open(&self, id: &str) -> Result<Arc<Connection>, DeliveryError> {
        match self.shared.connections.get(id) {
            Some(entry) if !entry.is_closing() => Ok(entry.value().clone()),
            _ => Err(DeliveryError::Gone),
        }
    }

    /// Open connections matching `filter`, unordered.
    fn matching(&self, filter: &ListFilter) -> Vec<Arc<Connection>> {
        self.shared
            .connections
            .iter()
            .filter(|entry| !entry.is_closing() && filter.matches(&entry.meta))
            .map(|entry| entry.value().clone())
            .collect()
    }

    /// Registers a connection; see [`Registry::attach`].
    pub fn attach_now(&self, meta: ConnectionMeta, queue_bytes: usize) -> Attachment {
        let connection = Arc::new(Connection::new(meta, queue_bytes));
        self.shared
            .connections
            .insert(connection.meta.id.clone(), connection.clone());
        self.shared.gauge.inc();
        Attachment {
            connection,
            shared: self.shared.clone(),
        }
    }
}

#[async_trait::async_trait]
impl Registry for LocalRegistry {
    async fn attach(&self, meta: ConnectionMeta, queue_bytes: usize) -> Attachment {
        self.attach_now(meta, queue_bytes)
    }

    async fn send(&self, id: &str, payload: Payload) -> Result<(), DeliveryError> {
        self.open(id)?.send(payload.into())
    }

    async fn close(&self, id: &str, close: Close) -> Result<(), DeliveryError> {
        self.open(id)?.close(close.frame())
    }

    async fn info(&self, id: &str) -> Result<ConnectionInfo, DeliveryError> {
        let connection = self.shared.connections.get(id).ok_or(DeliveryError::Gone)?;
        Ok(ConnectionInfo {
            meta: connection.meta.clone(),
            last_active_at: connection.last_active_at(),
            closing: connection.is_closing(),
        })
    }

    async fn list(&self, filter: &ListFilter, page: PageRequest) -> Result<Page, Unavailable> {
        Ok(self.list_now(filter, page))
    }

    async fn broadcast(
        &self,
        filter: &ListFilter,
        payload: Payload,
        except: Option<&str>,
    ) -> Result<Broadcast, Unavailable> {
        Ok(self.broadcast_now(filter, payload, except))
    }

    async fn close_all(&self, close: Close) -> Result<usize, Unavailable> {
        Ok(self.close_all_now(close))
    }

    async fn count(&self) -> usize {
        self.shared.connections.len()
    }
}

impl LocalRegistry {
    /// When this node's connection `id` last received a frame (ms since the epoch).
    pub fn last_active_of(&self, id: &str) -> Option<u64> {
        self.shared
            .connections
            .get(id)
            .map(|connection| connection.last_active_at())
    }

    /// A page of this node's open connections; see [`Registry::list`].
    pub fn list_now(&self, filter: &ListFilter, page: PageRequest) -> Page {
        let after = page.after.as_deref().unwrap_or("");
        let mut items: Vec<Listed> = self
            .matching(filter)
            .iter()
            .filter(|c| c.id() > after)
            .map(|c| Listed {
                id: c.meta.id.clone(),
                route: c.meta.route.clone(),
                path: c.meta.path.clone(),
                connected_at: c.meta.connected_at,
                source_ip: c.meta.source_ip.clone(),
                user_agent: c.meta.user_agent.clone(),
                last_active_at: Some(c.last_active_at()),
            })
            .collect();
        let Some(limit) = page.limit else {
            return Page { items, next: None };
        };
        items.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        let more = items.len() > limit;
        items.truncate(limit);
        let next = more
            .then(|| items.last().map(|last| last.id.to_string()))
            .flatten();
        Page { items, next }
    }

    /// Queues `payload` for this node's matching connections; see [`Registry::broadcast`].
    pub fn broadcast_now(
        &self,
        filter: &ListFilter,
        payload: Payload,
        except: Option<&str>,
    ) -> Broadcast {
        // Converted once: each recipient's copy shares the payload.
        let message = Message::from(payload);
        let mut outcome = Broadcast::default();
        for connection in self.matching(filter) {
            if except == Some(connection.id()) {
                continue;
            }
            match connection.send(message.clone()) {
                Ok(()) => outcome.queued += 1,
                Err(DeliveryError::QueueFull) => outcome.full += 1,
                Err(_) => {}
            }
        }
        outcome
    }

    /// Asks this node's open connections to close; see [`Registry::close_all`].
    pub fn close_all_now(&self, close: Close) -> usize {
        self.close_matching(&ListFilter::default(), close)
    }

    /// Asks this node's open connections that match `filter` to close; returns how
    /// many were asked.
    pub fn close_matching(&self, filter: &ListFilter, close: Close) -> usize {
        let frame = close.frame();
        self.matching(filter)
            .iter()
            .filter(|c| c.close(frame.clone()).is_ok())
            .count()
    }

    /// How many registered connections (closing ones included) match `filter`.
    pub fn count_matching(&self, filter: &ListFilter) -> usize {
        self.shared
            .connections
            .iter()
            .filter(|entry| filter.matches(&entry.meta))
            .count()
    }
}

/// The socket task's end of a connection: what it writes (the outbound queue, close
/// requests) and what it records (activity, its own replies). Dropping it marks the
/// connection closing, frees what is still queued and removes it from the registry, so
/// a connection is gone however its task ends.
#[derive(Debug)]
pub struct Attachment {
    connection: Arc<Connection>,
    shared: Arc<Shared>,
}

impl Attachment {
    /// The connection's facts.
    pub fn meta(&self) -> &ConnectionMeta {
        &self.connection.meta
    }

    /// The connection id.
    pub fn id(&self) -> &Arc<str> {
        &self.connection.meta.id
    }

    /// Records client activity now.
    pub fn touch(&self) {
        self.connection.touch();
    }

    /// Queues a ping; an empty one takes none of the queue's budget.
    pub fn ping(&self) {
        let _ = self.connection.send(Message::Ping(Default::default()));
    }

    /// Queues a reply to this connection's client, waiting for room: a client that does
    /// not read stops being read (TCP back-pressure) instead of losing replies.
    pub async fn reply(&self, payload: Payload) -> Result<(), DeliveryError> {
        self.connection.send_reply(payload.into()).await
    }

    /// Asks the writer to close with `close`; `Gone` when a close was already asked.
    pub fn close(&self, close: &Close) -> Result<(), DeliveryError> {
        self.connection.close(close.frame())
    }

    /// Marks the connection closing without sending anything (the peer already closed).
    pub fn mark_closing(&self) {
        self.connection.mark_closing();
    }

    /// Waits until a close is requested and takes it.
    pub async fn close_requested(&self) -> CloseFrame {
        self.connection.close_requested().await
    }

    /// Takes every queued message, in order, without waiting.
    pub fn take_all(&self) -> VecDeque<Message> {
        std::mem::take(
            &mut *self
                .connection
                .queue
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        )
    }

    /// Waits for messages and takes every queued one, in order.
    pub async fn recv_all(&self) -> VecDeque<Message> {
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

    /// Returns `len` bytes to the queue's budget once they are written.
    pub fn release(&self, len: usize) {
        self.connection.release(len);
    }

    /// Payload bytes queued and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.connection.queued_bytes()
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        self.connection.mark_closing();
        let dropped = self.take_all();
        self.connection
            .release(dropped.iter().map(Message::len).sum());
        if self
            .shared
            .connections
            .remove(&self.connection.meta.id)
            .is_some()
        {
            self.shared.gauge.dec();
            if let Some(hook) = &self.shared.on_detach {
                hook(&self.connection.meta);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(path: &str) -> ConnectionMeta {
        ConnectionMeta::for_test("t", path)
    }

    fn text(s: &str) -> Payload {
        Payload::text(s)
    }

    #[tokio::test]
    async fn send_fills_the_byte_budget_then_refuses() {
        let registry = LocalRegistry::default();
        let conn = registry.attach_now(meta("/chat/a"), 4);
        let id = conn.id().clone();
        assert_eq!(registry.send(&id, text("12")).await, Ok(()));
        assert_eq!(registry.send(&id, text("34")).await, Ok(()));
        assert_eq!(
            registry.send(&id, text("5")).await,
            Err(DeliveryError::QueueFull)
        );
        let mut written = conn.take_all();
        let first = written.pop_front().unwrap();
        assert_eq!(first, Message::text("12"));
        conn.release(first.len());
        assert_eq!(conn.queued_bytes(), 2);
        assert_eq!(registry.send(&id, text("5")).await, Ok(()));
    }

    #[tokio::test]
    async fn an_empty_queue_takes_one_oversized_message() {
        let registry = LocalRegistry::default();
        let conn = registry.attach_now(meta("/chat/a"), 4);
        assert_eq!(registry.send(conn.id(), text("123456")).await, Ok(()));
        assert_eq!(
            registry.send(conn.id(), text("1")).await,
            Err(DeliveryError::QueueFull)
        );
    }

    #[tokio::test]
    async fn a_reply_waits_for_room() {
        let registry = LocalRegistry::default();
        let conn = Arc::new(registry.attach_now(meta("/chat/a"), 2));
        registry.send(conn.id(), text("ab")).await.unwrap();
        let waiting = {
            let conn = conn.clone();
            tokio::spawn(async move { conn.reply(text("cd")).await })
        };
        let first = conn.recv_all().await;
        conn.release(first.iter().map(Message::len).sum());
        assert_eq!(waiting.await.unwrap(), Ok(()));
        assert_eq!(conn.recv_all().await, [Message::text("cd")]);
    }

    #[tokio::test]
    async fn close_is_requested_once_and_then_sends_are_gone() {
        let registry = LocalRegistry::default();
        let conn = registry.attach_now(meta("/chat/a"), 2);
        let bye = Close::requested(1000, "bye").unwrap();
        assert_eq!(registry.close(conn.id(), bye.clone()).await, Ok(()));
        assert_eq!(
            registry.close(conn.id(), bye.clone()).await,
            Err(DeliveryError::Gone)
        );
        assert_eq!(
            registry.send(conn.id(), text("late")).await,
            Err(DeliveryError::Gone)
        );
        let info = registry.info(conn.id()).await.unwrap();
        assert!(
            info.closing,
            "a closing connection is still described, as closing"
        );
        assert_eq!(conn.close_requested().await, bye.frame());
        assert_eq!(
            registry.count().await,
            1,
            "still registered until its task ends"
        );
    }

    #[tokio::test]
    async fn list_filters_pages_by_id_and_skips_closing() {
        let registry = LocalRegistry::default();
        let a = registry.attach_now(meta("/chat/a"), 1);
        let _b = registry.attach_now(meta("/chat/b"), 1);
        let c = registry.attach_now(meta("/chat/a"), 1);
        let in_a = ListFilter {
            path: Some("/chat/a".into()),
            ..Default::default()
        };
        assert_eq!(
            registry
                .list(&in_a, PageRequest::default())
                .await
                .unwrap()
                .items
                .len(),
            2
        );
        c.mark_closing();
        assert_eq!(
            registry
                .list(&in_a, PageRequest::default())
                .await
                .unwrap()
                .items
                .len(),
            1
        );
        let everyone = ListFilter::default();
        let first = registry
            .list(
                &everyone,
                PageRequest {
                    after: None,
                    limit: Some(1),
                },
            )
            .await
            .unwrap();
        assert_eq!(first.items.len(), 1);
        let next = first.next.clone().expect("a second page");
        let second = registry
            .list(
                &everyone,
                PageRequest {
                    after: Some(next),
                    limit: Some(1),
                },
            )
            .await
            .unwrap();
        assert_eq!(second.items.len(), 1);
        assert!(second.next.is_none());
        assert!(
            first.items[0].id < second.items[0].id,
            "pages are ordered by id"
        );
        assert_eq!(registry.count().await, 3);
        drop(a);
        assert_eq!(registry.count().await, 2);
    }

    #[tokio::test]
    async fn the_gauge_follows_attach_and_drop() {
        let gauge = Gauge::default();
        let registry = LocalRegistry::new(gauge.clone());
        let a = registry.attach_now(meta("/chat/a"), 1);
        let b = registry.attach_now(meta("/chat/a"), 1);
        assert_eq!(gauge.get(), 2);
        registry.close(a.id(), Close::normal()).await.unwrap();
        assert_eq!(gauge.get(), 2, "closing is not closed");
        drop(a);
        drop(b);
        assert_eq!(gauge.get(), 0);
        assert_eq!(registry.count().await, 0);
    }

    #[tokio::test]
    async fn broadcast_skips_the_exception_full_queues_and_closing() {
        let registry = LocalRegistry::default();
        let sender = registry.attach_now(meta("/room/a"), 8);
        let peer = registry.attach_now(meta("/room/a"), 8);
        let full = registry.attach_now(meta("/room/a"), 8);
        let closing = registry.attach_now(meta("/room/a"), 8);
        let other = registry.attach_now(meta("/room/b"), 8);
        registry.send(full.id(), text("12345678")).await.unwrap();
        closing.mark_closing();
        let room = ListFilter {
            path: Some("/room/a".into()),
            ..Default::default()
        };
        let outcome = registry
            .broadcast(&room, text("hi"), Some(sender.id()))
            .await
            .unwrap();
        assert_eq!(outcome, Broadcast { queued: 1, full: 1 });
        assert_eq!(peer.take_all(), [Message::text("hi")]);
        assert!(sender.take_all().is_empty());
        assert!(other.take_all().is_empty());
    }
}
