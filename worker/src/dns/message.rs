//! Pure message handling on top of `simple-dns`: what to do with a query (answer it from the
//! zone, forward it, refuse it), the replies themselves, and what a forwarded answer may be
//! cached for. No sockets here; unit-tested.

use std::net::Ipv4Addr;

use simple_dns::rdata::{A, OPT, RData, SOA};
use simple_dns::{
    CLASS, Name, OPCODE, Packet, PacketFlag, QCLASS, QTYPE, Question, RCODE, ResourceRecord, TYPE,
};

use super::zone::{CLUSTER_TTL, Lookup, Zone, normalize};

/// The largest reply over UDP when the client says nothing (RFC 1035).
pub const CLASSIC_UDP: usize = 512;
/// The largest UDP reply we send whatever the client offers (the DNS flag day 2020 value).
pub const MAX_UDP: usize = 1232;
/// The largest message over TCP (the 2-byte length prefix).
pub const MAX_TCP: usize = 65535;

/// Cache key of a forwarded question: lower-case name without the trailing dot, type, class.
pub type Key = (String, u16, u16);

/// What to do with one received datagram or TCP frame.
#[derive(Debug)]
pub enum Step {
    /// Send this reply.
    Reply(Vec<u8>),
    /// Not ours: ask the upstreams (or the cache) for `key`; `limit` = largest reply the client
    /// takes on this transport.
    Forward { key: Key, limit: usize },
    /// Not even a header to answer to, or not a query: say nothing.
    Drop,
}

/// The header fields a reply to something unparsable needs: id, flags (None if under 12 bytes).
fn raw_header(bytes: &[u8]) -> Option<(u16, u16)> {
    let h = bytes.get(..12)?;
    Some((
        u16::from_be_bytes([h[0], h[1]]),
        u16::from_be_bytes([h[2], h[3]]),
    ))
}

/// An empty reply (no question) with `rcode`, for queries we cannot or will not parse.
pub fn error_reply(id: u16, recursion_desired: bool, rcode: RCODE) -> Vec<u8> {
    let mut p = Packet::new_reply(id);
    if recursion_desired {
        p.set_flags(PacketFlag::RECURSION_DESIRED);
    }
    p.set_flags(PacketFlag::RECURSION_AVAILABLE);
    *p.rcode_mut() = rcode;
    // A header-only packet always builds; fall back to nothing rather than panic.
    p.build_bytes_vec().unwrap_or_default()
}

/// The reply to `query` carrying its question, flags and EDNS, with `rcode`.
fn reply_to<'a>(query: &Packet<'a>, rcode: RCODE) -> Packet<'a> {
    let mut p = Packet::new_reply(query.id());
    *p.opcode_mut() = query.opcode();
    p.questions = query.questions.clone();
    let mut flags = PacketFlag::RECURSION_AVAILABLE;
    if query.has_flags(PacketFlag::RECURSION_DESIRED) {
        flags |= PacketFlag::RECURSION_DESIRED;
    }
    p.set_flags(flags);
    *p.rcode_mut() = rcode;
    if query.opt().is_some() {
        *p.opt_mut() = Some(OPT {
            opt_codes: Vec::new(),
            udp_packet_size: MAX_UDP as u16,
            version: 0,
        });
    }
    p
}

/// The largest reply this client takes over UDP.
fn udp_limit(query: &Packet<'_>) -> usize {
    query
        .opt()
        .map(|o| usize::from(o.udp_packet_size).clamp(CLASSIC_UDP, MAX_UDP))
        .unwrap_or(CLASSIC_UDP)
}

/// Serializes `p`; if it exceeds `limit`, the same header with TC set and no records instead,
/// so the client asks again over TCP.
pub fn build_within(mut p: Packet<'_>, limit: usize) -> Option<Vec<u8>> {
    let bytes = p.build_bytes_vec_compressed().ok()?;
    if bytes.len() <= limit {
        return Some(bytes);
    }
    p.answers.clear();
    p.name_servers.clear();
    p.additional_records.clear();
    p.set_flags(PacketFlag::TRUNCATION);
    p.build_bytes_vec_compressed().ok()
}

