//! Who may use the API. Any web page the user visits can send requests to
//! `127.0.0.1:PORT` (a no-cors POST, or DNS rebinding to read the answers), so, as
//! bitcoind does with its cookie, every start writes a fresh random token to
//! `DATA/api.cookie` (mode 0600) and every `/api/*` request must carry it as
//! `Authorization: Bearer TOKEN`. A `Host` header that names another machine is refused
//! first: a rebound DNS name never matches.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::RngCore;

use super::ApiError;

/// The file, in the data directory, that holds this start's token.
pub const COOKIE_FILE: &str = "api.cookie";

/// The token of this start and the addresses a `Host` header may name.
#[derive(Clone, Debug)]
pub struct Access {
    token: Arc<str>,
    /// The address the API was bound to, when the user named one beyond loopback.
    named: Option<IpAddr>,
}

impl Access {
    /// Access for an API bound to `bound` with this `token`.
    pub fn new(token: String, bound: SocketAddr) -> Self {
        let ip = bound.ip();
        Self { token: token.into(), named: (!ip.is_loopback()).then_some(ip) }
    }

    /// The token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Whether a request's `Host` header names this machine as the user reaches it:
    /// `localhost`, a loopback address, or the address given to `--api` (any address
    /// when that was `0.0.0.0` or `::`, since an IP literal cannot be rebound).
    pub fn host_allowed(&self, host: Option<&str>) -> bool {
        let Some(host) = host.map(host_name) else { return false };
        if host.eq_ignore_ascii_case("localhost") {
            return true;
        }
        let Ok(ip) = host.parse::<IpAddr>() else { return false };
        ip.is_loopback() || self.named.is_some_and(|named| named.is_unspecified() || named == ip)
    }

    /// Whether an `Authorization` header carries this start's token.
    pub fn token_matches(&self, authorization: Option<&str>) -> bool {
        let Some(given) = authorization.and_then(|value| value.strip_prefix("Bearer ")) else {
            return false;
        };
        // Compared in constant time: how long a wrong guess took says nothing.
        let (given, token) = (given.trim().as_bytes(), self.token.as_bytes());
        given.len() == token.len()
            && given.iter().zip(token).fold(0u8, |diff, (a, b)| diff | (a ^ b)) == 0
    }
}

/// The host of a `Host` header, without its port: `[::1]:80` → `::1`.
fn host_name(host: &str) -> &str {
    let host = host.trim();
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split_once(']').map_or("", |(name, _)| name);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    }
}

/// A fresh random token, written to `data_dir/api.cookie` (mode 0600, the token alone on
/// one line) through a temporary file, so no reader sees half of one.
pub fn write_cookie(data_dir: &Path) -> std::io::Result<(String, PathBuf)> {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token = hex::encode(bytes);
    let path = data_dir.join(COOKIE_FILE);
    let temporary = data_dir.join(format!("{COOKIE_FILE}.tmp"));
    let _ = std::fs::remove_file(&temporary);
    let mut file =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&temporary)?;
    file.write_all(format!("{token}\n").as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temporary, &path)?;
    Ok((token, path))
}

/// The middleware in front of the page and `/metrics`, which need no token: 403 for a
/// foreign `Host`, so that no rebound web page reads them.
pub async fn check_host(State(access): State<Access>, request: Request, next: Next) -> Response {
    let host = request.headers().get(header::HOST).and_then(|value| value.to_str().ok());
    if !access.host_allowed(host) {
        return foreign_host();
    }
    next.run(request).await
}

fn foreign_host() -> Response {
    ApiError(
        StatusCode::FORBIDDEN,
        "the Host header must name this machine (localhost, a loopback address or the --api address)".into(),
    )
    .into_response()
}

/// The middleware in front of `/api/*`: 403 for a foreign `Host`, 401 without the token.
pub async fn check(State(access): State<Access>, request: Request, next: Next) -> Response {
    let headers: &HeaderMap = request.headers();
    let text = |name| headers.get(name).and_then(|value: &header::HeaderValue| value.to_str().ok());
    if !access.host_allowed(text(header::HOST)) {
        return foreign_host();
    }
    if !access.token_matches(text(header::AUTHORIZATION)) {
        let mut response = ApiError(
            StatusCode::UNAUTHORIZED,
            format!("send Authorization: Bearer TOKEN, with the token in the node's {COOKIE_FILE}"),
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        return response;
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback() -> Access {
        Access::new("ab".repeat(32), "127.0.0.1:8080".parse().unwrap())
    }

    #[test]
    fn given_hosts_then_only_names_of_this_machine_pass() {
        let access = loopback();
        for host in ["127.0.0.1:8080", "localhost:8080", "LOCALHOST", "[::1]:8080", "127.0.0.2"] {
            assert!(access.host_allowed(Some(host)), "{host}");
        }
        for host in ["evil.example:8080", "10.0.0.2:8080", "localhost.evil.example", "[::1", ""] {
            assert!(!access.host_allowed(Some(host)), "{host}");
        }
        assert!(!access.host_allowed(None), "no Host header");
    }

    #[test]
    fn given_a_named_address_then_it_passes_and_unspecified_allows_any_ip_but_no_name() {
        let named = Access::new("t".into(), "10.0.0.2:8080".parse().unwrap());
        assert!(named.host_allowed(Some("10.0.0.2:8080")));
        assert!(!named.host_allowed(Some("10.0.0.3:8080")));
        let any = Access::new("t".into(), "0.0.0.0:8080".parse().unwrap());
        assert!(any.host_allowed(Some("192.0.2.7:8080")));
        assert!(!any.host_allowed(Some("rebound.example:8080")), "a DNS name can be rebound");
    }

    #[test]
    fn given_authorization_headers_then_only_the_exact_bearer_token_passes() {
        let access = loopback();
        let token = "ab".repeat(32);
        assert!(access.token_matches(Some(&format!("Bearer {token}"))));
        assert!(!access.token_matches(Some(&format!("Bearer {}", &token[1..]))));
        assert!(!access.token_matches(Some(&format!("Bearer {token}0"))));
        assert!(!access.token_matches(Some(&format!("Basic {token}"))));
        assert!(!access.token_matches(Some(&token)));
        assert!(!access.token_matches(None));
    }

    #[test]
    fn given_two_starts_then_two_private_tokens() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (first, path) = write_cookie(dir.path()).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{first}\n"));
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let (second, _) = write_cookie(dir.path()).unwrap();
        assert_ne!(first, second);
        assert_eq!(first.len(), 64);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{second}\n"));
    }
}
