//! Where webhooks may be sent. Admins register the URLs, but a request the notifier makes from
//! inside the network must not become a way to reach what only the inside can: loopback, private
//! networks, link-local (cloud metadata at 169.254.169.254) and the like are refused unless
//! `WEBHOOK_ALLOW_PRIVATE` is set. Names are checked when they are resolved, on every connection,
//! so a name that later points inside (DNS rebinding) is refused too.

use std::net::{IpAddr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Resolves names to their public addresses only.
pub struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let public: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| is_public(a.ip()))
                .collect();
            if public.is_empty() {
                return Err(
                    format!("{host} has no public address (WEBHOOK_ALLOW_PRIVATE is off)").into(),
                );
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

/// Why `url` may not be called when private targets are refused; `None` if it may. Only literal
/// addresses are judged here: names go through [`PublicOnly`].
pub fn refusal(url: &str) -> Option<String> {
    let host = url::Url::parse(url).ok()?.host()?.to_owned();
    let ip = match host {
        url::Host::Ipv4(ip) => IpAddr::V4(ip),
        url::Host::Ipv6(ip) => IpAddr::V6(ip),
        url::Host::Domain(_) => return None,
    };
    (!is_public(ip)).then(|| format!("{ip} is not a public address (WEBHOOK_ALLOW_PRIVATE is off)"))
}

/// Globally routable: not loopback, private, link-local, shared (CGNAT), unspecified, multicast,
/// documentation or otherwise reserved.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (b == 18 || b == 19))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link-local
                || first == 0x2001 && v6.segments()[1] == 0x0db8) // documentation
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inside_addresses_are_not_public_and_outside_ones_are() {
        for inside in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public(inside.parse().expect("ip")), "{inside}");
        }
        for outside in ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(is_public(outside.parse().expect("ip")), "{outside}");
        }
    }

    #[test]
    fn literal_inside_addresses_are_refused_and_names_left_to_the_resolver() {
        assert!(refusal("http://127.0.0.1:9000/hook").is_some());
        assert!(refusal("https://[::1]/hook").is_some());
        assert!(refusal("https://169.254.169.254/latest/meta-data").is_some());
        assert!(refusal("https://hooks.example.com/x").is_none());
        assert!(refusal("https://93.184.216.34/x").is_none());
    }
}
