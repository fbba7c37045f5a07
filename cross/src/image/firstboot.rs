//! What `cargo cross image` writes onto the boot partition: pure functions from a validated
//! [`NodeConfig`] to file contents, and the `cmdline.txt` edit. No I/O here.

use anyhow::{Result, bail};

// Everything Bramble adds sits in the boot partition's root directory, named `bramble-*`.
// (Not in a subdirectory: fatfs 0.3.6, the current release, writes long-name entries before a
// new directory's `.` and `..` and a wrong `..` cluster on FAT32, which fsck.vfat reports as
// corruption: rafalh/rust-fatfs#100, #99; fixed on its unreleased master.)
/// The first-boot script on the boot partition.
pub const FIRSTRUN: &str = "bramble-firstrun.sh";
/// The worker binary on the boot partition.
pub const WORKER: &str = "bramble-worker";
/// The join token on the boot partition (moved to `/etc/bramble/join.token`, mode 0600).
pub const TOKEN: &str = "bramble-join.token";
/// The node's configuration (systemd environment file) on the boot partition (moved to
/// `/etc/bramble/worker.env`).
pub const ENV: &str = "bramble-worker.env";
/// The systemd unit on the boot partition.
pub const UNIT: &str = "bramble-worker.service";
/// The first-boot script's log on the boot partition (left only if it failed).
pub const LOG: &str = "bramble-firstrun.log";
/// Every file [`render_firstrun`] removes from the boot partition after a successful first boot.
pub const FILES: [&str; 5] = [WORKER, ENV, TOKEN, UNIT, FIRSTRUN];
/// The state directory the unit passes to the worker.
pub const STATE_DIR: &str = "/var/lib/bramble";
/// A line every file we generate carries, so a second run recognises its own first-boot script.
pub const MARKER: &str = "written by `cargo cross image` (Bramble)";

/// Where the running system mounts the boot (FAT) partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootMount {
    /// Raspberry Pi OS bookworm and later: `/boot/firmware`.
    Firmware,
    /// Raspberry Pi OS bullseye and earlier: `/boot`.
    Boot,
}

impl BootMount {
    /// The mount point.
    pub fn path(self) -> &'static str {
        match self {
            BootMount::Firmware => "/boot/firmware",
            BootMount::Boot => "/boot",
        }
    }

    /// Parse `--boot-mount`.
    pub fn parse(s: &str) -> Result<Self> {
        match s.trim_end_matches('/') {
            "/boot/firmware" => Ok(BootMount::Firmware),
            "/boot" => Ok(BootMount::Boot),
            other => bail!(
                "--boot-mount {other}: expected /boot/firmware (Raspberry Pi OS bookworm and later) or /boot (bullseye and earlier)"
            ),
        }
    }

    /// Guess from the boot partition's `config.txt` and file names: bookworm's `config.txt`
    /// refers to `/boot/firmware`, and bookworm ships `initramfs*` files there (`auto_initramfs`);
    /// earlier releases have neither. Unknown images default to bookworm, the current release.
    pub fn detect(config_txt: Option<&str>, file_names: &[String]) -> Self {
        let old_config = config_txt.is_some_and(|c| !c.contains("/boot/firmware"));
        let has_initramfs = file_names
            .iter()
            .any(|n| n.to_ascii_lowercase().starts_with("initramfs"));
        if old_config && !has_initramfs {
            BootMount::Boot
        } else {
            BootMount::Firmware
        }
    }
}

/// The node a card is for, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// `HOST:PORT` of the master.
    pub server: String,
    /// Hostname and node name.
    pub hostname: String,
    /// Board profile name.
    pub board: String,
    /// `k=v,k2=v2` (may be empty).
    pub labels: String,
}

