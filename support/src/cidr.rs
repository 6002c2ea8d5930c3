//! Network ranges (CIDRs) as NetworkPolicy takes them, shared by the
//! control plane's flags and the namespace policy it renders.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Parses a CIDR as (network address, prefix length); the address must be the
/// network's (no host bits), as NetworkPolicy validation requires.
pub fn parse_cidr(cidr: &str) -> Result<(IpAddr, u8), String> {
    let bad = || format!("{cidr:?} is not a CIDR such as 10.42.0.0/16 or fd00::/8");
    let (ip, len) = cidr.trim().split_once('/').ok_or_else(bad)?;
    let ip: IpAddr = ip.parse().map_err(|_| bad())?;
    let len: u8 = len.parse().map_err(|_| bad())?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if len > max {
        return Err(bad());
    }
    if masked(ip, len) != ip {
        return Err(format!(
            "{cidr:?} has host bits set: the network is {}/{len}",
            masked(ip, len)
        ));
    }
    Ok((ip, len))
}

/// `ip` with every bit past the first `len` cleared: its network's address.
pub fn masked(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
        }
    }
}
