//! What the `aws` shape's later events need to know of a connection and what never
//! changes while it is open: its handshake's facts and the authorizer's verdict (a
//! connection's context is set during `$connect` only). Read from the host at a
//! connection's first event on this instance and kept in a bounded cache, so a message
//! costs no `get-info` (the whole handshake lowered into the guest) and no
//! `get-context`. The cache is only a copy: an instance thrown away loses nothing, and
//! another instance reads the same facts from the host.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use serde_json::Value;
use serde_json::value::RawValue;
use wsgate_sdk::{ConnectionInfo, connections};

use crate::config::Config;

/// At most this many connections are remembered per instance; past it the cache
/// starts afresh.
const CAPACITY: usize = 1024;

/// And at most this many bytes of their facts (a client chooses its `User-Agent`, and an
/// authorizer its verdict, up to 8 KiB). Every instance of the route may come to hold
/// every connection's facts, and a guest's memory does not shrink, so this is what the
/// cache may add to each pooled instance (64 by default): kept small.
const CAPACITY_BYTES: usize = 128 * 1024;

/// Facts larger than this are not remembered (read from the host at each event).
const MAX_ENTRY_BYTES: usize = 4 * 1024;

/// A connection's facts as events of the `aws` shape use them.
#[derive(Debug, Default)]
pub struct Facts {
    /// `stage`: the config's, else the tenant.
    pub stage: String,
    /// `apiId`: the config's, else the tenant.
    pub api_id: String,
    /// `domainName`: the configured one (by default the gateway's management host, so
    /// that `https://{domainName}/{stage}` reaches `@connections`), else the client's
    /// `Host`.
    pub domain_name: String,
    /// Beyond AWS, whose endpoint is always `https://{domainName}/{stage}`: the URL
    /// that reaches this gateway's `@connections`, `http://` when it has no TLS.
    pub management_endpoint: String,
    /// `identity.sourceIp`.
    pub source_ip: String,
    /// `identity.userAgent`.
    pub user_agent: Option<String>,
    /// `connectedAt`.
    pub connected_at: u64,
    /// The authorizer's verdict kept at `$connect` (an object with a `principalId`).
    pub authorizer: Option<Box<RawValue>>,
}

impl Facts {
    /// About how many bytes the facts hold.
    fn bytes(&self) -> usize {
        self.stage.len()
            + self.api_id.len()
            + self.domain_name.len()
            + self.management_endpoint.len()
            + self.source_ip.len()
            + self.user_agent.as_ref().map_or(0, String::len)
            + self.authorizer.as_ref().map_or(0, |a| a.get().len())
            + std::mem::size_of::<Facts>()
    }

    /// The facts of a handshake under `config`, with no verdict yet.
    pub fn of(config: &Config, info: &ConnectionInfo) -> Facts {
        let stage = config.stage(&info.tenant);
        let domain_name = config
            .domain_name
            .clone()
            .or_else(|| info.header("host").map(str::to_owned))
            .unwrap_or_default();
        Facts {
            management_endpoint: format!("{}://{domain_name}/{stage}", config.management_scheme),
            api_id: config.api_id(&info.tenant),
            stage,
            domain_name,
            source_ip: info.source_ip.clone(),
            user_agent: info.user_agent.clone(),
            connected_at: info.connected_at,
            authorizer: None,
        }
    }
}

/// Connections' facts by id: at most `capacity` of them, `capacity_bytes` in all.
struct Known {
    facts: HashMap<String, Rc<Facts>>,
    bytes: usize,
    capacity: usize,
    capacity_bytes: usize,
}

impl Known {
    fn get(&self, id: &str) -> Option<Rc<Facts>> {
        self.facts.get(id).cloned()
    }

    /// Keeps `facts` unless they are larger than [`MAX_ENTRY_BYTES`]; when full,
    /// forgets every other connection first (they are read from the host again at
    /// their next event).
    fn insert(&mut self, id: &str, facts: Rc<Facts>) {
        let bytes = id.len() + facts.bytes();
        if bytes > MAX_ENTRY_BYTES {
            return;
        }
        if self.facts.len() >= self.capacity || self.bytes + bytes > self.capacity_bytes {
            self.facts.clear();
            self.bytes = 0;
        }
        if let Some(old) = self.facts.insert(id.to_owned(), facts) {
            self.bytes -= id.len() + old.bytes();
        }
        self.bytes += bytes;
    }

