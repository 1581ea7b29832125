//! Who a client is, for the limits kept per address (MQTT handshakes, HTTP sign-in attempts): which addresses count as one host, and the client behind a trusted reverse proxy.
//!
//! Behind an Ingress every request comes from the proxy, so without the proxy's word all users
//! would share one sign-in bucket and one flood would lock everyone out. `X-Forwarded-For` is
//! believed only from a peer listed in `http.trusted_proxies`; anyone else could write any
//! address into it.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

/// The bucket an address counts against. One IPv6 host usually holds a whole /64 and can pick
/// any address in it, so IPv6 is counted per /64; an IPv4 address mapped into IPv6 is itself.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

/// The reverse proxies whose `X-Forwarded-For` is believed (`http.trusted_proxies`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// From the setting's entries: addresses (`10.0.0.7`) or blocks (`10.0.0.0/8`). The error
    /// names the entry that is neither.
    pub fn parse(entries: &[String]) -> Result<TrustedProxies, String> {
        entries
            .iter()
            .map(|entry| {
                let entry = entry.trim();
                entry
                    .parse::<IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("{entry:?} is not an IP address or a CIDR block"))
            })
            .collect::<Result<_, _>>()
            .map(TrustedProxies)
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client behind `peer`: the peer itself unless it is a trusted proxy; then the
    /// right-most address of `forwarded_for` that is not a trusted proxy (each proxy appends
    /// the address it saw, so entries left of the first untrusted one are the client's own
    /// claims). A header that cannot be read leaves the proxy as the client: the flood it
    /// carries then counts against the proxy, never against someone else.
    pub fn client(&self, peer: Option<SocketAddr>, forwarded_for: Option<&str>) -> Option<IpAddr> {
        let peer = peer?.ip().to_canonical();
        if !self.trusts(peer) {
            return Some(peer);
        }
        let Some(header) = forwarded_for else {
            return Some(peer);
        };
        let mut client = peer;
        for entry in header.rsplit(',') {
            let Some(ip) = parse_entry(entry) else {
                return Some(peer);
            };
            client = ip;
            if !self.trusts(ip) {
                break;
            }
        }
        Some(client)
    }
}

/// One `X-Forwarded-For` entry: an address, or an address with a port (`[v6]:port`, `v4:port`)
/// as some proxies write it.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<SocketAddr>().map(|a| a.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ip: &str) -> IpAddr {
        address_key(ip.parse().unwrap())
    }

    #[test]
    fn ipv6_addresses_of_one_slash_64_are_one_host_and_mapped_ipv4_is_itself() {
        assert_eq!(key("2001:db8::1"), key("2001:db8::ffff:2"));
        assert_ne!(key("2001:db8::1"), key("2001:db8:0:1::1"));
        assert_eq!(key("::ffff:192.0.2.7"), key("192.0.2.7"));
        assert_ne!(key("192.0.2.7"), key("192.0.2.8"));
    }

    fn proxies(entries: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(&entries.iter().map(|e| e.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn peer(s: &str) -> Option<SocketAddr> {
        Some(SocketAddr::new(ip(s), 40000))
    }

    #[test]
    fn without_trusted_proxies_the_header_is_ignored_and_the_peer_is_the_client() {
        let none = TrustedProxies::default();
        assert_eq!(
            none.client(peer("198.51.100.9"), Some("203.0.113.1")),
            Some(ip("198.51.100.9"))
        );
    }

    #[test]
    fn a_trusted_proxy_is_seen_through_to_the_right_most_untrusted_address() {
        let trusted = proxies(&["10.0.0.0/8", "192.0.2.1"]);
        // The client's own claim (1.1.1.1) is left of what the proxies saw.
        assert_eq!(
            trusted.client(peer("10.1.2.3"), Some("1.1.1.1, 203.0.113.7, 192.0.2.1")),
            Some(ip("203.0.113.7"))
        );
        assert_eq!(
            trusted.client(peer("10.1.2.3"), Some("[2001:db8::5]:1234")),
            Some(ip("2001:db8::5"))
        );
        assert_eq!(trusted.client(peer("10.1.2.3"), None), Some(ip("10.1.2.3")));
        // Only trusted hops: the left-most of them.
        assert_eq!(
            trusted.client(peer("10.1.2.3"), Some("10.9.9.9")),
            Some(ip("10.9.9.9"))
        );
    }

    #[test]
    fn an_unreadable_header_leaves_the_proxy_as_the_client() {
        let trusted = proxies(&["127.0.0.1"]);
        assert_eq!(
            trusted.client(peer("127.0.0.1"), Some("203.0.113.7, not-an-address")),
            Some(ip("127.0.0.1"))
        );
    }

    #[test]
    fn a_mapped_ipv4_peer_matches_its_ipv4_block() {
        let trusted = proxies(&["10.0.0.0/8"]);
        assert_eq!(
            trusted.client(peer("::ffff:10.0.0.1"), Some("203.0.113.7")),
            Some(ip("203.0.113.7"))
        );
    }

    #[test]
    fn an_entry_that_is_no_address_is_named() {
        let err = TrustedProxies::parse(&["10.0.0.0/8".into(), "proxy.local".into()]).unwrap_err();
        assert!(err.contains("\"proxy.local\""), "{err}");
    }
}
