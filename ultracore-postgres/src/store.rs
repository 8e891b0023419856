//! [`PgEventStore`]: core's `EventStore` on PostgreSQL (see the crate docs for the append
//! protocol and its invariant).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio::sync::OnceCell;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{Json, Type};
use tokio_postgres::Row;
use ultracore_core::event::{decode_payload, DomainEvent, Envelope, Trace};
use ultracore_core::ids::{EventId, StreamId};
use ultracore_core::limits::EVENTS_PER_READ_MAX;
use ultracore_core::store::{validate_batch, AppendBatch, AppendReceipt, EventStore, StoreError};
use ultracore_core::time::{EffectiveAt, RecordedAt, Timestamp};

use crate::error::{self, unavailable, PgError};
use crate::follow::Follower;
use crate::PgConfig;

/// Advisory lock key that serialises appends within a database ("UCAPPEND"); the schema's
/// tables are the only thing it guards, so one key per database is enough for one log per
/// schema at a time… and separate schemas only wait on each other for one append.
const APPEND_LOCK: i64 = 0x5543_4150_5045_4e44;

/// Attempts for reads that failed with a connection-level error (reads are always safe to
/// retry; appends never are, because their outcome is then unknown).
const READ_ATTEMPTS_MAX: u32 = 3;

const COPY: &str = "COPY uc_events (position, stream, stream_version, event_id, event_type, \
     schema_version, recorded_at, effective_at, correlation_id, causation_id, actor, payload) \
     FROM STDIN (FORMAT binary)";

/// The columns of [`COPY`], from one array per column (see `insert_events`).
const INSERT: &str = "INSERT INTO uc_events (position, stream, stream_version, event_id, \
     event_type, schema_version, recorded_at, effective_at, correlation_id, causation_id, actor, \
     payload) SELECT * FROM unnest($1::int8[], $2::text[], $3::int8[], $4::text[], $5::text[], \
     $6::int2[], $7::int8[], $8::int8[], $9::text[], $10::text[], $11::text[], $12::json[])";

/// Batches of at most this many events are inserted in the append's first round trip; larger
/// ones are validated first and then copied (binary COPY is the cheaper way to write many
/// rows, and a large batch amortises its two extra round trips).
const INSERT_EVENTS_MAX: usize = 64;

const COPY_TYPES: [Type; 12] = [
    Type::INT8,
    Type::TEXT,
    Type::INT8,
    Type::TEXT,
    Type::TEXT,
    Type::INT2,
    Type::INT8,
    Type::INT8,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::JSON,
];

const COLUMNS: &str = "position, stream, stream_version, event_id, event_type, schema_version, \
     recorded_at, effective_at, correlation_id, causation_id, actor, payload::text";

/// The event log in PostgreSQL. Cheap to clone (a pool handle).
#[derive(Clone)]
pub struct PgEventStore {
    inner: Arc<Inner>,
}

struct Inner {
    config: PgConfig,
    pool: Pool,
    ready: OnceCell<Follower>,
}

impl PgEventStore {
    /// Connects, applies pending migrations and starts listening for new events.
    pub async fn connect(config: PgConfig) -> Result<PgEventStore, PgError> {
        let store = PgEventStore::lazy(config)?;
        store.ready().await?;
        Ok(store)
    }

    /// A store that connects, migrates and starts listening on first use (so it can be built
    /// outside async code). Errors of that first use are reported by the operation.
    pub fn lazy(config: PgConfig) -> Result<PgEventStore, PgError> {
        let manager = Manager::from_config(
            config.pg()?,
            config.connector.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size.max(1))
            .build()
            .map_err(|e| PgError::Pool(e.to_string()))?;
        Ok(PgEventStore {
            inner: Arc::new(Inner {
                config,
                pool,
                ready: OnceCell::new(),
            }),
        })
    }

    /// Its configuration.
    pub fn config(&self) -> &PgConfig {
        &self.inner.config
    }

    /// The connection pool (for read models and tests in the same schema).
    pub fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    /// Migrates and starts following on first use; afterwards free.
    pub(crate) async fn ready(&self) -> Result<&Follower, PgError> {
        self.inner
            .ready
            .get_or_try_init(|| async {
                crate::migrate(&self.inner.config).await?;
                Ok(Follower::start(&self.inner.config))
            })
            .await
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.ready().await?;
        self.inner.pool.get().await.map_err(error::pool)
    }

    /// Runs a read, retrying on connection-level failures.
    async fn read_rows(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        let mut last = StoreError::Unavailable("no attempt".into());
        for attempt in 0..READ_ATTEMPTS_MAX {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
            }
            let client = match self.client().await {
                Ok(c) => c,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            match client.query(sql, params).await {
                Ok(rows) => return Ok(rows),
                Err(e) if e.is_closed() || e.as_db_error().is_none() || error::is_retryable(&e) => {
                    last = unavailable(&e)
                }
                Err(e) => return Err(unavailable(&e)),
            }
        }
        Err(last)
    }
}

