//! Write wsgate route handlers in Rust.
//!
//! A plugin is a type that implements [`Plugin`]; every method has a default (accept the
//! connection, send no reply, do nothing on close), so a plugin implements only what it
//! needs. [`export!`] makes it the component's handler. Build with
//! `cargo build --release --target wasm32-wasip2` and point a route at the `.wasm` file.
//!
//! ```no_run
//! use wsgate_sdk::{Message, MessageEvent, Plugin};
//!
//! struct Echo;
//!
//! impl Plugin for Echo {
//!     fn on_message(event: MessageEvent) -> Option<Message> {
//!         Some(event.message)
//!     }
//! }
//!
//! wsgate_sdk::export!(Echo);
//! ```
//!
//! Host calls are plain functions: [`connections`] (send, get info, disconnect, list —
//! always within the plugin's own tenant), [`log`] and [`config`]. [`http`] calls other
//! services, synchronously, and only those the plugin's `allowed_outbound_hosts` grants.
//!
//! Instances are reused between events but never shared by two events at once, and may be
//! thrown away at any time: keep state that must last in the host (the connection
//! registry), not in globals.

#![deny(missing_docs)]

extern crate self as wsgate_sdk;

/// The bindings generated from the WIT package. Plugins need not use them directly.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "route-handler",
        pub_export_macro: true,
        default_bindings_module: "wsgate_sdk::bindings",
        runtime_path: "wsgate_sdk::__private::wit_bindgen::rt",
        additional_derives: [PartialEq, Eq],
    });
}

#[doc(hidden)]
pub mod __private {
    pub use wit_bindgen;
}

pub mod http;

use bindings::exports::wsgate::plugin::handler;
pub use bindings::wsgate::plugin::types::{
    Accept, ConnectResponse, ConnectionInfo, HostError, ListFilter, Message, Reject,
};

/// A message event: what `$default` or a selected route key receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageEvent {
    /// The sender.
    pub connection_id: String,
    /// The route key that selected this plugin (`$default` when no key matched or the
    /// route has no selection expression).
    pub route_key: String,
    /// The message as the client sent it.
    pub message: Message,
}

/// A disconnect event: the connection is closed and can no longer be sent to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisconnectEvent {
    /// The connection that closed.
    pub connection_id: String,
    /// The close code (1005 when the peer sent none, 1006 when the socket dropped).
    pub code: u16,
    /// The close reason, possibly empty.
    pub reason: String,
}

/// A route handler. Implement the events you need; the others keep their defaults.
pub trait Plugin {
    /// `$connect`: accept (the default) or reject the upgrade.
    fn on_connect(info: ConnectionInfo) -> ConnectResponse {
        let _ = info;
        ConnectResponse::accept()
    }

    /// A message from a client. A returned message goes back to the sender.
    fn on_message(event: MessageEvent) -> Option<Message> {
        let _ = event;
        None
    }

    /// `$disconnect`: the connection closed.
    fn on_disconnect(event: DisconnectEvent) {
        let _ = event;
    }
}

impl<T: Plugin> handler::Guest for T {
    fn on_connect(info: ConnectionInfo) -> ConnectResponse {
        T::on_connect(info)
    }

    fn on_message(id: String, route_key: String, message: Message) -> Option<Message> {
        T::on_message(MessageEvent {
            connection_id: id,
            route_key,
            message,
        })
    }

    fn on_disconnect(id: String, code: u16, reason: String) {
        T::on_disconnect(DisconnectEvent {
            connection_id: id,
            code,
            reason,
        })
    }
}

/// Makes a [`Plugin`] the component's route handler. Use it once per plugin crate.
#[macro_export]
macro_rules! export {
    ($plugin:ident) => {
        $crate::bindings::export!($plugin with_types_in $crate::bindings);
    };
}

impl Message {
    /// A text message.
    pub fn text(text: impl Into<String>) -> Self {
        Message::Text(text.into())
    }

    /// A binary message.
    pub fn binary(bytes: impl Into<Vec<u8>>) -> Self {
        Message::Binary(bytes.into())
    }

    /// The text, if this is a text message.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Message::Text(text) => Some(text),
            Message::Binary(_) => None,
        }
    }

    /// The payload bytes, text or binary.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Message::Text(text) => text.as_bytes(),
            Message::Binary(bytes) => bytes,
        }
    }
}

impl ConnectResponse {
    /// Accept the upgrade with no subprotocol.
    pub fn accept() -> Self {
        ConnectResponse::Accept(Accept {
            subprotocol: None,
            headers: Vec::new(),
        })
    }

    /// Accept the upgrade choosing `subprotocol`, which must be one the client offered.
    pub fn accept_subprotocol(subprotocol: impl Into<String>) -> Self {
        ConnectResponse::Accept(Accept {
            subprotocol: Some(subprotocol.into()),
            headers: Vec::new(),
        })
    }

