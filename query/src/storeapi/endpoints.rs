//! The querier's endpoint set: the StoreAPI endpoints given with `--endpoint host:port`, their
//! metadata from `thanos.info.Info/Info` (component type, external label sets, time range,
//! `without_replica_labels` support) refreshed every `--endpoint.info-timeout` (Thanos: 5 s, also
//! the Info call's timeout), and the per-request choice of endpoints.
//!
//! ```text
//!   every 5 s: Info ──► up (metadata kept)  |  down (last error; metadata of the last success kept)
//!   per request [min_t, max_t], matchers:
//!     up endpoints whose time range overlaps and one of whose label sets the matchers do not rule
//!     out ──► queried;  down endpoints that could hold matching data ──► reported (partial response)
//! ```
//!
//! As in Thanos, an endpoint whose last Info call failed is not queried, and an endpoint whose Info
//! answer has no `store` section (no StoreAPI) is never queried for series. Unlike Thanos, which
//! forgets an endpoint that never answered and stops mentioning one after its unhealthy timeout,
//! every configured endpoint stays listed (`/api/v1/stores`), and a down endpoint that could hold
//! the requested data is reported to the request as a failure (a warning under partial response),
//! so an answer never silently lacks an endpoint's data.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use engine::{Labels, Matcher};
use proto::thanos::info::InfoResponse;

use super::client::{LabelQuery, Remote};
use super::convert::labels_from_proto;
use super::label_cache::{LabelCache, LabelKey};

/// Thanos's `--endpoint.info-timeout` default: Info calls time out after it and are repeated
/// every such interval.
pub const DEFAULT_INFO_TIMEOUT: Duration = Duration::from_secs(5);

/// Thanos's component type of an endpoint whose type is not known (never answered Info).
pub const UNKNOWN_COMPONENT: &str = "unknown-store-api";

/// What an endpoint said about itself in its last successful Info answer.
#[derive(Debug, Clone)]
struct Meta {
    component: String,
    label_sets: Vec<Labels>,
    /// Present when the endpoint serves the StoreAPI.
    store: Option<StoreMeta>,
    /// Hash of the whole Info answer: label answers cached under another one are stale.
    generation: u64,
}

#[derive(Debug, Clone, Copy)]
struct StoreMeta {
    min_t: i64,
    max_t: i64,
    without_replica_labels: bool,
}

impl Meta {
    fn from_info(info: InfoResponse) -> Self {
        let generation = xxhash_rust::xxh64::xxh64(&proto::prost::Message::encode_to_vec(&info), 0);
        Meta {
            generation,
            component: if info.component_type.is_empty() { UNKNOWN_COMPONENT.into() } else { info.component_type },
            label_sets: info
                .label_sets
                .into_iter()
                .map(|s| labels_from_proto(s.labels))
                .filter(|l| !l.is_empty())
                .collect(),
            store: info.store.map(|s| StoreMeta {
                min_t: s.min_time,
                max_t: s.max_time,
                without_replica_labels: s.supports_without_replica_labels,
            }),
        }
    }

    /// True when the endpoint may hold series matching `matchers` in `[min_t, max_t]`.
    fn may_match(&self, min_t: i64, max_t: i64, matchers: &[Matcher]) -> bool {
        let Some(s) = self.store else { return false };
        if min_t > s.max_t || max_t < s.min_t {
            return false;
        }
        label_sets_match(matchers, &self.label_sets)
    }
}

/// Thanos's `LabelSetsMatch`: true when no label sets are known, or when for one of the sets
/// every matcher on a label of that set accepts the set's value.
fn label_sets_match(matchers: &[Matcher], sets: &[Labels]) -> bool {
    sets.is_empty() || sets.iter().any(|set| matchers.iter().all(|m| set.get(&m.name).is_none_or(|v| m.matches(v))))
}

#[derive(Debug, Default)]
struct State {
    /// Time of the last successful Info call.
    last_check: Option<SystemTime>,
    /// Error of the last Info call, None if it succeeded.
    last_error: Option<String>,
    meta: Option<Meta>,
}

