//! Which address to hand out next: pure arithmetic over an IPv4 subnet, with
//! the network, broadcast and gateway addresses reserved. Allocation walks
//! forward from the last address handed out (wrapping around), so a just
//! released address is the last to be reused: a late packet for a deleted
//! pod does not reach its successor.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error(
        "subnet {subnet} is too small for pods: it needs room for a gateway and at least one pod (at most /30)"
    )]
    TooSmall { subnet: Ipv4Net },
    #[error("gateway {gateway} is not a usable host address of subnet {subnet}")]
    GatewayOutside { gateway: Ipv4Addr, subnet: Ipv4Net },
}

/// The addresses of one subnet that pods may get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
}

impl Pool {
    /// A pool over `subnet` (normalised to its network address) whose
    /// gateway is `gateway`, or the first host address when `None`.
    pub fn new(subnet: Ipv4Net, gateway: Option<Ipv4Addr>) -> Result<Self, PoolError> {
        let subnet = subnet.trunc();
        if subnet.prefix_len() > 30 {
            return Err(PoolError::TooSmall { subnet });
        }
        let first = u32::from(subnet.network()) + 1;
        let gateway = gateway.unwrap_or(Ipv4Addr::from(first));
        let pool = Pool { subnet, gateway };
        if !pool.is_host(gateway) {
            return Err(PoolError::GatewayOutside { gateway, subnet });
        }
        Ok(pool)
    }

    pub fn subnet(&self) -> Ipv4Net {
        self.subnet
    }

    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    /// Inside the subnet and neither its network nor broadcast address.
    fn is_host(&self, ip: Ipv4Addr) -> bool {
        self.subnet.contains(&ip) && ip != self.subnet.network() && ip != self.subnet.broadcast()
    }

    /// Whether a pod may hold `ip`.
    pub fn is_assignable(&self, ip: Ipv4Addr) -> bool {
        self.is_host(ip) && ip != self.gateway
    }

    /// The next assignable address after `last` (or from the start) that is
    /// not in `used`, wrapping around once; `None` when the pool is full.
    pub fn next_free(&self, used: &HashSet<Ipv4Addr>, last: Option<Ipv4Addr>) -> Option<Ipv4Addr> {
        let first = u32::from(self.subnet.network()) + 1;
        let end = u32::from(self.subnet.broadcast()); // exclusive
        let size = end - first;
        let start = match last {
            Some(ip) if self.is_host(ip) => u32::from(ip) + 1 - first,
            _ => 0,
        };
        (0..size)
            .map(|step| Ipv4Addr::from(first + (start + step) % size))
            .find(|ip| self.is_assignable(*ip) && !used.contains(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(subnet: &str) -> Pool {
        Pool::new(subnet.parse().expect("subnet"), None).expect("pool")
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("ip")
    }

    #[test]
    fn network_broadcast_and_gateway_are_never_handed_out() {
        let pool = pool("10.1.2.0/29"); // .0 network, .1 gateway, .7 broadcast
        let mut used = HashSet::new();
        let mut last = None;
        let mut handed = Vec::new();
        while let Some(next) = pool.next_free(&used, last) {
            used.insert(next);
            handed.push(next);
            last = Some(next);
        }
        let expected: Vec<Ipv4Addr> = (2..=6).map(|n| Ipv4Addr::new(10, 1, 2, n)).collect();
        assert_eq!(handed, expected);
        assert_eq!(pool.gateway(), ip("10.1.2.1"));
    }

    #[test]
    fn a_released_address_is_reused_last() {
        let pool = pool("10.1.2.0/29");
        let used: HashSet<_> = [ip("10.1.2.3"), ip("10.1.2.4")].into();
        // .2 was just released after .4 was handed out: continue at .5.
        assert_eq!(
            pool.next_free(&used, Some(ip("10.1.2.4"))),
            Some(ip("10.1.2.5"))
        );
        // At the end of the range, wrap to the start.
        assert_eq!(
            pool.next_free(&used, Some(ip("10.1.2.6"))),
            Some(ip("10.1.2.2"))
        );
    }

    #[test]
    fn a_full_pool_says_so() {
        let pool = pool("10.1.2.0/30"); // only .2 is assignable
        let used: HashSet<_> = [ip("10.1.2.2")].into();
        assert_eq!(pool.next_free(&used, None), None);
        assert_eq!(pool.next_free(&HashSet::new(), None), Some(ip("10.1.2.2")));
    }

    #[test]
    fn bad_subnets_and_gateways_are_rejected() {
        assert!(matches!(
            Pool::new("10.0.0.0/31".parse().expect("net"), None),
            Err(PoolError::TooSmall { .. })
        ));
        let err = Pool::new("10.0.0.0/24".parse().expect("net"), Some(ip("10.0.1.1")))
            .expect_err("outside");
        assert!(err.to_string().contains("10.0.1.1"));
        // A host bit in the subnet is normalised away.
        assert_eq!(pool("10.1.2.77/24").subnet().to_string(), "10.1.2.0/24");
        // A custom gateway is reserved instead of the first address.
        let custom =
            Pool::new("10.1.2.0/29".parse().expect("net"), Some(ip("10.1.2.6"))).expect("pool");
        assert_eq!(
            custom.next_free(&HashSet::new(), None),
            Some(ip("10.1.2.1"))
        );
        assert!(!custom.is_assignable(ip("10.1.2.6")));
    }
}
