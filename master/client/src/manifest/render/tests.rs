use bramble_wire::objects::{
    Kind, Object, OwnerRef, PodPhase, PodSpec, PodTemplate, ProcessSpec, ReplicaSet, Secret,
};
use proptest::prelude::*;

use super::*;
use crate::manifest::{parse, parse_duration_ms};
use crate::validate::{parse_bytes, parse_cpu};

/// Every field of every kind a manifest can hold, none at its default.
const EVERYTHING: &str = r#"
[[namespace]]
name = "edge"
labels = { site = "barn" }

[[node]]
name = "pi1"
unschedulable = true
labels = { disk = "ssd" }
taints = [{ key = "gpu", value = "yes", effect = "NoSchedule" }, { key = "x", effect = "NoExecute" }]

[[pod]]
name = "web"
namespace = "edge"
node = "pi1"
labels = { app = "web" }
restart_policy = "OnFailure"
arch = "armv7"
rootfs = "artifact:web-root"
network = "host"
termination_grace = "1m30s"
node_selector = { disk = "ssd" }
tolerations = [{ key = "gpu", value = "yes", effect = "NoSchedule" }, { key = "x" }, {}]
[[pod.process]]
name = "main"
command = ["/srv/web", "--port", "8080", "quote\" back\\slash\nnewline\r\ncrlf\ttab \u0001 é ✓"]
env = { A = "1", B = "two words", "dotted.name" = "x=y" }
workdir = "/srv"
user = 1000
group = 1001
memory = "1536Ki"
cpu = "1.5"
pids = 64
ports = [8080, { container_port = 9090, host_port = 19090 }]
liveness = { exec = ["cat", "/tmp/healthy"], initial_delay = "1s", period = "2s", timeout = "1500ms", failure_threshold = 5, success_threshold = 1 }
readiness = { http = { port = 8080, path = "/healthz?full=1" }, period = "3s", success_threshold = 2 }
env_from = [{ configmap = "web-config", prefix = "WEB_" }, { secret = "db" }]
[[pod.process]]
name = "side"
command = ["/bin/sleep", "1000"]
memory = 1048577
cpu = "250m"
liveness = { tcp = 8081 }
[[pod.volume]]
name = "logs"
mount_path = "/var/log/web"
host_path = "/srv/logs"
read_only = true
[[pod.volume]]
name = "scratch"
mount_path = "/tmp/scratch"
empty_dir = true
[[pod.volume]]
name = "site"
mount_path = "/srv/site"
configmap = "web-config"
[[pod.volume]]
name = "creds"
mount_path = "/run/creds"
secret = "db"

[[deployment]]
name = "api"
namespace = "edge"
labels = { tier = "backend" }
replicas = 3
selector = { app = "api" }
max_surge = 2
max_unavailable = 1
min_ready = "5s"
revision_history = 4
[deployment.template]
labels = { app = "api", track = "stable" }
restart_policy = "Always"
network = "isolated"
arch = "aarch64"
[[deployment.template.process]]
name = "main"
command = ["/srv/api"]
ports = [80]

[[daemonset]]
name = "agent"
labels = { tier = "infra" }
selector = { app = "agent" }
max_unavailable = 2
[daemonset.template]
labels = { app = "agent", v = "2" }
network = "none"
tolerations = [{}]
[[daemonset.template.process]]
name = "main"
command = ["/bin/agent"]

[[job]]
name = "backup"
labels = { kind = "nightly" }
completions = 5
parallelism = 2
backoff_limit = 1
active_deadline = "1h"
[job.template]
labels = { job = "backup" }
restart_policy = "OnFailure"
termination_grace = "250ms"
[[job.template.process]]
name = "main"
command = ["/bin/backup"]

[[job]]
name = "once"
[job.template]
labels = { job = "once" }
image = "registry.lan:5000/tools/once:1.4"
[[job.template.process]]
name = "main"
args = ["--verbose", "now"]

[[configmap]]
name = "web-config"
namespace = "edge"
labels = { app = "web" }
data = { "index.html" = "<h1>hi</h1>\n", mode = "fast", empty = "" }

[[secret]]
name = "db"
namespace = "edge"
labels = { app = "db" }
data = { password = "hunter2" }
data_base64 = { "key.bin" = "AJ+Slg==" }

[[service]]
name = "dns"
namespace = "edge"
labels = { app = "dns" }
selector = { app = "dns" }
port = 53
target_port = 5353
protocol = "udp"
cluster_ip = "10.43.0.53"

[[registry]]
name = "lan"
labels = { site = "barn" }
host = "registry.lan:5000"
insecure = true
credentials = "edge/registry-login"
mirror = "mirror.lan:5000"
ca = """
-----BEGIN CERTIFICATE-----
MIIBszCCAVmgAwIBAgIUQ0E=
-----END CERTIFICATE-----
"""
"#;

