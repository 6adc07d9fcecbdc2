//! Bounds on what one client may send or hold, each answered as AWS S3 answers it:
//!
//! | limit | bound | answer |
//! |---|---|---|
//! | request head (headers and query) | [`MAX_HEADER_SECTION`] (8 KiB) | `400 RequestHeaderSectionTooLarge` |
//! | request head, hard | [`HARD_MAX_HEAD`] (64 KiB) or 100 headers | hyper's `431`, connection closed |
//! | time to send a request head or a TLS handshake | `header_timeout_ms` (30 s) | connection closed |
//! | silence inside a request body | `body_timeout_ms` (30 s) | `400 RequestTimeout` |
//! | a client not reading its response | `body_timeout_ms` (30 s) | connection closed |
//! | requests in flight | `max_requests` (1,024) | `503 SlowDown` at once |
//!
//! The soft head limit is checked by the S3 handler, so that the client gets an S3 error
//! document; the hard one is hyper's parser limit, which protects the memory of the parser
//! itself. Limits of request bodies (XML documents, keys, parts, POST form fields) sit with the
//! operations they belong to.

use crate::error::S3Error;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use http_body::{Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::OwnedSemaphorePermit;

/// Default bound on requests served at once by one gateway: far above what its chunk pipelines
/// can use, low enough that a flood of requests is refused before it exhausts memory.
pub const DEFAULT_MAX_REQUESTS: usize = 1024;
/// Default time a client has to send a request head or finish a TLS handshake (hyper's own
/// default, which it applies only when given a timer). Also the longest a keep-alive
/// connection stays idle.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Default longest silence inside a request body: the chunk streams' idle bound.
pub const DEFAULT_BODY_TIMEOUT: Duration = tinydfs_proto::client::STREAM_IDLE_TIMEOUT;
/// Largest request head (header names and values, and the query string) S3 accepts: "The PUT
/// request header is limited to 8 KB in size".
pub const MAX_HEADER_SECTION: usize = 8 * 1024;
/// Largest request head hyper parses at all; beyond it hyper answers 431 and closes.
pub const HARD_MAX_HEAD: usize = 64 * 1024;

/// The HTTP/1.1 connection settings of the S3 listener. HTTP/1.1 only: S3 clients speak it, and
/// a connection whose first bytes are still awaited must be under the header timeout too (the
/// version sniffing of hyper-util's `auto` builder is not).
pub fn http1_builder(header_timeout: Duration) -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_header_size(HARD_MAX_HEAD);
    b
}

/// Refuses a request head larger than [`MAX_HEADER_SECTION`], as S3 does.
pub fn check_head(parts: &http::request::Parts) -> Result<(), S3Error> {
    let headers: usize = parts
        .headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    let query = parts.uri.query().map_or(0, str::len);
    if headers + query > MAX_HEADER_SECTION {
        return Err(S3Error::new(
            "RequestHeaderSectionTooLarge",
            400,
            "Your request header section exceeds the maximum allowed size.",
        )
        .with("MaxSizeAllowed", MAX_HEADER_SECTION.to_string()));
    }
    Ok(())
}

/// `503 SlowDown`: the gateway has `max_requests` requests in flight. SDKs retry it with
/// backoff.
pub fn slow_down() -> S3Error {
    S3Error::new("SlowDown", 503, "Please reduce your request rate.")
}

/// `400 RequestTimeout`: the client sent nothing for the body timeout.
pub fn request_timeout() -> S3Error {
    S3Error::new(
        "RequestTimeout",
        400,
        "Your socket connection to the server was not read from or written to within the timeout period.",
    )
}

