//! `bramble top pods|nodes`: CPU and memory use as the agents report it (docs/cli.md, "top").
//!
//! The master asks the agents for usage reports only after a `top` (the first call waits up to
//! a few seconds for them); here the answer is filtered, sorted and printed like `kubectl top`,
//! or as a JSON/YAML `List` of `PodMetrics`/`NodeMetrics` (metrics.k8s.io's shape).

use std::io::Write;

use bramble_wire::msg::{NodeTop, RequestBody, ResponseBody, Usage};
use serde_json::{Value, json};

use super::{Client, ClientError, Output, usage};

/// A report older than this is not shown (its node stopped reporting).
pub const STALE_MS: u64 = 60_000;

/// What to sort by (`--sort-by`), largest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SortBy {
    /// CPU.
    Cpu,
    /// Memory working set.
    Memory,
}

/// `bramble top ...`.
#[derive(Debug, clap::Subcommand)]
pub enum TopCmd {
    /// CPU (millicores over the agents' last window) and memory (working set) of pods.
    Pods {
        /// Only this pod.
        name: Option<String>,
        /// Namespace.
        #[arg(short, long, default_value = "default")]
        namespace: String,
        /// All namespaces.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// Label selector, e.g. `app=web`.
        #[arg(short = 'l', long, default_value = "")]
        selector: String,
        /// A row per process (kubectl's `--containers`).
        #[arg(long, visible_alias = "containers")]
        processes: bool,
        /// Largest first by cpu or memory (default: by namespace and name).
        #[arg(long, value_enum)]
        sort_by: Option<SortBy>,
        /// Output format: table, json or yaml.
        #[arg(short, long, default_value = "table")]
        output: Output,
        /// Leave out the header line.
        #[arg(long)]
        no_headers: bool,
    },
    /// CPU and memory of nodes, and their share of the node's allocatable resources.
    Nodes {
        /// Only this node.
        name: Option<String>,
        /// Largest first by cpu or memory (default: by name).
        #[arg(long, value_enum)]
        sort_by: Option<SortBy>,
        /// Output format: table, json or yaml.
        #[arg(short, long, default_value = "table")]
        output: Output,
        /// Leave out the header line.
        #[arg(long)]
        no_headers: bool,
    },
}

/// One pod's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRow {
    /// Namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// Its node.
    pub node: String,
    /// The report's window, ms.
    pub window_ms: u32,
    /// The whole pod.
    pub usage: Usage,
    /// Per process.
    pub processes: Vec<(String, Usage)>,
}

/// The pods of fresh reports in `namespace` (`None`: all), optionally one `name` or a set of
/// names (a label selector's pods).
pub fn pod_rows(
    tops: &[NodeTop],
    namespace: Option<&str>,
    name: Option<&str>,
    only: Option<&[String]>,
) -> Vec<PodRow> {
    let mut rows = Vec::new();
    for t in tops {
        let Some(u) = t.usage.as_ref().filter(|_| t.age_ms <= STALE_MS) else {
            continue;
        };
        for p in &u.pods {
            if namespace.is_some_and(|ns| ns != p.namespace)
                || name.is_some_and(|n| n != p.name)
                || only.is_some_and(|o| !o.contains(&p.name))
            {
                continue;
            }
            rows.push(PodRow {
                namespace: p.namespace.clone(),
                name: p.name.clone(),
                node: t.node.clone(),
                window_ms: u.window_ms,
                usage: p.usage,
                processes: p
                    .processes
                    .iter()
                    .map(|q| (q.name.clone(), q.usage))
                    .collect(),
            });
        }
    }
    rows.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    rows
}

fn key(u: &Usage, by: SortBy) -> u64 {
    match by {
        SortBy::Cpu => u64::from(u.cpu_millis),
        SortBy::Memory => u.memory_bytes,
    }
}

/// Sorts pod rows largest first (stable: ties keep namespace/name order).
pub fn sort_pods(rows: &mut [PodRow], by: Option<SortBy>) {
    if let Some(by) = by {
        rows.sort_by_key(|r| std::cmp::Reverse(key(&r.usage, by)));
    }
}

