//! Wire types and internal clients shared by every tinydfs role.
//!
//! The master, the chunkservers and the gateways never reach into each other's crates: everything
//! they exchange is defined here.
//!
//! - [`types`]: identifiers and the metadata records kept by the master (objects, parts, chunks).
//! - [`meta`]: the typed metadata messages sent to the master (writes, reads, their answers and
//!   errors); [`cluster`]: the messages about nodes (registration, heartbeats, placement, status,
//!   fsck, drain, rebalance, membership), also reachable through `meta`.
//! - [`client`]: the HTTP clients for the master (following the leader) and for chunkservers,
//!   with the internal paths and the chunk messages.
//! - [`http`]: what every internal client shares: scheme and URLs, the reqwest client, the
//!   internal headers, and [`http::CallError`], the typed failure of a call (its status, or no
//!   answer, or an answer that does not decode).
//! - [`lock`]: the exclusive lock every role takes on each data folder it writes.
//! - [`tls`]: certificates that reload when their files change, rustls configurations, the
//!   process's internal TLS, and the TLS listener. Modules depend one way only:
//!   `client` → `http` → `tls`.
//! - [`time`]: wall-clock helpers used to stamp log entries and format S3 dates.
//! - [`ops`]: the read-only operations listener's paths and metrics helpers.
//! - [`batch`]: many small chunks in one body.
//! - [`frame`]: the footer that ends a chunk stream; [`blocks`]: a chunk's per-block CRC32C.
//!
//! Control messages are small JSON documents; chunk data moves as raw byte streams. Every message
//! carries [`WIRE_VERSION`], and every internal request carries the cluster secret.

pub mod batch;
pub mod blocks;
pub mod client;
pub mod cluster;
pub mod frame;
pub mod http;
pub mod lock;
pub mod meta;
pub mod ops;
pub mod time;
pub mod tls;
pub mod types;
#[cfg(test)]
mod wire_compat;

pub use types::*;

/// Version of the control messages; a node refuses messages of another version.
pub const WIRE_VERSION: u16 = 1;

/// Header carrying the shared cluster secret on every internal request.
pub const SECRET_HEADER: &str = "x-tinydfs-secret";
/// Header carrying the id of the cluster the sender belongs to (empty before it knows).
pub const CLUSTER_HEADER: &str = "x-tinydfs-cluster";
/// Header carrying [`WIRE_VERSION`].
pub const VERSION_HEADER: &str = "x-tinydfs-version";
/// Header carrying the request id that follows a request from the gateway to chunkservers.
pub const REQUEST_ID_HEADER: &str = "x-tinydfs-request-id";

/// Default chunk size: large enough that metadata stays small (one record per 64 MiB, as in GFS),
/// small enough that a chunk streams through a pipeline in well under a second on a LAN.
pub const DEFAULT_CHUNK_SIZE: u64 = 64 * 1024 * 1024;
/// Size of the blocks a chunk's CRC32C are computed over: a read verifies only the blocks it touches.
pub const BLOCK_SIZE: usize = 64 * 1024;
/// Default number of copies of each chunk.
pub const DEFAULT_REPLICAS: usize = 3;
/// Default number of copies that must be durable for a write to succeed when a pipeline member
/// fails mid-write (HDFS's `dfs.namenode.replication.min` semantics, with one spare).
pub const DEFAULT_MIN_REPLICAS: usize = 2;

/// Compares two secrets in time independent of where they first differ.
pub fn secrets_equal(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
