//! The tracker's dialable addresses in `DATA/addresses.txt`, one per line, for scripts:
//! `just node NAME` reads its first loopback TCP line. The file always matches what the
//! tracker listens on now, so it is rewritten (atomically, never half-written) whenever
//! an address appears or expires.

use std::io;
use std::path::{Path, PathBuf};

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol as AddrProtocol;

/// The addresses the tracker can be dialled at and the file that lists them.
#[derive(Debug)]
pub struct AddressFile {
    path: PathBuf,
    addresses: Vec<Multiaddr>,
}

impl AddressFile {
    /// Takes over `path`; a file left by an earlier run is removed at once, so that no
    /// script reads an address this tracker no longer listens on.
    pub fn new(path: PathBuf) -> io::Result<Self> {
        match std::fs::remove_file(&path) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
            _ => {}
        }
        Ok(Self { path, addresses: Vec::new() })
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `address` (with `/p2p/<PeerId>`) can be dialled now; rewrites the file if it is new.
    pub fn add(&mut self, address: Multiaddr) -> io::Result<()> {
        if self.addresses.contains(&address) {
            return Ok(());
        }
        self.addresses.push(address);
        self.addresses.sort_by_key(rank); // stable: arrival order within a rank
        self.write()
    }

    /// `address` can no longer be dialled; rewrites the file if it was listed.
    pub fn remove(&mut self, address: &Multiaddr) -> io::Result<()> {
        let before = self.addresses.len();
        self.addresses.retain(|listed| listed != address);
        if self.addresses.len() == before { Ok(()) } else { self.write() }
    }

    /// The addresses in the order of the file: loopback first, TCP before QUIC.
    pub fn addresses(&self) -> &[Multiaddr] {
        &self.addresses
    }

    /// Writes a temporary file beside the real one and renames it over: a reader sees
    /// the old list or the new one, never a part of either.
    fn write(&self) -> io::Result<()> {
        let text: String = self.addresses.iter().map(|address| format!("{address}\n")).collect();
        let temporary = self.path.with_extension("txt.tmp");
        std::fs::write(&temporary, text)?;
        std::fs::rename(&temporary, &self.path)
    }
}

/// Sort key: loopback before other hosts (a local script wants the local address), and
/// TCP before QUIC (every node speaks TCP).
fn rank(address: &Multiaddr) -> (bool, bool) {
    let loopback = address.iter().any(|protocol| match protocol {
        AddrProtocol::Ip4(ip) => ip.is_loopback(),
        AddrProtocol::Ip6(ip) => ip.is_loopback(),
        AddrProtocol::Dns(host) | AddrProtocol::Dns4(host) | AddrProtocol::Dns6(host) => {
            host == "localhost"
        }
        _ => false,
    });
    let tcp = address.iter().any(|protocol| matches!(protocol, AddrProtocol::Tcp(_)));
    (!loopback, !tcp)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: &str = "/p2p/16Uiu2HAmLhLvBoYaoZfaMUKuibM6ac163GwKY74c5kiSLg5KvLpY";

    fn address(text: &str) -> Multiaddr {
        format!("{text}{PEER}").parse().unwrap()
    }

    fn lines(file: &AddressFile) -> Vec<String> {
        std::fs::read_to_string(file.path()).unwrap().lines().map(str::to_string).collect()
    }

    #[test]
    fn given_addresses_in_any_order_then_the_file_lists_loopback_tcp_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = AddressFile::new(dir.path().join("addresses.txt")).unwrap();
        file.add(address("/ip4/10.1.2.3/udp/7000/quic-v1")).unwrap();
        file.add(address("/ip4/10.1.2.3/tcp/7000")).unwrap();
        file.add(address("/ip4/127.0.0.1/udp/7000/quic-v1")).unwrap();
        file.add(address("/ip4/127.0.0.1/tcp/7000")).unwrap();
        assert_eq!(
            lines(&file),
            [
                address("/ip4/127.0.0.1/tcp/7000").to_string(),
                address("/ip4/127.0.0.1/udp/7000/quic-v1").to_string(),
                address("/ip4/10.1.2.3/tcp/7000").to_string(),
                address("/ip4/10.1.2.3/udp/7000/quic-v1").to_string(),
            ]
        );
    }

    #[test]
    fn given_an_expired_address_then_the_file_no_longer_lists_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = AddressFile::new(dir.path().join("addresses.txt")).unwrap();
        file.add(address("/ip4/127.0.0.1/tcp/7000")).unwrap();
        file.add(address("/ip4/10.1.2.3/tcp/7000")).unwrap();
        file.add(address("/ip4/10.1.2.3/tcp/7000")).unwrap();
        assert_eq!(lines(&file).len(), 2, "an address listed twice is listed once");
        file.remove(&address("/ip4/127.0.0.1/tcp/7000")).unwrap();
        assert_eq!(lines(&file), [address("/ip4/10.1.2.3/tcp/7000").to_string()]);
        assert!(!dir.path().join("addresses.txt.tmp").exists(), "the temporary file is renamed");
    }

    #[test]
    fn given_a_file_from_an_earlier_run_then_it_is_gone_until_the_tracker_listens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("addresses.txt");
        std::fs::write(&path, "/ip4/127.0.0.1/tcp/1/p2p/old\n").unwrap();
        let file = AddressFile::new(path.clone()).unwrap();
        assert!(!path.exists());
        assert!(file.addresses().is_empty());
    }
}
