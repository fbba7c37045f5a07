//! Builders for wire objects with the defaults tests want (namespace `default`, one process),
//! so a test states only what it is about:
//!
//! ```
//! use bramble_testkit::build::{pod, service};
//! use bramble_wire::objects::RestartPolicy;
//! let p = pod("web").label("app", "web").sh("main", "sleep 60").restart(RestartPolicy::Never);
//! let s = service("web", 8080, 80).selector("app", "web");
//! assert_eq!(p.build().spec.processes[0].command[2], "sleep 60");
//! assert_eq!(s.build().spec.target_port, 80);
//! ```

use bramble_wire::objects::{
    Condition, ConditionKind, ConfigMap, Deployment, Meta, NetworkMode, Node, Object, Pod, PodSpec,
    PodTemplate, ProcessSpec, Protocol, RestartPolicy, Secret, Service,
};

/// Metadata of `name` in namespace `default`.
pub fn meta(name: &str) -> Meta {
    Meta {
        name: name.into(),
        namespace: "default".into(),
        ..Default::default()
    }
}

/// A process running `argv`.
pub fn process(name: &str, argv: &[&str]) -> ProcessSpec {
    ProcessSpec {
        name: name.into(),
        command: argv.iter().map(|a| a.to_string()).collect(),
        ..Default::default()
    }
}

/// A process running `/bin/sh -c script`.
pub fn sh(name: &str, script: &str) -> ProcessSpec {
    process(name, &["/bin/sh", "-c", script])
}

/// Builds a [`Pod`]: [`pod`].
#[derive(Debug, Clone)]
pub struct PodBuilder(Pod);

/// A pod `name` in namespace `default`, with no process yet (add them with
/// [`PodBuilder::sh`], [`PodBuilder::cmd`] or [`PodBuilder::process`]).
pub fn pod(name: &str) -> PodBuilder {
    PodBuilder(Pod {
        meta: meta(name),
        ..Default::default()
    })
}

impl PodBuilder {
    /// In namespace `ns`.
    pub fn namespace(mut self, ns: &str) -> Self {
        self.0.meta.namespace = ns.into();
        self
    }

    /// With label `k=v`.
    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.0.meta.labels.insert(k.into(), v.into());
        self
    }

    /// With UID `uid` (what the master would assign).
    pub fn uid(mut self, uid: &str) -> Self {
        self.0.meta.uid = uid.into();
        self
    }

    /// With process `p`.
    pub fn process(mut self, p: ProcessSpec) -> Self {
        self.0.spec.processes.push(p);
        self
    }

    /// With process `name` running `/bin/sh -c script`.
    pub fn sh(self, name: &str, script: &str) -> Self {
        self.process(sh(name, script))
    }

    /// With process `name` running `argv`.
    pub fn cmd(self, name: &str, argv: &[&str]) -> Self {
        self.process(process(name, argv))
    }

    /// With restart policy `r`.
    pub fn restart(mut self, r: RestartPolicy) -> Self {
        self.0.spec.restart_policy = r;
        self
    }

    /// Pinned to node `n`.
    pub fn node(mut self, n: &str) -> Self {
        self.0.spec.node_name = Some(n.into());
        self
    }

    /// In network mode `n`.
    pub fn network(mut self, n: NetworkMode) -> Self {
        self.0.spec.network = n;
        self
    }

    /// Changes the spec in place (for what has no method).
    pub fn spec(mut self, f: impl FnOnce(&mut PodSpec)) -> Self {
        f(&mut self.0.spec);
        self
    }

    /// The pod.
    pub fn build(self) -> Pod {
        self.0
    }

    /// The pod as an [`Object`] (for `Apply`).
    pub fn object(self) -> Object {
        Object::Pod(self.0)
    }
}

/// Builds a [`Node`]: [`node`].
#[derive(Debug, Clone)]
pub struct NodeBuilder(Node);

/// A node `name` (cluster-scoped) with no conditions.
pub fn node(name: &str) -> NodeBuilder {
    NodeBuilder(Node {
        meta: Meta {
            name: name.into(),
            ..Default::default()
        },
        ..Default::default()
    })
}

