//! Streaming decoder for the `aws-chunked` content encoding:
//!
//! ```text
//! hex-size[;chunk-signature=sig]\r\n <data> \r\n ... 0[;chunk-signature=sig]\r\n
//! [name:value\r\n ...] [x-amz-trailer-signature:sig\r\n] \r\n
//! ```
//!
//! The input may be fragmented anywhere. At most one input frame plus one
//! header line (<= 4 KiB) is buffered; data is passed through as zero-copy
//! slices of the input frames as soon as it arrives.
//!
//! In signed mode each chunk is hashed incrementally and its signature is
//! checked before the chunk's last piece is yielded, so earlier pieces of a
//! forged chunk *are* yielded before the stream fails with
//! `SignatureDoesNotMatch`. Callers must therefore commit nothing unless the
//! stream ends without error (which also covers the trailer signature, the
//! decoded length and the absence of data after the final chunk).
//!
//! Tolerated deviations seen in real clients: bare `\n` line ends, a missing
//! final CRLF after the last chunk or trailer, and an unterminated last trailer line.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use sha2::{Digest, Sha256};

use super::error::AuthError;
use super::sigv4::{decode32, mac_matches, Payload, SigningContext, EMPTY_SHA256};

/// Longest accepted chunk-size or trailer line.
const MAX_LINE: usize = 4096;
/// Most trailing headers accepted.
const MAX_TRAILERS: usize = 16;

/// Shared handle to the trailing headers of an `aws-chunked` body; filled in
/// (names lowercased) once the decoded stream has ended successfully.
#[derive(Debug, Clone, Default)]
pub struct TrailerSlot(Arc<Mutex<Vec<(String, String)>>>);

impl TrailerSlot {
    /// All trailing headers (excluding `x-amz-trailer-signature`), in arrival order.
    pub fn all(&self) -> Vec<(String, String)> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The value of one trailing header (name matched case-insensitively).
    pub fn get(&self, name: &str) -> Option<String> {
        let list = self.0.lock().unwrap_or_else(|e| e.into_inner());
        list.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }

    fn set(&self, trailers: Vec<(String, String)>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = trailers;
    }
}

/// Decodes an `aws-chunked` body, verifying chunk (and trailer) signatures when
/// `payload` is [`Payload::StreamingSigned`]; other payloads are decoded as
/// unsigned chunks (trailers allowed). `decoded_len` is the value of
/// `x-amz-decoded-content-length`, checked against the decoded total.
pub fn decode_aws_chunked<S, E>(
    body: S,
    payload: &Payload,
    ctx: &SigningContext,
    decoded_len: Option<u64>,
) -> (
    impl Stream<Item = Result<Bytes, AuthError>> + Send + 'static,
    TrailerSlot,
)
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
    E: std::fmt::Display,
{
    let (signer, trailer_ok) = match *payload {
        Payload::StreamingSigned { trailer } => (Some(Signer::new(ctx)), trailer),
        _ => (None, true),
    };
    let slot = TrailerSlot::default();
    let decoder = Decoder {
        body,
        eof: false,
        buf: Bytes::new(),
        line: Vec::new(),
        state: State::Size,
        signer,
        trailer_ok,
        hasher: Sha256::new(),
        chunk_sig: [0; 32],
        total: 0,
        decoded_len,
        trailers: Vec::new(),
        trailer_sig: None,
        slot: slot.clone(),
    };
    (decoder, slot)
}

struct Signer {
    key: [u8; 32],
    prefix: String,
    prev: [u8; 32],
}

impl Signer {
    fn new(ctx: &SigningContext) -> Self {
        Self {
            key: ctx.key,
            prefix: format!("{}\n{}\n", ctx.datetime, ctx.scope),
            prev: ctx.seed,
        }
    }

