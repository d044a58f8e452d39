//! Testing plugin, not an example: makes outbound HTTP calls on command, so the host's
//! tests can drive `wasi:http` from inside a real guest. Every text message is one JSON
//! command; the reply is one JSON text.
//!
//! | command | reply |
//! |---|---|
//! | `{"op":"http","method":"GET","url":"http://…","headers":[["n","v"]],"body":"text"}` | `{"status":200,"body":"…","headers":[["n","v"],…]}` or `{"error":"<variant>","detail":"<display>"}` |
//! | `{"op":"raw","scheme":"http","authority":"user@127.0.0.1:1","path":"/x","host_header":"evil:80"}` | `{"status":N}`, `{"error":"<ErrorCode debug>"}` or `{"header_error":"<HeaderError debug>"}` |
//! | `{"op":"many","url":"http://…","count":N}` | `{"ok":k,"errors":["<variant>: <display>",…]}` |
//! | `{"op":"spin","ms":N}` | `{"spun":N}` after burning N ms of CPU |
//! | `{"op":"direct","method":"GET","url":"…","headers":[["n","v"]],"body":"text"}` | `{"status":N,"body":"…"}` or `{"error":"<variant>","detail":"…"}` |
//!
//! `http` goes through `wsgate_sdk::http` (`method` defaults to GET; `headers` and `body`
//! are optional, and `"repeat":N` sends the body N times over, for bodies larger than a
//! message; `<variant>` is the `Error` variant name, e.g. `Denied`). `raw` uses the
//! `wasi:http` bindings directly to send what the SDK refuses to build: a GET with exactly
//! that `authority` (may hold userinfo; absent = none), `scheme` (default `http`) and
//! `path` (default `/`), and, if `host_header` is given, a `host` header appended first
//! (when the host refuses it, nothing is sent). In `many`, a non-2xx answer counts as an
//! error `status N`. Anything else, JSON or not, answers `{"error":"bad command"}`.
//!
//! `direct` calls `wsgate:plugin/http-client.send` itself with exactly that method, URL
//! and headers (`<variant>` is the WIT error case, e.g. `invalid-header`), bypassing the
//! SDK's checks; a header `["n","v",N]` has the value `v` repeated N times. A repeat
//! (here or `http`'s) past [`MAX_REPEATED`] bytes is a bad command.
//!
//! With the plugin config `via = "wasi"`, every SDK request (`http`, `many` and the
//! connect check) goes through `wasi:http` instead of `http-client`.
//!
//! On connect, `?check=<url>` GETs the URL: 2xx accepts, another status rejects with 403,
//! a failed call rejects with 502 and `<variant>: <display>` as the body.

use serde_json::{Value, json};
use wsgate_sdk::http::{Error, Method, Request};
use wsgate_sdk::{ConnectResponse, ConnectionInfo, Message, MessageEvent, Plugin};

/// The fetch handler.
pub struct Fetch;

impl Plugin for Fetch {
    fn on_connect(info: ConnectionInfo) -> ConnectResponse {
        let Some(url) = info.query_param("check") else {
            return ConnectResponse::accept();
        };
        match new_request(Method::Get, url).send() {
            Ok(response) if response.is_success() => ConnectResponse::accept(),
            Ok(response) => {
                ConnectResponse::reject(403, format!("check answered {}", response.status))
            }
            Err(error) => ConnectResponse::reject(502, describe(&error)),
        }
    }

    fn on_message(event: MessageEvent) -> Option<Message> {
        let reply = event
            .message
            .as_text()
            .and_then(|text| serde_json::from_str::<Value>(text).ok())
            .and_then(|command| run(&command))
            .unwrap_or_else(|| json!({"error": "bad command"}));
        Some(Message::text(reply.to_string()))
    }
}

