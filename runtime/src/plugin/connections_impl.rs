//! `wsgate:plugin/connections`: the tenant's connections, through the registry's verbs.

use super::bindings::wsgate::plugin::connections;
use super::bindings::wsgate::plugin::types::{self, ConnectionInfo, HostError, Message};
use super::call::HostCall;
use super::convert;
use super::state::PluginScope;
use crate::metrics::{Import, Limit};
use crate::registry::{Close, DeliveryError, ListFilter, PageRequest, Payload};

impl From<DeliveryError> for HostError {
    fn from(err: DeliveryError) -> Self {
        match err {
            DeliveryError::Gone => HostError::Gone,
            DeliveryError::QueueFull => HostError::LimitExceeded,
            DeliveryError::Unavailable(_) => HostError::Unavailable,
        }
    }
}

impl PluginScope {
    /// Whether the plugin may act on connection `id` in an event of `current`.
    fn reach(&self, id: &str, current: &str) -> Result<(), HostError> {
        if self.grants.may_reach(id, current) {
            Ok(())
        } else {
            Err(HostError::Forbidden)
        }
    }

    /// Whether the plugin may act on many connections at once.
    fn reach_all(&self) -> Result<(), HostError> {
        if self.grants.may_reach_all() {
            Ok(())
        } else {
            Err(HostError::Forbidden)
        }
    }

    /// A guest message as a payload within the tenant's size cap.
    fn payload(&self, message: Message) -> Result<Payload, HostError> {
        let payload = convert::payload(message);
        if payload.len() > self.max_message_bytes {
            return Err(HostError::PayloadTooLarge);
        }
        Ok(payload)
    }
}

/// How long before the event's time limit a verb that waits on other nodes gives up:
/// the guest gets `unavailable` and time to handle it, rather than being stopped for a
/// node or a Redis that does not answer.
const CLUSTER_MARGIN: std::time::Duration = std::time::Duration::from_millis(10);

/// Runs a registry verb; one that may wait on other nodes (a cluster) is bounded by the
/// event's time limit and answers `unavailable` past it.
async fn within<T>(
    registry: &dyn crate::registry::Registry,
    deadline: std::time::Instant,
    verb: impl Future<Output = Result<T, HostError>>,
) -> Result<T, HostError> {
    if !registry.may_wait() {
        return verb.await;
    }
    let until = deadline.checked_sub(CLUSTER_MARGIN).unwrap_or(deadline);
    tokio::time::timeout_at(until.into(), verb)
        .await
        .unwrap_or(Err(HostError::Unavailable))
}

fn filter(filter: types::ListFilter) -> ListFilter {
    ListFilter {
        route: filter.route,
        path: filter.path,
    }
}

