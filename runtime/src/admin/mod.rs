//! The admin listener: health now; the management API and metrics live here too.

use std::sync::Arc;

use axum::Router;
use axum::routing::get;

use crate::gateway::Gateway;

/// The admin router.
pub fn router(_gateway: Arc<Gateway>) -> Router {
    Router::new().route("/health", get(|| async { "OK" }))
}
