use super::*;

const GOOD: &str = r#"
name = "pi4b"
kind = "hardware"
description = "d"
arch = "aarch64"
target = "aarch64-unknown-linux-musl"
cpu = "c"
ram_mib = 1024
cgroup_notes = "n"
kernel_cmdline = ["cgroup_enable=memory"]
"#;

const QEMU: &str = r#"
name = "qemu-x"
kind = "qemu"
description = "d"
arch = "armv7"
target = "armv7-unknown-linux-gnueabihf"
cpu = "c"
ram_mib = 512
cgroup_notes = "n"

[qemu]
system = "qemu-system-arm"
machine = "virt"
cpu = "cortex-a15"
smp = 1
debian_arch = "armhf"
kernel_package_prefix = "linux-image-6.1.0-"
kernel_flavour = "armmp-lpae"
console = "ttyAMA0"
"#;

fn err(name: &str, text: &str) -> String {
    parse(name, text).unwrap_err().to_string()
}

#[test]
fn builtin_profiles_are_valid_and_complete() {
    let names: Vec<&str> = builtin().iter().map(|b| b.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "pi-zero-2w",
            "pi3b",
            "pi4b",
            "pi5",
            "generic-armv7",
            "qemu-virt-aarch64",
            "qemu-virt-armv7"
        ]
    );
    for b in builtin() {
        match b.arch {
            Arch::Aarch64 => assert_eq!(b.target, "aarch64-unknown-linux-musl", "{}", b.name),
            Arch::Armv7 => assert_eq!(b.target, "armv7-unknown-linux-gnueabihf", "{}", b.name),
        }
        if b.kind == Kind::Hardware && b.name.starts_with("pi") {
            assert!(
                b.kernel_cmdline.iter().any(|a| a == "cgroup_enable=memory"),
                "{}",
                b.name
            );
            assert!(
                b.cgroup_notes.contains("memory controller disabled"),
                "{}",
                b.name
            );
        }
    }
    assert_eq!(
        find("qemu-virt-aarch64")
            .unwrap()
            .qemu()
            .unwrap()
            .debian_arch,
        "arm64"
    );
    assert_eq!(
        find("qemu-virt-armv7").unwrap().qemu().unwrap().console,
        "ttyAMA0"
    );
}

#[test]
fn embedded_list_matches_the_profiles_directory() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles");
    let from_dir = load_all(&dir).unwrap();
    let mut embedded = builtin().to_vec();
    embedded.sort_by(|a, b| a.name.cmp(&b.name));
    let mut from_dir_sorted = from_dir.clone();
    from_dir_sorted.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(
        embedded, from_dir_sorted,
        "boards/profiles/ and BUILTIN_SOURCES differ: add the new file to BUILTIN_SOURCES in boards/src/lib.rs"
    );
}

#[test]
fn the_readme_matrix_is_generated() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let generated = render_matrix(builtin());
    let found = readme_section(&readme).unwrap();
    assert_eq!(
        found,
        generated.trim(),
        "README.md's board matrix is stale: run `cargo cross readme --write`\n--- expected ---\n{generated}"
    );
}

#[test]
fn a_good_profile_parses() {
    let b = parse("boards/pi4b.toml", GOOD).unwrap();
    assert_eq!(b.arch, Arch::Aarch64);
    assert_eq!(b.ram_mib, 1024);
    let q = parse("qemu-x.toml", QEMU).unwrap();
    assert_eq!(q.qemu().unwrap().smp, 1);
    assert!(
        b.qemu()
            .unwrap_err()
            .to_string()
            .contains("not a QEMU board")
    );
}

#[test]
fn unknown_fields_are_rejected_with_the_file_name() {
    let e = err("pi4b.toml", &format!("{GOOD}\nram = 3\n"));
    assert!(
        e.contains("pi4b.toml") && e.contains("unknown field `ram`"),
        "{e}"
    );
    let e = err(
        "qemu-x.toml",
        &QEMU.replace("console =", "memory = 3\nconsole ="),
    );
    assert!(e.contains("unknown field `memory`"), "{e}");
}

#[test]
fn unknown_arch_is_rejected() {
    let e = err("pi4b.toml", &GOOD.replace("\"aarch64\"", "\"riscv64\""));
    assert!(
        e.contains("pi4b.toml") && e.contains("riscv64") && e.contains("aarch64"),
        "{e}"
    );
}

#[test]
fn target_must_match_arch() {
    let e = err(
        "pi4b.toml",
        &GOOD.replace(
            "aarch64-unknown-linux-musl",
            "armv7-unknown-linux-gnueabihf",
        ),
    );
    assert!(
        e.contains("does not match arch `aarch64`")
            && e.contains("fix: use `target = \"aarch64-unknown-linux-musl\"`"),
        "{e}"
    );
    let e = err(
        "pi4b.toml",
        &GOOD.replace("aarch64-unknown-linux-musl", "aarch64-unknown-none"),
    );
    assert!(e.contains("does not match"), "{e}");
}