/// One configured endpoint.
#[derive(Debug)]
pub(crate) struct Endpoint {
    pub(crate) remote: Remote,
    state: RwLock<State>,
    labels: LabelCache,
}

impl Endpoint {
    fn state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// True when the endpoint sorts without replica labels itself (Info
    /// `supports_without_replica_labels`).
    pub(crate) fn supports_without_replica_labels(&self) -> bool {
        self.state().meta.as_ref().and_then(|m| m.store).is_some_and(|s| s.without_replica_labels)
    }

    /// The generation label answers are cached under: Some for an up store gateway (see
    /// [`super::label_cache`]), None for endpoints whose answers are never cached.
    fn label_generation(&self) -> Option<u64> {
        let st = self.state();
        match (&st.last_error, &st.meta) {
            (None, Some(m)) if m.component == "store" => Some(m.generation),
            _ => None,
        }
    }

    /// `thanos.Store/LabelNames` (`name` None) or `LabelValues` of `name`, from the label cache
    /// when a store gateway answered the same request since its last Info change: the sorted
    /// strings and the store's warnings.
    pub(crate) async fn labels(
        &self,
        name: Option<&str>,
        q: &LabelQuery<'_>,
        tenant: Option<&str>,
    ) -> engine::Result<(Vec<String>, Vec<String>)> {
        let Some(generation) = self.label_generation() else { return self.remote.labels(name, q, tenant).await };
        let key = LabelKey::new(name, q.matchers, (q.min_t, q.max_t), q.abort, q.without_replica_labels, tenant);
        if let Some(hit) = self.labels.get(generation, &key) {
            return Ok((hit, Vec::new()));
        }
        let (list, warnings) = self.remote.labels(name, q, tenant).await?;
        if warnings.is_empty() {
            self.labels.put(generation, key, &list);
        }
        Ok((list, warnings))
    }

    async fn refresh(&self, timeout: Duration) {
        let res = self.remote.info(timeout).await;
        let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
        match res {
            Ok(info) => {
                let meta = Meta::from_info(info);
                if st.last_error.is_some() || st.meta.is_none() {
                    tracing::info!(
                        endpoint = self.remote.name(),
                        component = meta.component,
                        store_api = meta.store.is_some(),
                        "endpoint up"
                    );
                }
                st.meta = Some(meta);
                st.last_check = Some(SystemTime::now());
                st.last_error = None;
            }
            Err(e) => {
                if st.last_error.is_none() {
                    tracing::warn!(endpoint = self.remote.name(), error = %e, "endpoint down: Info failed");
                }
                st.last_error = Some(e.to_string());
            }
        }
    }
}

/// An endpoint as `/api/v1/stores` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointStatus {
    /// The address.
    pub name: String,
    /// Component type from Info (`store`, `sidecar`, `receive`, ...), [`UNKNOWN_COMPONENT`] before
    /// the first successful Info.
    pub component: String,
    /// Time of the last successful Info call.
    pub last_check: Option<SystemTime>,
    /// Error of the last Info call, None when it succeeded.
    pub last_error: Option<String>,
    /// External label sets.
    pub label_sets: Vec<Labels>,
    /// Time range of the data (ms); the full range while unknown.
    pub min_time: i64,
    /// See `min_time`.
    pub max_time: i64,
}

/// The endpoints chosen for one request.
#[derive(Debug, Default)]
pub(crate) struct Picked {
    /// Up endpoints that may hold matching data.
    pub(crate) up: Vec<Arc<Endpoint>>,
    /// Down endpoints that may hold matching data, with the reason they are down.
    pub(crate) down: Vec<(String, String)>,
}

/// The `--endpoint`s of a querier and what their Info calls said.
#[derive(Debug)]
pub struct EndpointSet {
    endpoints: Vec<Arc<Endpoint>>,
    info_timeout: Duration,
    discovered: AtomicBool,
}

