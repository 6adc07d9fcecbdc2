//! Hedged requests: ask the next replica when the one asked has not answered for a while, and
//! take the first answer (reads go around a silent replica without waiting for its timeout).

use futures_util::StreamExt;
use std::time::Duration;

/// What [`hedged`] found.
#[derive(Debug, PartialEq)]
pub(super) struct Hedged<T, E> {
    /// How many attempts were started.
    pub asked: usize,
    /// The first success with its index, or the failures when all failed.
    pub answer: Result<(usize, T), Vec<E>>,
    /// Attempts started before the one that answered, still silent when it did: slower than
    /// a later-started replica by at least the hedge delay.
    pub outrun: Vec<usize>,
}

/// Starts `start(0)`; whenever nothing has answered for `hedge_after` (or every running attempt
/// failed), starts the next of `n`, and answers the first success with its index: a read goes
/// around a replica that is silent without waiting for it to time out. The attempts still
/// running are dropped.
pub(super) async fn hedged<F, Fut, T, E>(n: usize, hedge_after: Duration, start: F) -> Hedged<T, E>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let launch = |i| {
        let attempt = start(i);
        async move { (i, attempt.await) }
    };
    let mut running = futures_util::stream::FuturesUnordered::new();
    let mut errors = Vec::new();
    let mut failed = Vec::new();
    let mut started = 0;
    while started < n || !running.is_empty() {
        if running.is_empty() {
            running.push(launch(started));
            started += 1;
        }
        tokio::select! {
            Some((i, result)) = running.next() => match result {
                Ok(t) => {
                    let outrun = (0..i).filter(|j| !failed.contains(j)).collect();
                    return Hedged { asked: started, answer: Ok((i, t)), outrun };
                }
                Err(e) => {
                    errors.push(e);
                    failed.push(i);
                }
            },
            _ = tokio::time::sleep(hedge_after), if started < n => {
                running.push(launch(started));
                started += 1;
            }
        }
    }
    Hedged {
        asked: started,
        answer: Err(errors),
        outrun: Vec::new(),
    }
}
