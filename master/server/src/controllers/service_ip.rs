//! Service virtual IPs: the master gives each service an address of its service range
//! (k3s's `--service-cidr 10.43.0.0/16`) when it is created, and keeps it for the service's
//! life. Pure: no I/O; `api/client.rs` calls [`assign`] under a lock for every service of an
//! apply, and the master's start gives services stored before this existed theirs ([`backfill`]).
//!
//! The allocator hands out the lowest free address. It never gives (nor accepts as a request)
//! the range's network address, its broadcast address (as Kubernetes does for IPv4), nor the
//! first address (`10.43.0.1`): Kubernetes keeps that one for its API service, and Bramble
//! reserves it likewise for the cluster's own use, so that a k3s habit (`10.43.0.1` is never a
//! user's service) stays true.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use bramble_wire::objects::Service;

use super::podnet::parse_cidr;

/// `cluster_ip = "None"`: a headless service.
pub const HEADLESS: &str = "None";

/// The service range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceCidr {
    base: u32,
    prefix: u8,
}

impl ServiceCidr {
    /// `cidr` like `10.43.0.0/16`: between /12 (a million addresses, Kubernetes' limit) and
    /// /29 (five usable addresses).
    pub fn parse(cidr: &str) -> Result<ServiceCidr, String> {
        let (base, prefix) =
            parse_cidr(cidr).map_err(|e| e.replace("like 10.42.0.0/16", "like 10.43.0.0/16"))?;
        if !(12..=29).contains(&prefix) {
            return Err(format!(
                "--service-cidr {cidr}: the service range must be between a /12 and a /29 \
                 (the network, the broadcast and the first address are reserved)"
            ));
        }
        Ok(ServiceCidr { base, prefix })
    }

    /// The range as text (`10.43.0.0/16`).
    pub fn as_string(&self) -> String {
        format!("{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }

    fn size(&self) -> u32 {
        1 << (32 - self.prefix)
    }

    /// First and last address, as numbers.
    fn bounds(&self) -> (u32, u32) {
        (self.base, self.base + (self.size() - 1))
    }

    /// How many addresses services can get (all but network, broadcast and the first one).
    pub fn capacity(&self) -> u32 {
        self.size() - 3
    }

    /// Whether `ip` is inside the range at all.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let (lo, hi) = self.bounds();
        (lo..=hi).contains(&u32::from(ip))
    }

    /// Whether two ranges share an address (the service and pod ranges must not).
    pub fn overlaps(&self, base: u32, prefix: u8) -> bool {
        let (lo, hi) = self.bounds();
        let other_hi = base + ((1u64 << (32 - prefix)) - 1) as u32;
        lo <= other_hi && base <= hi
    }

    /// Why `ip` cannot be a service's address, if it cannot: outside the range, or reserved.
    pub fn check(&self, ip: Ipv4Addr) -> Result<(), String> {
        let (lo, hi) = self.bounds();
        let n = u32::from(ip);
        if !self.contains(ip) {
            return Err(format!(
                "{ip} is outside the service range {}",
                self.as_string()
            ));
        }
        if n == lo || n == lo + 1 || n == hi {
            return Err(format!(
                "{ip} is reserved (the network, first and broadcast addresses of the service \
                 range {} are never given to a service)",
                self.as_string()
            ));
        }
        Ok(())
    }

    /// The lowest address of the range that is not reserved and not in `used`; `None` when the
    /// range is full.
    pub fn allocate(&self, used: &HashSet<Ipv4Addr>) -> Option<Ipv4Addr> {
        let (lo, hi) = self.bounds();
        (lo + 2..hi)
            .map(Ipv4Addr::from)
            .find(|ip| !used.contains(ip))
    }
}

/// Parses a service's stored or requested address (a dotted IPv4 address).
pub fn parse_ip(s: &str) -> Option<Ipv4Addr> {
    s.parse().ok()
}

/// What an apply asks for a service's virtual IP, after [`assign`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assigned {
    /// The address (or `"None"`) to store.
    Ip(String),
    /// Refused, with the message for the user.
    Refused(String),
    /// Refused: the stored address cannot change (a conflict with what is stored).
    Immutable(String),
}

