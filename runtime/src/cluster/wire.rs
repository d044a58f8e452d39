//! What nodes say to each other through their Redis inboxes, version 1.
//!
//! Every frame is JSON with `"v": 1`. A node reads the version first and refuses what it
//! cannot read: a request of another version is answered `refused` (the caller answers
//! 503 with the reason), a reply of another version is logged and dropped (the caller
//! times out, 503). So a rolling upgrade that changes the format is defined: mixed
//! nodes fail those calls loudly, never misread them.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use crate::registry::{ConnectionInfo, ConnectionMeta, Pairs, Payload};

/// The format version this node writes and reads.
pub const VERSION: u32 = 1;

/// A frame on a node's inbox channel.
#[derive(Debug, Serialize, Deserialize)]
pub struct Frame {
    /// The format version.
    pub v: u32,
    /// What it carries.
    #[serde(flatten)]
    pub body: Body,
}

/// A request for the inbox's node, or a reply to one of its requests.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Body {
    /// Do `op` on a connection of `tenant` held by the receiving node.
    Request {
        /// Chosen by the caller; the reply carries it back.
        id: u64,
        /// The caller's node id: where the reply goes.
        from: String,
        /// The tenant whose registry the op runs in: another tenant's id is gone.
        tenant: String,
        /// What to do.
        op: Op,
    },
    /// The answer to request `re`.
    Reply {
        /// The request's id.
        re: u64,
        /// What happened.
        outcome: Outcome,
    },
}

/// An operation on the receiving node's connections.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Queue a message.
    Send {
        /// The connection.
        conn: String,
        /// The message.
        payload: WirePayload,
    },
    /// Ask the connection to close.
    Close {
        /// The connection.
        conn: String,
        /// The close code.
        code: u16,
        /// The close reason.
        reason: String,
    },
    /// Describe the connection.
    Info {
        /// The connection.
        conn: String,
    },
    /// Queue a message for every matching connection of the node.
    Broadcast {
        /// Only this route template.
        route: Option<String>,
        /// Only this exact path.
        path: Option<String>,
        /// The message.
        payload: WirePayload,
        /// Skip this connection.
        except: Option<String>,
    },
    /// Close every connection of the tenant on the node.
    CloseAll {
        /// The close code.
        code: u16,
        /// The close reason.
        reason: String,
    },
}

/// What an op did.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Done (queued, or close asked).
    Done,
    /// No such open connection in the tenant on that node.
    Gone,
    /// The connection's outbound queue is full.
    QueueFull,
    /// The connection, described.
    Info {
        /// Its facts and activity (boxed: the other outcomes are a few words).
        info: Box<WireInfo>,
    },
    /// A broadcast's counts on that node.
    Broadcast {
        /// Queued.
        queued: u32,
        /// Skipped for a full queue.
        full: u32,
    },
    /// How many connections will close.
    Closed {
        /// The count.
        count: usize,
    },
    /// The node could not read or run the request.
    Refused {
        /// Why, for the caller's 503.
        reason: String,
    },
}

/// A message on the wire: text as it is, binary in base64.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum WirePayload {
    /// A text frame.
    Text(String),
    /// A binary frame, base64.
    Binary(String),
}

impl From<&Payload> for WirePayload {
    fn from(payload: &Payload) -> Self {
        match payload {
            Payload::Text(text) => WirePayload::Text(text.as_str().to_owned()),
            Payload::Binary(bytes) => WirePayload::Binary(STANDARD.encode(bytes)),
        }
    }
}

impl WirePayload {
    /// The payload, or why it cannot be one.
    pub fn into_payload(self) -> Result<Payload, String> {
        match self {
            WirePayload::Text(text) => Ok(Payload::text(text)),
            WirePayload::Binary(data) => STANDARD
                .decode(data)
                .map(|bytes| Payload::Binary(bytes.into()))
                .map_err(|e| format!("binary payload is not base64: {e}")),
        }
    }
}

/// A connection's description on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireInfo {
    id: String,
    tenant: String,
    route: String,
    path: String,
    uri: String,
    headers: Vec<(String, String)>,
    path_params: Vec<(String, String)>,
    query_params: Vec<(String, String)>,
    source_ip: String,
    user_agent: Option<String>,
    requested_subprotocols: Vec<String>,
    subprotocol: Option<String>,
    connected_at: u64,
    context: Option<String>,
    last_active_at: u64,
    closing: bool,
}

