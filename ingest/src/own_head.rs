//! A component's own head: one WAL-backed [`engine::Head`] for series a component writes itself
//! (the ruler's recorded series and `ALERTS`), cut into blocks of the component's source type
//! (e.g. `ruler`) with its external labels, the receive machinery without tenants or hashrings.
//!
//! ```text
//!   append(samples) ──► head (WAL, <dir>/wal) ──cut──► bucket blocks {source, external labels}
//!   source(): head series + external labels (for queries and the StoreAPI)
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use engine::bucket::Bucket;
use engine::head::{Head, HeadOptions, SinglePoints};
use engine::meta::BlockMeta;
use engine::source::{SelectRequest, SeriesSource, SeriesStream};
use engine::{Labels, Matcher, Relabel};

use crate::error::Result;
use crate::receive::{AppendOutcome, CutHeads, UploadHook};

/// Settings of an [`OwnHead`].
#[derive(Debug, Clone)]
pub struct OwnHeadOptions {
    /// Directory of the WAL and head state.
    pub dir: PathBuf,
    /// Where cut blocks go.
    pub bucket: Bucket,
    /// External labels of the blocks and of every series read back.
    pub external_labels: Labels,
    /// `thanos.source` of the blocks (e.g. `ruler`).
    pub source: String,
    /// Block length and alignment (ms).
    pub block_duration_ms: i64,
}

/// A component's own head. Cheap to clone.
#[derive(Debug, Clone)]
pub struct OwnHead {
    head: Arc<Head>,
    opts: Arc<OwnHeadOptions>,
}

impl OwnHead {
    /// Opens the head in `opts.dir`, replaying its WAL.
    pub async fn open(opts: OwnHeadOptions) -> Result<Self> {
        let ext: BTreeMap<String, String> =
            opts.external_labels.iter().map(|l| (l.name.clone(), l.value.clone())).collect();
        let head = Head::open(HeadOptions {
            dir: opts.dir.clone(),
            block_duration_ms: opts.block_duration_ms,
            external_labels: ext,
            source: opts.source.clone(),
            out_of_order_window_ms: 0,
        })
        .await?;
        Ok(OwnHead { head, opts: Arc::new(opts) })
    }

    /// Appends samples `(labels, t ms, value)`: queryable when it returns, durable after the next
    /// [`OwnHead::sync`]. Rejected samples (out of order, duplicate, too old) are counted in the
    /// outcome.
    pub fn append_visible(&self, samples: &[(Labels, i64, f64)]) -> Result<AppendOutcome> {
        Ok(self.head.submit_series(&SinglePoints::new(samples).series())?.0.into())
    }

    /// Waits until everything appended before is durable.
    pub async fn sync(&self) -> Result<()> {
        Ok(self.head.sync().await?)
    }

    /// Cuts finished blocks (everything with `force`) into the bucket, awaiting `uploaded()` after
    /// each upload before the head drops the samples; returns the blocks written.
    pub async fn cut_then(&self, force: bool, uploaded: &UploadHook) -> Result<usize> {
        Ok(self.head.cut_then(&self.opts.bucket, force, uploaded).await?.len())
    }

    /// Whether a bucket block is one this head cut (or one of a component with the same source
    /// and external labels).
    pub fn is_own_block(&self, meta: &BlockMeta) -> bool {
        let (ext, labels) = (&self.opts.external_labels, &meta.thanos.labels);
        meta.thanos.source == self.opts.source
            && labels.len() == ext.len()
            && ext.iter().all(|l| labels.get(&l.name) == Some(&l.value))
    }

    /// The head's series with the external labels, as a [`SeriesSource`].
    pub fn source(&self) -> Arc<dyn SeriesSource> {
        Arc::new(self.clone())
    }

