//! The facade: seed 000's API (docs/SEEDS.md). `Astha::new(config)`, `start`, `stop`, component
//! registration, health and statistics.
//!
//! Astha runs its actors on an actix system. Called from inside one (an actix or
//! actix-web application, or a test), `start` puts them there; called from anywhere else
//! (a plain binary, a host tokio server), it starts a system on a thread of its own.
//! Either way the caller keeps an `Astha`, which is `Send + Sync`, and talks to the
//! actors through their addresses.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use astha_core::config::{AsthaConfig, ConfigError};
use astha_core::log::BatchLimits;
use astha_core::snapshot::SnapshotMode;
use astha_core::wake::DataVersionWatcher;

use crate::component::{Component, ComponentStatus};
use crate::error::AsthaError;
use crate::janitor::Janitor;
use crate::messages::{Register, SetStatus, Shutdown, StopJanitor, Unregister};
use crate::poller::{Poller, PollerConfig};
use crate::router::{LeaseConfig, PollerLink, Router, RouterConfig};
use crate::stats::{ComponentStats, SchedulerStats, Stats};
use crate::store::Store;
use crate::supervisor::SupervisorSettings;

/// A running or stopped Astha instance.
pub struct Astha {
    config: AsthaConfig,
    /// This engine's name on the leases of its non-durable slots.
    lease: LeaseConfig,
    store: Store,
    stats: Arc<Stats>,
    running: Mutex<Option<Running>>,
}

struct Running {
    router: Addr<Router>,
    janitor: Addr<Janitor>,
    watcher: DataVersionWatcher,
    /// Set when Astha started its own actix system thread.
    own_system: Option<(actix::System, std::thread::JoinHandle<()>)>,
}

impl Astha {
    /// Opens the database named in `config` (creating it if needed), creates the change
    /// log, and captures every monitored table that exists.
    pub fn new(config: AsthaConfig) -> Result<Astha, AsthaError> {
        config.validate()?;
        let capture = astha_core::capture::Capture::new(&config.log_table)
            .with_exact_replace(config.exact_replace);
        let store = Store::open_with(&config.database, capture)?;
        let tables = config.monitored_tables.clone();
        store.write_blocking(|conn| {
            for table in &tables {
                if astha_core::schema::is_plain_table(conn, table)? {
                    store.capture().install(conn, table)?;
                } else {
                    tracing::warn!(table, "monitored table does not exist; not captured");
                }
            }
            Ok(())
        })?;
        Ok(Astha {
            lease: LeaseConfig {
                owner: astha_core::lease::owner_id(),
                ttl: config.lease_ttl,
            },
            config,
            store,
            stats: Arc::new(Stats::default()),
            running: Mutex::new(None),
        })
    }

    /// This engine's name on the leases of its non-durable slots (`astha slots list`
    /// shows it).
    pub fn lease_owner(&self) -> &str {
        &self.lease.owner
    }

    /// The configuration in force.
    pub fn config(&self) -> &AsthaConfig {
        &self.config
    }

    /// The database handle (for setup, and for the CLI's status queries).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The live counters.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Starts the poller and the router. Components can be registered before or after.
    pub fn start(&self) -> Result<(), AsthaError> {
        let mut running = self.running.lock().expect("astha state poisoned");
        if running.is_some() {
            return Err(AsthaError::AlreadyRunning);
        }
        let start = self.initial_position()?;
        // Never create the file: the store opened it, and a path that is gone since must
        // not come back as an empty database.
        let watcher = DataVersionWatcher::start_filtered(
            astha_core::db::open_existing(self.store.path())?,
            self.config.data_version_poll,
            crate::poller::watcher_news(self.store.log_table(), self.stats.clone()),
        )?;
        let seed = ActorSeed {
            store: self.store.clone(),
            stats: self.stats.clone(),
            router: self.router_config(),
            poller: self.poller_config(),
            cleanup_interval: self.config.cleanup_interval,
            retention: self.config.retention,
        };
        let (actors, own_system) = if actix::System::try_current().is_some() {
            (seed.spawn(start), None)
        } else {
            let (tx, rx) = std::sync::mpsc::channel();
            let thread = std::thread::Builder::new()
                .name("astha-actors".into())
                .spawn(move || {
                    let system = actix::System::new();
                    system.block_on(async move {
                        let actors = seed.spawn(start);
                        let _ = tx.send((actors, actix::System::current()));
                    });
                    let _ = system.run();
                })
                .map_err(|e| AsthaError::Mailbox(format!("cannot start actor thread: {e}")))?;
            let (actors, system) = rx
                .recv()
                .map_err(|_| AsthaError::Mailbox("actor thread died at start".into()))?;
            (actors, Some((system, thread)))
        };
        let (router, janitor) = actors;
        tracing::info!(database = %self.store.path().display(), start, "astha started");
        *running = Some(Running {
            router,
            janitor,
            watcher,
            own_system,
        });
        Ok(())
    }

