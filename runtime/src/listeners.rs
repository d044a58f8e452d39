//! The two listeners, which a reload may move to new addresses. The new socket is bound
//! before the reload is accepted (an address that cannot be bound refuses the reload),
//! then handed to the accept loop, which stops accepting on the old one. Connections
//! that came through an old WebSocket listener are closed with 1012 (Service Restart)
//! once the reload's grace is over: their clients must reconnect to the new address.
//! Admin connections on an old listener finish their requests and end.

use std::net::SocketAddr;
use std::sync::Mutex;

use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::Listen as ListenConfig;

/// The listeners' addresses in force and the handoffs to their accept loops.
#[derive(Debug)]
pub struct Listeners {
    ws: Handoff,
    admin: Handoff,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// The addresses in force, as configured (a port 0 stays 0: a reload that keeps the
    /// config's address moves nothing).
    ws: SocketAddr,
    admin: SocketAddr,
    /// The gateway's shutdown, once it serves.
    shutdown: Option<CancellationToken>,
    /// What connections accepted by the current WebSocket listener watch.
    generation: Option<CancellationToken>,
    /// The WebSocket listener's bound address (its real port when configured as 0),
    /// once it serves: what the console's Try-it panel connects to.
    ws_bound: Option<SocketAddr>,
}

/// A new listener on its way to an accept loop.
#[derive(Debug, Default)]
pub struct Handoff {
    next: Mutex<Option<(TcpListener, CancellationToken)>>,
    moved: Notify,
}

impl Handoff {
    /// The next listener to accept on, once a reload binds one, with what the
    /// connections it accepts watch (taken together, so that a second move between the
    /// two cannot give them the wrong one).
    pub async fn next(&self) -> (TcpListener, CancellationToken) {
        loop {
            if let Some(listener) = lock(&self.next).take() {
                return listener;
            }
            // A notification sent before this wait is kept, so none is missed.
            self.moved.notified().await;
        }
    }

    fn hand(&self, listener: TcpListener, generation: CancellationToken) {
        *lock(&self.next) = Some((listener, generation));
        self.moved.notify_one();
    }
}

/// Listeners a reload bound, not yet in force.
#[derive(Debug, Default)]
pub struct Bound {
    ws: Option<(SocketAddr, TcpListener)>,
    admin: Option<(SocketAddr, TcpListener)>,
}

/// What putting [`Bound`] listeners in force moved.
#[derive(Debug, Default)]
pub struct Moved {
    /// The WebSocket listener's new bound address, and what the connections of the old
    /// one watch: cancel it to close them with 1012.
    pub ws: Option<(SocketAddr, CancellationToken)>,
    /// The admin listener's new bound address.
    pub admin: Option<SocketAddr>,
}

/// Why a listener could not be moved.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot listen on {address} ({key}): {source}; the listeners stay where they are and \
     nothing was reloaded (a port this gateway already listens on, e.g. the same port on \
     another address or the two listeners' ports swapped, cannot be taken by a reload: \
     restart the gateway to move there)"
)]
pub struct BindError {
    /// `listen.ws` or `listen.admin`.
    pub key: &'static str,
    /// The address asked for.
    pub address: SocketAddr,
    /// What binding said.
    #[source]
    pub source: std::io::Error,
}

impl Listeners {
    /// Listeners at `listen`'s addresses (bound by the caller at start-up).
    pub fn new(listen: &ListenConfig) -> Listeners {
        Listeners {
            ws: Handoff::default(),
            admin: Handoff::default(),
            state: Mutex::new(State {
                ws: listen.ws,
                admin: listen.admin,
                shutdown: None,
                generation: None,
                ws_bound: None,
            }),
        }
    }

    /// Starts serving under `shutdown`, the WebSocket listener bound at `ws_bound`;
    /// returns what connections of the first WebSocket listener watch.
    pub fn serve(&self, shutdown: &CancellationToken, ws_bound: SocketAddr) -> CancellationToken {
        let mut state = lock(&self.state);
        state.ws_bound = Some(ws_bound);
        let generation = shutdown.child_token();
        state.shutdown = Some(shutdown.clone());
        state.generation = Some(generation.clone());
        generation
    }

