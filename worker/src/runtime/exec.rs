//! `bramble exec`'s helper: the worker binary run again as
//! `bramble-worker __bramble_exec STATE_DIR INIT_PID PROCESS tty|notty -- CMD ARGS…`, with the
//! session's terminal or pipes as its stdio.
//!
//! A fresh single-threaded process (like the pod init), it reads the pod's [`InitConfig`],
//! opens the chosen process's cgroup files, enters the init's namespaces and root
//! ([`crate::sys::exec::enter_namespaces_of`]), resolves the command, user, groups and
//! capabilities inside that root exactly as the init does for the pod's own processes
//! ([`super::init::process_env`], [`super::init::process_credentials`],
//! [`super::init::seccomp_for`]), and forks the process with the init's own
//! [`crate::sys::spawn::fork_exec`]: the same cgroup, capability bounding set, user switch,
//! `no_new_privs` and seccomp filter, so an exec never has more power than the pod. The fork
//! is what puts the process into the pod's PID namespace. The helper then waits for it,
//! turning SIGTERM/SIGINT/SIGHUP (the worker ending the session) into SIGKILL for it, and
//! exits with its exit code (128 + the signal that killed it). Setup failures print one line on
//! stderr and exit 126 (cannot run) or 127 (command not found), like a shell.

use std::ffi::{CString, OsString};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use super::init::{self, InitConfig, SCRATCH_DIR};
use crate::persist::{self, PodDir};
use crate::sys::process::{self as sysproc, Exit, Signal};
use crate::sys::spawn::{self, Exec, ProcessSetup};

/// The hidden first argument that makes the worker binary run as an exec helper.
pub const EXEC_ARG: &str = "__bramble_exec";

/// Exit code: the command could not be run (setup failed, not executable).
pub const CANNOT_RUN: i32 = 126;
/// Exit code: the command is not in the pod's root.
pub const NOT_FOUND: i32 = 127;

/// What the helper is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelperArgs {
    /// The pod's state directory (its `config`).
    pub state_dir: PathBuf,
    /// The pod init's host PID: whose namespaces and root are entered.
    pub init_pid: i32,
    /// The process whose context the exec takes; `None` = the first.
    pub process: Option<String>,
    /// stdin is a terminal to make the controlling one.
    pub tty: bool,
    /// Command and arguments.
    pub command: Vec<String>,
}

impl HelperArgs {
    /// The helper's arguments (after the program name).
    pub fn to_args(&self) -> Vec<OsString> {
        let mut out: Vec<OsString> = vec![
            EXEC_ARG.into(),
            self.state_dir.clone().into(),
            self.init_pid.to_string().into(),
            self.process.clone().unwrap_or_default().into(),
            if self.tty { "tty" } else { "notty" }.into(),
            "--".into(),
        ];
        out.extend(self.command.iter().map(OsString::from));
        out
    }

    /// Parses what [`HelperArgs::to_args`] wrote (without the program name).
    pub fn parse(args: &[String]) -> Option<HelperArgs> {
        let [arg, state, pid, process, tty, dashes, command @ ..] = args else {
            return None;
        };
        if arg != EXEC_ARG || dashes != "--" || command.is_empty() {
            return None;
        }
        Some(HelperArgs {
            state_dir: PathBuf::from(state),
            init_pid: pid.parse().ok().filter(|&p| p > 0)?,
            process: (!process.is_empty()).then(|| process.clone()),
            tty: match tty.as_str() {
                "tty" => true,
                "notty" => false,
                _ => return None,
            },
            command: command.to_vec(),
        })
    }
}

/// Runs the helper if the process was started as one; returns its exit code. Call first in
/// `main`.
pub fn run_if_requested() -> Option<i32> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) != Some(EXEC_ARG) {
        return None;
    }
    let Some(a) = HelperArgs::parse(&args) else {
        eprintln!("bramble exec: bad helper arguments");
        return Some(CANNOT_RUN);
    };
    Some(match run(&a) {
        Ok(code) => code,
        Err((code, msg)) => {
            eprintln!("bramble exec: {msg}");
            code
        }
    })
}

type Failed = (i32, String);

fn cannot(msg: impl std::fmt::Display) -> Failed {
    (CANNOT_RUN, msg.to_string())
}

