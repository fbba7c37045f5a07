//! `bramble top`: the nodes' usage reports, in memory only.
//!
//! Agents sample and report nothing until asked: a `Top` call asks every connected node
//! ([`NodeDown::UsageWanted`]) to report for [`WANTED_SECONDS`] (a node connecting meanwhile is
//! asked too), and the first call waits up to [`FIRST_WAIT`] for the first reports (an agent
//! answers about a second after it is asked). Calls within the window are answered at once from
//! the last reports (at most 15 s old). Reports are never written to the store.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bramble_wire::msg::{NodeDown, NodeTop, NodeUsage, Usage};
use bramble_wire::objects::Node;

use super::{Master, now_ms};

/// How long nodes report after a `top`.
pub(crate) const WANTED_SECONDS: u32 = 120;
/// Nodes are asked again when less than this is left of the window.
const ASK_AGAIN_MS: u64 = 60_000;
/// How long a call waits for the nodes' first reports.
const FIRST_WAIT: Duration = Duration::from_secs(3);
/// A report older than this (the node stopped reporting) does not count as fresh.
const FRESH_MS: u64 = 40_000;

/// The message for a connecting node while usage is wanted.
pub(crate) fn still_wanted(m: &Master) -> Option<NodeDown> {
    let left = m
        .top_until_ms
        .load(Ordering::Relaxed)
        .saturating_sub(now_ms());
    (left >= 1000).then_some(NodeDown::UsageWanted {
        seconds: (left / 1000) as u32,
    })
}

/// A node's report.
pub(crate) async fn received(m: &Master, node: &str, usage: NodeUsage) {
    if let Some(l) = m.nodes.lock().await.get_mut(node) {
        l.usage = Some((now_ms(), usage));
    }
}

/// Answers `Top`: every known node, sorted by name, with its last report.
pub(crate) async fn top(m: &Master) -> Vec<NodeTop> {
    let now = now_ms();
    if m.top_until_ms.load(Ordering::Relaxed) < now + ASK_AGAIN_MS {
        m.top_until_ms
            .store(now + u64::from(WANTED_SECONDS) * 1000, Ordering::Relaxed);
        let sessions: Vec<_> = m
            .nodes
            .lock()
            .await
            .values()
            .filter_map(|l| l.session.as_ref().map(|(_, tx)| tx.clone()))
            .collect();
        for tx in sessions {
            let _ = tx.try_send(NodeDown::UsageWanted {
                seconds: WANTED_SECONDS,
            });
        }
    }
    let deadline = std::time::Instant::now() + FIRST_WAIT;
    loop {
        let waiting = m.nodes.lock().await.values().any(|l| {
            l.session.is_some()
                && l.usage
                    .as_ref()
                    .is_none_or(|(at, _)| now_ms().saturating_sub(*at) > FRESH_MS)
        });
        if !waiting || std::time::Instant::now() >= deadline {
            break;
        }
        smol::Timer::after(Duration::from_millis(100)).await;
    }
    let nodes = m.cache.list::<Node>();
    let live = m.nodes.lock().await;
    let now = now_ms();
    let mut out: Vec<NodeTop> = nodes
        .iter()
        .map(|n| {
            let a = &n.status.allocatable;
            let report = live.get(&n.meta.name).and_then(|l| l.usage.as_ref());
            NodeTop {
                node: n.meta.name.clone(),
                allocatable: Usage {
                    cpu_millis: a.cpu_millis.unwrap_or(0),
                    memory_bytes: a.memory_bytes.unwrap_or(0),
                },
                age_ms: report.map_or(0, |(at, _)| now.saturating_sub(*at)),
                usage: report.map(|(_, u)| u.clone()),
            }
        })
        .collect();
    out.sort_by(|a, b| a.node.cmp(&b.node));
    out
}
