//! The batching of small chunks ([`SmallWrites`]) with a stand-in for the pipeline: who carries a
//! batch, and what becomes of its chunks when the writer that took it goes away.

use super::*;
use tokio::sync::Semaphore;

/// Chunk `i`: `i + 1` bytes, so that each answer tells whose it is.
fn entry(i: u8) -> BatchEntry {
    let data = Bytes::from(vec![i; usize::from(i) + 1]);
    BatchEntry {
        id: ChunkId::in_lease(1),
        crc32c: crc32c::crc32c(&data),
        data,
    }
}

/// What a pipeline answers for `e`, stored on node 1.
fn reply(e: &BatchEntry) -> PutChunkReply {
    PutChunkReply {
        stored: vec![1],
        len: e.data.len() as u64,
        crc32c: e.crc32c,
    }
}

/// A stand-in pipeline: notes the size of each batch as it arrives, then waits for a permit in
/// `release` (or panics, if `panic`) before answering every chunk of it.
#[derive(Clone)]
struct Pipeline {
    seen: Arc<std::sync::Mutex<Vec<usize>>>,
    release: Arc<Semaphore>,
    panic: bool,
}

impl Pipeline {
    fn new(panic: bool) -> Self {
        Pipeline {
            seen: Default::default(),
            release: Arc::new(Semaphore::new(0)),
            panic,
        }
    }

    fn batches(&self) -> Vec<usize> {
        self.seen.lock().unwrap().clone()
    }

    /// Writes chunk `i` through `writes`, as a PUT handler would, on a task of its own.
    fn write(&self, writes: &Arc<SmallWrites>, i: u8) -> tokio::task::JoinHandle<Answer> {
        let (writes, p) = (writes.clone(), self.clone());
        tokio::spawn(async move {
            let send = |batch: Batch| {
                let p = p.clone();
                async move {
                    p.seen.lock().unwrap().push(batch.len());
                    p.release.acquire().await.unwrap().forget();
                    assert!(!p.panic, "the stand-in pipeline fails");
                    for (e, w) in batch {
                        let _ = w.send(Ok((Vec::new(), Ok(reply(&e)))));
                    }
                }
            };
            writes.write(entry(i), send).await
        })
    }
}

/// Waits (up to a generous bound, for a loaded machine) until `done` holds.
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Chunks 0 and 1 waiting with every slot busy, then a slot freed without waking them: the
/// next writer (chunk 2) finds it and takes all three. Answers the handle of that writer.
async fn three_in_one_batch(
    writes: &Arc<SmallWrites>,
    p: &Pipeline,
) -> (
    [tokio::task::JoinHandle<Answer>; 2],
    tokio::task::JoinHandle<Answer>,
) {
    writes.0.lock().in_flight = BATCHES_IN_FLIGHT;
    let waiting = [p.write(writes, 0), p.write(writes, 1)];
    until("two chunks queued", || writes.0.lock().waiting.len() == 2).await;
    writes.0.lock().in_flight -= 1;
    let taker = p.write(writes, 2);
    until("the batch at the pipeline", || p.batches() == [3]).await;
    (waiting, taker)
}

#[tokio::test]
async fn a_lone_write_goes_at_once_in_a_batch_of_its_own() {
    let writes = Arc::new(SmallWrites::default());
    let p = Pipeline::new(false);
    p.release.add_permits(1);
    let (_, answer) = p.write(&writes, 7).await.unwrap().unwrap();
    assert_eq!(answer.unwrap().len, 8);
    assert_eq!(p.batches(), [1]);
    until("the slot given back", || writes.0.lock().in_flight == 0).await;
}

#[tokio::test]
async fn a_cancelled_writer_fails_none_of_the_chunks_its_batch_carries() {
    let writes = Arc::new(SmallWrites::default());
    let p = Pipeline::new(false);
    let (waiting, taker) = three_in_one_batch(&writes, &p).await;
    // The writer that took the batch goes away (its S3 client disconnected: hyper drops the
    // request) while the batch is at the pipeline.
    taker.abort();
    assert!(taker.await.unwrap_err().is_cancelled());
    p.release.add_permits(1);
    for (i, w) in waiting.into_iter().enumerate() {
        let (_, answer) = w.await.unwrap().unwrap();
        assert_eq!(answer.unwrap().len, i as u64 + 1, "chunk {i}");
    }
    assert_eq!(p.batches(), [3], "the batch went once");
    // Its slot is given back when its task ends: only the other one is still taken.
    until("the slot given back", || {
        writes.0.lock().in_flight == BATCHES_IN_FLIGHT - 1
    })
    .await;
}

#[tokio::test]
async fn a_batch_that_dies_answers_its_chunks_unavailable_and_gives_its_slot_back() {
    let writes = Arc::new(SmallWrites::default());
    let p = Pipeline::new(true);
    let (waiting, taker) = three_in_one_batch(&writes, &p).await;
    p.release.add_permits(1);
    for w in waiting.into_iter().chain([taker]) {
        let e = w.await.unwrap().unwrap_err();
        assert_eq!(e.status, 503, "{e:?}");
    }
    until("the slot given back", || {
        writes.0.lock().in_flight == BATCHES_IN_FLIGHT - 1
    })
    .await;
}

#[tokio::test]
async fn a_hedged_read_goes_around_a_silent_replica() {
    // The first replica never answers; the second, asked after the hedge delay, does.
    let got = hedged(3, Duration::from_millis(20), |i| async move {
        if i == 0 {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        Ok::<_, String>(format!("replica {i}"))
    })
    .await;
    assert_eq!(got.answer, Ok((1, "replica 1".to_string())));
    assert_eq!(got.asked, 2, "the third replica is not asked");
    assert_eq!(got.outrun, vec![0], "the silent replica is named");
}

#[tokio::test]
async fn a_hedged_read_asks_the_next_replica_at_once_when_one_fails() {
    let got = hedged(3, Duration::from_secs(3600), |i| async move {
        if i < 2 {
            Err(format!("replica {i} failed"))
        } else {
            Ok(i)
        }
    })
    .await;
    assert_eq!(got.answer, Ok((2, 2)));
    assert_eq!(got.asked, 3);
    assert!(got.outrun.is_empty(), "failed replicas were not outrun");
    let got = hedged(2, Duration::from_secs(3600), |i| async move {
        Err::<(), _>(format!("replica {i} failed"))
    })
    .await;
    assert_eq!(got.asked, 2);
    assert_eq!(
        got.answer,
        Err(vec![
            "replica 0 failed".to_string(),
            "replica 1 failed".to_string()
        ])
    );
}
