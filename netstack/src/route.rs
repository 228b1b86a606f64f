//! Static IPv4 routes: connected subnets plus an optional default gateway.

use std::net::Ipv4Addr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub prefix: Ipv4Addr,
    pub prefix_len: u8,
    pub iface: usize,
    /// Next hop; `None` for a connected route (the destination is on-link).
    pub gateway: Option<Ipv4Addr>,
}

impl Route {
    fn mask(&self) -> u32 {
        if self.prefix_len == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix_len)
        }
    }
    fn matches(&self, dst: Ipv4Addr) -> bool {
        (u32::from(dst) ^ u32::from(self.prefix)) & self.mask() == 0
    }
}

/// Longest-prefix match over a short list, kept sorted longest first. Node
/// route tables are a handful of entries; a scan beats a trie at that size.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    pub fn add(&mut self, r: Route) {
        let at = self
            .routes
            .partition_point(|x| x.prefix_len >= r.prefix_len);
        self.routes.insert(at, r);
    }

    /// The routes of interface `iface` with address `addr/prefix_len`: its
    /// connected subnet, and the default route if it has the gateway.
    pub fn add_iface(
        &mut self,
        iface: usize,
        addr: Ipv4Addr,
        prefix_len: u8,
        gateway: Option<Ipv4Addr>,
    ) {
        let prefix_len = prefix_len.min(32);
        let mask = if prefix_len == 0 {
            0
        } else {
            u32::MAX << (32 - prefix_len)
        };
        self.add(Route {
            prefix: Ipv4Addr::from(u32::from(addr) & mask),
            prefix_len,
            iface,
            gateway: None,
        });
        if let Some(gw) = gateway {
            self.add(Route {
                prefix: Ipv4Addr::UNSPECIFIED,
                prefix_len: 0,
                iface,
                gateway: Some(gw),
            });
        }
    }

    /// The interface and next hop for `dst`.
    #[inline]
    pub fn lookup(&self, dst: Ipv4Addr) -> Option<(usize, Ipv4Addr)> {
        let r = self.routes.iter().find(|r| r.matches(dst))?;
        Some((r.iface, r.gateway.unwrap_or(dst)))
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins_and_default_catches_the_rest() {
        let mut t = RouteTable::default();
        t.add(Route {
            prefix: Ipv4Addr::UNSPECIFIED,
            prefix_len: 0,
            iface: 0,
            gateway: Some(Ipv4Addr::new(10, 0, 0, 254)),
        });
        t.add(Route {
            prefix: Ipv4Addr::new(10, 0, 0, 0),
            prefix_len: 24,
            iface: 0,
            gateway: None,
        });
        t.add(Route {
            prefix: Ipv4Addr::new(10, 1, 0, 0),
            prefix_len: 16,
            iface: 1,
            gateway: None,
        });
        assert_eq!(
            t.lookup(Ipv4Addr::new(10, 0, 0, 9)),
            Some((0, Ipv4Addr::new(10, 0, 0, 9)))
        );
        assert_eq!(
            t.lookup(Ipv4Addr::new(10, 1, 7, 9)),
            Some((1, Ipv4Addr::new(10, 1, 7, 9)))
        );
        assert_eq!(
            t.lookup(Ipv4Addr::new(8, 8, 8, 8)),
            Some((0, Ipv4Addr::new(10, 0, 0, 254)))
        );
        let mut no_default = RouteTable::default();
        no_default.add(Route {
            prefix: Ipv4Addr::new(10, 0, 0, 0),
            prefix_len: 24,
            iface: 0,
            gateway: None,
        });
        assert_eq!(no_default.lookup(Ipv4Addr::new(8, 8, 8, 8)), None);
    }
}