impl From<&ConnectionInfo> for WireInfo {
    fn from(info: &ConnectionInfo) -> Self {
        let meta = &info.meta;
        WireInfo {
            id: meta.id.to_string(),
            tenant: meta.tenant.to_string(),
            route: meta.route.to_string(),
            path: meta.path.clone(),
            uri: meta.uri.clone(),
            headers: meta.headers.to_vec(),
            path_params: meta.path_params.to_vec(),
            query_params: meta.query_params.to_vec(),
            source_ip: meta.source_ip.clone(),
            user_agent: meta.user_agent.clone(),
            requested_subprotocols: meta.requested_subprotocols.clone(),
            subprotocol: meta.subprotocol.clone(),
            connected_at: meta.connected_at,
            context: meta.context.as_deref().map(str::to_owned),
            last_active_at: info.last_active_at,
            closing: info.closing,
        }
    }
}

impl From<WireInfo> for ConnectionInfo {
    fn from(wire: WireInfo) -> Self {
        ConnectionInfo {
            meta: ConnectionMeta {
                id: wire.id.into(),
                tenant: wire.tenant.into(),
                route: wire.route.into(),
                path: wire.path,
                uri: wire.uri,
                headers: wire.headers.into_iter().collect::<Pairs>(),
                path_params: wire.path_params.into_iter().collect::<Pairs>(),
                query_params: wire.query_params.into_iter().collect::<Pairs>(),
                source_ip: wire.source_ip,
                user_agent: wire.user_agent,
                requested_subprotocols: wire.requested_subprotocols,
                subprotocol: wire.subprotocol,
                connected_at: wire.connected_at,
                context: wire.context.map(String::into_boxed_str),
            },
            last_active_at: wire.last_active_at,
            closing: wire.closing,
        }
    }
}

/// Reads a frame, or says why not: a version this node cannot read (with the request
/// id and sender when the frame has them, so the request can be refused), or garbage.
pub fn decode(bytes: &[u8]) -> Result<Frame, Unreadable> {
    #[derive(Deserialize)]
    struct Head {
        v: Option<u32>,
        id: Option<u64>,
        from: Option<String>,
    }
    let head: Head = serde_json::from_slice(bytes)
        .map_err(|e| Unreadable::Garbage(format!("not a JSON object: {e}")))?;
    match head.v {
        Some(VERSION) => serde_json::from_slice(bytes).map_err(|e| {
            Unreadable::Garbage(format!(
                "a version {VERSION} frame that does not parse: {e}"
            ))
        }),
        v => Err(Unreadable::Version {
            version: v,
            id: head.id,
            from: head.from,
        }),
    }
}

/// Why a frame could not be read.
#[derive(Debug)]
pub enum Unreadable {
    /// Written in a format version this node does not speak.
    Version {
        /// The frame's version, if it had one.
        version: Option<u32>,
        /// Its request id, if it was a request.
        id: Option<u64>,
        /// Its sender, if it was a request.
        from: Option<String>,
    },
    /// Not a frame at all.
    Garbage(String),
}

/// A frame as bytes.
pub fn encode(body: Body) -> Vec<u8> {
    serde_json::to_vec(&Frame { v: VERSION, body }).expect("frames serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_other_versions_are_told_apart() {
        let bytes = encode(Body::Request {
            id: 7,
            from: "a".into(),
            tenant: "t".into(),
            op: Op::Send {
                conn: "x.b".into(),
                payload: WirePayload::from(&Payload::Binary(vec![0, 255].into())),
            },
        });
        let frame = decode(&bytes).unwrap();
        assert_eq!(frame.v, VERSION);
        let Body::Request {
            id,
            op: Op::Send { payload, .. },
            ..
        } = frame.body
        else {
            panic!("a send request");
        };
        assert_eq!(id, 7);
        assert_eq!(
            payload.into_payload().unwrap(),
            Payload::Binary(vec![0, 255].into())
        );

        let future =
            br#"{"v":2,"kind":"request","id":9,"from":"b","tenant":"t","op":{"op":"teleport"}}"#;
        match decode(future) {
            Err(Unreadable::Version {
                version: Some(2),
                id: Some(9),
                from: Some(from),
            }) => {
                assert_eq!(from, "b")
            }
            other => panic!("expected a version refusal, got {other:?}"),
        }
        assert!(matches!(decode(b"nonsense"), Err(Unreadable::Garbage(_))));
        assert!(matches!(
            decode(br#"{"v":1,"kind":"request"}"#),
            Err(Unreadable::Garbage(_))
        ));
    }
}