    /// Matchers left for the head once those on external labels are checked; None when an
    /// external label fails its matcher.
    fn head_matchers(&self, matchers: &[Matcher]) -> Option<Vec<Matcher>> {
        let mut rest = Vec::new();
        for m in matchers {
            match self.opts.external_labels.get(&m.name) {
                Some(v) if !m.matches(v) => return None,
                Some(_) => {}
                None => rest.push(m.clone()),
            }
        }
        Some(rest)
    }
}

#[async_trait]
impl CutHeads for OwnHead {
    async fn cut_heads(&self, force: bool, uploaded: &UploadHook) -> Result<usize> {
        self.cut_then(force, uploaded).await
    }
}

#[async_trait]
impl SeriesSource for OwnHead {
    async fn select(&self, req: &SelectRequest) -> engine::Result<SeriesStream> {
        let Some(matchers) = self.head_matchers(&req.matchers) else {
            return Ok(Box::pin(futures::stream::empty()));
        };
        let sub = SelectRequest { matchers, ..req.clone() };
        let relabel = Relabel { set: self.opts.external_labels.clone(), remove: vec![] };
        self.head.select_relabelled(&sub, &relabel).await
    }

    async fn series(&self, matchers: &[Matcher], min_t: i64, max_t: i64) -> engine::Result<Vec<Labels>> {
        let Some(rest) = self.head_matchers(matchers) else { return Ok(vec![]) };
        let mut out: Vec<Labels> = self
            .head
            .series(&rest, min_t, max_t)
            .await?
            .into_iter()
            .map(|mut l| {
                for e in self.opts.external_labels.iter() {
                    l.set(&e.name, &e.value);
                }
                l
            })
            .collect();
        out.sort();
        Ok(out)
    }

    async fn data_ranges(&self) -> Vec<engine::DataRange> {
        let mut r = self.head.data_ranges().await;
        for d in &mut r {
            d.labels = self.opts.external_labels.clone();
        }
        r
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use futures::TryStreamExt;

    use super::*;

    #[tokio::test]
    async fn append_read_cut_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let bucket = Bucket::local(dir.path().join("bucket")).unwrap();
        let opts = OwnHeadOptions {
            dir: dir.path().join("head"),
            bucket: bucket.clone(),
            external_labels: Labels::from_pairs([("cluster", "eu1")]),
            source: "ruler".into(),
            block_duration_ms: 7_200_000,
        };
        let h = OwnHead::open(opts.clone()).await.unwrap();
        let l = Labels::from_pairs([("__name__", "job:up:sum"), ("job", "a")]);
        let r = h.append_visible(&[(l.clone(), 1000, 1.0), (l.clone(), 2000, 2.0)]).unwrap();
        h.sync().await.unwrap();
        assert_eq!(r.accepted, 2);
        drop(h);
        let h = OwnHead::open(opts).await.unwrap(); // WAL replay
        let req = SelectRequest {
            matchers: vec![Matcher::equal("cluster", "eu1"), Matcher::equal("job", "a")],
            min_t: 0,
            max_t: 10_000,
            hints: Default::default(),
        };
        let batches: Vec<_> = h.select(&req).await.unwrap().try_collect().await.unwrap();
        let (labels, ts, vs) = batches[0].series(0);
        assert_eq!(labels.to_string(), r#"job:up:sum{cluster="eu1", job="a"}"#);
        assert_eq!((ts, vs), (&[1000, 2000][..], &[1.0, 2.0][..]));
        let other = SelectRequest { matchers: vec![Matcher::equal("cluster", "us1")], ..req };
        assert!(h.select(&other).await.unwrap().try_collect::<Vec<_>>().await.unwrap().is_empty());
        assert_eq!(h.cut_then(true, &|| Box::pin(async {})).await.unwrap(), 1);
        let ulid = bucket.list_blocks().await.unwrap().pop().unwrap();
        let meta = bucket.read_meta(&ulid).await.unwrap();
        assert_eq!(meta.thanos.source, "ruler");
        assert_eq!(meta.thanos.labels.get("cluster").map(String::as_str), Some("eu1"));
        assert!(h.is_own_block(&meta));
    }
}
