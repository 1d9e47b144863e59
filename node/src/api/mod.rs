//! The local JSON API: the REPL's operations over HTTP, so scripts, tests and a block
//! explorer can drive a node without a terminal. Amounts are decimal strings; hashes and
//! keys lowercase hex; every error is a 4xx with `{"error": "one clear sentence"}`.
//! Every `/api/*` request needs this start's token ([`access`]).

pub mod access;
mod web;

use std::net::SocketAddr;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use raclette_protocol::{Amount, BlockHash};
use serde::Deserialize;
use serde_json::json;

use self::access::Access;
use crate::node::{BlockId, NodeHandle, Request, UserError};

/// The most blocks one `GET /api/blocks` returns.
pub const MAX_BLOCKS_PER_PAGE: usize = 500;

/// An API error: status and one sentence.
struct ApiError(StatusCode, String);

impl From<UserError> for ApiError {
    fn from(error: UserError) -> Self {
        let status = match error {
            UserError::Invalid(_) => StatusCode::BAD_REQUEST,
            UserError::NotFound(_) => StatusCode::NOT_FOUND,
            UserError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError(status, error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

fn ok<T: serde::Serialize>(value: T) -> ApiResult {
    Ok(Json(value).into_response())
}

/// The routes: the page (which holds no secret and asks for the token itself) and the
/// API, each of whose routes is behind `access`.
pub fn router(node: NodeHandle, access: Access) -> Router {
    let metrics = Router::new().route("/metrics", get(metrics)).with_state(node.clone());
    let public = web::routes()
        .merge(metrics)
        .layer(axum::middleware::from_fn_with_state(access.clone(), access::check_host));
    let api = api_routes(node).layer(axum::middleware::from_fn_with_state(access, access::check));
    public.merge(api)
}

/// `GET /metrics`: Prometheus (OpenMetrics) text. It holds no secret, so it needs no
/// token (a Prometheus server scrapes it as it is), only a `Host` naming this machine.
async fn metrics(State(node): State<NodeHandle>) -> ApiResult {
    node.ask(Request::RefreshMetrics).await?;
    let text = crate::metrics::encode(&node.registry);
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    Ok(([(axum::http::header::CONTENT_TYPE, content_type)], text).into_response())
}

fn api_routes(node: NodeHandle) -> Router {
    Router::new()
        .route("/api/status", get(status))
        .route("/api/whoami", get(whoami))
        .route("/api/peers", get(peers))
        .route("/api/balance", get(own_balance))
        .route("/api/balance/{name}", get(balance))
        .route("/api/inbox", get(inbox))
        .route("/api/mempool", get(mempool))
        .route("/api/blocks", get(blocks))
        .route("/api/block/{id}", get(block))
        .route("/api/tx/{txid}", get(transaction))
        .route("/api/send", post(send))
        .route("/api/mine", post(mine))
        .route("/api/mine/stop", post(stop_mining))
        .route("/api/ban", post(ban))
        .route("/api/unban", post(unban))
        .route("/api/shutdown", post(shutdown))
        .route("/api/events", get(events))
        .fallback(|| async {
            ApiError(StatusCode::NOT_FOUND, "no such endpoint; see the README's API table".into())
        })
        .with_state(node)
}

/// Binds `address`, writes a fresh token to `data_dir/api.cookie` and serves until the
/// process ends; returns the bound address and the token.
pub async fn serve(
    address: SocketAddr,
    data_dir: &std::path::Path,
    node: NodeHandle,
) -> std::io::Result<(SocketAddr, String)> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    let (token, _) = access::write_cookie(data_dir)?;
    let access = Access::new(token.clone(), bound);
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router(node, access)).await {
            tracing::error!(%error, "the API stopped");
        }
    });
    Ok((bound, token))
}

async fn status(State(node): State<NodeHandle>) -> ApiResult {
    ok(node.ask(Request::Status).await?)
}

async fn whoami(State(node): State<NodeHandle>) -> ApiResult {
    ok(node.ask(Request::WhoAmI).await?)
}

async fn peers(State(node): State<NodeHandle>) -> ApiResult {
    ok(node.ask(Request::Peers).await?)
}

async fn own_balance(State(node): State<NodeHandle>) -> ApiResult {
    ok(node.ask(|reply| Request::Balance { name: None, reply }).await??)
}

async fn balance(State(node): State<NodeHandle>, Path(name): Path<String>) -> ApiResult {
    ok(node.ask(|reply| Request::Balance { name: Some(name), reply }).await??)
}

async fn inbox(State(node): State<NodeHandle>) -> ApiResult {
    ok(node.ask(Request::Inbox).await?)
}