fn round_trip(text: &str) -> Vec<Object> {
    let objs = parse(text, "in.toml", "first").unwrap();
    let out = render(&objs).unwrap();
    let again = parse(&out, "out.toml", "second").unwrap_or_else(|e| panic!("{e}\n{out}"));
    assert_eq!(again, objs, "{out}");
    assert_eq!(render(&again).unwrap(), out, "rendering is stable");
    objs
}

#[test]
fn every_field_survives_a_round_trip() {
    let objs = round_trip(EVERYTHING);
    let kinds: Vec<Kind> = objs.iter().map(Object::kind).collect();
    use Kind::*;
    assert_eq!(
        kinds,
        [
            Namespace, Node, Pod, Deployment, DaemonSet, Job, Job, ConfigMap, Secret, Service,
            Registry
        ]
    );
    // The round trip would hide a field that parses to its default: make sure none does.
    let Object::Pod(p) = &objs[2] else { panic!() };
    let pr = &p.spec.processes[0];
    assert!(pr.workdir.is_some() && pr.user.is_some() && pr.group.is_some());
    assert_eq!(pr.resources.memory_bytes, Some(1536 << 10));
    assert_eq!(pr.resources.cpu_millis, Some(1500));
    assert_eq!(pr.env.len(), 3);
    assert_eq!(pr.ports[1].host_port, Some(19090));
    assert_eq!(pr.liveness.as_ref().unwrap().timeout_ms, 1500);
    assert_eq!(pr.readiness.as_ref().unwrap().success_threshold, 2);
    assert_eq!(pr.env_from.len(), 2);
    assert_eq!(p.spec.volumes.len(), 4);
    assert_eq!(p.spec.termination_grace_ms, 90_000);
    assert_eq!(p.spec.tolerations.len(), 3);
    let Object::Secret(s) = &objs[8] else {
        panic!()
    };
    assert_eq!(s.data["key.bin"], [0, 0x9f, 0x92, 0x96]);
    let Object::Service(v) = &objs[9] else {
        panic!()
    };
    assert_eq!(v.spec.cluster_ip.as_deref(), Some("10.43.0.53"));
    let Object::Job(j) = &objs[6] else { panic!() };
    assert_eq!(
        j.spec.template.spec.image.as_deref(),
        Some("registry.lan:5000/tools/once:1.4")
    );
    assert_eq!(j.spec.template.spec.processes[0].args, ["--verbose", "now"]);
    assert!(j.spec.template.spec.processes[0].command.is_empty());
    let Object::Registry(r) = &objs[10] else {
        panic!()
    };
    assert!(r.spec.insecure && r.spec.mirror.is_some() && r.spec.ca.is_some());
    assert_eq!(r.spec.credentials.as_deref(), Some("edge/registry-login"));
}

#[test]
fn the_other_manifests_round_trip() {
    for text in [
        super::super::tests::HELLO,
        super::super::tests::CONTROLLERS,
        "[[namespace]]\nname = \"a\"\n",
        "[[node]]\nname = \"n\"\n",
        "[[service]]\nname = \"s\"\nselector = { a = \"b\" }\nport = 1\ntarget_port = 2\n",
        "[[service]]\nname = \"h\"\nselector = { a = \"b\" }\nport = 1\ntarget_port = 2\ncluster_ip = \"None\"\n",
        "[[configmap]]\nname = \"c\"\n",
        "[[secret]]\nname = \"s\"\n",
    ] {
        round_trip(text);
    }
}

#[test]
fn namespaces_are_written_out() {
    let objs = parse(super::super::tests::HELLO, "in.toml", "team-a").unwrap();
    let out = render(&objs).unwrap();
    assert!(out.contains("namespace = \"team-a\""), "{out}");
    assert_eq!(parse(&out, "out.toml", "default").unwrap(), objs);
}

#[test]
fn what_the_master_sets_is_left_out() {
    let objs = parse(EVERYTHING, "in.toml", "default").unwrap();
    let want = render(&objs).unwrap();
    let mut stored = objs.clone();
    for o in &mut stored {
        let m = o.meta_mut();
        m.uid = "0b5c7a52".into();
        m.revision = 42;
        m.created_ms = 1_700_000_000_000;
        m.owners.push(OwnerRef {
            kind: Kind::Deployment,
            name: "x".into(),
            uid: "u".into(),
        });
        match o {
            Object::Pod(p) => {
                p.status.phase = PodPhase::Running;
                p.status.message = "running".into();
                p.status.ip = "10.42.0.5".into();
            }
            Object::Node(n) => {
                n.spec.pod_cidr = "10.42.3.0/24".into();
                n.status.addresses.push("192.0.2.7".into());
            }
            Object::Deployment(d) => d.status.message = "rolling".into(),
            Object::Job(j) => j.status.succeeded = 3,
            _ => {}
        }
    }
    assert_eq!(render(&stored).unwrap(), want);
}

