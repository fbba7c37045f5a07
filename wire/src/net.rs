//! IPv4 ranges as the cluster writes them (`10.42.0.0/16`): the one parser that the master (pod
//! range, node subnets) and the workers (bridge subnet, routes) share.

use core::fmt;
use core::net::Ipv4Addr;

/// An IPv4 network: an address with its host bits zero, and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv4Cidr {
    network: Ipv4Addr,
    prefix: u8,
}

/// Why a string is not an IPv4 range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CidrError {
    /// Not `a.b.c.d/n` with `n` at most 32.
    Syntax,
    /// The address has bits set below the prefix; the range meant is probably this one.
    HostBits(Ipv4Cidr),
}

impl fmt::Display for CidrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CidrError::Syntax => f.write_str("not an IPv4 range like 10.42.0.0/16"),
            CidrError::HostBits(meant) => write!(f, "host bits are set; did you mean {meant}?"),
        }
    }
}

impl Ipv4Cidr {
    /// `network/prefix`; `None` when `prefix` > 32 or host bits are set.
    pub fn new(network: Ipv4Addr, prefix: u8) -> Option<Ipv4Cidr> {
        let c = Ipv4Cidr { network, prefix };
        (prefix <= 32 && u32::from(network) & !c.mask() == 0).then_some(c)
    }

    /// Parses `a.b.c.d/n`; host bits must be zero.
    pub fn parse(s: &str) -> Result<Ipv4Cidr, CidrError> {
        let (addr, prefix) = s.split_once('/').ok_or(CidrError::Syntax)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| CidrError::Syntax)?;
        if prefix.is_empty() || prefix.len() > 2 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CidrError::Syntax);
        }
        let prefix: u8 = prefix.parse().map_err(|_| CidrError::Syntax)?;
        if prefix > 32 {
            return Err(CidrError::Syntax);
        }
        let mask = mask(prefix);
        Ipv4Cidr::new(addr, prefix).ok_or(CidrError::HostBits(Ipv4Cidr {
            network: Ipv4Addr::from(u32::from(addr) & mask),
            prefix,
        }))
    }

    /// The network address.
    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The netmask as an integer.
    pub fn mask(&self) -> u32 {
        mask(self.prefix)
    }

    /// Whether `addr` is inside the range.
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & self.mask() == u32::from(self.network)
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::{CidrError, Ipv4Cidr};
    use core::net::Ipv4Addr;

    #[test]
    fn ranges_parse_or_say_why_not() {
        let c = Ipv4Cidr::parse("10.42.0.0/16").unwrap();
        assert_eq!((c.network(), c.prefix()), (Ipv4Addr::new(10, 42, 0, 0), 16));
        assert!(c.contains(Ipv4Addr::new(10, 42, 255, 1)));
        assert!(!c.contains(Ipv4Addr::new(10, 43, 0, 1)));
        assert_eq!(Ipv4Cidr::parse("0.0.0.0/0").unwrap().mask(), 0);
        assert_eq!(Ipv4Cidr::parse("192.0.2.7/32").unwrap().mask(), u32::MAX);
        for bad in [
            "10.42.0.0",
            "10.42.0.0/33",
            "10.42.0/16",
            "10.42.0.0/",
            "10.42.0.0/+8",
            "x/8",
        ] {
            assert_eq!(Ipv4Cidr::parse(bad), Err(CidrError::Syntax), "{bad}");
        }
        let Err(CidrError::HostBits(meant)) = Ipv4Cidr::parse("10.42.0.1/16") else {
            panic!("host bits accepted");
        };
        assert_eq!(meant, Ipv4Cidr::parse("10.42.0.0/16").unwrap());
    }
}