impl NodeBuilder {
    /// With condition `Ready` = `ready`, since `since_ms`.
    pub fn ready(mut self, ready: bool, since_ms: u64) -> Self {
        self.0
            .status
            .conditions
            .retain(|c| c.kind != ConditionKind::Ready);
        self.0.status.conditions.push(Condition {
            kind: ConditionKind::Ready,
            status: ready,
            message: String::new(),
            since_ms,
        });
        self
    }

    /// With label `k=v`.
    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.0.meta.labels.insert(k.into(), v.into());
        self
    }

    /// The node.
    pub fn build(self) -> Node {
        self.0
    }

    /// The node as an [`Object`].
    pub fn object(self) -> Object {
        Object::Node(self.0)
    }
}

/// Builds a [`Deployment`]: [`deployment`].
#[derive(Debug, Clone)]
pub struct DeploymentBuilder(Deployment);

/// A deployment `name` of `replicas` copies of `template`'s spec and labels (which are also its
/// selector), surge 1, unavailable 0.
pub fn deployment(name: &str, replicas: u32, template: PodBuilder) -> DeploymentBuilder {
    let t = template.build();
    DeploymentBuilder(Deployment {
        meta: meta(name),
        spec: bramble_wire::objects::DeploymentSpec {
            replicas,
            selector: t.meta.labels.clone(),
            template: PodTemplate {
                labels: t.meta.labels,
                spec: t.spec,
                restarted_at_ms: None,
            },
            max_surge: 1,
            max_unavailable: 0,
            ..Default::default()
        },
        ..Default::default()
    })
}

impl DeploymentBuilder {
    /// The deployment.
    pub fn build(self) -> Deployment {
        self.0
    }

    /// The deployment as an [`Object`].
    pub fn object(self) -> Object {
        Object::Deployment(self.0)
    }
}

/// Builds a [`Service`]: [`service`].
#[derive(Debug, Clone)]
pub struct ServiceBuilder(Service);

/// A TCP service `name` listening on `port` of every node, forwarding to `target_port`.
pub fn service(name: &str, port: u16, target_port: u16) -> ServiceBuilder {
    let mut s = Service {
        meta: meta(name),
        ..Default::default()
    };
    s.spec.port = port;
    s.spec.target_port = target_port;
    ServiceBuilder(s)
}

impl ServiceBuilder {
    /// Selecting pods labelled `k=v`.
    pub fn selector(mut self, k: &str, v: &str) -> Self {
        self.0.spec.selector.insert(k.into(), v.into());
        self
    }

    /// UDP instead of TCP.
    pub fn udp(mut self) -> Self {
        self.0.spec.protocol = Protocol::Udp;
        self
    }

    /// The service.
    pub fn build(self) -> Service {
        self.0
    }

    /// The service as an [`Object`].
    pub fn object(self) -> Object {
        Object::Service(self.0)
    }
}

/// A config map `name` holding `data` (key → text).
pub fn config_map(name: &str, data: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        meta: meta(name),
        data: data
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// A secret `name` holding `data` (key → bytes).
pub fn secret(name: &str, data: &[(&str, &[u8])]) -> Secret {
    Secret {
        meta: meta(name),
        data: data
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_vec()))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_fill_what_they_are_told_and_default_the_rest() {
        let p = pod("a")
            .label("app", "x")
            .cmd("main", &["/bin/sleep", "5"])
            .restart(RestartPolicy::Never)
            .node("n1")
            .build();
        assert_eq!(p.meta.namespace, "default");
        assert_eq!(p.spec.processes[0].command, ["/bin/sleep", "5"]);
        assert_eq!(p.spec.node_name.as_deref(), Some("n1"));
        let d = deployment("d", 3, pod("").label("app", "x").sh("m", "true")).build();
        assert_eq!(d.spec.selector, d.spec.template.labels);
        assert_eq!(d.spec.replicas, 3);
        let n = node("n").ready(false, 1).ready(true, 2).build();
        assert!(n.status.is_ready());
        assert_eq!(n.status.conditions.len(), 1);
        assert_eq!(
            service("s", 1, 2).udp().build().spec.protocol,
            Protocol::Udp
        );
        assert_eq!(config_map("c", &[("k", "v")]).data["k"], "v");
        assert_eq!(secret("s", &[("k", b"v")]).data["k"], b"v");
    }
}
