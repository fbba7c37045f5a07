//! Running the server: `bramble master` (the command line's flags become a [`Config`] in the
//! `bramble` binary; `bramble up` runs a master in a thread of its own).

use anyhow::Context;

use crate::api::{Config, Master};

/// Runs `bramble master` until killed.
pub fn run_master(cfg: Config) -> anyhow::Result<()> {
    init_tracing();
    smol::block_on(async move {
        let listener = async_net::TcpListener::bind(&cfg.listen)
            .await
            .with_context(|| {
                format!(
                    "cannot listen on {}: is another master running? pick another --listen",
                    cfg.listen
                )
            })?;
        let m = Master::open(cfg).await?;
        m.serve(listener).await
    })
}

/// Sets up logging to stderr; `RUST_LOG` overrides the default level.
pub fn init_tracing() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    // Colour only on a terminal: a log file or journal gets no escape codes.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}
