//! The web console's files at `/ui/`, shipped in the binary (`runtime/console/`), with
//! the headers that keep a page full of attacker-controlled text (user agents, headers,
//! messages, log lines) safe: a strict `Content-Security-Policy` (no inline script,
//! nothing from another origin, `connect-src` naming only this gateway's admin and
//! WebSocket listeners), no sniffing, no framing, no referrer.
//!
//! The pages hold no data and no credential: every call they make carries the key the
//! user signed in with, in the `Authorization` header (never a cookie, so there is no
//! CSRF surface).

use std::path::PathBuf;
use std::sync::OnceLock;

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::gateway::{Gateway, Snapshot};

/// The console's files: name, content type, embedded contents.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../../console/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("../../console/app.css"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_str!("../../console/favicon.svg"),
    ),
];

/// `WSGATE_CONSOLE_DIR`, read once: when set, the same four files are read from that
/// folder at each request instead, so the console can be worked on without rebuilding
/// the gateway. No other name is ever read from it.
fn override_dir() -> Option<&'static PathBuf> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| {
        std::env::var_os("WSGATE_CONSOLE_DIR")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    })
    .as_ref()
}

/// Answers a request under `/ui` (`rest` is the path after `/ui`). Every answer,
/// errors and the redirect included, carries the security headers.
pub async fn serve(
    gateway: &Gateway,
    method: &Method,
    headers: &HeaderMap,
    rest: &str,
) -> Response {
    let snapshot = gateway.snapshot();
    let response = answer(&snapshot, method, rest).await;
    secured(response, gateway, &snapshot, headers)
}

async fn answer(snapshot: &Snapshot, method: &Method, rest: &str) -> Response {
    if !snapshot.admin.console {
        return plain(
            StatusCode::NOT_FOUND,
            "the web console is turned off on this gateway ([admin] console = false)",
        );
    }
    if rest.is_empty() {
        // Relative asset URLs resolve under /ui/ only.
        return (StatusCode::PERMANENT_REDIRECT, [(header::LOCATION, "/ui/")]).into_response();
    }
    if method != Method::GET && method != Method::HEAD {
        let mut response = plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "the console's files are read with GET",
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let name = match rest {
        "/" => "index.html",
        other => other.trim_start_matches('/'),
    };
    let Some(&(name, content_type, embedded)) = ASSETS.iter().find(|(n, _, _)| *n == name) else {
        return plain(StatusCode::NOT_FOUND, "no such file in the console");
    };
    let body = match override_dir() {
        None => embedded.to_owned(),
        // Off the reactor: a file read blocks.
        Some(dir) => match tokio::task::spawn_blocking({
            let path = dir.join(name);
            move || std::fs::read_to_string(path)
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
        {
            Ok(text) => text,
            Err(err) => {
                tracing::warn!(file = %dir.join(name).display(), error = %err, "WSGATE_CONSOLE_DIR: cannot read the console file");
                return plain(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the console file named by WSGATE_CONSOLE_DIR cannot be read (see the log)",
                );
            }
        },
    };
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text,
    )
        .into_response()
}

/// Adds the console's security headers to `response`.
fn secured(
    mut response: Response,
    gateway: &Gateway,
    snapshot: &Snapshot,
    headers: &HeaderMap,
) -> Response {
    let origin = super::stats::websocket_origin(gateway, snapshot, headers);
    let policy = content_security_policy(origin.as_deref());
    let set = response.headers_mut();
    // The policy depends on the Host the browser used: no cache may keep one page
    // for another (the files are small and served from memory).
    set.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(policy) = HeaderValue::from_str(&policy) {
        set.insert(header::CONTENT_SECURITY_POLICY, policy);
    }
    set.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    set.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    set.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    set.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    set.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    response
}

/// The console's policy: everything from this origin only, no inline script or style,
/// no plugins, no framing, no forms, and connections to this admin listener and to the
/// WebSocket listener at `websocket` (Try-it) only.
pub fn content_security_policy(websocket: Option<&str>) -> String {
    let connect = match websocket {
        Some(origin) => format!("'self' {origin}"),
        None => "'self'".to_owned(),
    };
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
         font-src 'none'; object-src 'none'; connect-src {connect}; \
         frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_allows_only_this_gateway() {
        let policy = content_security_policy(Some("ws://gw.example:8080"));
        assert!(
            policy.contains("connect-src 'self' ws://gw.example:8080;"),
            "{policy}"
        );
        assert!(
            policy.starts_with("default-src 'self'; script-src 'self';"),
            "{policy}"
        );
        assert!(!policy.contains("unsafe"), "{policy}");
        assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    }

    #[test]
    fn every_asset_is_embedded_and_the_page_loads_only_them() {
        for (name, _, text) in ASSETS {
            assert!(!text.is_empty(), "{name} is empty");
        }
        let index = ASSETS[0].2;
        assert!(!index.contains("<script>"), "no inline script");
        assert!(!index.contains("style="), "no inline style");
        assert!(
            !index.contains("http://") && !index.contains("https://"),
            "nothing from elsewhere"
        );
    }
}
