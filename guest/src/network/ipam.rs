//! IPv4 address management for one network: which addresses of its subnet
//! are handed out, to whom, and which comes next.
//!
//! The pool is rebuilt at engine start from the records of running
//! containers (they carry their addresses), so the container records are the
//! persistent truth and no second file can disagree with them. Allocation is
//! sequential and rotating, like Docker's: a released address is not handed
//! out again until the range wraps around, so a stale connection to a dead
//! container's address does not reach its successor.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IpamError {
    #[error("no available IPv4 addresses on this network's address pools: {subnet}")]
    Exhausted { subnet: Ipv4Net },
    #[error("Address already in use: {address}")]
    InUse { address: Ipv4Addr },
    #[error("invalid address {address}: it does not belong to the network's subnet {subnet}")]
    OutOfSubnet { address: Ipv4Addr, subnet: Ipv4Net },
    #[error("invalid address {address}: it is the network or broadcast address of {subnet}")]
    Reserved { address: Ipv4Addr, subnet: Ipv4Net },
}

/// The addresses of one network.
#[derive(Debug, Clone)]
pub struct Pool {
    subnet: Ipv4Net,
    /// Where dynamic addresses come from (`--ip-range`, else the subnet).
    range: Ipv4Net,
    gateway: Option<Ipv4Addr>,
    allocated: BTreeMap<Ipv4Addr, String>,
    last: Option<Ipv4Addr>,
}

impl Pool {
    pub fn new(subnet: Ipv4Net, range: Option<Ipv4Net>, gateway: Option<Ipv4Addr>) -> Pool {
        Pool {
            subnet: subnet.trunc(),
            range: range.unwrap_or(subnet).trunc(),
            gateway,
            allocated: BTreeMap::new(),
            last: None,
        }
    }

    pub fn subnet(&self) -> Ipv4Net {
        self.subnet
    }

    /// Gives `owner` the address it asked for, or the next free one.
    pub fn allocate(
        &mut self,
        requested: Option<Ipv4Addr>,
        owner: &str,
    ) -> Result<Ipv4Addr, IpamError> {
        let address = match requested {
            Some(address) => {
                self.check_static(address)?;
                address
            }
            None => self.next_free()?,
        };
        self.allocated.insert(address, owner.to_owned());
        if requested.is_none() {
            self.last = Some(address);
        }
        Ok(address)
    }

    /// Marks an address taken again (restoring a running container).
    pub fn mark(&mut self, address: Ipv4Addr, owner: &str) {
        self.allocated.insert(address, owner.to_owned());
    }

    pub fn release(&mut self, address: Ipv4Addr) {
        self.allocated.remove(&address);
    }

    /// Whether anything holds an address (the gateway does not count).
    pub fn in_use(&self) -> bool {
        !self.allocated.is_empty()
    }

    fn check_static(&self, address: Ipv4Addr) -> Result<(), IpamError> {
        if !self.subnet.contains(&address) {
            return Err(IpamError::OutOfSubnet {
                address,
                subnet: self.subnet,
            });
        }
        if self.subnet.prefix_len() < 31
            && (address == self.subnet.network() || address == self.subnet.broadcast())
        {
            return Err(IpamError::Reserved {
                address,
                subnet: self.subnet,
            });
        }
        if Some(address) == self.gateway || self.allocated.contains_key(&address) {
            return Err(IpamError::InUse { address });
        }
        Ok(())
    }

    /// The first free address after the last one handed out, wrapping.
    fn next_free(&self) -> Result<Ipv4Addr, IpamError> {
        let first = u32::from(self.range.network());
        let last = u32::from(self.range.broadcast());
        let size = u64::from(last - first) + 1;
        let start = self
            .last
            .map(u32::from)
            .filter(|l| (first..=last).contains(l))
            .map_or(first, |l| l.wrapping_add(1));
        for step in 0..size {
            let candidate = first + ((u64::from(start - first) + step) % size) as u32;
            let address = Ipv4Addr::from(candidate);
            if self.check_static(address).is_ok() {
                return Ok(address);
            }
        }
        Err(IpamError::Exhausted {
            subnet: self.subnet,
        })
    }
}

/// The subnets Docker's default address pools hand to new networks, in order:
/// 172.17–31.0.0/16, then 192.168.0–240.0/20.
pub fn default_subnets() -> impl Iterator<Item = Ipv4Net> {
    let b = (17u8..=31).map(|n| Ipv4Net::new(Ipv4Addr::new(172, n, 0, 0), 16));
    let c = (0u8..16).map(|n| Ipv4Net::new(Ipv4Addr::new(192, 168, n * 16, 0), 20));
    b.chain(c).filter_map(Result::ok)
}

