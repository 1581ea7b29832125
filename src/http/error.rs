//! Errors of the HTTP API, in one place: each is one status code and one JSON body shape,
//! `{"error": "<snake_case code>", "message": "...", "field": "..."}` (`field` only when a
//! request field is at fault).

use warp::http::StatusCode;
use warp::http::header::{HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use warp::reply::Response;

use crate::auth::AccountError;

/// An error a handler or filter answers with. Handlers return it; filters reject with it
/// (`warp::reject::custom`), and `handle_rejection` turns either into the same response.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed or a value breaks a rule; `field` names the offending field.
    #[error("{message}")]
    BadRequest {
        message: String,
        field: Option<String>,
    },
    /// No valid credentials. Sent with `WWW-Authenticate: Bearer`.
    #[error("{0}")]
    Unauthorized(String),
    /// Valid credentials that may not do this (e.g. a read-only API key changing something).
    #[error("{0}")]
    Forbidden(String),
    /// No such resource, or one the caller may not know exists.
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Conflict(String),
    /// Well-formed and allowed, but more than this server will do in one request (e.g. simplify
    /// a track of too many fixes); `field` names the parameter to change.
    #[error("{message}")]
    Unprocessable {
        message: String,
        field: Option<String>,
    },
    /// Sent with `Retry-After`.
    #[error("too many requests; retry after {retry_after_secs} seconds")]
    TooManyRequests { retry_after_secs: u64 },
    /// The server is too busy for this now (e.g. every password-hashing slot is taken); sent
    /// with `Retry-After`.
    #[error("the server is busy; retry after {retry_after_secs} seconds")]
    Unavailable { retry_after_secs: u64 },
    /// Our fault. The detail goes to the log, never to the client.
    #[error("internal error: {0}")]
    Internal(String),
}

impl warp::reject::Reject for ApiError {}

impl ApiError {
    pub fn bad_request(message: impl Into<String>, field: Option<&str>) -> ApiError {
        ApiError::BadRequest {
            message: message.into(),
            field: field.map(str::to_owned),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The machine-readable `error` of the body.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { .. } => "bad_request",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::Unprocessable { .. } => "unprocessable",
            ApiError::TooManyRequests { .. } => "too_many_requests",
            ApiError::Unavailable { .. } => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    /// The response for this error; internal errors are logged here, once.
    pub fn to_response(&self) -> Response {
        let (message, field) = match self {
            ApiError::BadRequest { message, field }
            | ApiError::Unprocessable { message, field } => (message.clone(), field.as_deref()),
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "internal error answering an HTTP request");
                ("internal error".to_owned(), None)
            }
            other => (other.to_string(), None),
        };
        let mut response = error_response(self.status(), self.code(), &message, field);
        let headers = response.headers_mut();
        match self {
            ApiError::Unauthorized(_) => {
                headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::TooManyRequests { retry_after_secs }
            | ApiError::Unavailable { retry_after_secs } => {
                headers.insert(RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            _ => {}
        }
        response
    }
}

/// The one JSON error body, for [`ApiError`] and warp's own rejections alike.
pub fn error_response(
    status: StatusCode,
    code: &str,
    message: &str,
    field: Option<&str>,
) -> Response {
    use warp::Reply;
    let mut body = serde_json::json!({"error": code, "message": message});
    if let Some(field) = field {
        body["field"] = serde_json::Value::from(field);
    }
    warp::reply::with_status(warp::reply::json(&body), status).into_response()
}

impl From<AccountError> for ApiError {
    fn from(err: AccountError) -> Self {
        match err {
            AccountError::InvalidEmail(message) => ApiError::bad_request(message, Some("email")),
            AccountError::WeakPassword => {
                ApiError::bad_request(crate::auth::PASSWORD_RULES, Some("password"))
            }
            AccountError::EmailTaken => ApiError::Conflict(err.to_string()),
            AccountError::BadCredentials | AccountError::BadRefreshToken => {
                ApiError::Unauthorized(err.to_string())
            }
            AccountError::NotFound => ApiError::NotFound,
            AccountError::Storage(e) => ApiError::Internal(e.to_string()),
            AccountError::Internal(e) => ApiError::Internal(e),
        }
    }
}

impl From<crate::auth::admission::Refusal> for ApiError {
    fn from(refusal: crate::auth::admission::Refusal) -> Self {
        use crate::auth::admission::Refusal;
        // Whole seconds, rounded up: `Retry-After: 0` would invite an immediate retry.
        let secs = |wait: std::time::Duration| wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        match refusal {
            Refusal::Address(wait) => ApiError::TooManyRequests {
                retry_after_secs: secs(wait).max(1),
            },
            Refusal::Busy(wait) => ApiError::Unavailable {
                retry_after_secs: secs(wait).max(1),
            },
        }
    }
}

impl From<gateway::storage::StorageError> for ApiError {
    /// The whole chain goes to the log: "database error while X" alone says nothing of the cause.
    fn from(err: gateway::storage::StorageError) -> Self {
        let mut detail = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(cause) = source {
            detail.push_str(": ");
            detail.push_str(&cause.to_string());
            source = cause.source();
        }
        ApiError::Internal(detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(response: Response) -> serde_json::Value {
        use http_body_util::BodyExt;
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn a_bad_request_names_its_field() {
        let response = ApiError::bad_request("too short", Some("password")).to_response();
        assert_eq!(response.status(), 400);
        let body = body(response).await;
        assert_eq!(body["error"], "bad_request");
        assert_eq!(body["message"], "too short");
        assert_eq!(body["field"], "password");
    }

    #[tokio::test]
    async fn an_internal_error_hides_its_detail() {
        let response = ApiError::Internal("connection to 10.0.0.5 refused".into()).to_response();
        assert_eq!(response.status(), 500);
        let body = body(response).await;
        assert_eq!(body["message"], "internal error");
        assert!(body.get("field").is_none());
    }

    #[tokio::test]
    async fn unauthorized_and_too_many_requests_carry_their_headers() {
        let response = ApiError::Unauthorized("no".into()).to_response();
        assert_eq!(response.headers()[WWW_AUTHENTICATE], "Bearer");
        let response = ApiError::TooManyRequests {
            retry_after_secs: 30,
        }
        .to_response();
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()[RETRY_AFTER], "30");
    }
}
