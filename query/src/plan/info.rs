//! `PromInfo`: the experimental `info(v [, label-selector])` function, which enriches each
//! series of `v` with the data labels of the info series (by default `target_info`) that share
//! its identifying labels (`instance`, `job`).
//!
//! ```text
//!   input 0: v, step-aligned                 input 1: info series, selected by the effective
//!   {__name__="up", instance="a", job="j"}   name matchers + the data-label matchers, read
//!        │                                   as instant vectors at the reference time of v
//!        │                                   (value = the chosen sample's own timestamp)
//!        │                                   {__name__="target_info", instance="a", job="j", k8s="x"}
//!        ▼                                          │
//!   per step t:  key(base, name) = (name, base's instance, base's job)  for every info name
//!                key(info)       = (its name, its instance, its job)
//!                several info series with one key at t: the newest sample wins; the same
//!                sample time is "found duplicate series for info metric"
//!        ▼
//!   {__name__="up", instance="a", job="j", k8s="x"}   base labels win over data labels; two
//!                                                    info metrics disagreeing on a data label
//!                                                    is "conflicting label: <name>"
//! ```
//!
//! Semantics follow Prometheus's `promql/info.go` (3.14):
//! * The selector's `__name__` matchers choose the info metrics: all of them when at least one is
//!   positive; `__name__=~".+_info"` plus the negative ones when all are negative; otherwise
//!   `target_info`. Base series whose name matches those matchers are info series themselves and
//!   pass through unchanged.
//! * The other matchers are data-label matchers: they restrict which info series are used and,
//!   when present, which of their labels are added. A base sample that no info series enriches is
//!   dropped when some data-label matcher does not match the empty string, and kept unchanged
//!   otherwise.
//! * Only info series whose identifying labels take values that the (non-info) base series have
//!   take part; if no base series has an identifying label, none do.
//! * The info series are looked up at the reference time of `v` (input 1's selector carries it):
//!   the `@`/`offset` of the selectors under `v` when all of them agree, else the step itself.
//!
//! The node needs all of its input: the candidate info series depend on every base series.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use engine::{Labels, Matcher};

use super::series_scan::MatcherSpec;
use super::{EvalCtx, Grid, NodeSpec, SeriesData, TimeShift};
use crate::error::{Error, Result};

/// The labels that identify the target an info series describes.
pub(crate) const IDENTIFYING_LABELS: [&str; 2] = ["instance", "job"];

/// The info metric used when the selector names none.
pub(crate) const TARGET_INFO: &str = "target_info";

/// Parameters of `info()`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd)]
pub(crate) struct InfoSpec {
    /// Evaluation steps.
    pub(crate) grid: Grid,
    /// The effective `__name__` matchers that select info metrics (see the module docs).
    pub(crate) name_matchers: Vec<MatcherSpec>,
    /// The selector's other matchers (data-label matchers).
    pub(crate) data_matchers: Vec<MatcherSpec>,
    /// When the info series are looked up relative to each step (for EXPLAIN; input 1 applies it).
    pub(crate) reference: TimeShift,
}

impl InfoSpec {
    /// Splits the selector's matchers into the effective name matchers and the data matchers.
    pub(crate) fn from_selector(grid: Grid, matchers: Vec<MatcherSpec>, reference: TimeShift) -> Result<Self> {
        for m in &matchers {
            m.to_matcher()?;
        }
        let (names, data): (Vec<MatcherSpec>, Vec<MatcherSpec>) =
            matchers.into_iter().partition(|m| m.name == "__name__");
        let positive = names.iter().any(|m| m.op == "=" || m.op == "=~");
        let name_matchers = if positive {
            names
        } else if !names.is_empty() {
            let mut v = vec![MatcherSpec { name: "__name__".into(), op: "=~".into(), value: ".+_info".into() }];
            v.extend(names);
            v
        } else {
            vec![MatcherSpec { name: "__name__".into(), op: "=".into(), value: TARGET_INFO.into() }]
        };
        Ok(InfoSpec { grid, name_matchers, data_matchers: data, reference })
    }