impl EndpointSet {
    /// The set of `addrs` (`host:port`; repeated addresses count once). Nothing is contacted until
    /// [`EndpointSet::refresh`]. Must be called within a Tokio runtime (the channels start there).
    pub fn new(addrs: &[String], info_timeout: Duration) -> engine::Result<Self> {
        let mut endpoints: Vec<Arc<Endpoint>> = Vec::new();
        for a in addrs {
            if endpoints.iter().any(|e| e.remote.name() == a) {
                continue;
            }
            endpoints.push(Arc::new(Endpoint {
                remote: Remote::connect_lazy(a)?,
                state: RwLock::default(),
                labels: LabelCache::default(),
            }));
        }
        Ok(EndpointSet { endpoints, info_timeout, discovered: AtomicBool::new(false) })
    }

    /// Number of configured endpoints.
    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    /// True when no endpoint is configured.
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// Calls Info on every endpoint at once (each within the Info timeout) and records the answers.
    pub async fn refresh(&self) {
        futures::future::join_all(self.endpoints.iter().map(|e| e.refresh(self.info_timeout))).await;
        if !self.discovered.swap(true, Ordering::AcqRel) {
            let up = self.endpoints.iter().filter(|e| e.state().last_error.is_none()).count();
            tracing::info!(endpoints = self.endpoints.len(), up, "first endpoint discovery round done");
        }
    }

    /// Refreshes the set forever, one round every Info timeout (as Thanos's querier).
    pub async fn run(self: Arc<Self>) {
        loop {
            self.refresh().await;
            tokio::time::sleep(self.info_timeout).await;
        }
    }

    /// True once the first discovery round finished.
    pub fn discovered(&self) -> bool {
        self.discovered.load(Ordering::Acquire)
    }

