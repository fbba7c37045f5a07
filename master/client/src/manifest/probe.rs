//! Probe syntax in manifests:
//!
//! ```toml
//! readiness = { http = { port = 8080, path = "/healthz" }, period = "2s", timeout = "1s", failure_threshold = 3, success_threshold = 1, initial_delay = "1s" }
//! liveness = { exec = ["cat", "/tmp/healthy"] }
//! liveness = { tcp = 8080 }
//! ```
//! Unset fields take Kubernetes' defaults ([`Probe::default`]). The form is checked here (so
//! errors carry the file and line); the values in `validate::check_pod`.

use bramble_wire::objects::{Probe, ProbeAction};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProbeM {
    exec: Option<Vec<String>>,
    tcp: Option<u16>,
    http: Option<HttpM>,
    #[serde(default, deserialize_with = "super::de_opt_duration_ms")]
    initial_delay: Option<u32>,
    #[serde(default, deserialize_with = "super::de_opt_duration_ms")]
    period: Option<u32>,
    #[serde(default, deserialize_with = "super::de_opt_duration_ms")]
    timeout: Option<u32>,
    failure_threshold: Option<u32>,
    success_threshold: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpM {
    port: u16,
    #[serde(default = "root")]
    path: String,
}

fn root() -> String {
    "/".into()
}

/// A probe as written in a manifest.
#[derive(Debug, Deserialize)]
#[serde(try_from = "ProbeM")]
pub(super) struct ProbeSpec(pub Probe);

impl TryFrom<ProbeM> for ProbeSpec {
    type Error = String;

    fn try_from(m: ProbeM) -> Result<ProbeSpec, String> {
        let action = match (m.exec, m.tcp, m.http) {
            (Some(cmd), None, None) => ProbeAction::Exec(cmd),
            (None, Some(port), None) => ProbeAction::Tcp { port },
            (None, None, Some(h)) => ProbeAction::Http {
                port: h.port,
                path: h.path,
            },
            _ => {
                return Err(
                    "give exactly one check: exec = [\"program\", \"arg\"], tcp = PORT or http = { port = PORT, path = \"/healthz\" }"
                        .into(),
                );
            }
        };
        let d = Probe::default();
        Ok(ProbeSpec(Probe {
            action,
            initial_delay_ms: m.initial_delay.unwrap_or(d.initial_delay_ms),
            period_ms: m.period.unwrap_or(d.period_ms),
            timeout_ms: m.timeout.unwrap_or(d.timeout_ms),
            failure_threshold: m.failure_threshold.unwrap_or(d.failure_threshold),
            success_threshold: m.success_threshold.unwrap_or(d.success_threshold),
        }))
    }
}

#[cfg(test)]
mod tests {
    use bramble_wire::objects::{Object, Probe, ProbeAction};

    fn pod(process_extra: &str) -> Result<Object, String> {
        let text = format!(
            "[[pod]]\nname = \"web\"\n[[pod.process]]\nname = \"main\"\ncommand = [\"/srv/web\"]\n{process_extra}\n"
        );
        let mut objs = crate::manifest::parse(&text, "web.toml", "default")?;
        let o = objs.remove(0);
        crate::validate::check_object(&o).map_err(|e| e.to_string())?;
        Ok(o)
    }

    fn probes(o: &Object) -> (Option<Probe>, Option<Probe>) {
        let Object::Pod(p) = o else { panic!("{o:?}") };
        let pr = &p.spec.processes[0];
        (pr.liveness.clone(), pr.readiness.clone())
    }

    #[test]
    fn probes_parse_with_kubernetes_defaults() {
        let o = pod(
            "readiness = { http = { port = 8080, path = \"/healthz\" }, period = \"2s\", timeout = \"1s\", failure_threshold = 3, success_threshold = 2, initial_delay = \"1s\" }\nliveness = { exec = [\"cat\", \"/tmp/healthy\"] }",
        )
        .unwrap();
        let (live, ready) = probes(&o);
        assert_eq!(
            ready,
            Some(Probe {
                action: ProbeAction::Http {
                    port: 8080,
                    path: "/healthz".into()
                },
                initial_delay_ms: 1000,
                period_ms: 2000,
                timeout_ms: 1000,
                failure_threshold: 3,
                success_threshold: 2,
            })
        );
        assert_eq!(
            live,
            Some(Probe {
                action: ProbeAction::Exec(vec!["cat".into(), "/tmp/healthy".into()]),
                ..Probe::default()
            })
        );
        let (live, ready) = probes(&pod("liveness = { tcp = 8080 }").unwrap());
        assert_eq!(live.unwrap().action, ProbeAction::Tcp { port: 8080 });
        assert_eq!(ready, None);
        let (_, ready) = probes(&pod("readiness = { http = { port = 80 } }").unwrap());
        assert_eq!(
            ready.unwrap().action,
            ProbeAction::Http {
                port: 80,
                path: "/".into()
            }
        );
    }

    #[test]
    fn bad_probes_are_rejected_naming_the_field() {
        let cases: &[(&str, &[&str])] = &[
            (
                "liveness = { tcp = 80, exec = [\"x\"] }",
                &["line 6", "exactly one"],
            ),
            ("liveness = { period = \"1s\" }", &["line 6", "exactly one"]),
            (
                "liveness = { tcp = 80, perod = \"1s\" }",
                &["line 6", "perod"],
            ),
            (
                "liveness = { tcp = 80, period = \"soon\" }",
                &["line 6", "not a duration"],
            ),
            (
                "liveness = { tcp = 0 }",
                &["process[0].liveness.tcp", "port 0"],
            ),
            (
                "readiness = { http = { port = 0 } }",
                &["process[0].readiness.http.port", "port 0"],
            ),
            (
                "readiness = { http = { port = 80, path = \"healthz\" } }",
                &["readiness.http.path", "start it with '/'"],
            ),
            (
                "readiness = { http = { port = 80, path = \"/a b\" } }",
                &["readiness.http.path"],
            ),
            (
                "liveness = { exec = [] }",
                &["liveness.exec", "give the program"],
            ),
            (
                "liveness = { tcp = 80, period = \"50ms\" }",
                &["liveness.period", "100ms"],
            ),
            (
                "liveness = { tcp = 80, period = \"1s\", timeout = \"2s\" }",
                &["liveness.timeout", "period"],
            ),
            (
                "readiness = { tcp = 80, failure_threshold = 0 }",
                &["readiness.failure_threshold", "at least 1"],
            ),
            (
                "readiness = { tcp = 80, success_threshold = 0 }",
                &["readiness.success_threshold", "at least 1"],
            ),
            (
                "liveness = { tcp = 80, success_threshold = 2 }",
                &["liveness.success_threshold", "must be 1"],
            ),
        ];
        for (extra, want) in cases {
            let e = pod(extra).unwrap_err();
            for w in *want {
                assert!(e.contains(w), "{extra}: {e:?} lacks {w:?}");
            }
        }
    }
}