    /// The WebSocket listener's bound address, once it serves.
    pub fn ws_bound(&self) -> Option<SocketAddr> {
        lock(&self.state).ws_bound
    }

    /// Where the WebSocket accept loop gets its next listener.
    pub fn ws_handoff(&self) -> &Handoff {
        &self.ws
    }

    /// Where the admin accept loop gets its next listener.
    pub fn admin_handoff(&self) -> &Handoff {
        &self.admin
    }

    /// Binds the addresses of `listen` that differ from those in force. Nothing is in
    /// force yet: dropping the result closes them.
    pub async fn bind(&self, listen: &ListenConfig) -> Result<Bound, BindError> {
        let (ws, admin) = {
            let state = lock(&self.state);
            (state.ws, state.admin)
        };
        let mut bound = Bound::default();
        if listen.ws != ws {
            bound.ws = Some((listen.ws, bind("listen.ws", listen.ws).await?));
        }
        if listen.admin != admin {
            bound.admin = Some((listen.admin, bind("listen.admin", listen.admin).await?));
        }
        Ok(bound)
    }

    /// Puts `bound` in force: the accept loops take the new listeners and drop the old.
    pub fn commit(&self, bound: Bound) -> Moved {
        let mut state = lock(&self.state);
        let mut moved = Moved::default();
        if let Some((address, listener)) = bound.ws {
            let local = listener.local_addr().unwrap_or(address);
            let shutdown = state.shutdown.clone().unwrap_or_default();
            let generation = shutdown.child_token();
            let old = state.generation.replace(generation.clone());
            state.ws = address;
            state.ws_bound = Some(local);
            self.ws.hand(listener, generation);
            moved.ws = Some((local, old.unwrap_or_default()));
        }
        if let Some((address, listener)) = bound.admin {
            moved.admin = Some(listener.local_addr().unwrap_or(address));
            state.admin = address;
            // Admin connections are not closed by a move: the token is not used.
            self.admin.hand(listener, CancellationToken::new());
        }
        moved
    }
}

async fn bind(key: &'static str, address: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| BindError {
            key,
            address,
            source,
        })
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listen(ws: &str, admin: &str) -> ListenConfig {
        ListenConfig {
            ws: ws.parse().unwrap(),
            admin: admin.parse().unwrap(),
            ..ListenConfig::default()
        }
    }

    #[tokio::test]
    async fn only_addresses_that_changed_are_bound_and_a_move_retires_the_old_generation() {
        let listeners = Listeners::new(&listen("127.0.0.1:0", "127.0.0.1:0"));
        let shutdown = CancellationToken::new();
        let first = listeners.serve(&shutdown, "127.0.0.1:1".parse().unwrap());
        assert_eq!(listeners.ws_bound(), Some("127.0.0.1:1".parse().unwrap()));
        let same = listeners
            .bind(&listen("127.0.0.1:0", "127.0.0.1:0"))
            .await
            .unwrap();
        assert!(same.ws.is_none() && same.admin.is_none());
        let bound = listeners
            .bind(&listen("127.0.0.2:0", "127.0.0.1:0"))
            .await
            .unwrap();
        let moved = listeners.commit(bound);
        let (address, old) = moved.ws.unwrap();
        assert_eq!(address.ip().to_string(), "127.0.0.2");
        assert_eq!(
            listeners.ws_bound(),
            Some(address),
            "the console's Try-it follows"
        );
        assert!(moved.admin.is_none());
        old.cancel();
        assert!(
            first.is_cancelled(),
            "the old listener's connections are told"
        );
        let (next, generation) = listeners.ws_handoff().next().await;
        assert_eq!(next.local_addr().unwrap(), address);
        assert!(!generation.is_cancelled());
        shutdown.cancel();
        assert!(generation.is_cancelled(), "shutdown reaches all");
    }

    #[tokio::test]
    async fn an_address_that_cannot_be_bound_names_its_key() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let listeners = Listeners::new(&listen("127.0.0.1:0", "127.0.0.1:0"));
        let err = listeners
            .bind(&listen(
                "127.0.0.1:0",
                &taken.local_addr().unwrap().to_string(),
            ))
            .await
            .unwrap_err();
        assert_eq!(err.key, "listen.admin");
        assert!(err.to_string().contains("listen.admin"), "{err}");
    }
}
