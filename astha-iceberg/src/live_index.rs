//! Which data files are live, and in which manifest: the index that keeps a commit's cost
//! proportional to what it changes rather than to the table's history.
//!
//! Owns one [`LiveIndex`] per table (by table uuid), shared by every handle loaded through
//! the same catalog, so a component that reloads its table for each pass does not read every
//! manifest again. Manifests are immutable files, so the index keys its knowledge by manifest
//! path: [`LiveIndex::sync`] makes it describe exactly one manifest list, forgetting manifests
//! the list no longer names and reading only the ones it has not seen (a commit's own
//! manifests are taught with [`LiveIndex::learn`] as they are written, so they are never read
//! back). Its memory is one entry per live file and per current manifest, whatever the
//! number of commits behind them.
//!
//! It also keeps the last manifest list it was asked for (by location: a manifest list is
//! an immutable file under a unique name), so a commit starts from its parent's manifests
//! without reading and decoding the list its predecessor just wrote.
//!
//! It never decides anything: appends ask it whether a file is already live, replaces ask
//! which manifest holds a file. A stale or missing index only costs a re-read.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::error::Result;
use super::manifest::read_manifest;
use super::manifest_list::ManifestFile;

/// Live data files of the manifests of one snapshot.
#[derive(Debug, Default)]
pub(crate) struct LiveIndex {
    /// Manifest path -> the live data files it lists.
    manifests: HashMap<Arc<Path>, Vec<Arc<Path>>>,
    /// Live data file -> the manifests that list it: one in a valid table, but a manifest
    /// taught before its commit (a merge of others) lists files its sources list too.
    files: HashMap<Arc<Path>, Vec<Arc<Path>>>,
    /// The manifest list last read or committed: its location and its manifests.
    list: Option<(String, Vec<ManifestFile>)>,
}

impl LiveIndex {
    /// Makes the index describe exactly the manifests of `list` (see the module doc).
    pub(crate) fn sync(&mut self, list: &[ManifestFile]) -> Result<()> {
        let wanted: HashSet<&Path> = list.iter().map(|m| m.manifest_path.as_path()).collect();
        let stale: Vec<Arc<Path>> = self
            .manifests
            .keys()
            .filter(|m| !wanted.contains(&***m))
            .cloned()
            .collect();
        for m in stale {
            self.forget(&m);
        }
        for m in list {
            if !self.manifests.contains_key(m.manifest_path.as_path()) {
                let live = read_manifest(m)?
                    .into_iter()
                    .filter(|e| e.status.is_live())
                    .map(|e| e.file.path);
                self.learn(&m.manifest_path, live);
            }
        }
        Ok(())
    }

    /// The manifests of the list at `location`, if it is the one remembered.
    pub(crate) fn listed(&self, location: &str) -> Option<Vec<ManifestFile>> {
        match &self.list {
            Some((at, manifests)) if at == location => Some(manifests.clone()),
            _ => None,
        }
    }

    /// Remembers the manifests of the list at `location` (read, or just committed).
    pub(crate) fn remember_list(&mut self, location: &str, manifests: Vec<ManifestFile>) {
        self.list = Some((location.to_string(), manifests));
    }

    /// Records the live files of a manifest this process wrote (or just read).
    pub(crate) fn learn(&mut self, manifest: &Path, live: impl IntoIterator<Item = PathBuf>) {
        let key: Arc<Path> = manifest.into();
        self.forget(&key);
        let files: Vec<Arc<Path>> = live.into_iter().map(Arc::from).collect();
        for f in &files {
            self.files.entry(f.clone()).or_default().push(key.clone());
        }
        self.manifests.insert(key, files);
    }

    fn forget(&mut self, manifest: &Path) {
        if let Some(files) = self.manifests.remove(manifest) {
            for f in files {
                if let Some(holders) = self.files.get_mut(&f) {
                    holders.retain(|m| &**m != manifest);
                    if holders.is_empty() {
                        self.files.remove(&f);
                    }
                }
            }
        }
    }

    /// The manifest listing `file` as live, if any.
    pub(crate) fn manifest_of(&self, file: &Path) -> Option<&Path> {
        self.files
            .get(file)
            .and_then(|holders| holders.first())
            .map(|m| &**m)
    }

    pub(crate) fn is_live(&self, file: &Path) -> bool {
        self.files.contains_key(file)
    }
}

/// The indexes of the tables loaded through one catalog, by table uuid.
#[derive(Debug, Default, Clone)]
pub(crate) struct LiveIndexes(Arc<Mutex<HashMap<String, Arc<Mutex<LiveIndex>>>>>);

impl LiveIndexes {
    /// The index of table `table_uuid` (empty the first time).
    pub(crate) fn of(&self, table_uuid: &str) -> Arc<Mutex<LiveIndex>> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(table_uuid.to_string()).or_default().clone()
    }
}

/// Locks an index. A panic halfway through an update could leave it inconsistent, so a
/// poisoned index starts over empty: it is only a cache of what the manifests say.
pub(crate) fn lock(index: &Mutex<LiveIndex>) -> MutexGuard<'_, LiveIndex> {
    match index.lock() {
        Ok(g) => g,
        Err(p) => {
            let mut g = p.into_inner();
            *g = LiveIndex::default();
            g
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(path: &str) -> ManifestFile {
        ManifestFile {
            manifest_path: path.into(),
            manifest_length: 1,
            partition_spec_id: 0,
            content: 0,
            sequence_number: 1,
            min_sequence_number: 1,
            added_snapshot_id: 1,
            added_files_count: 1,
            existing_files_count: 0,
            deleted_files_count: 0,
            added_rows_count: 1,
            existing_rows_count: 0,
            deleted_rows_count: 0,
            partitions: Vec::new(),
        }
    }

    #[test]
    fn a_merged_manifest_taught_before_its_commit_does_not_hide_its_sources() {
        let mut index = LiveIndex::default();
        index.learn(Path::new("/m/a"), [PathBuf::from("/d/1")]);
        index.learn(Path::new("/m/b"), [PathBuf::from("/d/2")]);
        // A merge of a and b, written by a commit that then loses its swap.
        index.learn(
            Path::new("/m/ab"),
            [PathBuf::from("/d/1"), PathBuf::from("/d/2")],
        );
        index.sync(&[listed("/m/a"), listed("/m/b")]).unwrap();
        assert!(index.is_live(Path::new("/d/1")) && index.is_live(Path::new("/d/2")));
        assert_eq!(
            index.manifest_of(Path::new("/d/2")),
            Some(Path::new("/m/b"))
        );
        // The table moves on without a: its file is no longer live.
        index.sync(&[listed("/m/b")]).unwrap();
        assert!(!index.is_live(Path::new("/d/1")));
        assert!(index.is_live(Path::new("/d/2")));
    }
}