/// `None` for a command this plugin does not know.
fn run(command: &Value) -> Option<Value> {
    match command.get("op")?.as_str()? {
        "http" => http_op(command),
        "raw" => Some(raw::get(
            command
                .get("scheme")
                .and_then(Value::as_str)
                .unwrap_or("http"),
            command.get("authority").and_then(Value::as_str),
            command.get("path").and_then(Value::as_str).unwrap_or("/"),
            command.get("host_header").and_then(Value::as_str),
        )),
        "many" => {
            let url = command.get("url")?.as_str()?;
            let count = command.get("count")?.as_u64()?;
            let mut ok = 0;
            let mut errors = Vec::new();
            for _ in 0..count {
                match new_request(Method::Get, url).send() {
                    Ok(response) if response.is_success() => ok += 1,
                    Ok(response) => errors.push(format!("status {}", response.status)),
                    Err(error) => errors.push(describe(&error)),
                }
            }
            Some(json!({"ok": ok, "errors": errors}))
        }
        "direct" => direct(command),
        "spin" => {
            let ms = command.get("ms")?.as_u64()?;
            spin(ms);
            Some(json!({"spun": ms}))
        }
        _ => None,
    }
}

/// The most bytes a `repeat` makes: above the tests' largest body (3 MiB), and far
/// below what would run the guest out of memory.
const MAX_REPEATED: usize = 4 << 20;

/// `text` `times` over, or `None` past [`MAX_REPEATED`] bytes.
fn repeated(text: &str, times: u64) -> Option<String> {
    let times = usize::try_from(times).ok()?;
    (text.len().checked_mul(times)? <= MAX_REPEATED).then(|| text.repeat(times))
}

/// A request through the transport the plugin config names.
fn new_request(method: Method, url: &str) -> Request {
    let request = Request::new(method, url);
    match wsgate_sdk::config::get("via").as_deref() {
        Some("wasi") => request.via_wasi_http(),
        _ => request,
    }
}

/// `http-client.send` with the command's parts as they are.
fn direct(command: &Value) -> Option<Value> {
    use wsgate_sdk::bindings::wsgate::plugin::http_client::{self, Error as E};
    let mut headers = Vec::new();
    for pair in command
        .get("headers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = pair.get(0)?.as_str()?.to_owned();
        let repeat = pair.get(2).and_then(Value::as_u64).unwrap_or(1);
        let value = repeated(pair.get(1)?.as_str()?, repeat)?;
        headers.push((name, value.into_bytes()));
    }
    let request = http_client::Request {
        method: command.get("method")?.as_str()?.to_owned(),
        url: command.get("url")?.as_str()?.to_owned(),
        headers,
        body: command
            .get("body")
            .and_then(Value::as_str)
            .map(|b| b.as_bytes().to_vec()),
    };
    Some(match http_client::send(&request) {
        Ok(response) => json!({
            "status": response.status,
            "body": String::from_utf8_lossy(&response.body),
        }),
        Err(error) => {
            let (variant, detail) = match error {
                E::InvalidUrl(why) => ("invalid-url", why),
                E::InvalidHeader(why) => ("invalid-header", why),
                E::Denied => ("denied", String::new()),
                E::Timeout => ("timeout", String::new()),
                E::Unreachable(why) => ("unreachable", why),
                E::TooLarge => ("too-large", String::new()),
                E::Failed(why) => ("failed", why),
            };
            json!({"error": variant, "detail": detail})
        }
    })
}

fn http_op(command: &Value) -> Option<Value> {
    let method = match command
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or("GET")
    {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "PATCH" => Method::Patch,
        "HEAD" => Method::Head,
        "OPTIONS" => Method::Options,
        _ => return None,
    };
    let mut request = new_request(method, command.get("url")?.as_str()?);
    for pair in command
        .get("headers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = pair.get(0)?.as_str()?;
        let value = pair.get(1)?.as_str()?;
        request = request.header(name, value);
    }
    if let Some(body) = command.get("body").and_then(Value::as_str) {
        let repeat = command.get("repeat").and_then(Value::as_u64).unwrap_or(1);
        request = request.body(repeated(body, repeat)?);
    }
    Some(match request.send() {
        Ok(response) => {
            let headers: Vec<[String; 2]> = response
                .headers
                .iter()
                .map(|(name, value)| [name.clone(), String::from_utf8_lossy(value).into_owned()])
                .collect();
            json!({
                "status": response.status,
                "body": String::from_utf8_lossy(&response.body),
                "headers": headers,
            })
        }
        Err(error) => json!({"error": variant(&error), "detail": error.to_string()}),
    })
}

