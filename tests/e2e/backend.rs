//! A real HTTP backend for the tests: a server on a free loopback port that records
//! every request (with the TCP connection it came on) and answers as the test says,
//! now or once the test opens a gate.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use tokio::sync::{Notify, Semaphore};

use crate::harness::WAIT;

/// A request the backend received.
#[derive(Debug, Clone)]
pub struct Seen {
    /// `GET`, `POST`, …
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// Headers, names lower-case.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// The client's address: one per TCP connection.
    pub peer: SocketAddr,
}

impl Seen {
    /// The first header called `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// How the backend answers one request.
#[derive(Debug, Clone, Default)]
pub struct Reply {
    /// Status; 200 if 0.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// Wait this long before answering (a slow backend).
    pub delay: Duration,
    /// Wait for [`Backend::release`] before answering (a backend that hangs until told).
    pub hold: bool,
    /// Send the body chunked, without a content-length.
    pub chunked: bool,
}

impl Reply {
    /// 200 with `body`.
    pub fn ok(body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            body: body.into(),
            ..Reply::default()
        }
    }

    /// `status` with `body`.
    pub fn status(status: u16, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status,
            body: body.into(),
            ..Reply::default()
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }
}

type Answer = dyn Fn(&Seen) -> Reply + Send + Sync;

struct Shared {
    answer: Box<Answer>,
    seen: Mutex<Vec<Seen>>,
    arrived: Notify,
    gate: Semaphore,
}

/// A running backend; stops when dropped.
pub struct Backend {
    /// Where it listens.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
        // Held requests end with the server.
        self.shared.gate.close();
    }
}

impl Backend {
    /// Starts a backend answering each request with `answer(request)`.
    pub async fn start(answer: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Backend {
        let shared = Arc::new(Shared {
            answer: Box::new(answer),
            seen: Mutex::default(),
            arrived: Notify::new(),
            gate: Semaphore::new(0),
        });
        let app = Router::new()
            .fallback(handle)
            // Above axum's 2 MiB default: tests send bodies of several host chunks.
            .layer(axum::extract::DefaultBodyLimit::max(8 << 20))
            .with_state(shared.clone())
            .into_make_service_with_connect_info::<SocketAddr>();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Backend { addr, shared, task }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `http://127.0.0.1:PORT`, the origin to grant.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests have arrived; returns them all.
    pub async fn wait_for(&self, n: usize) -> Vec<Seen> {
        tokio::time::timeout(WAIT, async {
            loop {
                let arrived = self.shared.arrived.notified();
                let seen = self.seen();
                if seen.len() >= n {
                    return seen;
                }
                arrived.await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the backend saw {} of {n} requests", self.seen().len()))
    }

    /// Lets `n` held requests answer.
    pub fn release(&self, n: usize) {
        self.shared.gate.add_permits(n);
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let seen = Seen {
        method: method.to_string(),
        uri: uri.to_string(),
        headers: headers
            .iter()
            .map(|(n, v)| {
                (
                    n.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
        peer,
    };
    let reply = (shared.answer)(&seen);
    shared.seen.lock().unwrap().push(seen);
    shared.arrived.notify_waiters();
    if reply.hold
        && let Ok(permit) = shared.gate.acquire().await
    {
        permit.forget();
    }
    tokio::time::sleep(reply.delay).await;
    let status = StatusCode::from_u16(if reply.status == 0 { 200 } else { reply.status }).unwrap();
    let mut response = if reply.chunked {
        let chunks: Vec<Result<Bytes, std::io::Error>> = reply
            .body
            .chunks(16 * 1024)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let stream = futures_util::stream::iter(chunks);
        (status, axum::body::Body::from_stream(stream)).into_response()
    } else {
        (status, reply.body).into_response()
    };
    for (name, value) in reply.headers {
        response.headers_mut().append(
            axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    response
}