/// The virtual IP to store for `new` (an applied service), given `stored`, the same service as
/// stored (if it exists), and `used`, every address held by another service (including those
/// given earlier in the same apply). Rules:
/// - an existing service keeps its address: `None` in the manifest keeps it, the same value is
///   fine, anything else is refused (immutable, as in Kubernetes: delete and re-create);
/// - a new service (or one stored without an address) gets what it asks: `"None"` (headless),
///   a free address of the range, or the lowest free one when it asks nothing.
pub fn assign(
    range: &ServiceCidr,
    new: &Service,
    stored: Option<&Service>,
    used: &HashSet<Ipv4Addr>,
) -> Assigned {
    let (ns, name) = (&new.meta.namespace, &new.meta.name);
    let want = new.spec.cluster_ip.as_deref();
    if let Some(have) = stored.and_then(|s| s.spec.cluster_ip.as_deref()) {
        return match want {
            None => Assigned::Ip(have.to_string()),
            Some(w) if same(w, have) => Assigned::Ip(have.to_string()),
            Some(w) => Assigned::Immutable(format!(
                "service {ns}/{name}: cluster_ip is immutable ({have} stored, {w} asked): \
                 delete and re-create service {ns}/{name} (`bramble delete service {name} -n \
                 {ns}`, then apply again), or leave cluster_ip out to keep {have}"
            )),
        };
    }
    match want {
        Some(HEADLESS) => Assigned::Ip(HEADLESS.to_string()),
        Some(w) => {
            let Some(ip) = parse_ip(w) else {
                return Assigned::Refused(format!(
                    "service {ns}/{name}: cluster_ip {w:?} is not \"None\" or an IPv4 address \
                     like 10.43.0.20"
                ));
            };
            if let Err(why) = range.check(ip) {
                return Assigned::Refused(format!(
                    "service {ns}/{name}: cluster_ip {why}: ask for a free address of the range \
                     or leave cluster_ip out and the master picks one"
                ));
            }
            if used.contains(&ip) {
                return Assigned::Refused(format!(
                    "service {ns}/{name}: cluster_ip {ip} is taken by another service (`bramble \
                     get services -A` lists them): ask for a free address or leave cluster_ip \
                     out and the master picks one"
                ));
            }
            Assigned::Ip(ip.to_string())
        }
        None => match range.allocate(used) {
            Some(ip) => Assigned::Ip(ip.to_string()),
            None => Assigned::Refused(format!(
                "service {ns}/{name}: the service range {} is full ({} addresses): delete \
                 services that are gone, make some headless (cluster_ip = \"None\"), or \
                 restart the master with a larger --service-cidr",
                range.as_string(),
                range.capacity()
            )),
        },
    }
}

/// Whether two written addresses are the same (`"None"` only equals `"None"`).
fn same(a: &str, b: &str) -> bool {
    a == b || matches!((parse_ip(a), parse_ip(b)), (Some(x), Some(y)) if x == y)
}

/// Every address held by the services, but the one named (`skip`, its namespace and name).
pub fn used_by<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    skip: Option<(&str, &str)>,
) -> HashSet<Ipv4Addr> {
    services
        .into_iter()
        .filter(|s| skip.is_none_or(|(ns, n)| !(s.meta.namespace == ns && s.meta.name == n)))
        .filter_map(|s| s.spec.cluster_ip.as_deref().and_then(parse_ip))
        .collect()
}

