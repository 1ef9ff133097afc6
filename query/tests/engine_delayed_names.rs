//! Delayed `__name__` removal (`EngineOptions::enable_delayed_name_removal`, Prometheus's
//! `promql-delayed-name-removal`), each query run with the option off (stock Prometheus 3.x)
//! and on (Prometheus's test engine).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use engine::{Labels, MemSource};
use query::{Engine, EngineOptions, Value};

/// `a_total{env="1"}` = 0, 60, 120 and `b_total{env="1"}` = 60, 120, 180 at 0, 5m, 10m;
/// `m_a` = 1 at 0 and `m_b` = 3, 4 at 0, 10m; `h_bucket{le="1"}` = 1, `h_bucket{le="+Inf"}` = 2.
fn engine(delayed: bool) -> Engine {
    let src = MemSource::new();
    let ts = [0, 300_000, 600_000];
    src.add(Labels::from_pairs([("__name__", "a_total"), ("env", "1")]), &ts, &[0.0, 60.0, 120.0]);
    src.add(Labels::from_pairs([("__name__", "b_total"), ("env", "1")]), &ts, &[60.0, 120.0, 180.0]);
    src.add(Labels::from_pairs([("__name__", "m_a")]), &[0], &[1.0]);
    src.add(Labels::from_pairs([("__name__", "m_b")]), &[0, 600_000], &[3.0, 4.0]);
    for (le, v) in [("1", 1.0), ("+Inf", 2.0)] {
        src.add(Labels::from_pairs([("__name__", "h_bucket"), ("le", le)]), &ts, &[v; 3]);
    }
    Engine::new(Arc::new(src), EngineOptions { enable_delayed_name_removal: delayed, ..Default::default() })
}

/// The instant query's vector as sorted `(labels, value)` pairs, or the error text.
async fn instant(e: &Engine, q: &str) -> Result<Vec<(String, f64)>, String> {
    let r = e.instant_query(q, 600_000).await.map_err(|e| e.to_string())?;
    let Value::Vector(mut v) = r.value else { panic!("not a vector: {:?}", r.value) };
    v.sort_by(|a, b| a.labels.cmp(&b.labels));
    Ok(v.into_iter().map(|s| (s.labels.to_string(), s.v)).collect())
}

fn pairs(p: &[(&str, f64)]) -> Vec<(String, f64)> {
    p.iter().map(|(l, v)| (l.to_string(), *v)).collect()
}

const SAME_LABELSET: &str = "vector cannot contain metrics with the same labelset";

