//! Read-ahead that costs nothing for small answers: a producer that sends its items into a
//! bounded channel is driven inside its consumer's task while the answer is small, and moved to a
//! task of its own (running ahead of the consumer, on another core) once the channel fills up.
//!
//! ```text
//!   poll_next ─► poll the producer (same task) ─► it sends items, finishes, or waits
//!        │                                         channel full while it waits: a large answer
//!        │                                         ─► tokio::spawn(producer): reads ahead from now on
//!        ▼
//!   the next item of the channel (None once the producer is done and the channel drained)
//! ```
//!
//! A one-series Series call then costs no spawn, no cross-task wake-up and no idle worker thread
//! woken to steal it, on either side of the gRPC hop; a large one still overlaps producing with
//! consuming. The partitions of a query plan use it the same way (`plan::partitions`): a query
//! over a few series runs in its request's task, a large one on one task per partition. Moving a
//! half-polled producer to a task is sound: the spawned task polls it at once, and every future it
//! waits on registers the new task's waker on that poll.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use tokio::sync::mpsc::Receiver;

type Producer = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// The items `producer` sends on the channel whose receiver is `rx` (see the module docs). The
/// producer holds every sender of the channel and ends by dropping them; dropping the stream drops
/// the producer (or, once it runs on its own task, closes the channel, which the producer sees on
/// its next send).
pub(crate) fn drive<T: Send + 'static>(
    producer: impl Future<Output = ()> + Send + 'static,
    rx: Receiver<T>,
) -> impl Stream<Item = T> + Send + 'static {
    Drive { producer: Some(Box::pin(producer)), rx }
}

struct Drive<T> {
    /// The producer while it runs in this task.
    producer: Option<Producer>,
    rx: Receiver<T>,
}

impl<T: Send + 'static> Stream for Drive<T> {
    type Item = T;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let this = &mut *self;
        if let Some(p) = this.producer.as_mut() {
            if p.as_mut().poll(cx).is_ready() {
                this.producer = None;
            } else if this.rx.len() >= this.rx.max_capacity()
                && let Some(p) = this.producer.take()
            {
                tokio::spawn(p);
            }
        }
        if this.producer.is_some() {
            // Only this poll puts items in the channel while the producer runs here, so waiting
            // on the channel would only wake this task from inside its own poll (a self-wake that
            // costs a trip through the scheduler and an idle worker woken); the producer has
            // registered for whatever it waits on.
            return match this.rx.try_recv() {
                Ok(item) => Poll::Ready(Some(item)),
                Err(_) => Poll::Pending,
            };
        }
        this.rx.poll_recv(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use futures::StreamExt;

    use super::*;

    /// Items come in order whether the producer stays in the consumer's task or moves to its own,
    /// and a dropped stream stops the producer.
    #[tokio::test]
    async fn small_answers_inline_large_ones_ahead_and_drop_stops() {
        for n in [0usize, 1, 3, 4, 5, 1000] {
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            let producer = async move {
                for i in 0..n {
                    if tx.send(i).await.is_err() {
                        return;
                    }
                    // a producer that also waits on something else now and then
                    if i % 7 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            };
            let got: Vec<usize> = drive(producer, rx).collect().await;
            assert_eq!(got, (0..n).collect::<Vec<_>>());
        }

        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let producer = async move {
            let _done = done_tx; // dropped when the producer ends
            let mut i = 0u64;
            while tx.send(i).await.is_ok() {
                i += 1;
            }
        };
        let mut s = Box::pin(drive(producer, rx));
        assert_eq!(s.next().await, Some(0));
        assert_eq!(s.next().await, Some(1));
        drop(s);
        // the producer (inline or spawned) ends: its end drops the oneshot sender
        assert!(done_rx.await.is_err());
    }
}
