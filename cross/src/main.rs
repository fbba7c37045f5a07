//! `cargo cross`: per-board builds, QEMU tests and board documentation.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use bramble_boards::{Board, Kind};
use bramble_cross::build::{self, Bin};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "cargo cross",
    about = "Bramble per-board cross builds and QEMU ARM tests"
)]
struct Cli {
    /// Board profiles directory (default: the built-in profiles).
    #[arg(long, global = true)]
    boards_dir: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Build bramble-worker and bramble for a board; print stripped sizes.
    Build {
        /// Board name (see `cargo cross boards`).
        #[arg(long)]
        board: String,
        /// Release profile (size-optimised).
        #[arg(long)]
        release: bool,
        /// Only the worker.
        #[arg(long)]
        worker_only: bool,
    },
    /// Release-build every board's binaries (once per target) and print a size table.
    Sizes,
    /// List the boards (the README's matrix).
    Boards,
    /// Check (default) or rewrite the README's board matrix.
    Readme {
        /// Rewrite README.md between the markers.
        #[arg(long)]
        write: bool,
    },
    /// Fetch and cache the Debian kernel and busybox for QEMU boards.
    Fetch {
        /// QEMU board (default: all QEMU boards).
        #[arg(long)]
        board: Vec<String>,
    },
    /// Boot QEMU boards with the cross-built worker and check the guest (the smoke test), then
    /// run the cluster scenarios against a real master (registration, arch pinning, logs and
    /// OOM, power cut).
    QemuTest {
        /// QEMU board for the smoke test (default: all QEMU boards).
        #[arg(long)]
        board: Vec<String>,
        /// Use this worker binary instead of building one (with one --board; the cluster
        /// scenarios use it for that board).
        #[arg(long)]
        worker: Option<PathBuf>,
        /// Only the smoke test.
        #[arg(long, conflicts_with = "cluster_only")]
        smoke_only: bool,
        /// Only the cluster scenarios.
        #[arg(long)]
        cluster_only: bool,
    },
    /// Write a ready-to-flash SD-card image for one node (see docs/images.md).
    Image(ImageArgs),
    /// (Internal) QEMU guestfwd relay: stdin/stdout <-> ADDR on loopback.
    #[command(hide = true)]
    Relay {
        /// 127.0.0.1:PORT
        addr: String,
    },
}