fn run(a: &HelperArgs) -> Result<i32, Failed> {
    let pod_dir = PodDir::at(&a.state_dir);
    let bytes = std::fs::read(pod_dir.config())
        .map_err(|e| cannot(format!("reading {}: {e}", pod_dir.config().display())))?;
    let (_, cfg): (_, InitConfig) =
        persist::decode_postcard(persist::POD_CONFIG, &bytes).map_err(cannot)?;
    let proc = match &a.process {
        Some(name) => cfg.processes.iter().find(|p| &p.spec.name == name),
        None => cfg.processes.first(),
    }
    .ok_or_else(|| {
        let names: Vec<&str> = cfg.processes.iter().map(|p| p.spec.name.as_str()).collect();
        cannot(format!(
            "pod {:?} has no process {:?}; it has {names:?}",
            cfg.hostname,
            a.process.as_deref().unwrap_or("")
        ))
    })?;
    let mut spec = proc.spec.clone();
    if cfg.rootfs.is_none() && spec.workdir.is_none() {
        spec.workdir = Some(SCRATCH_DIR.into());
    }
    // Everything on the host's side is opened before entering the pod.
    let procs_fds = proc
        .cgroup_procs
        .iter()
        .map(|f| spawn::open_write(Path::new(f)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cannot(format!("joining the pod's cgroup: {e}")))?;
    let cgroup_dir = match proc.cgroup_procs.as_slice() {
        [one] => spawn::open_cgroup2_dir_of(Path::new(one)),
        _ => None,
    };
    let env_from = cfg
        .env_file
        .as_ref()
        .and_then(|f| super::volumes::read_env_file(Path::new(f)).ok())
        .and_then(|sets| sets.into_iter().find(|(n, _)| *n == spec.name))
        .map(|(_, e)| e)
        .unwrap_or_default();
    let default_seccomp = init::default_seccomp();
    let seccomp = init::seccomp_for(&spec, cfg.privileged, default_seccomp.as_ref());
    let available = crate::sys::caps::available();
    let sfd = sysproc::block_signals(&[Signal::TERM, Signal::INT, Signal::HUP]).map_err(cannot)?;

    crate::sys::exec::enter_namespaces_of(a.init_pid).map_err(|e| {
        cannot(format!(
            "entering pod {:?} (is it still running?): {e}",
            cfg.hostname
        ))
    })?;

    let mut env = init::process_env(&spec, &cfg.hostname, &env_from);
    if a.tty && !env.iter().any(|(k, _)| k == "TERM") {
        env.push(("TERM".into(), "xterm".into()));
    }
    let creds = init::process_credentials(&spec, cfg.privileged, available).map_err(cannot)?;
    let cmd = &a.command[0];
    let Some(path) = init::resolve(cmd, &env) else {
        return Err((
            NOT_FOUND,
            format!(
                "{cmd:?} not found in pod {:?}'s root (PATH={})",
                cfg.hostname,
                env.iter()
                    .find(|(k, _)| k == "PATH")
                    .map_or("", |(_, v)| v.as_str())
            ),
        ));
    };
    if std::fs::metadata(&path).is_err() {
        return Err((
            NOT_FOUND,
            format!(
                "{} not found in pod {:?}'s root",
                path.display(),
                cfg.hostname
            ),
        ));
    }
    let exec = Exec::new(&path, &a.command, &env).map_err(cannot)?;
    let workdir = spec.workdir.as_deref().and_then(|w| CString::new(w).ok());
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let procs = spawn::borrow_all(&procs_fds);
    let setup = ProcessSetup {
        exec: &exec,
        cgroup_procs: &procs,
        cgroup_dir: cgroup_dir.as_ref().map(|d| d.as_fd()),
        stdin: stdin.as_fd(),
        output: stdout.as_fd(),
        workdir: workdir.as_deref(),
        creds: &creds,
        seccomp: seccomp.as_deref(),
        stderr: Some(stderr.as_fd()),
        controlling_tty: a.tty,
    };
    let pid = spawn::fork_exec(&setup).map_err(|e| cannot(format!("{cmd}: {e}")))?;
    let pidfd = sysproc::pidfd_open(pid).map_err(cannot)?;
    loop {
        let ready = sysproc::poll_readable(&[pidfd.as_fd(), sfd.as_fd()], None).map_err(cannot)?;
        if ready.get(1).copied().unwrap_or(false)
            && !sysproc::read_signals(&sfd).map_err(cannot)?.is_empty()
        {
            // The session ended: the exec goes with it.
            let _ = sysproc::kill(pid, Signal::KILL);
        }
        if ready.first().copied().unwrap_or(false)
            && let Some(exit) = sysproc::try_wait(pid).map_err(cannot)?
        {
            return Ok(match exit {
                Exit::Code(c) => c,
                Exit::Signal(s) => 128 + s.number(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helper_arguments_round_trip() {
        let a = HelperArgs {
            state_dir: "/run/bramble/pods/default_web_1".into(),
            init_pid: 42,
            process: Some("app".into()),
            tty: true,
            command: vec!["sh".into(), "-c".into(), "echo -- hi".into()],
        };
        let args: Vec<String> = a
            .to_args()
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect();
        assert_eq!(HelperArgs::parse(&args), Some(a.clone()));
        let first = HelperArgs {
            process: None,
            tty: false,
            ..a
        };
        let args: Vec<String> = first
            .to_args()
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect();
        assert_eq!(HelperArgs::parse(&args), Some(first));
    }

    #[test]
    fn bad_helper_arguments_are_refused() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            HelperArgs::parse(&s(&[EXEC_ARG, "/s", "1", "", "tty", "--"])),
            None
        );
        assert_eq!(
            HelperArgs::parse(&s(&[EXEC_ARG, "/s", "0", "", "tty", "--", "sh"])),
            None
        );
        assert_eq!(
            HelperArgs::parse(&s(&[EXEC_ARG, "/s", "1", "", "maybe", "--", "sh"])),
            None
        );
        assert_eq!(
            HelperArgs::parse(&s(&["x", "/s", "1", "", "tty", "--", "sh"])),
            None
        );
    }
}
