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
    /// The request is malformed (bad JSON, base64, parameter).
    #[error("{0}")]
    BadRequest(String),
    /// No such path.
    #[error("{0}")]
    NotFound(String),
    /// The path exists but not with this method.
    #[error("{0}")]
    MethodNotAllowed(String),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::LimitExceeded(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    fn aws_type(&self) -> &'static str {
        match self {
            ApiError::Gone(_) => "GoneException",
            ApiError::Forbidden(_) => "ForbiddenException",
            ApiError::PayloadTooLarge(_) => "PayloadTooLargeException",
            ApiError::LimitExceeded(_) => "LimitExceededException",
            ApiError::BadRequest(_) => "BadRequestException",
            ApiError::NotFound(_) => "NotFoundException",
            ApiError::MethodNotAllowed(_) => "MethodNotAllowedException",
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
        response
    }

    /// The response Yandex Cloud's REST API would send: a gone connection is NOT_FOUND.
    pub fn yandex(self) -> Response {
        let (status, code) = match &self {
            ApiError::Gone(_) | ApiError::NotFound(_) => (StatusCode::NOT_FOUND, 5),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, 7),
            ApiError::PayloadTooLarge(_) | ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, 3),
            ApiError::LimitExceeded(_) => (StatusCode::TOO_MANY_REQUESTS, 8),
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, 12),
        };
        let body = serde_json::json!({ "code": code, "message": self.to_string(), "details": [] });
        (status, axum::Json(body)).into_response()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.aws()
    }
}
