//! The querier's fan-out: [`Proxy`] reads the local sources (a bucket served directly) and the
//! StoreAPI endpoints of an [`EndpointSet`] as one [`SeriesSource`] per request, with the request's
//! Thanos options ([`ReadOptions`]: dedup, replica labels, partial response, tenant, store
//! matchers) and a [`Warnings`] collector the HTTP API turns into the answer's `warnings`.
//!
//! ```text
//!   select(matchers, [min_t, max_t]):
//!     local sources ───────────────────────────────┐ (dedup: replica labels removed, re-sorted)
//!     endpoints picked by time range and external ─┤ one task per endpoint: Series stream decoded
//!     labels (down ones: a warning, or the error)  │ (a lone endpoint: in the consumer's task until
//!                                                  │  its answer proves large; dedup:
//!                                                  │  without_replica_labels, or removed and
//!                                                  │  re-sorted here when not supported)
//!                                                  ▼
//!                        merge::group_merge (k-way over the sorted streams) ──► series
//!                        equal label sets: union, or with dedup penalty / chain (engine::dedup)
//! ```
//!
//! Partial response: under WARN (`--query.partial-response`, default on; per request
//! `partial_response`) a failing or down endpoint and every warning a store sends become warnings
//! and the answer is built from the rest; under ABORT the request fails with the endpoint's error.
//! Local sources are the querier's own storage: their errors always fail the request.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use engine::{Labels, Matcher, SelectRequest, SeriesSource, SeriesStream};

use super::client::{CallOptions, LabelQuery, Partial, Receive, series_request};
use super::endpoints::{Endpoint, EndpointSet};
use super::merge::{Combine, group_merge, strip_and_sort};
use engine::dedup::{DedupFunc, is_counter_func, without_labels};

/// Warnings collected while answering one request (endpoint failures under partial response,
/// store warnings). Cheap to clone; clones share the list. Repeated warnings are kept once.
#[derive(Debug, Clone, Default)]
pub struct Warnings(Arc<Mutex<Vec<String>>>);

impl Warnings {
    /// Adds a warning (once).
    pub fn add(&self, w: impl Into<String>) {
        let w = w.into();
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if !g.contains(&w) {
            g.push(w);
        }
    }

    /// The warnings so far, in the order they came; the list starts over.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// The Thanos read options of one request.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// `dedup` (default true): merge series that differ only in replica labels.
    pub dedup: bool,
    /// `replicaLabels[]`; None: the querier's `--query.replica-label`s.
    pub replica_labels: Option<Vec<String>>,
    /// `partial_response`; None: the querier's `--query.partial-response`.
    pub partial_response: Option<bool>,
    /// The tenant sent to the endpoints as `thanos-tenant`; None: the querier's default tenant.
    pub tenant: Option<String>,
    /// `storeMatch[]`: only endpoints whose address (`__address__`) one of these matcher sets
    /// accepts are read, and no local source; empty: no restriction.
    pub store_matchers: Vec<Vec<Matcher>>,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions { dedup: true, replica_labels: None, partial_response: None, tenant: None, store_matchers: vec![] }
    }
}

/// The querier's settings (Thanos's flags and defaults).
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    /// `--query.replica-label`: labels that tell replicas apart (none: no dedup).
    pub replica_labels: Vec<String>,
    /// `--deduplication.func` (default penalty).
    pub dedup_func: DedupFunc,
    /// `--query.partial-response` (default true): partial response unless a request says otherwise.
    pub partial_response: bool,
    /// `--store.response-timeout` (default 0 = none): an endpoint that sends nothing for this long
    /// is given up on.
    pub response_timeout: Option<Duration>,
    /// `--query.tenant-header` (default `THANOS-TENANT`): the HTTP header naming a request's tenant.
    pub tenant_header: String,
    /// `--query.default-tenant-id` (default `default-tenant`): sent when a request names none.
    pub default_tenant: String,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        ProxyOptions {
            replica_labels: vec![],
            dedup_func: DedupFunc::Penalty,
            partial_response: true,
            response_timeout: None,
            tenant_header: "THANOS-TENANT".into(),
            default_tenant: "default-tenant".into(),
        }
    }
}