#[tokio::test]
async fn label_functions_read_and_keep_a_name_marked_for_removal() {
    let q = r#"label_replace(rate({env="1"}[10m]), "my_name", "rate_$1", "__name__", "(.+)")"#;
    // Off: rate drops both names at once and the two series collide.
    assert!(instant(&engine(false), q).await.unwrap_err().contains(SAME_LABELSET));
    assert_eq!(
        instant(&engine(true), q).await.unwrap(),
        pairs(&[(r#"{env="1", my_name="rate_a_total"}"#, 0.2), (r#"{env="1", my_name="rate_b_total"}"#, 0.2)])
    );
    // Writing __name__ keeps it.
    let q = r#"label_replace(rate({env="1"}[10m]), "__name__", "rate_$1", "__name__", "(.+)")"#;
    assert!(instant(&engine(false), q).await.unwrap_err().contains(SAME_LABELSET));
    assert_eq!(
        instant(&engine(true), q).await.unwrap(),
        pairs(&[(r#"rate_a_total{env="1"}"#, 0.2), (r#"rate_b_total{env="1"}"#, 0.2)])
    );
    let q = r#"label_join(rate({env="1"}[10m]), "__name__", "_", "__name__", "env")"#;
    assert_eq!(
        instant(&engine(true), q).await.unwrap(),
        pairs(&[(r#"a_total_1{env="1"}"#, 0.2), (r#"b_total_1{env="1"}"#, 0.2)])
    );
    // An empty source label name is an absent label, not the marker.
    let q = r#"label_replace(rate(a_total[10m]), "x", "y", "", "")"#;
    for delayed in [false, true] {
        assert_eq!(instant(&engine(delayed), q).await.unwrap(), pairs(&[(r#"{env="1", x="y"}"#, 0.2)]));
    }
}

#[tokio::test]
async fn aggregation_by_name_sees_the_marked_name() {
    let q = r#"sum by (__name__) (rate({env="1"}[10m]))"#;
    assert_eq!(instant(&engine(false), q).await.unwrap(), pairs(&[("{}", 0.4)]));
    // On: two groups (one per name), both marked; removing the names makes them collide.
    assert!(instant(&engine(true), q).await.unwrap_err().contains(SAME_LABELSET));
    for delayed in [false, true] {
        let e = engine(delayed);
        let v = instant(&e, r#"sum by (__name__, env) (a_total)"#).await.unwrap();
        assert_eq!(v, pairs(&[(r#"a_total{env="1"}"#, 120.0)]));
        let v = instant(&e, r#"topk(5, sum by (__name__, env) (rate(a_total[10m])))"#).await.unwrap();
        assert_eq!(v, pairs(&[(r#"{env="1"}"#, 0.2)]));
        let v = instant(&e, r#"sum without (env) (rate({env="1"}[10m]))"#).await.unwrap();
        assert_eq!(v, pairs(&[("{}", 0.4)]));
    }
    // A group is marked when any member is: the unmarked a_total{env="1"} and the marked rate
    // of it share the group of their common name.
    let q = r#"sum by (__name__) (a_total or label_replace(rate(a_total[10m]), "env", "2", "", ""))"#;
    assert_eq!(instant(&engine(true), q).await.unwrap(), pairs(&[("{}", 120.2)]));
}

#[tokio::test]
async fn operators_mark_or_drop_as_prometheus_does() {
    for delayed in [false, true] {
        let e = engine(delayed);
        assert_eq!(instant(&e, "-a_total").await.unwrap(), pairs(&[(r#"{env="1"}"#, -120.0)]));
        assert_eq!(instant(&e, "a_total * 2").await.unwrap(), pairs(&[(r#"{env="1"}"#, 240.0)]));
        assert_eq!(instant(&e, "a_total + b_total").await.unwrap(), pairs(&[(r#"{env="1"}"#, 300.0)]));
        assert_eq!(instant(&e, "a_total <= bool b_total").await.unwrap(), pairs(&[(r#"{env="1"}"#, 1.0)]));
        assert_eq!(instant(&e, "a_total <= b_total").await.unwrap(), pairs(&[(r#"a_total{env="1"}"#, 120.0)]));
        assert_eq!(
            instant(&e, "last_over_time(a_total[10m])").await.unwrap(),
            pairs(&[(r#"a_total{env="1"}"#, 120.0)])
        );
        // A subquery's series lose a marked name before the range function reads them.
        let v = instant(&e, "last_over_time(abs(a_total)[10m:])").await.unwrap();
        assert_eq!(v, pairs(&[(r#"{env="1"}"#, 120.0)]));
        let v = instant(&e, "histogram_quantile(0.5, h_bucket)").await.unwrap();
        assert_eq!(v, pairs(&[("{}", 1.0)]));
    }
}

#[tokio::test]
async fn range_results_merge_series_that_meet_once_names_are_removed() {
    // `-m_a` has a point at 0 only, `-m_b` at 0 and 10m; `or` keeps m_b's only where m_a has
    // none, so the unnamed results meet without overlapping and merge into one series.
    for delayed in [false, true] {
        let r = engine(delayed).range_query("-m_a or -m_b", 0, 1_200_000, 600_000).await.unwrap();
        let Value::Matrix(m) = r.value else { panic!() };
        assert_eq!(m.len(), 1, "delayed={delayed}: {m:?}");
        assert_eq!(m[0].labels.to_string(), "{}");
        assert_eq!(m[0].points, vec![(0, -1.0), (600_000, -4.0)]);
    }
    // Overlapping points of one label set after name removal are an error.
    // `or` dedups on the unnamed signature: b_total's series never gets in.
    let r = engine(true).range_query("-a_total or -b_total", 0, 600_000, 300_000).await.unwrap();
    let Value::Matrix(m) = r.value else { panic!() };
    assert_eq!((m.len(), m[0].points.clone()), (1, vec![(0, -0.0), (300_000, -60.0), (600_000, -120.0)]));
    for delayed in [false, true] {
        let err = engine(delayed).range_query(r#"{env="1"} * 2"#, 0, 600_000, 300_000).await;
        assert!(err.unwrap_err().to_string().contains(SAME_LABELSET), "delayed={delayed}");
    }
}

#[tokio::test]
async fn matching_errors_print_the_kept_name_and_not_the_marker() {
    let q = r#"a_total + on(env) rate({env="1"}[10m])"#;
    let off = instant(&engine(false), q).await.unwrap_err();
    assert!(off.contains("found duplicate series for the match group {env=\"1\"} on the right hand-side"), "{off}");
    let on = instant(&engine(true), q).await.unwrap_err();
    assert!(on.contains(r#"{__name__="a_total", env="1"}"#) && !on.contains('\0'), "{on}");
}
