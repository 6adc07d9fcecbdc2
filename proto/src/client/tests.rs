//! The clients against stand-ins: the master client's write batching, and the typed failures
//! of chunk calls.

use super::*;
use axum::routing::post;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

#[derive(Default)]
struct Seen {
    singles: AtomicUsize,
    batches: AtomicUsize,
    batched_writes: AtomicUsize,
    not_found: AtomicUsize,
}

/// The bucket a write names, answered back as `Created(true)` for "b-<even>", `Done` else.
fn answer(req: &WriteRequest) -> Result<MetaReply, MetaError> {
    match &req.write {
        MetaWrite::CreateBucket { bucket, .. } => Ok(match bucket.trim_start_matches("b-") {
            n if n.parse::<u32>().is_ok_and(|n| n % 2 == 0) => MetaReply::Created(true),
            _ => MetaReply::Done,
        }),
        _ => Err(MetaError::BadRequest("unexpected".into())),
    }
}

/// A stand-in master speaking the write API; `batches` says whether it has the batch path
/// (an older master does not). Single writes take 100 ms, so that writers queue up.
async fn master(batches: bool) -> (String, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let (s1, s2, s3) = (seen.clone(), seen.clone(), seen.clone());
    let mut app = axum::Router::new().route(
        paths::WRITE,
        post(move |body: axum::body::Bytes| async move {
            s1.singles.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await;
            let req: WriteRequest = serde_json::from_slice(&body).unwrap();
            serde_json::to_vec(&answer(&req)).unwrap()
        }),
    );
    if batches {
        app = app.route(
            paths::WRITE_BATCH,
            post(move |body: axum::body::Bytes| async move {
                let reqs: Vec<WriteRequest> = serde_json::from_slice(&body).unwrap();
                s2.batches.fetch_add(1, Ordering::SeqCst);
                s2.batched_writes.fetch_add(reqs.len(), Ordering::SeqCst);
                let answers: Vec<_> = reqs.iter().map(answer).collect();
                serde_json::to_vec(&Ok::<_, MetaError>(answers)).unwrap()
            }),
        );
    }
    let app = app.fallback(move || async move {
        s3.not_found.fetch_add(1, Ordering::SeqCst);
        axum::http::StatusCode::NOT_FOUND
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(l, app).await });
    (addr, seen)
}

async fn write_many(c: &MasterClient, n: u32) -> Vec<Result<MetaReply, MetaError>> {
    let writes = (0..n).map(|i| {
        c.write(MetaWrite::CreateBucket {
            bucket: format!("b-{i}"),
            owner: "me".into(),
        })
    });
    futures_util::future::join_all(writes).await
}

fn expected(n: u32) -> Vec<Result<MetaReply, MetaError>> {
    (0..n)
        .map(|i| {
            Ok(if i % 2 == 0 {
                MetaReply::Created(true)
            } else {
                MetaReply::Done
            })
        })
        .collect()
}

#[tokio::test]
async fn concurrent_writes_travel_in_batches_and_each_gets_its_own_answer() {
    let (addr, seen) = master(true).await;
    let c = MasterClient::new(vec![addr], "s".into());
    assert_eq!(
        format!("{:?}", write_many(&c, 20).await),
        format!("{:?}", expected(20))
    );
    // The first writes find free slots and go alone; the rest wait and go together.
    let (singles, batches) = (
        seen.singles.load(Ordering::SeqCst),
        seen.batches.load(Ordering::SeqCst),
    );
    assert!(batches >= 1, "{singles} singles, {batches} batches");
    assert_eq!(singles + seen.batched_writes.load(Ordering::SeqCst), 20);
}

#[tokio::test]
async fn a_master_without_batches_gets_every_write_alone() {
    let (addr, seen) = master(false).await;
    let c = MasterClient::new(vec![addr], "s".into());
    assert_eq!(
        format!("{:?}", write_many(&c, 8).await),
        format!("{:?}", expected(8))
    );
    assert_eq!(seen.singles.load(Ordering::SeqCst), 8);
    assert_eq!(seen.not_found.load(Ordering::SeqCst), 1, "one batch tried");
    // And from then on, without trying batches again for a while.
    assert_eq!(
        format!("{:?}", write_many(&c, 4).await),
        format!("{:?}", expected(4))
    );
    assert_eq!(seen.singles.load(Ordering::SeqCst), 12);
    assert_eq!(seen.not_found.load(Ordering::SeqCst), 1);
}

/// A stand-in chunkserver that is full: every chunk write is answered 507.
async fn full_chunkserver() -> NodeAddr {
    let app = axum::Router::new()
        .route(
            &format!("{}/{{id}}", paths::CHUNK),
            axum::routing::put(|| async {
                (axum::http::StatusCode::INSUFFICIENT_STORAGE, "disk full")
            }),
        )
        .fallback(|| async { axum::http::StatusCode::NOT_FOUND });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(l, app).await });
    NodeAddr { id: 1, addr }
}

#[tokio::test]
async fn chunk_calls_fail_with_the_peers_status() {
    let node = full_chunkserver().await;
    let c = ChunkClient::new("s".into());
    let id = ChunkId::in_lease(1);
    let e = c
        .put(&node, &[], id, reqwest::Body::from("x"), "r")
        .await
        .unwrap_err();
    assert!(e.is_insufficient_storage() && !e.is_not_found(), "{e}");
    assert!(e.to_string().contains("disk full"), "{e}");
    // A node without the batch path (older than batches) answers 404.
    let e = c
        .put_batch(&node, &[], bytes::Bytes::new(), "r")
        .await
        .unwrap_err();
    assert!(e.is_not_found(), "{e}");
    // Nobody listening: no status, a transport failure.
    let gone = NodeAddr {
        id: 2,
        addr: "127.0.0.1:1".into(),
    };
    let e = c.get(&gone, id, 0, 1, "r").await.unwrap_err();
    assert!(
        e.status().is_none() && matches!(e, CallError::Transport { .. }),
        "{e}"
    );
}

