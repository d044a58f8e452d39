//! Each tenant's execution log, as the managed gateways keep one (AWS API Gateway's
//! execution logs, Yandex Cloud Logging of a gateway's functions): what the tenant's
//! plugins logged, how their events failed, and what callers of its management API did
//! (the audit trail). The tenant reads it with `GET /{tenant}/@logs` or follows it as
//! server-sent events (`admin::logs`).
//!
//! One [`ExecutionLog`] per tenant, kept by the `Gateway` for the process's life, so a
//! config reload loses nothing. It is a ring bounded by entries and by bytes
//! (`[tenants.X.limits] execution_log_entries` and `execution_log_bytes`): the oldest
//! entries make room for new ones. Every entry has a sequence number, one higher than
//! the previous entry of the tenant, so a reader that asks for what came after the last
//! number it saw gets exactly the rest, and learns how many it missed when the ring has
//! moved past them.
//!
//! Followers are bounded twice: at most [`MAX_FOLLOWERS`] per tenant, and each has a
//! queue of [`FOLLOW_QUEUE`] entries. A follower that lets its queue fill (it reads
//! more slowly than the tenant logs) is dropped at once, its slot freed, rather than
//! making the gateway buffer for it; it can resume from the last sequence it saw.
//!
//! ```
//! use wsgate::execlog::{ExecutionLog, Level};
//!
//! let log = ExecutionLog::new(10_000, 4 << 20, Default::default());
//! log.log(Level::Info, "probe", "/probe", "c1", "hello");
//! let page = log.read(0, 100);
//! assert_eq!((page.entries[0].seq, page.next, page.dropped), (1, 1, 0));
//! assert!(log.read(page.next, 100).entries.is_empty());
//! ```

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::MIN_EXECUTION_LOG_BYTES;

/// Longest message kept, in bytes; the rest of a longer one is cut, and the entry says
/// how long it was. A plugin may log up to its `max_log_bytes` in one line, which would
/// let one line push out the whole ring.
pub const MAX_MESSAGE_BYTES: usize = 8 * 1024;
/// Longest audit target kept (a connection id from a request path, which the caller
/// chooses), in bytes.
const MAX_TARGET_BYTES: usize = 128;
/// What an entry is charged beyond its text: its fields, the `Arc` and the ring's slot.
const ENTRY_OVERHEAD: usize = 160;
/// Followers of one tenant's log at once; past it, following is refused (429).
pub const MAX_FOLLOWERS: usize = 8;
/// Entries queued for one follower; a follower whose queue is full is dropped.
pub const FOLLOW_QUEUE: usize = 1024;
/// Most entries one read returns.
pub const MAX_PAGE: usize = 1000;

// One entry of the largest size must fit in the smallest ring the config allows, or a
// ring could hold nothing; plugin names and route templates are short config strings.
const _: () = assert!(ENTRY_OVERHEAD + MAX_MESSAGE_BYTES + 2048 <= MIN_EXECUTION_LOG_BYTES);

/// How severe an entry is: a plugin's own level for its lines, `error` for failures,
/// `info` (or `warn` for a refused request) for the audit trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Fine-grained detail.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected that was handled.
    Warn,
    /// A failure.
    Error,
}

impl Level {
    /// The level's name, as the JSON has it.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// What an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A line a plugin logged through the `log` import.
    Log,
    /// A plugin event that failed (a trap, a timeout, a limit; see `FailureKind`).
    Failure,
    /// A management API request of the tenant.
    Audit,
}

/// What a management API request did, for the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Audit {
    /// Who: the SigV4 access key id, or `bearer:` and a prefix of the bearer key's
    /// SHA-256 (never the key).
    pub key_id: String,
    /// The caller's address, when the request came through the listener.
    pub source_ip: Option<String>,
    /// The operation, by its AWS or Yandex name (`PostToConnection`,
    /// `ConnectionService.Send`, …).
    pub action: &'static str,
    /// The connection id it was about, or the tenant for tenant-wide operations.
    pub target: String,
    /// The HTTP status it was answered with.
    pub status: u16,
}

