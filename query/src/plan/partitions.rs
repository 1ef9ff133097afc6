//! How a query uses several cores: a scan deals its batches out to partitions, the streaming
//! nodes above it run once per partition, each on its own task, and [`PromMergeExec`] puts the
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
//! Series are independent in the streaming nodes, and each of them maps one input batch to
//! exactly one output batch, so taking the batches back in turn restores the order a
//! single-partition plan has. Everything above the merge sees exactly the input it would see
//! with one partition, in the same order: aggregations fold the same series in the same order,
//! so sums and means stay bit-for-bit Prometheus's (its Kahan sums depend on the order), and
//! instant results keep their order.

use std::fmt;
use std::sync::{Arc, Mutex};

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

/// Deals the items of one stream out to `n` partitions in turn (item k to partition k mod n).
/// The stream is started by the first partition polled, on its own task; it runs one item ahead
/// per partition and stops when a partition's consumer goes away or after an error (which goes
/// to the partition whose turn it was).
pub(crate) struct RoundRobin {
    state: Mutex<DealState>,
}

struct DealState {
    /// The stream, until a partition starts it.
    source: Option<BoxStream<'static, Item>>,
    senders: Vec<mpsc::Sender<Item>>,
    receivers: Vec<Option<mpsc::Receiver<Item>>>,
}

impl fmt::Debug for RoundRobin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoundRobin").finish_non_exhaustive()
    }
}

impl RoundRobin {
    /// Deals `source` out to `n` partitions.
    pub(crate) fn new(source: BoxStream<'static, Item>, n: usize) -> Self {
        let (senders, receivers) = (0..n.max(1)).map(|_| mpsc::channel(1)).map(|(s, r)| (s, Some(r))).unzip();
        RoundRobin { state: Mutex::new(DealState { source: Some(source), senders, receivers }) }
    }

    /// The items of partition `p`; each partition can be taken once.
    pub(crate) fn partition(self: &Arc<Self>, p: usize) -> datafusion::error::Result<BoxStream<'static, Item>> {
        let rx = {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            st.receivers.get_mut(p).and_then(Option::take)
        };
        let Some(mut rx) = rx else {
            return Err(DataFusionError::Internal(format!("partition {p} of a scan executed twice or out of range")));
        };
        let me = Arc::clone(self);
        let start = futures::stream::once(async move {
            me.start();
            futures::stream::empty::<Item>()
        })
        .flatten();
        let items = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
        Ok(start.chain(items).boxed())
    }

    /// Spawns the dealing task unless a partition did already.
    fn start(&self) {
        let (source, senders) = {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            match st.source.take() {
                Some(s) => (s, std::mem::take(&mut st.senders)),
                None => return,
            }
        };
        tokio::spawn(async move {
            let mut source = source;
            let n = senders.len();
            let mut k = 0usize;
            while let Some(item) = source.next().await {
                let failed = item.is_err();
                if senders[k % n].send(item).await.is_err() || failed {
                    break;
                }
                k += 1;
            }
        });
    }
}

/// Merges the partitions of its input into one stream in the order the input's scan dealt
/// them: batch 0 from partition 0, batch 1 from partition 1, and so on. Each partition runs on
/// its own task, one batch ahead.
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

/// Drives `s` on its own task, one batch ahead of the consumer.
fn on_task(mut s: SendableRecordBatchStream) -> impl Stream<Item = Item> + Send + 'static {
    let (tx, mut rx) = mpsc::channel::<Item>(1);
    let task = futures::stream::once(async move {
        tokio::spawn(async move {
            while let Some(item) = s.next().await {
                let failed = item.is_err();
                if tx.send(item).await.is_err() || failed {
                    break;
                }
            }
        });
        futures::stream::empty::<Item>()
    })
    .flatten();
    task.chain(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)))
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
            parts.push(on_task(self.input.execute(p, Arc::clone(&context))?).boxed());
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
