//! The host API a plugin imports: connections, log and config. Nothing here touches a
//! socket; calls look things up in the tenant's registry and push into queues.

use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

use super::bindings::wsgate::plugin::{config, connections, log, types};
use super::convert;
use super::state::HostState;
use crate::config::Access;
use crate::registry::{Connection, DeliveryError, ListFilter};
use std::sync::Arc;
use types::{ConnectionInfo, HostError, Message};

/// Close codes a plugin may send: normal closure and the registered/application ranges.
fn allowed_close_code(code: u16) -> bool {
    code == 1000 || (3000..=4999).contains(&code)
}

impl HostState {
    /// The connection `id` if this plugin may reach it.
    fn reach(&self, id: &str) -> Result<Arc<Connection>, HostError> {
        if self.scope.access == Access::OwnConnection && id != &*self.event.connection {
            return Err(HostError::Forbidden);
        }
        self.scope.registry.get(id).ok_or(HostError::Gone)
    }
}

impl From<DeliveryError> for HostError {
    fn from(err: DeliveryError) -> Self {
        match err {
            DeliveryError::Gone => HostError::Gone,
            DeliveryError::QueueFull => HostError::LimitExceeded,
        }
    }
}

impl types::Host for HostState {}

impl connections::Host for HostState {
    fn send(&mut self, id: String, message: Message) -> wasmtime::Result<Result<(), HostError>> {
        self.host_call()?;
        let result = (|| {
            let connection = self.reach(&id)?;
            let message: WsMessage = convert::message_to_ws(message);
            if message.len() > self.scope.max_message_bytes {
                return Err(HostError::PayloadTooLarge);
            }
            Ok(connection.send(message)?)
        })();
        Ok(result)
    }

    fn get_info(&mut self, id: String) -> wasmtime::Result<Result<ConnectionInfo, HostError>> {
        self.host_call()?;
        Ok(self
            .reach(&id)
            .map(|c| convert::info(&c.meta, c.last_active_at())))
    }

    fn disconnect(
        &mut self,
        id: String,
        code: u16,
        reason: String,
    ) -> wasmtime::Result<Result<(), HostError>> {
        let result = (|| {
            let connection = self.reach(&id)?;
            // A close frame carries at most 123 bytes of reason.
            if !allowed_close_code(code) || reason.len() > 123 {
                return Err(HostError::InvalidArgument);
            }
            let frame = CloseFrame {
                code: code.into(),
                reason: reason.into(),
            };
            Ok(connection.close(frame)?)
        })();
        Ok(result)
    }

    fn list(
        &mut self,
        filter: types::ListFilter,
    ) -> wasmtime::Result<Result<Vec<String>, HostError>> {
        if self.scope.access == Access::OwnConnection {
            return Ok(Err(HostError::Forbidden));
        }
        let filter = ListFilter {
            route: filter.route,
            path: filter.path,
        };
        let ids = self
            .scope
            .registry
            .list(&filter)
            .iter()
            .map(|c| c.id().to_owned())
            .collect();
        Ok(Ok(ids))
    }

    fn broadcast(
        &mut self,
        filter: types::ListFilter,
        message: Message,
        except: Option<String>,
    ) -> wasmtime::Result<Result<u32, HostError>> {
        self.host_call()?;
        if self.scope.access == Access::OwnConnection {
            return Ok(Err(HostError::Forbidden));
        }
        // Converted once: each recipient's copy shares the payload (`Bytes`).
        let message = convert::message_to_ws(message);
        if message.len() > self.scope.max_message_bytes {
            return Ok(Err(HostError::PayloadTooLarge));
        }
        let filter = ListFilter {
            route: filter.route,
            path: filter.path,
        };
        let mut queued = 0u32;
        let mut full = 0u64;
        for connection in self.scope.registry.list(&filter) {
            if except.as_deref() == Some(connection.id()) {
                continue;
            }
            match connection.send(message.clone()) {
                Ok(()) => queued += 1,
                Err(DeliveryError::QueueFull) => full += 1,
                Err(DeliveryError::Gone) => {}
            }
        }
        if full > 0 {
            self.scope
                .metrics
                .limit_hits(&self.scope.tenant, "queue_full", full);
        }
        Ok(Ok(queued))
    }
}

