//! `bramble-worker --metrics-listen ADDR`: Prometheus metrics of the node and its pods, in the
//! text exposition format (version 0.0.4), under cAdvisor's names and labels so that existing
//! Grafana dashboards work (`container_cpu_usage_seconds_total`,
//! `container_memory_working_set_bytes` with `namespace`, `pod`, `container`).
//!
//! Off by default. Each scrape asks the agent's event loop for one sample of the same counters
//! `bramble top` uses ([`super::usage`]): nothing is sampled between scrapes, nothing is kept or
//! written. A process is a `container`; the pod's own cgroup is the series with `container=""`,
//! as cAdvisor reports a pod's cgroup. The text is written by hand (a few lines, unit-tested
//! against the format) instead of a metrics crate, to keep the static worker small.

use std::fmt::Write;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt};

use super::usage::Sample;

/// What one scrape shows besides the sample.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Extra {
    /// Clock ticks per second of `/proc/stat`.
    pub ticks_per_s: u64,
    /// The node's memory, bytes.
    pub memory_total_bytes: u64,
    /// `/proc/loadavg`: 1, 5 and 15 minutes.
    pub load: Option<(f64, f64, f64)>,
    /// Bytes the agent process caused to be written to storage (`/proc/self/io` `write_bytes`).
    pub agent_written_bytes: Option<u64>,
}

/// Escapes a label value: backslash, double quote and newline.
pub fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// `/proc/loadavg`'s three averages.
pub fn parse_loadavg(text: &str) -> Option<(f64, f64, f64)> {
    let mut f = text.split_whitespace().map(|x| x.parse::<f64>().ok());
    Some((f.next()??, f.next()??, f.next()??))
}

/// `write_bytes` of `/proc/<pid>/io`.
pub fn parse_io_write_bytes(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
}

fn seconds(ns: u64) -> String {
    format!("{}", ns as f64 / 1e9)
}

/// The exposition text of one sample.
pub fn render(sample: &Sample, extra: &Extra) -> String {
    let mut out = String::new();
    // Per pod (container="") and per process, sorted for stable output.
    let mut pods: Vec<_> = sample.pods.iter().collect();
    pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let series =
        |out: &mut String, name: &str, value: &dyn Fn(&super::usage::Counters) -> String| {
            for p in &pods {
                let (ns, pod) = (escape(&p.namespace), escape(&p.name));
                let _ = writeln!(
                    out,
                    "{name}{{namespace=\"{ns}\",pod=\"{pod}\",container=\"\"}} {}",
                    value(&p.total)
                );
                for (c, counters) in &p.processes {
                    let _ = writeln!(
                        out,
                        "{name}{{namespace=\"{ns}\",pod=\"{pod}\",container=\"{}\"}} {}",
                        escape(c),
                        value(counters)
                    );
                }
            }
        };
    head(
        &mut out,
        "container_cpu_usage_seconds_total",
        "counter",
        "Cumulative CPU time consumed, in seconds (container=\"\": the whole pod).",
    );
    series(&mut out, "container_cpu_usage_seconds_total", &|c| {
        seconds(c.cpu_ns)
    });
    head(
        &mut out,
        "container_memory_working_set_bytes",
        "gauge",
        "Current working set (usage minus inactive file pages), in bytes.",
    );
    series(&mut out, "container_memory_working_set_bytes", &|c| {
        c.memory_bytes.to_string()
    });
    let n = &sample.node;
    let hz = extra.ticks_per_s.max(1) as f64;
    head(
        &mut out,
        "bramble_node_cpu_seconds_total",
        "counter",
        "CPU time of the node summed over all CPUs, busy (not idle or iowait) and all, in seconds.",
    );
    let _ = writeln!(
        out,
        "bramble_node_cpu_seconds_total{{mode=\"busy\"}} {}",
        n.busy as f64 / hz
    );
    let _ = writeln!(
        out,
        "bramble_node_cpu_seconds_total{{mode=\"all\"}} {}",
        n.total as f64 / hz
    );
    head(&mut out, "bramble_node_cpus", "gauge", "CPUs of the node.");
    let _ = writeln!(out, "bramble_node_cpus {}", n.cpus);
    head(
        &mut out,
        "bramble_node_memory_working_set_bytes",
        "gauge",
        "Node memory in use: MemTotal - MemFree - Inactive(file), in bytes.",
    );
    let _ = writeln!(
        out,
        "bramble_node_memory_working_set_bytes {}",
        n.memory_bytes
    );
    head(
        &mut out,
        "bramble_node_memory_total_bytes",
        "gauge",
        "Node memory, in bytes.",
    );
    let _ = writeln!(
        out,
        "bramble_node_memory_total_bytes {}",
        extra.memory_total_bytes
    );
    if let Some((l1, l5, l15)) = extra.load {
        for (name, v, what) in [
            ("node_load1", l1, "1m"),
            ("node_load5", l5, "5m"),
            ("node_load15", l15, "15m"),
        ] {
            head(&mut out, name, "gauge", &format!("{what} load average."));
            let _ = writeln!(out, "{name} {v}");
        }
    }
    if let Some(w) = extra.agent_written_bytes {
        head(
            &mut out,
            "bramble_state_disk_written_bytes_total",
            "counter",
            "Bytes the agent caused to be written to storage (its state disk), from /proc/self/io.",
        );
        let _ = writeln!(out, "bramble_state_disk_written_bytes_total {w}");
    }
    out
}