    /// The matchers of the info-series scan: name matchers, then data matchers.
    pub(crate) fn scan_matchers(&self) -> Vec<MatcherSpec> {
        self.name_matchers.iter().chain(&self.data_matchers).cloned().collect()
    }
}

/// An info series' join key: its metric name and the identifying labels it has.
type Key = (String, [Option<String>; 2]);

fn id_values(l: &Labels) -> [Option<String>; 2] {
    IDENTIFYING_LABELS.map(|n| l.get(n).filter(|v| !v.is_empty()).map(str::to_string))
}

/// A label set as Prometheus's `Labels.String()` writes it: `{__name__="x", a="b"}`.
fn go_labels(l: &Labels) -> String {
    let parts: Vec<String> = l.iter().map(|x| format!("{}={:?}", x.name, x.value)).collect();
    format!("{{{}}}", parts.join(", "))
}

fn compile(ms: &[MatcherSpec]) -> Result<Vec<Matcher>> {
    ms.iter().map(MatcherSpec::to_matcher).collect()
}

/// The point of `s` at step `t`, advancing the series' cursor.
fn at_step(s: &SeriesData, cursor: &mut usize, t: i64) -> Option<f64> {
    while *cursor < s.ts.len() && s.ts[*cursor] < t {
        *cursor += 1;
    }
    (*cursor < s.ts.len() && s.ts[*cursor] == t).then(|| s.vs[*cursor])
}

impl NodeSpec for InfoSpec {
    const NAME: &'static str = "PromInfo";

