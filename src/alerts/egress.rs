//! Where webhook deliveries may go: public addresses only, checked when a webhook is created and
//! again, after name resolution, at every delivery.
//!
//! A webhook URL is chosen by a user, and the server is the one that calls it: left unchecked,
//! any user could make the server reach what only it can reach (a database admin page on
//! loopback, a cloud metadata service on a link-local address, the office network). A check at
//! creation alone is not enough: a name can resolve to 127.0.0.1 later (DNS rebinding). So the
//! delivery client resolves names through [`PublicResolver`], which drops every address that is
//! not public before the connection is made, and literal addresses are checked before sending.
//! Creation checks only what needs no lookup (literal addresses, `localhost`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Which addresses deliveries may reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Egress {
    /// Loopback too (`alerts.webhook_allow_loopback`): for development and tests, whose
    /// receivers listen on 127.0.0.1. Private and link-local networks stay refused.
    pub allow_loopback: bool,
}

impl Egress {
    /// From the `[alerts]` settings.
    pub fn from_settings(alerts: &crate::config::AlertSettings) -> Egress {
        Egress {
            allow_loopback: alerts.webhook_allow_loopback,
        }
    }

    /// Why `ip` may not be reached, or `None` if it may.
    pub fn refuses(self, ip: IpAddr) -> Option<&'static str> {
        let ip = match ip {
            // An IPv4 address written as IPv6 reaches the IPv4 host.
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        if ip.is_loopback() {
            return (!self.allow_loopback).then_some("a loopback address");
        }
        match ip {
            IpAddr::V4(v4) => refuses_v4(v4),
            IpAddr::V6(v6) => refuses_v6(v6),
        }
    }

    /// Checks a URL at creation: a literal address must be allowed, and a name must not be
    /// `localhost` (or under it). Other names are not resolved here, whatever they resolve to
    /// now may change: every delivery checks the addresses it is about to use.
    pub fn check(self, url: &Url) -> Result<(), String> {
        let refused = |what: &str| Err(format!("url must not point at {what}"));
        match url.host() {
            None => Err("url has no host".to_owned()),
            Some(url::Host::Ipv4(v4)) => self.refuses(IpAddr::V4(v4)).map_or(Ok(()), refused),
            Some(url::Host::Ipv6(v6)) => self.refuses(IpAddr::V6(v6)).map_or(Ok(()), refused),
            Some(url::Host::Domain(name)) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                if !self.allow_loopback && (name == "localhost" || name.ends_with(".localhost")) {
                    return refused("a loopback address");
                }
                Ok(())
            }
        }
    }

    /// The check of a delivery's URL before it is sent: literal addresses (which the resolver
    /// never sees) must be allowed. Names are checked by [`PublicResolver`].
    pub fn check_literal(self, url: &Url) -> Result<(), String> {
        let ip = match url.host() {
            Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
            Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
            Some(url::Host::Domain(_)) => return Ok(()),
            None => return Err("the url has no host".to_owned()),
        };
        match self.refuses(ip) {
            Some(what) => Err(format!("refused: {ip} is {what}")),
            None => Ok(()),
        }
    }

    /// The resolver for the delivery client.
    pub fn resolver(self) -> Arc<PublicResolver> {
        Arc::new(PublicResolver { egress: self })
    }
}

fn refuses_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_unspecified() || a == 0 {
        Some("an unspecified address")
    } else if ip.is_private() {
        Some("a private address")
    } else if ip.is_link_local() {
        Some("a link-local address")
    } else if ip.is_multicast() || ip.is_broadcast() || a >= 240 {
        Some("a multicast or reserved address")
    } else if a == 100 && (64..128).contains(&b) {
        Some("a shared (carrier-grade NAT) address")
    } else if a == 198 && (18..20).contains(&b) {
        Some("a benchmarking network address")
    } else {
        None
    }
}

fn refuses_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    if ip.is_unspecified() {
        Some("an unspecified address")
    } else if first & 0xfe00 == 0xfc00 {
        Some("a unique-local address")
    } else if first & 0xffc0 == 0xfe80 || first & 0xffc0 == 0xfec0 {
        Some("a link-local address")
    } else if ip.is_multicast() {
        Some("a multicast address")
    } else if let Some(v4) = nat64(ip) {
        // 64:ff9b::/96 reaches the IPv4 address in its last 32 bits.
        refuses_v4(v4)
    } else {
        None
    }
}

/// The IPv4 address embedded in a well-known NAT64 address.
fn nat64(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    (s[..6] == [0x64, 0xff9b, 0, 0, 0, 0]).then(|| {
        let [.., a, b, c, d] = ip.octets();
        Ipv4Addr::new(a, b, c, d)
    })
}

/// Resolves names for webhook deliveries and keeps only the addresses [`Egress`] allows; a
/// name left with none fails the attempt, which is recorded with the reason.
#[derive(Debug)]
pub struct PublicResolver {
    egress: Egress,
}

impl Resolve for PublicResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let egress = self.egress;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = resolved
                .iter()
                .copied()
                .filter(|a| egress.refuses(a.ip()).is_none())
                .collect();
            if allowed.is_empty() {
                let why = resolved
                    .first()
                    .and_then(|a| egress.refuses(a.ip()).map(|w| format!("{} is {w}", a.ip())))
                    .unwrap_or_else(|| "it has no address".to_owned());
                return Err(
                    format!("refused: {host} resolves to no public address ({why})").into(),
                );
            }
            let addrs: Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(egress: Egress, ip: &str) -> bool {
        egress.refuses(ip.parse().unwrap()).is_some()
    }

    #[test]
    fn internal_addresses_of_every_kind_are_refused_and_public_ones_pass() {
        let strict = Egress::default();
        for ip in [
            "127.0.0.1",
            "127.1.2.3",
            "0.0.0.0",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(refused(strict, ip), "{ip} allowed");
        }
        for ip in [
            "93.184.215.14",
            "2606:2800:21f:cb07:6820:80da:af6b:8b2c",
            "1.1.1.1",
        ] {
            assert!(!refused(strict, ip), "{ip} refused");
        }
    }

    #[test]
    fn allowing_loopback_allows_nothing_else() {
        let dev = Egress {
            allow_loopback: true,
        };
        assert!(!refused(dev, "127.0.0.1"));
        assert!(!refused(dev, "::1"));
        assert!(refused(dev, "10.0.0.1"));
        assert!(refused(dev, "169.254.169.254"));
    }

    #[test]
    fn a_url_naming_loopback_in_any_spelling_is_refused_at_creation() {
        let strict = Egress::default();
        for raw in [
            "http://127.0.0.1:8080/hook",
            "http://2130706433/hook",
            "http://0x7f.1/hook",
            "http://[::1]/hook",
            "http://[::ffff:127.0.0.1]/hook",
            "http://localhost/hook",
            "http://api.localhost./hook",
            "http://169.254.169.254/latest/meta-data",
        ] {
            let url = Url::parse(raw).unwrap();
            assert!(strict.check(&url).is_err(), "{raw} accepted");
            assert!(strict.check_literal(&url).is_err() || url.domain().is_some());
        }
    }
}