/// Reads a `BIGINT` that holds a position or version (never negative in this schema).
fn u64_of(row: &Row, i: usize) -> Result<u64, StoreError> {
    let v: i64 = row.get(i);
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("negative value {v} in column {i}")))
}

fn time_of(micros: i64) -> Result<Timestamp, StoreError> {
    Timestamp::from_micros(micros)
        .ok_or_else(|| StoreError::Corrupt(format!("timestamp {micros} out of range")))
}

fn decode_row<E: DomainEvent>(row: &Row) -> Result<Envelope<E>, StoreError> {
    let position = u64_of(row, 0)?;
    let corrupt =
        |what: String| StoreError::Corrupt(format!("event at position {position}: {what}"));
    let stream: &str = row.get(1);
    let event_id: &str = row.get(3);
    let event_type: &str = row.get(4);
    let schema_version: i16 = row.get(5);
    let payload: &str = row.get(11);
    let payload: serde_json::Value =
        serde_json::from_str(payload).map_err(|e| corrupt(e.to_string()))?;
    let schema_version =
        u16::try_from(schema_version).map_err(|_| corrupt("negative schema version".into()))?;
    let payload = decode_payload::<E>(event_type, schema_version, payload)
        .map_err(|e| corrupt(e.to_string()))?;
    let text = |i: usize| row.get::<_, Option<&str>>(i).map(Arc::<str>::from);
    Ok(Envelope {
        event_id: EventId(
            u128::from_str_radix(event_id, 16).map_err(|e| corrupt(format!("event id: {e}")))?,
        ),
        stream: StreamId::new(stream).map_err(|e| corrupt(format!("stream: {e}")))?,
        stream_version: u64_of(row, 2)?,
        position,
        recorded_at: RecordedAt(time_of(row.get(6))?),
        effective_at: EffectiveAt(time_of(row.get(7))?),
        trace: Trace {
            correlation_id: text(8),
            causation_id: text(9),
            actor: text(10),
        },
        schema_version,
        payload,
    })
}

fn bigint(v: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::InvalidBatch(format!("{what} does not fit a BIGINT")))
}

/// The append's statements (prepared once per connection, then taken from its cache).
struct Statements {
    lock: tokio_postgres::Statement,
    last: tokio_postgres::Statement,
    versions: tokio_postgres::Statement,
    notify: tokio_postgres::Statement,
    insert: tokio_postgres::Statement,
    copy: tokio_postgres::Statement,
}

async fn prepared(
    tx: &deadpool_postgres::Transaction<'_>,
) -> Result<Statements, tokio_postgres::Error> {
    let (lock, last, versions, notify, insert, copy) = tokio::try_join!(
        tx.prepare_cached("SELECT pg_advisory_xact_lock($1)"),
        tx.prepare_cached(
            "SELECT position, recorded_at FROM uc_events ORDER BY position DESC LIMIT 1"
        ),
        // One index probe per stream whatever the plan: a prepared statement gets a generic
        // plan after five runs, and the generic plan of `stream = ANY($1) GROUP BY stream`
        // scanned the whole table (appends slowed down as the log grew: 55 K -> 3 K
        // transfers/s in batches of 1,000 after 50 K events).
        tx.prepare_cached(
            "SELECT s.stream, \
                    (SELECT max(e.stream_version) FROM uc_events e WHERE e.stream = s.stream) \
             FROM unnest($1::text[]) AS s(stream)"
        ),
        tx.prepare_cached("SELECT pg_notify($1, $2)"),
        tx.prepare_cached(INSERT),
        tx.prepare_cached(COPY),
    )?;
    Ok(Statements {
        lock,
        last,
        versions,
        notify,
        insert,
        copy,
    })
}

