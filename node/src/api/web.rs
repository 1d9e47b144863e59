//! The node's own web page (explorer, network, wallet, mining), built into the binary: no
//! separate build step and nothing fetched from the internet. It holds no secret: the
//! page reads the token from its URL fragment and sends it with every API request.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

/// What the page may load and talk to: itself, nothing else, and no framing by others.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// `GET /`, `/app.js` and `/style.css`.
pub(super) fn routes() -> Router {
    Router::new()
        .route("/", get(|| serve("text/html; charset=utf-8", include_str!("web/index.html"))))
        .route(
            "/app.js",
            get(|| serve("text/javascript; charset=utf-8", include_str!("web/app.js"))),
        )
        .route(
            "/style.css",
            get(|| serve("text/css; charset=utf-8", include_str!("web/style.css"))),
        )
}

async fn serve(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
}
