//! Label answers of store gateways kept by the querier between Info rounds, so that a repeated
//! `/api/v1/labels` or `/api/v1/label/<name>/values` does not cross the second hop (HTTP ->
//! querier -> gRPC -> store) each time.
//!
//! ```text
//!   Info round (every --endpoint.info-timeout) ──► generation = hash of the whole Info answer
//!   LabelNames/LabelValues(request, tenant) ──► cached under the generation it was asked in
//!        a later request in the same generation ──► the cached answer, no gRPC call
//!        a new generation ──► everything cached before is dropped
//! ```
//!
//! Only endpoints whose Info says `component_type: store` are cached: a store gateway's data
//! changes only when it syncs its bucket, and a sync that adds, drops, compacts or downsamples
//! blocks changes its Info (a Strata store lists one TSDB info per block, as Thanos's does).
//! Receivers, sidecars and rulers have heads whose label sets change between Info rounds, so they
//! are always asked. Answers that came with warnings are not kept. The cache is bounded
//! ([`MAX_CACHED_BYTES`]); when full it starts over.
//!
//! What the cache shares with the querier's endpoint pruning (which also reads the last Info
//! round): after a store syncs new blocks, its new label names appear once the next Info round
//! sees a different answer (at most one `--endpoint.info-timeout`, 5 s by default, on top of the
//! store's own `--sync-block-duration`); a store that went down answers from the cache until the
//! Info round notices. A bucket change that leaves a store's Info answer byte-for-byte the same (a
//! block rewritten under a new ULID with the same time range and external labels, the old one
//! dropped in the same sync) is not seen until the Info answer changes again or the querier
//! restarts.

use std::collections::HashMap;
use std::sync::Mutex;

use engine::Matcher;

/// Most bytes of label strings kept per endpoint.
pub(crate) const MAX_CACHED_BYTES: usize = 16 << 20;

/// What a label request asked, as the cache key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct LabelKey {
    /// The label whose values were asked; None: label names.
    name: Option<String>,
    /// The matchers, each as PromQL prints it (the value quoted), in request order.
    matchers: Vec<String>,
    min_t: i64,
    max_t: i64,
    abort: bool,
    without_replica_labels: Vec<String>,
    tenant: Option<String>,
}

impl LabelKey {
    /// The key of a LabelNames (`name` None) or LabelValues request.
    pub(crate) fn new(
        name: Option<&str>,
        matchers: &[Matcher],
        (min_t, max_t): (i64, i64),
        abort: bool,
        without_replica_labels: &[String],
        tenant: Option<&str>,
    ) -> Self {
        LabelKey {
            name: name.map(str::to_string),
            matchers: matchers.iter().map(ToString::to_string).collect(),
            min_t,
            max_t,
            abort,
            without_replica_labels: without_replica_labels.to_vec(),
            tenant: tenant.map(str::to_string),
        }
    }
}

/// The bytes an answer holds in the cache (what counts toward [`MAX_CACHED_BYTES`]).
fn answer_bytes(answer: &[String]) -> usize {
    answer.iter().map(|s| s.len() + std::mem::size_of::<String>()).sum()
}

#[derive(Debug, Default)]
struct State {
    generation: u64,
    entries: HashMap<LabelKey, Vec<String>>,
    bytes: usize,
}

/// One endpoint's cached label answers (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct LabelCache {
    state: Mutex<State>,
}

impl LabelCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The answer cached for `key` in `generation`; a new generation drops everything older.
    pub(crate) fn get(&self, generation: u64, key: &LabelKey) -> Option<Vec<String>> {
        let mut st = self.lock();
        if st.generation != generation {
            *st = State { generation, ..State::default() };
            return None;
        }
        st.entries.get(key).cloned()
    }

    /// Keeps `answer` for `key` if `generation` is still the current one.
    pub(crate) fn put(&self, generation: u64, key: LabelKey, answer: &[String]) {
        let bytes = answer_bytes(answer);
        let mut st = self.lock();
        if st.generation != generation || bytes > MAX_CACHED_BYTES {
            return;
        }
        if st.bytes + bytes > MAX_CACHED_BYTES {
            st.entries.clear();
            st.bytes = 0;
        }
        st.bytes += bytes;
        if let Some(old) = st.entries.insert(key, answer.to_vec()) {
            st.bytes -= answer_bytes(&old);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn key(name: Option<&str>, value: &str) -> LabelKey {
        LabelKey::new(name, &[Matcher::equal("job", value)], (0, 10), false, &[], Some("t"))
    }

    #[test]
    fn answers_live_within_their_generation() {
        let c = LabelCache::default();
        let a = vec!["instance".to_string(), "job".to_string()];
        assert_eq!(c.get(1, &key(None, "api")), None);
        c.put(1, key(None, "api"), &a);
        assert_eq!(c.get(1, &key(None, "api")), Some(a.clone()));
        // another request is another entry
        assert_eq!(c.get(1, &key(None, "web")), None);
        assert_eq!(c.get(1, &key(Some("job"), "api")), None);
        assert_ne!(
            key(None, "api"),
            LabelKey::new(None, &[Matcher::equal("job", "api")], (0, 11), false, &[], Some("t"))
        );
        // a new generation drops it, and an answer asked in the old one is not kept
        assert_eq!(c.get(2, &key(None, "api")), None);
        c.put(1, key(None, "api"), &a);
        assert_eq!(c.get(2, &key(None, "api")), None);
        c.put(2, key(None, "api"), &a);
        assert_eq!(c.get(2, &key(None, "api")), Some(a));
    }

    #[test]
    fn bounded() {
        let c = LabelCache::default();
        let big = vec!["x".repeat(MAX_CACHED_BYTES / 2)];
        c.put(0, key(None, "a"), &big);
        c.put(0, key(None, "b"), &big);
        // the second did not fit beside the first: the cache started over
        assert_eq!(c.get(0, &key(None, "a")), None);
        assert_eq!(c.get(0, &key(None, "b")), Some(big));
        assert!(c.lock().bytes <= MAX_CACHED_BYTES);
        c.put(0, key(None, "c"), &[("y".repeat(MAX_CACHED_BYTES + 1))]);
        assert_eq!(c.get(0, &key(None, "c")), None);
    }
}