/// One entry of an execution log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// The entry's number: one higher than the tenant's previous entry, from 1.
    pub seq: u64,
    /// When it was recorded, in ms since the Unix epoch (RFC 3339 with ms in JSON).
    #[serde(serialize_with = "rfc3339")]
    pub time: u64,
    /// How severe it is.
    pub level: Level,
    /// What it records.
    pub kind: Kind,
    /// The plugin, for `log` and `failure`.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "shared")]
    pub plugin: Option<Arc<str>>,
    /// The route template of the event, when there was one.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "shared")]
    pub route: Option<Arc<str>>,
    /// The connection of the event, when there was one.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "shared")]
    pub connection_id: Option<Arc<str>>,
    /// The text: the plugin's line (already escaped of control characters, see
    /// `plugin::output::escape`), the failure, or the audit summary; at most
    /// [`MAX_MESSAGE_BYTES`].
    pub message: String,
    /// For `audit` entries: what the request did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit: Option<Audit>,
}

impl Entry {
    /// What the entry is charged against the ring's byte bound.
    fn size(&self) -> usize {
        let text = |s: &Option<Arc<str>>| s.as_ref().map_or(0, |s| s.len());
        let audit = self.audit.as_ref().map_or(0, |a| {
            a.key_id.len() + a.source_ip.as_ref().map_or(0, String::len) + a.target.len()
        });
        ENTRY_OVERHEAD
            + self.message.len()
            + text(&self.plugin)
            + text(&self.route)
            + text(&self.connection_id)
            + audit
    }
}

/// A shared string as text (serde's `rc` feature is not enabled for the workspace).
fn shared<S: serde::Serializer>(text: &Option<Arc<str>>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_some(text.as_deref().unwrap_or_default())
}

/// Shared entries as a list of entries.
fn entries<S: serde::Serializer>(entries: &[Arc<Entry>], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(entries.iter().map(|entry| &**entry))
}

fn rfc3339<S: serde::Serializer>(ms: &u64, serializer: S) -> Result<S::Ok, S::Error> {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(*ms);
    serializer.collect_str(&humantime::format_rfc3339_millis(time))
}

/// `text` cut to at most `max` bytes on a character boundary; a cut text ends with a
/// note of its whole length.
fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let note = format!(" …[cut: {} bytes in all]", text.len());
    let mut end = max.saturating_sub(note.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{note}", &text[..end])
}

/// `None` for an empty string (an event without a connection has an empty id).
fn present(text: &str) -> Option<Arc<str>> {
    (!text.is_empty()).then(|| text.into())
}

/// One read of a log: entries after a sequence number, oldest first.
#[derive(Debug, Clone, Serialize)]
pub struct Page {
    /// The entries, oldest first.
    #[serde(serialize_with = "entries")]
    pub entries: Vec<Arc<Entry>>,
    /// The sequence number to read after next time: the last entry's, or where the
    /// read started when it found none.
    pub next: u64,
    /// Entries after the asked-for sequence number that the ring no longer holds.
    pub dropped: u64,
}

/// A tenant's execution log: a ring of entries, bounded by count and bytes, and its
/// followers.
#[derive(Debug)]
pub struct ExecutionLog {
    ring: Mutex<Ring>,
    /// Cancelled when the gateway shuts down: every follower ends, so the admin
    /// listener's graceful shutdown does not wait on streams that never finish.
    stop: CancellationToken,
    /// Numbers the followers, so each can take itself off the list when it ends.
    follower_ids: AtomicU64,
}

#[derive(Debug)]
struct Ring {
    entries: VecDeque<Arc<Entry>>,
    /// What the entries are charged, in bytes.
    bytes: usize,
    /// The sequence number of the next entry; numbers start at 1, so 0 means "from the
    /// beginning" to a reader.
    next_seq: u64,
    max_entries: usize,
    max_bytes: usize,
    /// Live followers' queues; its length is what [`MAX_FOLLOWERS`] caps.
    followers: Vec<Follower>,
}

