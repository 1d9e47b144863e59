//! `--api ADDR`: the directory as JSON, for people running a tracker.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use raclette_node::network::identity::peer_id_of;
use raclette_node::store::LmdbStore;
use serde_json::{Value, json};

use crate::directory::Directory;
use crate::server::Connected;

#[derive(Clone)]
struct ApiState {
    directory: Arc<Directory<LmdbStore>>,
    connected: Connected,
}

/// Serves `GET /api/peers` on `address` until the process ends.
pub async fn serve(
    address: SocketAddr,
    directory: Arc<Directory<LmdbStore>>,
    connected: Connected,
) -> anyhow::Result<()> {
    let app =
        Router::new().route("/api/peers", get(peers)).with_state(ApiState { directory, connected });
    let listener = tokio::net::TcpListener::bind(address).await?;
    println!("tracker api: http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
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
