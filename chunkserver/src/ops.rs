//! The chunkserver's read-only operations listener (`--ops-listen`): `GET /health` and
//! `GET /metrics`. No credentials, so nothing here reads a chunk or reveals a secret; every
//! metric is computed at scrape time from the store's own counters and disk usage.

use crate::store::ChunkStore;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Registry;
use std::fmt;
use std::sync::Arc;
use tinydfs_proto::ops::{self, counter, gauge, gauge_family, paths};

/// The chunkserver's metrics, read from the store at each scrape.
struct StoreMetrics(Arc<ChunkStore>);

impl fmt::Debug for StoreMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StoreMetrics")
    }
}

impl Collector for StoreMetrics {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let store = &self.0;
        // statvfs on every disk: the scrape runs on a blocking thread (see `metrics`).
        let usage = store.usage();
        let (scrubbed, corrupt) = store.scrub_counters();
        let (written, read) = store.io_counters();
        gauge(
            &mut enc,
            "tinydfs_chunkserver_chunks",
            "Chunks held",
            store.count() as u64,
        )?;
        gauge(
            &mut enc,
            "tinydfs_chunkserver_stored_bytes",
            "Bytes of chunk data held on the disks in service",
            store.bytes_held(),
        )?;
        gauge(
            &mut enc,
            "tinydfs_chunkserver_capacity_bytes",
            "Capacity reported to the master (disks, or --capacity)",
            usage.capacity,
        )?;
        gauge(
            &mut enc,
            "tinydfs_chunkserver_free_bytes",
            "Free bytes reported to the master",
            usage.free,
        )?;
        let disks = &usage.disks;
        gauge_family(
            &mut enc,
            "tinydfs_chunkserver_disk_capacity_bytes",
            "Capacity of each data folder (disk)",
            "disk",
            disks.iter().map(|d| (d.path.as_str(), d.capacity)),
        )?;
        gauge_family(
            &mut enc,
            "tinydfs_chunkserver_disk_free_bytes",
            "Free bytes of each data folder (disk)",
            "disk",
            disks.iter().map(|d| (d.path.as_str(), d.free)),
        )?;
        gauge_family(
            &mut enc,
            "tinydfs_chunkserver_disk_chunks",
            "Chunks held on each data folder (disk)",
            "disk",
            disks.iter().map(|d| (d.path.as_str(), d.chunks)),
        )?;
        gauge_family(
            &mut enc,
            "tinydfs_chunkserver_disk_failed",
            "1 when the data folder (disk) was taken out of service",
            "disk",
            disks.iter().map(|d| (d.path.as_str(), u64::from(d.failed))),
        )?;
        gauge(
            &mut enc,
            "tinydfs_chunkserver_failed_disks",
            "Data folders (disks) out of service",
            disks.iter().filter(|d| d.failed).count() as u64,
        )?;
        counter(
            &mut enc,
            "tinydfs_chunkserver_scrubbed_chunks",
            "Chunks verified by the scrubber",
            scrubbed,
        )?;
        counter(
            &mut enc,
            "tinydfs_chunkserver_scrub_corrupt_chunks",
            "Corrupt replicas found by the scrubber",
            corrupt,
        )?;
        counter(
            &mut enc,
            "tinydfs_chunkserver_written_bytes",
            "Chunk bytes stored (pipeline writes and copies)",
            written,
        )?;
        counter(
            &mut enc,
            "tinydfs_chunkserver_read_bytes",
            "Chunk bytes read and sent (verified)",
            read,
        )
    }
}

/// The operations router.
pub fn router(store: Arc<ChunkStore>) -> Router {
    let mut registry = ops::registry();
    ops::register_collector(&mut registry, StoreMetrics(store));
    Router::new()
        .route(paths::HEALTH, get(health))
        .route(paths::METRICS, get(metrics))
        .with_state(Arc::new(registry))
}

async fn health() -> Response {
    (
        [("content-type", "application/json")],
        "{\"role\":\"chunkserver\"}",
    )
        .into_response()
}

async fn metrics(State(registry): State<Arc<Registry>>) -> Response {
    match tokio::task::spawn_blocking(move || ops::encode(&registry)).await {
        Ok(text) => ([("content-type", ops::METRICS_CONTENT_TYPE)], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
