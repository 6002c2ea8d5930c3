//! Customers' own domains: the `serve` flags of [`DomainArgs`].

use std::{
    net::{IpAddr, SocketAddr},
    str::FromStr,
    time::Duration,
};

use clap::Args;
use minispod_support::parse_duration;

/// How customers' own domains are proven and served (README, "Their own
/// domain").
#[derive(Debug, Clone, Args)]
pub struct DomainArgs {
    /// A cert-manager ClusterIssuer that issues certificates for customers'
    /// verified domains (it must be able to solve HTTP-01 for any name);
    /// empty uses --cert-issuer; with neither, verified domains are served
    /// with the ingress controller's default certificate.
    #[arg(long, env = "MINISPOD_CUSTOM_DOMAIN_ISSUER", default_value = "")]
    pub custom_domain_issuer: String,

    /// How many domains one subscription may have (FAILED ones aside).
    #[arg(long, env = "MINISPOD_DOMAINS_PER_SUBSCRIPTION", default_value_t = 5, value_parser = clap::value_parser!(i64).range(0..=100))]
    pub domains_per_subscription: i64,

    /// The wait before a new domain's first ownership check and after its
    /// first failed one; each further failure doubles it, up to
    /// --domain-check-max.
    #[arg(long, env = "MINISPOD_DOMAIN_CHECK_EVERY", default_value = "10s", value_parser = parse_duration)]
    pub domain_check_every: Duration,

    /// The longest wait between two ownership checks of a pending domain.
    #[arg(long, env = "MINISPOD_DOMAIN_CHECK_MAX", default_value = "10m", value_parser = parse_duration)]
    pub domain_check_max: Duration,

    /// How long a domain may stay pending: then it is FAILED with the last
    /// check's reason, and its host is free for anyone to add.
    #[arg(long, env = "MINISPOD_DOMAIN_CHECK_GIVE_UP", default_value = "24h", value_parser = parse_duration)]
    pub domain_check_give_up: Duration,

    /// HOST=ADDRESS[:PORT] (repeatable, or comma-separated): the ownership
    /// check connects there for HOST (`*`: every host) instead of where DNS
    /// says, and may then reach an internal address. For installations
    /// behind split DNS, whose public names resolve inside to a private
    /// ingress address; and for tests.
    #[arg(
        long = "domain-check-resolve",
        env = "MINISPOD_DOMAIN_CHECK_RESOLVE",
        value_delimiter = ','
    )]
    pub domain_check_resolve: Vec<ResolveRule>,
}

/// Where the ownership check reaches a host instead of where DNS says
/// (`--domain-check-resolve HOST=ADDRESS[:PORT]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolveRule {
    /// The host (lower case), or `*` for every host.
    pub host: String,
    /// The address connected to (port 80 unless given).
    pub addr: SocketAddr,
}

impl FromStr for ResolveRule {
    type Err = String;

    /// `HOST=IP`, `HOST=IP:PORT` or `HOST=[IPv6]:PORT`; HOST may be `*`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (host, addr) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?}: expected HOST=ADDRESS[:PORT]"))?;
        let host = host.trim().trim_end_matches('.').to_ascii_lowercase();
        if host.is_empty() {
            return Err(format!("{s:?}: the host is empty (* is every host)"));
        }
        let addr = addr.trim();
        let addr = match addr.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                let ip = addr
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<IpAddr>()
                    .map_err(|_| format!("{s:?}: {addr:?} is not an IP address[:port]"))?;
                SocketAddr::new(ip, 80)
            }
        };
        Ok(ResolveRule { host, addr })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_rules_take_a_host_or_star_and_an_address_with_an_optional_port() {
        let r: ResolveRule = "Shop.Example.com=203.0.113.7".parse().unwrap();
        assert_eq!(r.host, "shop.example.com");
        assert_eq!(r.addr, "203.0.113.7:80".parse().unwrap());
        let r: ResolveRule = "*=127.0.0.1:8080".parse().unwrap();
        assert_eq!((r.host.as_str(), r.addr.port()), ("*", 8080));
        let r: ResolveRule = "x.example=[2001:db8::1]:81".parse().unwrap();
        assert_eq!(r.addr, "[2001:db8::1]:81".parse().unwrap());
        let r: ResolveRule = "x.example=2001:db8::1".parse().unwrap();
        assert_eq!(r.addr.port(), 80);
        for bad in [
            "x.example",
            "=1.2.3.4",
            "x.example=host.example",
            "x=1.2.3.4:99999",
        ] {
            assert!(bad.parse::<ResolveRule>().is_err(), "{bad}");
        }
    }
}
