//! `--api ADDR`: the directory as JSON, and metrics in Prometheus text format, for
//! people running a tracker.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use raclette_node::network::identity::peer_id_of;
use raclette_node::store::LmdbStore;
use serde_json::{Value, json};

use crate::directory::Directory;
use crate::server::Connected;

#[derive(Clone)]
struct ApiState {
    directory: Arc<Directory<LmdbStore>>,
    connected: Connected,
    registry: Arc<Registry>,
    /// Cards in the directory and nodes connected, set when scraped.
    cards: Gauge,
    nodes: Gauge,
}

/// Serves `GET /api/peers` and `GET /metrics` on `address` until the process ends;
/// `registry` holds the tracker's series, to which the API adds its own first.
pub async fn serve(
    address: SocketAddr,
    directory: Arc<Directory<LmdbStore>>,
    connected: Connected,
    mut registry: Registry,
) -> anyhow::Result<()> {
    let (cards, nodes) = (Gauge::default(), Gauge::default());
    registry.register("cards", "Cards in the directory", cards.clone());
    registry.register("connected_nodes", "Nodes connected now", nodes.clone());
    let state = ApiState { directory, connected, registry: Arc::new(registry), cards, nodes };
    let app = Router::new()
        .route("/api/peers", get(peers))
        .route("/metrics", get(metrics))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(address).await?;
    println!("tracker api: http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

async fn metrics(State(state): State<ApiState>) -> impl IntoResponse {
    if let Ok(cards) = state.directory.all() {
        state.cards.set(cards.len() as i64);
    }
    let nodes = state.connected.lock().unwrap_or_else(|p| p.into_inner()).len();
    state.nodes.set(nodes as i64);
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    ([(header::CONTENT_TYPE, content_type)], raclette_node::metrics::encode(&state.registry))
}

async fn peers(State(state): State<ApiState>) -> Result<Json<Value>, (StatusCode, Json<Value>)> {
    let cards = state.directory.all().map_err(|error| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({ "error": format!("cannot read the directory: {error}") })),
        )
    })?;
    let connected = state.connected.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let list: Vec<Value> = cards
        .iter()
        .map(|card| {
            let peer = peer_id_of(&card.key);
            json!({
                "network": card.network.to_string(),
                "name": card.name.as_str(),
                "key": card.key.to_string(),
                "peer_id": peer.to_string(),
                "addresses": card.addresses,
                "seq": card.seq,
                "connected": connected.contains(&peer),
            })
        })
        .collect();
    Ok(Json(Value::Array(list)))
}