/// Writes a small batch with one `INSERT … SELECT FROM unnest(arrays)` (one statement and one
/// message whatever the batch size, so it can ride in the append's first round trip).
async fn insert_events<E: DomainEvent + std::fmt::Debug>(
    tx: &tokio_postgres::Transaction<'_>,
    insert: &tokio_postgres::Statement,
    events: &[Envelope<E>],
) -> Result<u64, tokio_postgres::Error> {
    // Checked by `columns_fit` before the transaction started.
    let positions: Vec<i64> = events.iter().map(|e| e.position as i64).collect();
    let streams: Vec<String> = events.iter().map(|e| e.stream.to_string()).collect();
    let versions: Vec<i64> = events.iter().map(|e| e.stream_version as i64).collect();
    let ids: Vec<String> = events.iter().map(|e| e.event_id.to_string()).collect();
    let types: Vec<&str> = events.iter().map(|e| e.payload.event_type()).collect();
    let schemas: Vec<i16> = events.iter().map(|e| e.schema_version as i16).collect();
    let recorded: Vec<i64> = events.iter().map(|e| e.recorded_at.0.as_micros()).collect();
    let effective: Vec<i64> = events
        .iter()
        .map(|e| e.effective_at.0.as_micros())
        .collect();
    let text = |f: fn(&Trace) -> Option<&str>| -> Vec<Option<&str>> {
        events.iter().map(|e| f(&e.trace)).collect()
    };
    let correlation = text(|t| t.correlation_id.as_deref());
    let causation = text(|t| t.causation_id.as_deref());
    let actor = text(|t| t.actor.as_deref());
    let payloads: Vec<Json<&E>> = events.iter().map(|e| Json(&e.payload)).collect();
    tx.execute(
        insert,
        &[
            &positions,
            &streams,
            &versions,
            &ids,
            &types,
            &schemas,
            &recorded,
            &effective,
            &correlation,
            &causation,
            &actor,
            &payloads,
        ],
    )
    .await
}

/// Streams' current versions, as the log has them (0 for a stream with no events).
async fn stream_versions<E>(
    tx: &tokio_postgres::Transaction<'_>,
    statement: &tokio_postgres::Statement,
    batch: &AppendBatch<E>,
) -> Result<HashMap<StreamId, u64>, StoreError> {
    let mut streams: Vec<String> = batch
        .expectations
        .iter()
        .map(|(s, _)| s.to_string())
        .chain(batch.events.iter().map(|e| e.stream.to_string()))
        .collect();
    streams.sort_unstable();
    streams.dedup();
    let rows = tx
        .query(statement, &[&streams])
        .await
        .map_err(|e| unavailable(&e))?;
    let mut versions = HashMap::with_capacity(rows.len());
    for row in &rows {
        // NULL: the stream has no events yet (version 0).
        let Some(version) = row.get::<_, Option<i64>>(1) else {
            continue;
        };
        let stream: &str = row.get(0);
        let stream = StreamId::new(stream)
            .map_err(|e| StoreError::Corrupt(format!("stream {stream:?}: {e}")))?;
        let version = u64::try_from(version)
            .map_err(|_| StoreError::Corrupt(format!("stream {stream}: version {version}")))?;
        versions.insert(stream, version);
    }
    Ok(versions)
}

/// Writes the batch with one binary `COPY`: the cheapest way to insert many rows (the payload
/// goes straight from serde to the JSON column, with no intermediate string).
async fn copy_events<E: DomainEvent + std::fmt::Debug>(
    tx: &tokio_postgres::Transaction<'_>,
    copy: &tokio_postgres::Statement,
    events: &[Envelope<E>],
) -> Result<(), tokio_postgres::Error> {
    let sink = tx.copy_in(copy).await?;
    let writer = BinaryCopyInWriter::new(sink, &COPY_TYPES);
    let mut writer = std::pin::pin!(writer);
    for e in events {
        // Checked by `columns_fit` before the transaction started.
        let position = e.position as i64;
        let version = e.stream_version as i64;
        let schema_version = e.schema_version as i16;
        writer
            .as_mut()
            .write(&[
                &position,
                &e.stream.to_string(),
                &version,
                &e.event_id.to_string(),
                &e.payload.event_type(),
                &schema_version,
                &e.recorded_at.0.as_micros(),
                &e.effective_at.0.as_micros(),
                &e.trace.correlation_id.as_deref(),
                &e.trace.causation_id.as_deref(),
                &e.trace.actor.as_deref(),
                &Json(&e.payload),
            ])
            .await?;
    }
    writer.finish().await?;
    Ok(())
}

/// Refuses values the table's columns cannot hold, before anything is written.
fn columns_fit<E>(events: &[Envelope<E>]) -> Result<(), StoreError> {
    for e in events {
        bigint(e.position, "position")?;
        bigint(e.stream_version, "stream version")?;
        i16::try_from(e.schema_version)
            .map_err(|_| StoreError::InvalidBatch("schema version above 32767".into()))?;
    }
    Ok(())
}

