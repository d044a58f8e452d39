//! Management API errors, rendered as the API that was called renders them: AWS's
//! (`x-amzn-ErrorType` header, `{"message": …}` body, so SDKs raise `GoneException` and
//! friends by name) or Yandex Cloud's (`{"code", "message", "details"}` with gRPC codes).

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// What went wrong with a management request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// The connection does not exist in the caller's tenant (or is closing).
    #[error("{0}")]
    Gone(String),
    /// Missing, wrong or foreign credentials.
    #[error("{0}")]
    Forbidden(String),
    /// The body is larger than the tenant's max message size.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The tenant's request rate, or the client's outbound queue, is exhausted.
    #[error("{0}")]
    LimitExceeded(String),
    /// A limit that frees up at a known time: answered 429 `LimitExceededException`
    /// with `Retry-After`, so clients (AWS SDKs among them) back off for that long.
    #[error("{message}")]
    Throttled {
        /// What is limited and what to do.
        message: String,
        /// Seconds until a retry can succeed (at least 1).
        retry_after_secs: u64,
    },
    /// The request is malformed (bad JSON, base64, parameter).
    #[error("{0}")]
    BadRequest(String),
    /// No such path.
    #[error("{0}")]
    NotFound(String),
    /// The path exists but not with this method.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// In a cluster, the node holding the connection or Redis did not answer in time;
    /// nothing was done (503, so a retry is safe).
    #[error("{0}")]
    Unavailable(String),
}

impl From<crate::registry::Unavailable> for ApiError {
    fn from(err: crate::registry::Unavailable) -> Self {
        ApiError::Unavailable(err.0)
    }
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::LimitExceeded(_) | ApiError::Throttled { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn aws_type(&self) -> &'static str {
        match self {
            ApiError::Gone(_) => "GoneException",
            ApiError::Forbidden(_) => "ForbiddenException",
            ApiError::PayloadTooLarge(_) => "PayloadTooLargeException",
            ApiError::LimitExceeded(_) | ApiError::Throttled { .. } => "LimitExceededException",
            ApiError::BadRequest(_) => "BadRequestException",
            ApiError::NotFound(_) => "NotFoundException",
            ApiError::MethodNotAllowed(_) => "MethodNotAllowedException",
            ApiError::Unavailable(_) => "ServiceUnavailableException",
        }
    }

    /// The response AWS would send.
    pub fn aws(self) -> Response {
        let mut response = (
            self.status(),
            axum::Json(serde_json::json!({ "message": self.to_string() })),
        )
            .into_response();
        response.headers_mut().insert(
            "x-amzn-errortype",
            HeaderValue::from_static(self.aws_type()),
        );
        self.add_retry_after(&mut response);
        response
    }

    /// Adds `Retry-After` to the response of a [`ApiError::Throttled`].
    fn add_retry_after(&self, response: &mut Response) {
        if let ApiError::Throttled {
            retry_after_secs, ..
        } = self
        {
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from(*retry_after_secs));
        }
    }

    /// The response Yandex Cloud's REST API would send: a gone connection is NOT_FOUND.
    pub fn yandex(self) -> Response {
        let (status, code) = match &self {
            ApiError::Gone(_) | ApiError::NotFound(_) => (StatusCode::NOT_FOUND, 5),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, 7),
            ApiError::PayloadTooLarge(_) | ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, 3),
            ApiError::LimitExceeded(_) | ApiError::Throttled { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, 8)
            }
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, 12),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, 14),
        };
        let body = serde_json::json!({ "code": code, "message": self.to_string(), "details": [] });
        let mut response = (status, axum::Json(body)).into_response();
        self.add_retry_after(&mut response);
        response
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.aws()
    }
}
