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
            // The signature is taken as written: trimming it would let an altered byte after
            // it (a CR or LF changed to other whitespace) pass unseen.
            if let Some(v) = ext.strip_prefix("chunk-signature=") {
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
mod tests;