/// The extra values, read now.
pub fn read_extra(memory_total_bytes: u64) -> Extra {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    Extra {
        ticks_per_s: crate::sys::process::clock_ticks(),
        memory_total_bytes,
        load: parse_loadavg(&read("/proc/loadavg")),
        agent_written_bytes: parse_io_write_bytes(&read("/proc/self/io")),
    }
}

/// What a scrape asks the event loop for: the exposition text, through `reply`.
pub type Ask = async_channel::Sender<async_channel::Sender<String>>;

/// Serves `GET /metrics` on `listener` until the agent stops; each scrape asks `ask`.
pub async fn serve(listener: smol::net::TcpListener, ask: Ask) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            smol::Timer::after(Duration::from_millis(100)).await;
            continue;
        };
        let ask = ask.clone();
        smol::spawn(async move {
            let _ = answer(stream, ask)
                .or(async {
                    smol::Timer::after(Duration::from_secs(10)).await;
                    Ok(())
                })
                .await;
        })
        .detach();
    }
}

/// The status line and body for a request head (pure).
pub fn route(head: &str) -> (&'static str, bool) {
    let mut f = head.split_whitespace();
    match (f.next(), f.next()) {
        (Some("GET"), Some(p)) if p == "/metrics" || p.starts_with("/metrics?") => ("200 OK", true),
        (Some("GET"), _) => ("404 Not Found", false),
        _ => ("405 Method Not Allowed", false),
    }
}

async fn answer(mut s: smol::net::TcpStream, ask: Ask) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).await?;
        if n == 0 || head.len() > 8192 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let (status, ok) = route(&String::from_utf8_lossy(&head));
    let body = if ok {
        let (tx, rx) = async_channel::bounded(1);
        if ask.send(tx).await.is_err() {
            return Ok(());
        }
        rx.recv().await.unwrap_or_default()
    } else {
        format!("{status}: the metrics are at GET /metrics\n")
    };
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(resp.as_bytes()).await?;
    s.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::usage::{Counters, NodeCounters, PodSample};

    #[test]
    fn exposition_text() {
        let sample = Sample {
            at: std::time::Instant::now(),
            node: NodeCounters {
                busy: 250,
                total: 1000,
                cpus: 4,
                memory_bytes: 1 << 30,
            },
            pods: vec![PodSample {
                namespace: "default".into(),
                name: "we\"b".into(),
                uid: "u".into(),
                total: Counters {
                    cpu_ns: 1_500_000_000,
                    memory_bytes: 64 << 20,
                },
                processes: vec![(
                    "main".into(),
                    Counters {
                        cpu_ns: 1_000_000_000,
                        memory_bytes: 60 << 20,
                    },
                )],
            }],
        };
        let extra = Extra {
            ticks_per_s: 100,
            memory_total_bytes: 4 << 30,
            load: Some((0.5, 0.25, 0.0)),
            agent_written_bytes: Some(4096),
        };
        let text = render(&sample, &extra);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines.contains(
            &"container_cpu_usage_seconds_total{namespace=\"default\",pod=\"we\\\"b\",container=\"\"} 1.5"
        ), "{text}");
        assert!(lines.contains(
            &"container_memory_working_set_bytes{namespace=\"default\",pod=\"we\\\"b\",container=\"main\"} 62914560"
        ), "{text}");
        assert!(lines.contains(&"bramble_node_cpu_seconds_total{mode=\"busy\"} 2.5"));
        assert!(lines.contains(&"node_load1 0.5"));
        assert!(lines.contains(&"bramble_state_disk_written_bytes_total 4096"));
        // The format: every sample line belongs to a family announced by HELP and TYPE just
        // before its first sample; names are valid; values are numbers; a trailing newline.
        assert!(text.ends_with('\n'));
        let mut family = String::new();
        let mut typed = std::collections::BTreeSet::new();
        for l in &lines {
            if let Some(rest) = l.strip_prefix("# HELP ") {
                family = rest.split(' ').next().unwrap().to_string();
                assert!(typed.insert(family.clone()), "{family} announced twice");
            } else if let Some(rest) = l.strip_prefix("# TYPE ") {
                let mut f = rest.split(' ');
                assert_eq!(f.next(), Some(family.as_str()));
                let kind = f.next().unwrap();
                assert!(["counter", "gauge"].contains(&kind));
                assert_eq!(kind == "counter", family.ends_with("_total"), "{family}");
            } else {
                let name_end = l.find(['{', ' ']).unwrap();
                assert_eq!(&l[..name_end], family, "{l}");
                assert!(
                    family
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_')
                );
                let value = l.rsplit(' ').next().unwrap();
                assert!(value.parse::<f64>().is_ok(), "{l}");
            }
        }
    }

    #[test]
    fn parsers_and_routes() {
        assert_eq!(
            parse_loadavg("0.52 0.58 0.59 1/467 12345\n"),
            Some((0.52, 0.58, 0.59))
        );
        assert_eq!(parse_loadavg(""), None);
        let io = "rchar: 1\nwchar: 2\nsyscr: 3\nsyscw: 4\nread_bytes: 5\nwrite_bytes: 8192\n";
        assert_eq!(parse_io_write_bytes(io), Some(8192));
        assert_eq!(escape("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
        assert_eq!(route("GET /metrics HTTP/1.1\r\n"), ("200 OK", true));
        assert_eq!(route("GET / HTTP/1.1\r\n"), ("404 Not Found", false));
        assert_eq!(
            route("POST /metrics HTTP/1.1\r\n"),
            ("405 Method Not Allowed", false)
        );
    }
}
