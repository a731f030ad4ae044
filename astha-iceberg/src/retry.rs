//! The one optimistic-concurrency loop of the writer: [`commit_with_retry`].
//!
//! Every write (append, replace, expire) is built on the table version the handle holds and
//! published by the catalog's compare-and-swap. When another writer got there first, the swap
//! fails with [`IcebergError::CommitConflict`] and nothing was published; the loop then waits
//! (exponential backoff with jitter, bounded), reloads the table and runs the caller's action
//! again on the fresh base. The action re-derives what it commits from the table it is handed
//! (which files are still live, what is left to do), so a retry never publishes a decision
//! taken on stale state.
//!
//! Only conflicts are retried. An unknown outcome ([`IcebergError::CommitStateUnknown`]) is
//! handed back at once, since re-applying could publish the change twice; so is every other
//! error, and the last conflict once the retries are spent. Callers tell "safe to redo, safe
//! to delete the files I wrote" from "unknown" with
//! [`IcebergError::is_definitely_not_committed`].

use std::time::Duration;

use super::error::IcebergError;
use super::table::IcebergTable;

/// How often and how patiently a commit is re-applied after losing the catalog swap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitRetry {
    /// Re-applications after the first attempt; 0 gives up on the first conflict.
    pub retries: u32,
    /// Wait before the first retry; doubles with every further one.
    pub initial_backoff: Duration,
    /// Upper bound of one wait.
    pub max_backoff: Duration,
}

impl CommitRetry {
    /// `retries` re-applications with the default backoff: 10 ms doubling up to 1 s, short
    /// against a commit (manifests are rewritten) and long enough to let a rival finish.
    pub fn new(retries: u32) -> Self {
        CommitRetry {
            retries,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_secs(1),
        }
    }

    /// `retries` re-applications without waiting (tests, single-process callers).
    pub fn immediate(retries: u32) -> Self {
        CommitRetry {
            retries,
            initial_backoff: Duration::ZERO,
            max_backoff: Duration::ZERO,
        }
    }

    /// The wait before retry number `retry` (1-based): the doubled backoff, of which the
    /// upper half is random so that writers that collided once do not collide again.
    pub fn backoff(&self, retry: u32) -> Duration {
        let doubled = self
            .initial_backoff
            .saturating_mul(1u32 << retry.saturating_sub(1).min(20))
            .min(self.max_backoff);
        let half = doubled / 2;
        let nanos = half.as_nanos() as u64;
        let jitter = if nanos == 0 {
            0
        } else {
            uuid::Uuid::new_v4().as_u64_pair().0 % (nanos + 1)
        };
        half + Duration::from_nanos(jitter)
    }
}

/// An error type that can carry the writer's errors through [`commit_with_retry`], so an
/// action may also fail for its own reasons (a registry write, say).
pub trait CommitError: From<IcebergError> {
    /// The Iceberg error inside, if this is one.
    fn as_iceberg(&self) -> Option<&IcebergError>;
}

impl CommitError for IcebergError {
    fn as_iceberg(&self) -> Option<&IcebergError> {
        Some(self)
    }
}

