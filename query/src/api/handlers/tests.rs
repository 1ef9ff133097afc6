//! Handler tests over a `MemSource`: parameters, status codes and the JSON the clients read.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use engine::{Labels, MemSource};
use serde_json::{Value as Json, json};
use tower::ServiceExt;

use crate::api::{ApiConfig, ApiMetrics, ApiState, router};

fn state_with(max_concurrent: usize) -> ApiState {
    let src = Arc::new(MemSource::new());
    let ts: Vec<i64> = (0..=10).map(|i| i * 60_000).collect();
    src.add(
        Labels::from_pairs([("__name__", "up"), ("instance", "h1"), ("job", "api")]),
        &ts,
        &ts.iter().map(|t| (*t / 60_000) as f64).collect::<Vec<_>>(),
    );
    src.add(Labels::from_pairs([("__name__", "up"), ("instance", "h2"), ("job", "web")]), &ts, &[1.0; 11]);
    src.add(Labels::from_pairs([("__name__", "http.requests"), ("code", "200")]), &[0], &[f64::INFINITY]);
    let mut cfg = ApiConfig { max_concurrent, ..Default::default() };
    cfg.flags.insert("query.lookback-delta".into(), "5m".into());
    ApiState::new(src, cfg, ApiMetrics::unregistered())
}

fn app() -> (ApiState, Router) {
    let s = state_with(20);
    (s.clone(), router(s))
}

async fn call(r: &Router, req: Request<Body>) -> (StatusCode, Json) {
    let resp = r.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    let v: Json = serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&body)));
    (status, v)
}

async fn get(r: &Router, uri: &str) -> (StatusCode, Json) {
    call(r, Request::get(uri).body(Body::empty()).unwrap()).await
}

async fn post(r: &Router, uri: &str, form: &str) -> (StatusCode, Json) {
    let req = Request::post(uri)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(form.to_string()))
        .unwrap();
    call(r, req).await
}

#[tokio::test]
async fn instant_query_vector_and_scalar() {
    let (_, r) = app();
    let (st, v) = get(&r, "/api/v1/query?query=up&time=120").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "success");
    assert_eq!(v["data"]["resultType"], "vector");
    let mut res = v["data"]["result"].as_array().unwrap().clone();
    res.sort_by_key(|s| s["metric"]["instance"].as_str().unwrap().to_string());
    assert_eq!(
        json!(res),
        json!([
            {"metric": {"__name__": "up", "instance": "h1", "job": "api"}, "value": [120, "2"]},
            {"metric": {"__name__": "up", "instance": "h2", "job": "web"}, "value": [120, "1"]},
        ])
    );
    assert!(v.get("warnings").is_none());

    let (st, v) = get(&r, "/api/v1/query?query=1%2B1&time=2015-07-01T20:10:51.781Z").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["data"], json!({"resultType": "scalar", "result": [1435781451.781, "2"]}));

    let (_, v) = get(&r, "/api/v1/query?query=%7B__name__%3D%22http.requests%22%7D&time=60").await;
    assert_eq!(v["data"]["result"][0]["value"], json!([60, "+Inf"]));

    let (_, v) = get(&r, "/api/v1/query?query=%22hello%22&time=1.5").await;
    assert_eq!(v["data"], json!({"resultType": "string", "result": [1.5, "hello"]}));

    let (_, v) = get(&r, "/api/v1/query?query=up%5B2m%5D&time=120&limit=1").await;
    assert_eq!(v["data"]["resultType"], "matrix");
    assert_eq!(v["data"]["result"].as_array().unwrap().len(), 1);
    assert_eq!(v["data"]["result"][0]["values"], json!([[60, "1"], [120, "2"]]));
    assert_eq!(v["warnings"], json!(["results truncated due to limit"]));
}

#[tokio::test]
async fn range_query_post_form() {
    let (_, r) = app();
    let (st, v) = post(&r, "/api/v1/query_range", "query=sum(up)&start=0&end=180&step=1m").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        v["data"],
        json!({"resultType": "matrix", "result": [{"metric": {}, "values": [[0, "1"], [60, "2"], [120, "3"], [180, "4"]]}]})
    );
    // A body value wins over the URL's.
    let (_, v) =
        post(&r, "/api/v1/query_range?query=nonexistent", "query=up%7Bjob%3D%22api%22%7D&start=60&end=90&step=30")
            .await;
    assert_eq!(v["data"]["result"][0]["values"], json!([[60, "1"], [90, "1"]]));
    // Scalars become one series without labels.
    let (_, v) = get(&r, "/api/v1/query_range?query=time()&start=0.5&end=1.5&step=0.5").await;
    assert_eq!(v["data"]["result"], json!([{"metric": {}, "values": [[0.500, "0.5"], [1, "1"], [1.500, "1.5"]]}]));
}