    /// Checks `sig` over `kind` + `hashes` chained on the previous signature.
    fn check(&mut self, kind: &str, hashes: &str, sig: &[u8; 32]) -> Result<(), AuthError> {
        let sts = format!(
            "{kind}\n{}{}\n{hashes}",
            self.prefix,
            hex::encode(self.prev)
        );
        if !mac_matches(&self.key, sts.as_bytes(), sig) {
            return Err(AuthError::SignatureMismatch);
        }
        self.prev = *sig;
        Ok(())
    }
}

#[derive(Clone, Copy)]
enum State {
    /// Expecting a chunk-size line.
    Size,
    /// Inside chunk data, with this many bytes left.
    Data(u64),
    /// Expecting the CRLF that ends chunk data.
    DataEnd,
    /// After the final chunk: trailer lines up to an empty line.
    Trailer,
    /// Everything verified; only end-of-input may follow.
    Drain,
    Done,
}

struct Decoder<S> {
    body: S,
    eof: bool,
    /// Unconsumed part of the current input frame.
    buf: Bytes,
    /// Partial line carried over between frames.
    line: Vec<u8>,
    state: State,
    signer: Option<Signer>,
    trailer_ok: bool,
    hasher: Sha256,
    chunk_sig: [u8; 32],
    total: u64,
    decoded_len: Option<u64>,
    trailers: Vec<(String, String)>,
    trailer_sig: Option<[u8; 32]>,
    slot: TrailerSlot,
}

/// A chunk or trailer signature: 64 lowercase hex digits, as signers write them (S3 compares the
/// text), so that no altered byte of a signed stream is accepted.
fn signature_hex(s: &str) -> Option<[u8; 32]> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    decode32(s)
}

fn incomplete(msg: &str) -> AuthError {
    AuthError::IncompleteBody(format!("malformed aws-chunked body: {msg}"))
}

impl<S> Decoder<S> {
    /// Takes one complete line (terminator stripped) or `None` if more input is needed.
    fn take_line(&mut self) -> Result<Option<Vec<u8>>, AuthError> {
        let found = self.buf.iter().position(|&b| b == b'\n');
        let end = found.map_or(self.buf.len(), |p| p + 1);
        if self.line.len() + end > MAX_LINE {
            return Err(incomplete("line too long"));
        }
        self.line.extend_from_slice(&self.buf.split_to(end));
        if found.is_none() {
            return Ok(None);
        }
        let mut line = std::mem::take(&mut self.line);
        line.pop();
        // Lines end with CRLF. A bare LF is refused: the byte before it would otherwise be
        // trimmed away unseen (a changed CR passed the trailer signature check).
        if line.pop() != Some(b'\r') {
            return Err(incomplete("line does not end with CRLF"));
        }
        Ok(Some(line))
    }

    /// Advances the state machine by one step; `Ok(None)` means "continue".
    fn step(&mut self) -> Result<Option<Bytes>, AuthError> {
        match self.state {
            State::Size => match self.take_line()? {
                Some(line) => self.on_size_line(&line)?,
                None if self.eof => return Err(incomplete("body ended before the final chunk")),
                None => {}
            },
            State::Data(left) => {
                if self.buf.is_empty() {
                    return Err(incomplete("body ended inside a chunk"));
                }
                let n = usize::try_from(left)
                    .unwrap_or(usize::MAX)
                    .min(self.buf.len());
                let piece = self.buf.split_to(n);
                let left = left - n as u64;
                if let Some(signer) = &mut self.signer {
                    self.hasher.update(&piece);
                    if left == 0 {
                        let hash = hex::encode(std::mem::take(&mut self.hasher).finalize());
                        signer.check(
                            "AWS4-HMAC-SHA256-PAYLOAD",
                            &format!("{EMPTY_SHA256}\n{hash}"),
                            &self.chunk_sig,
                        )?;
                    }
                }
                self.state = if left == 0 {
                    State::DataEnd
                } else {
                    State::Data(left)
                };
                return Ok(Some(piece));
            }
            State::DataEnd => match self.take_line()? {
                Some(line) if line.is_empty() => self.state = State::Size,
                Some(_) => return Err(incomplete("chunk data longer than its declared size")),
                None if self.eof => return Err(incomplete("missing CRLF after chunk data")),
                None => {}
            },
            State::Trailer => match self.take_line()? {
                Some(line) if line.is_empty() => self.finish_trailers()?,
                Some(line) => self.on_trailer_line(&line)?,
                None if self.eof => {
                    // Tolerate a missing final CRLF and an unterminated last line.
                    let line = std::mem::take(&mut self.line);
                    if !line.is_empty() {
                        self.on_trailer_line(line.strip_suffix(b"\r").unwrap_or(&line))?;
                    }
                    self.finish_trailers()?;
                }
                None => {}
            },
            State::Drain => {
                if !self.buf.is_empty() {
                    return Err(incomplete("data after the final chunk"));
                }
                if self.eof {
                    self.slot.set(std::mem::take(&mut self.trailers));
                    self.state = State::Done;
                }
            }
            State::Done => {}
        }
        Ok(None)
    }

