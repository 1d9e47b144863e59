//! Which networks a tracker serves. A card, a listing or a lookup for any other network is
//! refused with the reason: without this, anyone could fill the directory with cards of
//! made-up networks that no node will ever ask for.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

use raclette_protocol::{NetworkId, NetworkParams};

/// The networks served unless `--network` says otherwise.
pub const DEFAULT_NETWORKS: [&str; 2] = ["main", "dev"];

/// The networks a tracker serves: a set of ids, or every network (`--network any`, for
/// test rigs that make up a network per test).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Networks {
    /// Exactly these.
    Only(BTreeSet<(String, NetworkId)>),
    /// Whatever network a card names.
    Any,
}

impl Networks {
    /// The networks named by `values`: `dev`, `main`, `any`, or the path of a network
    /// file (JSON with the keys of PROTOCOL.md §9); or one sentence saying what is wrong.
    pub fn parse(values: &[String]) -> Result<Self, String> {
        let mut served = BTreeSet::new();
        for value in values {
            if value == "any" {
                return Ok(Self::Any);
            }
            let params = match NetworkParams::by_name(value) {
                Some(params) => params,
                None if Path::new(value).is_file() => {
                    raclette_node::cli::read_network_file(Path::new(value))?
                }
                None => {
                    return Err(format!(
                        "unknown network '{value}': use dev, main, any or the path of a network file"
                    ));
                }
            };
            served.insert((params.name.clone(), params.network_id()));
        }
        if served.is_empty() {
            return Err("--network needs at least one network".into());
        }
        Ok(Self::Only(served))
    }

    /// Whether `network` is served here.
    pub fn serves(&self, network: &NetworkId) -> bool {
        match self {
            Self::Only(served) => served.iter().any(|(_, id)| id == network),
            Self::Any => true,
        }
    }

    /// Why a request for `network` is refused, if it is.
    pub fn refusal(&self, network: &NetworkId) -> Option<String> {
        (!self.serves(network))
            .then(|| format!("this tracker serves {self}, not network {network}"))
    }
}

impl fmt::Display for Networks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("every network"),
            Self::Only(served) => {
                let names: Vec<String> = served
                    .iter()
                    .map(|(name, id)| format!("{name} ({})", &id.to_string()[..16]))
                    .collect();
                write!(f, "{}", names.join(", "))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_dev_and_main_then_only_they_are_served() {
        let networks = Networks::parse(&["main".into(), "dev".into()]).expect("known names");
        assert!(networks.serves(&NetworkParams::dev().network_id()));
        assert!(networks.serves(&NetworkParams::main().network_id()));
        let other = NetworkParams { name: "other".into(), ..NetworkParams::dev() };
        let refusal = networks.refusal(&other.network_id()).expect("refused");
        assert!(refusal.contains("dev (") && refusal.contains("main ("), "{refusal}");
        assert!(refusal.contains(&other.network_id().to_string()), "{refusal}");
    }

    #[test]
    fn given_a_network_file_then_its_network_is_served() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let params = NetworkParams { name: "lab".into(), ..NetworkParams::dev() };
        let path = dir.path().join("lab.json");
        std::fs::write(&path, serde_json::to_string(&params).expect("params serialise"))
            .expect("written");
        let networks =
            Networks::parse(&[path.display().to_string()]).expect("a valid network file");
        assert!(networks.serves(&params.network_id()));
        assert!(!networks.serves(&NetworkParams::dev().network_id()));
    }

    #[test]
    fn given_any_then_every_network_is_served_and_nonsense_is_refused() {
        let any = Networks::parse(&["dev".into(), "any".into()]).expect("any");
        assert!(any.serves(&NetworkId::from_bytes([7; 32])));
        assert!(Networks::parse(&["mian".into()]).expect_err("a typo").contains("unknown network"));
    }
}
