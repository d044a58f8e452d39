//! A backend's response body as the guest reads it: cut at `max_outbound_body_bytes`
//! and at the call's deadline, and holding the call's place under
//! `max_outbound_requests` until it is read or dropped.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::sync::OwnedSemaphorePermit;
use wasmtime_wasi_http::Error;

/// Counts a store's response bodies not yet dropped: an instance holding one is not
/// pooled, since its next event would inherit the backend's connection and our permit.
#[derive(Debug, Default)]
pub struct OpenBodies(AtomicUsize);

impl OpenBodies {
    /// Whether no body is open.
    pub fn none(&self) -> bool {
        self.0.load(Ordering::Acquire) == 0
    }
}

/// A capped, timed response body.
pub struct Capped {
    inner: Incoming,
    seen: u64,
    max: u64,
    deadline: Pin<Box<tokio::time::Sleep>>,
    open: Arc<OpenBodies>,
    _permit: OwnedSemaphorePermit,
}

impl Capped {
    /// Wraps `inner`, which may bring at most `max` bytes until `deadline`.
    pub fn new(
        inner: Incoming,
        max: u64,
        deadline: tokio::time::Instant,
        open: Arc<OpenBodies>,
        permit: OwnedSemaphorePermit,
    ) -> Capped {
        open.0.fetch_add(1, Ordering::AcqRel);
        Capped {
            inner,
            seen: 0,
            max,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            open,
            _permit: permit,
        }
    }
}

impl Drop for Capped {
    fn drop(&mut self) {
        self.open.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Body for Capped {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.seen += data.len() as u64;
                    if this.seen > this.max {
                        return Poll::Ready(Some(Err(Error::HttpResponseBodySize(Some(
                            this.seen,
                        )))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(Error::Hyper(err)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Error::ConnectionReadTimeout))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
