//! Who is asking: the client address that per-address limits (sign-in attempts, argon2 work) key on, seen through the reverse proxies the operator trusts.
//!
//! Behind an Ingress every request comes from the proxy, so without this all users would share
//! one sign-in bucket and one flood would lock everyone out. `X-Forwarded-For` is believed only
//! from a peer listed in `http.trusted_proxies`; anyone else could write any address into it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

pub use gateway::peer::TrustedProxies;
use warp::Filter;

/// The client address of a request, as [`TrustedProxies::client`] decides it.
pub fn client_ip(
    trusted: Arc<TrustedProxies>,
) -> impl Filter<Extract = (Option<IpAddr>,), Error = std::convert::Infallible> + Clone {
    warp::addr::remote()
        .and(warp::header::headers_cloned())
        .map(
            move |peer: Option<SocketAddr>, headers: warp::http::HeaderMap| {
                // Several headers are one list, in order. A value that is not text cannot be read,
                // which `client` treats like any unreadable entry.
                let values: Vec<&str> = headers
                    .get_all("x-forwarded-for")
                    .iter()
                    .map(|v| v.to_str().unwrap_or("?"))
                    .collect();
                let forwarded = (!values.is_empty()).then(|| values.join(","));
                trusted.client(peer, forwarded.as_deref())
            },
        )
}