    /// Stops gracefully: in-flight deliveries finish (up to a drain timeout), every
    /// confirmed position is written, then the actors stop. Unconfirmed changes stay in
    /// the log and are delivered after the next start.
    pub async fn stop(&self) -> Result<(), AsthaError> {
        let Some(running) = self.running.lock().expect("astha state poisoned").take() else {
            return Err(AsthaError::NotRunning);
        };
        // The router stops itself once drained; its reply may be lost in that moment.
        let _ = running.router.send(Shutdown).await;
        let _ = running.janitor.send(StopJanitor).await;
        running.watcher.stop();
        if let Some((system, thread)) = running.own_system {
            system.stop();
            let _ = thread.join();
        }
        tracing::info!("astha stopped");
        Ok(())
    }

    /// Registers a component under its name; fails if the name is taken. Its slot is
    /// created at the log head, or reused if it exists (a restarted component resumes
    /// where it stopped). It is refreshed (`on_refresh`) before its first change.
    ///
    /// It receives the tables the configuration's `subscriptions` lists under its name
    /// if there is such an entry, and the tables it asks for itself otherwise: the
    /// operator's setting wins over the component's built-in list.
    pub async fn register_component(
        &self,
        component: Box<dyn Component>,
    ) -> Result<(), AsthaError> {
        self.register_component_with(component, SnapshotMode::Never)
            .await
    }

    /// Like [`Astha::register_component`], and hands the component a snapshot of its
    /// tables first when `snapshot` asks for one (`astha_core::snapshot::needed`): the
    /// rows as they were after one LSN, as `READ` changes, then every change after that
    /// LSN. Returns once the snapshot is taken (copied), not delivered; the component's
    /// `snapshot` stats show its progress.
    pub async fn register_component_with(
        &self,
        component: Box<dyn Component>,
        snapshot: SnapshotMode,
    ) -> Result<(), AsthaError> {
        let router = self.router()?;
        let tables = match self.config.subscriptions.get(component.name()) {
            Some(configured) => configured.clone(),
            None => component.subscriptions(),
        };
        router
            .send(Register {
                component,
                tables,
                snapshot,
            })
            .await?
    }

    /// Fails if the configuration's `subscriptions` names a component that is not
    /// registered: that setting would silently never take effect (most often a typo in
    /// the name). Call it once every component is registered.
    pub fn check_subscriptions(&self) -> Result<(), AsthaError> {
        let registered: BTreeSet<String> =
            self.all_components().into_iter().map(|c| c.name).collect();
        let Some(unknown) = self
            .config
            .subscriptions
            .keys()
            .find(|name| !registered.contains(*name))
        else {
            return Ok(());
        };
        let names = match registered.len() {
            0 => "none".to_owned(),
            _ => registered.into_iter().collect::<Vec<_>>().join(", "),
        };
        Err(ConfigError::invalid(
            format!("subscriptions.{unknown}"),
            format!(
                "names no registered component (registered: {names}); correct the name to one \
                 of them, or remove the entry"
            ),
        )
        .into())
    }

    /// Unregisters a component and drops its slot, so it no longer holds back log cleanup.
    pub async fn unregister_component(&self, name: &str) -> Result<(), AsthaError> {
        self.router()?
            .send(Unregister {
                name: name.to_string(),
            })
            .await?
    }

    /// Marks a component `active` or `disabled` (a disabled component gets no changes;
    /// they wait in the log).
    pub async fn update_component_health(
        &self,
        name: &str,
        status: &str,
    ) -> Result<(), AsthaError> {
        let status = ComponentStatus::parse(status).ok_or_else(|| {
            AsthaError::Core(astha_core::CoreError::Invalid(format!(
                "unknown component status {status:?} (use active or disabled)"
            )))
        })?;
        self.router()?
            .send(SetStatus {
                name: name.to_string(),
                status,
            })
            .await?
    }

    /// What is known about one component.
    pub fn component_info(&self, name: &str) -> Option<ComponentStats> {
        self.stats.components.get(name).map(|c| c.clone())
    }

    /// All registered components, by name.
    pub fn all_components(&self) -> Vec<ComponentStats> {
        self.stats.snapshot().components
    }

    /// Names of the components subscribed to `table`.
    pub fn table_subscribers(&self, table: &str) -> Vec<String> {
        self.all_components()
            .into_iter()
            .filter(|c| c.subscriptions.iter().any(|t| t == table))
            .map(|c| c.name)
            .collect()
    }

    /// Counters, positions and breaker states.
    pub fn scheduler_stats(&self) -> SchedulerStats {
        self.stats.snapshot()
    }

