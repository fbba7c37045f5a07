//! Service discovery by environment: `BRAMBLE_SERVICE_<NAME>_HOST` and `_PORT` for every service
//! of a pod's namespace known when the pod starts (Kubernetes' `<NAME>_SERVICE_HOST`).

use bramble_wire::objects::{Endpoints, NetworkMode, Pod};

/// `web-api` → `WEB_API`.
pub fn env_name(service: &str) -> String {
    service
        .chars()
        .map(|c| match c {
            '-' | '.' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect()
}

/// The variables for the services of `namespace`: the host is the node's proxy (`host`).
pub fn service_env(eps: &[Endpoints], namespace: &str, host: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for e in eps.iter().filter(|e| e.meta.namespace == namespace) {
        let n = env_name(&e.meta.name);
        out.push((format!("BRAMBLE_SERVICE_{n}_HOST"), host.to_string()));
        out.push((format!("BRAMBLE_SERVICE_{n}_PORT"), e.port.to_string()));
    }
    out
}

/// `pods` with the service variables appended to every process's environment (a variable the
/// pod sets itself wins). Isolated pods (their own network, where `127.0.0.1` is their own
/// loopback) reach the proxy at `isolated_host`, the node's address on the pod bridge.
pub fn with_service_env(
    pods: &[Pod],
    eps: &[Endpoints],
    host: &str,
    isolated_host: Option<&str>,
) -> Vec<Pod> {
    pods.iter()
        .map(|p| {
            let host = match (p.spec.network, isolated_host) {
                (NetworkMode::Isolated, Some(h)) => h,
                _ => host,
            };
            let vars = service_env(eps, &p.meta.namespace, host);
            let mut p = p.clone();
            for proc in &mut p.spec.processes {
                for (k, v) in &vars {
                    if !proc.env.iter().any(|(x, _)| x == k) {
                        proc.env.push((k.clone(), v.clone()));
                    }
                }
            }
            p
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_wire::objects::{Meta, PodSpec, ProcessSpec};

    fn ep(ns: &str, name: &str, port: u16) -> Endpoints {
        Endpoints {
            meta: Meta {
                name: name.into(),
                namespace: ns.into(),
                ..Default::default()
            },
            port,
            ..Default::default()
        }
    }

    #[test]
    fn names_and_namespaces() {
        assert_eq!(env_name("web-api"), "WEB_API");
        let eps = [ep("default", "web-api", 8080), ep("other", "db", 5432)];
        assert_eq!(
            service_env(&eps, "default", "127.0.0.1"),
            [
                (
                    "BRAMBLE_SERVICE_WEB_API_HOST".to_string(),
                    "127.0.0.1".to_string()
                ),
                (
                    "BRAMBLE_SERVICE_WEB_API_PORT".to_string(),
                    "8080".to_string()
                ),
            ]
        );
        let pod = Pod {
            meta: Meta {
                name: "p".into(),
                namespace: "other".into(),
                ..Default::default()
            },
            spec: PodSpec {
                processes: vec![ProcessSpec {
                    name: "main".into(),
                    env: vec![("BRAMBLE_SERVICE_DB_PORT".into(), "1".into())],
                    ..Default::default()
                }],
                ..Default::default()
            },
            ..Default::default()
        };
        let mut isolated = pod.clone();
        isolated.spec.network = NetworkMode::Isolated;
        let out = with_service_env(&[pod, isolated], &eps, "127.0.0.1", Some("10.42.0.1"));
        assert_eq!(
            out[0].spec.processes[0].env,
            [
                ("BRAMBLE_SERVICE_DB_PORT".to_string(), "1".to_string()),
                (
                    "BRAMBLE_SERVICE_DB_HOST".to_string(),
                    "127.0.0.1".to_string()
                ),
            ]
        );
        // An isolated pod's 127.0.0.1 is its own: it reaches the proxy on the bridge.
        assert_eq!(
            out[1].spec.processes[0].env[1],
            (
                "BRAMBLE_SERVICE_DB_HOST".to_string(),
                "10.42.0.1".to_string()
            )
        );
    }
}
