//! `bramble exec` through the real binaries (root; this host): a pod with a busybox root of its
//! own, its own network, a memory limit and a reduced capability set; execs without a terminal
//! (separate stdout/stderr, exit codes, signals, command not found, stdin piped, a large output
//! through the stream's flow control), with a terminal driven through a pseudo-terminal of the
//! test (raw mode, window resize seen by `stty size`, Ctrl-C to the remote shell, the terminal
//! restored), the pod's root, cgroup and capabilities seen from inside, and a node credential
//! refused.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bramble_testkit::{bin, busybox::busybox};
use bramble_tests::{MasterProc, http_get, require_root, start_cluster, wait_for, wait_for_with};
use bramble_worker::sys::exec as pty;

/// A busybox root with a marker file only this root has.
fn busybox_root(dir: &Path) -> String {
    let root = dir.join("bbroot");
    for d in ["bin", "etc", "tmp", "proc", "sys", "dev"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy(busybox("amd64"), root.join("bin/busybox")).unwrap();
    for applet in [
        "sh", "cat", "echo", "grep", "stty", "sleep", "head", "wc", "id", "kill", "cut", "ls", "tr",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    std::fs::write(root.join("etc/marker"), "only-in-the-pod-root\n").unwrap();
    std::fs::create_dir_all(root.join("www")).unwrap();
    std::fs::write(root.join("www/index.html"), "hello from the pod\n").unwrap();
    std::fs::write(root.join("www/big"), "0123456789abcdef".repeat(200_000)).unwrap();
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n").unwrap();
    root.to_str().unwrap().to_string()
}

fn pods(root: &str) -> String {
    format!(
        r#"
[[pod]]
name = "box"
rootfs = "{root}"
network = "isolated"
[[pod.process]]
name = "main"
command = ["/bin/sh", "-c", "sleep 100000"]
memory = "32Mi"
capabilities = {{ drop = ["ALL"], add = ["NET_BIND_SERVICE", "KILL"] }}
[[pod.process]]
name = "side"
command = ["/bin/sh", "-c", "sleep 100000"]
"#
    )
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn exec(m: &MasterProc, args: &[&str]) -> Output {
    let mut all = vec!["exec"];
    all.extend_from_slice(args);
    m.cli(&all)
}

#[test]
fn exec_runs_inside_the_pod_with_and_without_a_terminal() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let (m, _w) = start_cluster(tmp.path(), &["--heartbeat-interval", "500ms"], &["n1"]);
    let root = busybox_root(tmp.path());
    let f = tmp.path().join("pods.toml");
    std::fs::write(&f, pods(&root)).unwrap();
    m.ok(&["apply", "-f", f.to_str().unwrap()]);
    wait_for_with(
        Duration::from_secs(60),
        "box Running",
        || m.pod_status("box").filter(|(phase, _)| phase == "Running"),
        || {
            m.diag(&[&["describe", "pod", "box"]])
                + &bramble_tests::worker_log(&tmp.path().join("n1"))
        },
    );

    // Separate stdout and stderr; the exit code comes back.
    let o = exec(
        &m,
        &["box", "--", "sh", "-c", "echo out; echo err >&2; exit 3"],
    );
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    assert_eq!(text(&o.stdout), "out\n");
    assert_eq!(text(&o.stderr), "err\n");
    // A signal: 128 + n.
    let o = exec(&m, &["box", "--", "sh", "-c", "kill -9 $$"]);
    assert_eq!(o.status.code(), Some(137), "{o:?}");
    // Not in the pod's root: 127 and a message naming it.
    let o = exec(&m, &["box", "--", "no-such-command"]);
    assert_eq!(o.status.code(), Some(127), "{o:?}");
    assert!(
        text(&o.stderr).contains("\"no-such-command\" not found"),
        "{o:?}"
    );
    // The host's binaries are not there either.
    let o = exec(&m, &["box", "--", "/usr/bin/env"]);
    assert_eq!(o.status.code(), Some(127), "{o:?}");

    // The pod's root, cgroup (memory limit) and capability set.
    let o = exec(&m, &["box", "--", "cat", "/etc/marker"]);
    assert_eq!(text(&o.stdout), "only-in-the-pod-root\n", "{o:?}");
    let o = exec(
        &m,
        &[
            "box",
            "--",
            "sh",
            "-c",
            // The exec's own cgroup (the process's, below the pod's cgroup namespace root), v1 or v2.
            "for f in /sys/fs/cgroup/memory$(grep :memory: /proc/self/cgroup | cut -d: -f3)/memory.limit_in_bytes \
             /sys/fs/cgroup$(grep '^0::' /proc/self/cgroup | cut -d: -f3)/memory.max; do cat $f 2>/dev/null; done; \
             grep -E '^(CapBnd|NoNewPrivs|Seccomp):' /proc/self/status",
        ],
    );
    let out = text(&o.stdout);
    assert!(out.contains("33554432"), "the pod's memory limit: {out}");
    // NET_BIND_SERVICE (10) and KILL (5).
    assert!(out.contains("CapBnd:\t0000000000000420"), "{out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert!(out.contains("Seccomp:\t2"), "{out}");
    // Another process's context with -p: the default capability set, not the first's.
    let o = exec(
        &m,
        &[
            "box",
            "-p",
            "side",
            "--",
            "grep",
            "CapBnd",
            "/proc/self/status",
        ],
    );
    assert!(!text(&o.stdout).contains("0000000000000420"), "{o:?}");
    let o = exec(&m, &["box", "-p", "nope", "--", "true"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(text(&o.stderr).contains("has no process \"nope\""), "{o:?}");
    // The pod's PID namespace: the pod's own processes and this one, not the host's.
    let o = exec(
        &m,
        &["box", "--", "sh", "-c", "ls /proc | grep -c '^[0-9]'"],
    );
    let n: u32 = text(&o.stdout).trim().parse().unwrap_or(999);
    assert!(n < 10, "{o:?}");

    // Stdin piped: EOF closes the remote stdin; a megabyte passes the window several times.
    let big = "x".repeat(1 << 20);
    let o = m.cli_with(
        &["exec", "-i", "box", "--", "sh", "-c", "wc -c; echo done"],
        &big,
        &[],
    );
    assert_eq!(
        text(&o.stdout).split_whitespace().collect::<Vec<_>>(),
        ["1048576", "done"],
        "{o:?}"
    );
    let o = m.cli_with(&["exec", "-i", "box", "--", "cat"], "hello\nworld\n", &[]);
    assert_eq!(text(&o.stdout), "hello\nworld\n");
    // Without -i the process reads nothing.
    let o = m.cli_with(&["exec", "box", "--", "cat"], "ignored\n", &[]);
    assert_eq!((o.status.code(), text(&o.stdout)), (Some(0), String::new()));
    // A large output through the flow control, whole.
    let o = exec(&m, &["box", "--", "head", "-c", "5000000", "/dev/zero"]);
    assert_eq!(o.stdout.len(), 5_000_000);

    // Errors: no such pod, not running.
    let o = exec(&m, &["nosuch", "--", "true"]);
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    assert!(text(&o.stderr).contains("nosuch"), "{o:?}");

    // A node credential may not exec.
    let admin = std::fs::read_to_string(tmp.path().join("master/admin.token")).unwrap();
    let pin = admin.trim().split_once("::").unwrap().0;
    let cred = bramble_worker::persist::read_text(
        bramble_worker::persist::CREDENTIAL,
        &tmp.path().join("n1/node.credential"),
    )
    .unwrap();
    let node_token = tmp.path().join("node.token");
    std::fs::write(&node_token, format!("{pin}::{}\n", cred.trim())).unwrap();
    let o = m.cli_with(
        &["exec", "box", "--", "true"],
        "",
        &[("BRAMBLE_TOKEN_FILE", node_token.to_str().unwrap())],
    );
    assert_eq!(o.status.code(), Some(7), "{o:?}");
    assert!(text(&o.stderr).contains("may not exec into pods"), "{o:?}");
    assert!(text(&o.stderr).contains("admin token"), "{o:?}");

    tty_session(&m);
    lifetime(&m);
}

/// An exec ends with its client, and with its pod.
fn lifetime(m: &MasterProc) {
    let spawn = |marker: &str| m.cli_child(&["exec", "box", "--", "sleep", marker]);
    let running = |marker: &str| {
        let o = exec(
            m,
            &[
                "box",
                "--",
                "sh",
                "-c",
                "cat /proc/[0-9]*/cmdline | tr '\\0' ' '",
            ],
        );
        text(&o.stdout).contains(&format!("sleep {marker}"))
    };
    // The client goes away: the process is killed.
    let mut c = spawn("4242");
    wait_for(Duration::from_secs(20), "the exec running", || {
        running("4242").then_some(())
    });
    c.kill().unwrap();
    let _ = c.wait();
    wait_for(
        Duration::from_secs(20),
        "the exec killed with its client",
        || (!running("4242")).then_some(()),
    );
    // The pod goes: so does the exec, and the client exits with the signal's code.
    let mut c = spawn("4343");
    wait_for(Duration::from_secs(20), "the exec running", || {
        running("4343").then_some(())
    });
    m.ok(&["delete", "pod", "box"]);
    let status = wait_for(
        Duration::from_secs(60),
        "the exec ending with its pod",
        || c.try_wait().unwrap(),
    );
    assert_eq!(status.code(), Some(137));
}

/// `bramble exec -it` on a pseudo-terminal of the test, as a user's terminal.
fn tty_session(m: &MasterProc) {
    let (master, slave) = pty::openpty(24, 80).unwrap();
    let before = stty_g(&slave);
    let stdio = |fd: &std::os::fd::OwnedFd| Stdio::from(fd.try_clone().unwrap());
    // `setsid -c`: a session of its own with this terminal as the controlling one, so resizes
    // signal it (SIGWINCH) as they would in a terminal emulator.
    let mut child = Command::new("setsid")
        .arg("-c")
        .arg(bin("bramble"))
        .args(["exec", "-it", "box", "--", "sh"])
        .env("BRAMBLE_SERVER", &m.addr)
        .env("BRAMBLE_TOKEN_FILE", m.data_dir.join("admin.token"))
        .stdin(stdio(&slave))
        .stdout(stdio(&slave))
        .stderr(stdio(&slave))
        .spawn()
        .unwrap();
    let seen = Arc::new(Mutex::new(String::new()));
    let mut reader = std::fs::File::from(master.try_clone().unwrap());
    let s2 = seen.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            s2.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let mut w = std::fs::File::from(master.try_clone().unwrap());
    let expect = |what: &str| {
        wait_for(Duration::from_secs(20), what, || {
            let s = seen.lock().unwrap();
            s.contains(what).then_some(())
        })
    };
    // The prompt (typing before it would be echoed by the local terminal, not yet raw, as with
    // any remote shell), then the size the terminal had.
    expect("# ");
    w.write_all(b"stty size; echo mark-$((40+2))\n").unwrap();
    expect("mark-42");
    let so_far = seen.lock().unwrap().clone();
    assert!(so_far.contains("24 80"), "{so_far:?}");
    // Raw mode here: the shell's echo is the remote terminal's, no local echo doubling it.
    let so_far = seen.lock().unwrap().clone();
    assert_eq!(
        so_far.matches("stty size; echo mark").count(),
        1,
        "{so_far:?}"
    );
    // A resize: SIGWINCH to the CLI, the new size on the remote terminal.
    pty::set_winsize(master.as_fd(), 50, 132).unwrap();
    wait_for(Duration::from_secs(20), "the new size inside", || {
        w.write_all(b"stty size\n").unwrap();
        std::thread::sleep(Duration::from_millis(200));
        seen.lock().unwrap().contains("50 132").then_some(())
    });
    // Ctrl-C goes to the remote foreground job, not to the CLI.
    w.write_all(b"sleep 1000\n").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    w.write_all(&[3]).unwrap();
    w.write_all(b"echo after-$((1+1))\n").unwrap();
    expect("after-2");
    // The remote exit code; the terminal as it was.
    w.write_all(b"exit 7\n").unwrap();
    let status = wait_for(Duration::from_secs(20), "the CLI exits", || {
        child.try_wait().unwrap()
    });
    assert_eq!(status.code(), Some(7), "{}", seen.lock().unwrap());
    assert_eq!(stty_g(&slave), before, "terminal settings restored");
}

/// `stty -g` of a terminal (its settings, comparable).
fn stty_g(tty: &std::os::fd::OwnedFd) -> String {
    let o = Command::new("stty")
        .arg("-g")
        .stdin(Stdio::from(tty.try_clone().unwrap()))
        .output()
        .unwrap();
    text(&o.stdout)
}

const WEB: &str = r#"
[[pod]]
name = "web"
rootfs = "ROOT"
network = "isolated"
[[pod.process]]
name = "httpd"
command = ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]
"#;

#[test]
fn port_forward_reaches_an_http_server_in_an_isolated_pod() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let (m, _w) = start_cluster(tmp.path(), &["--heartbeat-interval", "500ms"], &["n1"]);
    let root = busybox_root(tmp.path());
    let f = tmp.path().join("web.toml");
    std::fs::write(&f, WEB.replace("ROOT", &root)).unwrap();
    m.ok(&["apply", "-f", f.to_str().unwrap()]);
    wait_for(Duration::from_secs(60), "web Running", || {
        m.pod_status("web").filter(|(phase, _)| phase == "Running")
    });
    let local = bramble_testkit::free_port();
    let mut pf = m.cli_child(&["port-forward", "web", &format!("{local}:8080")]);
    let addr = format!("127.0.0.1:{local}");
    wait_for(Duration::from_secs(20), "the local listener", || {
        std::net::TcpStream::connect(&addr).ok()
    });
    let page = wait_for(
        Duration::from_secs(20),
        "the page through the tunnel",
        || {
            let a = http_get(&addr, "/index.html");
            text(&a).contains("hello from the pod").then_some(a)
        },
    );
    assert!(
        text(&page).starts_with("HTTP/1.1 200 OK"),
        "{}",
        text(&page)
    );
    // Several connections at once, and 3.2 MB through the window, whole.
    let big: Vec<_> = (0..3)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || http_get(&addr, "/big"))
        })
        .collect();
    for t in big {
        let a = t.join().unwrap();
        let head = a
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("headers")
            + 4;
        assert_eq!(a.len() - head, 3_200_000);
        assert!(a.ends_with(b"0123456789abcdef"));
    }
    // A port nothing listens on: the connection is closed, the forwarder lives on.
    let mut bad = m.cli_child(&[
        "port-forward",
        "web",
        &format!("{}:9", bramble_testkit::free_port()),
    ]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(bad.try_wait().unwrap().is_none());
    bad.kill().unwrap();
    let _ = bad.wait();
    let again = http_get(&addr, "/index.html");
    assert!(text(&again).contains("hello from the pod"));
    pf.kill().unwrap();
    let _ = pf.wait();
}
