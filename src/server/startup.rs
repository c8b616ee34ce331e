//! Opening a node from its data: the state machine its storage names, the hooks its syncer
//! calls around each fsync, and `--force-new-cluster`. (The node itself is [`super::node`].)

use std::sync::Arc;
use std::time::Instant;

use super::config::ServerConfig;
use super::faults::Faults;
use super::metrics::Metrics;
use crate::error::{Error, Result};
use crate::kv::KvStore;
use crate::raft::{Membership, RaftNode, SnapshotMeta};
use crate::storage::SnapshotStore;

/// The state machine a node starts with: the snapshot its storage names, or empty. Also what the
/// apply thread loads when the core installs a leader's snapshot ([`super::snapshot`]).
pub fn load_state_machine(
    meta: Option<SnapshotMeta>,
    store: Option<&SnapshotStore>,
) -> Result<(KvStore, Option<Membership>)> {
    let Some(meta) = meta else { return Ok((KvStore::new(), None)) };
    let store = store.ok_or_else(|| {
        Error::Storage(format!(
            "the log starts after snapshot {} but there are no snapshot files",
            meta.index
        ))
    })?;
    let started = Instant::now();
    // Checked whole, then decoded as it is read: the file is never in memory whole.
    let mut data = store.read_stream(meta)?;
    let (kv, cluster) = KvStore::decode_snapshot_from(&mut data).map_err(|e| {
        Error::Storage(format!("snapshot file {}: {}", store.path(meta).display(), e.message()))
    })?;
    // The configuration in force at the snapshot's index, which the snapshot carries.
    let cluster = cluster.and_then(|v| serde_json::from_value(v).ok());
    if kv.applied_index() != meta.index {
        return Err(Error::Storage(format!(
            "snapshot file for index {} holds state at index {}",
            meta.index,
            kv.applied_index()
        )));
    }
    log::info!(
        "state machine loaded from snapshot {} ({} keys) in {:?}",
        meta.index,
        kv.len(),
        started.elapsed()
    );
    Ok((kv, cluster))
}

/// What the node's syncer calls around each fsync: metrics after, the fault lab's slow disk
/// before.
pub(super) struct SyncHooks {
    pub(super) metrics: Arc<Metrics>,
    pub(super) faults: Arc<Faults>,
}

impl crate::storage::SyncObserver for SyncHooks {
    fn fsynced(&self, took: std::time::Duration, records: u64) {
        self.metrics.fsynced(took, records);
    }

    fn before_fsync(&self) {
        let delay = self.faults.fsync_delay();
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
    }
}

/// `--force-new-cluster`: makes `raft` the only voter of a new cluster (a fresh random cluster
/// id), and says so loudly. See `raft::node::recovery` for what is kept and what is lost.
pub(super) fn force_new_cluster(raft: &mut RaftNode, config: &ServerConfig) -> Result<()> {
    let cluster_id = format!("{:016x}", rand::random::<u64>());
    match raft.force_new_cluster(config.addr.clone(), cluster_id)? {
        None => log::warn!(
            "{}: --force-new-cluster: already the only member of its cluster; nothing changed. \
             Restart without the flag.",
            config.id
        ),
        Some(f) => {
            let others: Vec<&String> = f
                .old
                .voters
                .keys()
                .chain(f.old.learners.keys())
                .filter(|id| **id != config.id)
                .collect();
            let last = f.index - 1;
            log::error!("{}", "!".repeat(78));
            log::error!(
                "{}: --force-new-cluster: this node is now the ONLY voter of a new cluster {} \
                 (was {}; configuration entry {}@{}).",
                config.id,
                f.new.cluster_id,
                f.old.cluster_id,
                f.index,
                f.term
            );
            log::error!(
                "{}: dropped members: {:?}. Their data is no longer part of this cluster: wipe \
                 their data dirs before adding them back (member add + --join).",
                config.id,
                others
            );
            log::error!(
                "{}: its whole log (through {last}) is kept and will be committed, perhaps \
                 with entries the old cluster never committed (it vouches only for those through \
                 its snapshot, {}); writes the old cluster acknowledged that this log lacks are \
                 LOST.",
                config.id,
                f.known_commit
            );
            log::error!(
                "{}: restart without --force-new-cluster from now on (running it again would \
                 drop every member added since).",
                config.id
            );
            log::error!("{}", "!".repeat(78));
        }
    }
    Ok(())
}