/// The services stored without an address (from before service IPs), each with the address to
/// give it: the lowest free ones, in (namespace, name) order. Those that do not fit (range
/// full) are left out.
pub fn backfill(range: &ServiceCidr, services: &[Service]) -> Vec<(Service, String)> {
    let mut used = used_by(services, None);
    let mut missing: Vec<&Service> = services
        .iter()
        .filter(|s| s.spec.cluster_ip.is_none())
        .collect();
    missing
        .sort_by(|a, b| (&a.meta.namespace, &a.meta.name).cmp(&(&b.meta.namespace, &b.meta.name)));
    let mut out = Vec::new();
    for s in missing {
        let Some(ip) = range.allocate(&used) else {
            break;
        };
        used.insert(ip);
        out.push((s.clone(), ip.to_string()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_wire::objects::{Meta, ServiceSpec};

    fn svc(name: &str, ip: Option<&str>) -> Service {
        Service {
            meta: Meta {
                name: name.into(),
                namespace: "default".into(),
                ..Default::default()
            },
            spec: ServiceSpec {
                port: 80,
                target_port: 8080,
                cluster_ip: ip.map(String::from),
                ..Default::default()
            },
        }
    }

    fn ips(list: &[&str]) -> HashSet<Ipv4Addr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn lowest_free_address_skipping_the_reserved_ones() {
        let r = ServiceCidr::parse("10.43.0.0/16").unwrap();
        assert_eq!(r.capacity(), 65533);
        assert_eq!(r.allocate(&ips(&[])), Some("10.43.0.2".parse().unwrap()));
        assert_eq!(
            r.allocate(&ips(&["10.43.0.2", "10.43.0.4"])),
            Some("10.43.0.3".parse().unwrap())
        );
        let small = ServiceCidr::parse("10.43.0.0/29").unwrap();
        assert_eq!(small.capacity(), 5);
        let all = ips(&[
            "10.43.0.2",
            "10.43.0.3",
            "10.43.0.4",
            "10.43.0.5",
            "10.43.0.6",
        ]);
        assert_eq!(small.allocate(&all), None, "10.43.0.7 is the broadcast");
        for reserved in ["10.43.0.0", "10.43.0.1", "10.43.0.7"] {
            assert!(
                small
                    .check(reserved.parse().unwrap())
                    .unwrap_err()
                    .contains("reserved")
            );
        }
        assert!(
            small
                .check("10.43.0.8".parse().unwrap())
                .unwrap_err()
                .contains("outside")
        );
    }

    #[test]
    fn bad_ranges_say_why() {
        assert!(
            ServiceCidr::parse("10.43.0.1/16")
                .unwrap_err()
                .contains("did you mean")
        );
        assert!(
            ServiceCidr::parse("10.43.0.0")
                .unwrap_err()
                .contains("10.43.0.0/16")
        );
        assert!(
            ServiceCidr::parse("10.0.0.0/8")
                .unwrap_err()
                .contains("/12")
        );
        assert!(ServiceCidr::parse("10.43.0.0/30").is_err());
    }

    #[test]
    fn overlap() {
        let r = ServiceCidr::parse("10.43.0.0/16").unwrap();
        let (b, p) = parse_cidr("10.42.0.0/16").unwrap();
        assert!(!r.overlaps(b, p));
        let (b, p) = parse_cidr("10.0.0.0/8").unwrap();
        assert!(r.overlaps(b, p));
        let (b, p) = parse_cidr("10.43.255.0/24").unwrap();
        assert!(r.overlaps(b, p));
        let (b, p) = parse_cidr("10.44.0.0/16").unwrap();
        assert!(!r.overlaps(b, p));
    }

    #[test]
    fn new_services_get_what_they_ask_or_the_lowest_free() {
        let r = ServiceCidr::parse("10.43.0.0/16").unwrap();
        let used = ips(&["10.43.0.2"]);
        assert_eq!(
            assign(&r, &svc("a", None), None, &used),
            Assigned::Ip("10.43.0.3".into())
        );
        assert_eq!(
            assign(&r, &svc("a", Some("None")), None, &used),
            Assigned::Ip("None".into())
        );
        assert_eq!(
            assign(&r, &svc("a", Some("10.43.1.1")), None, &used),
            Assigned::Ip("10.43.1.1".into())
        );
        let Assigned::Refused(e) = assign(&r, &svc("a", Some("10.43.0.2")), None, &used) else {
            panic!()
        };
        assert!(e.contains("default/a") && e.contains("taken"), "{e}");
        let Assigned::Refused(e) = assign(&r, &svc("a", Some("10.44.0.9")), None, &used) else {
            panic!()
        };
        assert!(e.contains("outside the service range 10.43.0.0/16"), "{e}");
        let Assigned::Refused(e) = assign(&r, &svc("a", Some("bogus")), None, &used) else {
            panic!()
        };
        assert!(e.contains("not \"None\""), "{e}");
    }

    #[test]
    fn stored_addresses_are_immutable() {
        let r = ServiceCidr::parse("10.43.0.0/16").unwrap();
        let stored = svc("a", Some("10.43.0.7"));
        let none = HashSet::new();
        assert_eq!(
            assign(&r, &svc("a", None), Some(&stored), &none),
            Assigned::Ip("10.43.0.7".into()),
            "re-applied without cluster_ip: kept"
        );
        assert_eq!(
            assign(&r, &svc("a", Some("10.43.0.7")), Some(&stored), &none),
            Assigned::Ip("10.43.0.7".into())
        );
        for other in ["10.43.0.8", "None"] {
            let Assigned::Immutable(e) = assign(&r, &svc("a", Some(other)), Some(&stored), &none)
            else {
                panic!()
            };
            assert!(
                e.contains("cluster_ip is immutable")
                    && e.contains("delete and re-create service default/a"),
                "{e}"
            );
        }
        let headless = svc("h", Some("None"));
        assert_eq!(
            assign(&r, &svc("h", None), Some(&headless), &none),
            Assigned::Ip("None".into())
        );
        assert!(matches!(
            assign(&r, &svc("h", Some("10.43.0.9")), Some(&headless), &none),
            Assigned::Immutable(_)
        ));
        // A service stored before service IPs existed is treated like a new one.
        assert_eq!(
            assign(&r, &svc("old", None), Some(&svc("old", None)), &none),
            Assigned::Ip("10.43.0.2".into())
        );
    }

    #[test]
    fn a_full_range_is_refused_with_the_fix() {
        let r = ServiceCidr::parse("10.43.0.0/29").unwrap();
        let used = ips(&[
            "10.43.0.2",
            "10.43.0.3",
            "10.43.0.4",
            "10.43.0.5",
            "10.43.0.6",
        ]);
        let Assigned::Refused(e) = assign(&r, &svc("z", None), None, &used) else {
            panic!()
        };
        assert!(e.contains("is full") && e.contains("--service-cidr"), "{e}");
    }

    #[test]
    fn backfill_gives_old_services_the_lowest_free_addresses_in_name_order() {
        let r = ServiceCidr::parse("10.43.0.0/29").unwrap();
        let services = vec![
            svc("c", None),
            svc("a", Some("10.43.0.2")),
            svc("b", None),
            svc("h", Some("None")),
            svc("d", None),
            svc("e", None),
            svc("f", None),
        ];
        let got: Vec<(String, String)> = backfill(&r, &services)
            .into_iter()
            .map(|(s, ip)| (s.meta.name, ip))
            .collect();
        assert_eq!(
            got,
            [
                ("b".to_string(), "10.43.0.3".to_string()),
                ("c".into(), "10.43.0.4".into()),
                ("d".into(), "10.43.0.5".into()),
                ("e".into(), "10.43.0.6".into()),
            ],
            "f does not fit"
        );
        assert_eq!(used_by(&services, Some(("default", "a"))), HashSet::new());
    }
}
