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

/// At most this many connections are remembered per instance (a few hundred bytes
/// each); past it the cache starts afresh.
const CAPACITY: usize = 4096;

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

/// Connections' facts by id, at most `capacity` of them.
struct Known {
    facts: HashMap<String, Rc<Facts>>,
    capacity: usize,
}

impl Known {
    fn get(&self, id: &str) -> Option<Rc<Facts>> {
        self.facts.get(id).cloned()
    }

    /// Keeps `facts`; when full, forgets every other connection first (they are read
    /// from the host again at their next event).
    fn insert(&mut self, id: &str, facts: Rc<Facts>) {
        if self.facts.len() >= self.capacity {
            self.facts.clear();
        }
        self.facts.insert(id.to_owned(), facts);
    }

    fn remove(&mut self, id: &str) {
        self.facts.remove(id);
    }
}

thread_local! {
    static KNOWN: RefCell<Known> = RefCell::new(Known {
        facts: HashMap::new(),
        capacity: CAPACITY,
    });
}

/// The facts of connection `id`: remembered, or read from the host. A connection the
/// host no longer knows (closed meanwhile) gets empty facts, which are not remembered.
pub fn of(config: &Config, id: &str) -> Rc<Facts> {
    if let Some(facts) = KNOWN.with_borrow(|known| known.get(id)) {
        return facts;
    }
    let Some(info) = crate::known_connection(id) else {
        return Rc::new(Facts::of(config, &crate::unknown_connection(id)));
    };
    let facts = Rc::new(Facts {
        authorizer: stored_authorizer(id),
        ..Facts::of(config, &info)
    });
    KNOWN.with_borrow_mut(|known| known.insert(id, facts.clone()));
    facts
}

/// Forgets connection `id` (at its `$disconnect`).
pub fn forget(id: &str) {
    KNOWN.with_borrow_mut(|known| known.remove(id));
}

/// The verdict kept with the connection, if it is one (another `$connect` plugin may
/// have kept something else there: only an object with a `principalId` counts).
fn stored_authorizer(connection_id: &str) -> Option<Box<RawValue>> {
    let stored = connections::get_context(connection_id).ok()??;
    match serde_json::from_str::<Value>(&stored) {
        Ok(Value::Object(map)) if map.contains_key("principalId") => {
            RawValue::from_string(stored).ok()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_never_holds_more_than_its_capacity() {
        let mut known = Known {
            facts: HashMap::new(),
            capacity: 3,
        };
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