    fn remove(&mut self, id: &str) {
        if let Some(old) = self.facts.remove(id) {
            self.bytes -= id.len() + old.bytes();
        }
    }
}

thread_local! {
    static KNOWN: RefCell<Known> = RefCell::new(Known {
        facts: HashMap::new(),
        bytes: 0,
        capacity: CAPACITY,
        capacity_bytes: CAPACITY_BYTES,
    });
}

/// The facts of connection `id`: remembered, or read from the host. A connection the
/// host no longer knows (closed meanwhile) gets empty facts, and facts read while the
/// host could not answer for the context (a cluster's Redis timing out) lack the
/// verdict: neither is remembered.
pub fn of(config: &Config, id: &str) -> Rc<Facts> {
    if let Some(facts) = KNOWN.with_borrow(|known| known.get(id)) {
        return facts;
    }
    let Some(info) = crate::known_connection(id) else {
        return Rc::new(Facts::of(config, &crate::unknown_connection(id)));
    };
    let (authorizer, complete) = match stored_authorizer(id) {
        Ok(authorizer) => (authorizer, true),
        Err(()) => (None, false),
    };
    let facts = Rc::new(Facts {
        authorizer,
        ..Facts::of(config, &info)
    });
    if complete {
        KNOWN.with_borrow_mut(|known| known.insert(id, facts.clone()));
    }
    facts
}

/// Forgets connection `id` (at its `$disconnect`).
pub fn forget(id: &str) {
    KNOWN.with_borrow_mut(|known| known.remove(id));
}

/// The verdict kept with the connection, if it is one (another `$connect` plugin may
/// have kept something else there: only an object with a `principalId` counts).
/// `Err` when the host could not say.
fn stored_authorizer(connection_id: &str) -> Result<Option<Box<RawValue>>, ()> {
    let stored = match connections::get_context(connection_id) {
        Ok(Some(stored)) => stored,
        Ok(None) => return Ok(None),
        Err(err) => {
            wsgate_sdk::log::warn(&format!(
                "integration (aws): the context of connection {connection_id} could not be \
                 read ({err:?}); this event goes without the authorizer's verdict"
            ));
            return Err(());
        }
    };
    Ok(match serde_json::from_str::<Value>(&stored) {
        Ok(Value::Object(map)) if map.contains_key("principalId") => {
            RawValue::from_string(stored).ok()
        }
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(capacity: usize, capacity_bytes: usize) -> Known {
        Known {
            facts: HashMap::new(),
            bytes: 0,
            capacity,
            capacity_bytes,
        }
    }

    fn with_agent(agent_bytes: usize) -> Rc<Facts> {
        Rc::new(Facts {
            user_agent: Some("a".repeat(agent_bytes)),
            ..Facts::default()
        })
    }

    #[test]
    fn the_cache_never_holds_more_than_its_bytes_and_skips_large_facts() {
        let mut known = known(1000, 8 * 1024);
        for i in 0..100 {
            known.insert(&format!("c{i}"), with_agent(1000));
            let held: usize = known.facts.iter().map(|(id, f)| id.len() + f.bytes()).sum();
            assert_eq!(held, known.bytes);
            assert!(known.bytes <= 8 * 1024, "{} bytes held", known.bytes);
        }
        known.insert("huge", with_agent(MAX_ENTRY_BYTES));
        assert!(known.get("huge").is_none(), "large facts are not kept");
        known.remove("c99");
        let held: usize = known.facts.iter().map(|(id, f)| id.len() + f.bytes()).sum();
        assert_eq!(held, known.bytes);
    }

    #[test]
    fn the_cache_never_holds_more_than_its_capacity() {
        let mut known = known(3, usize::MAX);
        for i in 0..10 {
            let id = format!("c{i}");
            known.insert(
                &id,
                Rc::new(Facts {
                    connected_at: i,
                    ..Facts::default()
                }),
            );
            assert!(known.facts.len() <= 3, "{} kept", known.facts.len());
            assert_eq!(known.get(&id).map(|f| f.connected_at), Some(i));
        }
        known.remove("c9");
        assert!(known.get("c9").is_none());
        assert!(known.get("c0").is_none(), "forgotten when the cache filled");
    }
}