fn main() {
    // The relay must not print anything (its stdio is the guest's socket): handle it first.
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 3 && args[1] == "relay" {
        bramble_cross::relay::relay(&args[2]);
    }
    if let Err(e) = run(Cli::parse()) {
        eprintln!("cargo cross: error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    let owned;
    let boards: &[Board] = match &cli.boards_dir {
        Some(d) => {
            owned = bramble_boards::load_all(d)?;
            &owned
        }
        None => bramble_boards::builtin(),
    };
    match cli.cmd {
        Cmd::Build {
            board,
            release,
            worker_only,
        } => {
            let b = bramble_boards::find_in(boards, &board)?;
            let bins: &[Bin] = if worker_only {
                &[Bin::Worker]
            } else {
                &Bin::ALL
            };
            let built = build::build(b, release, bins)?;
            print!("{}", build::report(b, &built));
            if !release {
                println!("(debug build: sizes are not representative; use --release)");
            }
        }
        Cmd::Sizes => sizes(boards)?,
        Cmd::Boards => print!("{}", bramble_boards::render_matrix(boards)),
        Cmd::Readme { write } => readme(boards, write)?,
        Cmd::Fetch { board } => {
            for b in qemu_boards(boards, &board)? {
                let q = b.qemu()?;
                let k = bramble_cross::debian::kernel(q)?;
                let bb = bramble_cross::debian::busybox(&q.debian_arch)?;
                println!("{}: {} -> {}", b.name, k.package, k.vmlinuz.display());
                println!(
                    "{}: {} modules; busybox {}",
                    b.name,
                    k.modules.len(),
                    bb.display()
                );
            }
        }
        Cmd::QemuTest {
            board,
            worker,
            smoke_only,
            cluster_only,
        } => {
            if worker.is_some() && board.len() != 1 {
                bail!("--worker needs exactly one --board");
            }
            let mut failed = Vec::new();
            let smoke_boards = if cluster_only {
                Vec::new()
            } else {
                qemu_boards(boards, &board)?
            };
            for b in smoke_boards {
                let worker = match &worker {
                    Some(w) => w.clone(),
                    None => build::build(b, true, &[Bin::Worker])?.remove(0).stripped,
                };
                println!("== {} with {}", b.name, worker.display());
                match bramble_cross::smoke::run(b, &worker) {
                    Ok(r) => println!("{r}\nPASS {}", b.name),
                    Err(e) => {
                        println!("FAIL {}: {e:#}", b.name);
                        failed.push(b.name.clone());
                    }
                }
            }
            if !smoke_only {
                failed.extend(cluster(&board, worker.as_deref())?);
            }
            if !failed.is_empty() {
                bail!("qemu-test failed: {}", failed.join(", "));
            }
        }
        Cmd::Image(a) => image(boards, a)?,
        Cmd::Relay { addr } => bramble_cross::relay::relay(&addr),
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
struct ImageArgs {
    /// Hardware board the card is for (see `cargo cross boards`).
    #[arg(long)]
    board: String,
    /// Raspberry Pi OS image to start from (the unzipped .img); it is not modified.
    #[arg(long)]
    base: PathBuf,
    /// The master's address, HOST:PORT.
    #[arg(long)]
    server: String,
    /// File holding the join token (its content is never printed).
    #[arg(long)]
    token_file: PathBuf,
    /// Hostname and node name.
    #[arg(long)]
    hostname: String,
    /// Node label KEY=VALUE (repeatable, or comma-separated).
    #[arg(long = "label")]
    labels: Vec<String>,
    /// A prebuilt bramble-worker for the board (default: a release cross build).
    #[arg(long)]
    worker: Option<PathBuf>,
    /// Where the board's OS mounts the boot partition: /boot/firmware (bookworm and later) or
    /// /boot (bullseye and earlier). Default: detected from the image.
    #[arg(long)]
    boot_mount: Option<String>,
    /// Overwrite the output if it exists.
    #[arg(long)]
    force: bool,
    /// The image to write.
    #[arg(short, long)]
    output: PathBuf,
}

fn image(boards: &[Board], a: ImageArgs) -> Result<()> {
    use bramble_cross::image::{self, ImageOptions, firstboot};
    let b = bramble_boards::find_in(boards, &a.board)?;
    image::check_board(b)?;
    let node = firstboot::NodeConfig::new(&a.server, &a.hostname, &b.name, &a.labels)?;
    let boot_mount = a
        .boot_mount
        .as_deref()
        .map(firstboot::BootMount::parse)
        .transpose()?;
    // Fail on a bad base image or token before spending minutes on a build.
    image::check_output(&a.base, &a.output, a.force)?;
    image::inspect(&a.base)?;
    image::read_token(&a.token_file)?;
    let worker = match a.worker {
        Some(w) => w,
        None => build::build(b, true, &[Bin::Worker])?.remove(0).stripped,
    };
    let report = image::write_image(
        b,
        &ImageOptions {
            base: a.base,
            output: a.output,
            force: a.force,
            node,
            token_file: a.token_file,
            worker,
            boot_mount,
            progress: true,
        },
    )?;
    println!("{report}");
    Ok(())
}

/// The cluster scenarios; returns the failed and the skipped ones. Development aids honoured
/// here (and refused by the tests): `BRAMBLE_QEMU_ONLY=word,word` runs only the scenarios whose
/// names contain a word (the others count as not passed), `BRAMBLE_BIN`, `BRAMBLE_WORKER_*`.
fn cluster(board: &[String], worker: Option<&std::path::Path>) -> Result<Vec<String>> {
    use bramble_cross::cluster::{BOARDS, SuiteOptions, run_suite};
    let workers: Vec<Option<PathBuf>> = BOARDS
        .iter()
        .map(|b| {
            worker
                .filter(|_| board.first().is_some_and(|x| x == b))
                .map(std::path::Path::to_path_buf)
        })
        .collect();
    let only: Vec<String> = std::env::var("BRAMBLE_QEMU_ONLY")
        .map(|v| {
            v.split(',')
                .map(|w| w.trim().to_string())
                .filter(|w| !w.is_empty())
                .collect()
        })
        .unwrap_or_default();
    println!("== cluster scenarios ({})", BOARDS.join(", "));
    let report = run_suite(&SuiteOptions {
        workers,
        relay: None,
        only,
        dev_overrides: true,
    })?;
    for o in &report.outcomes {
        if let Err(e) = &o.result {
            println!("FAIL {}: {e:#}\n", o.name);
        }
    }
    println!("{report}");
    Ok(report
        .outcomes
        .iter()
        .filter(|o| o.result.is_err())
        .map(|o| format!("cluster: {}", o.name))
        .chain(
            report
                .skipped
                .iter()
                .map(|n| format!("cluster: {n} (skipped by BRAMBLE_QEMU_ONLY)")),
        )
        .collect())
}

fn qemu_boards<'a>(boards: &'a [Board], names: &[String]) -> Result<Vec<&'a Board>> {
    if names.is_empty() {
        return Ok(boards.iter().filter(|b| b.kind == Kind::Qemu).collect());
    }
    names
        .iter()
        .map(|n| {
            let b = bramble_boards::find_in(boards, n)?;
            b.qemu()?;
            Ok(b)
        })
        .collect()
}

fn sizes(boards: &[Board]) -> Result<()> {
    let mut by_target: Vec<(String, Vec<build::Built>)> = Vec::new();
    for b in boards {
        if by_target.iter().any(|(t, _)| *t == b.target) {
            continue;
        }
        let built = build::build(b, true, &Bin::ALL)?;
        by_target.push((b.target.clone(), built));
    }
    println!("| board | target | bramble-worker (stripped) | bramble (stripped) | linkage |");
    println!("|---|---|---|---|---|");
    for b in boards {
        let built = &by_target
            .iter()
            .find(|(t, _)| *t == b.target)
            .context("built")?
            .1;
        let size = |bin: Bin| {
            built
                .iter()
                .find(|x| x.bin == bin)
                .map_or("-".to_string(), |x| {
                    format!("{:.2} MiB", x.stripped_size as f64 / 1048576.0)
                })
        };
        let linkage = built
            .iter()
            .map(|x| x.elf.linkage())
            .collect::<Vec<_>>()
            .join("/");
        println!(
            "| `{}` | `{}` | {} | {} | {} |",
            b.name,
            b.target,
            size(Bin::Worker),
            size(Bin::Master),
            linkage
        );
    }
    for (t, built) in &by_target {
        for x in built {
            if let Some(max) = x.bin.budget()
                && x.stripped_size > max
            {
                bail!(
                    "{} for {t} is {} B stripped, over the {max} B budget",
                    x.bin.bin_name(),
                    x.stripped_size
                );
            }
        }
    }
    Ok(())
}

fn readme(boards: &[Board], write: bool) -> Result<()> {
    let path = bramble_cross::util::workspace_root().join("README.md");
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    let table = bramble_boards::render_matrix(boards);
    if write {
        let new = bramble_boards::replace_readme_section(&text, &table)?;
        std::fs::write(&path, new)?;
        println!("updated {}", path.display());
    } else if bramble_boards::readme_section(&text)? != table.trim() {
        bail!(
            "{}: the board matrix is stale: run `cargo cross readme --write`",
            path.display()
        );
    } else {
        println!("{}: board matrix up to date", path.display());
    }
    Ok(())
}
