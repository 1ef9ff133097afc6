//! JSON encoding of the HTTP API: the response envelope and PromQL values, written exactly as
//! Prometheus writes them (timestamps as float seconds from the millisecond integer, sample values
//! as strings in Go's shortest float formatting ([`engine::gofloat`]), `"NaN"`, `"+Inf"`, `"-Inf"`).

use engine::Labels;

use crate::error::Error;
use crate::value::Value;

/// Most warnings (and, separately, infos) listed before the rest is summarised in one line.
pub const MAX_ANNOTATIONS: usize = 10;

/// Writes a millisecond timestamp as a JSON number of seconds: whole seconds, then `.` and three
/// millisecond digits only when the millisecond part is non-zero.
///
/// ```
/// let mut s = String::new();
/// query::api::json::write_timestamp(&mut s, 1_435_781_451_050);
/// assert_eq!(s, "1435781451.050");
/// ```
pub fn write_timestamp(out: &mut String, t_ms: i64) {
    let sign = if t_ms < 0 { "-" } else { "" };
    let a = t_ms.unsigned_abs();
    let (secs, ms) = (a / 1000, a % 1000);
    out.push_str(sign);
    out.push_str(itoa::Buffer::new().format(secs));
    if ms != 0 {
        let b = [b'.', b'0' + (ms / 100) as u8, b'0' + (ms / 10 % 10) as u8, b'0' + (ms % 10) as u8];
        out.push_str(std::str::from_utf8(&b).unwrap_or(".000"));
    }
}

/// Writes `s` as a JSON string literal.
pub fn write_str(out: &mut String, s: &str) {
    // Label names and values are nearly always plain ASCII without quotes or escapes.
    if s.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
        return;
    }
    match serde_json::to_string(s) {
        Ok(q) => out.push_str(&q),
        // Serialising a &str cannot fail; keep a valid document regardless.
        Err(_) => out.push_str("\"\""),
    }
}

/// Writes a label set as a JSON object (`{"name":"value",...}`) in label order.
pub fn write_labels(out: &mut String, l: &Labels) {
    out.push('{');
    for (i, lab) in l.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_str(out, &lab.name);
        out.push(':');
        write_str(out, &lab.value);
    }
    out.push('}');
}

fn write_point(out: &mut String, t: i64, v: f64) {
    out.push('[');
    write_timestamp(out, t);
    out.push_str(",\"");
    engine::gofloat::write_sample_value(out, v);
    out.push_str("\"]");
}

/// Writes `{"resultType": ..., "result": ...` (without the closing brace, so callers can add
/// keys such as `stats` or `explain`).
pub fn write_result_open(out: &mut String, v: &Value) {
    match v {
        Value::Scalar { t, v } => {
            out.push_str("{\"resultType\":\"scalar\",\"result\":");
            write_point(out, *t, *v);
        }
        Value::String { t, v } => {
            out.push_str("{\"resultType\":\"string\",\"result\":[");
            write_timestamp(out, *t);
            out.push(',');
            write_str(out, v);
            out.push(']');
        }
        Value::Vector(samples) => {
            // About 48 bytes per sample beside its labels: one allocation for the whole body.
            let labels: usize =
                samples.iter().flat_map(|s| s.labels.iter()).map(|l| l.name.len() + l.value.len() + 6).sum();
            out.reserve(labels + samples.len() * 48);
            out.push_str("{\"resultType\":\"vector\",\"result\":[");
            for (i, s) in samples.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str("{\"metric\":");
                write_labels(out, &s.labels);
                out.push_str(",\"value\":");
                write_point(out, s.t, s.v);
                out.push('}');
            }
            out.push(']');
        }
        Value::Matrix(series) => {
            // About 24 bytes per point and 64 per label set: one allocation for the whole body.
            let points: usize = series.iter().map(|s| s.points.len()).sum();
            out.reserve(points * 24 + series.len() * 96);
            out.push_str("{\"resultType\":\"matrix\",\"result\":[");
            let mut first = true;
            for s in series.iter().filter(|s| !s.points.is_empty()) {
                if !first {
                    out.push(',');
                }
                first = false;
                out.push_str("{\"metric\":");
                write_labels(out, &s.labels);
                out.push_str(",\"values\":[");
                for (j, (t, v)) in s.points.iter().enumerate() {
                    if j > 0 {
                        out.push(',');
                    }
                    write_point(out, *t, *v);
                }
                out.push_str("]}");
            }
            out.push(']');
        }
    }
}

/// Caps annotations at [`MAX_ANNOTATIONS`], adding Prometheus's "N more ... omitted" line.
fn capped(list: &[String], kind: &str) -> Vec<String> {
    if list.len() <= MAX_ANNOTATIONS {
        return list.to_vec();
    }
    let mut out = list[..MAX_ANNOTATIONS].to_vec();
    out.push(format!("{} more {kind} annotations omitted", list.len() - MAX_ANNOTATIONS));
    out
}

fn write_str_array(out: &mut String, list: &[String]) {
    out.push('[');
    for (i, s) in list.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_str(out, s);
    }
    out.push(']');
}