#[derive(Debug)]
struct Inner {
    locals: Vec<Arc<dyn SeriesSource>>,
    endpoints: Option<Arc<EndpointSet>>,
    opts: ProxyOptions,
}

/// Local sources and remote endpoints read as one, per request. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

impl Proxy {
    /// Reads `locals` (in priority order: the first wins equal timestamps) and `endpoints`.
    pub fn new(locals: Vec<Arc<dyn SeriesSource>>, endpoints: Option<Arc<EndpointSet>>, opts: ProxyOptions) -> Self {
        Proxy { inner: Arc::new(Inner { locals, endpoints, opts }) }
    }

    /// One local source, no endpoints, default options (`strata up`, tests): requests may still
    /// deduplicate with `replicaLabels[]`.
    pub fn local(source: Arc<dyn SeriesSource>) -> Self {
        Self::new(vec![source], None, ProxyOptions::default())
    }

    /// The endpoint set, if the proxy has one.
    pub fn endpoints(&self) -> Option<&Arc<EndpointSet>> {
        self.inner.endpoints.as_ref()
    }

    /// The querier's settings.
    pub fn options(&self) -> &ProxyOptions {
        &self.inner.opts
    }

    /// The source one request reads: `opts` applied, warnings going to `warnings`.
    pub fn read(&self, opts: &ReadOptions, warnings: &Warnings) -> Arc<dyn SeriesSource> {
        let base = &self.inner.opts;
        let replica_labels = if opts.dedup {
            opts.replica_labels.clone().unwrap_or_else(|| base.replica_labels.clone())
        } else {
            vec![]
        };
        let abort = !opts.partial_response.unwrap_or(base.partial_response);
        Arc::new(ProxyRead {
            inner: Arc::clone(&self.inner),
            replica_labels,
            call: CallOptions {
                tenant: Some(opts.tenant.clone().unwrap_or_else(|| base.default_tenant.clone())),
                frame_timeout: base.response_timeout,
                partial: Partial { abort, warnings: warnings.clone() },
            },
            store_matchers: opts.store_matchers.clone(),
        })
    }
}

/// One request's view of a [`Proxy`].
#[derive(Debug)]
struct ProxyRead {
    inner: Arc<Inner>,
    /// Replica labels in effect (empty: no dedup).
    replica_labels: Vec<String>,
    call: CallOptions,
    store_matchers: Vec<Vec<Matcher>>,
}

/// True when `addr` passes the `storeMatch[]` matcher sets (any set; none given: all pass).
fn address_matches(sets: &[Vec<Matcher>], addr: &str) -> bool {
    if sets.is_empty() {
        return true;
    }
    let l = Labels::from_pairs([("__address__", addr)]);
    sets.iter().any(|ms| ms.iter().filter(|m| m.name == "__address__").all(|m| m.matches_labels(&l)))
}

impl ProxyRead {
    fn dedup(&self) -> bool {
        !self.replica_labels.is_empty()
    }

    fn locals(&self) -> &[Arc<dyn SeriesSource>] {
        // storeMatch[] selects by address, which local sources do not have (as in Thanos).
        if self.store_matchers.is_empty() { &self.inner.locals } else { &[] }
    }

    /// The endpoints to read; down ones are reported now (an error under ABORT).
    fn endpoints(&self, min_t: i64, max_t: i64, matchers: &[Matcher]) -> engine::Result<Vec<Arc<Endpoint>>> {
        let Some(set) = &self.inner.endpoints else { return Ok(vec![]) };
        let picked = set.pick(min_t, max_t, matchers, &|a| address_matches(&self.store_matchers, a));
        for (endpoint, err) in picked.down {
            self.call.partial.fail(engine::Error::Remote {
                endpoint,
                reason: format!("endpoint is down and was not queried (last Info: {err})"),
            })?;
        }
        Ok(picked.up)
    }