/// The zone's SOA, in the authority section of negative answers (CoreDNS's names).
fn soa(zone: &Zone) -> Option<ResourceRecord<'static>> {
    let d = zone.domain();
    let rdata = SOA {
        mname: Name::new(&format!("ns.dns.{d}")).ok()?.into_owned(),
        rname: Name::new(&format!("hostmaster.{d}")).ok()?.into_owned(),
        serial: zone.serial(),
        refresh: 7200,
        retry: 1800,
        expire: 86400,
        minimum: CLUSTER_TTL,
    };
    Some(ResourceRecord::new(
        Name::new(d).ok()?.into_owned(),
        CLASS::IN,
        CLUSTER_TTL,
        RData::SOA(rdata),
    ))
}

/// Decides what to do with `bytes`, answering from `zone` what is under the cluster domain.
/// `tcp` = it came over TCP (no size limit but the frame's).
pub fn handle(zone: &Zone, bytes: &[u8], tcp: bool) -> Step {
    let Some((id, flags)) = raw_header(bytes) else {
        return Step::Drop;
    };
    if flags & 0x8000 != 0 {
        return Step::Drop; // a response: never answer one (no loops, no reflection)
    }
    let rd = flags & 0x0100 != 0;
    let query = match Packet::parse(bytes) {
        Ok(q) => q,
        Err(
            simple_dns::SimpleDnsError::InvalidQType(_)
            | simple_dns::SimpleDnsError::InvalidQClass(_),
        ) => {
            return Step::Reply(error_reply(id, rd, RCODE::NotImplemented));
        }
        Err(_) => return Step::Reply(error_reply(id, rd, RCODE::FormatError)),
    };
    if query.opcode() != OPCODE::StandardQuery {
        return Step::Reply(error_reply(id, rd, RCODE::NotImplemented));
    }
    if query.questions.len() != 1 || !query.answers.is_empty() || !query.name_servers.is_empty() {
        return Step::Reply(error_reply(id, rd, RCODE::FormatError));
    }
    let limit = if tcp { MAX_TCP } else { udp_limit(&query) };
    let q = &query.questions[0];
    let name = normalize(&q.qname.to_string());
    let found = match zone.lookup(&name) {
        Lookup::Outside => {
            return Step::Forward {
                key: (name, qtype_code(q.qtype), qclass_code(q.qclass)),
                limit,
            };
        }
        Lookup::Found(ips) => Some(ips),
        Lookup::NxDomain => None,
    };
    let in_class = matches!(q.qclass, QCLASS::CLASS(CLASS::IN) | QCLASS::ANY);
    if !in_class {
        return Step::Reply(
            build_within(reply_to(&query, RCODE::Refused), limit).unwrap_or_default(),
        );
    }
    let mut reply = reply_to(
        &query,
        if found.is_some() {
            RCODE::NoError
        } else {
            RCODE::NameError
        },
    );
    reply.set_flags(PacketFlag::AUTHORITATIVE_ANSWER);
    let wants_a = matches!(q.qtype, QTYPE::TYPE(TYPE::A) | QTYPE::ANY);
    match found {
        Some(ips) if wants_a && !ips.is_empty() => {
            for ip in ips {
                reply.answers.push(a_record(q, *ip));
            }
        }
        _ => reply.name_servers.extend(soa(zone)),
    }
    if matches!(q.qtype, QTYPE::TYPE(TYPE::SOA)) && name == zone.domain() {
        reply.answers.append(&mut reply.name_servers);
    }
    match build_within(reply, limit) {
        Some(b) => Step::Reply(b),
        None => Step::Reply(error_reply(id, rd, RCODE::ServerFailure)),
    }
}

fn a_record<'a>(q: &Question<'a>, ip: Ipv4Addr) -> ResourceRecord<'a> {
    ResourceRecord::new(
        q.qname.clone(),
        CLASS::IN,
        CLUSTER_TTL,
        RData::A(A::from(ip)),
    )
}

pub fn qtype_code(t: QTYPE) -> u16 {
    t.into()
}

pub fn qclass_code(c: QCLASS) -> u16 {
    c.into()
}

/// How long a forwarded answer may be cached: the smallest TTL of its answers for a positive
/// answer, the SOA's (TTL, minimum) for a negative one (NXDOMAIN or NODATA), capped; `None` =
/// do not cache (errors, truncated, unparsable, TTL 0).
pub fn cache_ttl(resp: &Packet<'_>) -> Option<u32> {
    const MAX_POSITIVE: u32 = 3600;
    const MAX_NEGATIVE: u32 = 300;
    if resp.has_flags(PacketFlag::TRUNCATION) {
        return None;
    }
    let ttl = match resp.rcode() {
        RCODE::NoError if !resp.answers.is_empty() => {
            resp.answers.iter().map(|r| r.ttl).min()?.min(MAX_POSITIVE)
        }
        RCODE::NoError | RCODE::NameError => resp
            .name_servers
            .iter()
            .find_map(|r| match &r.rdata {
                RData::SOA(s) => Some(r.ttl.min(s.minimum)),
                _ => None,
            })?
            .min(MAX_NEGATIVE),
        _ => return None,
    };
    (ttl > 0).then_some(ttl)
}

