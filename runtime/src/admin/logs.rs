//! `GET /{tenant}/@logs`: the tenant's execution log (`execlog`), read a page at a time
//! as JSON, or followed as server-sent events with `?follow=1`.
//!
//! A page is `{"entries": […], "next": SEQ, "dropped": N}`: the entries after `since`,
//! oldest first, at most `limit`; `next` is the `since` of the next read; `dropped`
//! counts entries after `since` that the ring no longer holds.
//!
//! Following answers `text/event-stream`: one event per entry (`id:` its sequence
//! number, `data:` the entry as JSON on one line), from after `since` or the
//! `Last-Event-ID` a reconnecting client sends; a `dropped` event first when entries
//! after it are gone; a comment every [`KEEP_ALIVE`] so proxies and clients see the
//! stream alive; and an `overflow` event before the end when the follower read too
//! slowly and was dropped (it may follow again from the last id it got).

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde_json::json;

use super::Query;
use super::error::ApiError;
use crate::execlog::{ExecutionLog, Follow, Followed, MAX_PAGE};

/// How long a followed stream may be silent before a comment keeps it alive.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Entries a page has when the request gives no `limit`.
const DEFAULT_PAGE: usize = 100;

/// Answers a read of `log` (the calling tenant's) with the request's `query` and
/// `headers`.
pub fn get(
    log: &std::sync::Arc<ExecutionLog>,
    query: &Query,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let limit = match query.get("limit") {
        None => DEFAULT_PAGE,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "limit {text:?} must be a number from 1 to {MAX_PAGE}"
                )));
            }
        },
    };
    let follow = match query.get("follow") {
        None | Some("0" | "false") => false,
        Some("1" | "true") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "follow={other:?}: use follow=1 to stream new entries, or leave it out"
            )));
        }
    };
    if query.get("tail").is_some() {
        if follow || query.get("since").is_some() || query.get("limit").is_some() {
            return Err(ApiError::BadRequest(
                "tail=N reads the newest N entries: give it without since, limit or follow (then read on with since=next)".into(),
            ));
        }
        let tail = query.get("tail").unwrap_or_default();
        let n = match tail.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "tail {tail:?} must be a number from 1 to {MAX_PAGE}"
                )));
            }
        };
        return Ok(axum::Json(log.tail(n)).into_response());
    }
    let since = sequence(query.get("since"), "since")?;
    if !follow {
        let page = log.read(since, limit);
        return Ok(axum::Json(page).into_response());
    }
    // A client that reconnects sends the last id it got; it wins over the URL's since.
    let last_event = headers
        .get("last-event-id")
        .map(|v| v.to_str().unwrap_or("not text"));
    let since = match last_event {
        Some(id) => sequence(Some(id), "Last-Event-ID")?,
        None => since,
    };
    let follow = log
        .follow(since)
        .map_err(|busy| ApiError::LimitExceeded(busy.to_string()))?;
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(events(follow, since, KEEP_ALIVE)),
    )
        .into_response())
}

/// A sequence number given as `name`, 0 when absent.
fn sequence(text: Option<&str>, name: &str) -> Result<u64, ApiError> {
    match text {
        None => Ok(0),
        Some(text) => text.trim().parse().map_err(|_| {
            ApiError::BadRequest(format!(
                "{name} {text:?} must be a sequence number (0 or more), such as a `next` or an event id"
            ))
        }),
    }
}

/// Where a followed stream stands.
enum State {
    /// Not yet said: following began after `since`, `dropped` entries are gone.
    Start { since: u64 },
    /// Streaming entries.
    Entries,
    /// Ended.
    Done,
}

