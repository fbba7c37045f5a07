//! The values in `tests/fixtures/state-v*/`: what the fixture files must decode to.
#![allow(dead_code)]

use bramble_wire::msg::{Assignment, PodSubnet};
use bramble_wire::objects::{
    ConfigMap, EndpointAddress, Endpoints, ExitReason, Meta, NetworkMode, Pod, PodPhase, PodSpec,
    PodStatus, ProcessSpec, ProcessState, ProcessStatus, Protocol, Resources, RestartPolicy,
};
use bramble_worker::runtime::init::{InitConfig, InitProcess};

pub const POD_KEY: &str = "default_web_0123abcd";
pub const CREDENTIAL: &str = "node-n1.5ecret5ecret";
/// `init`: PID, start ticks, start time (ms).
pub const INIT: (i32, u64, u64) = (4242, 987_654, 1_765_000_000_123);
pub const IP: &str = "10.42.0.2";

fn meta(name: &str, uid: &str) -> Meta {
    Meta {
        name: name.into(),
        namespace: "default".into(),
        labels: [("app".to_string(), name.to_string())]
            .into_iter()
            .collect(),
        uid: uid.into(),
        revision: 7,
        created_ms: 1_765_000_000_000,
        owners: Vec::new(),
        annotations: Default::default(),
    }
}

pub fn process() -> ProcessSpec {
    ProcessSpec {
        name: "main".into(),
        command: vec!["/bin/sh".into(), "-c".into(), "sleep 1000".into()],
        env: vec![("GREETING".into(), "hi".into())],
        resources: Resources {
            cpu_millis: Some(100),
            memory_bytes: Some(16 << 20),
            pids: None,
        },
        ..Default::default()
    }
}

pub fn pod() -> Pod {
    Pod {
        meta: meta("web", "0123abcd-4567-89ef-0123-456789abcdef"),
        spec: PodSpec {
            processes: vec![process()],
            restart_policy: RestartPolicy::Always,
            network: NetworkMode::Isolated,
            termination_grace_ms: 5000,
            node_name: Some("n1".into()),
            ..Default::default()
        },
        status: PodStatus::default(),
    }
}

pub fn assignment() -> Assignment {
    Assignment {
        revision: 42,
        pods: vec![pod()],
        config_maps: vec![ConfigMap {
            meta: meta("settings", "cm-0001"),
            data: [("level".to_string(), "debug".to_string())]
                .into_iter()
                .collect(),
        }],
        artifacts: Vec::new(),
        images: Vec::new(),
    }
}

pub fn subnets() -> Vec<PodSubnet> {
    vec![
        PodSubnet {
            node: "n1".into(),
            cidr: "10.42.0.0/24".into(),
            via: "192.0.2.11".into(),
        },
        PodSubnet {
            node: "n2".into(),
            cidr: "10.42.1.0/24".into(),
            via: "192.0.2.12".into(),
        },
    ]
}

pub fn endpoints() -> Vec<Endpoints> {
    vec![Endpoints {
        meta: meta("web", "svc-0001"),
        port: 8080,
        ready: vec![EndpointAddress {
            ip: IP.into(),
            port: 80,
            pod: "web".into(),
            node: "n1".into(),
        }],
        not_ready: Vec::new(),
        protocol: Protocol::Tcp,
        // Files of versions 0 and 1 have no virtual IP.
        cluster_ip: None,
    }]
}

pub fn init_config() -> InitConfig {
    InitConfig {
        hostname: "web".into(),
        processes: vec![InitProcess {
            spec: process(),
            cgroup_procs: Vec::new(),
            oom_file: Some(
                "/sys/fs/cgroup/memory/bramble/default_web_0123abcd/memory.oom_control".into(),
            ),
        }],
        restart_policy: RestartPolicy::Always,
        rootfs: None,
        private_network: true,
        volumes: Vec::new(),
        empty_dir_base: format!("/run/bramble/pods/{POD_KEY}/volumes"),
        backoff_initial_ms: 500,
        backoff_max_ms: 10_000,
        backoff_reset_ms: 600_000,
        log_dir: "/var/lib/bramble-worker/logs/default_web".into(),
        log_cap: 1 << 20,
        tmp_size: 64 << 20,
        termination_grace_ms: 5000,
        config_volume_base: String::new(),
        secret_volume_base: String::new(),
        env_file: None,
        privileged: false,
        host_ipc: false,
        cgroup: None,
        overlay: None,
    }
}

pub fn status() -> PodStatus {
    PodStatus {
        phase: PodPhase::Running,
        processes: vec![ProcessStatus {
            name: "main".into(),
            state: ProcessState::Running {
                pid: 7,
                started_ms: 1_765_000_000_200,
            },
            restarts: 0,
            last_exit: Some(ExitReason::Completed),
            ready: true,
        }],
        message: String::new(),
        updated_ms: 1_765_000_000_300,
        ip: String::new(),
    }
}
