//! How a query uses several cores: a scan deals its batches out to partitions, the streaming
//! nodes above it run once per partition, each on a task of its own, and [`PromMergeExec`] puts the
//! partitions' batches back into the scan's order where a node needs its input whole.
//!
//! ```text
//!                      SeriesSource stream (series in label order)
//!                                  │ cut into batches of whole series
//!        ┌─────────────────────────┴─────────────────────────┐   batch k -> partition k mod n
//!   partition 0: batches 0, 2, 4 ...              partition 1: batches 1, 3, 5 ...
//!   PromInstantSelect / PromRangeFunc /           (the same nodes, on another task)
//!   PromInstantFn / vector op scalar (task 0)
//!        └─────────────────────────┬─────────────────────────┘
//!                          PromMergeExec: batch 0 from partition 0, batch 1 from
//!                          partition 1, ... (the scan's order, series in label order)
//!                                  ▼
//!                PromAggregate, vector op vector, ... and the result
//! ```
//!
//! A source that deals its select itself ([`engine::SeriesSource::select_dealt`]: the bucket, by
//! label ranges read and merged per partition) hands partition `p` the batches `p`, `p + n`, ...
//! directly, so the reading and merging run on the partitions' tasks as well; the scan then maps
//! each source batch to one batch and the picture above holds with the dealing done by the source.
//!
//! Nothing of this spawns a task before it pays: the scan's stream is pulled by whichever partition
//! needs the next batch, and a partition moves to a task of its own only once it has a batch ready
//! that the merge has not taken yet, so a query over a few series runs in its request's task.
//!
//! Series are independent in the streaming nodes, and each of them maps one input batch to
//! exactly one output batch, so taking the batches back in turn restores the order a
//! single-partition plan has. Everything above the merge sees exactly the input it would see
//! with one partition, in the same order: aggregations fold the same series in the same order,
//! so sums and means stay bit-for-bit Prometheus's (its Kahan sums depend on the order), and
//! instant results keep their order.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use arrow::array::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet};
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, Distribution, ExecutionPlan, PlanProperties};
use engine::exec::{incremental_properties, record_stream};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;

/// Samples per batch a partitioned scan deals out (whole series; a longer series goes alone).
pub(crate) const PARTITION_BATCH_SAMPLES: usize = 1 << 16;

/// The number of partitions (`EngineOptions::partitions`) when none is configured: the
/// machine's cores.
pub(crate) fn default_partitions() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Partitions of an execution plan's output.
pub(crate) fn partition_count(plan: &Arc<dyn ExecutionPlan>) -> usize {
    plan.properties().partitioning.partition_count()
}

/// `plan` with its partitions merged back into one in order, unless it has one.
pub(crate) fn merged(plan: Arc<dyn ExecutionPlan>) -> Arc<dyn ExecutionPlan> {
    if partition_count(&plan) > 1 { Arc::new(PromMergeExec::new(plan)) } else { plan }
}

type Item = datafusion::error::Result<RecordBatch>;

/// Deals the items of one stream out to `n` partitions in turn (item k to partition k mod n),
/// without a task of its own: whichever partition is polled pulls the stream, one item ahead per
/// partition. A query over a few series then runs wholly in its consumer's task (no spawn, no
/// cross-task wake-up); partitions running on tasks of their own share the pulling. The stream
/// stops when a partition's consumer goes away or after an error (which goes to the partition
/// whose turn it was).
pub(crate) struct RoundRobin {
    state: Mutex<DealState>,
    /// Partitions waiting for the stream or for a full slot to drain.
    waiters: Arc<Waiters>,
    /// The waker the stream is polled with: wakes every waiting partition.
    waker: Waker,
}

struct DealState {
    /// The stream, until it ends, fails or a partition's consumer goes away.
    source: Option<BoxStream<'static, Item>>,
    /// Items pulled so far (the next one goes to partition `pulled % n`).
    pulled: usize,
    /// The item pulled for each partition and not yet taken.
    slots: Vec<Option<Item>>,
    /// Partitions handed out.
    taken: Vec<bool>,
    /// A partition waits for a full slot to drain.
    blocked: bool,
}

/// Wakers of the partitions waiting on a [`RoundRobin`]; as a waker itself (the one the stream is
/// polled with) it wakes them all.
#[derive(Default)]
struct Waiters {
    wakers: Mutex<Vec<Waker>>,
}

impl Waiters {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Waker>> {
        self.wakers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn register(&self, w: &Waker) {
        let mut ws = self.lock();
        if !ws.iter().any(|x| x.will_wake(w)) {
            ws.push(w.clone());
        }
    }