    fn fmt_params(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}, info={{", self.grid)?;
        for (i, m) in self.name_matchers.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}{}{:?}", m.name, m.op, m.value)?;
        }
        f.write_str("}, data=[")?;
        for (i, m) in self.data_matchers.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}{}{:?}", m.name, m.op, m.value)?;
        }
        write!(f, "], join={}", IDENTIFYING_LABELS.join(","))?;
        self.reference.fmt_suffix(f)
    }

    fn eval(&self, main: Vec<SeriesData>, params: &[Vec<SeriesData>], ctx: &EvalCtx) -> Result<Vec<SeriesData>> {
        let name_ms = compile(&self.name_matchers)?;
        let data_ms = compile(&self.data_matchers)?;
        let data_names: BTreeSet<&str> = self.data_matchers.iter().map(|m| m.name.as_str()).collect();
        let data_requires_value = data_ms.iter().any(|m| !m.matches(""));
        let is_info = |l: &Labels| {
            let name = l.metric_name().unwrap_or("");
            name_ms.iter().all(|m| m.matches(name))
        };

        // Base series that are info series themselves pass through; the others register the
        // identifying label values an info series must have to take part.
        let ignored: Vec<bool> = main.iter().map(|s| is_info(&s.labels)).collect();
        let mut wanted: [Option<BTreeSet<&str>>; 2] = [None, None];
        for (s, _) in main.iter().zip(&ignored).filter(|(_, ign)| !**ign) {
            for (i, n) in IDENTIFYING_LABELS.iter().enumerate() {
                if let Some(v) = s.labels.get(n).filter(|v| !v.is_empty()) {
                    wanted[i].get_or_insert_with(BTreeSet::new).insert(v);
                }
            }
        }
        let empty = Vec::new();
        let info_in = params.first().unwrap_or(&empty);
        let info: Vec<&SeriesData> = if wanted.iter().all(Option::is_none) {
            Vec::new()
        } else {
            info_in
                .iter()
                .filter(|s| {
                    IDENTIFYING_LABELS.iter().zip(&wanted).all(|(n, w)| match w {
                        Some(vals) => s.labels.get(n).is_some_and(|v| vals.contains(v)),
                        None => true,
                    })
                })
                .collect()
        };
        let info_keys: Vec<Key> =
            info.iter().map(|s| (s.labels.metric_name().unwrap_or("").to_string(), id_values(&s.labels))).collect();
        let info_names: BTreeSet<&str> = info_keys.iter().map(|k| k.0.as_str()).collect();
        let base_ids: Vec<[Option<String>; 2]> = main.iter().map(|s| id_values(&s.labels)).collect();

        let mut base_cur = vec![0usize; main.len()];
        let mut info_cur = vec![0usize; info.len()];
        // Output series by label set, with the last step each got a point at.
        let mut out: Vec<SeriesData> = Vec::new();
        let mut out_idx: HashMap<Labels, (usize, i64)> = HashMap::new();
        let mut total = 0usize;
        for t in self.grid.times() {
            // The info series present at t, one per key: the newest sample wins.
            let mut by_key: HashMap<&Key, (usize, f64)> = HashMap::new();
            for (i, s) in info.iter().enumerate() {
                let Some(orig) = at_step(s, &mut info_cur[i], t) else { continue };
                match by_key.get(&info_keys[i]) {
                    Some(&(j, prev)) if prev == orig => {
                        return Err(Error::Execution(format!(
                            "found duplicate series for info metric: existing {} @ {}, new {} @ {}",
                            go_labels(&info[j].labels),
                            (prev * 1000.0).round() as i64,
                            go_labels(&s.labels),
                            (orig * 1000.0).round() as i64
                        )));
                    }
                    Some(&(_, prev)) if prev > orig => {}
                    _ => {
                        by_key.insert(&info_keys[i], (i, orig));
                    }
                }
            }
            for (b, s) in main.iter().enumerate() {
                let Some(v) = at_step(s, &mut base_cur[b], t) else { continue };
                let labels = if ignored[b] {
                    s.labels.clone()
                } else {
                    let mut added: Vec<(&str, &str)> = Vec::new();
                    let mut seen = 0usize;
                    for name in &info_names {
                        let key: Key = (name.to_string(), base_ids[b].clone());
                        let Some(&(i, _)) = by_key.get(&key) else { continue };
                        for l in info[i].labels.iter() {
                            if l.name == "__name__" || (!data_names.is_empty() && !data_names.contains(l.name.as_str()))
                            {
                                continue;
                            }
                            if let Some((_, prev)) = added.iter().find(|(n, _)| *n == l.name) {
                                if *prev != l.value {
                                    return Err(Error::Execution(format!("conflicting label: {}", l.name)));
                                }
                                continue;
                            }
                            if s.labels.get(&l.name).is_some() {
                                continue;
                            }
                            added.push((&l.name, &l.value));
                        }
                        seen += 1;
                    }
                    if seen == 0 && data_requires_value {
                        continue;
                    }
                    let mut l = s.labels.clone();
                    for (n, v) in added {
                        l.set(n, v);
                    }
                    l
                };
                match out_idx.get_mut(&labels) {
                    Some((i, last)) => {
                        if *last == t {
                            return Err(Error::Execution(
                                "vector cannot contain metrics with the same labelset".into(),
                            ));
                        }
                        *last = t;
                        out[*i].push(t, v);
                    }
                    None => {
                        out_idx.insert(labels.clone(), (out.len(), t));
                        let mut o = SeriesData::new(labels);
                        o.push(t, v);
                        out.push(o);
                    }
                }
                total += 1;
                ctx.check_samples(total)?;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn ser(pairs: &[(&str, &str)], ts: &[i64], vs: &[f64]) -> SeriesData {
        SeriesData { labels: Labels::from_pairs(pairs.iter().copied()), ts: ts.to_vec(), vs: vs.to_vec() }
    }

    fn m(name: &str, op: &str, value: &str) -> MatcherSpec {
        MatcherSpec { name: name.into(), op: op.into(), value: value.into() }
    }

    #[test]
    fn effective_name_matchers() {
        let g = Grid::new(0, 0, 1);
        let s = InfoSpec::from_selector(g, vec![], TimeShift::default()).unwrap();
        assert_eq!(s.name_matchers, vec![m("__name__", "=", "target_info")]);
        let s = InfoSpec::from_selector(g, vec![m("__name__", "!~", "x.*"), m("k", "=", "v")], TimeShift::default())
            .unwrap();
        assert_eq!(s.name_matchers, vec![m("__name__", "=~", ".+_info"), m("__name__", "!~", "x.*")]);
        assert_eq!(s.data_matchers, vec![m("k", "=", "v")]);
        let s = InfoSpec::from_selector(g, vec![m("__name__", "=", "build_info")], TimeShift::default()).unwrap();
        assert_eq!(s.name_matchers, vec![m("__name__", "=", "build_info")]);
    }

    #[test]
    fn enriches_newest_info_and_drops_unmatched_when_required() {
        let g = Grid::new(0, 120_000, 60_000);
        let base = vec![
            ser(&[("__name__", "up"), ("instance", "a"), ("job", "j")], &[0, 60_000, 120_000], &[1.0, 2.0, 3.0]),
            ser(&[("__name__", "up"), ("instance", "b"), ("job", "j")], &[0], &[9.0]),
        ];
        // Two target_info series for instance a: the newer sample wins at 60s; from 120s only "v2".
        let info = vec![
            ser(&[("__name__", "target_info"), ("instance", "a"), ("job", "j"), ("v", "1")], &[0, 60_000], &[0.0, 0.0]),
            ser(
                &[("__name__", "target_info"), ("instance", "a"), ("job", "j"), ("v", "2")],
                &[60_000, 120_000],
                &[60.0, 120.0],
            ),
        ];
        let spec = InfoSpec::from_selector(g, vec![m("v", "=~", ".+")], TimeShift::default()).unwrap();
        let out = spec.eval(base, &[info], &EvalCtx::new(100)).unwrap();
        let got: Vec<(String, Vec<i64>, Vec<f64>)> =
            out.iter().map(|s| (s.labels.to_string(), s.ts.clone(), s.vs.clone())).collect();
        assert_eq!(
            got,
            vec![
                (r#"up{instance="a", job="j", v="1"}"#.to_string(), vec![0], vec![1.0]),
                (r#"up{instance="a", job="j", v="2"}"#.to_string(), vec![60_000, 120_000], vec![2.0, 3.0]),
            ]
        );
    }

    #[test]
    fn duplicate_and_conflicting_info_series_fail() {
        let g = Grid::new(0, 0, 1);
        let base = vec![ser(&[("__name__", "up"), ("instance", "a")], &[0], &[1.0])];
        let dup = vec![
            ser(&[("__name__", "target_info"), ("instance", "a"), ("x", "1")], &[0], &[5.0]),
            ser(&[("__name__", "target_info"), ("instance", "a"), ("x", "2")], &[0], &[5.0]),
        ];
        let spec = InfoSpec::from_selector(g, vec![], TimeShift::default()).unwrap();
        let e = spec.eval(base.clone(), &[dup], &EvalCtx::new(100)).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"found duplicate series for info metric: existing {__name__="target_info", instance="a", x="1"} @ 5000, new {__name__="target_info", instance="a", x="2"} @ 5000"#
        );
        let conflict = vec![
            ser(&[("__name__", "a_info"), ("instance", "a"), ("x", "1")], &[0], &[0.0]),
            ser(&[("__name__", "b_info"), ("instance", "a"), ("x", "2")], &[0], &[0.0]),
        ];
        let spec = InfoSpec::from_selector(g, vec![m("__name__", "=~", ".+_info")], TimeShift::default()).unwrap();
        let e = spec.eval(base, &[conflict], &EvalCtx::new(100)).unwrap_err();
        assert_eq!(e.to_string(), "conflicting label: x");
    }
}