/// A cached answer for a new query: the query's id and question, every TTL lowered by the
/// seconds it spent in the cache. `None` if it does not parse or build (then forward again).
pub fn from_cache(cached: &[u8], query: &[u8], age: u32, limit: usize) -> Option<Vec<u8>> {
    let mut p = Packet::parse(cached).ok()?;
    let q = Packet::parse(query).ok()?;
    p.set_id(q.id());
    if !q.has_flags(PacketFlag::RECURSION_DESIRED) {
        p.remove_flags(PacketFlag::RECURSION_DESIRED);
    }
    if q.opt().is_none() {
        *p.opt_mut() = None;
    }
    p.questions = q.questions;
    for rr in p
        .answers
        .iter_mut()
        .chain(p.name_servers.iter_mut())
        .chain(p.additional_records.iter_mut())
    {
        rr.ttl = rr.ttl.saturating_sub(age);
    }
    build_within(p, limit)
}

/// Whether `resp` answers `query`: same id, same single question (name in any case).
pub fn answers(query: &Packet<'_>, resp: &Packet<'_>) -> bool {
    resp.has_flags(PacketFlag::RESPONSE)
        && resp.id() == query.id()
        && resp.questions.len() == 1
        && query.questions.len() == 1
        && resp.questions[0].qname == query.questions[0].qname
        && resp.questions[0].qtype == query.questions[0].qtype
        && resp.questions[0].qclass == query.questions[0].qclass
}

/// A SERVFAIL for `query` (no upstream answered).
pub fn servfail(query: &[u8]) -> Vec<u8> {
    match Packet::parse(query) {
        Ok(q) => build_within(reply_to(&q, RCODE::ServerFailure), CLASSIC_UDP).unwrap_or_default(),
        Err(_) => raw_header(query)
            .map(|(id, f)| error_reply(id, f & 0x0100 != 0, RCODE::ServerFailure))
            .unwrap_or_default(),
    }
}

