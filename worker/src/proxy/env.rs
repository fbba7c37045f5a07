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

/// The variables for the services of `namespace`: the host is the node's proxy (`host`), or
/// with `vips` the service's virtual IP when it has one (the kernel path serves it, also while
/// the agent restarts).
pub fn service_env(
    eps: &[Endpoints],
    namespace: &str,
    host: &str,
    vips: bool,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for e in eps.iter().filter(|e| e.meta.namespace == namespace) {
        let n = env_name(&e.meta.name);
        let host = match &e.cluster_ip {
            Some(vip) if vips => vip.as_str(),
            _ => host,
        };
        out.push((format!("BRAMBLE_SERVICE_{n}_HOST"), host.to_string()));
        out.push((format!("BRAMBLE_SERVICE_{n}_PORT"), e.port.to_string()));
    }
    out
}

/// The service variables for `pod` (appended to each process's environment when it runs, a
/// variable the pod sets itself winning: [`crate::runtime::PodToRun::env_of`]). Isolated pods
/// (their own network, where `127.0.0.1` is their own loopback) reach the proxy at
/// `isolated_host`, the node's address on the pod bridge.
pub fn pod_service_env(
    pod: &Pod,
    eps: &[Endpoints],
    host: &str,
    isolated_host: Option<&str>,
    vips: bool,
) -> Vec<(String, String)> {
    let host = match (pod.spec.network, isolated_host) {
        (NetworkMode::Isolated, Some(h)) => h,
        _ => host,
    };
    service_env(eps, &pod.meta.namespace, host, vips)
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
    fn with_the_kernel_path_the_host_is_the_virtual_ip() {
        let mut web = ep("default", "web", 8080);
        web.cluster_ip = Some("10.43.0.5".into());
        let eps = [web, ep("default", "headless", 53)];
        let host = |vips| {
            service_env(&eps, "default", "127.0.0.1", vips)
                .into_iter()
                .filter(|(k, _)| k.ends_with("_HOST"))
                .map(|(_, v)| v)
                .collect::<Vec<_>>()
        };
        assert_eq!(host(true), ["10.43.0.5", "127.0.0.1"]);
        assert_eq!(host(false), ["127.0.0.1", "127.0.0.1"]);
    }

    #[test]
    fn names_and_namespaces() {
        assert_eq!(env_name("web-api"), "WEB_API");
        let eps = [ep("default", "web-api", 8080), ep("other", "db", 5432)];
        assert_eq!(
            service_env(&eps, "default", "127.0.0.1", false),
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
        let run = |p: &Pod| {
            let mut r = crate::runtime::PodToRun::new(p.clone());
            r.extra_env = pod_service_env(p, &eps, "127.0.0.1", Some("10.42.0.1"), false);
            r.env_of(&p.spec.processes[0])
        };
        let out = [run(&pod), run(&isolated)];
        assert_eq!(
            out[0],
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
            out[1][1],
            (
                "BRAMBLE_SERVICE_DB_HOST".to_string(),
                "10.42.0.1".to_string()
            )
        );
    }
}