    fn unregister(&self, w: &Waker) {
        self.lock().retain(|x| !x.will_wake(w));
    }

    fn wake_all(&self) {
        let ws = std::mem::take(&mut *self.lock());
        ws.into_iter().for_each(Waker::wake);
    }
}

impl Wake for Waiters {
    fn wake(self: Arc<Self>) {
        self.wake_all();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.wake_all();
    }
}

impl fmt::Debug for RoundRobin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoundRobin").finish_non_exhaustive()
    }
}

impl RoundRobin {
    /// Deals `source` out to `n` partitions.
    pub(crate) fn new(source: BoxStream<'static, Item>, n: usize) -> Self {
        let n = n.max(1);
        let state = DealState {
            source: Some(source),
            pulled: 0,
            slots: (0..n).map(|_| None).collect(),
            taken: vec![false; n],
            blocked: false,
        };
        let waiters: Arc<Waiters> = Arc::default();
        RoundRobin { state: Mutex::new(state), waker: Waker::from(Arc::clone(&waiters)), waiters }
    }

    /// The items of partition `p`; each partition can be taken once.
    pub(crate) fn partition(self: &Arc<Self>, p: usize) -> datafusion::error::Result<BoxStream<'static, Item>> {
        let mut st = self.lock();
        match st.taken.get_mut(p) {
            Some(t) if !*t => *t = true,
            _ => {
                return Err(DataFusionError::Internal(format!(
                    "partition {p} of a scan executed twice or out of range"
                )));
            }
        }
        Ok(Partition { deal: Arc::clone(self), p }.boxed())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DealState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next item of partition `p`, pulling the stream while the items it yields go to
    /// partitions whose slot is free.
    fn poll_partition(&self, p: usize, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        let mut st = self.lock();
        loop {
            if let Some(item) = st.slots[p].take() {
                if std::mem::take(&mut st.blocked) {
                    drop(st);
                    self.waiters.wake_all();
                }
                return Poll::Ready(Some(item));
            }
            let n = st.slots.len();
            let to = st.pulled % n;
            if st.slots[to].is_some() {
                // The next item's partition has not taken its last one yet.
                st.blocked = true;
                self.waiters.register(cx.waker());
                return Poll::Pending;
            }
            let st = &mut *st;
            let Some(source) = st.source.as_mut() else { return Poll::Ready(None) };
            // Registered before the poll, so a wake-up during it is not lost (a stream that
            // yields wakes at once); taken back when an item came, so that handing it out does
            // not wake this very task.
            self.waiters.register(cx.waker());
            let Poll::Ready(next) = source.poll_next_unpin(&mut Context::from_waker(&self.waker)) else {
                return Poll::Pending;
            };
            self.waiters.unregister(cx.waker());
            match next {
                None => {
                    st.source = None;
                    self.waiters.wake_all();
                }
                Some(item) => {
                    if item.is_err() {
                        st.source = None;
                    }
                    st.slots[to] = Some(item);
                    st.pulled += 1;
                    if to != p || st.source.is_none() {
                        self.waiters.wake_all();
                    }
                }
            }
        }
    }

    /// Partition `p`'s consumer went away: the stream stops (the other partitions still get
    /// the items pulled for them, then their end).
    fn leave(&self, p: usize) {
        let mut st = self.lock();
        st.slots[p] = None;
        if st.source.take().is_some() {
            drop(st);
            self.waiters.wake_all();
        }
    }
}

/// One partition of a [`RoundRobin`].
struct Partition {
    deal: Arc<RoundRobin>,
    p: usize,
}

impl Stream for Partition {
    type Item = Item;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        self.deal.poll_partition(self.p, cx)
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        self.deal.leave(self.p);
    }
}

/// Merges the partitions of its input into one stream in the order the input's scan dealt
/// them: batch 0 from partition 0, batch 1 from partition 1, and so on. Each partition runs one
/// batch ahead, on a task of its own once a batch of it waits for the merge.
///
/// The order is right because every node between the scan and the merge maps one input batch
/// to one output batch; a partition that ends while another still has batches breaks that, and
/// the merge fails the query rather than reorder silently.
#[derive(Debug)]
pub(crate) struct PromMergeExec {
    input: Arc<dyn ExecutionPlan>,
    props: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl PromMergeExec {
    /// The in-order merge of `input`'s partitions.
    pub(crate) fn new(input: Arc<dyn ExecutionPlan>) -> Self {
        let props = incremental_properties(input.schema(), 1);
        PromMergeExec { input, props, metrics: ExecutionPlanMetricsSet::new() }
    }
}

impl DisplayAs for PromMergeExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "PromMergeExec: {} partitions, in scan order", partition_count(&self.input))
    }
}

