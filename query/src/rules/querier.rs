//! The two ways a rule's expression is run: the embedded [`Engine`] (`strata up`) and remote
//! Prometheus HTTP API v1 endpoints (`strata rule --query`), tried round robin, the next one on
//! failure, with GET or form POST (`--query.http-method`, POST by default as Thanos).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use engine::Labels;

use super::RuleQuerier;
use crate::engine::Engine;
use crate::value::{Sample, Value};

/// A rule querier over the embedded engine.
#[derive(Debug, Clone)]
pub struct EngineQuerier(pub Engine);

#[async_trait]
impl RuleQuerier for EngineQuerier {
    async fn query(&self, expr: &str, t_ms: i64) -> Result<Vec<Sample>, String> {
        let r = self.0.instant_query(expr, t_ms).await.map_err(|e| e.to_string())?;
        match r.value {
            Value::Vector(v) => Ok(v),
            Value::Scalar { t, v } => Ok(vec![Sample { labels: Labels::default(), t, v }]),
            _ => Err("rule result is not a vector or scalar".into()),
        }
    }
}

/// HTTP method of the query requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpMethod {
    /// `GET /api/v1/query?query=..&time=..`.
    Get,
    /// `POST /api/v1/query` with a form body.
    Post,
}

/// A rule querier over Prometheus HTTP API v1 endpoints (Strata or Thanos queriers, Prometheus).
#[derive(Debug)]
pub struct HttpQuerier {
    endpoints: Vec<String>,
    method: HttpMethod,
    client: reqwest::Client,
    next: AtomicUsize,
}

impl HttpQuerier {
    /// Endpoints are base URLs (`http://host:port`, optionally with a path prefix) or bare
    /// `host:port` (http assumed), as Thanos's `--query`.
    pub fn new(endpoints: &[String], method: HttpMethod, timeout: Duration) -> Result<Self, String> {
        if endpoints.is_empty() {
            return Err("no query endpoint".into());
        }
        let mut out = Vec::new();
        for e in endpoints {
            let base = if e.contains("://") { e.trim_end_matches('/').to_string() } else { format!("http://{e}") };
            url::Url::parse(&base).map_err(|err| format!("--query {e}: not a URL: {err}"))?;
            out.push(base);
        }
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(HttpQuerier { endpoints: out, method, client, next: AtomicUsize::new(0) })
    }

    async fn query_one(&self, base: &str, expr: &str, t_ms: i64) -> Result<Vec<Sample>, String> {
        let url = format!("{base}/api/v1/query");
        let time = format!("{}.{:03}", t_ms.div_euclid(1000), t_ms.rem_euclid(1000));
        let params = [("query", expr), ("time", time.as_str())];
        let req = match self.method {
            HttpMethod::Get => self.client.get(&url).query(&params),
            HttpMethod::Post => self.client.post(&url).form(&params),
        };
        let resp = req.send().await.map_err(|e| format!("{url}: {e}"))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| format!("{url}: reading the answer: {e}"))?;
        let json: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| format!("{url}: HTTP {status}: not JSON ({e}): {}", String::from_utf8_lossy(&body)))?;
        if json["status"] != "success" {
            return Err(format!(
                "{url}: HTTP {status}: {}: {}",
                json["errorType"].as_str().unwrap_or("error"),
                json["error"].as_str().unwrap_or("no error message")
            ));
        }
        parse_result(&json["data"]).map_err(|e| format!("{url}: {e}"))
    }
}