#[derive(Debug)]
struct Follower {
    id: u64,
    queue: mpsc::Sender<Arc<Entry>>,
    /// Set when the follower was dropped for letting its queue fill.
    overflowed: Arc<AtomicBool>,
}

impl Ring {
    /// The index in `entries` of the first entry after `since`, and how many entries
    /// after `since` are gone. A `since` past the newest entry (a reader that saw
    /// another run of the gateway, whose numbers began again) reads from the start.
    fn after(&self, since: u64) -> (usize, u64) {
        let newest = self.next_seq - 1;
        let since = if since > newest { 0 } else { since };
        let oldest = self.entries.front().map_or(self.next_seq, |e| e.seq);
        let dropped = oldest.saturating_sub(since + 1);
        let index = (since + 1).saturating_sub(oldest) as usize;
        (index, dropped)
    }

    /// Drops the oldest entries while the ring is over either bound; the newest entry
    /// always stays.
    fn evict(&mut self) {
        while self.entries.len() > 1
            && (self.entries.len() > self.max_entries || self.bytes > self.max_bytes)
        {
            if let Some(old) = self.entries.pop_front() {
                self.bytes -= old.size();
            }
        }
    }
}

/// Why following was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the execution log already has {MAX_FOLLOWERS} followers, the most one tenant may have: end one, or read with ?since= instead of following"
)]
pub struct TooManyFollowers;