/// Runs `action` on `table` and, each time it loses the catalog swap, reloads the table and
/// runs it again, at most `policy.retries` more times (see the module doc).
///
/// `action` gets the table and the number of conflicts absorbed so far (0 on the first
/// attempt). It must publish at most one commit, as its last step, and decide everything from
/// the table it is given: after a conflict that table is the reloaded one. It may also find
/// there is nothing left to do and return without committing.
pub fn commit_with_retry<T, E: CommitError>(
    table: &mut IcebergTable,
    policy: &CommitRetry,
    mut action: impl FnMut(&mut IcebergTable, u32) -> Result<T, E>,
) -> Result<T, E> {
    let mut conflicts = 0;
    loop {
        match action(table, conflicts) {
            Err(e)
                if conflicts < policy.retries
                    && e.as_iceberg().is_some_and(IcebergError::is_commit_conflict) =>
            {
                conflicts += 1;
                let wait = policy.backoff(conflicts);
                tracing::debug!(
                    table = %table.identifier(),
                    conflicts,
                    wait_ms = wait.as_millis() as u64,
                    "iceberg commit lost the catalog swap; reloading and re-applying"
                );
                std::thread::sleep(wait);
                table.refresh()?;
            }
            done => return done,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::path::Path;

    use serde_json::json;

    use super::*;
    use crate::{
        write_parquet, Clock, ColumnSpec, DataFileInfo, FixedClock, IcebergType, SqlCatalog,
    };

    struct Fixture {
        dir: tempfile::TempDir,
        catalog: SqlCatalog,
        clock: FixedClock,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let clock = FixedClock::new(1_700_000_000_000);
        let catalog = SqlCatalog::open(dir.path().join("catalog.db"), "test")
            .unwrap()
            .with_clock(std::sync::Arc::new(clock.clone()));
        Fixture {
            dir,
            catalog,
            clock,
        }
    }

    fn columns() -> Vec<ColumnSpec> {
        vec![ColumnSpec::new(1, "id", IcebergType::Long, true)]
    }

    impl Fixture {
        fn table(&self) -> IcebergTable {
            let warehouse = self.dir.path().join("warehouse");
            IcebergTable::create(&self.catalog, &warehouse, "ns", "t", &columns()).unwrap()
        }
    }

    fn file(table: &IcebergTable, name: &str, id: i64) -> DataFileInfo {
        let path = table.data_dir().unwrap().join(name);
        write_parquet(&path, &columns(), &[vec![json!(id)]]).unwrap()
    }

    fn conflict() -> IcebergError {
        IcebergError::CommitConflict {
            table: "ns.t".into(),
            expected: "a".into(),
            actual: Some("b".into()),
        }
    }

    fn names(table: &IcebergTable) -> Vec<String> {
        let files = table.data_files().unwrap();
        files
            .iter()
            .map(|p| Path::new(p).file_name().unwrap().to_string_lossy().into())
            .collect()
    }

    #[test]
    fn a_lost_swap_is_re_applied_on_the_reloaded_table() {
        let fx = fixture();
        let mut ours = fx.table();
        let mut theirs = IcebergTable::load(&fx.catalog, "ns", "t").unwrap();
        let a = file(&ours, "a.parquet", 1);
        let b = file(&ours, "b.parquet", 2);
        theirs.append(&[b]).unwrap();

        let mut seen = Vec::new();
        let snapshot = commit_with_retry(&mut ours, &CommitRetry::immediate(3), |t, conflicts| {
            // Re-derived from the table handed in: the rival's file shows up after the reload.
            seen.push((conflicts, t.data_files().unwrap().len()));
            t.append(std::slice::from_ref(&a))
        })
        .unwrap();

        assert_eq!(seen, vec![(0, 0), (1, 1)]);
        assert_eq!(names(&ours), ["a.parquet", "b.parquet"]);
        // The injected clock stamps the snapshot.
        assert_eq!(snapshot.timestamp_ms, fx.clock.now_ms());
        assert_eq!(ours.metadata().last_updated_ms, fx.clock.now_ms());
    }

    #[test]
    fn conflicts_past_the_budget_come_back_as_conflicts() {
        let fx = fixture();
        let mut table = fx.table();
        let calls = Cell::new(0);
        let err = commit_with_retry(&mut table, &CommitRetry::immediate(2), |_, conflicts| {
            assert_eq!(conflicts, calls.get());
            calls.set(calls.get() + 1);
            Err::<(), _>(conflict())
        })
        .unwrap_err();
        assert_eq!(calls.get(), 3, "one attempt and two retries");
        assert!(err.is_commit_conflict() && err.is_definitely_not_committed());
    }

    #[test]
    fn an_unknown_outcome_is_not_retried() {
        let fx = fixture();
        let mut table = fx.table();
        let calls = Cell::new(0);
        let err = commit_with_retry(&mut table, &CommitRetry::immediate(5), |_, _| {
            calls.set(calls.get() + 1);
            Err::<(), _>(IcebergError::CommitStateUnknown {
                table: "ns.t".into(),
                metadata_location: "file:///m1".into(),
                source: Box::new(IcebergError::InvalidArgument("swap broke".into())),
            })
        })
        .unwrap_err();
        assert_eq!(calls.get(), 1);
        assert!(!err.is_definitely_not_committed());
        assert!(!err.is_commit_conflict());
    }

    #[test]
    fn a_swap_that_fails_otherwise_is_unknown_keeps_its_files_and_is_not_retried() {
        let fx = fixture();
        let mut table = fx.table();
        let a = file(&table, "a.parquet", 1);
        let metadata_dir = table.location().unwrap().join("metadata");
        let count = || std::fs::read_dir(&metadata_dir).unwrap().count();
        let before = count();
        // The catalog breaks under the writer: its swap errors without saying whether it
        // happened (as a dropped connection would).
        let other = rusqlite::Connection::open(fx.dir.path().join("catalog.db")).unwrap();
        other.execute_batch("DROP TABLE iceberg_tables").unwrap();

        let calls = Cell::new(0);
        let err = commit_with_retry(&mut table, &CommitRetry::immediate(5), |t, _| {
            calls.set(calls.get() + 1);
            t.append(std::slice::from_ref(&a))
        })
        .unwrap_err();
        assert!(
            matches!(err, IcebergError::CommitStateUnknown { .. }),
            "{err}"
        );
        assert!(!err.is_definitely_not_committed());
        assert_eq!(calls.get(), 1);
        // Manifest, manifest list and metadata file stay: they might be live.
        assert_eq!(count(), before + 3);
    }

    /// A caller's own error type carries conflicts through the loop; its other errors stop it.
    #[derive(Debug)]
    enum CallerError {
        Iceberg(IcebergError),
        Own,
    }

    impl From<IcebergError> for CallerError {
        fn from(e: IcebergError) -> Self {
            CallerError::Iceberg(e)
        }
    }

    impl CommitError for CallerError {
        fn as_iceberg(&self) -> Option<&IcebergError> {
            match self {
                CallerError::Iceberg(e) => Some(e),
                CallerError::Own => None,
            }
        }
    }

    #[test]
    fn a_callers_error_type_retries_conflicts_only() {
        let fx = fixture();
        let mut table = fx.table();
        let calls = Cell::new(0);
        let result = commit_with_retry(&mut table, &CommitRetry::immediate(5), |_, conflicts| {
            calls.set(calls.get() + 1);
            match conflicts {
                0 => Err::<(), _>(CallerError::from(conflict())),
                _ => Err(CallerError::Own),
            }
        });
        assert!(matches!(result, Err(CallerError::Own)));
        assert_eq!(calls.get(), 2);
    }

    #[test]
    fn backoff_doubles_within_its_bounds() {
        let policy = CommitRetry {
            retries: 10,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(100),
        };
        for (retry, full) in [(1, 10), (2, 20), (3, 40), (4, 80), (5, 100), (30, 100)] {
            let full = Duration::from_millis(full);
            let wait = policy.backoff(retry);
            assert!(wait >= full / 2 && wait <= full, "retry {retry}: {wait:?}");
        }
        assert_eq!(CommitRetry::immediate(3).backoff(1), Duration::ZERO);
    }
}
