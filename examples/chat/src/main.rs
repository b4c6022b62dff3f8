//! The wsu example chat server: `cargo run -p chat`, then open http://127.0.0.1:8080.
//!
//! Environment: `WSU_ADDR` (default `127.0.0.1:8080`), `WSU_ORIGINS` (comma-separated allowed
//! origins, `*` for any; default: the page's own origin, plus clients that send no `Origin`),
//! `CHAT_ADMIN_TOKEN` (enables the `/admin` namespace).

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::var("WSU_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".to_owned());
    let config = chat::Config::from_env();
    let admin = config.admin_token.is_some();
    let server = chat::build(config)?;
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let local = listener.local_addr()?;
    println!("wsu chat listening on http://{local} (WebSocket endpoint ws://{local}/ws)");
    if admin {
        println!("admin namespace /admin enabled (CHAT_ADMIN_TOKEN)");
    }
    let stopper = server.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            println!("shutting down");
            stopper.shutdown().await;
        }
    });
    server.serve(listener).await?;
    Ok(())
}