impl NodeConfig {
    /// Check every field; errors name the flag and the fix. The values end up in a systemd
    /// environment file and a shell script, so only a safe character set is accepted.
    pub fn new(server: &str, hostname: &str, board: &str, labels: &[String]) -> Result<Self> {
        check_server(server)?;
        check_hostname(hostname)?;
        let mut pairs = Vec::new();
        for l in labels
            .iter()
            .flat_map(|l| l.split(','))
            .filter(|l| !l.is_empty())
        {
            let Some((k, v)) = l.split_once('=') else {
                bail!("--label {l}: expected KEY=VALUE, e.g. --label zone=attic");
            };
            let ok = |s: &str, slash: bool| {
                s.chars().all(|c| {
                    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') || (slash && c == '/')
                })
            };
            if k.is_empty() || k.len() > 63 || !ok(k, true) {
                bail!(
                    "--label {l}: the key must be 1-63 characters of letters, digits, '-', '_', '.', '/'"
                );
            }
            if k.contains('/') && !k.starts_with("node.bramble.io/") {
                bail!(
                    "--label {l}: a node reports labels under node.bramble.io/ only (write {}={v}); set other labels from the master: bramble label node NAME {k}={v}",
                    k.rsplit('/').next().unwrap_or(k)
                );
            }
            if v.len() > 63 || !ok(v, false) {
                bail!(
                    "--label {l}: the value must be at most 63 characters of letters, digits, '-', '_', '.'"
                );
            }
            pairs.push(format!("{k}={v}"));
        }
        Ok(NodeConfig {
            server: server.to_string(),
            hostname: hostname.to_string(),
            board: board.to_string(),
            labels: pairs.join(","),
        })
    }
}

fn check_server(server: &str) -> Result<()> {
    let fix = "give the master's address as HOST:PORT, e.g. --server 192.0.2.10:7070";
    let Some((host, port)) = server.rsplit_once(':') else {
        bail!("--server {server}: no port; {fix}");
    };
    if !matches!(port.parse::<u16>(), Ok(p) if p > 0) {
        bail!("--server {server}: `{port}` is not a port (1-65535); {fix}");
    }
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty()
        || host.len() > 253
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':'))
    {
        bail!("--server {server}: `{host}` is not a host name or IP address; {fix}");
    }
    Ok(())
}

fn check_hostname(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 63
        || name.starts_with('-')
        || name.ends_with('-')
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        bail!(
            "--hostname {name}: a hostname (and node name) is 1-63 lowercase letters, digits and '-', not starting or ending with '-', e.g. --hostname pi-attic-1"
        );
    }
    Ok(())
}

/// `worker.env`: the node's configuration as a systemd environment file (also valid `sh`).
/// The unit reads it, so editing it (on the card before first boot, or in `/etc/bramble/`
/// after) changes the worker's flags.
pub fn render_env(c: &NodeConfig) -> String {
    format!(
        "# Bramble worker configuration, {MARKER}.\n\
         # Read by bramble-worker.service (EnvironmentFile=); installed as /etc/bramble/worker.env.\n\
         BRAMBLE_MASTER={}\n\
         BRAMBLE_NAME={}\n\
         BRAMBLE_BOARD={}\n\
         BRAMBLE_LABELS={}\n",
        c.server, c.hostname, c.board, c.labels
    )
}

/// `bramble-worker.service`.
pub fn render_unit() -> String {
    format!(
        "# {MARKER}\n\
[Unit]\n\
Description=Bramble worker (node agent)\n\
Wants=network-online.target\n\
After=network-online.target\n\
\n\
[Service]\n\
EnvironmentFile=/etc/bramble/worker.env\n\
ExecStart=/usr/local/bin/bramble-worker --master ${{BRAMBLE_MASTER}} --token-file /etc/bramble/join.token --name ${{BRAMBLE_NAME}} --board ${{BRAMBLE_BOARD}} --labels ${{BRAMBLE_LABELS}} --state-dir {STATE_DIR}\n\
# The worker manages its pods' cgroups itself.\n\
Delegate=yes\n\
# Pods outlive an agent restart (it adopts them): stop only the agent, never its pods.\n\
KillMode=process\n\
Restart=always\n\
RestartSec=5\n\
\n\
[Install]\n\
WantedBy=multi-user.target\n"
    )
}

/// The kernel command-line arguments that run the first-boot script once.
pub fn firstrun_args(mount: BootMount) -> [String; 4] {
    [
        format!("systemd.run={}/{FIRSTRUN}", mount.path()),
        "systemd.run_success_action=reboot".into(),
        "systemd.run_failure_action=reboot".into(),
        "systemd.unit=kernel-command-line.target".into(),
    ]
}

