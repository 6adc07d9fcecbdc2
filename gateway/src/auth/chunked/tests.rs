//! Unit tests of the `aws-chunked` decoder: AWS's signed-chunk example, botocore's unsigned
//! trailer, signed trailers, bodies cut at every byte, and what is refused.

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
    let run = |b: &[u8], len| decode(vec![Bytes::copy_from_slice(b)], v.payload, &v.signing, len);

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
        let (out, err, slot) = decode(split(&body[..body.len() - cut], &[]), payload, &ctx, None);
        assert_eq!((err, out.as_slice()), (None, &data[..]));
        assert_eq!(
            slot.all(),
            vec![("x-amz-checksum-crc32".to_owned(), crc32(data))]
        );
    }
    // Unsigned chunk data longer than declared.
    let bad =
        String::from_utf8(body.to_vec())
            .unwrap()
            .replacen(&format!("{:x}", data.len()), "1b", 1);
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
fn signed_body(ctx: &SigningContext, chunks: &[&[u8]], trailer: Option<(&str, &str)>) -> Vec<u8> {
    let head = format!("{}\n{}\n", ctx.datetime, ctx.scope);
    let mut prev = hex::encode(ctx.seed);
    let mut body = Vec::new();
    for data in chunks.iter().chain([&&b""[..]]) {
        let hash = hex::encode(Sha256::digest(data));
        let sts = format!("AWS4-HMAC-SHA256-PAYLOAD\n{head}{prev}\n{EMPTY_SHA256}\n{hash}");
        prev = hex::encode(hmac(&ctx.key, sts.as_bytes()));
        body.extend_from_slice(format!("{:x};chunk-signature={prev}\r\n", data.len()).as_bytes());
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