#[async_trait]
impl<E: DomainEvent + std::fmt::Debug> EventStore<E> for PgEventStore {
    async fn append(&self, batch: AppendBatch<E>) -> Result<AppendReceipt, StoreError> {
        columns_fit(&batch.events)?;
        let receipt = batch
            .events
            .last()
            .map(|e| AppendReceipt {
                last_position: e.position,
                recorded_at: e.recorded_at,
            })
            .ok_or_else(|| StoreError::InvalidBatch("empty batch".into()))?;
        let mut client = self.client().await?;
        let sql = |e: tokio_postgres::Error| unavailable(&e);
        // Statements are prepared once per connection (each unprepared statement costs a
        // round trip of its own), and everything up to the validation goes in one round trip:
        // tokio-postgres pipelines concurrent queries, and the server runs them in order, so
        // the reads start (and take their READ COMMITTED snapshot) only once the lock is
        // held. The notification is queued up front: PostgreSQL delivers it at commit, and
        // drops it if the transaction rolls back. A small batch is inserted in the same round
        // trip, before it is validated: if the validation fails, the transaction is dropped
        // (rolled back) and nothing of it is ever visible. A large one is validated first and
        // then written with binary COPY (two more round trips, but the cheapest rows).
        let tx = client.transaction().await.map_err(sql)?;
        let statements = prepared(&tx).await.map_err(sql)?;
        let channel = self.inner.config.channel();
        let payload = receipt.last_position.to_string();
        let small = batch.events.len() <= INSERT_EVENTS_MAX;
        let (_, last, versions, _, inserted) = tokio::try_join!(
            async {
                tx.execute(&statements.lock, &[&APPEND_LOCK])
                    .await
                    .map_err(sql)
            },
            async { tx.query_opt(&statements.last, &[]).await.map_err(sql) },
            stream_versions(&tx, &statements.versions, &batch),
            async {
                tx.execute(&statements.notify, &[&channel, &payload])
                    .await
                    .map_err(sql)
            },
            async {
                // The insert's own failure is judged after the validation (which names a
                // conflict more precisely), so it does not fail the join.
                Ok::<_, StoreError>(match small {
                    true => Some(insert_events(&tx, &statements.insert, &batch.events).await),
                    false => None,
                })
            },
        )?;
        let (last_position, last_time) = match &last {
            Some(row) => (u64_of(row, 0)?, Some(RecordedAt(time_of(row.get(1))?))),
            None => (0, None),
        };
        validate_batch(&batch, last_position, last_time, |s| {
            versions.get(s).copied().unwrap_or(0)
        })?;
        let written = match inserted {
            Some(r) => r.map(drop),
            None => copy_events(&tx, &statements.copy, &batch.events).await,
        };
        if let Err(e) = written {
            if error::unique_violation(&e).is_some() {
                // Only a writer that bypassed the lock (another tool on the same tables) gets
                // here: report it as being fenced out.
                drop(tx);
                let actual = EventStore::<E>::last_position(self).await?;
                return Err(StoreError::PositionConflict {
                    expected: batch.expected_position,
                    actual,
                });
            }
            return Err(unavailable(&e));
        }
        if !self.inner.config.commit_delay.is_zero() {
            tokio::time::sleep(self.inner.config.commit_delay).await;
        }
        // A failed COMMIT leaves the outcome unknown: `Unavailable` tells the engine to read
        // the log before deciding anything else.
        tx.commit().await.map_err(sql)?;
        Ok(receipt)
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<Envelope<E>>, StoreError> {
        let limit = limit.min(EVENTS_PER_READ_MAX) as i64;
        let from = i64::try_from(from_version).unwrap_or(i64::MAX);
        let rows = self
            .read_rows(
                &format!(
                    "SELECT {COLUMNS} FROM uc_events WHERE stream = $1 AND stream_version >= $2 \
                     ORDER BY stream_version LIMIT $3"
                ),
                &[&stream.to_string(), &from, &limit],
            )
            .await?;
        rows.iter().map(decode_row).collect()
    }

    async fn read_all(&self, after: u64, limit: usize) -> Result<Vec<Envelope<E>>, StoreError> {
        let limit = limit.min(EVENTS_PER_READ_MAX) as i64;
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let rows = self
            .read_rows(
                &format!(
                    "SELECT {COLUMNS} FROM uc_events WHERE position > $1 \
                     ORDER BY position LIMIT $2"
                ),
                &[&after, &limit],
            )
            .await?;
        rows.iter().map(decode_row).collect()
    }

    async fn last_position(&self) -> Result<u64, StoreError> {
        let rows = self
            .read_rows("SELECT coalesce(max(position), 0) FROM uc_events", &[])
            .await?;
        match rows.first() {
            Some(row) => u64_of(row, 0),
            None => Ok(0),
        }
    }

    async fn wait_for(&self, after: u64) -> Result<(), StoreError> {
        let follower = self.ready().await?;
        // Subscribe before reading, so a commit between the read and the wait still wakes us.
        let mut notified = follower.subscribe();
        loop {
            if EventStore::<E>::last_position(self).await? > after {
                return Ok(());
            }
            if *notified.borrow_and_update() > after {
                continue;
            }
            tokio::select! {
                _ = notified.changed() => {}
                _ = tokio::time::sleep(self.inner.config.poll_interval) => {}
            }
        }
    }
}
