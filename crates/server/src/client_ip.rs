//! The client's IP address, for per-IP rate limits: the TCP peer, or — only when the peer is one
//! of the configured `trusted_proxies` — the nearest untrusted address in `X-Forwarded-For`.
//!
//! `X-Forwarded-For` is never honoured by default: any client can send one, so believing it
//! would let a client pick its own rate-limit bucket.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request};

/// The header reverse proxies append the client's address to.
pub const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// An address block such as `10.0.0.0/8`, `fd00::/8`, or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpBlock {
    network: IpAddr,
    prefix: u8,
}

/// Why a `trusted_proxies` entry could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an IP address or a block such as 10.0.0.0/8 or fd00::/8")]
pub struct InvalidIpBlock(pub String);

impl IpBlock {
    /// Whether `ip` is in this block (an IPv4-mapped IPv6 address counts as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, canonical(ip)) {
            (IpAddr::V4(network), IpAddr::V4(ip)) => prefix_eq(
                u128::from(u32::from(network)) << 96,
                u128::from(u32::from(ip)) << 96,
                self.prefix,
            ),
            (IpAddr::V6(network), IpAddr::V6(ip)) => {
                prefix_eq(u128::from(network), u128::from(ip), self.prefix)
            }
            _ => false,
        }
    }
}

/// Whether the first `prefix` bits of `a` and `b` are equal.
fn prefix_eq(a: u128, b: u128, prefix: u8) -> bool {
    if prefix == 0 {
        return true;
    }
    let mask = u128::MAX << (128 - u32::from(prefix.min(128)));
    a & mask == b & mask
}

impl FromStr for IpBlock {
    type Err = InvalidIpBlock;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidIpBlock(text.to_owned());
        let trimmed = text.trim();
        let (address, prefix) = match trimmed.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (trimmed, None),
        };
        let network = canonical(address.parse::<IpAddr>().map_err(|_| invalid())?);
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(invalid)?,
            None => max,
        };
        Ok(Self { network, prefix })
    }
}

impl fmt::Display for IpBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`, seen on dual-stack sockets) as IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        IpAddr::V4(_) => ip,
    }
}

/// The rate-limit key of an address: IPv4 addresses as they are, IPv6 addresses by their /64
/// (one host usually owns a whole /64, so keying by address would give it 2^64 buckets).
pub fn rate_limit_key(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & (u128::MAX << 64);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
        v4 @ IpAddr::V4(_) => v4,
    }
}

/// The proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    blocks: Vec<IpBlock>,
}

impl TrustedProxies {
    /// Trusts the given blocks (none: `X-Forwarded-For` is ignored).
    pub fn new(blocks: Vec<IpBlock>) -> Self {
        Self { blocks }
    }

    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.blocks.iter().any(|block| block.contains(ip))
    }

    /// The client address of a request from `peer`: `peer` itself unless it is a trusted proxy;
    /// then `X-Forwarded-For` is read from the right (the hop nearest to us) and the first
    /// address that is not a trusted proxy is the client. Entries a proxy could not have written
    /// (unparsable) stop the walk at the last address known good.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.contains(peer) {
            return peer;
        }
        let mut client = peer;
        // Several headers are one list, in order (RFC 9110 §5.3).
        let hops: Vec<&str> = headers
            .get_all(X_FORWARDED_FOR)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .collect();
        for hop in hops.iter().rev() {
            let Some(ip) = parse_hop(hop) else {
                break;
            };
            client = ip;
            if !self.contains(ip) {
                break;
            }
        }
        client
    }
}

/// One `X-Forwarded-For` entry: an address, possibly with a port (`1.2.3.4:5678`,
/// `[::1]:5678`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    hop.parse::<SocketAddr>().ok().map(|s| canonical(s.ip()))
}

/// The TCP peer of a request, when the server was started with connect info (as
/// [`crate::server::Service::serve`] does).
pub fn peer_addr<B>(request: &Request<B>) -> Option<SocketAddr> {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn blocks() {
        let block: IpBlock = "10.0.0.0/8".parse().unwrap();
        assert!(block.contains(ip("10.1.2.3")));
        assert!(block.contains(ip("::ffff:10.1.2.3")));
        assert!(!block.contains(ip("11.0.0.1")));
        let single: IpBlock = "127.0.0.2".parse().unwrap();
        assert!(single.contains(ip("127.0.0.2")));
        assert!(!single.contains(ip("127.0.0.1")));
        let v6: IpBlock = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")));
        assert!(!v6.contains(ip("fe80::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
        let all: IpBlock = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("8.8.8.8")));
        for bad in ["", "10.0.0.0/33", "::/129", "example.com", "10.0.0.0/x"] {
            assert!(bad.parse::<IpBlock>().is_err(), "{bad}");
        }
    }

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let mut headers = HeaderMap::new();
        headers.insert(X_FORWARDED_FOR, "203.0.113.9, 10.0.0.5".parse().unwrap());
        let none = TrustedProxies::default();
        assert_eq!(none.client_ip(ip("10.0.0.1"), &headers), ip("10.0.0.1"));
        let proxies = TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap()]);
        // From a trusted proxy: the nearest untrusted hop.
        assert_eq!(
            proxies.client_ip(ip("10.0.0.1"), &headers),
            ip("203.0.113.9")
        );
        // From anyone else: the peer, whatever the header says.
        assert_eq!(
            proxies.client_ip(ip("198.51.100.7"), &headers),
            ip("198.51.100.7")
        );
        // A client prepending a fake address does not move the result.
        headers.insert(
            X_FORWARDED_FOR,
            "1.1.1.1, 203.0.113.9:4444, 10.0.0.5".parse().unwrap(),
        );
        assert_eq!(
            proxies.client_ip(ip("10.0.0.1"), &headers),
            ip("203.0.113.9")
        );
        // Garbage stops the walk at the last good hop.
        headers.insert(X_FORWARDED_FOR, "203.0.113.9, junk".parse().unwrap());
        assert_eq!(proxies.client_ip(ip("10.0.0.1"), &headers), ip("10.0.0.1"));
        // No header: the proxy itself.
        assert_eq!(
            proxies.client_ip(ip("10.0.0.1"), &HeaderMap::new()),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn ipv6_keys_are_slash_64() {
        assert_eq!(
            rate_limit_key(ip("2001:db8:1:2:aaaa::1")),
            rate_limit_key(ip("2001:db8:1:2:bbbb::2"))
        );
        assert_ne!(
            rate_limit_key(ip("2001:db8:1:2::1")),
            rate_limit_key(ip("2001:db8:1:3::1"))
        );
        assert_eq!(rate_limit_key(ip("::ffff:1.2.3.4")), ip("1.2.3.4"));
    }
}