    fn router(&self) -> Result<Addr<Router>, AsthaError> {
        self.running
            .lock()
            .expect("astha state poisoned")
            .as_ref()
            .map(|r| r.router.clone())
            .ok_or(AsthaError::NotRunning)
    }

    /// Why Astha stopped delivering for good, if it has: the database file was deleted
    /// or replaced, or the log's LSN sequence restarted under it (see
    /// `janitor::integrity`). Stop it and start again once the cause is understood.
    pub fn failure(&self) -> Option<String> {
        self.stats.failure()
    }

    /// Waits until Astha stops delivering for good ([`Astha::failure`]) and returns why.
    pub async fn failed(&self) -> String {
        loop {
            if let Some(reason) = self.stats.failure() {
                return reason;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Where the poller starts: the lowest slot position, so existing components resume
    /// from the shared window rather than each reading the log alone; the head if there
    /// are no slots.
    ///
    /// First it checks the log's LSN sequence: a log whose head is below its mark or a
    /// slot (restored from a backup, emptied or moved by hand while Astha was down) is
    /// re-based and reported, and slots behind the oldest row still in the log (moved
    /// back past what cleanup removed) are reported.
    fn initial_position(&self) -> Result<i64, AsthaError> {
        let log = self.config.log_table.clone();
        let stats = self.stats.clone();
        Ok(self.store.write_blocking(|conn| {
            if let Some(found) = astha_core::log_state::check(conn, &log, 0, true)? {
                let moved = astha_core::log_state::rebase(conn, &log)?;
                stats.integrity_finding(format!(
                    "{found}. Re-based at start: slots moved back to re-deliver what the log \
                     holds (name, from, to): {moved:?}"
                ));
            }
            for (name, position, oldest) in astha_core::log_state::slots_behind_log(conn, &log)? {
                stats.integrity_finding(format!(
                    "slot {name:?} is at LSN {position}, but the oldest change still in the \
                     log is {oldest}: changes {} to {} were removed before its consumer saw \
                     them (the slot was moved back, or created behind the log)",
                    position + 1,
                    oldest - 1
                ));
            }
            let slots = astha_core::slots::list(conn)?;
            match slots.iter().map(|s| s.position).min() {
                Some(min) => Ok(min),
                None => astha_core::log::head_lsn(conn, &log),
            }
        })?)
    }

    fn router_config(&self) -> RouterConfig {
        let c = &self.config;
        RouterConfig {
            limits: self.limits(),
            window: c.window_batches,
            supervisor: SupervisorSettings {
                retry: c.retry,
                breaker: c.breaker,
                event_timeout: c.supervisor.event_timeout,
                refresh_after: c.supervisor.refresh_after,
                health_interval: c.supervisor.health_interval,
            },
            drain_timeout: Duration::from_secs(10),
            lease: self.lease.clone(),
        }
    }

    fn poller_config(&self) -> PollerConfig {
        PollerConfig {
            limits: self.limits(),
            window: self.config.window_batches,
            backstop: self.config.backstop_interval,
            wal: crate::wal_guard::WalLimit {
                max_bytes: self.config.wal_max_bytes,
                wait: self.config.wal_reset_wait,
            },
        }
    }

    fn limits(&self) -> BatchLimits {
        BatchLimits {
            max_rows: self.config.batch_size,
            max_bytes: self.config.batch_max_bytes,
        }
    }
}

/// What the actor system thread needs to create the actors.
struct ActorSeed {
    store: Store,
    stats: Arc<Stats>,
    router: RouterConfig,
    poller: PollerConfig,
    cleanup_interval: Duration,
    retention: astha_core::retention::Retention,
}

impl ActorSeed {
    /// Starts poller, router and janitor on the current actix system.
    fn spawn(self, start: i64) -> (Addr<Router>, Addr<Janitor>) {
        let lease = self.router.lease.clone();
        let mut router = Router::new(self.store.clone(), self.stats.clone(), self.router, start);
        let router_ctx = Context::new();
        let poller = Poller::new(
            self.store.clone(),
            router_ctx.address().recipient(),
            self.stats.clone(),
            self.poller,
            start,
        )
        .start();
        router.set_poller(PollerLink {
            release: poller.clone().recipient(),
            stop: poller.recipient(),
        });
        let janitor = Janitor::new(self.store, self.stats, self.cleanup_interval, lease)
            .with_retention(self.retention)
            .start();
        (router_ctx.run(router), janitor)
    }
}

impl Drop for Astha {
    fn drop(&mut self) {
        if let Ok(mut running) = self.running.lock() {
            if let Some(running) = running.take() {
                running.watcher.stop();
                if let Some((system, thread)) = running.own_system {
                    system.stop();
                    let _ = thread.join();
                }
            }
        }
    }
}
