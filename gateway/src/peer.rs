//! Which client addresses count as one host, for the limits kept per address (MQTT handshakes, HTTP sign-in attempts).

use std::net::IpAddr;

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
}