#[test]
fn env_comes_back_sorted_and_duplicates_are_refused() {
    let objs = parse(super::super::tests::HELLO, "in.toml", "default").unwrap();
    let Object::Pod(mut p) = objs[0].clone() else {
        panic!()
    };
    p.spec.processes[0].env = vec![("Z".into(), "1".into()), ("A".into(), "2".into())];
    let out = render(&[Object::Pod(p.clone())]).unwrap();
    let Object::Pod(back) = &parse(&out, "out.toml", "default").unwrap()[0] else {
        panic!()
    };
    assert_eq!(
        back.spec.processes[0].env,
        [("A".into(), "2".into()), ("Z".into(), "1".into())]
    );
    p.spec.processes[0].env.push(("A".into(), "3".into()));
    let e = render(&[Object::Pod(p)]).unwrap_err();
    assert!(e.contains("\"A\" is set twice"), "{e}");
}

#[test]
fn what_a_manifest_cannot_say_is_refused() {
    let e = render(&[Object::ReplicaSet(ReplicaSet::default())]).unwrap_err();
    assert!(e.contains("made by the master"), "{e}");

    let objs = parse(super::super::tests::CONTROLLERS, "in.toml", "default").unwrap();
    let (Object::Deployment(d), Object::Job(j)) = (&objs[0], &objs[2]) else {
        panic!("{objs:?}")
    };
    let mut pinned = d.clone();
    pinned.spec.template.spec.node_name = Some("pi1".into());
    let e = render(&[Object::Deployment(pinned)]).unwrap_err();
    assert!(e.contains("pinned to node"), "{e}");
    let mut open = d.clone();
    open.spec.selector.clear();
    let e = render(&[Object::Deployment(open)]).unwrap_err();
    assert!(e.contains("selector is empty"), "{e}");
    let mut always = j.clone();
    always.spec.template.spec.restart_policy = RestartPolicy::Always;
    let e = render(&[Object::Job(always)]).unwrap_err();
    assert!(e.contains("restart_policy"), "{e}");
}

#[test]
fn binary_secrets_go_to_data_base64() {
    let mut s = Secret::default();
    s.meta.name = "keys".into();
    s.meta.namespace = "default".into();
    s.data.insert("text".into(), b"line\r\nnext\x7f".to_vec());
    s.data.insert("bin".into(), vec![0xff, 0, 0xfe]);
    s.data.insert("empty".into(), Vec::new());
    let o = Object::Secret(s);
    let out = render(std::slice::from_ref(&o)).unwrap();
    assert!(out.contains("data_base64"), "{out}");
    assert_eq!(parse(&out, "out.toml", "default").unwrap(), [o]);
}

#[test]
fn a_minimal_template_round_trips() {
    // Objects not made by the parser: defaults everywhere a manifest has them.
    let spec = PodSpec {
        processes: vec![ProcessSpec {
            name: "m".into(),
            command: vec!["/x".into()],
            ..Default::default()
        }],
        termination_grace_ms: 0,
        ..Default::default()
    };
    let mut d = Deployment::default();
    d.meta.name = "d".into();
    d.meta.namespace = "n".into();
    d.spec.template = PodTemplate {
        labels: [("a".to_string(), "b".to_string())].into(),
        spec,
        restarted_at_ms: None,
    };
    d.spec.selector = d.spec.template.labels.clone();
    let o = Object::Deployment(d);
    let out = render(std::slice::from_ref(&o)).unwrap();
    assert_eq!(parse(&out, "out.toml", "default").unwrap(), [o], "{out}");
}

proptest! {
    #[test]
    fn quantities_read_back_exactly(b in any::<u64>(), c in 1u32.., ms in any::<u64>()) {
        prop_assert_eq!(parse_bytes(&bytes_text(b)), Ok(b));
        prop_assert_eq!(parse_cpu(&cpu_text(c)), Ok(c));
        prop_assert_eq!(parse_duration_ms(&duration_text(ms)), Ok(ms));
    }
}

#[test]
fn quantities_are_written_the_way_people_write_them() {
    assert_eq!(bytes_text(32 << 20), "32Mi");
    assert_eq!(bytes_text(1536 << 10), "1536Ki");
    assert_eq!(bytes_text(1000), "1000");
    assert_eq!(cpu_text(250), "250m");
    assert_eq!(cpu_text(2000), "2");
    assert_eq!(duration_text(10_000), "10s");
    assert_eq!(duration_text(90_000), "90s");
    assert_eq!(duration_text(3_600_000), "1h");
    assert_eq!(duration_text(0), "0ms");
}