/// The server-sent events of `follow`, begun after `since`, with a comment after every
/// `keep_alive` of silence.
fn events(
    follow: Follow,
    since: u64,
    keep_alive: Duration,
) -> impl Stream<Item = Result<Bytes, Infallible>> {
    futures_util::stream::unfold(
        (follow, State::Start { since }),
        move |(mut follow, state)| async move {
            let text = match state {
                State::Done => return None,
                State::Start { since } => {
                    let mut text = format!(": following the execution log after {since}\n\n");
                    if follow.dropped > 0 {
                        let data = json!({ "dropped": follow.dropped });
                        text.push_str(&format!("event: dropped\ndata: {data}\n\n"));
                    }
                    return Some((Ok(Bytes::from(text)), (follow, State::Entries)));
                }
                State::Entries => match tokio::time::timeout(keep_alive, follow.next()).await {
                    Err(_) => ": keep-alive\n\n".to_owned(),
                    Ok(Followed::Entry(entry)) => {
                        let data = serde_json::to_string(&*entry).unwrap_or_default();
                        format!("id: {}\ndata: {data}\n\n", entry.seq)
                    }
                    Ok(Followed::Overflowed) => {
                        let data = json!({
                            "message": "this follower read more slowly than the log grew and was dropped; follow again from the last id you got"
                        });
                        let text = format!("event: overflow\ndata: {data}\n\n");
                        return Some((Ok(Bytes::from(text)), (follow, State::Done)));
                    }
                    Ok(Followed::Stopped) => return None,
                },
            };
            Some((Ok(Bytes::from(text)), (follow, State::Entries)))
        },
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures_util::StreamExt;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::execlog::{FOLLOW_QUEUE, Level};

    fn text(chunk: Option<Result<Bytes, Infallible>>) -> String {
        let chunk = chunk.expect("the stream ended").unwrap();
        String::from_utf8(chunk.to_vec()).unwrap()
    }

    /// The stream says where it starts and what is gone, sends each entry with its id,
    /// keeps a silent stream alive, and ends when the gateway stops; with tokio's clock
    /// paused, the keep-alive interval takes no time.
    #[tokio::test(start_paused = true)]
    async fn a_follower_gets_events_and_keep_alives() {
        let stop = CancellationToken::new();
        let log = Arc::new(ExecutionLog::new(2, 1 << 20, stop.clone()));
        for message in ["one", "two", "three"] {
            log.log(Level::Info, "p", "/r", "c", message);
        }
        let stream = events(log.follow(0).unwrap(), 0, KEEP_ALIVE);
        let mut stream = std::pin::pin!(stream);
        let start = text(stream.next().await);
        assert!(start.starts_with(": following the execution log after 0\n\n"));
        assert!(
            start.ends_with("event: dropped\ndata: {\"dropped\":1}\n\n"),
            "{start}"
        );
        let two = text(stream.next().await);
        assert!(two.starts_with("id: 2\ndata: {"), "{two}");
        assert!(
            two.contains("\"message\":\"two\"") && two.ends_with("}\n\n"),
            "{two}"
        );
        assert!(text(stream.next().await).starts_with("id: 3\n"));
        let before = tokio::time::Instant::now();
        assert_eq!(text(stream.next().await), ": keep-alive\n\n");
        assert_eq!(before.elapsed(), KEEP_ALIVE);
        log.log(Level::Info, "p", "/r", "c", "four");
        assert!(text(stream.next().await).starts_with("id: 4\n"));
        stop.cancel();
        assert!(stream.next().await.is_none(), "the stream ends at shutdown");
    }

    /// A follower that does not read while its queue fills is told why, then ended.
    #[tokio::test]
    async fn a_slow_follower_hears_why_it_ends() {
        let log = Arc::new(ExecutionLog::new(
            10_000,
            64 << 20,
            CancellationToken::new(),
        ));
        let stream = events(log.follow(0).unwrap(), 0, KEEP_ALIVE);
        for _ in 0..=FOLLOW_QUEUE {
            log.log(Level::Info, "p", "/r", "c", "x");
        }
        assert_eq!(log.followers(), 0);
        let chunks: Vec<String> = stream.map(|c| text(Some(c))).collect().await;
        assert_eq!(chunks.len(), 1 + FOLLOW_QUEUE + 1);
        assert!(chunks.last().unwrap().starts_with("event: overflow\n"));
    }

    /// Bad parameters are refused with what to send instead; a page is capped.
    #[test]
    fn parameters_are_checked() {
        let log = Arc::new(ExecutionLog::new(10, 1 << 20, CancellationToken::new()));
        let headers = HeaderMap::new();
        for query in ["limit=0", "limit=1001", "since=-1", "follow=yes"] {
            let refused = get(&log, &Query::parse(Some(query)), &headers).unwrap_err();
            assert!(matches!(refused, ApiError::BadRequest(_)), "{query}");
        }
        let mut headers = HeaderMap::new();
        headers.insert("last-event-id", "x".parse().unwrap());
        let refused = get(&log, &Query::parse(Some("follow=1")), &headers).unwrap_err();
        assert!(refused.to_string().contains("Last-Event-ID"), "{refused}");
        let page = get(
            &log,
            &Query::parse(Some("since=0&limit=1000")),
            &HeaderMap::new(),
        );
        assert_eq!(page.unwrap().status(), StatusCode::OK);
    }
}