#[tokio::test]
async fn bad_requests_answer_bad_data() {
    let (_, r) = app();
    let cases = [
        ("/api/v1/query?query=sum(up", "invalid parameter \"query\""),
        ("/api/v1/query", "invalid parameter \"query\""),
        (
            "/api/v1/query?query=up&time=yesterday",
            "invalid parameter \"time\": cannot parse \"yesterday\" to a valid timestamp",
        ),
        ("/api/v1/query?query=up&timeout=soon", "invalid parameter \"timeout\""),
        ("/api/v1/query?query=up&limit=-1", "invalid parameter \"limit\": limit must be non-negative"),
        ("/api/v1/query?query=up&dedup=maybe", "invalid parameter \"dedup\""),
        ("/api/v1/query?query=up&max_source_resolution=-5m", "invalid parameter \"max_source_resolution\""),
        ("/api/v1/query_range?query=up&start=10&end=0&step=1", "end timestamp must not be before start time"),
        ("/api/v1/query_range?query=up&start=0&end=10&step=0", "zero or negative query resolution step widths"),
        ("/api/v1/query_range?query=up&start=0&end=10&step=-1", "zero or negative query resolution step widths"),
        ("/api/v1/query_range?query=up&start=0&end=11001&step=1", "exceeded maximum resolution of 11,000 points"),
        ("/api/v1/query_range?query=up&end=10&step=1", "invalid parameter \"start\""),
        ("/api/v1/query_range?query=up%5B5m%5D&start=0&end=10&step=1", "invalid parameter \"query\""),
        ("/api/v1/series", "no match[] parameter provided"),
        ("/api/v1/series?match[]=%7Bjob%3D~%22.*%22%7D", "at least one non-empty matcher"),
        ("/api/v1/labels?match[]=up%7B", "invalid parameter \"match[]\""),
        ("/api/v1/format_query?query=1%2B", "invalid parameter \"query\""),
    ];
    for (uri, want) in cases {
        let (st, v) = get(&r, uri).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{uri}: {v}");
        assert_eq!(v["status"], "error", "{uri}");
        assert_eq!(v["errorType"], "bad_data", "{uri}");
        let msg = v["error"].as_str().unwrap();
        assert!(msg.contains(want), "{uri}: {msg}");
        assert!(v.get("data").is_none());
    }
    // 11,000 points exactly are fine.
    let (st, _) = get(&r, "/api/v1/query_range?query=up&start=0&end=11000&step=1").await;
    assert_eq!(st, StatusCode::OK);
}