    fn on_size_line(&mut self, line: &[u8]) -> Result<(), AuthError> {
        let line = std::str::from_utf8(line).map_err(|_| incomplete("invalid chunk header"))?;
        let mut parts = line.split(';');
        let size = parts.next().unwrap_or("").trim();
        if size.is_empty() || size.len() > 16 || !size.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(incomplete("invalid chunk size"));
        }
        let size = u64::from_str_radix(size, 16).map_err(|_| incomplete("invalid chunk size"))?;
        let mut sig = None;
        for ext in parts {
            if let Some(v) = ext.trim().strip_prefix("chunk-signature=") {
                sig = Some(signature_hex(v).ok_or_else(|| incomplete("invalid chunk signature"))?);
            }
        }
        self.total = self
            .total
            .checked_add(size)
            .ok_or_else(|| incomplete("chunk too large"))?;
        if self.decoded_len.is_some_and(|want| self.total > want) {
            return Err(incomplete("body longer than x-amz-decoded-content-length"));
        }
        if let Some(signer) = &mut self.signer {
            self.chunk_sig = sig.ok_or_else(|| incomplete("missing chunk signature"))?;
            if size == 0 {
                let hashes = format!("{EMPTY_SHA256}\n{EMPTY_SHA256}");
                signer.check("AWS4-HMAC-SHA256-PAYLOAD", &hashes, &self.chunk_sig)?;
            }
        }
        self.state = if size == 0 {
            State::Trailer
        } else {
            State::Data(size)
        };
        Ok(())
    }

    fn on_trailer_line(&mut self, line: &[u8]) -> Result<(), AuthError> {
        let line = std::str::from_utf8(line).map_err(|_| incomplete("invalid trailer"))?;
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| incomplete("invalid trailer"))?;
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        if name == "x-amz-trailer-signature" {
            self.trailer_sig =
                Some(signature_hex(value).ok_or_else(|| incomplete("invalid trailer signature"))?);
            return Ok(());
        }
        if !self.trailer_ok {
            return Err(incomplete("unexpected trailing header"));
        }
        if name.is_empty() || self.trailers.len() >= MAX_TRAILERS {
            return Err(incomplete("invalid trailer"));
        }
        self.trailers.push((name, value.to_owned()));
        Ok(())
    }

    /// Verifies the trailer signature (signed trailer mode) and the decoded length.
    fn finish_trailers(&mut self) -> Result<(), AuthError> {
        if let (Some(signer), true) = (&mut self.signer, self.trailer_ok) {
            let sig = self
                .trailer_sig
                .ok_or_else(|| incomplete("missing trailer signature"))?;
            let mut sorted: Vec<_> = self.trailers.iter().collect();
            sorted.sort();
            let canonical: String = sorted.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
            let hash = hex::encode(Sha256::digest(canonical.as_bytes()));
            signer.check("AWS4-HMAC-SHA256-TRAILER", &hash, &sig)?;
        }
        if self.decoded_len.is_some_and(|want| want != self.total) {
            return Err(incomplete("body shorter than x-amz-decoded-content-length"));
        }
        self.state = State::Drain;
        Ok(())
    }
}

