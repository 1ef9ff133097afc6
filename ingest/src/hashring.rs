//! Hashrings and replication of the receive component, as Thanos receive does them.
//!
//! The `--receive.hashrings-file` is Thanos's JSON: a list of hashrings, each with an optional name,
//! the tenants it serves (none: every tenant) and its endpoints (strings `host:port`, or objects
//! `{"address": "host:port", "az": "..."}`):
//!
//! ```json
//! [{"hashring": "default", "tenants": [], "endpoints": ["10.0.0.1:10901", {"address": "10.0.0.2:10901"}]}]
//! ```
//!
//! A tenant is served by the first hashring that lists it, or else by the first hashring without
//! tenants. Series are placed with Thanos's default `hashmod` algorithm:
//!
//! ```text
//!   h = xxhash64(tenant 0xff name1 0xff value1 0xff name2 0xff value2 0xff ...)   (labels sorted)
//!   replica n (0-based) of the series goes to endpoints_sorted_by_address[(h + n) mod len]
//! ```
//!
//! With `--receive.replication-factor` rf every series goes to rf distinct endpoints and a write
//! succeeds once a quorum of `floor(rf / 2) + 1` of them wrote it (1 for rf = 2, as Thanos).
//! Endpoints are the receivers' gRPC addresses (`--grpc-address`), as in Thanos: receivers forward
//! to each other over `thanos.WriteableStore/RemoteWrite`, so Strata and Thanos receivers can share
//! a ring.

use std::path::Path;

use engine::Labels;
use serde::Deserialize;

use crate::error::{Error, Result};

/// One endpoint of a hashring file: a bare `"host:port"` or `{"address": ..., "az": ...}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum EndpointSpec {
    Address(String),
    Object {
        address: String,
        #[serde(default)]
        az: String,
    },
}

/// One hashring as the JSON file writes it.
#[derive(Debug, Clone, Deserialize)]
struct HashringSpec {
    #[serde(default)]
    hashring: String,
    #[serde(default)]
    tenants: Vec<String>,
    endpoints: Vec<EndpointSpec>,
    #[serde(default)]
    algorithm: String,
}

/// One hashring: the tenants it serves and its endpoints, sorted by address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hashring {
    /// Name (informational).
    pub name: String,
    /// Tenants served; empty means every tenant not served by an earlier ring.
    pub tenants: Vec<String>,
    /// Endpoints (`host:port`), sorted by address as Thanos's hashmod ring does.
    pub endpoints: Vec<String>,
}

/// All hashrings of a configuration, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hashrings {
    rings: Vec<Hashring>,
}

/// Write quorum of a replication factor: `floor(rf / 2) + 1`, except 1 for rf = 2, as Thanos
/// (`writeQuorum` in its receive handler: two replicas keep the guarantees of an HA pair of
/// Prometheus servers, where one copy suffices).
///
/// ```
/// assert_eq!(ingest::hashring::write_quorum(1), 1);
/// assert_eq!(ingest::hashring::write_quorum(2), 1);
/// assert_eq!(ingest::hashring::write_quorum(3), 2);
/// assert_eq!(ingest::hashring::write_quorum(4), 3);
/// ```
pub fn write_quorum(replication_factor: u64) -> u64 {
    if replication_factor == 2 { 1 } else { replication_factor / 2 + 1 }
}

/// Thanos's series hash for placement: xxHash64 (seed 0) over the tenant, `0xff`, then every label
/// as `name 0xff value 0xff` in label order.
pub fn series_hash(tenant: &str, labels: &Labels) -> u64 {
    hash_of(tenant, labels.iter().map(|l| (l.name.as_str(), l.value.as_str())))
}

/// [`series_hash`] of label pairs sorted by name (as a [`Labels`] holds them).
pub fn series_hash_pairs(tenant: &str, labels: &[(&str, &str)]) -> u64 {
    hash_of(tenant, labels.iter().copied())
}

fn hash_of<'a>(tenant: &str, labels: impl Iterator<Item = (&'a str, &'a str)>) -> u64 {
    let mut h = xxhash_rust::xxh64::Xxh64::new(0);
    h.update(tenant.as_bytes());
    h.update(&[0xff]);
    for (n, v) in labels {
        h.update(n.as_bytes());
        h.update(&[0xff]);
        h.update(v.as_bytes());
        h.update(&[0xff]);
    }
    h.digest()
}

