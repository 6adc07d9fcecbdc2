//! The `aws-chunked` decoder over arbitrary bodies cut into arbitrary frames, signed and
//! unsigned: it ends with data or an error, never a panic, and never yields more than it was
//! given.
#![no_main]

use bytes::Bytes;
use futures_util::Stream;
use libfuzzer_sys::fuzz_target;
use std::task::{Context, Poll};
use tinydfs_gateway::auth::{decode_aws_chunked, Payload, SigningContext};

fuzz_target!(|data: &[u8]| {
    // First byte: mode and frame size; the rest is the body.
    let Some((&control, body)) = data.split_first() else {
        return;
    };
    let payload = match control & 3 {
        0 => Payload::StreamingSigned { trailer: false },
        1 => Payload::StreamingSigned { trailer: true },
        _ => Payload::StreamingUnsigned { trailer: true },
    };
    let frame = usize::from(control >> 2) + 1;
    let frames: Vec<Result<Bytes, std::convert::Infallible>> = body
        .chunks(frame)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let ctx = SigningContext::new(
        [7; 32],
        "20240102T030405Z".into(),
        "20240102/us-east-1/s3/aws4_request".into(),
        [9; 32],
    );
    let len = (control & 4 != 0).then_some(body.len() as u64 / 2);
    let (stream, _trailers) =
        decode_aws_chunked(futures_util::stream::iter(frames), &payload, &ctx, len);
    let mut stream = std::pin::pin!(stream);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut out = 0usize;
    loop {
        match stream.as_mut().poll_next(&mut cx) {
            Poll::Ready(Some(Ok(b))) => out += b.len(),
            Poll::Ready(Some(Err(_))) | Poll::Ready(None) => break,
            Poll::Pending => unreachable!("the input never pends"),
        }
    }
    assert!(out <= body.len());
});
