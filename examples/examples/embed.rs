//! Embedding Astha in a host tokio application that is not an actix application:
//! Astha starts its actor system on a thread of its own, and the host keeps a `Send`
//! handle that it can move into its own tasks.
//! Run: `cargo run -p astha-examples --example embed`

use std::sync::Arc;
use std::time::Duration;

use astha_actors::testing::RecordingComponent;
use astha_actors::Astha;
use astha_core::config::AsthaConfig;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The host's own runtime (a server would run its listeners on it).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    runtime.block_on(host())
}

async fn host() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("app.db");
    let writer = astha_core::db::open_writer(&db)?;
    writer.execute_batch("CREATE TABLE events (id INTEGER PRIMARY KEY, kind TEXT)")?;
    let config = AsthaConfig {
        database: db.clone(),
        monitored_tables: vec!["events".into()],
        subscriptions: Default::default(),
        ..AsthaConfig::default()
    };
    let astha = Arc::new(Astha::new(config)?);
    astha.start()?; // not inside an actix system: Astha runs one on its own thread

    // The handle is Send + Sync: register from a task of the host's runtime.
    let (component, seen) = RecordingComponent::new("audit", &["events"]);
    let handle = astha.clone();
    tokio::spawn(async move { handle.register_component(Box::new(component)).await }).await??;

    for kind in ["signup", "login", "logout"] {
        writer.execute("INSERT INTO events (kind) VALUES (?1)", [kind])?;
    }
    if !seen
        .wait_until(Duration::from_secs(10), |s| s.confirmed.len() == 3)
        .await
    {
        return Err("changes were not delivered".into());
    }
    let stats = astha.scheduler_stats();
    println!(
        "delivered {} changes; components: {:?}",
        stats.processed_events,
        astha
            .all_components()
            .iter()
            .map(|c| &c.name)
            .collect::<Vec<_>>()
    );
    astha.stop().await?; // drains, persists the slot, stops the actor thread
    Ok(())
}