/// A connection whose writes may not stall longer than `limit`: a client that stops reading its
/// response (a slow-read attack, or a dead peer behind a silent network) loses the connection,
/// and its request's permit, instead of holding them forever. Reads are bounded elsewhere
/// (header timeout, body idle timeout).
pub struct WriteTimeout<S> {
    inner: S,
    limit: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> WriteTimeout<S> {
    pub fn new(inner: S, limit: Duration) -> Self {
        WriteTimeout {
            inner,
            limit,
            stalled: None,
        }
    }

    /// Called when a write could not progress: an error once it has not for `limit`.
    fn stall<T>(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<T>> {
        let limit = self.limit;
        let sleep = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client stopped reading",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn progress<T>(
        &mut self,
        cx: &mut Context<'_>,
        p: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        match p {
            Poll::Pending => self.stall(cx),
            ready => {
                self.stalled = None;
                ready
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteTimeout<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let p = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.progress(cx, p)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let p = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.progress(cx, p)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let p = Pin::new(&mut self.inner).poll_flush(cx);
        self.progress(cx, p)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let p = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.progress(cx, p)
    }
}

/// Ends `body` with [`request_timeout`] when no item arrives for `idle`.
pub fn idle_timeout<T: Send + 'static>(
    body: BoxStream<'static, Result<T, S3Error>>,
    idle: Duration,
) -> BoxStream<'static, Result<T, S3Error>> {
    futures_util::stream::unfold(Some(body), move |state| async move {
        let mut body = state?;
        match tokio::time::timeout(idle, body.next()).await {
            Ok(Some(item)) => Some((item, Some(body))),
            Ok(None) => None,
            Err(_) => Some((Err(request_timeout()), None)),
        }
    })
    .boxed()
}

/// A response body that holds a request permit until it has been sent (or dropped): a GET
/// streaming a large object counts as in flight until its last byte.
pub struct Held<B> {
    inner: B,
    _permit: OwnedSemaphorePermit,
}

impl<B> Held<B> {
    pub fn new(inner: B, permit: OwnedSemaphorePermit) -> Self {
        Held {
            inner,
            _permit: permit,
        }
    }
}

impl<B: http_body::Body<Data = Bytes> + Unpin> http_body::Body for Held<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, headers: &[(&str, String)]) -> http::request::Parts {
        let mut b = http::Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn head_section_limit() {
        let ok = parts("/b/k?x=1", &[("x-amz-meta-a", "v".repeat(8000))]);
        assert!(check_head(&ok).is_ok());
        let big = parts("/b/k", &[("x-amz-meta-a", "v".repeat(8200))]);
        let e = check_head(&big).unwrap_err();
        assert_eq!(
            (e.code, e.status.as_u16()),
            ("RequestHeaderSectionTooLarge", 400)
        );
        let long_query = format!("/b/k?{}", "q".repeat(8200));
        assert!(check_head(&parts(&long_query, &[])).is_err());
        // The path (a long key) does not count: keys have their own limit.
        let long_path = format!("/b/{}", "k".repeat(9000));
        assert!(check_head(&parts(&long_path, &[])).is_ok());
    }

    #[tokio::test]
    async fn writes_to_a_client_that_stopped_reading_fail() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (ours, mut theirs) = tokio::io::duplex(64);
        let mut conn = WriteTimeout::new(ours, Duration::from_millis(50));
        // Written while the peer reads...
        let reader = tokio::spawn(async move {
            let mut buf = vec![0; 1000];
            theirs.read_exact(&mut buf).await.unwrap();
            theirs
        });
        conn.write_all(&[1; 1000]).await.unwrap();
        let _theirs = reader.await.unwrap();
        // ...and cut off once it stops.
        let e = conn.write_all(&[2; 1000]).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn idle_bodies_time_out() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, S3Error>>(4);
        let body = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        })
        .boxed();
        let mut timed = idle_timeout(body, Duration::from_millis(50));
        tx.send(Ok(Bytes::from_static(b"a"))).await.unwrap();
        assert_eq!(timed.next().await.unwrap().unwrap(), "a");
        let e = timed.next().await.unwrap().unwrap_err();
        assert_eq!((e.code, e.status.as_u16()), ("RequestTimeout", 400));
        assert!(timed.next().await.is_none());
        drop(tx);
    }
}