/// `firstrun.sh`: run once by systemd (`systemd.run=` in `cmdline.txt`) as root. It finds the
/// boot partition from its own path, so it works whether that is `/boot` or `/boot/firmware`.
pub fn render_firstrun() -> String {
    let files = FILES.join(" ");
    format!(
        r#"#!/bin/sh
# Bramble first boot, {MARKER}.
# Run once through cmdline.txt (systemd.run=...): installs bramble-worker as a systemd service,
# sets the hostname, then removes its systemd.run arguments from cmdline.txt and its bramble-*
# files from the boot partition (the join token then exists only in /etc/bramble, mode 0600).
# If a step fails, the cmdline.txt arguments are removed all the same (so the board boots
# normally) and the reason is left in {LOG} on the boot partition.
set -eu
BOOT=$(dirname "$(readlink -f "$0")")
log() {{ echo "bramble-firstrun: $*" >&2; echo "$*" >>"$BOOT/{LOG}"; }}

finish() {{
    rc=$?
    # Never run again: drop our arguments from the one line of cmdline.txt, keep the rest.
    sed -i -e 's# systemd\.run=[^ ]*/{FIRSTRUN}##g' \
        -e 's# systemd\.run_success_action=reboot##g' \
        -e 's# systemd\.run_failure_action=reboot##g' \
        -e 's# systemd\.unit=kernel-command-line\.target##g' "$BOOT/cmdline.txt" || true
    if [ "$rc" -eq 0 ]; then
        for f in {files} {LOG}; do rm -f "$BOOT/$f"; done
    else
        log "FAILED (exit $rc); bramble-worker is not installed. Fix the cause, then run $BOOT/{FIRSTRUN} as root."
        # The boot partition is readable by every user: keep no token there once installed.
        if [ -s /etc/bramble/join.token ]; then rm -f "$BOOT/{TOKEN}"; fi
    fi
    sync
}}
trap finish EXIT

log "installing bramble-worker from $BOOT"
. "$BOOT/{ENV}"
install -D -m 0755 "$BOOT/{WORKER}" /usr/local/bin/bramble-worker
install -d -m 0700 /etc/bramble
if [ -f "$BOOT/{TOKEN}" ]; then install -m 0600 "$BOOT/{TOKEN}" /etc/bramble/join.token; fi
test -s /etc/bramble/join.token
install -m 0644 "$BOOT/{ENV}" /etc/bramble/worker.env
install -d -m 0755 {STATE_DIR}
install -D -m 0644 "$BOOT/{UNIT}" /etc/systemd/system/{UNIT}

old=$(tr -d ' \t\r\n' </etc/hostname 2>/dev/null || true)
echo "$BRAMBLE_NAME" >/etc/hostname
hostname "$BRAMBLE_NAME" 2>/dev/null || true
if grep -q '^127\.0\.1\.1' /etc/hosts 2>/dev/null; then
    sed -i "s/^127\.0\.1\.1.*/127.0.1.1\t$BRAMBLE_NAME/" /etc/hosts
else
    printf '127.0.1.1\t%s\n' "$BRAMBLE_NAME" >>/etc/hosts
fi
log "hostname ${{old:-?}} -> $BRAMBLE_NAME"

if ! systemctl enable {UNIT} 2>/dev/null; then
    install -d /etc/systemd/system/multi-user.target.wants
    ln -sf /etc/systemd/system/{UNIT} /etc/systemd/system/multi-user.target.wants/{UNIT}
fi
log "bramble-worker.service enabled (master $BRAMBLE_MASTER, node $BRAMBLE_NAME, board $BRAMBLE_BOARD)"
"#
    )
}

