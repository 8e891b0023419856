//! [`PgSnapshotStore`]: snapshots of folded state in the `uc_snapshots` table.

use std::sync::Arc;

use async_trait::async_trait;
use ultracore_core::store::{Snapshot, SnapshotStore, StoreError};

use crate::error::{self, unavailable};
use crate::PgEventStore;

/// Snapshots next to the log (same schema, same pool). A snapshot is a cache: saving one
/// replaces an older one of its scope; a newer one is never replaced by an older one.
#[derive(Clone)]
pub struct PgSnapshotStore {
    store: PgEventStore,
}

impl PgSnapshotStore {
    /// Snapshots in the schema of `store`.
    pub fn new(store: PgEventStore) -> PgSnapshotStore {
        PgSnapshotStore { store }
    }
}

#[async_trait]
impl SnapshotStore for PgSnapshotStore {
    async fn save(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        // The tables exist once the store has migrated (on first use, then free).
        self.store.ready().await?;
        let client = self.store.pool().get().await.map_err(error::pool)?;
        let position = i64::try_from(snapshot.position)
            .map_err(|_| StoreError::InvalidBatch("snapshot position too large".into()))?;
        client
            .execute(
                "INSERT INTO uc_snapshots (scope, position, schema_fingerprint, bytes) \
                 VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (scope) DO UPDATE SET position = EXCLUDED.position, \
                 schema_fingerprint = EXCLUDED.schema_fingerprint, bytes = EXCLUDED.bytes, \
                 saved_at = now() WHERE uc_snapshots.position <= EXCLUDED.position",
                &[
                    &snapshot.scope,
                    &position,
                    &(snapshot.schema_fingerprint as i64),
                    &&snapshot.bytes[..],
                ],
            )
            .await
            .map_err(|e| unavailable(&e))?;
        Ok(())
    }

    async fn load(&self, scope: &str) -> Result<Option<Snapshot>, StoreError> {
        self.store.ready().await?;
        let client = self.store.pool().get().await.map_err(error::pool)?;
        let row = client
            .query_opt(
                "SELECT position, schema_fingerprint, bytes FROM uc_snapshots WHERE scope = $1",
                &[&scope],
            )
            .await
            .map_err(|e| unavailable(&e))?;
        row.map(|row| {
            let position: i64 = row.get(0);
            let fingerprint: i64 = row.get(1);
            let bytes: Vec<u8> = row.get(2);
            Ok(Snapshot {
                scope: scope.to_string(),
                position: u64::try_from(position)
                    .map_err(|_| StoreError::Corrupt("negative snapshot position".into()))?,
                schema_fingerprint: fingerprint as u64,
                bytes: Arc::from(bytes),
            })
        })
        .transpose()
    }

    async fn remove(&self, scope: &str) -> Result<(), StoreError> {
        self.store.ready().await?;
        let client = self.store.pool().get().await.map_err(error::pool)?;
        client
            .execute("DELETE FROM uc_snapshots WHERE scope = $1", &[&scope])
            .await
            .map_err(|e| unavailable(&e))?;
        Ok(())
    }
}