impl connections::Host for HostCall<'_> {
    async fn send(
        &mut self,
        id: String,
        message: Message,
    ) -> wasmtime::Result<Result<(), HostError>> {
        let state = self.enter(Import::Send)?;
        let (scope, current) = (&*state.scope, &*state.event.connection);
        let deadline = state.event.deadline;
        Ok(within(&*scope.registry, deadline, async {
            scope.reach(&id, current)?;
            let payload = scope.payload(message)?;
            Ok(scope.registry.send(&id, payload).await?)
        })
        .await)
    }

    async fn get_info(
        &mut self,
        id: String,
    ) -> wasmtime::Result<Result<ConnectionInfo, HostError>> {
        let state = self.enter(Import::GetInfo)?;
        let (scope, current) = (&*state.scope, &*state.event.connection);
        let deadline = state.event.deadline;
        Ok(within(&*scope.registry, deadline, async {
            scope.reach(&id, current)?;
            let info = scope.registry.info(&id).await?;
            Ok(convert::info(&info.meta, info.last_active_at))
        })
        .await)
    }

    async fn disconnect(
        &mut self,
        id: String,
        code: u16,
        reason: String,
    ) -> wasmtime::Result<Result<(), HostError>> {
        let state = self.enter(Import::Disconnect)?;
        let (scope, current) = (&*state.scope, &*state.event.connection);
        let deadline = state.event.deadline;
        Ok(within(&*scope.registry, deadline, async {
            scope.reach(&id, current)?;
            let close = Close::requested(code, reason).map_err(|_| HostError::InvalidArgument)?;
            Ok(scope.registry.close(&id, close).await?)
        })
        .await)
    }

    async fn list(
        &mut self,
        list_filter: types::ListFilter,
    ) -> wasmtime::Result<Result<Vec<String>, HostError>> {
        let state = self.enter(Import::List)?;
        let (scope, deadline) = (&*state.scope, state.event.deadline);
        Ok(within(&*scope.registry, deadline, async {
            scope.reach_all()?;
            let page = scope
                .registry
                .list(&filter(list_filter), PageRequest::default())
                .await
                .map_err(|_| HostError::Unavailable)?;
            Ok(page.items.into_iter().map(|c| c.id.to_string()).collect())
        })
        .await)
    }

    async fn broadcast(
        &mut self,
        list_filter: types::ListFilter,
        message: Message,
        except: Option<String>,
    ) -> wasmtime::Result<Result<u32, HostError>> {
        let state = self.enter(Import::Broadcast)?;
        let (scope, deadline) = (&*state.scope, state.event.deadline);
        Ok(within(&*scope.registry, deadline, async {
            scope.reach_all()?;
            let payload = scope.payload(message)?;
            let outcome = scope
                .registry
                .broadcast(&filter(list_filter), payload, except.as_deref())
                .await
                .map_err(|_| HostError::Unavailable)?;
            if outcome.full > 0 {
                scope
                    .metrics
                    .limit_hits(Limit::QueueFull, u64::from(outcome.full));
            }
            Ok(outcome.queued)
        })
        .await)
    }

    async fn set_context(
        &mut self,
        id: String,
        context: String,
    ) -> wasmtime::Result<Result<(), HostError>> {
        let state = self.enter(Import::SetContext)?;
        if !state.event.connecting || id != *state.event.connection {
            return Ok(Err(HostError::InvalidArgument));
        }
        if context.len() > MAX_CONTEXT_BYTES {
            return Ok(Err(HostError::PayloadTooLarge));
        }
        state.event.context = Some(context);
        Ok(Ok(()))
    }

    async fn get_context(
        &mut self,
        id: String,
    ) -> wasmtime::Result<Result<Option<String>, HostError>> {
        let state = self.enter(Import::GetContext)?;
        if state.event.connecting && id == *state.event.connection {
            return Ok(Ok(state.event.context.clone()));
        }
        let (scope, current) = (&*state.scope, &*state.event.connection);
        let deadline = state.event.deadline;
        Ok(within(&*scope.registry, deadline, async {
            scope.reach(&id, current)?;
            let info = scope.registry.info(&id).await?;
            Ok(info.meta.context.as_deref().map(str::to_owned))
        })
        .await)
    }
}

/// The largest context `set-context` keeps: it lives as long as the connection.
pub const MAX_CONTEXT_BYTES: usize = 8 * 1024;

impl types::Host for HostCall<'_> {}

#[cfg(test)]
pub(super) mod tests {
    //! The host API as plain Rust: no wasm involved.
    use std::sync::Arc;

    use super::*;
    use crate::config::{Access, PluginLimits};
    use crate::plugin::grants::Grants;
    use crate::plugin::state::{HostState, PluginScope};
    use crate::registry::{Attachment, ConnectionMeta, LocalRegistry, Registry};
    use connections::Host as _;
    use tokio_tungstenite::tungstenite::Message as WsMessage;

    pub fn meta(tenant: &str) -> ConnectionMeta {
        ConnectionMeta {
            uri: "/r?x=1".into(),
            headers: [("user-agent", "ua")].into_iter().collect(),
            query_params: [("x", "1")].into_iter().collect(),
            user_agent: Some("ua".into()),
            ..ConnectionMeta::for_test(tenant, "/r")
        }
    }

    /// The test's runtime, or a shared one for tests outside any: a plugin granted no
    /// origin never uses it.
    fn runtime() -> tokio::runtime::Handle {
        static SHARED: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
        tokio::runtime::Handle::try_current().unwrap_or_else(|_| {
            SHARED
                .get_or_init(|| tokio::runtime::Runtime::new().unwrap())
                .handle()
                .clone()
        })
    }