/// An upstream reply relayed to a UDP client that takes at most `limit` bytes: as is when it
/// fits, else re-built truncated.
pub fn relay(resp: Vec<u8>, limit: usize) -> Option<Vec<u8>> {
    if resp.len() <= limit {
        return Some(resp);
    }
    build_within(Packet::parse(&resp).ok()?, limit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::zone::{ServiceRecord, ZoneInput};

    fn zone(pods: usize) -> Zone {
        Zone::new(&ZoneInput {
            domain: "bramble.local".into(),
            services: vec![
                ServiceRecord {
                    namespace: "default".into(),
                    name: "web".into(),
                    cluster_ip: Some(Ipv4Addr::new(10, 43, 0, 10)),
                    pods: vec![],
                },
                ServiceRecord {
                    namespace: "default".into(),
                    name: "many".into(),
                    cluster_ip: None,
                    pods: (0..pods)
                        .map(|i| {
                            (
                                format!("p{i}"),
                                Ipv4Addr::new(10, 42, (i / 250) as u8, (i % 250) as u8 + 2),
                            )
                        })
                        .collect(),
                },
            ],
        })
    }

    fn query(name: &str, t: TYPE, edns: Option<u16>) -> Vec<u8> {
        let mut p = Packet::new_query(0x1234);
        p.set_flags(PacketFlag::RECURSION_DESIRED);
        p.questions.push(Question::new(
            Name::new_unchecked(name),
            QTYPE::TYPE(t),
            QCLASS::CLASS(CLASS::IN),
            false,
        ));
        if let Some(size) = edns {
            *p.opt_mut() = Some(OPT {
                opt_codes: vec![],
                udp_packet_size: size,
                version: 0,
            });
        }
        p.build_bytes_vec().unwrap()
    }

    /// The reply of a step, parsed (the bytes leak: tests only).
    fn reply(step: Step) -> &'static [u8] {
        match step {
            Step::Reply(r) => Box::leak(r.into_boxed_slice()),
            s => panic!("expected a reply, got {s:?}"),
        }
    }

    #[test]
    fn a_record_authoritative_with_the_question() {
        let z = zone(0);
        let r = reply(handle(
            &z,
            &query("Web.Default.svc.bramble.local", TYPE::A, None),
            false,
        ));
        let p = Packet::parse(r).unwrap();
        assert_eq!(p.id(), 0x1234);
        assert!(p.has_flags(
            PacketFlag::RESPONSE | PacketFlag::AUTHORITATIVE_ANSWER | PacketFlag::RECURSION_DESIRED
        ));
        assert_eq!(p.rcode(), RCODE::NoError);
        assert_eq!(
            p.questions[0].qname.to_string(),
            "Web.Default.svc.bramble.local"
        );
        assert_eq!(p.answers.len(), 1);
        assert_eq!(p.answers[0].ttl, CLUSTER_TTL);
        assert_eq!(
            p.answers[0].rdata,
            RData::A(A::from(Ipv4Addr::new(10, 43, 0, 10)))
        );
    }

    #[test]
    fn nxdomain_and_nodata_carry_the_soa() {
        let z = zone(0);
        let nx = Packet::parse(reply(handle(
            &z,
            &query("nope.default.svc.bramble.local", TYPE::A, None),
            false,
        )))
        .unwrap();
        assert_eq!(nx.rcode(), RCODE::NameError);
        assert!(nx.answers.is_empty());
        assert!(matches!(nx.name_servers[0].rdata, RData::SOA(ref s) if s.minimum == CLUSTER_TTL));
        assert_eq!(cache_ttl(&nx), Some(CLUSTER_TTL));
        let nodata = Packet::parse(reply(handle(
            &z,
            &query("web.default.svc.bramble.local", TYPE::AAAA, None),
            false,
        )))
        .unwrap();
        assert_eq!(nodata.rcode(), RCODE::NoError);
        assert!(nodata.answers.is_empty());
        assert!(matches!(nodata.name_servers[0].rdata, RData::SOA(_)));
        let soa = Packet::parse(reply(handle(
            &z,
            &query("bramble.local", TYPE::SOA, None),
            false,
        )))
        .unwrap();
        assert!(matches!(soa.answers[0].rdata, RData::SOA(_)));
    }

    #[test]
    fn outside_names_are_forwarded_with_the_clients_limit() {
        let z = zone(0);
        match handle(&z, &query("Example.COM.", TYPE::AAAA, Some(4096)), false) {
            Step::Forward { key, limit } => {
                assert_eq!(key, ("example.com".to_string(), 28, 1));
                assert_eq!(limit, MAX_UDP);
            }
            s => panic!("{s:?}"),
        }
        assert!(matches!(
            handle(&z, &query("example.com", TYPE::A, None), false),
            Step::Forward {
                limit: CLASSIC_UDP,
                ..
            }
        ));
        assert!(matches!(
            handle(&z, &query("example.com", TYPE::A, None), true),
            Step::Forward { limit: MAX_TCP, .. }
        ));
    }

    #[test]
    fn large_answers_are_truncated_over_udp_only() {
        let z = zone(100);
        let q = query("many.default.svc.bramble.local", TYPE::A, None);
        let udp = Packet::parse(reply(handle(&z, &q, false))).unwrap();
        assert!(udp.has_flags(PacketFlag::TRUNCATION));
        assert!(udp.answers.is_empty());
        let tcp = Packet::parse(reply(handle(&z, &q, true))).unwrap();
        assert!(!tcp.has_flags(PacketFlag::TRUNCATION));
        assert_eq!(tcp.answers.len(), 100);
    }

    #[test]
    fn bad_input_formerr_when_there_is_a_header_else_dropped() {
        let z = zone(0);
        assert!(matches!(handle(&z, b"", false), Step::Drop));
        assert!(matches!(handle(&z, &[0xff; 11], false), Step::Drop));
        // A header claiming a question that is not there.
        let r = Packet::parse(reply(handle(
            &z,
            &[0xab, 0xcd, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 7],
            false,
        )))
        .unwrap();
        assert_eq!((r.id(), r.rcode()), (0xabcd, RCODE::FormatError));
        // Responses are never answered.
        let mut resp = query("web.default.svc.bramble.local", TYPE::A, None);
        resp[2] |= 0x80;
        assert!(matches!(handle(&z, &resp, false), Step::Drop));
        // Two questions, no question.
        let mut p = Packet::new_query(7);
        let r = Packet::parse(reply(handle(&z, &p.build_bytes_vec().unwrap(), false))).unwrap();
        assert_eq!(r.rcode(), RCODE::FormatError);
        for _ in 0..2 {
            p.questions.push(Question::new(
                Name::new_unchecked("a.b"),
                QTYPE::TYPE(TYPE::A),
                QCLASS::CLASS(CLASS::IN),
                false,
            ));
        }
        let r = Packet::parse(reply(handle(&z, &p.build_bytes_vec().unwrap(), false))).unwrap();
        assert_eq!(r.rcode(), RCODE::FormatError);
        // Another opcode.
        let mut notify = query("bramble.local", TYPE::SOA, None);
        notify[2] |= 4 << 3;
        let r = Packet::parse(reply(handle(&z, &notify, false))).unwrap();
        assert_eq!(r.rcode(), RCODE::NotImplemented);
        // Every prefix and every single-byte corruption of a query: no panic.
        let q = query("web.default.svc.bramble.local", TYPE::A, Some(1232));
        for n in 0..q.len() {
            let _ = handle(&z, &q[..n], false);
            for b in [0u8, 0x3f, 0xc0, 0xff] {
                let mut c = q.clone();
                c[n] = b;
                let _ = handle(&z, &c, false);
            }
        }
    }

    #[test]
    fn cached_answers_get_the_new_id_and_question_and_older_ttls() {
        let mut resp = Packet::new_reply(1);
        resp.questions.push(Question::new(
            Name::new_unchecked("example.com"),
            QTYPE::TYPE(TYPE::A),
            QCLASS::CLASS(CLASS::IN),
            false,
        ));
        resp.answers.push(ResourceRecord::new(
            Name::new_unchecked("example.com"),
            CLASS::IN,
            300,
            RData::A(A::from(Ipv4Addr::new(192, 0, 2, 1))),
        ));
        resp.answers.push(ResourceRecord::new(
            Name::new_unchecked("example.com"),
            CLASS::IN,
            60,
            RData::A(A::from(Ipv4Addr::new(192, 0, 2, 2))),
        ));
        assert_eq!(cache_ttl(&resp), Some(60));
        let stored = resp.build_bytes_vec().unwrap();
        let q = query("EXAMPLE.com", TYPE::A, None);
        let out = Packet::parse(&from_cache(&stored, &q, 10, CLASSIC_UDP).unwrap())
            .unwrap()
            .into_owned_for_test();
        assert_eq!(out.0, 0x1234);
        assert_eq!(out.1, "EXAMPLE.com");
        assert_eq!(out.2, vec![290, 50]);
        let mut servfail = Packet::new_reply(1);
        *servfail.rcode_mut() = RCODE::ServerFailure;
        assert_eq!(cache_ttl(&servfail), None);
    }

    /// Pseudo-random bytes (a fixed-seed xorshift) through every entry point that parses
    /// something from the network: no panic, whatever comes in.
    #[test]
    fn random_input_never_panics() {
        let z = zone(3);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let base = query("web.default.svc.bramble.local", TYPE::A, Some(1232));
        for i in 0..50_000 {
            let mut b: Vec<u8> = if i % 2 == 0 {
                (0..(next() % 200) as usize).map(|_| next() as u8).collect()
            } else {
                let mut b = base.clone();
                for _ in 0..1 + next() % 4 {
                    let at = (next() as usize) % b.len();
                    b[at] = next() as u8;
                }
                b
            };
            if b.len() > 3 {
                b[2] &= 0x7f; // a query, so that it is parsed
            }
            let _ = handle(&z, &b, i % 3 == 0);
            let _ = servfail(&b);
            let _ = relay(b.clone(), 20);
            if let Ok(p) = Packet::parse(&b) {
                let _ = cache_ttl(&p);
            }
            let _ = from_cache(&b, &base, 7, CLASSIC_UDP);
        }
    }

    trait Summary {
        fn into_owned_for_test(self) -> (u16, String, Vec<u32>);
    }
    impl Summary for Packet<'_> {
        fn into_owned_for_test(self) -> (u16, String, Vec<u32>) {
            (
                self.id(),
                self.questions[0].qname.to_string(),
                self.answers.iter().map(|r| r.ttl).collect(),
            )
        }
    }
}