#[test]
fn ram_must_be_positive() {
    let e = err("pi4b.toml", &GOOD.replace("1024", "0"));
    assert!(
        e.contains("`ram_mib` is 0") && e.contains("board `pi4b`"),
        "{e}"
    );
}

#[test]
fn name_must_match_the_file() {
    let e = err("boards/pi5.toml", GOOD);
    assert!(e.contains("pi5") && e.contains("rename the file"), "{e}");
    let e = err("Pi4B.toml", &GOOD.replace("\"pi4b\"", "\"Pi4B\""));
    assert!(e.contains("lowercase"), "{e}");
}

#[test]
fn qemu_boards_need_their_table_and_hardware_must_not_have_one() {
    let no_table = QEMU.split("[qemu]").next().unwrap();
    let e = err("qemu-x.toml", no_table);
    assert!(
        e.contains("no [qemu] table") && e.contains("fix: add [qemu]"),
        "{e}"
    );
    let hw = QEMU.replace("kind = \"qemu\"", "kind = \"hardware\"");
    let e = err("qemu-x.toml", &hw);
    assert!(e.contains("hardware board has a [qemu] table"), "{e}");
    let e = err("qemu-x.toml", &QEMU.replace("console = \"ttyAMA0\"", ""));
    assert!(e.contains("missing field `console`"), "{e}");
}

#[test]
fn qemu_fields_must_match_the_arch() {
    let e = err("qemu-x.toml", &QEMU.replace("\"armhf\"", "\"arm64\""));
    assert!(
        e.contains("debian_arch `arm64` does not match arch `armv7`"),
        "{e}"
    );
    let e = err(
        "qemu-x.toml",
        &QEMU.replace("qemu-system-arm\"", "qemu-system-aarch64\""),
    );
    assert!(e.contains("use `system = \"qemu-system-arm\"`"), "{e}");
    let e = err("qemu-x.toml", &QEMU.replace("smp = 1", "smp = 0"));
    assert!(e.contains("smp = 0"), "{e}");
    let e = err(
        "qemu-x.toml",
        &QEMU.replace("\"linux-image-6.1.0-\"", "\"6.1\""),
    );
    assert!(e.contains("kernel_package_prefix"), "{e}");
    let e = err(
        "qemu-x.toml",
        &QEMU.replace("\"virt\"", "\"virt,highmem=off\""),
    );
    assert!(e.contains("`machine`"), "{e}");
}

#[test]
fn cmdline_entries_are_single_arguments() {
    let e = err(
        "pi4b.toml",
        &GOOD.replace(
            "\"cgroup_enable=memory\"",
            "\"cgroup_enable=memory cgroup_memory=1\"",
        ),
    );
    assert!(e.contains("kernel_cmdline"), "{e}");
}

#[test]
fn set_checks_emulated_by_and_duplicates() {
    let dir = std::env::temp_dir().join(format!("bramble-boards-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("pi4b.toml"),
        format!("{GOOD}emulated_by = \"qemu-x\"\n"),
    )
    .unwrap();
    std::fs::write(dir.join("qemu-x.toml"), QEMU).unwrap();
    let e = load_all(&dir).unwrap_err().to_string();
    assert!(
        e.contains("pi4b") && e.contains("not a QEMU board with arch `aarch64`"),
        "{e}"
    );
    std::fs::write(dir.join("pi4b.toml"), GOOD).unwrap();
    assert_eq!(load_all(&dir).unwrap().len(), 2);
    std::fs::write(dir.join("README"), "not toml, ignored").unwrap();
    assert_eq!(load_all(&dir).unwrap().len(), 2);
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    assert!(matches!(load_all(&empty), Err(Error::Empty(_))));
    std::fs::remove_dir_all(&dir).unwrap();
    let e = load_all(Path::new("/nonexistent/boards"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/boards"), "{e}");
}

#[test]
fn unknown_board_lists_the_known_ones() {
    let e = find("pi6").unwrap_err().to_string();
    assert!(
        e.contains("unknown board `pi6`") && e.contains("pi4b"),
        "{e}"
    );
}

#[test]
fn matrix_has_a_row_per_board_and_readme_markers_round_trip() {
    let m = render_matrix(builtin());
    assert_eq!(m.lines().count(), 2 + builtin().len());
    assert!(
        m.contains("| `pi4b` | aarch64 | `aarch64-unknown-linux-musl` |"),
        "{m}"
    );
    let readme = format!("# X\n\n## Board support\n{README_START}\nold\n{README_END}\n\n## Next\n");
    let new = replace_readme_section(&readme, &m).unwrap();
    assert_eq!(readme_section(&new).unwrap(), m.trim());
    assert!(new.ends_with(&format!("{README_END}\n\n## Next\n")));
    assert!(readme_section("no markers").is_err());
}