/// The first of `reserved` that `subnet` overlaps.
pub fn reserved_overlap(subnet: &Ipv4Net, reserved: &[Ipv4Net]) -> Option<Ipv4Net> {
    reserved.iter().find(|r| overlaps(r, subnet)).copied()
}

/// Whether two subnets share any address.
pub fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> Pool {
        Pool::new(
            "172.18.0.0/29".parse().unwrap(),
            None,
            Some("172.18.0.1".parse().unwrap()),
        )
    }

    #[test]
    fn allocation_skips_network_gateway_and_broadcast_then_runs_out() {
        let mut pool = pool();
        let got: Vec<String> = (0..5)
            .map(|i| pool.allocate(None, &format!("c{i}")).unwrap().to_string())
            .collect();
        assert_eq!(
            got,
            [
                "172.18.0.2",
                "172.18.0.3",
                "172.18.0.4",
                "172.18.0.5",
                "172.18.0.6"
            ]
        );
        assert!(matches!(
            pool.allocate(None, "c6"),
            Err(IpamError::Exhausted { .. })
        ));
    }

    #[test]
    fn released_addresses_come_back_only_after_the_range_wraps() {
        let mut pool = pool();
        let a = pool.allocate(None, "a").unwrap();
        pool.release(a);
        let b = pool.allocate(None, "b").unwrap();
        assert_ne!(a, b, "no immediate reuse");
        for i in 0..3 {
            pool.allocate(None, &format!("x{i}")).unwrap();
        }
        assert_eq!(pool.allocate(None, "y").unwrap(), a, "wrapped around");
    }

    #[test]
    fn static_addresses_are_checked() {
        let mut pool = pool();
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(
            pool.allocate(Some(ip("172.18.0.5")), "a"),
            Ok(ip("172.18.0.5"))
        );
        assert!(matches!(
            pool.allocate(Some(ip("172.18.0.5")), "b"),
            Err(IpamError::InUse { .. })
        ));
        assert!(matches!(
            pool.allocate(Some(ip("172.18.0.1")), "b"),
            Err(IpamError::InUse { .. })
        ));
        assert!(matches!(
            pool.allocate(Some(ip("172.18.0.7")), "b"),
            Err(IpamError::Reserved { .. })
        ));
        assert!(matches!(
            pool.allocate(Some(ip("10.0.0.2")), "b"),
            Err(IpamError::OutOfSubnet { .. })
        ));
    }

    #[test]
    fn ip_range_limits_dynamic_addresses() {
        let mut pool = Pool::new(
            "10.1.0.0/24".parse().unwrap(),
            Some("10.1.0.128/30".parse().unwrap()),
            Some("10.1.0.1".parse().unwrap()),
        );
        assert_eq!(pool.allocate(None, "a").unwrap().to_string(), "10.1.0.128");
        assert_eq!(pool.allocate(None, "b").unwrap().to_string(), "10.1.0.129");
        // Static addresses may lie anywhere in the subnet.
        assert!(pool
            .allocate(Some("10.1.0.9".parse().unwrap()), "c")
            .is_ok());
    }

    #[test]
    fn default_pools_start_like_dockers() {
        let first: Vec<String> = default_subnets().take(2).map(|n| n.to_string()).collect();
        assert_eq!(first, ["172.17.0.0/16", "172.18.0.0/16"]);
        assert!(overlaps(
            &"10.0.0.0/8".parse().unwrap(),
            &"10.1.0.0/24".parse().unwrap()
        ));
        assert!(!overlaps(
            &"10.0.0.0/24".parse().unwrap(),
            &"10.0.1.0/24".parse().unwrap()
        ));
    }

    #[test]
    fn subnets_over_the_vms_own_network_are_found() {
        let nic: Vec<Ipv4Net> = vec!["10.0.2.0/24".parse().unwrap()];
        for over in ["10.0.2.0/24", "10.0.0.0/16", "10.0.2.128/25", "0.0.0.0/0"] {
            assert_eq!(
                reserved_overlap(&over.parse().unwrap(), &nic),
                Some(nic[0]),
                "{over}"
            );
        }
        assert_eq!(
            reserved_overlap(&"10.0.3.0/24".parse().unwrap(), &nic),
            None
        );
        assert!(
            default_subnets().all(|s| reserved_overlap(&s, &nic).is_none()),
            "Docker's pools never reach QEMU's network"
        );
    }
}
