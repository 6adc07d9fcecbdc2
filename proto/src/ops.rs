//! The operations listener's shared parts.
//!
//! Every process may serve a second, read-only listener (`--ops-listen`) for monitoring:
//! `GET /health`, `GET /metrics` (Prometheus text format) and, on masters, the status page at
//! `/`. It asks for no credentials, so it serves no object data, no keys, no secrets and no
//! `/internal` route; each role builds its own router from these parts.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeGaugeValue, EncodeLabelValue, EncodeMetric,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// Paths of the operations listener.
pub mod paths {
    /// 200 while the process is up.
    pub const HEALTH: &str = "/health";
    /// Prometheus text format.
    pub const METRICS: &str = "/metrics";
    /// The status page (masters).
    pub const STATUS_PAGE: &str = "/";
}

/// Content type of `/metrics` answers (Prometheus text format 0.0.4).
pub const METRICS_CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// A registry holding the metrics every process has (`tinydfs_process_start_time_seconds`);
/// call it when the process starts.
pub fn registry() -> Registry {
    let mut r = Registry::default();
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    r.register(
        "tinydfs_process_start_time_seconds",
        "Start time of the process since the Unix epoch, in seconds",
        ConstGauge::new(started),
    );
    r
}

/// The registry's metrics in the Prometheus text format.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, registry) {
        tracing::warn!(error = %e, "encoding metrics failed");
    }
    out
}

/// Registers a collector: metrics computed at each scrape from the process's own state.
pub fn register_collector(registry: &mut Registry, collector: impl Collector) {
    registry.register_collector(Box::new(collector));
}

/// Writes one gauge (for [`Collector`]s).
pub fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: impl EncodeGaugeValue + fmt::Debug + Send + Sync + 'static,
) -> fmt::Result {
    let g = ConstGauge::new(value);
    g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
}

/// Writes one counter (for [`Collector`]s); the name gets the `_total` suffix.
pub fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    let c = ConstCounter::new(value);
    c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)
}

/// Writes a gauge with one label, one sample per `(label value, value)` (for [`Collector`]s).
pub fn gauge_family<L: EncodeLabelValue, V: EncodeGaugeValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    samples: impl IntoIterator<Item = (L, V)>,
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (l, v) in samples {
        let labels = [(label, l)];
        m.encode_family(&labels)?.encode_gauge(&v)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Fixed;

    impl Collector for Fixed {
        fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
            gauge(&mut enc, "t_chunks", "Chunks", 3u64)?;
            counter(&mut enc, "t_written_bytes", "Bytes", 10)?;
            gauge_family(
                &mut enc,
                "t_role",
                "Role",
                "role",
                [("leader", 1i64), ("follower", 0)],
            )
        }
    }

    #[test]
    fn collectors_write_prometheus_text() {
        let mut r = registry();
        register_collector(&mut r, Fixed);
        let text = encode(&r);
        assert!(text.contains("# TYPE tinydfs_process_start_time_seconds gauge\n"));
        assert!(text.contains("t_chunks 3\n"), "{text}");
        assert!(text.contains("# TYPE t_written_bytes_total counter\nt_written_bytes_total 10\n"));
        assert!(text.contains("t_role{role=\"leader\"} 1\nt_role{role=\"follower\"} 0\n"));
        assert!(!text.contains("# EOF"), "Prometheus text has no EOF marker");
    }
}