/// Parses the `data` of an instant query answer into samples.
fn parse_result(data: &serde_json::Value) -> Result<Vec<Sample>, String> {
    let point = |p: &serde_json::Value| -> Result<(i64, f64), String> {
        let t = p[0].as_f64().ok_or("bad sample timestamp")?;
        let v = p[1].as_str().ok_or("bad sample value")?;
        let v = match v {
            "NaN" => f64::NAN,
            "+Inf" | "Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            s => s.parse().map_err(|_| format!("bad sample value {s:?}"))?,
        };
        Ok(((t * 1000.0).round() as i64, v))
    };
    match data["resultType"].as_str() {
        Some("vector") => {
            let mut out = Vec::new();
            for s in data["result"].as_array().ok_or("no result array")? {
                let Some(value) = s.get("value") else { continue }; // native histograms: not stored
                let (t, v) = point(value)?;
                let labels = s["metric"]
                    .as_object()
                    .ok_or("no metric object")?
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()));
                out.push(Sample { labels: Labels::from_pairs(labels), t, v });
            }
            Ok(out)
        }
        Some("scalar") => {
            let (t, v) = point(&data["result"])?;
            Ok(vec![Sample { labels: Labels::default(), t, v }])
        }
        other => Err(format!("rule result is not a vector or scalar ({})", other.unwrap_or("none"))),
    }
}

#[async_trait]
impl RuleQuerier for HttpQuerier {
    async fn query(&self, expr: &str, t_ms: i64) -> Result<Vec<Sample>, String> {
        let n = self.endpoints.len();
        let first = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let mut errors = Vec::new();
        for i in 0..n {
            let base = &self.endpoints[(first + i) % n];
            match self.query_one(base, expr, t_ms).await {
                Ok(r) => return Ok(r),
                Err(e) => errors.push(e),
            }
        }
        Err(errors.join("; "))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_answers() {
        let v: serde_json::Value = serde_json::from_str(
            r#"{"resultType":"vector","result":[{"metric":{"__name__":"up","job":"a"},"value":[1.5,"2"]},
               {"metric":{},"value":[1.5,"NaN"]}]}"#,
        )
        .unwrap();
        let s = parse_result(&v).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].labels.to_string().as_str(), s[0].t, s[0].v), (r#"up{job="a"}"#, 1500, 2.0));
        assert!(s[1].v.is_nan());
        let v: serde_json::Value = serde_json::from_str(r#"{"resultType":"scalar","result":[3,"4.5"]}"#).unwrap();
        assert_eq!(parse_result(&v).unwrap()[0].v, 4.5);
        let v: serde_json::Value = serde_json::from_str(r#"{"resultType":"matrix","result":[]}"#).unwrap();
        assert!(parse_result(&v).unwrap_err().contains("not a vector or scalar"));
    }

    #[test]
    fn endpoints_are_checked() {
        assert!(HttpQuerier::new(&[], HttpMethod::Post, Duration::from_secs(1)).is_err());
        let q = HttpQuerier::new(&["127.0.0.1:1".into()], HttpMethod::Get, Duration::from_secs(1)).unwrap();
        assert_eq!(q.endpoints, ["http://127.0.0.1:1"]);
    }

    #[tokio::test]
    async fn next_endpoint_on_failure() {
        // one endpoint refuses connections, the other is a real engine behind the HTTP API
        let src = std::sync::Arc::new(engine::MemSource::new());
        src.add(Labels::from_pairs([("__name__", "up"), ("job", "a")]), &[0, 60_000], &[1.0, 0.0]);
        let state = crate::api::ApiState::new(src, Default::default(), crate::api::ApiMetrics::unregistered());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let good = l.local_addr().unwrap().to_string();
        tokio::spawn(async move { axum::serve(l, crate::api::router(state)).await });
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
        for method in [HttpMethod::Get, HttpMethod::Post] {
            let q = HttpQuerier::new(&[dead.clone(), good.clone()], method, Duration::from_secs(5)).unwrap();
            for _ in 0..2 {
                let r = q.query("up * 2", 60_000).await.unwrap();
                assert_eq!(r.len(), 1);
                assert_eq!((r[0].labels.to_string().as_str(), r[0].v), (r#"{job="a"}"#, 0.0));
            }
            let r = q.query("scalar(up) + 1", 0).await.unwrap();
            assert_eq!((r[0].labels.len(), r[0].v), (0, 2.0));
        }
        let q = HttpQuerier::new(&[dead], HttpMethod::Post, Duration::from_secs(5)).unwrap();
        assert!(q.query("up", 0).await.is_err());
    }
}