    /// Label sets with the replica labels removed, sorted and unique.
    fn finish_label_sets(&self, mut all: Vec<Labels>) -> Vec<Labels> {
        if self.dedup() {
            for l in &mut all {
                *l = without_labels(l, &self.replica_labels);
            }
        }
        all.sort_unstable();
        all.dedup();
        all
    }

    /// The sorted, unique union of the label names (`name` None) or values of the local sources and
    /// the endpoints (all asked at once; their warnings join the request's, failures follow its
    /// partial response strategy).
    async fn labels(
        &self,
        name: Option<&str>,
        matchers: &[Matcher],
        min_t: i64,
        max_t: i64,
    ) -> engine::Result<Vec<String>> {
        let endpoints = self.endpoints(min_t, max_t, matchers)?;
        let mut out = Vec::new();
        for l in self.locals() {
            out.extend(match name {
                None => l.label_names(matchers, min_t, max_t).await?,
                Some(n) => l.label_values(n, matchers, min_t, max_t).await?,
            });
        }
        let q = LabelQuery {
            matchers,
            min_t,
            max_t,
            abort: self.call.partial.abort,
            without_replica_labels: &self.replica_labels,
        };
        let tenant = self.call.tenant.as_deref();
        let calls = endpoints.iter().map(|e| e.labels(name, &q, tenant));
        for (r, e) in futures::future::join_all(calls).await.into_iter().zip(&endpoints) {
            match r {
                Ok((list, warnings)) => {
                    for w in warnings {
                        self.call.partial.warnings.add(format!("{}: {w}", e.remote.name()));
                    }
                    out.extend(list);
                }
                Err(err) => self.call.partial.fail(err)?,
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }
}

#[async_trait::async_trait]
impl SeriesSource for ProxyRead {
    async fn select(&self, req: &SelectRequest) -> engine::Result<SeriesStream> {
        let dedup = self.dedup();
        let endpoints = self.endpoints(req.min_t, req.max_t, &req.matchers)?;
        let mut streams = Vec::new();
        for l in self.locals() {
            let s = l.select(req).await?;
            streams.push(if dedup { strip_and_sort(s, self.replica_labels.clone()) } else { s });
        }
        if endpoints.is_empty() && streams.len() == 1 && !dedup {
            return streams
                .pop()
                .ok_or_else(|| engine::Error::Remote { endpoint: "local".into(), reason: "no stream".into() });
        }
        // One endpoint alone is received in the consumer's task; several at once, each on its own.
        let receive = if streams.is_empty() && endpoints.len() == 1 { Receive::Inline } else { Receive::Task };
        for e in endpoints {
            let native = dedup && e.supports_without_replica_labels();
            let without = if native { self.replica_labels.clone() } else { vec![] };
            let s = e.remote.series(series_request(req, without, self.call.partial.abort), self.call.clone(), receive);
            streams.push(if dedup && !native { strip_and_sort(s, self.replica_labels.clone()) } else { s });
        }
        let combine = if dedup {
            Combine::Dedup(self.inner.opts.dedup_func, is_counter_func(req.hints.func.as_deref()))
        } else {
            Combine::Union
        };
        Ok(group_merge(streams, combine))
    }

    /// A lone local source read without dedup (what `select` passes through untouched) deals
    /// its select itself; anything else is merged here and not dealt.
    async fn select_dealt(&self, req: &SelectRequest, parts: usize) -> engine::Result<Option<Vec<SeriesStream>>> {
        if self.dedup() || !self.endpoints(req.min_t, req.max_t, &req.matchers)?.is_empty() {
            return Ok(None);
        }
        match self.locals() {
            [local] => local.select_dealt(req, parts).await,
            _ => Ok(None),
        }
    }

    async fn series(&self, matchers: &[Matcher], min_t: i64, max_t: i64) -> engine::Result<Vec<Labels>> {
        let endpoints = self.endpoints(min_t, max_t, matchers)?;
        let mut all = Vec::new();
        for l in self.locals() {
            all.extend(l.series(matchers, min_t, max_t).await?);
        }
        let req = SelectRequest { matchers: matchers.to_vec(), min_t, max_t, ..Default::default() };
        let calls = endpoints.iter().map(|e| {
            let without =
                if self.dedup() && e.supports_without_replica_labels() { self.replica_labels.clone() } else { vec![] };
            e.remote.series_labels(series_request(&req, without, self.call.partial.abort), &self.call)
        });
        for r in futures::future::join_all(calls).await {
            match r {
                Ok(l) => all.extend(l),
                Err(e) => self.call.partial.fail(e)?,
            }
        }
        Ok(self.finish_label_sets(all))
    }

    async fn label_names(&self, matchers: &[Matcher], min_t: i64, max_t: i64) -> engine::Result<Vec<String>> {
        let mut names = self.labels(None, matchers, min_t, max_t).await?;
        names.retain(|n| !self.replica_labels.contains(n));
        Ok(names)
    }

    async fn label_values(
        &self,
        name: &str,
        matchers: &[Matcher],
        min_t: i64,
        max_t: i64,
    ) -> engine::Result<Vec<String>> {
        if self.replica_labels.iter().any(|r| r == name) {
            return Ok(vec![]);
        }
        self.labels(Some(name), matchers, min_t, max_t).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use engine::{MatchOp, MemSource, SeriesBatch};
    use futures::TryStreamExt;

    use super::*;

    fn l(pairs: &[(&str, &str)]) -> Labels {
        Labels::from_pairs(pairs.iter().copied())
    }

    async fn select(src: &dyn SeriesSource, min_t: i64, max_t: i64) -> Vec<(String, Vec<i64>)> {
        let req =
            SelectRequest { matchers: vec![Matcher::equal("__name__", "up")], min_t, max_t, ..Default::default() };
        let bs: Vec<SeriesBatch> = src.select(&req).await.unwrap().try_collect().await.unwrap();
        let mut out = Vec::new();
        for b in &bs {
            for i in 0..b.num_series() {
                let (lab, t, _) = b.series(i);
                out.push((lab.to_string(), t.to_vec()));
            }
        }
        out
    }

    /// Two replicas of `up` in one local source: replica a misses 40 s..80 s.
    fn ha_source() -> Arc<dyn SeriesSource> {
        let m = MemSource::new();
        let a: Vec<i64> = [0, 10, 20, 30, 90, 100].iter().map(|s| s * 1000).collect();
        let b: Vec<i64> = (0..=10).map(|s| s * 10_000 + 2000).collect();
        m.add(l(&[("__name__", "up"), ("replica", "a")]), &a, &vec![1.0; a.len()]);
        m.add(l(&[("__name__", "up"), ("replica", "b")]), &b, &vec![1.0; b.len()]);
        Arc::new(m)
    }

    #[tokio::test]
    async fn dedup_by_flag_or_request_and_off() {
        let opts = ProxyOptions { replica_labels: vec!["replica".into()], ..Default::default() };
        let p = Proxy::new(vec![ha_source()], None, opts);
        let w = Warnings::default();
        let got = select(p.read(&ReadOptions::default(), &w).as_ref(), 0, 200_000).await;
        // a at 0, 10, 20, 30 s while b is penalised by 2*10 s (b's 32 and 42 s are skipped); a's next
        // sample (90 s) is later than b's 52 s: b from 52 s on, a penalised until it ends.
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, "up");
        let secs: Vec<i64> = got[0].1.iter().map(|t| t / 1000).collect();
        assert_eq!(secs, vec![0, 10, 20, 30, 52, 62, 72, 82, 92, 102]);
        let off = ReadOptions { dedup: false, ..Default::default() };
        let got = select(p.read(&off, &w).as_ref(), 0, 200_000).await;
        assert_eq!(got.iter().map(|s| s.0.as_str()).collect::<Vec<_>>(), [r#"up{replica="a"}"#, r#"up{replica="b"}"#]);
        // replicaLabels[] naming a label no series has: nothing merges.
        let other = ReadOptions { replica_labels: Some(vec!["zone".into()]), ..Default::default() };
        assert_eq!(select(p.read(&other, &w).as_ref(), 0, 200_000).await.len(), 2);
        assert!(w.take().is_empty());

        let src = p.read(&ReadOptions::default(), &w);
        assert_eq!(
            src.series(&[Matcher::equal("__name__", "up")], 0, 200_000).await.unwrap(),
            vec![l(&[("__name__", "up")])]
        );
        assert_eq!(src.label_names(&[], 0, 200_000).await.unwrap(), vec!["__name__".to_string()]);
        assert!(src.label_values("replica", &[], 0, 200_000).await.unwrap().is_empty());
        let src = p.read(&off, &w);
        assert_eq!(src.label_values("replica", &[], 0, 200_000).await.unwrap(), vec!["a".to_string(), "b".to_string()]);
        assert_eq!(src.series(&[Matcher::equal("__name__", "up")], 0, 200_000).await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn down_endpoints_warn_or_fail() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr = format!("127.0.0.1:{port}");
        let set = Arc::new(EndpointSet::new(std::slice::from_ref(&addr), Duration::from_secs(2)).unwrap());
        set.refresh().await;
        let p = Proxy::new(vec![ha_source()], Some(set), ProxyOptions::default());
        let w = Warnings::default();
        // WARN (the default): the local data, plus a warning naming the endpoint.
        let got = select(p.read(&ReadOptions::default(), &w).as_ref(), 0, 200_000).await;
        assert_eq!(got.len(), 2);
        let warns = w.take();
        assert_eq!(warns.len(), 1, "{warns:?}");
        assert!(warns[0].starts_with(&format!("{addr}: endpoint is down and was not queried")), "{warns:?}");
        // ABORT: the error.
        let abort = ReadOptions { partial_response: Some(false), ..Default::default() };
        let req = SelectRequest {
            matchers: vec![Matcher::equal("__name__", "up")],
            min_t: 0,
            max_t: 1,
            ..Default::default()
        };
        let e = p.read(&abort, &w).select(&req).await.err().unwrap().to_string();
        assert!(e.contains("endpoint is down"), "{e}");
        assert!(p.read(&abort, &w).label_names(&[], 0, 1).await.is_err());
        // storeMatch[] excluding the endpoint (and, as in Thanos, the local source).
        let sm = ReadOptions {
            store_matchers: vec![vec![Matcher::new(MatchOp::NotEqual, "__address__", addr.clone()).unwrap()]],
            partial_response: Some(false),
            ..Default::default()
        };
        assert!(select(p.read(&sm, &w).as_ref(), 0, 200_000).await.is_empty());
        assert!(w.take().is_empty());
    }

    #[test]
    fn warnings_are_kept_once_in_order() {
        let w = Warnings::default();
        w.clone().add("b");
        w.add("a");
        w.add("b");
        assert_eq!(w.take(), vec!["b".to_string(), "a".to_string()]);
        assert!(w.take().is_empty());
        assert!(address_matches(&[], "x:1"));
        assert!(address_matches(&[vec![Matcher::equal("__address__", "x:1"), Matcher::equal("job", "j")]], "x:1"));
        assert!(!address_matches(&[vec![Matcher::equal("__address__", "x:2")]], "x:1"));
    }
}
