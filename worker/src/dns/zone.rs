//! The cluster zone: a pure map from names under the cluster domain to addresses, rebuilt
//! whole from the services and their endpoints ([`ZoneInput`]) and swapped in by the server.
//!
//! Names (as Kubernetes, `DOMAIN` = `bramble.local` by default):
//! - `NAME.NAMESPACE.svc.DOMAIN` → the service's cluster IP, or for a headless service (no
//!   cluster IP) every ready pod's address;
//! - `POD.NAME.NAMESPACE.svc.DOMAIN` → that ready pod's address.
//!
//! Everything else under the domain does not exist (NXDOMAIN with the zone's SOA, so resolvers
//! cache the miss), except the names above a service (`DOMAIN`, `svc.DOMAIN`,
//! `NAMESPACE.svc.DOMAIN`), which exist without addresses. Short names (`NAME`,
//! `NAME.NAMESPACE`) reach the zone through the pods' search path ([`resolv_conf`]).

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;

/// Time to live of every cluster answer (and of the SOA's negative caching): short, so that a
/// moved service or pod is followed within seconds.
pub const CLUSTER_TTL: u32 = 5;

/// What the zone is built from: the cluster domain and every service with its ready pods.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ZoneInput {
    /// The cluster domain, e.g. `bramble.local` (no trailing dot needed; case does not matter).
    pub domain: String,
    pub services: Vec<ServiceRecord>,
}

/// One service as the zone sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRecord {
    pub namespace: String,
    pub name: String,
    /// The virtual address; `None` = headless (the name resolves to the pods themselves).
    pub cluster_ip: Option<Ipv4Addr>,
    /// Ready endpoints: pod name and the pod's own address.
    pub pods: Vec<(String, Ipv4Addr)>,
}

/// The answer of the zone for one name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// The name is not under the cluster domain: forward it.
    Outside,
    /// The name exists; its IPv4 addresses (possibly none: an empty non-terminal or a headless
    /// service without ready pods, answered NODATA).
    Found(&'a [Ipv4Addr]),
    /// Under the domain but no such name.
    NxDomain,
}

/// The built zone (immutable; the server swaps whole zones).
#[derive(Debug, Clone, Default)]
pub struct Zone {
    /// Lower case, no trailing dot.
    domain: String,
    /// Full lower-case names (no trailing dot) → addresses, sorted and deduplicated.
    names: HashMap<String, Vec<Ipv4Addr>>,
    /// The SOA serial (the server counts its updates).
    serial: u32,
}

/// Lower case, without the trailing dot (the root stays empty).
pub fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl Zone {
    pub fn new(input: &ZoneInput) -> Zone {
        let domain = normalize(&input.domain);
        let mut names: HashMap<String, BTreeSet<Ipv4Addr>> = HashMap::new();
        let mut ensure = |n: String| {
            names.entry(n).or_default();
        };
        ensure(domain.clone());
        ensure(format!("svc.{domain}"));
        for s in &input.services {
            let ns = normalize(&s.namespace);
            let svc = format!("{}.{ns}.svc.{domain}", normalize(&s.name));
            names.entry(format!("{ns}.svc.{domain}")).or_default();
            let set = names.entry(svc.clone()).or_default();
            match s.cluster_ip {
                Some(ip) => {
                    set.insert(ip);
                }
                None => set.extend(s.pods.iter().map(|(_, ip)| *ip)),
            }
            for (pod, ip) in &s.pods {
                names
                    .entry(format!("{}.{svc}", normalize(pod)))
                    .or_default()
                    .insert(*ip);
            }
        }
        Zone {
            domain,
            names: names
                .into_iter()
                .map(|(k, v)| (k, v.into_iter().collect()))
                .collect(),
            serial: 1,
        }
    }

    /// The same zone with SOA serial `serial`.
    pub fn with_serial(mut self, serial: u32) -> Zone {
        self.serial = serial;
        self
    }

    pub fn serial(&self) -> u32 {
        self.serial
    }

    /// The cluster domain, lower case, without the trailing dot.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Whether `name` (normalized) is the domain or under it.
    pub fn contains(&self, name: &str) -> bool {
        !self.domain.is_empty()
            && (name == self.domain
                || name
                    .strip_suffix(self.domain.as_str())
                    .is_some_and(|head| head.ends_with('.')))
    }

    /// Looks a name up (any case, with or without the trailing dot).
    pub fn lookup(&self, name: &str) -> Lookup<'_> {
        let name = normalize(name);
        if !self.contains(&name) {
            return Lookup::Outside;
        }
        match self.names.get(&name) {
            Some(ips) => Lookup::Found(ips),
            None => Lookup::NxDomain,
        }
    }
}