/// Appends each of `additions` not already on the line to `cmdline.txt`'s one line, keeping the
/// rest byte for byte. A `key=value` addition replaces nothing: when `key=` is already there
/// with another value, that is an error (the caller decides), except for our own first-boot
/// arguments, which a second run may rewrite (`systemd.run=` pointing at our script).
pub fn edit_cmdline(file: &str, old: &str, additions: &[String]) -> Result<String> {
    // A byte-order mark is no part of the command line, wherever an editor left it at the start
    // of the line: drop them all, so that a second edit finds nothing to change.
    let mut lines = old
        .lines()
        .map(|l| l.trim_start_matches('\u{feff}'))
        .filter(|l| !l.trim().is_empty());
    let Some(line) = lines.next() else {
        bail!(
            "{file}: cmdline.txt is empty; a Raspberry Pi OS image has the kernel command line (console=... root=...) there: use an unmodified base image"
        );
    };
    if lines.next().is_some() {
        bail!(
            "{file}: cmdline.txt has more than one line; the firmware reads only the first: join it into one line"
        );
    }
    let mut tokens: Vec<String> = line.split_whitespace().map(str::to_string).collect();
    let mut out = line.trim_end().to_string();
    for add in additions {
        if tokens.iter().any(|t| t == add) {
            continue;
        }
        if let Some((key, _)) = add.split_once('=')
            && let Some(existing) = tokens.iter().find(|t| t.starts_with(&format!("{key}=")))
        {
            if key == "systemd.run" {
                if existing.ends_with(&format!("/{FIRSTRUN}")) {
                    // Our own script at the other mount point: replace it.
                    out = replace_word(&out, existing, add);
                    let existing = existing.clone();
                    tokens.retain(|t| *t != existing);
                    tokens.push(add.clone());
                    continue;
                }
                bail!(
                    "{file}: cmdline.txt already runs `{existing}` at first boot (a Raspberry Pi Imager customisation?); there is room for one first-boot script: start from an image without it"
                );
            }
            if key.starts_with("systemd.") {
                bail!(
                    "{file}: cmdline.txt already has `{existing}`, which conflicts with the first-boot argument `{add}`: remove it from the base image"
                );
            }
        }
        out.push(' ');
        out.push_str(add);
        tokens.push(add.clone());
    }
    out.push('\n');
    Ok(out)
}

