//! Fuzzes what `cargo cross image` reads to write a node's first-boot configuration: the base
//! image's `cmdline.txt` (edited), its `config.txt` and boot file names (which mount point the
//! system uses), and the node's flags (`--server`, `--hostname`, `--label`) that end up in the
//! systemd environment file and the first-boot shell script.
//!
//! Input layout: fields separated by NUL: `cmdline.txt`, `config.txt` (absent when empty),
//! boot file names (one a line), server, hostname, labels (one a line). Besides "no panic":
//! - an edited `cmdline.txt` is one line ending in `\n`; every addition is one of its
//!   space-separated words; every word of the original is kept, except our own first-boot
//!   script at the other mount point, which is replaced; editing it again changes nothing;
//! - an accepted node configuration renders exactly the six lines of `worker.env`, each value
//!   of characters that are inert in a systemd environment file and in `sh`.
#![no_main]

use bramble_cross::image::firstboot::{
    BootMount, FIRSTRUN, NodeConfig, edit_cmdline, firstrun_args, render_env,
};
use libfuzzer_sys::fuzz_target;

fn additions(m: BootMount) -> Vec<String> {
    let mut v = vec!["cgroup_enable=memory".to_string(), "cgroup_memory=1".into()];
    v.extend(firstrun_args(m));
    v
}

fn inert(s: &str) -> bool {
    s.chars().all(|c| {
        c.is_ascii_alphanumeric()
            || matches!(c, '-' | '_' | '.' | '/' | ':' | ',' | '=' | '[' | ']')
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut f = text.split('\0');
    let mut next = || f.next().unwrap_or("");
    let (cmdline, config, names) = (next(), next(), next());
    let (server, hostname, labels) = (next(), next(), next());

    let names: Vec<String> = names.lines().map(str::to_string).collect();
    let detected = BootMount::detect((!config.is_empty()).then_some(config), &names);
    let _ = BootMount::parse(config);
    for mount in [detected, BootMount::Boot, BootMount::Firmware] {
        let adds = additions(mount);
        let Ok(out) = edit_cmdline("fuzz.img", cmdline, &adds) else {
            continue;
        };
        assert!(out.ends_with('\n'), "{out:?}");
        assert_eq!(out.matches('\n').count(), 1, "{out:?}");
        let words: Vec<&str> = out.split_whitespace().collect();
        for a in &adds {
            assert!(words.contains(&a.as_str()), "{a} missing from {out:?}");
        }
        let ours = format!("/{FIRSTRUN}");
        let line = cmdline
            .lines()
            .map(|l| l.trim_start_matches('\u{feff}'))
            .find(|l| !l.trim().is_empty())
            .unwrap();
        for w in line.split_whitespace() {
            let replaced = w.starts_with("systemd.run=") && w.ends_with(&ours);
            assert!(
                replaced || words.contains(&w),
                "{w:?} of {line:?} lost: {out:?}"
            );
        }
        let runs = |s: &str| {
            s.split_whitespace()
                .filter(|w| w.starts_with("systemd.run="))
                .count()
        };
        assert_eq!(runs(&out), runs(line).max(1), "{line:?} -> {out:?}");
        let again =
            edit_cmdline("fuzz.img", &out, &adds).expect("an edited cmdline.txt is refused");
        assert_eq!(again, out, "a second edit changed it");
    }

    let labels: Vec<String> = labels.lines().map(str::to_string).collect();
    if let Ok(c) = NodeConfig::new(server, hostname, "pi4", &labels) {
        let env = render_env(&c);
        let lines: Vec<&str> = env.lines().collect();
        assert_eq!(lines.len(), 6, "{env:?}");
        assert!(lines[0].starts_with('#') && lines[1].starts_with('#'));
        for (l, key) in lines[2..].iter().zip([
            "BRAMBLE_MASTER=",
            "BRAMBLE_NAME=",
            "BRAMBLE_BOARD=",
            "BRAMBLE_LABELS=",
        ]) {
            let value = l.strip_prefix(key).unwrap_or_else(|| panic!("{l:?}"));
            assert!(inert(value), "{l:?}");
        }
        assert!(!c.hostname.is_empty() && !c.server.is_empty());
    }
});