/// The `/etc/resolv.conf` of a pod in `namespace`: the cluster DNS at `nameserver` and the
/// Kubernetes search path, so `NAME` finds a service of the pod's own namespace and
/// `NAME.NAMESPACE` one of another namespace.
pub fn resolv_conf(nameserver: Ipv4Addr, namespace: &str, domain: &str) -> String {
    let ns = normalize(namespace);
    let domain = normalize(domain);
    format!(
        "# written by bramble-worker: the cluster DNS on the node\n\
         nameserver {nameserver}\n\
         search {ns}.svc.{domain} svc.{domain} {domain}\n\
         options ndots:5\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn zone() -> Zone {
        Zone::new(&ZoneInput {
            domain: "Bramble.Local.".into(),
            services: vec![
                ServiceRecord {
                    namespace: "default".into(),
                    name: "web".into(),
                    cluster_ip: Some(ip("10.43.0.10")),
                    pods: vec![
                        ("web-1".into(), ip("10.42.0.5")),
                        ("web-2".into(), ip("10.42.1.7")),
                    ],
                },
                ServiceRecord {
                    namespace: "db".into(),
                    name: "pg".into(),
                    cluster_ip: None,
                    pods: vec![
                        ("pg-0".into(), ip("10.42.1.9")),
                        ("pg-1".into(), ip("10.42.0.3")),
                    ],
                },
                ServiceRecord {
                    namespace: "db".into(),
                    name: "empty".into(),
                    cluster_ip: None,
                    pods: vec![],
                },
            ],
        })
    }

    #[test]
    fn service_name_is_its_cluster_ip() {
        let z = zone();
        assert_eq!(
            z.lookup("web.default.svc.bramble.local"),
            Lookup::Found(&[ip("10.43.0.10")])
        );
        assert_eq!(
            z.lookup("WEB.Default.SVC.bramble.local."),
            Lookup::Found(&[ip("10.43.0.10")])
        );
    }

    #[test]
    fn headless_service_is_its_pods_sorted() {
        let z = zone();
        assert_eq!(
            z.lookup("pg.db.svc.bramble.local"),
            Lookup::Found(&[ip("10.42.0.3"), ip("10.42.1.9")])
        );
        assert_eq!(z.lookup("empty.db.svc.bramble.local"), Lookup::Found(&[]));
    }

    #[test]
    fn pod_names_under_their_service() {
        let z = zone();
        assert_eq!(
            z.lookup("pg-0.pg.db.svc.bramble.local"),
            Lookup::Found(&[ip("10.42.1.9")])
        );
        assert_eq!(
            z.lookup("web-2.web.default.svc.bramble.local"),
            Lookup::Found(&[ip("10.42.1.7")])
        );
        assert_eq!(z.lookup("pg-9.pg.db.svc.bramble.local"), Lookup::NxDomain);
    }

    #[test]
    fn names_above_a_service_exist_without_addresses() {
        let z = zone();
        for n in [
            "bramble.local",
            "svc.bramble.local",
            "db.svc.bramble.local",
            "default.svc.bramble.local",
        ] {
            assert_eq!(z.lookup(n), Lookup::Found(&[]), "{n}");
        }
    }

    #[test]
    fn other_names_under_the_domain_do_not_exist() {
        let z = zone();
        for n in [
            "nope.default.svc.bramble.local",
            "web.other.svc.bramble.local",
            "web.default.bramble.local",
            "x.bramble.local",
            "a.b.pg-0.pg.db.svc.bramble.local",
        ] {
            assert_eq!(z.lookup(n), Lookup::NxDomain, "{n}");
        }
    }

    #[test]
    fn names_outside_are_forwarded() {
        let z = zone();
        for n in [
            "example.com",
            "local",
            "xbramble.local",
            "web.default",
            "web",
            "",
        ] {
            assert_eq!(z.lookup(n), Lookup::Outside, "{n}");
        }
    }

    #[test]
    fn an_empty_domain_holds_nothing() {
        let z = Zone::new(&ZoneInput::default());
        assert_eq!(z.lookup("example.com"), Lookup::Outside);
        assert_eq!(z.lookup(""), Lookup::Outside);
    }

    #[test]
    fn pod_resolv_conf_has_the_kubernetes_search_path() {
        assert_eq!(
            resolv_conf(ip("10.42.0.1"), "Shop", "bramble.local."),
            "# written by bramble-worker: the cluster DNS on the node\n\
             nameserver 10.42.0.1\n\
             search shop.svc.bramble.local svc.bramble.local bramble.local\n\
             options ndots:5\n"
        );
    }
}
