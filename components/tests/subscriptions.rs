//! Configured subscriptions apply to the shipped components: `[subscriptions]` in the
//! file and `ASTHA_SUBSCRIPTIONS__<NAME>` replace the tables a component asks for, and a
//! configured name that no registered component has is an error that says what to do.

use std::path::PathBuf;

use astha_actors::{Astha, AsthaError};
use astha_components::registry;
use astha_components::{Compactor, CompactorConfig, Lakehouse, LakehouseConfig};
use astha_core::config::AsthaConfig;

struct Lake {
    dir: tempfile::TempDir,
    registry: PathBuf,
    lakehouse: Lakehouse,
}

impl Lake {
    fn new() -> Lake {
        let dir = tempfile::tempdir().unwrap();
        let registry = dir.path().join("registry.db");
        let lakehouse = Lakehouse::open(LakehouseConfig::new(
            &registry,
            dir.path().join("warehouse"),
        ))
        .unwrap();
        Lake {
            dir,
            registry,
            lakehouse,
        }
    }

    /// The lakehouse's configuration, read as `astha demo` reads it, with `vars` as the
    /// environment.
    fn config(&self, file: Option<&str>, vars: &[(&str, &str)]) -> AsthaConfig {
        let path = file.map(|text| {
            let path = self.dir.path().join("astha.toml");
            std::fs::write(&path, text).unwrap();
            path
        });
        let database = self.registry.to_str().unwrap();
        let vars = vars.iter().copied().chain([("ASTHA_DATABASE", database)]);
        AsthaConfig::load_from_with(path.as_deref(), registry::monitor_registry, vars).unwrap()
    }

    /// Runs Astha with the compactor registered; returns the tables the compactor was
    /// given and what [`Astha::check_subscriptions`] said.
    async fn run(&self, config: AsthaConfig) -> (Vec<String>, Result<(), AsthaError>) {
        let astha = Astha::new(config).unwrap();
        astha.start().unwrap();
        let compactor = Compactor::new(self.lakehouse.clone(), CompactorConfig::default()).unwrap();
        astha.register_component(Box::new(compactor)).await.unwrap();
        let tables = astha.component_info("compactor").unwrap().subscriptions;
        let checked = astha.check_subscriptions();
        astha.stop().await.unwrap();
        (tables, checked)
    }
}

#[actix_rt::test]
async fn a_component_gets_its_own_tables_when_none_are_configured() {
    let lake = Lake::new();
    let config = lake.config(None, &[]);
    assert_eq!(
        config.monitored_tables,
        registry::REGISTRY_TABLES,
        "the lakehouse monitors its registry"
    );
    let (tables, checked) = lake.run(config).await;
    assert_eq!(tables, ["table_files"]);
    checked.unwrap();
}

#[actix_rt::test]
async fn subscriptions_in_the_file_replace_the_components_own() {
    let lake = Lake::new();
    let config = lake.config(
        Some("[subscriptions]\ncompactor = [\"tables\", \"table_files\"]\n"),
        &[],
    );
    let (tables, checked) = lake.run(config).await;
    assert_eq!(tables, ["tables", "table_files"]);
    checked.unwrap();
}

#[actix_rt::test]
async fn a_subscription_from_the_environment_replaces_the_components_own() {
    let lake = Lake::new();
    let config = lake.config(
        Some("[subscriptions]\ncompactor = [\"tables\"]\n"),
        &[("ASTHA_SUBSCRIPTIONS__COMPACTOR", "table_files,file_statistics")],
    );
    let (tables, checked) = lake.run(config).await;
    assert_eq!(tables, ["table_files", "file_statistics"], "env over file");
    checked.unwrap();
}

#[actix_rt::test]
async fn a_subscription_for_no_registered_component_is_an_error() {
    let lake = Lake::new();
    let config = lake.config(None, &[("ASTHA_SUBSCRIPTIONS__COMPACTR", "tables")]);
    let (tables, checked) = lake.run(config).await;
    assert_eq!(tables, ["table_files"], "a misspelt name changes nothing");
    let message = checked.unwrap_err().to_string();
    assert_eq!(
        message,
        "invalid config: subscriptions.compactr names no registered component (registered: \
         compactor); correct the name to one of them, or remove the entry"
    );
}