    /// Every configured endpoint, sorted by address.
    pub fn statuses(&self) -> Vec<EndpointStatus> {
        let mut out: Vec<EndpointStatus> = self
            .endpoints
            .iter()
            .map(|e| {
                let st = e.state();
                let meta = st.meta.as_ref();
                let (min_time, max_time) =
                    meta.and_then(|m| m.store).map_or((i64::MIN, i64::MAX), |s| (s.min_t, s.max_t));
                EndpointStatus {
                    name: e.remote.name().to_string(),
                    component: meta.map_or_else(|| UNKNOWN_COMPONENT.to_string(), |m| m.component.clone()),
                    last_check: st.last_check,
                    last_error: st.last_error.clone(),
                    label_sets: meta.map(|m| m.label_sets.clone()).unwrap_or_default(),
                    min_time,
                    max_time,
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// The endpoints a request for `matchers` over `[min_t, max_t]` reads, restricted to those
    /// whose address `address_ok` accepts (`storeMatch[]`). A down endpoint counts when its last
    /// known metadata could match, or when it never answered.
    pub(crate) fn pick(
        &self,
        min_t: i64,
        max_t: i64,
        matchers: &[Matcher],
        address_ok: &dyn Fn(&str) -> bool,
    ) -> Picked {
        let mut out = Picked::default();
        for e in &self.endpoints {
            if !address_ok(e.remote.name()) {
                continue;
            }
            let st = e.state();
            let matches = st.meta.as_ref().is_none_or(|m| m.may_match(min_t, max_t, matchers));
            if !matches {
                continue;
            }
            match (&st.last_error, &st.meta) {
                (None, Some(_)) => out.up.push(Arc::clone(e)),
                (Some(err), _) => out.down.push((e.remote.name().to_string(), err.clone())),
                (None, None) => out.down.push((e.remote.name().to_string(), "not discovered yet".to_string())),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use engine::MatchOp;
    use proto::prometheus::Label as PbLabel;
    use proto::thanos::ZLabelSet;
    use proto::thanos::info::StoreInfo;

    use super::*;

    fn set(pairs: &[(&str, &str)]) -> ZLabelSet {
        ZLabelSet { labels: pairs.iter().map(|(n, v)| PbLabel { name: n.to_string(), value: v.to_string() }).collect() }
    }

    fn info(sets: Vec<ZLabelSet>, min_t: i64, max_t: i64) -> InfoResponse {
        InfoResponse {
            label_sets: sets,
            component_type: "store".into(),
            store: Some(StoreInfo {
                min_time: min_t,
                max_time: max_t,
                supports_without_replica_labels: true,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn pruning_by_time_and_external_labels() {
        let m =
            Meta::from_info(info(vec![set(&[("region", "eu"), ("replica", "a")]), set(&[("region", "us")])], 100, 200));
        let re = |n: &str, v: &str| Matcher::new(MatchOp::RegexMatch, n, v).unwrap();
        assert!(m.may_match(150, 300, &[Matcher::equal("__name__", "up")]));
        assert!(!m.may_match(201, 300, &[]));
        assert!(!m.may_match(0, 99, &[]));
        assert!(m.may_match(200, 200, &[]));
        // one set matching is enough
        assert!(m.may_match(0, 1000, &[Matcher::equal("region", "us")]));
        assert!(!m.may_match(0, 1000, &[Matcher::equal("region", "asia")]));
        // {region="us"} has no replica label, so a replica matcher does not rule it out
        assert!(m.may_match(0, 1000, &[Matcher::equal("region", "us"), Matcher::equal("replica", "a")]));
        assert!(!m.may_match(0, 1000, &[Matcher::equal("region", "eu"), Matcher::equal("replica", "b")]));
        assert!(m.may_match(0, 1000, &[re("region", "e.*"), Matcher::equal("replica", "a")]));
        // labels the sets do not have are not decided here
        assert!(m.may_match(0, 1000, &[Matcher::equal("job", "x")]));
        // no label sets: everything may match; no StoreAPI: nothing
        assert!(Meta::from_info(info(vec![], 0, 1)).may_match(0, 1, &[Matcher::equal("region", "x")]));
        let mut no_store = info(vec![], 0, 1);
        no_store.store = None;
        assert!(!Meta::from_info(no_store).may_match(0, 1, &[]));
    }

    #[tokio::test]
    async fn a_down_endpoint_is_reported_not_queried() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr = format!("127.0.0.1:{port}");
        let set = EndpointSet::new(&[addr.clone(), addr.clone()], Duration::from_secs(2)).unwrap();
        assert_eq!(set.len(), 1);
        assert!(!set.discovered());
        let p = set.pick(0, 1, &[], &|_| true);
        assert_eq!((p.up.len(), p.down.len()), (0, 1));
        assert_eq!(p.down[0].1, "not discovered yet");
        set.refresh().await;
        assert!(set.discovered());
        let st = set.statuses();
        assert_eq!(st.len(), 1);
        assert_eq!((st[0].name.as_str(), st[0].component.as_str()), (addr.as_str(), UNKNOWN_COMPONENT));
        assert!(st[0].last_error.as_deref().unwrap().contains("info: rpc error: code = Unavailable"), "{st:?}");
        assert_eq!((st[0].min_time, st[0].max_time, st[0].last_check), (i64::MIN, i64::MAX, None));
        let p = set.pick(0, 1, &[], &|_| true);
        assert_eq!(p.down[0].0, addr);
        assert!(set.pick(0, 1, &[], &|a| a != addr).down.is_empty());
        // Metadata of the last success is kept while down, and decides whether it is reported.
        set.endpoints[0].state.write().unwrap().meta = Some(Meta::from_info(info(vec![set_of("eu")], 0, 10)));
        assert_eq!(set.pick(0, 1, &[Matcher::equal("region", "eu")], &|_| true).down.len(), 1);
        assert!(set.pick(0, 1, &[Matcher::equal("region", "us")], &|_| true).down.is_empty());
        assert!(set.pick(11, 20, &[], &|_| true).down.is_empty());
        set.endpoints[0].state.write().unwrap().last_error = None;
        let p = set.pick(0, 1, &[], &|_| true);
        assert_eq!((p.up.len(), p.down.len()), (1, 0));
        assert!(p.up[0].supports_without_replica_labels());
    }

    fn set_of(region: &str) -> ZLabelSet {
        set(&[("region", region)])
    }
}
