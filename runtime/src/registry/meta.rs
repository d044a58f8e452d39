//! What is known about a connection from its upgrade request, packed for the many that
//! stay open; connection ids and the clock they are stamped with.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A new connection id: 128 random bits from the OS-seeded CSPRNG, as unpadded
/// URL-safe base64 (22 characters), so it can be put in a URL without escaping. An id
/// never starts with `-`, which command lines (the AWS CLI's, ours) would take for a
/// flag; drawing again costs 1/64 of the id space.
pub fn new_connection_id() -> Arc<str> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    loop {
        let bits: u128 = rand::random();
        if bits & 63 == 62 {
            continue;
        }
        let id: String = (0..22)
            .map(|i| ALPHABET[((bits >> (i * 6)) & 63) as usize] as char)
            .collect();
        return id.into();
    }
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

    /// The pairs whose name and value together take at most `each` bytes, in order,
    /// while they add up to at most `total`: what a connection keeps of its request
    /// headers for its life (see [`KEPT_HEADER_BYTES`]).
    pub fn capped(&self, each: usize, total: usize) -> Pairs {
        let mut used = 0;
        self.iter()
            .filter(|(name, value)| {
                let size = name.len() + value.len();
                let keep = size <= each && used + size <= total;
                if keep {
                    used += size;
                }
                keep
            })
            .collect()
    }
}

/// Request header bytes a connection keeps after `$connect` (names and values), and the
/// most one header may take to be kept. `$connect` sees every header; `get-info` and
/// `GET @connections/{id}` later see these. Without the cap every idle connection
/// would keep its whole upgrade head, up to the 16 KiB the head may take.
pub const KEPT_HEADER_BYTES: usize = 4096;
/// See [`KEPT_HEADER_BYTES`].
pub const KEPT_HEADER_EACH: usize = 1024;
/// The most of `User-Agent` a connection keeps.
pub const KEPT_USER_AGENT_BYTES: usize = 512;

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
    /// What the `$connect` handler kept with the connection (`set-context`), at most
    /// 8 KiB.
    pub context: Option<Box<str>>,
}

impl ConnectionMeta {
    /// Drops what the connection need not keep for its life once `$connect` has run:
    /// headers past [`KEPT_HEADER_BYTES`], and a `User-Agent` past
    /// [`KEPT_USER_AGENT_BYTES`] (cut at a character boundary).
    pub fn trim_for_life(&mut self) {
        self.headers = self.headers.capped(KEPT_HEADER_EACH, KEPT_HEADER_BYTES);
        if let Some(agent) = &mut self.user_agent
            && agent.len() > KEPT_USER_AGENT_BYTES
        {
            let mut end = KEPT_USER_AGENT_BYTES;
            while !agent.is_char_boundary(end) {
                end -= 1;
            }
            agent.truncate(end);
            agent.shrink_to_fit();
        }
    }
}

#[cfg(test)]
impl ConnectionMeta {
    /// A fresh connection of `tenant` on route `/r` at `path`, for tests.
    pub fn for_test(tenant: &str, path: &str) -> ConnectionMeta {
        ConnectionMeta {
            id: new_connection_id(),
            tenant: tenant.into(),
            route: "/r".into(),
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
            context: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn kept_headers_skip_large_ones_and_stop_at_the_total() {
        let big = "b".repeat(2000);
        let pairs: Pairs = [("a", "1"), ("big", big.as_str()), ("c", "3")]
            .into_iter()
            .collect();
        assert_eq!(
            pairs.capped(1024, 4096).iter().collect::<Vec<_>>(),
            vec![("a", "1"), ("c", "3")]
        );
        let many: Pairs = (0..100)
            .map(|i| (format!("h{i:02}"), "v".repeat(97)))
            .collect();
        let kept = many.capped(1024, 4096);
        assert_eq!(kept.len(), 40, "4096 bytes hold 40 headers of 100 bytes");
        assert_eq!(kept.iter().next(), many.iter().next());
        let mut meta = ConnectionMeta::for_test("t", "/r");
        meta.user_agent = Some("é".repeat(400));
        meta.trim_for_life();
        let agent = meta.user_agent.unwrap();
        assert!(agent.len() <= KEPT_USER_AGENT_BYTES && agent.starts_with('é'));
    }

    #[test]
    fn ids_are_url_safe_and_distinct() {
        let ids: std::collections::HashSet<_> = (0..1000).map(|_| new_connection_id()).collect();
        assert_eq!(ids.len(), 1000);
        for id in &ids {
            assert_eq!(id.len(), 22);
            assert!(!id.starts_with('-'), "{id} would read as a flag");
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            );
        }
    }
}