impl ExecutionLog {
    /// An empty log holding at most `max_entries` entries and `max_bytes` bytes; its
    /// followers end when `stop` is cancelled.
    pub fn new(max_entries: usize, max_bytes: usize, stop: CancellationToken) -> ExecutionLog {
        ExecutionLog {
            ring: Mutex::new(Ring {
                entries: VecDeque::new(),
                bytes: 0,
                next_seq: 1,
                max_entries: max_entries.max(1),
                max_bytes,
                followers: Vec::new(),
            }),
            stop,
            follower_ids: AtomicU64::new(0),
        }
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies new bounds (a reload changed them); a smaller ring drops its oldest
    /// entries now.
    pub fn set_limits(&self, max_entries: usize, max_bytes: usize) {
        let mut ring = self.ring();
        ring.max_entries = max_entries.max(1);
        ring.max_bytes = max_bytes;
        ring.evict();
    }

    /// Records a line plugin `plugin` logged at `level` in an event of `route` and
    /// `connection` (empty for none). `message` is already escaped.
    pub fn log(&self, level: Level, plugin: &str, route: &str, connection: &str, message: &str) {
        self.push(Entry {
            seq: 0,
            time: 0,
            level,
            kind: Kind::Log,
            plugin: present(plugin),
            route: present(route),
            connection_id: present(connection),
            message: truncate(message, MAX_MESSAGE_BYTES),
            audit: None,
        });
    }

    /// Records a failed event of plugin `plugin`; `route` and `connection` are empty
    /// when the failure was found outside an event.
    pub fn failure(&self, plugin: &str, route: &str, connection: &str, message: &str) {
        self.push(Entry {
            seq: 0,
            time: 0,
            level: Level::Error,
            kind: Kind::Failure,
            plugin: present(plugin),
            route: present(route),
            connection_id: present(connection),
            message: truncate(message, MAX_MESSAGE_BYTES),
            audit: None,
        });
    }

    /// Records a management API request.
    pub fn audit(&self, mut audit: Audit) {
        audit.target = truncate(&audit.target, MAX_TARGET_BYTES);
        let message = format!(
            "{} {} answered {} (key {}, from {})",
            audit.action,
            audit.target,
            audit.status,
            audit.key_id,
            audit.source_ip.as_deref().unwrap_or("-"),
        );
        self.push(Entry {
            seq: 0,
            time: 0,
            level: if audit.status < 400 {
                Level::Info
            } else {
                Level::Warn
            },
            kind: Kind::Audit,
            plugin: None,
            route: None,
            connection_id: None,
            message: truncate(&message, MAX_MESSAGE_BYTES),
            audit: Some(audit),
        });
    }

    /// Numbers and stamps `entry`, adds it (dropping the oldest past the bounds) and
    /// hands it to every follower; a follower whose queue is full is dropped.
    fn push(&self, mut entry: Entry) {
        let mut ring = self.ring();
        entry.seq = ring.next_seq;
        entry.time = crate::registry::now_ms();
        ring.next_seq += 1;
        let entry = Arc::new(entry);
        ring.bytes += entry.size();
        ring.entries.push_back(entry.clone());
        ring.evict();
        ring.followers
            .retain(|follower| match follower.queue.try_send(entry.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    follower.overflowed.store(true, Ordering::Release);
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            });
    }

    /// Up to `limit` (at most [`MAX_PAGE`]) entries after sequence number `since`,
    /// oldest first.
    pub fn read(&self, since: u64, limit: usize) -> Page {
        let ring = self.ring();
        let (index, dropped) = ring.after(since);
        let entries: Vec<Arc<Entry>> = ring
            .entries
            .iter()
            .skip(index)
            .take(limit.min(MAX_PAGE))
            .cloned()
            .collect();
        let oldest = ring.entries.front().map_or(ring.next_seq, |e| e.seq);
        let start = if since >= ring.next_seq { 0 } else { since };
        let next = entries
            .last()
            .map_or(start.max(oldest.saturating_sub(1)), |e| e.seq);
        Page {
            entries,
            next,
            dropped,
        }
    }

    /// The newest `limit` entries (at most a page), oldest first; `next` is the newest
    /// sequence number, to read on from (the console shows a log's tail this way
    /// without reading it all).
    pub fn tail(&self, limit: usize) -> Page {
        let ring = self.ring();
        let skip = ring.entries.len().saturating_sub(limit.min(MAX_PAGE));
        let entries: Vec<Arc<Entry>> = ring.entries.iter().skip(skip).cloned().collect();
        Page {
            next: ring.next_seq - 1,
            entries,
            dropped: 0,
        }
    }

    /// Follows the log from after sequence number `since`: the entries the ring holds
    /// after it, then each new one as it is recorded. Refused past [`MAX_FOLLOWERS`].
    pub fn follow(self: &Arc<Self>, since: u64) -> Result<Follow, TooManyFollowers> {
        let mut ring = self.ring();
        if ring.followers.len() >= MAX_FOLLOWERS {
            return Err(TooManyFollowers);
        }
        let (index, dropped) = ring.after(since);
        // Taken under the same lock as the registration: no entry falls between the
        // backlog and the queue.
        let backlog: VecDeque<Arc<Entry>> = ring.entries.iter().skip(index).cloned().collect();
        let (queue, entries) = mpsc::channel(FOLLOW_QUEUE);
        let overflowed = Arc::new(AtomicBool::new(false));
        let id = self.follower_ids.fetch_add(1, Ordering::Relaxed);
        ring.followers.push(Follower {
            id,
            queue,
            overflowed: overflowed.clone(),
        });
        Ok(Follow {
            log: self.clone(),
            id,
            backlog,
            dropped,
            entries,
            overflowed,
        })
    }

    /// Followers now.
    pub fn followers(&self) -> usize {
        self.ring().followers.len()
    }

    /// Ends every follower, now and later (the gateway is shutting down).
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

/// What a follower gets next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Followed {
    /// An entry, in sequence order.
    Entry(Arc<Entry>),
    /// The follower let its queue fill and was dropped; it may follow again from the
    /// last sequence number it got.
    Overflowed,
    /// The gateway is shutting down.
    Stopped,
}

/// A follower of an execution log (see [`ExecutionLog::follow`]); its slot is freed
/// when it is dropped or falls behind.
#[derive(Debug)]
pub struct Follow {
    log: Arc<ExecutionLog>,
    id: u64,
    /// The entries the ring held after `since` when following began.
    backlog: VecDeque<Arc<Entry>>,
    /// Entries after `since` the ring no longer held when following began.
    pub dropped: u64,
    entries: mpsc::Receiver<Arc<Entry>>,
    overflowed: Arc<AtomicBool>,
}

impl Follow {
    /// The next entry, waiting for one; or why there is none.
    pub async fn next(&mut self) -> Followed {
        if self.log.stop.is_cancelled() {
            return Followed::Stopped;
        }
        if let Some(entry) = self.backlog.pop_front() {
            return Followed::Entry(entry);
        }
        tokio::select! {
            biased;
            () = self.log.stop.cancelled() => Followed::Stopped,
            entry = self.entries.recv() => match entry {
                Some(entry) => Followed::Entry(entry),
                None if self.overflowed.load(Ordering::Acquire) => Followed::Overflowed,
                // The log never drops a follower otherwise; treat it as the end.
                None => Followed::Stopped,
            },
        }
    }
}

impl Drop for Follow {
    fn drop(&mut self) {
        let id = self.id;
        self.log.ring().followers.retain(|f| f.id != id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(max_entries: usize, max_bytes: usize) -> Arc<ExecutionLog> {
        Arc::new(ExecutionLog::new(
            max_entries,
            max_bytes,
            CancellationToken::new(),
        ))
    }

    fn line(log: &ExecutionLog, text: &str) {
        log.log(Level::Info, "p", "/r", "c", text);
    }

    fn seqs(page: &Page) -> Vec<u64> {
        page.entries.iter().map(|e| e.seq).collect()
    }

    /// Past its entry bound the ring drops its oldest entries; numbers go on.
    #[test]
    fn the_ring_is_bounded_by_entries() {
        let log = log(3, 1 << 20);
        for i in 0..5 {
            line(&log, &format!("line {i}"));
        }
        let page = log.read(0, 100);
        assert_eq!(seqs(&page), [3, 4, 5]);
        assert_eq!((page.next, page.dropped), (5, 2));
        assert_eq!(page.entries[0].message, "line 2");
    }

    /// The tail is the newest entries, and reading on from its `next` misses none.
    #[test]
    fn the_tail_is_the_newest_and_reading_on_misses_nothing() {
        let log = log(100, 1 << 20);
        assert_eq!((seqs(&log.tail(10)), log.tail(10).next), (vec![], 0));
        for i in 0..30 {
            line(&log, &format!("line {i}"));
        }
        let tail = log.tail(5);
        assert_eq!(seqs(&tail), [26, 27, 28, 29, 30]);
        assert_eq!(tail.next, 30);
        assert_eq!(
            seqs(&log.tail(usize::MAX)).len(),
            30,
            "capped at a page, here all"
        );
        line(&log, "after");
        assert_eq!(seqs(&log.read(tail.next, 100)), [31]);
    }

    /// Past its byte bound the ring drops its oldest entries, whatever their count.
    #[test]
    fn the_ring_is_bounded_by_bytes() {
        let text = "x".repeat(1000);
        let size = ENTRY_OVERHEAD + 1000 + "p/rc".len();
        let log = log(1000, 3 * size + size / 2);
        for _ in 0..10 {
            line(&log, &text);
        }
        let page = log.read(0, 100);
        assert_eq!(seqs(&page), [8, 9, 10]);
        assert_eq!(page.dropped, 7);
        assert!(log.ring().bytes <= 3 * size + size / 2);
        // A smaller bound from a reload applies at once.
        log.set_limits(1, 1 << 20);
        assert_eq!(seqs(&log.read(0, 100)), [10]);
        assert_eq!(log.ring().bytes, size);
    }

    /// `since` and `next` page through the log without a gap or a repeat; `limit` is
    /// capped; a `since` older than the ring says how many entries are gone.
    #[test]
    fn since_and_next_page_through_the_log() {
        let log = log(10, 1 << 20);
        assert_eq!((log.read(0, 10).next, log.read(0, 10).dropped), (0, 0));
        for i in 0..25 {
            line(&log, &i.to_string());
        }
        // Entries 16..=25 are kept.
        let first = log.read(0, 4);
        assert_eq!(seqs(&first), [16, 17, 18, 19]);
        assert_eq!((first.next, first.dropped), (19, 15));
        let second = log.read(first.next, 4);
        assert_eq!(seqs(&second), [20, 21, 22, 23]);
        assert_eq!(second.dropped, 0);
        let last = log.read(second.next, 100);
        assert_eq!(seqs(&last), [24, 25]);
        let empty = log.read(last.next, 100);
        assert!(empty.entries.is_empty());
        assert_eq!((empty.next, empty.dropped), (25, 0));
        assert_eq!(log.read(20, 100).dropped, 0);
        assert_eq!(log.read(3, 100).dropped, 12);
        // A number from another run of the gateway reads from the start.
        assert_eq!(seqs(&log.read(1000, 2)), [16, 17]);

        let big = self::log(5000, 64 << 20);
        for _ in 0..3000 {
            line(&big, "x");
        }
        assert_eq!(big.read(0, 5000).entries.len(), MAX_PAGE);
    }

    /// A message longer than the cap is cut on a character boundary, and says so.
    #[test]
    fn long_messages_are_cut() {
        let log = log(10, 1 << 20);
        let long = "é".repeat(MAX_MESSAGE_BYTES);
        line(&log, &long);
        let message = &log.read(0, 1).entries[0].message;
        assert!(message.len() <= MAX_MESSAGE_BYTES, "{}", message.len());
        assert!(
            message.ends_with(&format!("[cut: {} bytes in all]", long.len())),
            "{}",
            &message[message.len() - 40..]
        );
        line(&log, "short");
        assert_eq!(log.read(1, 1).entries[0].message, "short");
    }

    /// Entries encode as the API promises: RFC 3339 time with ms, camelCase, absent
    /// fields left out, the plugin's text as given (JSON escapes it once).
    #[test]
    fn entries_encode_as_documented() {
        let log = log(10, 1 << 20);
        log.log(Level::Warn, "probe", "/probe", "", "quote \" and \\u{1b}");
        log.failure("panic", "/panic", "c1", "the plugin trapped");
        log.audit(Audit {
            key_id: "AKIDDEMO".into(),
            source_ip: Some("127.0.0.1".into()),
            action: "PostToConnection",
            target: "c1".into(),
            status: 410,
        });
        let page = serde_json::to_value(log.read(0, 10)).unwrap();
        let [line, failure, audit] = page["entries"].as_array().unwrap().as_slice() else {
            panic!("{page}");
        };
        let time = line["time"].as_str().unwrap();
        assert!(time.len() == 24 && time.ends_with('Z'), "{time}");
        assert_eq!(line["level"], "warn");
        assert_eq!(line["kind"], "log");
        assert_eq!(line["message"], "quote \" and \\u{1b}");
        assert!(line.get("connectionId").is_none(), "{line}");
        assert_eq!(failure["kind"], "failure");
        assert_eq!(failure["level"], "error");
        assert_eq!(failure["connectionId"], "c1");
        assert_eq!(audit["kind"], "audit");
        assert_eq!(audit["level"], "warn");
        assert_eq!(audit["audit"]["keyId"], "AKIDDEMO");
        assert_eq!(audit["audit"]["status"], 410);
        assert!(audit.get("plugin").is_none(), "{audit}");
        assert_eq!(
            audit["message"],
            "PostToConnection c1 answered 410 (key AKIDDEMO, from 127.0.0.1)"
        );
    }

    /// A follower gets what the ring held after `since`, then new entries, in order.
    #[tokio::test]
    async fn a_follower_gets_the_backlog_then_new_entries() {
        let log = log(3, 1 << 20);
        for i in 0..5 {
            line(&log, &i.to_string());
        }
        let mut follow = log.follow(1).unwrap();
        assert_eq!(follow.dropped, 1);
        line(&log, "new");
        let mut got = Vec::new();
        for _ in 0..4 {
            match follow.next().await {
                Followed::Entry(entry) => got.push(entry.seq),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(got, [3, 4, 5, 6]);
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(10), follow.next());
        assert!(waiting.await.is_err(), "nothing new to follow");
    }

    /// Past MAX_FOLLOWERS following is refused; a follower that ends frees its slot.
    #[test]
    fn followers_are_capped() {
        let log = log(10, 1 << 20);
        let mut followers: Vec<Follow> =
            (0..MAX_FOLLOWERS).map(|_| log.follow(0).unwrap()).collect();
        assert_eq!(log.follow(0).unwrap_err(), TooManyFollowers);
        followers.pop();
        assert_eq!(log.followers(), MAX_FOLLOWERS - 1);
        followers.push(log.follow(0).unwrap());
        assert!(log.follow(0).is_err());
    }

    /// A follower that lets its queue fill is dropped at once (its slot freed), gets
    /// what was queued, then hears why it ends; the others go on.
    #[tokio::test]
    async fn a_slow_follower_is_dropped() {
        let log = log(10_000, 64 << 20);
        let mut slow = log.follow(0).unwrap();
        let mut fast = log.follow(0).unwrap();
        for i in 0..FOLLOW_QUEUE + 10 {
            line(&log, &i.to_string());
            if let Followed::Entry(entry) = fast.next().await {
                assert_eq!(entry.seq, i as u64 + 1);
            } else {
                panic!("the fast follower was dropped");
            }
        }
        assert_eq!(log.followers(), 1, "the slow follower's slot is free");
        for seq in 1..=FOLLOW_QUEUE as u64 {
            assert_eq!(
                slow.next().await,
                Followed::Entry(log.read(seq - 1, 1).entries[0].clone())
            );
        }
        assert_eq!(slow.next().await, Followed::Overflowed);
        line(&log, "after");
        assert!(matches!(fast.next().await, Followed::Entry(e) if e.message == "after"));
    }

    /// Shutting down ends every follower, waiting or not, and any that starts later.
    #[tokio::test]
    async fn stopping_ends_followers() {
        let log = log(10, 1 << 20);
        line(&log, "queued");
        let mut follow = log.follow(0).unwrap();
        let waiting = tokio::spawn({
            let log = log.clone();
            async move {
                let mut follow = log.follow(1).unwrap();
                follow.next().await
            }
        });
        while log.followers() < 2 {
            tokio::task::yield_now().await;
        }
        log.stop();
        assert_eq!(waiting.await.unwrap(), Followed::Stopped);
        assert_eq!(follow.next().await, Followed::Stopped);
        assert_eq!(log.follow(0).unwrap().next().await, Followed::Stopped);
    }

    /// The limits are checked with the rest of the config, naming the key.
    #[test]
    fn the_limits_are_validated() {
        let config = |limits: &str| {
            format!(
                "[tenants.demo.plugins.echo]\npath = \"Cargo.toml\"\n[tenants.demo.routes.\"/echo\"]\nplugin = \"echo\"\n[tenants.demo.limits]\n{limits}\n"
            )
        };
        let parse = |text: &str| {
            crate::Config::parse(
                text,
                std::path::Path::new("test.toml"),
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")),
            )
        };
        let defaults = parse(&config("")).unwrap();
        let limits = &defaults.tenants["demo"].limits;
        assert_eq!(
            (limits.execution_log_entries, limits.execution_log_bytes),
            (10_000, 4 << 20)
        );
        for (limits, key) in [
            ("execution_log_entries = 0", "execution_log_entries"),
            ("execution_log_entries = 2000000", "execution_log_entries"),
            ("execution_log_bytes = 1000", "execution_log_bytes"),
            ("execution_log_bytes = 10000000000", "execution_log_bytes"),
        ] {
            let err = parse(&config(limits)).unwrap_err().to_string();
            assert!(
                err.contains(&format!("tenants.demo.limits.{key}")),
                "{limits}: {err}"
            );
        }
    }
}
