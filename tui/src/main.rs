//! `tui`: attach a live view to a running Courier engine.

use std::time::Duration;

use clap::Parser;

#[derive(Parser)]
#[command(name = "tui", about = "Live view of a running Courier engine")]
struct Cli {
    /// The engine's base URL.
    #[arg(long, env = "COURIER_ENGINE", default_value = "http://127.0.0.1:8080")]
    engine: String,
    /// Milliseconds between readings.
    #[arg(long, default_value_t = 1000)]
    refresh_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let source = tui::event_loop::EngineSource::new(&cli.engine);
    tui::event_loop::run(
        source,
        cli.engine.clone(),
        Duration::from_millis(cli.refresh_ms.max(100)),
    )
    .await
}