/// Sorts nodes largest first; nodes without a fresh report go last.
pub fn sort_nodes(tops: &mut [NodeTop], by: Option<SortBy>) {
    if let Some(by) = by {
        tops.sort_by_key(|t| std::cmp::Reverse(fresh(t).map(|u| key(&u.node, by))));
    }
}

fn fresh(t: &NodeTop) -> Option<&bramble_wire::msg::NodeUsage> {
    t.usage.as_ref().filter(|_| t.age_ms <= STALE_MS)
}

/// CPU as kubectl prints it: `250m`.
pub fn cpu(millis: u32) -> String {
    format!("{millis}m")
}

/// Memory as kubectl prints it: whole MiB, `64Mi`.
pub fn memory(bytes: u64) -> String {
    format!("{}Mi", bytes >> 20)
}

fn percent(used: u64, of: u64) -> String {
    if of == 0 {
        return "<unknown>".into();
    }
    format!("{}%", used * 100 / of)
}

/// The pods table (`NAMESPACE` first with `-A`; a row per process with `--processes`).
pub fn pods_table(rows: &[PodRow], show_ns: bool, processes: bool) -> String {
    let mut t = Vec::new();
    let mut head = Vec::new();
    if show_ns {
        head.push("NAMESPACE".to_string());
    }
    if processes {
        head.extend(["POD".into(), "NAME".into()]);
    } else {
        head.push("NAME".into());
    }
    head.extend(["CPU(cores)".into(), "MEMORY(bytes)".into()]);
    t.push(head);
    for r in rows {
        let lines: Vec<(Option<&str>, &Usage)> = if processes {
            r.processes
                .iter()
                .map(|(n, u)| (Some(n.as_str()), u))
                .collect()
        } else {
            vec![(None, &r.usage)]
        };
        for (proc_name, u) in lines {
            let mut row = Vec::new();
            if show_ns {
                row.push(r.namespace.clone());
            }
            row.push(r.name.clone());
            if let Some(p) = proc_name {
                row.push(p.to_string());
            }
            row.extend([cpu(u.cpu_millis), memory(u.memory_bytes)]);
            t.push(row);
        }
    }
    super::table::columns(&t)
}

/// The nodes table; a node without a fresh report shows `<unknown>`.
pub fn nodes_table(tops: &[NodeTop]) -> String {
    let mut t = vec![
        ["NAME", "CPU(cores)", "CPU%", "MEMORY(bytes)", "MEMORY%"]
            .map(String::from)
            .to_vec(),
    ];
    for n in tops {
        let row = match fresh(n) {
            Some(u) => vec![
                n.node.clone(),
                cpu(u.node.cpu_millis),
                percent(
                    u64::from(u.node.cpu_millis),
                    u64::from(n.allocatable.cpu_millis),
                ),
                memory(u.node.memory_bytes),
                percent(u.node.memory_bytes, n.allocatable.memory_bytes),
            ],
            None => {
                let mut r = vec![n.node.clone()];
                r.extend(std::iter::repeat_n("<unknown>".to_string(), 4));
                r
            }
        };
        t.push(row);
    }
    super::table::columns(&t)
}

fn usage_doc(u: &Usage) -> Value {
    json!({"cpu": cpu(u.cpu_millis), "memory": format!("{}Ki", u.memory_bytes / 1024)})
}

fn window(ms: u32) -> String {
    format!("{}s", f64::from(ms) / 1000.0)
}

