//! Starts the local AWS stack on its own and prints its endpoints as
//! `AWS_ENDPOINT_URL_*` exports, until Ctrl-C.

use localstack::{Service, Stack, StackOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let stack = Stack::start(StackOptions::from_env()?).await?;
    for service in Service::ALL {
        if let Some(url) = stack.endpoint(service) {
            println!("export AWS_ENDPOINT_URL_{}={url}", service.env_suffix());
        }
    }
    println!("export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1");
    eprintln!(
        "stack ready in {:.1}s (logs: {}); Ctrl-C stops it",
        stack.started_in().as_secs_f64(),
        stack.log_dir().display()
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}