impl Hashrings {
    /// Parses the JSON of a hashrings file; `what` names the file in errors.
    pub fn parse(text: &str, what: &str) -> Result<Self> {
        let bad = |reason: String| Error::Hashring { path: what.to_string(), reason };
        let specs: Vec<HashringSpec> = serde_json::from_str(text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        if specs.is_empty() {
            return Err(bad("the file lists no hashring".into()));
        }
        let mut rings = Vec::with_capacity(specs.len());
        for (i, s) in specs.into_iter().enumerate() {
            let label =
                if s.hashring.is_empty() { format!("hashring #{i}") } else { format!("hashring {:?}", s.hashring) };
            if !s.algorithm.is_empty() && s.algorithm != "hashmod" {
                return Err(bad(format!("{label}: algorithm {:?} is not supported (only \"hashmod\")", s.algorithm)));
            }
            let mut endpoints = Vec::with_capacity(s.endpoints.len());
            for e in s.endpoints {
                match e {
                    EndpointSpec::Address(a) => endpoints.push(a),
                    EndpointSpec::Object { address, az } => {
                        if !az.is_empty() {
                            return Err(bad(format!(
                                "{label}: endpoint {address:?} has az {az:?}; the hashmod algorithm does not support AZ-aware rings"
                            )));
                        }
                        endpoints.push(address);
                    }
                }
            }
            if endpoints.is_empty() {
                return Err(bad(format!("{label}: no endpoints")));
            }
            if let Some(e) = endpoints.iter().find(|e| e.is_empty()) {
                return Err(bad(format!("{label}: empty endpoint address {e:?}")));
            }
            endpoints.sort();
            rings.push(Hashring { name: s.hashring, tenants: s.tenants, endpoints });
        }
        Ok(Hashrings { rings })
    }

    /// Reads and parses a hashrings file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// A single ring of the given endpoints serving every tenant.
    pub fn single(endpoints: Vec<String>) -> Self {
        let mut endpoints = endpoints;
        endpoints.sort();
        Hashrings { rings: vec![Hashring { name: String::new(), tenants: vec![], endpoints }] }
    }

    /// The rings, in file order.
    pub fn rings(&self) -> &[Hashring] {
        &self.rings
    }

    /// Every distinct endpoint of every ring, sorted.
    pub fn all_endpoints(&self) -> Vec<String> {
        let mut all: Vec<String> = self.rings.iter().flat_map(|r| r.endpoints.iter().cloned()).collect();
        all.sort();
        all.dedup();
        all
    }

    /// The ring serving `tenant`: the first that lists it, else the first without tenants.
    pub fn ring_for(&self, tenant: &str) -> Result<&Hashring> {
        self.rings
            .iter()
            .find(|r| r.tenants.iter().any(|t| t == tenant))
            .or_else(|| self.rings.iter().find(|r| r.tenants.is_empty()))
            .ok_or_else(|| Error::NoHashring { tenant: tenant.to_string() })
    }

    /// The endpoint of replica `n` (0-based) of a series of `tenant`.
    pub fn get_n(&self, tenant: &str, labels: &Labels, n: u64) -> Result<&str> {
        self.get_n_for_hash(tenant, series_hash(tenant, labels), n)
    }

    /// [`Hashrings::get_n`] of a series whose [`series_hash`] is `hash`.
    pub fn get_n_for_hash(&self, tenant: &str, hash: u64, n: u64) -> Result<&str> {
        let ring = self.ring_for(tenant)?;
        let len = ring.endpoints.len() as u64;
        if n >= len {
            return Err(Error::InsufficientNodes { tenant: tenant.to_string(), have: len, want: n + 1 });
        }
        let i = hash.wrapping_add(n) % len;
        Ok(&ring.endpoints[i as usize])
    }

    /// The `replication_factor` endpoints of a series, replica 0 first.
    pub fn replicas(&self, tenant: &str, labels: &Labels, replication_factor: u64) -> Result<Vec<&str>> {
        self.replicas_for_hash(tenant, series_hash(tenant, labels), replication_factor)
    }

    /// [`Hashrings::replicas`] of a series whose [`series_hash`] is `hash`.
    pub fn replicas_for_hash(&self, tenant: &str, hash: u64, replication_factor: u64) -> Result<Vec<&str>> {
        (0..replication_factor).map(|n| self.get_n_for_hash(tenant, hash, n)).collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn ls(pairs: &[(&str, &str)]) -> Labels {
        Labels::from_pairs(pairs.iter().copied())
    }

    #[test]
    fn hash_matches_the_thanos_byte_layout() {
        let l = ls(&[("__name__", "up"), ("job", "a")]);
        let mut bytes = b"tenant-1\xff".to_vec();
        bytes.extend_from_slice(b"__name__\xffup\xffjob\xffa\xff");
        assert_eq!(series_hash("tenant-1", &l), xxhash_rust::xxh64::xxh64(&bytes, 0));
        // empty tenant and no labels: just the separator
        assert_eq!(series_hash("", &Labels::default()), xxhash_rust::xxh64::xxh64(&[0xff], 0));
        // the tenant is part of the placement
        assert_ne!(series_hash("a", &l), series_hash("b", &l));
    }

    #[test]
    fn parse_thanos_file_and_pick_ring() {
        let text = r#"[
            {"hashring": "special", "tenants": ["t1"], "endpoints": ["c:1", {"address": "a:1"}]},
            {"hashring": "default", "endpoints": ["z:9", "y:9", "x:9"]}
        ]"#;
        let h = Hashrings::parse(text, "hashrings.json").unwrap();
        assert_eq!(h.rings()[0].endpoints, vec!["a:1", "c:1"]);
        assert_eq!(h.rings()[1].endpoints, vec!["x:9", "y:9", "z:9"]);
        assert_eq!(h.ring_for("t1").unwrap().name, "special");
        assert_eq!(h.ring_for("other").unwrap().name, "default");
        assert_eq!(h.all_endpoints(), vec!["a:1", "c:1", "x:9", "y:9", "z:9"]);

        let only_named = Hashrings::parse(r#"[{"tenants": ["t1"], "endpoints": ["a:1"]}]"#, "f").unwrap();
        let e = only_named.ring_for("t2").unwrap_err().to_string();
        assert!(e.contains("t2"), "{e}");

        for bad in [
            "[]",
            "{",
            r#"[{"endpoints": []}]"#,
            r#"[{"endpoints": ["a"], "algorithm": "ketama"}]"#,
            r#"[{"endpoints": [{"address": "a:1", "az": "eu"}]}]"#,
        ] {
            let e = Hashrings::parse(bad, "bad.json").unwrap_err().to_string();
            assert!(e.contains("bad.json"), "{bad}: {e}");
        }
    }

    #[test]
    fn hashmod_assignment_and_replicas() {
        let h = Hashrings::single(vec!["r3:1".into(), "r1:1".into(), "r2:1".into()]);
        let eps = ["r1:1", "r2:1", "r3:1"];
        let l = ls(&[("__name__", "up"), ("instance", "i")]);
        let base = series_hash("default-tenant", &l);
        for n in 0..3u64 {
            let want = eps[((base.wrapping_add(n)) % 3) as usize];
            assert_eq!(h.get_n("default-tenant", &l, n).unwrap(), want);
        }
        let reps = h.replicas("default-tenant", &l, 3).unwrap();
        let mut sorted = reps.clone();
        sorted.sort();
        assert_eq!(sorted, eps, "three replicas land on three distinct endpoints");
        let e = h.get_n("default-tenant", &l, 3).unwrap_err().to_string();
        assert!(e.contains("have 3, want 4"), "{e}");

        // series spread over all endpoints
        let mut hits = [0usize; 3];
        for i in 0..300 {
            let l = ls(&[("__name__", "m"), ("i", &i.to_string())]);
            let ep = h.get_n("t", &l, 0).unwrap();
            hits[eps.iter().position(|e| *e == ep).unwrap()] += 1;
        }
        assert!(hits.iter().all(|&c| c > 60), "{hits:?}");
    }

    #[test]
    fn quorum() {
        assert_eq!([1, 2, 3, 4, 5].map(write_quorum), [1, 1, 2, 3, 3]);
    }
}