    /// Runs a future that never waits (a host call) to its end.
    pub fn now<F: std::future::Future>(future: F) -> F::Output {
        let waker = std::task::Waker::noop();
        match std::pin::pin!(future).poll(&mut std::task::Context::from_waker(waker)) {
            std::task::Poll::Ready(value) => value,
            std::task::Poll::Pending => panic!("a host call waited"),
        }
    }

    /// A store's state for a plugin of tenant "t" with `access`, in an event of
    /// connection `current`: 20 host calls, 8-byte messages.
    pub fn state(registry: Arc<dyn Registry>, access: Access, current: &str) -> HostState {
        let scope = PluginScope {
            tenant: "t".into(),
            plugin: "p".into(),
            registry,
            config: vec![("k".into(), "v".into())],
            grants: Grants {
                connections: access,
            },
            max_message_bytes: 8,
            limits: PluginLimits {
                max_host_calls: 20,
                ..PluginLimits::default()
            },
            metrics: crate::metrics::Metrics::new().plugin("t", "p"),
            instances: Arc::new(tokio::sync::Semaphore::new(1)),
            quota: Arc::new(crate::plugin::TenantQuota::new(1, 1 << 30)),
            events: Arc::new(tokio::sync::Semaphore::new(1)),
            heavy_until_ms: Default::default(),
            outbound: Arc::new(
                crate::plugin::Outbound::from_config(
                    "t",
                    "p",
                    &crate::config::PluginConfig::for_test(),
                    std::path::Path::new("."),
                    crate::metrics::Metrics::new().plugin("t", "p"),
                    runtime(),
                )
                .unwrap(),
            ),
            domain_name: Default::default(),
            execution_log: Arc::new(crate::execlog::ExecutionLog::new(
                100,
                1 << 20,
                Default::default(),
            )),
        };
        let mut state = HostState::new(Arc::new(scope));
        state.event.connection = current.into();
        state
    }

    fn attach(registry: &LocalRegistry, path: &str, queue: usize) -> Attachment {
        let mut meta = meta("t");
        meta.path = path.into();
        registry.attach_now(meta, queue)
    }

    fn text(s: &str) -> Message {
        Message::Text(s.into())
    }

    fn everyone() -> types::ListFilter {
        types::ListFilter {
            route: None,
            path: None,
        }
    }

    #[tokio::test]
    async fn calls_reach_only_the_own_registry() {
        let mine = LocalRegistry::default();
        let theirs = LocalRegistry::default();
        let own = attach(&mine, "/r", 4);
        let other = attach(&theirs, "/r", 4);
        let mut state = state(Arc::new(mine.clone()), Access::Tenant, own.id());
        let mut host = HostCall::new(&mut state);

        assert_eq!(
            host.send(own.id().to_string(), text("hi")).await.unwrap(),
            Ok(())
        );
        assert_eq!(own.take_all(), [WsMessage::text("hi")]);
        assert_eq!(
            host.send(other.id().to_string(), text("hi")).await.unwrap(),
            Err(HostError::Gone)
        );
        assert_eq!(
            host.get_info(other.id().to_string()).await.unwrap().err(),
            Some(HostError::Gone)
        );
        assert_eq!(
            host.disconnect(other.id().to_string(), 1000, String::new())
                .await
                .unwrap(),
            Err(HostError::Gone)
        );
        assert_eq!(
            host.list(everyone()).await.unwrap(),
            Ok(vec![own.id().to_string()])
        );
        assert!(theirs.info(other.id()).await.is_ok(), "untouched");

        let info = host.get_info(own.id().to_string()).await.unwrap().unwrap();
        assert_eq!(info.user_agent.as_deref(), Some("ua"));
        assert_eq!(info.query_params, vec![("x".to_string(), "1".to_string())]);
    }