/// Percent-encodes a parameter value.
fn enc(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

#[tokio::test]
async fn evaluation_errors_answer_execution() {
    let (_, r) = app();
    let cases = [
        (r#"label_replace(up, "dst", "$1", "src", "(.*")"#, "invalid regular expression in label_replace(): (.*"),
        (r#"label_replace(up, "", "$1", "src", "(.*)")"#, "invalid destination label name in label_replace(): "),
        (r#"count_values("", up)"#, r#"invalid label name """#),
        ("topk(NaN, up)", "Parameter value is NaN"),
    ];
    for (q, want) in cases {
        let (st, v) = get(&r, &format!("/api/v1/query?time=120&query={}", enc(q))).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{q}: {v}");
        assert_eq!(v["errorType"], "execution", "{q}");
        assert_eq!(v["error"], want, "{q}");
        let (st, v) = get(&r, &format!("/api/v1/query_range?start=0&end=120&step=60&query={}", enc(q))).await;
        assert_eq!((st, v["errorType"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("execution")), "{q}");
    }
    // A parse error in the same place is still bad_data.
    let (st, v) = get(&r, &format!("/api/v1/query?query={}", enc(r#"label_replace(up, "dst")"#))).await;
    assert_eq!((st, v["errorType"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_data")));
}

#[tokio::test]
async fn raw_strings_and_empty_match_sides() {
    let (_, r) = app();
    // A raw string's backslashes are the regex's, in queries and in match[].
    let (st, v) = get(&r, &format!("/api/v1/query?time=120&query={}", enc(r"up{job=~`a\w+`}"))).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        v["data"]["result"],
        json!([{"metric": {"__name__": "up", "instance": "h1", "job": "api"}, "value": [120, "2"]}])
    );
    let (_, v) = get(&r, &format!("/api/v1/series?match[]={}", enc(r"up{instance=~`h\d`,job=~`w\w+`}"))).await;
    assert_eq!(v["data"], json!([{"__name__": "up", "instance": "h2", "job": "web"}]));
    let (_, v) = get(&r, &format!("/api/v1/format_query?query={}", enc(r"up{job=~`a\w+`}"))).await;
    assert_eq!(v["data"], r#"up{job=~"a\\w+"}"#);
    // Nothing on one side: an empty answer, not a matching error (both `up` series share the
    // empty `code` of the group `on(code)`).
    let (st, v) = get(&r, &format!("/api/v1/query?time=120&query={}", enc("nonexistent - on(code) up"))).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["result"], json!([]));
    let (st, v) = get(&r, &format!("/api/v1/query?time=120&query={}", enc("vector(1) - on(code) up"))).await;
    assert_eq!((st, v["errorType"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("execution")), "{v}");
}

#[tokio::test]
async fn series_labels_values() {
    let (_, r) = app();
    let (st, v) = get(&r, "/api/v1/series?match[]=up&match[]=%7Bcode%3D%22200%22%7D").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        v["data"],
        json!([
            {"__name__": "http.requests", "code": "200"},
            {"__name__": "up", "instance": "h1", "job": "api"},
            {"__name__": "up", "instance": "h2", "job": "web"},
        ])
    );
    let (_, v) = post(&r, "/api/v1/series", "match[]=up&limit=1&start=0&end=600").await;
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
    assert_eq!(v["warnings"], json!(["results truncated due to limit"]));
    // Thanos dedup over replica labels.
    let (_, v) = get(&r, "/api/v1/series?match[]=up&replicaLabels[]=instance&replicaLabels[]=job").await;
    assert_eq!(v["data"], json!([{"__name__": "up"}]));
    // Nothing in range.
    let (_, v) = get(&r, "/api/v1/series?match[]=up&start=100000&end=200000").await;
    assert_eq!(v["data"], json!([]));

    let (_, v) = get(&r, "/api/v1/labels").await;
    assert_eq!(v["data"], json!(["__name__", "code", "instance", "job"]));
    let (_, v) = get(&r, "/api/v1/labels?match[]=up").await;
    assert_eq!(v["data"], json!(["__name__", "instance", "job"]));
    let (_, v) = get(&r, "/api/v1/labels?limit=2").await;
    assert_eq!(v["data"], json!(["__name__", "code"]));
    assert_eq!(v["warnings"], json!(["results truncated due to limit"]));

    let (_, v) = get(&r, "/api/v1/label/__name__/values").await;
    assert_eq!(v["data"], json!(["http.requests", "up"]));
    let (_, v) = get(&r, "/api/v1/label/job/values?match[]=up%7Binstance%3D%22h2%22%7D").await;
    assert_eq!(v["data"], json!(["web"]));
    let (_, v) = get(&r, "/api/v1/label/nope/values").await;
    assert_eq!(v["data"], json!([]));
    let (_, v) = get(&r, "/api/v1/label/U__job/values").await;
    assert_eq!(v["data"], json!(["api", "web"]));
    let (_, v) = get(&r, "/api/v1/label/U______name____/values").await;
    assert_eq!(v["data"], json!(["http.requests", "up"]));
}

#[tokio::test]
async fn status_metadata_format_parse() {
    let (_, r) = app();
    let (_, v) = get(&r, "/api/v1/metadata").await;
    assert_eq!(v, json!({"status": "success", "data": {}}));
    let (_, v) = get(&r, "/api/v1/status/buildinfo").await;
    let keys = ["version", "revision", "branch", "buildUser", "buildDate", "goVersion"];
    for k in keys {
        assert!(v["data"][k].is_string(), "{k}");
    }
    assert!(v["data"]["version"].as_str().unwrap().starts_with("3."));
    let (_, v) = get(&r, "/api/v1/status/flags").await;
    assert_eq!(v["data"], json!({"query.lookback-delta": "5m"}));
    let (_, v) = post(&r, "/api/v1/format_query", "query=sum(rate(x%5B5m%5D))by(job)").await;
    assert_eq!(v["data"], "sum by (job) (rate(x[5m]))");
    let (_, v) = get(&r, "/api/v1/parse_query?query=up%7Bjob%3D%22a%22%7D").await;
    assert_eq!(v["data"]["type"], "vectorSelector");
    assert_eq!(v["data"]["name"], "up");
    let (_, v) = get(&r, "/api/v1/query_exemplars?query=up").await;
    assert_eq!(v["data"], json!([]));
    let resp = r.clone().oneshot(Request::options("/api/v1/query").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn explain_stats_lookback() {
    let (_, r) = app();
    let (st, v) = get(&r, "/api/v1/query?query=sum(up)&time=120&explain=true&stats=all").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["result"][0]["value"], json!([120, "3"]));
    let plan = v["data"]["explain"].as_str().unwrap();
    assert!(plan.contains("physical plan"), "{plan}");
    assert!(v["data"]["stats"]["timings"]["evalTotalTime"].as_f64().unwrap() >= 0.0);
    let (_, v) = get(&r, "/api/v1/query_range?query=up&start=0&end=60&step=60&analyze=1").await;
    assert!(v["data"]["explain"].as_str().unwrap().contains("metrics"), "{v}");
    // 30s lookback, left-open as in Prometheus 3: at t=629.999s the last sample (600s) is still
    // visible, at 630s it is not; the default 5m lookback still sees it.
    let (_, v) = get(&r, "/api/v1/query?query=up&time=629.999&lookback_delta=30s").await;
    assert_eq!(v["data"]["result"].as_array().unwrap().len(), 2);
    let (_, v) = get(&r, "/api/v1/query?query=up&time=630&lookback_delta=30s").await;
    assert_eq!(v["data"]["result"], json!([]));
    let (_, v) = get(&r, "/api/v1/query?query=up&time=630").await;
    assert_eq!(v["data"]["result"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn queue_timeout_and_metrics() {
    let s = state_with(1);
    let r = router(s.clone());
    let held = s.inner.slots.acquire().await.unwrap();
    let (st, v) = get(&r, "/api/v1/query?query=up&time=60&timeout=0.05").await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["errorType"], "timeout");
    assert_eq!(v["error"], "query timed out in query queue");
    drop(held);
    let (st, _) = get(&r, "/api/v1/query?query=up&time=60&timeout=5s").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(s.metrics().requests("/api/v1/query", 503), 1);
    assert_eq!(s.metrics().requests("/api/v1/query", 200), 1);
    assert_eq!(s.metrics().queued().get(), 0);
    assert_eq!(s.metrics().running().get(), 0);
}

#[tokio::test]
async fn gzip_when_accepted_and_identical_after_decompression() {
    use std::io::Read;
    let (_, r) = app();
    let uri = "/api/v1/query_range?query=up&start=0&end=600&step=1";
    let fetch = |enc: Option<&'static str>| {
        let r = r.clone();
        async move {
            let mut req = Request::get(uri);
            if let Some(e) = enc {
                req = req.header("accept-encoding", e);
            }
            let resp = r.oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            assert_eq!(resp.headers()["vary"], "Accept-Encoding");
            let encoding = resp.headers().get("content-encoding").map(|v| v.to_str().unwrap().to_string());
            let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
            (encoding, body.to_vec())
        }
    };
    let (plain_enc, plain) = fetch(None).await;
    assert_eq!(plain_enc, None);
    assert!(plain.len() > 10_000, "{} bytes", plain.len());
    for accept in ["gzip", "deflate, gzip;q=0.5", "br, *"] {
        let (enc, body) = fetch(Some(accept)).await;
        assert_eq!(enc.as_deref(), Some("gzip"), "{accept}");
        assert!(body.len() * 2 < plain.len(), "{accept}: {} of {} bytes", body.len(), plain.len());
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut out).unwrap();
        assert_eq!(out, plain, "{accept}");
    }
    for accept in ["gzip;q=0", "identity", "deflate"] {
        let (enc, body) = fetch(Some(accept)).await;
        assert_eq!((enc, body.len()), (None, plain.len()), "{accept}");
    }
    // Small answers stay uncompressed.
    let req = Request::get("/api/v1/status/flags").header("accept-encoding", "gzip").body(Body::empty()).unwrap();
    let resp = r.clone().oneshot(req).await.unwrap();
    assert!(resp.headers().get("content-encoding").is_none());
}

#[test]
fn string_lists_are_valid_json_with_escapes() {
    let list: Vec<String> =
        vec!["plain".into(), "q\"uote".into(), "back\\slash".into(), "tab\there".into(), "é✓".into()];
    let mut body = super::strings_body(&list);
    body.push('}');
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "success");
    let got: Vec<String> = serde_json::from_value(v["data"].clone()).unwrap();
    assert_eq!(got, list);
    let mut empty = super::strings_body(&[]);
    empty.push('}');
    assert_eq!(serde_json::from_str::<serde_json::Value>(&empty).unwrap()["data"], serde_json::json!([]));
}

#[tokio::test]
async fn thanos_read_parameters_act() {
    let (_, r) = app();
    // replicaLabels[] deduplicates in queries too: the two `up` series differ only in instance and
    // job; penalty keeps h1's samples (it sorts first and both scrape at the same times).
    let (st, v) = get(&r, "/api/v1/query?query=up&time=120&replicaLabels[]=instance&replicaLabels[]=job").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["result"], json!([{"metric": {"__name__": "up"}, "value": [120, "2"]}]));
    let (_, v) =
        get(&r, "/api/v1/query?query=up&time=120&replicaLabels[]=instance&replicaLabels[]=job&dedup=false").await;
    assert_eq!(v["data"]["result"].as_array().unwrap().len(), 2);
    let (_, v) = get(&r, "/api/v1/labels?replicaLabels[]=instance").await;
    assert_eq!(v["data"], json!(["__name__", "code", "job"]));
    let (_, v) = get(&r, "/api/v1/label/instance/values?replicaLabels[]=instance").await;
    assert_eq!(v["data"], json!([]));
    // Any resolution is accepted (over raw data the answer is the raw one); negative ones are not.
    for ok in ["0", "0s", "auto", "5m", "1h"] {
        let (st, v) = get(&r, &format!("/api/v1/query?query=up&time=120&max_source_resolution={ok}")).await;
        assert_eq!(st, StatusCode::OK, "{ok}: {v}");
    }
    let (st, v) = get(&r, "/api/v1/query_range?query=up&start=0&end=600&step=60&max_source_resolution=auto").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    for (uri, want) in [
        ("/api/v1/query?query=up&time=120&max_source_resolution=soon", "invalid parameter \"max_source_resolution\""),
        ("/api/v1/query?query=up&partial_response=sometimes", "invalid parameter \"partial_response\""),
        ("/api/v1/series?match[]=up&storeMatch[]=%7B", "invalid parameter \"storeMatch[]\""),
    ] {
        let (st, v) = get(&r, uri).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{uri}: {v}");
        assert!(v["error"].as_str().unwrap().contains(want), "{uri}: {v}");
    }
    // No endpoints: no stores; storeMatch[] selects endpoints by address, never the local source.
    let (_, v) = get(&r, "/api/v1/stores").await;
    assert_eq!(v["data"], json!({}));
    let (_, v) = get(&r, "/api/v1/series?match[]=up&storeMatch[]=%7B__address__%3D%22x%3A1%22%7D").await;
    assert_eq!(v["data"], json!([]));
    let (_, v) = get(&r, "/api/v1/query?query=up&time=120&partial_response=false").await;
    assert_eq!(v["data"]["result"].as_array().unwrap().len(), 2);
}

#[test]
fn dynamic_lookback_follows_thanos() {
    const M: i64 = 60_000;
    // Default 5m lookback: raw and 5m data keep it; anything coarser than 5m looks back 1h.
    assert_eq!(crate::api::handlers::dynamic_lookback(5 * M, 0), 5 * M);
    assert_eq!(crate::api::handlers::dynamic_lookback(5 * M, 5 * M), 5 * M);
    assert_eq!(crate::api::handlers::dynamic_lookback(5 * M, 12 * M), 60 * M);
    assert_eq!(crate::api::handlers::dynamic_lookback(5 * M, 60 * M), 60 * M);
    // A short lookback grows to the 5m window first.
    assert_eq!(crate::api::handlers::dynamic_lookback(M, 2 * M), 5 * M);
    assert_eq!(crate::api::handlers::dynamic_lookback(2 * 60 * M, 60 * M), 2 * 60 * M);
}