/// A stand-in master whose batch answers wait for permits in `release`; `seen` counts the
/// requests as they arrive, before they wait.
async fn held_master() -> (String, Arc<Seen>, Arc<tokio::sync::Semaphore>) {
    let seen = Arc::new(Seen::default());
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let (s1, s2, r) = (seen.clone(), seen.clone(), release.clone());
    let app = axum::Router::new()
        .route(
            paths::WRITE,
            post(move |body: axum::body::Bytes| async move {
                s1.singles.fetch_add(1, Ordering::SeqCst);
                let req: WriteRequest = serde_json::from_slice(&body).unwrap();
                serde_json::to_vec(&answer(&req)).unwrap()
            }),
        )
        .route(
            paths::WRITE_BATCH,
            post(move |body: axum::body::Bytes| async move {
                let reqs: Vec<WriteRequest> = serde_json::from_slice(&body).unwrap();
                s2.batches.fetch_add(1, Ordering::SeqCst);
                s2.batched_writes.fetch_add(reqs.len(), Ordering::SeqCst);
                r.acquire().await.unwrap().forget();
                let answers: Vec<_> = reqs.iter().map(answer).collect();
                serde_json::to_vec(&Ok::<_, MetaError>(answers)).unwrap()
            }),
        );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(l, app).await });
    (addr, seen, release)
}

/// Waits (up to a generous bound, for a loaded machine) until `done` holds.
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn create(c: &MasterClient, i: u32) -> tokio::task::JoinHandle<Result<MetaReply, MetaError>> {
    let c = c.clone();
    tokio::spawn(async move {
        c.write(MetaWrite::CreateBucket {
            bucket: format!("b-{i}"),
            owner: "me".into(),
        })
        .await
    })
}

#[tokio::test]
async fn a_cancelled_writer_fails_none_of_the_writes_its_batch_carries() {
    let (addr, seen, release) = held_master().await;
    let c = MasterClient::new(vec![addr], "s".into());
    // Both slots busy, as if with batches of other writers, so that writes 0 and 1 wait.
    c.inner.queue().in_flight = WRITE_BATCHES_IN_FLIGHT;
    let waiting = [create(&c, 0), create(&c, 1)];
    until("two writes queued", || c.inner.queue().waiting.len() == 2).await;
    // A slot comes free without waking them: write 2 finds it and takes all three.
    c.inner.queue().in_flight -= 1;
    let taker = create(&c, 2);
    until("the batch at the master", || {
        seen.batches.load(Ordering::SeqCst) == 1
    })
    .await;
    // The caller that took the batch goes away (its S3 client disconnected) while it is out.
    taker.abort();
    assert!(taker.await.unwrap_err().is_cancelled());
    release.add_permits(1);
    let [w0, w1] = waiting;
    assert_eq!(
        format!("{:?}", [w0.await.unwrap(), w1.await.unwrap()]),
        format!("{:?}", expected(2))
    );
    assert_eq!(seen.batches.load(Ordering::SeqCst), 1);
    assert_eq!(seen.batched_writes.load(Ordering::SeqCst), 3);
    assert_eq!(seen.singles.load(Ordering::SeqCst), 0);
    // The batch's slot is given back when its task ends: only the other one is still taken.
    until("the slot given back", || {
        c.inner.queue().in_flight == WRITE_BATCHES_IN_FLIGHT - 1
    })
    .await;
}

/// A stand-in master answering reads with `answer`, after `delay`.
async fn read_master(
    answer: Result<MetaReply, MetaError>,
    delay: Duration,
    asked: Arc<AtomicUsize>,
) -> String {
    let app = axum::Router::new().route(
        paths::READ,
        post(move || async move {
            asked.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(delay).await;
            serde_json::to_vec(&answer).unwrap()
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(l, app).await });
    addr
}

#[tokio::test]
async fn a_call_goes_around_a_leader_without_quorum_and_a_silent_master() {
    let asked: Vec<Arc<AtomicUsize>> = (0..3).map(|_| Arc::default()).collect();
    // A leader that lost its quorum names no leader; a paused master never answers.
    let lost = read_master(
        Err(MetaError::NotLeader(None)),
        Duration::ZERO,
        asked[0].clone(),
    );
    let silent = read_master(
        Ok(MetaReply::Done),
        Duration::from_secs(3600),
        asked[1].clone(),
    )
    .await;
    let good = read_master(
        Ok(MetaReply::Created(true)),
        Duration::ZERO,
        asked[2].clone(),
    )
    .await;
    let c = MasterClient::new(vec![lost.await, silent, good], "s".into());
    let read = || {
        c.read(MetaRead::GetObject {
            bucket: "b".into(),
            key: "k".into(),
        })
    };
    // Within the retry window: a silent master costs one attempt timeout, not the window.
    let got = read().await.expect("the third master answers");
    assert!(matches!(got, MetaReply::Created(true)), "{got:?}");
    for (i, a) in asked.iter().enumerate() {
        assert!(a.load(Ordering::SeqCst) >= 1, "master {i} was not asked");
    }
    // The client now holds the answering master.
    read().await.unwrap();
    assert_eq!(asked[2].load(Ordering::SeqCst), 2);
}