/// The start of every success envelope, up to the `data` value.
pub const SUCCESS_OPEN: &str = "{\"status\":\"success\",\"data\":";

/// Closes a success envelope whose `data` was written after [`SUCCESS_OPEN`]: appends the
/// warnings and infos (when any) and the final brace.
pub fn close_success(out: &mut String, warnings: &[String], infos: &[String]) {
    if !warnings.is_empty() {
        out.push_str(",\"warnings\":");
        write_str_array(out, &capped(warnings, "warning"));
    }
    if !infos.is_empty() {
        out.push_str(",\"infos\":");
        write_str_array(out, &capped(infos, "info"));
    }
    out.push('}');
}

/// A success envelope around already-encoded `data` JSON.
///
/// ```
/// let body = query::api::json::success("[\"a\"]", &["w".to_string()], &[]);
/// assert_eq!(body, r#"{"status":"success","data":["a"],"warnings":["w"]}"#);
/// ```
pub fn success(data: &str, warnings: &[String], infos: &[String]) -> String {
    let mut out = String::with_capacity(SUCCESS_OPEN.len() + data.len() + 64);
    out.push_str(SUCCESS_OPEN);
    out.push_str(data);
    close_success(&mut out, warnings, infos);
    out
}

/// An error envelope: `{"status":"error","errorType":...,"error":...}`.
pub fn error(e: &Error) -> String {
    let mut out = String::from("{\"status\":\"error\",\"errorType\":\"");
    out.push_str(e.error_type());
    out.push_str("\",\"error\":");
    write_str(&mut out, &e.to_string());
    out.push('}');
    out
}

/// The HTTP status Prometheus answers for an `errorType`.
pub fn http_status(error_type: &str) -> u16 {
    match error_type {
        "bad_data" => 400,
        "execution" => 422,
        "canceled" => 499,
        "timeout" => 503,
        "not_found" => 404,
        "not_acceptable" => 406,
        _ => 500,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::value::{Sample, Series};

    #[test]
    fn plain_and_escaped_strings() {
        for s in ["up", "host-00001:9100", "", "a\"b", "tab\there", "back\\slash", "ünïcode", "\u{7f}"] {
            let mut out = String::new();
            write_str(&mut out, s);
            assert_eq!(out, serde_json::to_string(s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn timestamps() {
        let ts = |t| {
            let mut s = String::new();
            write_timestamp(&mut s, t);
            s
        };
        assert_eq!(ts(1_435_781_451_000), "1435781451");
        assert_eq!(ts(1_435_781_451_500), "1435781451.500");
        assert_eq!(ts(1_435_781_451_781), "1435781451.781");
        assert_eq!(ts(0), "0");
        assert_eq!(ts(-1500), "-1.500");
        assert_eq!(ts(-5), "-0.005");
    }

    #[test]
    fn results() {
        let l = Labels::from_pairs([("__name__", "up"), ("job", "a\"b")]);
        let mut s = String::new();
        write_result_open(&mut s, &Value::Vector(vec![Sample { labels: l.clone(), t: 1000, v: f64::NAN }]));
        assert_eq!(
            s,
            r#"{"resultType":"vector","result":[{"metric":{"__name__":"up","job":"a\"b"},"value":[1,"NaN"]}]"#
        );
        let mut s = String::new();
        write_result_open(
            &mut s,
            &Value::Matrix(vec![
                Series { labels: l, points: vec![(1500, 1.0), (2000, -f64::INFINITY)] },
                Series { labels: Labels::default(), points: vec![] },
            ]),
        );
        assert_eq!(
            s,
            r#"{"resultType":"matrix","result":[{"metric":{"__name__":"up","job":"a\"b"},"values":[[1.500,"1"],[2,"-Inf"]]}]"#
        );
        let mut s = String::new();
        write_result_open(&mut s, &Value::Scalar { t: 3, v: 2.0 });
        assert_eq!(s, r#"{"resultType":"scalar","result":[0.003,"2"]"#);
        let mut s = String::new();
        write_result_open(&mut s, &Value::String { t: 3000, v: "x".into() });
        assert_eq!(s, r#"{"resultType":"string","result":[3,"x"]"#);
    }

    #[test]
    fn envelopes() {
        let e = Error::BadData("invalid parameter \"query\": 1:3: parse error".into());
        let body = error(&e);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "error");
        assert_eq!(v["errorType"], "bad_data");
        assert_eq!(v["error"], "invalid parameter \"query\": 1:3: parse error");
        assert_eq!(http_status(e.error_type()), 400);
        assert_eq!(http_status("execution"), 422);
        assert_eq!(http_status("timeout"), 503);
        assert_eq!(http_status("internal"), 500);
        let warnings: Vec<String> = (0..12).map(|i| format!("w{i}")).collect();
        let v: serde_json::Value = serde_json::from_str(&success("{}", &warnings, &["i".into()])).unwrap();
        assert_eq!(v["warnings"].as_array().unwrap().len(), 11);
        assert_eq!(v["warnings"][10], "2 more warning annotations omitted");
        assert_eq!(v["infos"][0], "i");
        assert_eq!(success("[]", &[], &[]), r#"{"status":"success","data":[]}"#);
    }
}
