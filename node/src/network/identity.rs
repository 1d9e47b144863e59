//! The node's one keypair: its libp2p identity and its wallet key, kept in a file only
//! its owner can read.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use libp2p::PeerId;
use libp2p::identity;
use raclette_protocol::{Keypair, PublicKey};
use rand::RngCore;

/// Why the key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// Reading or writing the file failed.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file does not hold a valid key.
    #[error("key file {path} does not hold a valid secp256k1 secret key")]
    Invalid {
        /// The file.
        path: String,
    },
    /// Others can read the file.
    #[error("key file {path} is readable by others (mode {mode:o}); run: chmod 600 {path}")]
    TooOpen {
        /// The file.
        path: String,
        /// Its mode bits.
        mode: u32,
    },
}

/// Loads the 32-byte secret in `path`, or creates one (mode 0600) if the file is missing.
pub fn load_or_create(path: &Path) -> Result<Keypair, KeyFileError> {
    let shown = path.display().to_string();
    let io = |source| KeyFileError::Io { path: shown.clone(), source };
    match fs::read(path) {
        Ok(bytes) => {
            let mode = fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(KeyFileError::TooOpen { path: shown, mode });
            }
            let secret: [u8; 32] =
                bytes.try_into().map_err(|_| KeyFileError::Invalid { path: shown.clone() })?;
            Keypair::from_secret_bytes(secret).map_err(|_| KeyFileError::Invalid { path: shown })
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir).map_err(io)?;
            }
            let keypair = loop {
                let mut secret = [0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut secret);
                if let Ok(keypair) = Keypair::from_secret_bytes(secret) {
                    break keypair;
                }
            };
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(io)?;
            file.write_all(&keypair.secret_bytes()).map_err(io)?;
            file.sync_all().map_err(io)?;
            Ok(keypair)
        }
        Err(error) => Err(io(error)),
    }
}

/// The libp2p identity of a keypair (the same secp256k1 secret).
pub fn libp2p_keypair(keypair: &Keypair) -> identity::Keypair {
    let secret = identity::secp256k1::SecretKey::try_from_bytes(keypair.secret_bytes())
        .expect("a valid wallet secret is a valid libp2p secp256k1 secret");
    identity::Keypair::from(identity::secp256k1::Keypair::from(secret))
}

/// The PeerId of an account key.
pub fn peer_id_of(key: &PublicKey) -> PeerId {
    let public = identity::secp256k1::PublicKey::try_from_bytes(&key.to_bytes())
        .expect("a valid account key is a valid libp2p secp256k1 key");
    identity::PublicKey::from(public).to_peer_id()
}

/// The account key inside a PeerId, if it carries a secp256k1 key.
pub fn key_of(peer: &PeerId) -> Option<PublicKey> {
    let multihash = peer.as_ref();
    if multihash.code() != 0 {
        return None; // a hashed key: not one of ours
    }
    let public = identity::PublicKey::try_decode_protobuf(multihash.digest()).ok()?;
    let secp = public.try_into_secp256k1().ok()?;
    PublicKey::from_bytes(&secp.to_bytes()).ok()
}

/// The first address of `card` that is not a multiaddr ending in the card key's own
/// `/p2p/<PeerId>` (PROTOCOL.md §14.2), if any: such a card would send dials elsewhere.
pub fn foreign_address(card: &raclette_protocol::PeerCard) -> Option<&str> {
    let own = peer_id_of(&card.key);
    card.addresses.iter().map(String::as_str).find(|text| {
        let ends_in_own = text
            .parse::<libp2p::Multiaddr>()
            .ok()
            .and_then(|address| match address.iter().last() {
                Some(libp2p::multiaddr::Protocol::P2p(peer)) => Some(peer == own),
                _ => None,
            })
            .unwrap_or(false);
        !ends_in_own
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_missing_file_when_loaded_twice_then_created_0600_and_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        let first = load_or_create(&path).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let second = load_or_create(&path).unwrap();
        assert_eq!(first.public(), second.public());
    }

    #[test]
    fn given_world_readable_file_when_loaded_then_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        load_or_create(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(load_or_create(&path), Err(KeyFileError::TooOpen { .. })));
    }

    #[test]
    fn given_card_addresses_then_only_the_keys_own_peer_id_passes() {
        let key = Keypair::from_secret_bytes([7; 32]).unwrap();
        let own = peer_id_of(&key.public());
        let card = |address: String| {
            raclette_protocol::PeerCard::sign(
                &key,
                raclette_protocol::NetworkId::ZERO,
                raclette_protocol::PeerName::new("x").unwrap(),
                vec![address],
                1,
            )
        };
        assert_eq!(foreign_address(&card(format!("/ip4/1.2.3.4/tcp/5/p2p/{own}"))), None);
        let other = identity::Keypair::generate_ed25519().public().to_peer_id();
        assert!(foreign_address(&card(format!("/ip4/1.2.3.4/tcp/5/p2p/{other}"))).is_some());
        assert!(foreign_address(&card("/ip4/1.2.3.4/tcp/5".into())).is_some());
        assert!(foreign_address(&card("not an address".into())).is_some());
    }

    #[test]
    fn given_account_key_then_peer_id_carries_it() {
        let keypair = Keypair::from_secret_bytes([7; 32]).unwrap();
        let peer = peer_id_of(&keypair.public());
        assert_eq!(libp2p_keypair(&keypair).public().to_peer_id(), peer);
        assert_eq!(key_of(&peer), Some(keypair.public()));
        let other = identity::Keypair::generate_ed25519().public().to_peer_id();
        assert_eq!(key_of(&other), None);
    }
}