async fn mempool(State(node): State<NodeHandle>) -> ApiResult {
    ok(node.ask(Request::Mempool).await?)
}

#[derive(Deserialize)]
struct BlocksQuery {
    from: Option<u64>,
    limit: Option<usize>,
}

async fn blocks(State(node): State<NodeHandle>, Query(query): Query<BlocksQuery>) -> ApiResult {
    let limit = query.limit.unwrap_or(20).min(MAX_BLOCKS_PER_PAGE);
    ok(node.ask(|reply| Request::Blocks { from: query.from, limit, reply }).await?)
}

/// A height or a 64-digit hash.
pub fn parse_block_id(text: &str) -> Result<BlockId, UserError> {
    if let Ok(height) = text.parse::<u64>() {
        return Ok(BlockId::Height(height));
    }
    text.parse::<BlockHash>()
        .map(BlockId::Hash)
        .map_err(|_| UserError::Invalid(format!("'{text}' is neither a height nor a block hash")))
}

async fn block(State(node): State<NodeHandle>, Path(id): Path<String>) -> ApiResult {
    let id = parse_block_id(&id)?;
    ok(node.ask(|reply| Request::Block { id, reply }).await??)
}

async fn transaction(State(node): State<NodeHandle>, Path(txid): Path<String>) -> ApiResult {
    let txid = txid.parse().map_err(|_| {
        UserError::Invalid(format!("'{txid}' is not a transaction id (64 hex digits)"))
    })?;
    ok(node.ask(|reply| Request::Transaction { txid, reply }).await??)
}

#[derive(Deserialize)]
struct SendBody {
    to: String,
    amount: String,
    #[serde(default)]
    message: String,
    fee: Option<String>,
}

fn parse_amount(what: &str, text: &str) -> Result<Amount, UserError> {
    text.parse::<Amount>().map_err(|error| UserError::Invalid(format!("{what}: {error}")))
}

async fn send(
    State(node): State<NodeHandle>,
    body: Result<Json<SendBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult {
    let Json(body) = body.map_err(|error| ApiError(StatusCode::BAD_REQUEST, error.body_text()))?;
    let amount = parse_amount("amount", &body.amount)?;
    let fee = body.fee.as_deref().map(|fee| parse_amount("fee", fee)).transpose()?;
    let result = node
        .ask(|reply| Request::Send { to: body.to, amount, message: body.message, fee, reply })
        .await??;
    ok(result)
}

#[derive(Deserialize)]
struct MineBody {
    #[serde(default = "one")]
    blocks: u32,
}

fn one() -> u32 {
    1
}

async fn mine(
    State(node): State<NodeHandle>,
    body: Result<Json<MineBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult {
    let Json(body) = body.map_err(|error| ApiError(StatusCode::BAD_REQUEST, error.body_text()))?;
    ok(node.ask(|reply| Request::Mine { blocks: body.blocks, reply }).await??)
}

async fn stop_mining(State(node): State<NodeHandle>) -> ApiResult {
    let was_mining = node.ask(Request::StopMining).await?;
    ok(json!({ "stopped": was_mining }))
}

#[derive(Deserialize)]
struct NameBody {
    name: String,
}

async fn block_peer(
    node: NodeHandle,
    body: Result<Json<NameBody>, axum::extract::rejection::JsonRejection>,
    blocked: bool,
) -> ApiResult {
    let Json(body) = body.map_err(|error| ApiError(StatusCode::BAD_REQUEST, error.body_text()))?;
    node.ask(|reply| Request::Ban { name: body.name, blocked, reply }).await??;
    ok(json!({ "status": if blocked { "banned" } else { "unbanned" } }))
}

async fn ban(
    State(node): State<NodeHandle>,
    body: Result<Json<NameBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult {
    block_peer(node, body, true).await
}

async fn unban(
    State(node): State<NodeHandle>,
    body: Result<Json<NameBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult {
    block_peer(node, body, false).await
}

/// The node's notices as Server-Sent Events, one JSON object each (`kind` names it), for
/// the page to follow the chain live. A reader too slow for the channel misses the
/// oldest notices, never the stream.
async fn events(State(node): State<NodeHandle>) -> Response {
    let notices = node.notices.subscribe();
    let stream = futures::stream::unfold(notices, |mut notices| async move {
        loop {
            match notices.recv().await {
                Ok(notice) => {
                    let event = Event::default().json_data(&notice).unwrap_or_default();
                    return Some((Ok::<_, std::convert::Infallible>(event), notices));
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

async fn shutdown(State(node): State<NodeHandle>) -> ApiResult {
    node.ask(Request::Shutdown).await?;
    ok(json!({ "status": "stopped" }))
}