impl log::Host for HostState {
    fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        self.host_call()?;
        let scope = &self.scope;
        let event = &self.event;
        macro_rules! emit {
            ($level:expr) => {
                tracing::event!(
                    target: "wsgate::plugin",
                    $level,
                    tenant = %scope.tenant,
                    plugin = %scope.plugin,
                    route = %event.route,
                    connection = %event.connection,
                    "{message}"
                )
            };
        }
        match level {
            log::Level::Trace => emit!(tracing::Level::TRACE),
            log::Level::Debug => emit!(tracing::Level::DEBUG),
            log::Level::Info => emit!(tracing::Level::INFO),
            log::Level::Warn => emit!(tracing::Level::WARN),
            log::Level::Error => emit!(tracing::Level::ERROR),
        }
        Ok(())
    }
}

impl config::Host for HostState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self
            .scope
            .config
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.clone()))
    }

    fn get_all(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(self.scope.config.clone())
    }
}

#[cfg(test)]
mod tests {
    //! The host API as plain Rust: no wasm involved.
    use super::*;
    use crate::config::PluginLimits;
    use crate::plugin::state::PluginScope;
    use crate::registry::{ConnectionMeta, LocalRegistry, Registry, new_connection_id, now_ms};
    use connections::Host as _;

    fn meta(tenant: &str) -> ConnectionMeta {
        ConnectionMeta {
            id: new_connection_id(),
            tenant: tenant.into(),
            route: "/r".into(),
            path: "/r".into(),
            uri: "/r?x=1".into(),
            headers: [("user-agent", "ua")].into_iter().collect(),
            path_params: Default::default(),
            query_params: [("x", "1")].into_iter().collect(),
            source_ip: "127.0.0.1".into(),
            user_agent: Some("ua".into()),
            requested_subprotocols: vec![],
            subprotocol: None,
            connected_at: now_ms(),
        }
    }

    fn state(registry: Arc<dyn Registry>, access: Access, current: &str) -> HostState {
        let scope = PluginScope {
            tenant: "t".into(),
            plugin: "p".into(),
            registry,
            config: vec![("k".into(), "v".into())],
            access,
            max_message_bytes: 8,
            limits: PluginLimits {
                max_host_calls: 20,
                ..PluginLimits::default()
            },
            metrics: crate::metrics::Metrics::new(),
            events: Arc::new(tokio::sync::Semaphore::new(1)),
            heavy_until_ms: Default::default(),
        };
        let mut state = HostState::new(Arc::new(scope));
        state.event.connection = current.into();
        state
    }

    #[test]
    fn calls_reach_only_the_own_registry() {
        let mine = Arc::new(LocalRegistry::default());
        let theirs = LocalRegistry::default();
        let (own, mut rx) = Connection::new(meta("t"), 4);
        let (other, _orx) = Connection::new(meta("u"), 4);
        mine.insert(own.clone());
        theirs.insert(other.clone());
        let mut host = state(mine, Access::Tenant, own.id());

        assert_eq!(
            host.send(own.id().into(), Message::Text("hi".into()))
                .unwrap(),
            Ok(())
        );
        assert_eq!(rx.try_recv().unwrap(), WsMessage::text("hi"));
        assert_eq!(
            host.send(other.id().into(), Message::Text("hi".into()))
                .unwrap(),
            Err(HostError::Gone)
        );
        assert_eq!(
            host.get_info(other.id().into()).unwrap().err(),
            Some(HostError::Gone)
        );
        assert_eq!(
            host.disconnect(other.id().into(), 1000, String::new())
                .unwrap(),
            Err(HostError::Gone)
        );
        assert_eq!(
            host.list(types::ListFilter {
                route: None,
                path: None
            })
            .unwrap(),
            Ok(vec![own.id().to_owned()])
        );
        assert!(!other.is_closing());

        let info = host.get_info(own.id().into()).unwrap().unwrap();
        assert_eq!(info.user_agent.as_deref(), Some("ua"));
        assert_eq!(info.query_params, vec![("x".to_string(), "1".to_string())]);
    }

    #[test]
    fn limits_and_arguments_are_checked() {
        let registry = Arc::new(LocalRegistry::default());
        let (own, _rx) = Connection::new(meta("t"), 1);
        registry.insert(own.clone());
        let mut host = state(registry, Access::Tenant, own.id());
        let id = || own.id().to_owned();
        assert_eq!(
            host.send(id(), Message::Binary(vec![0; 9])).unwrap(),
            Err(HostError::PayloadTooLarge)
        );
        assert_eq!(
            host.send(id(), Message::Binary(vec![0; 8])).unwrap(),
            Ok(())
        );
        assert_eq!(
            host.send(id(), Message::Binary(vec![0; 1])).unwrap(),
            Err(HostError::LimitExceeded)
        );
        assert_eq!(
            host.disconnect(id(), 1006, String::new()).unwrap(),
            Err(HostError::InvalidArgument)
        );
        assert_eq!(
            host.disconnect(id(), 4000, "x".repeat(124)).unwrap(),
            Err(HostError::InvalidArgument)
        );
        assert_eq!(host.disconnect(id(), 4000, "bye".into()).unwrap(), Ok(()));
        assert_eq!(
            host.disconnect(id(), 4000, "bye".into()).unwrap(),
            Err(HostError::Gone)
        );
    }