/// `line` with every whitespace-separated word equal to `old` replaced by `new`, the rest (other
/// words, even those containing `old`, and the whitespace between them) kept byte for byte.
fn replace_word(line: &str, old: &str, new: &str) -> String {
    let mut out = String::with_capacity(line.len() + new.len());
    let mut rest = line;
    while !rest.is_empty() {
        let word_at = rest.len() - rest.trim_start().len();
        out.push_str(&rest[..word_at]);
        rest = &rest[word_at..];
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let word = &rest[..end];
        out.push_str(if word == old { new } else { word });
        rest = &rest[end..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adds(m: BootMount) -> Vec<String> {
        let mut v = vec!["cgroup_enable=memory".to_string(), "cgroup_memory=1".into()];
        v.extend(firstrun_args(m));
        v
    }

    const RPI: &str = "console=serial0,115200 console=tty1 root=PARTUUID=4e639091-02 rootfstype=ext4 fsck.repair=yes rootwait quiet init=/usr/lib/raspberrypi-sys-mods/firstboot\n";

    #[test]
    fn cmdline_gets_each_flag_once_and_keeps_the_rest() {
        let once = edit_cmdline("x", RPI, &adds(BootMount::Firmware)).unwrap();
        assert!(once.starts_with(RPI.trim_end()));
        assert_eq!(once.lines().count(), 1);
        assert_eq!(once.matches("cgroup_enable=memory").count(), 1);
        assert!(once.contains(" systemd.run=/boot/firmware/bramble-firstrun.sh "));
        let twice = edit_cmdline("x", &once, &adds(BootMount::Firmware)).unwrap();
        assert_eq!(once, twice);
        // Our script at another mount point is rewritten, not duplicated.
        let other = edit_cmdline("x", &once, &adds(BootMount::Boot)).unwrap();
        assert_eq!(other.matches("systemd.run=").count(), 1);
        assert!(other.contains("systemd.run=/boot/bramble-firstrun.sh"));
    }

    #[test]
    fn cmdline_rewrites_only_our_whole_word() {
        // Found writing the `firstboot` fuzz target's invariants: a substring replace also
        // rewrote another word that merely contained our old first-boot argument.
        let old = format!(
            "{} systemd.run=/boot/bramble-firstrun.sh\tinit=x,systemd.run=/boot/bramble-firstrun.sh\n",
            RPI.trim_end()
        );
        let out = edit_cmdline("x", &old, &adds(BootMount::Firmware)).unwrap();
        assert!(
            out.contains(" systemd.run=/boot/firmware/bramble-firstrun.sh\t"),
            "{out}"
        );
        assert!(
            out.contains("\tinit=x,systemd.run=/boot/bramble-firstrun.sh "),
            "{out}"
        );
        assert_eq!(
            edit_cmdline("x", &out, &adds(BootMount::Firmware)).unwrap(),
            out
        );
    }

    #[test]
    fn cmdline_errors() {
        let e = edit_cmdline("img", "", &adds(BootMount::Boot)).unwrap_err();
        assert!(e.to_string().contains("img: cmdline.txt is empty"), "{e}");
        let e = edit_cmdline("img", "a\nb\n", &adds(BootMount::Boot)).unwrap_err();
        assert!(e.to_string().contains("more than one line"), "{e}");
        let imager = format!("{} systemd.run=/boot/firstrun.sh", RPI.trim_end());
        let e = edit_cmdline("img", &imager, &adds(BootMount::Boot)).unwrap_err();
        assert!(e.to_string().contains("Imager"), "{e}");
        // A BOM and CRLF are tolerated; the line is kept.
        let out = edit_cmdline(
            "img",
            "\u{feff}root=/dev/sda2 rw\r\n",
            &adds(BootMount::Boot),
        )
        .unwrap();
        assert!(out.starts_with("root=/dev/sda2 rw cgroup_enable=memory"));
        // Two BOMs (found by the fuzzer): both go, so a second edit changes nothing.
        let adds = adds(BootMount::Boot);
        let out = edit_cmdline("img", "\u{feff}\u{feff}root=/dev/sda2\n", &adds).unwrap();
        assert!(out.starts_with("root=/dev/sda2 "), "{out:?}");
        assert_eq!(edit_cmdline("img", &out, &adds).unwrap(), out);
        let out = edit_cmdline("img", "\n\u{feff}root=/dev/sda2\n", &adds).unwrap();
        assert!(out.starts_with("root=/dev/sda2 "), "{out:?}");
    }

    #[test]
    fn config_validation() {
        let c = NodeConfig::new("192.0.2.1:7070", "pi-1", "pi4b", &["a=b,zone=x".into()]).unwrap();
        assert_eq!(c.labels, "a=b,zone=x");
        assert!(render_env(&c).contains("BRAMBLE_MASTER=192.0.2.1:7070\n"));
        NodeConfig::new("[2001:db8::1]:7070", "n", "pi4b", &[]).unwrap();
        NodeConfig::new("master.local:1", "n", "pi4b", &[]).unwrap();
        for (server, host, label, want) in [
            ("192.0.2.1", "n", "", "no port"),
            ("192.0.2.1:0", "n", "", "not a port"),
            ("a b:70", "n", "", "not a host"),
            ("h:70", "Pi_1", "", "--hostname Pi_1"),
            ("h:70", "-x", "", "--hostname -x"),
            ("h:70", "n", "novalue", "KEY=VALUE"),
            ("h:70", "n", "k=$(reboot)", "the value"),
            ("h:70", "n", "example.com/zone=a", "node.bramble.io/ only"),
        ] {
            let labels: Vec<String> = if label.is_empty() {
                vec![]
            } else {
                vec![label.into()]
            };
            let e = NodeConfig::new(server, host, "pi4b", &labels).unwrap_err();
            assert!(e.to_string().contains(want), "{server} {host} {label}: {e}");
        }
    }

    #[test]
    fn unit_has_the_flags() {
        let u = render_unit();
        for want in [
            "Delegate=yes",
            "Restart=always",
            "After=network-online.target",
            "--master ${BRAMBLE_MASTER}",
            "--token-file /etc/bramble/join.token",
            "--name ${BRAMBLE_NAME}",
            "--board ${BRAMBLE_BOARD}",
            "--state-dir /var/lib/bramble",
        ] {
            assert!(u.contains(want), "{want}");
        }
    }

    #[test]
    fn boot_mount_detection() {
        let bookworm = "# /boot/firmware/overlays/README\narm_64bit=1\n";
        let bullseye = "# http://rpf.io/configtxt\narm_64bit=1\n";
        assert_eq!(BootMount::detect(Some(bookworm), &[]), BootMount::Firmware);
        assert_eq!(BootMount::detect(Some(bullseye), &[]), BootMount::Boot);
        let names = vec!["initramfs8".to_string()];
        assert_eq!(
            BootMount::detect(Some(bullseye), &names),
            BootMount::Firmware
        );
        assert_eq!(BootMount::detect(None, &[]), BootMount::Firmware);
        assert_eq!(BootMount::parse("/boot/").unwrap(), BootMount::Boot);
        assert!(BootMount::parse("/mnt").is_err());
    }
}
