//! The gateway's metrics and its read-only operations listener (`--ops-listen`): `GET /health`
//! and `GET /metrics`. No credentials, so it serves no object, key or secret.
//!
//! [`S3Metrics`] is updated by the S3 handler ([`crate::s3`]) once per request: the operation
//! and final status, the time to the response head, and the body bytes in both directions
//! (counted as they stream).

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tinydfs_proto::ops::{self, paths};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    op: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    op: &'static str,
}

/// Latency buckets: 1 ms to about 65 s, doubling (a small GET to a multi-GiB upload).
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// The S3 request metrics.
#[derive(Debug)]
pub struct S3Metrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<OpLabels, Histogram, fn() -> Histogram>,
    received: Counter,
    sent: Counter,
}

impl S3Metrics {
    /// Creates the metrics and registers them with `registry`.
    pub fn new(registry: &mut Registry) -> S3Metrics {
        let m = S3Metrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(duration_histogram as fn() -> Histogram),
            received: Counter::default(),
            sent: Counter::default(),
        };
        registry.register(
            "tinydfs_s3_requests",
            "S3 requests by operation and HTTP status",
            m.requests.clone(),
        );
        registry.register(
            "tinydfs_s3_request_duration_seconds",
            "Time from an S3 request's arrival to its response head, by operation",
            m.duration.clone(),
        );
        registry.register(
            "tinydfs_s3_received_bytes",
            "Request body bytes received (uploads, as sent on the wire)",
            m.received.clone(),
        );
        registry.register(
            "tinydfs_s3_sent_bytes",
            "Response body bytes sent (downloads, listings, errors)",
            m.sent.clone(),
        );
        m
    }

    /// Counts a request answered with `status` after `elapsed`.
    pub fn observe(&self, op: &'static str, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels { op, status })
            .inc();
        self.duration
            .get_or_create(&OpLabels { op })
            .observe(elapsed.as_secs_f64());
    }

    /// A request body that counts its bytes as received.
    pub fn count_received(&self, body: Body) -> Body {
        Body::new(Counted {
            inner: body,
            counter: self.received.clone(),
        })
    }

    /// A response body that counts its bytes as sent.
    pub fn count_sent(&self, body: Body) -> Body {
        Body::new(Counted {
            inner: body,
            counter: self.sent.clone(),
        })
    }
}

/// A body counting the data bytes that pass through it. Size hints pass through unchanged, so
/// responses keep their `Content-Length`.
struct Counted {
    inner: Body,
    counter: Counter,
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                this.counter.inc_by(data.len() as u64);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The operations router, serving `registry`.
pub fn router(registry: Registry) -> Router {
    Router::new()
        .route(paths::HEALTH, get(health))
        .route(paths::METRICS, get(metrics))
        .with_state(Arc::new(registry))
}

async fn health() -> Response {
    (
        [("content-type", "application/json")],
        "{\"role\":\"gateway\"}",
    )
        .into_response()
}

async fn metrics(State(registry): State<Arc<Registry>>) -> Response {
    (
        [("content-type", ops::METRICS_CONTENT_TYPE)],
        ops::encode(&registry),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn requests_and_bytes_are_counted() {
        let mut registry = ops::registry();
        let m = S3Metrics::new(&mut registry);
        let body = m.count_sent(Body::from("hello"));
        assert_eq!(http_body::Body::size_hint(&body).exact(), Some(5));
        assert_eq!(body.collect().await.unwrap().to_bytes(), "hello");
        m.observe("GetObject", 200, Duration::from_millis(3));
        m.observe("GetObject", 200, Duration::from_millis(5));
        m.observe("PutObject", 403, Duration::from_millis(1));
        let text = ops::encode(&registry);
        assert!(text.contains("tinydfs_s3_requests_total{op=\"GetObject\",status=\"200\"} 2\n"));
        assert!(text.contains("tinydfs_s3_requests_total{op=\"PutObject\",status=\"403\"} 1\n"));
        assert!(text.contains("tinydfs_s3_request_duration_seconds_count{op=\"GetObject\"} 2\n"));
        assert!(text.contains("tinydfs_s3_sent_bytes_total 5\n"), "{text}");
        assert!(text.contains("tinydfs_s3_received_bytes_total 0\n"));
    }
}