/// Pod rows as a `List` of metrics.k8s.io-shaped `PodMetrics` (processes as `containers`).
pub fn pods_doc(rows: &[PodRow]) -> Value {
    let items: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "apiVersion": "metrics.bramble.io/v1",
                "kind": "PodMetrics",
                "metadata": {"name": r.name, "namespace": r.namespace},
                "node": r.node,
                "window": window(r.window_ms),
                "usage": usage_doc(&r.usage),
                "containers": r.processes.iter().map(|(n, u)| json!({
                    "name": n,
                    "usage": usage_doc(u),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({"apiVersion": "v1", "kind": "List", "items": items})
}

/// Nodes as a `List` of `NodeMetrics` (nodes without a fresh report have no `usage`).
pub fn nodes_doc(tops: &[NodeTop]) -> Value {
    let items: Vec<Value> = tops
        .iter()
        .map(|t| {
            let mut v = json!({
                "apiVersion": "metrics.bramble.io/v1",
                "kind": "NodeMetrics",
                "metadata": {"name": t.node},
                "allocatable": usage_doc(&t.allocatable),
            });
            if let Some(u) = fresh(t) {
                v["window"] = window(u.window_ms).into();
                v["usage"] = usage_doc(&u.node);
            }
            v
        })
        .collect();
    json!({"apiVersion": "v1", "kind": "List", "items": items})
}

fn print(
    out: &mut impl Write,
    output: &Output,
    no_headers: bool,
    table: impl FnOnce() -> String,
    doc: impl FnOnce() -> Value,
) -> Result<(), ClientError> {
    let text = match output {
        Output::Table | Output::Wide => super::table::skip_header(&table(), no_headers).to_string(),
        Output::Json => bramble_client::doc::to_json_text(&doc()),
        Output::Yaml => bramble_client::doc::to_yaml(&doc()),
        Output::JsonPath(t) => t.render(&doc()),
        Output::Toml | Output::Name => {
            return Err(usage(
                "top prints table, json, yaml or jsonpath=TEMPLATE".into(),
            ));
        }
    };
    let _ = write!(out, "{text}");
    Ok(())
}

/// Runs `bramble top ...`.
pub async fn run(c: &mut Client, cmd: TopCmd, out: &mut impl Write) -> Result<(), ClientError> {
    let tops = match c.call(RequestBody::Top).await? {
        ResponseBody::Top(t) => t,
        _ => return Err(usage("unexpected answer to top".into())),
    };
    match cmd {
        TopCmd::Pods {
            name,
            namespace,
            all_namespaces,
            selector,
            processes,
            sort_by,
            output,
            no_headers,
        } => {
            let ns = (!all_namespaces).then_some(namespace.as_str());
            let only: Option<Vec<String>> = if selector.is_empty() {
                None
            } else {
                let res = c
                    .call(RequestBody::List {
                        kind: bramble_wire::objects::Kind::Pod,
                        namespace: ns.map(str::to_string),
                        selector,
                    })
                    .await?;
                let ResponseBody::List { items, .. } = res else {
                    return Err(usage("unexpected answer to a pod list".into()));
                };
                Some(items.iter().map(|o| o.meta().name.clone()).collect())
            };
            let mut rows = pod_rows(&tops, ns, name.as_deref(), only.as_deref());
            if rows.is_empty() && matches!(output, Output::Table | Output::Wide) {
                let whom = match (&name, ns) {
                    (Some(n), Some(ns)) => format!("pod {n} in namespace {ns}"),
                    (Some(n), None) => format!("pod {n}"),
                    (None, Some(ns)) => format!("running pods in namespace {ns}"),
                    (None, None) => "running pods".into(),
                };
                return Err(ClientError::Api(bramble_wire::msg::ApiError {
                    code: bramble_wire::msg::ErrorCode::NotFound,
                    message: format!(
                        "no metrics for {whom} yet: their nodes report within a few seconds of the first `bramble top` (a pod started since appears in the next report, ≤ 15 s); check `bramble get pods` and `bramble top nodes`"
                    ),
                }));
            }
            sort_pods(&mut rows, sort_by);
            print(
                out,
                &output,
                no_headers,
                || pods_table(&rows, all_namespaces, processes),
                || pods_doc(&rows),
            )
        }
        TopCmd::Nodes {
            name,
            sort_by,
            output,
            no_headers,
        } => {
            let mut tops = tops;
            if let Some(n) = &name {
                tops.retain(|t| &t.node == n);
                if tops.is_empty() {
                    return Err(ClientError::Api(bramble_wire::msg::ApiError {
                        code: bramble_wire::msg::ErrorCode::NotFound,
                        message: format!("node {n} not found: see `bramble get nodes`"),
                    }));
                }
            }
            sort_nodes(&mut tops, sort_by);
            print(
                out,
                &output,
                no_headers,
                || nodes_table(&tops),
                || nodes_doc(&tops),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_wire::msg::{NodeUsage, PodUsage, ProcessUsage};

    fn u(cpu_millis: u32, mib: u64) -> Usage {
        Usage {
            cpu_millis,
            memory_bytes: mib << 20,
        }
    }

    fn pod(ns: &str, name: &str, usage: Usage) -> PodUsage {
        PodUsage {
            namespace: ns.into(),
            name: name.into(),
            usage,
            processes: vec![ProcessUsage {
                name: "main".into(),
                usage,
            }],
        }
    }

    fn tops() -> Vec<NodeTop> {
        vec![
            NodeTop {
                node: "pi1".into(),
                allocatable: u(4000, 1024),
                age_ms: 2000,
                usage: Some(NodeUsage {
                    window_ms: 15_000,
                    node: u(1200, 512),
                    pods: vec![
                        pod("default", "web", u(5, 12)),
                        pod("default", "burn", u(990, 3)),
                        pod("kube", "dns", u(2, 8)),
                    ],
                }),
            },
            NodeTop {
                node: "pi2".into(),
                allocatable: u(4000, 1024),
                age_ms: 0,
                usage: None,
            },
            NodeTop {
                node: "pi3".into(),
                allocatable: u(2000, 1024),
                age_ms: STALE_MS + 1,
                usage: Some(NodeUsage {
                    window_ms: 15_000,
                    node: u(1, 1),
                    pods: vec![pod("default", "stale", u(1, 1))],
                }),
            },
        ]
    }

    #[test]
    fn pods_filtered_sorted_and_printed() {
        let t = tops();
        let mut rows = pod_rows(&t, Some("default"), None, None);
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["burn", "web"], "the stale node's pod is left out");
        sort_pods(&mut rows, Some(SortBy::Memory));
        assert_eq!(rows[0].name, "web");
        sort_pods(&mut rows, Some(SortBy::Cpu));
        assert_eq!(rows[0].name, "burn");
        assert_eq!(
            pods_table(&rows, false, false),
            "NAME   CPU(cores)   MEMORY(bytes)\nburn   990m         3Mi\nweb    5m           12Mi\n"
        );
        let all = pod_rows(&t, None, None, None);
        assert_eq!(all.len(), 3);
        let text = pods_table(&all[2..], true, true);
        assert_eq!(
            text,
            "NAMESPACE   POD   NAME   CPU(cores)   MEMORY(bytes)\nkube        dns   main   2m           8Mi\n"
        );
        assert_eq!(pod_rows(&t, None, Some("web"), None).len(), 1);
        let only = ["dns".to_string()];
        assert_eq!(pod_rows(&t, None, None, Some(&only))[0].name, "dns");
    }

    #[test]
    fn nodes_table_and_unknown() {
        let mut t = tops();
        sort_nodes(&mut t, Some(SortBy::Cpu));
        assert_eq!(t[0].node, "pi1");
        assert_eq!(
            nodes_table(&t[..2]),
            "NAME   CPU(cores)   CPU%        MEMORY(bytes)   MEMORY%\n\
             pi1    1200m        30%         512Mi           50%\n\
             pi2    <unknown>    <unknown>   <unknown>       <unknown>\n"
        );
    }

    #[test]
    fn documents() {
        let t = tops();
        let d = nodes_doc(&t);
        assert_eq!(d["kind"], "List");
        assert_eq!(d["items"][0]["kind"], "NodeMetrics");
        assert_eq!(d["items"][0]["usage"]["cpu"], "1200m");
        assert_eq!(d["items"][0]["usage"]["memory"], "524288Ki");
        assert_eq!(d["items"][0]["window"], "15s");
        assert!(d["items"][1].get("usage").is_none());
        let rows = pod_rows(&t, Some("default"), Some("burn"), None);
        let d = pods_doc(&rows);
        assert_eq!(d["items"][0]["metadata"]["namespace"], "default");
        assert_eq!(d["items"][0]["node"], "pi1");
        assert_eq!(d["items"][0]["containers"][0]["name"], "main");
        assert_eq!(d["items"][0]["usage"]["cpu"], "990m");
    }
}