fn variant(error: &Error) -> &'static str {
    match error {
        Error::InvalidUrl(_) => "InvalidUrl",
        Error::InvalidHeader(_) => "InvalidHeader",
        Error::Denied => "Denied",
        Error::Timeout => "Timeout",
        Error::Unreachable(_) => "Unreachable",
        Error::TooLarge => "TooLarge",
        Error::Failed(_) => "Failed",
    }
}

fn describe(error: &Error) -> String {
    format!("{}: {error}", variant(error))
}

/// Burns `ms` milliseconds of wall clock in pure computation, so tests can show that
/// compute still counts against the time limit when waits do not. The clock (a WASI
/// call that never waits) is read only every few thousand rounds.
fn spin(ms: u64) {
    let start = std::time::Instant::now();
    let limit = std::time::Duration::from_millis(ms);
    let mut x = 0u64;
    while start.elapsed() < limit {
        for i in 0..4096u64 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
        }
    }
    std::hint::black_box(x);
}

/// Requests built on the raw `wasi:http` bindings, bypassing every check of the SDK.
mod raw {
    use serde_json::{Value, json};
    use wasip2::http::outgoing_handler;
    use wasip2::http::types::{
        Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, Scheme,
    };
    use wasip2::io::streams::StreamError;

    /// A GET exactly as given; see the crate doc for the replies.
    pub fn get(scheme: &str, authority: Option<&str>, path: &str, host: Option<&str>) -> Value {
        let fields = Fields::new();
        if let Some(host) = host
            && let Err(error) = fields.append("host", host.as_bytes())
        {
            return json!({"header_error": format!("{error:?}")});
        }
        let request = OutgoingRequest::new(fields);
        let scheme = match scheme {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            other => Scheme::Other(other.to_owned()),
        };
        let refused = |what: &str| json!({"error": format!("{what} refused by the host")});
        if request.set_method(&Method::Get).is_err() {
            return refused("method");
        }
        if request.set_scheme(Some(&scheme)).is_err() {
            return refused("scheme");
        }
        if request.set_authority(authority).is_err() {
            return refused("authority");
        }
        if request.set_path_with_query(Some(path)).is_err() {
            return refused("path");
        }
        let Ok(body) = request.body() else {
            return refused("body");
        };
        // Hand the request over, then finish its (empty) body.
        let future = match outgoing_handler::handle(request, None) {
            Ok(future) => future,
            Err(code) => return json!({"error": format!("{code:?}")}),
        };
        if let Err(code) = OutgoingBody::finish(body, None) {
            return json!({"error": format!("{code:?}")});
        }
        let pollable = future.subscribe();
        let answer = loop {
            pollable.block();
            if let Some(answer) = future.get() {
                break answer;
            }
        };
        drop(pollable);
        let response = match answer {
            Ok(Ok(response)) => response,
            Ok(Err(code)) => return json!({"error": format!("{code:?}")}),
            Err(()) => return json!({"error": "response taken twice"}),
        };
        let status = response.status();
        // Read the body to its end so the connection is returned in a clean state.
        if let Ok(incoming) = response.consume() {
            if let Ok(stream) = incoming.stream() {
                let pollable = stream.subscribe();
                loop {
                    pollable.block();
                    match stream.read(64 * 1024) {
                        Ok(_) => {}
                        Err(StreamError::Closed) => break,
                        Err(StreamError::LastOperationFailed(error)) => {
                            return json!({"status": status, "body_error": error.to_debug_string()});
                        }
                    }
                }
            }
            drop(IncomingBody::finish(incoming));
        }
        json!({"status": status})
    }
}

wsgate_sdk::export!(Fetch);