/// Drives `s` one batch ahead of the consumer: in the consumer's task while that is enough (a
/// query over a few series), on a task of its own once a batch waits for the consumer
/// (`crate::ahead`).
fn one_ahead(mut s: SendableRecordBatchStream) -> impl Stream<Item = Item> + Send + 'static {
    let (tx, rx) = mpsc::channel::<Item>(1);
    let producer = async move {
        while let Some(item) = s.next().await {
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                break;
            }
        }
    };
    crate::ahead::drive(producer, rx)
}

impl ExecutionPlan for PromMergeExec {
    fn name(&self) -> &str {
        "PromMergeExec"
    }
    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }
    fn required_input_distribution(&self) -> Vec<Distribution> {
        vec![Distribution::UnspecifiedDistribution]
    }
    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }
    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }
    engine::plan_without_expressions!();
    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        match children.pop() {
            Some(c) if children.is_empty() => Ok(Arc::new(PromMergeExec::new(c))),
            _ => Err(DataFusionError::Internal("PromMergeExec takes one input".into())),
        }
    }
    engine::plan_metrics!(metrics);
    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> datafusion::error::Result<SendableRecordBatchStream> {
        let n = partition_count(&self.input);
        let mut parts = Vec::with_capacity(n);
        for p in 0..n {
            parts.push(one_ahead(self.input.execute(p, Arc::clone(&context))?).boxed());
        }
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let merged = futures::stream::unfold((parts, 0usize, false), move |(mut parts, turn, done)| {
            let baseline = baseline.clone();
            async move {
                if done {
                    return None;
                }
                let n = parts.len();
                match parts[turn % n].next().await {
                    Some(Ok(b)) => {
                        baseline.record_output(b.num_rows());
                        Some((Ok(b), (parts, turn + 1, false)))
                    }
                    Some(Err(e)) => Some((Err(e), (parts, turn, true))),
                    None => {
                        // The dealt sequence ended: every other partition must have ended too.
                        for (p, s) in parts.iter_mut().enumerate() {
                            if p != turn % n && s.next().await.is_some() {
                                let e = DataFusionError::Internal(format!(
                                    "partition {p} has batches after partition {} ended",
                                    turn % n
                                ));
                                return Some((Err(e), (parts, turn, true)));
                            }
                        }
                        None
                    }
                }
            }
        });
        Ok(record_stream(self.input.schema(), merged))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::Duration;

    use arrow::array::{AsArray, Int64Array};
    use arrow::datatypes::Int64Type;

    use super::*;

    fn batch(k: i64) -> Item {
        let schema = Arc::new(arrow::datatypes::Schema::new(vec![arrow::datatypes::Field::new(
            "k",
            arrow::datatypes::DataType::Int64,
            false,
        )]));
        Ok(RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![k]))]).unwrap())
    }

    fn key(item: Item) -> i64 {
        item.unwrap().column(0).as_primitive::<Int64Type>().value(0)
    }

    /// A source of `items` batches that waits on another task now and then (so pulling it
    /// returns Pending and the partitions must be woken).
    fn slow_source(items: i64) -> BoxStream<'static, Item> {
        let (tx, mut rx) = mpsc::channel(1);
        tokio::spawn(async move {
            for k in 0..items {
                if k % 3 == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                if tx.send(batch(k)).await.is_err() {
                    return;
                }
            }
        });
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
    }

    /// Consumed in turn from one task, as the merge does, partition `p` gets items p, p + n, ...
    #[tokio::test]
    async fn partitions_taken_in_turn_from_one_task_get_every_nth_item() {
        for n in 1..=4usize {
            for items in [0i64, 1, 2, 5, 9] {
                let deal = Arc::new(RoundRobin::new(futures::stream::iter((0..items).map(batch)).boxed(), n));
                let mut parts: Vec<_> = (0..n).map(|p| deal.partition(p).unwrap()).collect();
                for k in 0..items {
                    assert_eq!(key(parts[k as usize % n].next().await.unwrap()), k, "n={n} items={items}");
                }
                for p in &mut parts {
                    assert!(p.next().await.is_none());
                }
            }
        }
    }

    /// Each partition on a task of its own, over a source that keeps waiting: every item arrives
    /// once, at its partition, in order (no wake-up lost while partitions wait on each other).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn partitions_on_their_own_tasks_share_the_pulling() {
        for n in [2usize, 3] {
            let items = 50i64;
            let deal = Arc::new(RoundRobin::new(slow_source(items), n));
            let tasks: Vec<_> = (0..n)
                .map(|p| {
                    let mut s = deal.partition(p).unwrap();
                    tokio::spawn(async move {
                        let mut got = Vec::new();
                        while let Some(item) = s.next().await {
                            got.push(key(item));
                            if got.len().is_multiple_of(4) {
                                tokio::time::sleep(Duration::from_millis(1)).await;
                            }
                        }
                        got
                    })
                })
                .collect();
            for (p, t) in tasks.into_iter().enumerate() {
                let got = tokio::time::timeout(Duration::from_secs(10), t).await.unwrap().unwrap();
                let want: Vec<i64> = (0..items).filter(|k| *k as usize % n == p).collect();
                assert_eq!(got, want, "partition {p} of {n}");
            }
        }
    }

    /// A source that wakes its task from inside its poll before it says Pending (as a stream that
    /// yields does) is polled again on the next turn, not in a loop, and gives every item.
    #[tokio::test]
    async fn a_source_that_yields_from_inside_its_poll_is_not_polled_in_a_loop() {
        let polls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = Arc::clone(&polls);
        let mut k = 0i64;
        let source = futures::stream::poll_fn(move |cx| {
            let n = counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if n.is_multiple_of(2) {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            k += 1;
            Poll::Ready((k <= 6).then(|| batch(k - 1)))
        });
        let deal = Arc::new(RoundRobin::new(source.boxed(), 2));
        let mut parts: Vec<_> = (0..2).map(|p| deal.partition(p).unwrap()).collect();
        for k in 0..6 {
            assert_eq!(key(parts[k as usize % 2].next().await.unwrap()), k);
        }
        assert!(parts[0].next().await.is_none() && parts[1].next().await.is_none());
        assert!(polls.load(std::sync::atomic::Ordering::Relaxed) <= 20, "polled {polls:?} times");
    }

    /// An error goes to the partition whose turn it was and ends the dealing; a partition is
    /// handed out once.
    #[tokio::test]
    async fn an_error_ends_the_dealing_and_a_partition_is_taken_once() {
        let items = vec![batch(0), batch(1), Err(DataFusionError::Internal("broken".into())), batch(3)];
        let deal = Arc::new(RoundRobin::new(futures::stream::iter(items).boxed(), 2));
        let mut p0 = deal.partition(0).unwrap();
        let mut p1 = deal.partition(1).unwrap();
        assert!(deal.partition(1).is_err());
        assert!(deal.partition(2).is_err());
        assert_eq!(key(p0.next().await.unwrap()), 0);
        assert_eq!(key(p1.next().await.unwrap()), 1);
        assert!(p0.next().await.unwrap().is_err());
        assert!(p1.next().await.is_none());
        assert!(p0.next().await.is_none());
    }

    /// A partition whose consumer goes away stops the source; the others end.
    #[tokio::test]
    async fn a_dropped_partition_stops_the_source() {
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let source =
            futures::stream::unfold((0i64, done_tx), |(k, done)| async move { Some((batch(k), (k + 1, done))) });
        let deal = Arc::new(RoundRobin::new(source.boxed(), 2));
        let mut p0 = deal.partition(0).unwrap();
        let mut p1 = deal.partition(1).unwrap();
        assert_eq!(key(p0.next().await.unwrap()), 0);
        assert_eq!(key(p1.next().await.unwrap()), 1);
        drop(p0);
        assert!(done_rx.await.is_err(), "the source was dropped");
        assert!(p1.next().await.is_none());
    }

    /// The merge of partitions driven one batch ahead gives the dealt order back, for answers
    /// that stay in the merge's task and for ones that move to tasks of their own.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_ahead_keeps_order_small_and_large() {
        for items in [1i64, 2, 40] {
            let deal = Arc::new(RoundRobin::new(slow_source(items), 2));
            let schema = batch(0).unwrap().schema();
            let mut parts: Vec<_> = (0..2)
                .map(|p| {
                    let s = deal.partition(p).unwrap();
                    one_ahead(Box::pin(datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(
                        Arc::clone(&schema),
                        s,
                    )))
                    .boxed()
                })
                .collect();
            for k in 0..items {
                assert_eq!(key(parts[k as usize % 2].next().await.unwrap()), k);
            }
            assert!(parts[0].next().await.is_none() && parts[1].next().await.is_none());
        }
    }
}