    #[test]
    fn self_access_is_confined_to_the_current_connection() {
        let registry = Arc::new(LocalRegistry::default());
        let (own, _rx) = Connection::new(meta("t"), 4);
        let (peer, _prx) = Connection::new(meta("t"), 4);
        registry.insert(own.clone());
        registry.insert(peer.clone());
        let mut host = state(registry, Access::OwnConnection, own.id());
        assert_eq!(
            host.send(own.id().into(), Message::Text("a".into()))
                .unwrap(),
            Ok(())
        );
        assert_eq!(
            host.send(peer.id().into(), Message::Text("a".into()))
                .unwrap(),
            Err(HostError::Forbidden)
        );
        assert_eq!(
            host.list(types::ListFilter {
                route: None,
                path: None
            })
            .unwrap(),
            Err(HostError::Forbidden)
        );
    }

    #[test]
    fn broadcast_reaches_the_filter_but_the_exception_and_skips_full_queues() {
        let registry = Arc::new(LocalRegistry::default());
        let on = |path: &str, queue| {
            let mut meta = meta("t");
            meta.path = path.into();
            let (connection, rx) = Connection::new(meta, queue);
            registry.insert(connection.clone());
            (connection, rx)
        };
        let (sender, mut sender_rx) = on("/room/a", 8);
        let (_peer, mut peer_rx) = on("/room/a", 8);
        let (full, _full_rx) = on("/room/a", 8);
        let (closing, _closing_rx) = on("/room/a", 8);
        let (_other, mut other_rx) = on("/room/b", 8);
        assert_eq!(full.send(WsMessage::text("12345678")), Ok(()));
        closing.mark_closing();
        let mut host = state(registry.clone(), Access::Tenant, sender.id());
        let room = || types::ListFilter {
            route: None,
            path: Some("/room/a".into()),
        };

        let queued = host.broadcast(room(), Message::Text("hi".into()), Some(sender.id().into()));
        assert_eq!(
            queued.unwrap(),
            Ok(1),
            "the peer only: not the sender, not the full queue, not the closing one"
        );
        assert_eq!(peer_rx.try_recv(), Some(WsMessage::text("hi")));
        assert_eq!(sender_rx.try_recv(), None);
        assert_eq!(other_rx.try_recv(), None);

        let everyone = types::ListFilter {
            route: None,
            path: None,
        };
        assert_eq!(
            host.broadcast(everyone, Message::Binary(vec![1]), None)
                .unwrap(),
            Ok(3)
        );
        // Full queues are counted (once per broadcast that skipped one); closing
        // connections are not a limit.
        assert!(
            host.scope
                .metrics
                .encode()
                .contains(r#"wsgate_limits_hit_total{tenant="t",limit="queue_full"} 2"#),
            "{}",
            host.scope.metrics.encode()
        );
        assert_eq!(
            host.broadcast(room(), Message::Binary(vec![0; 9]), None)
                .unwrap(),
            Err(HostError::PayloadTooLarge)
        );
        let mut confined = state(registry, Access::OwnConnection, sender.id());
        assert_eq!(
            confined
                .broadcast(room(), Message::Text("x".into()), None)
                .unwrap(),
            Err(HostError::Forbidden)
        );
    }

    #[test]
    fn host_calls_are_capped_per_event() {
        let registry = Arc::new(LocalRegistry::default());
        let mut host = state(registry, Access::Tenant, "");
        for _ in 0..20 {
            assert!(host.get_info("x".into()).is_ok());
        }
        let trap = host.get_info("x".into()).unwrap_err();
        assert!(
            trap.to_string().contains("limit of 20 host calls"),
            "{trap}"
        );
    }

    #[test]
    fn config_is_readable() {
        let mut host = state(Arc::new(LocalRegistry::default()), Access::Tenant, "");
        assert_eq!(
            config::Host::get(&mut host, "k".into()).unwrap().as_deref(),
            Some("v")
        );
        assert_eq!(config::Host::get(&mut host, "nope".into()).unwrap(), None);
    }
}
