//! A custom component in under 60 lines: counts changes per table and operation.
//! Run: `cargo run -p astha-examples --example plugin`
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use astha_actors::{Astha, Component, ComponentError};
use astha_core::{config::AsthaConfig, Change};

type Counts = Arc<Mutex<BTreeMap<String, u64>>>;

struct Counter(Counts);

#[async_trait::async_trait]
impl Component for Counter {
    fn name(&self) -> &str {
        "counter"
    }
    fn subscriptions(&self) -> Vec<String> {
        vec!["orders".into()]
    }
    async fn on_event(&mut self, change: &Change) -> Result<(), ComponentError> {
        let key = format!("{} {}", change.table, change.op);
        *self.0.lock().unwrap().entry(key).or_default() += 1;
        Ok(()) // Ok confirms the change: the component's slot may move past it.
    }
}

#[actix_rt::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("shop.db");
    let conn = astha_core::db::open_writer(&db)?;
    conn.execute_batch("CREATE TABLE orders (id INTEGER PRIMARY KEY, total REAL)")?;
    let config = AsthaConfig {
        database: db,
        monitored_tables: vec!["orders".into()],
        subscriptions: Default::default(),
        ..AsthaConfig::default()
    };
    let astha = Astha::new(config)?; // installs capture on `orders`
    astha.start()?;
    let counts = Counts::default();
    astha
        .register_component(Box::new(Counter(counts.clone())))
        .await?;
    for i in 0..100 {
        conn.execute("INSERT INTO orders (total) VALUES (?1)", [i as f64])?;
    }
    conn.execute("UPDATE orders SET total = total * 2 WHERE id <= 10", [])?;
    while counts.lock().unwrap().values().sum::<u64>() < 110 {
        actix_rt::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    println!("{:?}", counts.lock().unwrap());
    astha.stop().await?;
    Ok(())
}

// `cargo test -p astha-examples --example plugin`: the component passes the compliance
// harness every component must pass, in one call.
#[test]
fn the_counter_complies() {
    astha_actors::testing::compliance::check(|_| Box::new(Counter(Counts::default())));
}