    /// Refuse the upgrade with an HTTP `status` (300 to 599) and a text body.
    pub fn reject(status: u16, body: impl Into<String>) -> Self {
        ConnectResponse::Reject(Reject {
            status,
            headers: Vec::new(),
            body: body.into(),
        })
    }

    /// Adds a header to the 101 response or to the rejection.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let headers = match &mut self {
            ConnectResponse::Accept(accept) => &mut accept.headers,
            ConnectResponse::Reject(reject) => &mut reject.headers,
        };
        headers.push((name.into(), value.into()));
        self
    }
}

fn find<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

impl ConnectionInfo {
    /// A request header by name (case-insensitive; the gateway lower-cases names).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// A parameter captured by the route template, e.g. `room` in `/chat/{room}`.
    pub fn path_param(&self, name: &str) -> Option<&str> {
        find(&self.path_params, name)
    }

    /// The first query parameter called `name`, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        find(&self.query_params, name)
    }
}

/// The connections of this plugin's tenant. Ids of other tenants behave as unknown ones.
pub mod connections {
    use crate::bindings::wsgate::plugin::connections as host;
    use crate::{ConnectionInfo, HostError, ListFilter, Message};

    /// Queues `message` for connection `id`.
    pub fn send(id: &str, message: &Message) -> Result<(), HostError> {
        host::send(id, message)
    }

    /// Queues a text message for connection `id`.
    pub fn send_text(id: &str, text: &str) -> Result<(), HostError> {
        host::send(id, &Message::Text(text.to_owned()))
    }

    /// Everything the gateway knows about connection `id`.
    pub fn get_info(id: &str) -> Result<ConnectionInfo, HostError> {
        host::get_info(id)
    }

    /// Closes connection `id` with `code` (1000 or 3000–4999) and `reason`.
    pub fn disconnect(id: &str, code: u16, reason: &str) -> Result<(), HostError> {
        host::disconnect(id, code, reason)
    }

    /// Ids of the tenant's open connections matching `filter`.
    pub fn list(filter: &ListFilter) -> Result<Vec<String>, HostError> {
        host::list(filter)
    }

    /// Ids of the tenant's open connections whose request path is exactly `path`.
    pub fn list_path(path: &str) -> Result<Vec<String>, HostError> {
        host::list(&ListFilter {
            route: None,
            path: Some(path.to_owned()),
        })
    }

    /// Queues `message` for every open connection matching `filter` but `except`, in one
    /// host call however many there are; returns how many it was queued for. Full or
    /// closing connections are skipped. Far cheaper than [`list`] and one [`send`] each.
    pub fn broadcast(
        filter: &ListFilter,
        message: &Message,
        except: Option<&str>,
    ) -> Result<u32, HostError> {
        host::broadcast(filter, message, except)
    }

    /// Keeps `context` (at most 8 KiB) with connection `id` for its life: call it in
    /// `on_connect` for the connecting connection (an authorizer's verdict, a user id;
    /// anywhere else it fails with `InvalidArgument`) and read it back in every later
    /// event with [`get_context`]. Kept only if the upgrade is accepted.
    pub fn set_context(id: &str, context: &str) -> Result<(), HostError> {
        host::set_context(id, context)
    }

    /// The context set for connection `id`, if any.
    pub fn get_context(id: &str) -> Result<Option<String>, HostError> {
        host::get_context(id)
    }

    /// [`broadcast`] to the connections whose request path is exactly `path` (a room).
    pub fn broadcast_path(
        path: &str,
        message: &Message,
        except: Option<&str>,
    ) -> Result<u32, HostError> {
        let filter = ListFilter {
            route: None,
            path: Some(path.to_owned()),
        };
        host::broadcast(&filter, message, except)
    }
}

/// Writes to the gateway's log, tagged with tenant, route, plugin and connection.
pub mod log {
    use crate::bindings::wsgate::plugin::log::{Level, log};

    /// Logs at trace level.
    pub fn trace(message: &str) {
        log(Level::Trace, message)
    }
    /// Logs at debug level.
    pub fn debug(message: &str) {
        log(Level::Debug, message)
    }
    /// Logs at info level.
    pub fn info(message: &str) {
        log(Level::Info, message)
    }
    /// Logs at warn level.
    pub fn warn(message: &str) {
        log(Level::Warn, message)
    }
    /// Logs at error level.
    pub fn error(message: &str) {
        log(Level::Error, message)
    }
}

/// The string key-values given to this plugin under `config` in the gateway config.
pub mod config {
    use crate::bindings::wsgate::plugin::config as host;

    /// The value of `key`, if set.
    pub fn get(key: &str) -> Option<String> {
        host::get(key)
    }

    /// Every key-value, sorted by key.
    pub fn all() -> Vec<(String, String)> {
        host::get_all()
    }
}