    #[tokio::test]
    async fn limits_and_arguments_are_checked() {
        let registry = LocalRegistry::default();
        let own = attach(&registry, "/r", 1);
        let mut state = state(Arc::new(registry.clone()), Access::Tenant, own.id());
        let mut host = HostCall::new(&mut state);
        let id = || own.id().to_string();
        assert_eq!(
            host.send(id(), Message::Binary(vec![0; 9])).await.unwrap(),
            Err(HostError::PayloadTooLarge)
        );
        assert_eq!(
            host.send(id(), Message::Binary(vec![0; 8])).await.unwrap(),
            Ok(())
        );
        assert_eq!(
            host.send(id(), Message::Binary(vec![0; 1])).await.unwrap(),
            Err(HostError::LimitExceeded)
        );
        for code in [999, 1001, 1006, 2999, 5000] {
            assert_eq!(
                host.disconnect(id(), code, String::new()).await.unwrap(),
                Err(HostError::InvalidArgument),
                "code {code}"
            );
        }
        assert_eq!(
            host.disconnect(id(), 4000, "x".repeat(124)).await.unwrap(),
            Err(HostError::InvalidArgument)
        );
        assert_eq!(
            host.disconnect(id(), 3000, "bye".into()).await.unwrap(),
            Ok(())
        );
        assert_eq!(
            host.disconnect(id(), 4000, "bye".into()).await.unwrap(),
            Err(HostError::Gone)
        );
    }

    #[tokio::test]
    async fn self_access_is_confined_to_the_current_connection() {
        let registry = LocalRegistry::default();
        let own = attach(&registry, "/r", 4);
        let peer = attach(&registry, "/r", 4);
        let mut state = state(Arc::new(registry.clone()), Access::OwnConnection, own.id());
        let mut host = HostCall::new(&mut state);
        assert_eq!(
            host.send(own.id().to_string(), text("a")).await.unwrap(),
            Ok(())
        );
        assert_eq!(
            host.send(peer.id().to_string(), text("a")).await.unwrap(),
            Err(HostError::Forbidden)
        );
        assert_eq!(
            host.get_info(peer.id().to_string()).await.unwrap().err(),
            Some(HostError::Forbidden)
        );
        assert_eq!(
            host.disconnect(peer.id().to_string(), 1000, String::new())
                .await
                .unwrap(),
            Err(HostError::Forbidden)
        );
        assert_eq!(
            host.list(everyone()).await.unwrap(),
            Err(HostError::Forbidden)
        );
        assert_eq!(
            host.broadcast(everyone(), text("x"), None).await.unwrap(),
            Err(HostError::Forbidden)
        );
    }

    #[tokio::test]
    async fn broadcast_reaches_the_filter_but_the_exception_and_counts_full_queues() {
        let registry = LocalRegistry::default();
        let sender = attach(&registry, "/room/a", 8);
        let peer = attach(&registry, "/room/a", 8);
        let full = attach(&registry, "/room/a", 8);
        let closing = attach(&registry, "/room/a", 8);
        let other = attach(&registry, "/room/b", 8);
        registry
            .send(full.id(), Payload::text("12345678"))
            .await
            .unwrap();
        closing.mark_closing();
        let mut state = state(Arc::new(registry.clone()), Access::Tenant, sender.id());
        let metrics = state.scope.metrics.all().clone();
        let mut host = HostCall::new(&mut state);
        let room = || types::ListFilter {
            route: None,
            path: Some("/room/a".into()),
        };

        let queued = host
            .broadcast(room(), text("hi"), Some(sender.id().to_string()))
            .await;
        assert_eq!(
            queued.unwrap(),
            Ok(1),
            "the peer only: not the sender, not the full queue, not the closing one"
        );
        assert_eq!(peer.take_all(), [WsMessage::text("hi")]);
        assert!(sender.take_all().is_empty());
        assert!(other.take_all().is_empty());
        assert_eq!(
            host.broadcast(everyone(), Message::Binary(vec![1]), None)
                .await
                .unwrap(),
            Ok(3)
        );
        // Full queues are counted (once per broadcast that skipped one); closing
        // connections are not a limit.
        let text = metrics.encode();
        assert!(
            text.contains(r#"wsgate_limits_hit_total{tenant="t",limit="queue_full"} 2"#),
            "{text}"
        );
        assert_eq!(
            host.broadcast(room(), Message::Binary(vec![0; 9]), None)
                .await
                .unwrap(),
            Err(HostError::PayloadTooLarge)
        );
    }
}