impl<S, E> Stream for Decoder<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    type Item = Result<Bytes, AuthError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if matches!(this.state, State::Done) {
                return Poll::Ready(None);
            }
            if this.buf.is_empty() && !this.eof {
                match Pin::new(&mut this.body).poll_next(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Some(Ok(frame))) => this.buf = frame,
                    Poll::Ready(Some(Err(e))) => {
                        this.state = State::Done;
                        return Poll::Ready(Some(Err(AuthError::BodyRead(e.to_string()))));
                    }
                    Poll::Ready(None) => this.eof = true,
                }
                continue;
            }
            match this.step() {
                Ok(Some(piece)) => return Poll::Ready(Some(Ok(piece))),
                Ok(None) => {}
                Err(e) => {
                    this.state = State::Done;
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::checksum::{ChecksumAlgo, ChecksumHasher};
    use super::super::sigv4::{hmac, verify, Verified};
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    const SIGS: [&str; 3] = [
        "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
        "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
        "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
    ];

    /// The seed request of the AWS "multiple chunks" example.
    fn aws_seed() -> Verified {
        let auth = "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class,Signature=4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9";
        let (parts, ()) = http::Request::builder()
            .method("PUT")
            .uri("/examplebucket/chunkObject.txt")
            .header("host", "s3.amazonaws.com")
            .header("x-amz-date", "20130524T000000Z")
            .header("x-amz-storage-class", "REDUCED_REDUNDANCY")
            .header("authorization", auth)
            .header("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD")
            .header("content-encoding", "aws-chunked")
            .header("x-amz-decoded-content-length", "66560")
            .header("content-length", "66824")
            .body(())
            .unwrap()
            .into_parts();
        let now = UNIX_EPOCH + Duration::from_secs(1_369_353_600);
        let secrets = |ak: &str| (ak == "AKIAIOSFODNN7EXAMPLE").then(|| SECRET.to_owned());
        verify(&parts, &secrets, "us-east-1", now).unwrap()
    }

    fn aws_body() -> Vec<u8> {
        let mut body = Vec::new();
        for (len, sig) in [(65536usize, SIGS[0]), (1024, SIGS[1]), (0, SIGS[2])] {
            body.extend_from_slice(format!("{len:x};chunk-signature={sig}\r\n").as_bytes());
            body.extend(std::iter::repeat_n(b'a', len));
            body.extend_from_slice(b"\r\n");
        }
        body
    }

    /// Polls the decoder to completion; returns the data, the error if any, and the trailers.
    fn decode(
        frames: Vec<Bytes>,
        payload: Payload,
        ctx: &SigningContext,
        len: Option<u64>,
    ) -> (Vec<u8>, Option<AuthError>, TrailerSlot) {
        let input =
            futures_util::stream::iter(frames.into_iter().map(Ok::<_, std::convert::Infallible>));
        let (stream, slot) = decode_aws_chunked(input, &payload, ctx, len);
        let mut stream = std::pin::pin!(stream);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut out = Vec::new();
        loop {
            match stream.as_mut().poll_next(&mut cx) {
                Poll::Ready(Some(Ok(b))) => out.extend_from_slice(&b),
                Poll::Ready(Some(Err(e))) => {
                    assert!(matches!(
                        stream.as_mut().poll_next(&mut cx),
                        Poll::Ready(None)
                    ));
                    return (out, Some(e), slot);
                }
                Poll::Ready(None) => return (out, None, slot),
                Poll::Pending => panic!("test input never pends"),
            }
        }
    }

    fn split(body: &[u8], cuts: &[usize]) -> Vec<Bytes> {
        let body = Bytes::copy_from_slice(body);
        let mut bounds = vec![0];
        bounds.extend_from_slice(cuts);
        bounds.push(body.len());
        bounds.windows(2).map(|w| body.slice(w[0]..w[1])).collect()
    }

    #[test]
    fn aws_chunked_example() {
        let v = aws_seed();
        assert_eq!(v.payload, Payload::StreamingSigned { trailer: false });
        let body = aws_body();
        assert_eq!(body.len(), 66824);
        let whole = Bytes::from(body.clone());
        let range = whole.as_ptr() as usize..whole.as_ptr() as usize + whole.len();

        // Whole body in one frame: data comes out as zero-copy slices of it.
        let input = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(whole.clone())]);
        let (stream, _) = decode_aws_chunked(input, &v.payload, &v.signing, Some(66560));
        let mut stream = std::pin::pin!(stream);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut total = 0;
        while let Poll::Ready(Some(piece)) = stream.as_mut().poll_next(&mut cx) {
            let piece = piece.unwrap();
            assert!(range.contains(&(piece.as_ptr() as usize)));
            assert!(piece.iter().all(|&b| b == b'a'));
            total += piece.len();
        }
        assert_eq!(total, 66560);

        // Every split point, plus a few uniform fragmentations (incl. 1 byte).
        let expected = vec![b'a'; 66560];
        for cut in 0..=body.len() {
            let (out, err, _) = decode(split(&body, &[cut]), v.payload, &v.signing, Some(66560));
            assert_eq!((err, out.len()), (None, 66560), "cut at {cut}");
        }
        for size in [1, 2, 3, 85, 4096, 65537] {
            let frames: Vec<Bytes> = body.chunks(size).map(Bytes::copy_from_slice).collect();
            let (out, err, _) = decode(frames, v.payload, &v.signing, Some(66560));
            assert_eq!(err, None, "frames of {size}");
            assert!(out == expected);
        }
        // Empty frames and a missing final CRLF are fine.
        let mut frames = split(&body[..body.len() - 2], &[10, 10, 10]);
        frames.push(Bytes::new());
        assert_eq!(decode(frames, v.payload, &v.signing, None).1, None);
    }

    #[test]
    fn aws_chunked_rejections() {
        let v = aws_seed();
        let body = aws_body();
        let run =
            |b: &[u8], len| decode(vec![Bytes::copy_from_slice(b)], v.payload, &v.signing, len);

        // Altered data in the first chunk: nothing of it is yielded.
        let mut bad = body.clone();
        bad[1000] = b'b';
        let (out, err, _) = run(&bad, None);
        assert_eq!((out.len(), err), (0, Some(AuthError::SignatureMismatch)));
        // Altered second chunk: the first chunk went out, then the error.
        let mut bad = body.clone();
        bad[body.len() - 100] = b'b';
        let (out, err, _) = run(&bad, None);
        assert_eq!(out.len(), 65536);
        let err = err.unwrap();
        assert_eq!((err.code(), err.status()), ("SignatureDoesNotMatch", 403));
        // Wrong signature on the final chunk, missing signature, bad size.
        let s = String::from_utf8(body.clone()).unwrap();
        let bad = s.replace(SIGS[2], &SIGS[2].replace('b', "c"));
        assert_eq!(
            run(bad.as_bytes(), None).1,
            Some(AuthError::SignatureMismatch)
        );
        let bad = s.replace(&format!(";chunk-signature={}", SIGS[1]), "");
        assert_eq!(
            run(bad.as_bytes(), None).1.unwrap().code(),
            "IncompleteBody"
        );
        let bad = s.replace("400;", "4g0;");
        assert_eq!(
            run(bad.as_bytes(), None).1.unwrap().code(),
            "IncompleteBody"
        );
        // Chunk data longer than declared: its signature no longer matches.
        let bad = s.replace("400;", "3ff;");
        assert_eq!(
            run(bad.as_bytes(), None).1,
            Some(AuthError::SignatureMismatch)
        );
        // Decoded length mismatch either way, data after the final chunk, truncation.
        for len in [66559, 66561] {
            assert_eq!(run(&body, Some(len)).1.unwrap().code(), "IncompleteBody");
        }
        let mut extra = body.clone();
        extra.extend_from_slice(b"x");
        assert_eq!(run(&extra, None).1.unwrap().code(), "IncompleteBody");
        for cut in [0, 50, 100, 66000, body.len() - 90] {
            assert_eq!(
                run(&body[..cut], None).1.unwrap().code(),
                "IncompleteBody",
                "cut {cut}"
            );
        }
        // An endless size line is cut off.
        let (_, err, _) = run(&[b'0'; 5000], None);
        assert_eq!(err.unwrap().code(), "IncompleteBody");
        // A body read error surfaces as IncompleteBody.
        let input = futures_util::stream::iter([Err::<Bytes, _>("reset")]);
        let (stream, _) = decode_aws_chunked(input, &v.payload, &v.signing, None);
        let mut stream = std::pin::pin!(stream);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let Poll::Ready(Some(Err(e))) = stream.as_mut().poll_next(&mut cx) else {
            panic!()
        };
        assert_eq!(e, AuthError::BodyRead("reset".into()));
    }

    fn crc32(data: &[u8]) -> String {
        let mut h = ChecksumHasher::new(ChecksumAlgo::Crc32);
        h.update(data);
        h.finish()
    }

    #[test]
    fn botocore_unsigned_trailer() {
        let ctx = aws_seed().signing;
        let payload = Payload::StreamingUnsigned { trailer: true };
        let data = b"hello world, this is tinydfs";
        let body = format!(
            "{:x}\r\n{}\r\n0\r\nx-amz-checksum-crc32:{}\r\n\r\n",
            data.len(),
            std::str::from_utf8(data).unwrap(),
            crc32(data)
        );
        let body = body.as_bytes();
        for i in 0..=body.len() {
            for j in i..=body.len() {
                let (out, err, slot) =
                    decode(split(body, &[i, j]), payload, &ctx, Some(data.len() as u64));
                assert_eq!((err, out.as_slice()), (None, &data[..]), "cuts {i},{j}");
                let want = slot.get("X-Amz-Checksum-CRC32").unwrap();
                let mut h = ChecksumHasher::new(ChecksumAlgo::Crc32);
                h.update(&out);
                h.verify(&want).unwrap();
            }
        }
        // Without the final CRLF, or even the last line's CRLF.
        for cut in [2, 4] {
            let (out, err, slot) =
                decode(split(&body[..body.len() - cut], &[]), payload, &ctx, None);
            assert_eq!((err, out.as_slice()), (None, &data[..]));
            assert_eq!(
                slot.all(),
                vec![("x-amz-checksum-crc32".to_owned(), crc32(data))]
            );
        }
        // Unsigned chunk data longer than declared.
        let bad = String::from_utf8(body.to_vec()).unwrap().replacen(
            &format!("{:x}", data.len()),
            "1b",
            1,
        );
        let (_, err, _) = decode(split(bad.as_bytes(), &[]), payload, &ctx, None);
        assert_eq!(err.unwrap().code(), "IncompleteBody");
        // A wrong trailing checksum is caught by the caller's check.
        let (out, _, slot) = decode(split(body, &[]), payload, &ctx, None);
        let mut h = ChecksumHasher::new(ChecksumAlgo::Crc32);
        h.update(&out[1..]);
        let e = h
            .verify(&slot.get("x-amz-checksum-crc32").unwrap())
            .unwrap_err();
        assert_eq!((e.code(), e.status()), ("BadDigest", 400));
    }

    /// Builds a signed aws-chunked body chained from `ctx`'s seed.
    fn signed_body(
        ctx: &SigningContext,
        chunks: &[&[u8]],
        trailer: Option<(&str, &str)>,
    ) -> Vec<u8> {
        let head = format!("{}\n{}\n", ctx.datetime, ctx.scope);
        let mut prev = hex::encode(ctx.seed);
        let mut body = Vec::new();
        for data in chunks.iter().chain([&&b""[..]]) {
            let hash = hex::encode(Sha256::digest(data));
            let sts = format!("AWS4-HMAC-SHA256-PAYLOAD\n{head}{prev}\n{EMPTY_SHA256}\n{hash}");
            prev = hex::encode(hmac(&ctx.key, sts.as_bytes()));
            body.extend_from_slice(
                format!("{:x};chunk-signature={prev}\r\n", data.len()).as_bytes(),
            );
            body.extend_from_slice(data);
            if !data.is_empty() {
                body.extend_from_slice(b"\r\n");
            }
        }
        if let Some((name, value)) = trailer {
            let hash = hex::encode(Sha256::digest(format!("{name}:{value}\n")));
            let sts = format!("AWS4-HMAC-SHA256-TRAILER\n{head}{prev}\n{hash}");
            let sig = hex::encode(hmac(&ctx.key, sts.as_bytes()));
            body.extend_from_slice(
                format!("{name}:{value}\r\nx-amz-trailer-signature:{sig}\r\n").as_bytes(),
            );
        }
        body.extend_from_slice(b"\r\n");
        body
    }

    #[test]
    fn signed_small_chunks_every_split() {
        let ctx = aws_seed().signing;
        let payload = Payload::StreamingSigned { trailer: false };
        let body = signed_body(&ctx, &[b"abc", b"defgh", b"i"], None);
        for i in 0..=body.len() {
            for j in (i..=body.len()).step_by(3) {
                let (out, err, _) = decode(split(&body, &[i, j]), payload, &ctx, Some(9));
                assert_eq!(
                    (err, out.as_slice()),
                    (None, &b"abcdefghi"[..]),
                    "cuts {i},{j}"
                );
            }
        }
        // Trailers are refused when none were announced.
        let with_trailer = signed_body(&ctx, &[b"abc"], Some(("x-amz-checksum-crc32", "AAAAAA==")));
        assert_eq!(
            decode(split(&with_trailer, &[]), payload, &ctx, None)
                .1
                .unwrap()
                .code(),
            "IncompleteBody"
        );
    }

    #[test]
    fn signed_trailer() {
        let ctx = aws_seed().signing;
        let payload = Payload::StreamingSigned { trailer: true };
        let crc = crc32(b"abcdef");
        let body = signed_body(
            &ctx,
            &[b"abc", b"def"],
            Some(("x-amz-checksum-crc32", &crc)),
        );
        for cut in 0..=body.len() {
            let (out, err, slot) = decode(split(&body, &[cut]), payload, &ctx, Some(6));
            assert_eq!((err, out.as_slice()), (None, &b"abcdef"[..]), "cut {cut}");
            assert_eq!(slot.get("x-amz-checksum-crc32"), Some(crc.clone()));
        }
        // A forged trailer value or a missing trailer signature is rejected.
        let s = String::from_utf8(body).unwrap();
        let forged = s.replace(&crc, "AAAAAA==");
        let (_, err, slot) = decode(split(forged.as_bytes(), &[]), payload, &ctx, None);
        assert_eq!(err, Some(AuthError::SignatureMismatch));
        assert_eq!(slot.all(), vec![]);
        let unsigned: String = s
            .lines()
            .filter(|l| !l.starts_with("x-amz-trailer-signature"))
            .map(|l| format!("{l}\n"))
            .collect();
        let (_, err, _) = decode(split(unsigned.as_bytes(), &[]), payload, &ctx, None);
        assert_eq!(err.unwrap().code(), "IncompleteBody");
    }
}
