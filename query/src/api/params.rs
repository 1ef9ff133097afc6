//! Request parameters of the HTTP API: the form (URL query plus form-encoded POST body), and the
//! parsers for timestamps, durations, limits, booleans, series selectors and escaped label names,
//! each answering Prometheus's `bad_data` text on bad input.

use engine::{MatchOp, Matcher};
use promql_parser::label::MatchOp as PqlMatchOp;
use promql_parser::parser::{self, Expr};

use crate::error::{Error, Result};

/// Prometheus's smallest representable time (ms): what clients send as "unbounded start"
/// (`-292273086-05-16T16:47:06Z`).
pub const MIN_TIME_MS: i64 = (i64::MIN / 1000 + 62_135_596_801) * 1000;
/// Prometheus's largest representable time (ms): "unbounded end" (`292277025-08-18T07:12:54.999999999Z`).
pub const MAX_TIME_MS: i64 = (i64::MAX / 1000 - 62_135_596_801) * 1000 + 999;

const MIN_TIME_TEXT: &str = "-292273086-05-16T16:47:06Z";
const MAX_TIME_TEXT: &str = "292277025-08-18T07:12:54.999999999Z";

/// The parameters of one request, in Go's form order: for single values a POST body value wins
/// over a URL value; repeated values list the body's first, then the URL's.
#[derive(Debug, Clone, Default)]
pub struct Form {
    body: Vec<(String, String)>,
    url: Vec<(String, String)>,
}

impl Form {
    /// Builds the form from the raw URL query and, for form-encoded POSTs, the body.
    ///
    /// ```
    /// let f = query::api::params::Form::parse(Some("query=up&match[]=a"), b"query=down&match[]=b");
    /// assert_eq!(f.get("query"), Some("down"));
    /// assert_eq!(f.get_all("match[]"), vec!["b", "a"]);
    /// ```
    pub fn parse(url_query: Option<&str>, body: &[u8]) -> Self {
        let decode = |b: &[u8]| -> Vec<(String, String)> {
            form_urlencoded::parse(b).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
        };
        Form { body: decode(body), url: url_query.map(|q| decode(q.as_bytes())).unwrap_or_default() }
    }

    /// The value of a single-valued parameter (`None` when absent).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.body.iter().chain(&self.url).find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The value of a single-valued parameter, `None` when absent or empty.
    pub fn get_non_empty(&self, name: &str) -> Option<&str> {
        self.get(name).filter(|v| !v.is_empty())
    }

    /// All values of a repeated parameter.
    pub fn get_all(&self, name: &str) -> Vec<&str> {
        self.body.iter().chain(&self.url).filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect()
    }
}

/// Wraps a parameter error the way Prometheus does: `invalid parameter "<name>": <reason>`.
pub fn invalid_param(name: &str, reason: impl std::fmt::Display) -> Error {
    Error::BadData(format!("invalid parameter {name:?}: {reason}"))
}

/// Parses a timestamp parameter: unix seconds as a float (rounded to ms), RFC 3339, or one of
/// Prometheus's min/max time strings. Returns milliseconds.
///
/// ```
/// use query::api::params::parse_time;
/// assert_eq!(parse_time("1435781451.781").unwrap(), 1_435_781_451_781);
/// assert_eq!(parse_time("2015-07-01T20:10:51.781Z").unwrap(), 1_435_781_451_781);
/// assert!(parse_time("yesterday").is_err());
/// ```
pub fn parse_time(s: &str) -> Result<i64> {
    let bad = || Error::BadData(format!("cannot parse {s:?} to a valid timestamp"));
    if let Ok(f) = s.parse::<f64>() {
        if !f.is_finite() {
            return Err(bad());
        }
        let secs = f.trunc();
        let ms = ((f - secs) * 1000.0).round();
        let total = secs * 1000.0 + ms;
        if total < i64::MIN as f64 || total > i64::MAX as f64 {
            return Err(bad());
        }
        return Ok(total as i64);
    }
    if s == MIN_TIME_TEXT {
        return Ok(MIN_TIME_MS);
    }
    if s == MAX_TIME_TEXT {
        return Ok(MAX_TIME_MS);
    }
    chrono::DateTime::parse_from_rfc3339(s).map(|t| t.timestamp_millis()).map_err(|_| bad())
}

/// Parses a duration parameter: float seconds or a Prometheus duration (`1m30s`, units
/// `ms s m h d w y`). Returns milliseconds (sub-millisecond parts are dropped).
///
/// ```
/// use query::api::params::parse_duration;
/// assert_eq!(parse_duration("15").unwrap(), 15_000);
/// assert_eq!(parse_duration("0.5").unwrap(), 500);
/// assert_eq!(parse_duration("1m30s").unwrap(), 90_000);
/// assert!(parse_duration("30s1m").is_err());
/// ```
pub fn parse_duration(s: &str) -> Result<i64> {
    if let Ok(f) = s.parse::<f64>() {
        let ms = f * 1000.0;
        if !ms.is_finite() || ms >= i64::MAX as f64 / 1e6 || ms <= i64::MIN as f64 / 1e6 {
            return Err(Error::BadData(format!("cannot parse {s:?} to a valid duration. It overflows int64")));
        }
        return Ok(ms.trunc() as i64);
    }
    engine::duration::parse_prometheus_duration(s)
        .ok_or_else(|| Error::BadData(format!("cannot parse {s:?} to a valid duration")))
}

/// Parses `limit`: absent, empty or 0 means unlimited (`None`); negative or non-integer is bad data.
pub fn parse_limit(form: &Form) -> Result<Option<usize>> {
    let Some(s) = form.get_non_empty("limit") else { return Ok(None) };
    let n: i64 = s.parse().map_err(|_| invalid_param("limit", format!("cannot parse {s:?} to an integer")))?;
    if n < 0 {
        return Err(invalid_param("limit", "limit must be non-negative"));
    }
    Ok(usize::try_from(n).ok().filter(|&n| n > 0))
}

/// Parses a boolean parameter as Go's `strconv.ParseBool` (`1 t T TRUE true True`,
/// `0 f F FALSE false False`); absent or empty gives `default`.
pub fn parse_bool(form: &Form, name: &str, default: bool) -> Result<bool> {
    match form.get_non_empty(name) {
        None => Ok(default),
        Some("1" | "t" | "T" | "TRUE" | "true" | "True") => Ok(true),
        Some("0" | "f" | "F" | "FALSE" | "false" | "False") => Ok(false),
        Some(other) => Err(invalid_param(name, format!("cannot parse {other:?} to a boolean"))),
    }
}

/// Parses the optional `start`/`end` pair of the metadata endpoints (defaults: unbounded).
pub fn parse_start_end(form: &Form) -> Result<(i64, i64)> {
    let start = match form.get_non_empty("start") {
        Some(s) => parse_time(s).map_err(|e| invalid_param("start", e))?,
        None => MIN_TIME_MS,
    };
    let end = match form.get_non_empty("end") {
        Some(s) => parse_time(s).map_err(|e| invalid_param("end", e))?,
        None => MAX_TIME_MS,
    };
    if end < start {
        return Err(invalid_param("end", "end timestamp must not be before start time"));
    }
    Ok((start, end))
}

/// Parses one `match[]` series selector into its alternative matcher sets (`{a="1" or b="2"}`
/// gives two). Each set must hold a matcher that rejects the empty string.
///
/// ```
/// let sets = query::api::params::parse_selector(r#"up{job=~"a|b"}"#).unwrap();
/// assert_eq!(sets.len(), 1);
/// assert_eq!(sets[0].len(), 2);
/// assert!(query::api::params::parse_selector(r#"{job=~".*"}"#).is_err());
/// ```
pub fn parse_selector(s: &str) -> Result<Vec<Vec<Matcher>>> {
    parse_selector_param("match[]", s)
}

/// [`parse_selector`] for the parameter `param` (errors name it).
pub fn parse_selector_param(param: &str, s: &str) -> Result<Vec<Vec<Matcher>>> {
    let expr = parser::parse(&crate::planner::go_string_literals(s)).map_err(|e| invalid_param(param, e))?;
    let Expr::VectorSelector(vs) = expr else {
        return Err(invalid_param(param, format!("{s:?} is not a series selector")));
    };
    let convert = |ms: &[promql_parser::label::Matcher]| -> Result<Vec<Matcher>> {
        let mut out = Vec::with_capacity(ms.len() + 1);
        if let Some(name) = &vs.name {
            out.push(Matcher::equal("__name__", name.clone()));
        }
        for m in ms {
            let op = match m.op {
                PqlMatchOp::Equal => MatchOp::Equal,
                PqlMatchOp::NotEqual => MatchOp::NotEqual,
                PqlMatchOp::Re(_) => MatchOp::RegexMatch,
                PqlMatchOp::NotRe(_) => MatchOp::RegexNoMatch,
            };
            out.push(Matcher::new(op, m.name.clone(), m.value.clone()).map_err(|e| invalid_param(param, e))?);
        }
        if !out.iter().any(|m| !m.matches_empty()) {
            return Err(Error::BadData(format!("{param} must contain at least one non-empty matcher")));
        }
        Ok(out)
    };
    let mut sets = Vec::new();
    if !vs.matchers.matchers.is_empty() || vs.matchers.or_matchers.is_empty() {
        sets.push(convert(&vs.matchers.matchers)?);
    }
    for set in &vs.matchers.or_matchers {
        sets.push(convert(set)?);
    }
    Ok(sets)
}

/// Parses every `match[]` of the form into matcher sets (OR-ed); empty when none was given.
pub fn parse_matches(form: &Form) -> Result<Vec<Vec<Matcher>>> {
    let mut out = Vec::new();
    for m in form.get_all("match[]") {
        out.extend(parse_selector(m)?);
    }
    Ok(out)
}

/// Unescapes a label name of the `label/<name>/values` path: `U__` names decode `__` to `_` and
/// `_<hex>_` to that code point. A name that is not a valid escape is taken literally, as
/// Prometheus does.
///
/// ```
/// use query::api::params::unescape_label_name;
/// assert_eq!(unescape_label_name("U__http_2e_status__code"), "http.status_code");
/// assert_eq!(unescape_label_name("job"), "job");
/// ```
pub fn unescape_label_name(s: &str) -> String {
    let Some(rest) = s.strip_prefix("U__") else { return s.to_string() };
    decode_escaped(rest).unwrap_or_else(|| s.to_string())
}

fn decode_escaped(rest: &str) -> Option<String> {
    let mut out = String::with_capacity(rest.len());
    let mut it = rest.chars();
    while let Some(c) = it.next() {
        if c != '_' {
            out.push(c);
            continue;
        }
        let mut cp: u32 = 0;
        let mut digits = 0;
        loop {
            match it.next()? {
                '_' if digits == 0 => {
                    out.push('_');
                    break;
                }
                '_' => {
                    out.push(char::from_u32(cp)?);
                    break;
                }
                h => {
                    if digits == 6 {
                        return None;
                    }
                    cp = cp * 16 + h.to_digit(16)?;
                    digits += 1;
                }
            }
        }
    }
    Some(out)
}

/// True for a valid label name (UTF-8, non-empty, as Prometheus 3 accepts).
pub fn valid_label_name(s: &str) -> bool {
    !s.is_empty()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn times() {
        assert_eq!(parse_time("1435781451").unwrap(), 1_435_781_451_000);
        assert_eq!(parse_time("1435781451.0504").unwrap(), 1_435_781_451_050);
        assert_eq!(parse_time("1.5e3").unwrap(), 1_500_000);
        assert_eq!(parse_time("-1.5").unwrap(), -1500);
        assert_eq!(parse_time("2015-07-01T22:10:51.781+02:00").unwrap(), 1_435_781_451_781);
        assert_eq!(parse_time("2015-07-01T20:10:51Z").unwrap(), 1_435_781_451_000);
        assert_eq!(parse_time("-292273086-05-16T16:47:06Z").unwrap(), MIN_TIME_MS);
        assert_eq!(parse_time("292277025-08-18T07:12:54.999999999Z").unwrap(), MAX_TIME_MS);
        assert_eq!(MIN_TIME_MS, -9_223_309_901_257_974_000);
        assert_eq!(MAX_TIME_MS, 9_223_309_901_257_974_999);
        let e = parse_time("x1").unwrap_err();
        assert_eq!(e.to_string(), "cannot parse \"x1\" to a valid timestamp");
        assert!(parse_time("NaN").is_err());
        assert!(parse_time("").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1e3").unwrap(), 1_000_000);
        assert_eq!(parse_duration("2h").unwrap(), 7_200_000);
        assert_eq!(parse_duration("1d2h3m4s5ms").unwrap(), 86_400_000 + 7_200_000 + 180_000 + 4000 + 5);
        assert_eq!(parse_duration("1y").unwrap(), 365 * 86_400_000);
        assert_eq!(parse_duration("1w").unwrap(), 7 * 86_400_000);
        assert_eq!(parse_duration("0").unwrap(), 0);
        assert_eq!(parse_duration("-15").unwrap(), -15_000);
        for bad in ["", "1.5m", "m", "5x", "1s1s", "1ms1s", "1e300"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_duration("5x").unwrap_err().to_string(), "cannot parse \"5x\" to a valid duration");
    }

    #[test]
    fn form_precedence_limit_bool() {
        let f = Form::parse(Some("limit=3&dedup=false&a=url"), b"a=body&b=%7Bx%3D%221%22%7D");
        assert_eq!(f.get("a"), Some("body"));
        assert_eq!(f.get("b"), Some("{x=\"1\"}"));
        assert_eq!(parse_limit(&f).unwrap(), Some(3));
        assert!(!parse_bool(&f, "dedup", true).unwrap());
        assert!(parse_bool(&f, "partial_response", true).unwrap());
        assert_eq!(parse_limit(&Form::parse(Some("limit=0"), b"")).unwrap(), None);
        assert_eq!(
            parse_limit(&Form::parse(Some("limit=-1"), b"")).unwrap_err().to_string(),
            "invalid parameter \"limit\": limit must be non-negative"
        );
        assert!(parse_limit(&Form::parse(Some("limit=1.5"), b"")).is_err());
        assert!(parse_bool(&Form::parse(Some("dedup=yes"), b""), "dedup", true).is_err());
    }

    #[test]
    fn selectors() {
        let sets = parse_selector(r#"{__name__="up", job!="x"}"#).unwrap();
        assert_eq!(sets[0].iter().map(|m| m.to_string()).collect::<Vec<_>>(), ["__name__=\"up\"", "job!=\"x\""]);
        let sets = parse_selector(r#"{a="1" or b="2"}"#).unwrap();
        assert_eq!(sets.len(), 2);
        // The parser itself rejects a selector that matches everything; `or` sets are checked here.
        assert!(parse_selector(r#"{job=~".*"}"#).unwrap_err().to_string().contains("at least one non-empty matcher"));
        assert_eq!(
            parse_selector(r#"{a="1" or job=~".*"}"#).unwrap_err().to_string(),
            "match[] must contain at least one non-empty matcher"
        );
        assert!(parse_selector("rate(x[5m])").is_err());
        assert!(parse_selector("up{").is_err());
        let f = Form::parse(Some("match[]=up&match[]=down"), b"");
        assert_eq!(parse_matches(&f).unwrap().len(), 2);
    }

    #[test]
    fn label_names() {
        assert_eq!(unescape_label_name("U__a__b"), "a_b");
        assert_eq!(unescape_label_name("U__a_2f_b"), "a/b");
        assert_eq!(unescape_label_name("U___1f600_"), "\u{1f600}");
        // Invalid escapes are literal names.
        assert_eq!(unescape_label_name("U__a_zz_b"), "U__a_zz_b");
        assert_eq!(unescape_label_name("U__a_2f"), "U__a_2f");
        assert_eq!(unescape_label_name("U__a_1234567_"), "U__a_1234567_");
        assert!(!valid_label_name(""));
    }

    #[test]
    fn start_end() {
        assert_eq!(parse_start_end(&Form::default()).unwrap(), (MIN_TIME_MS, MAX_TIME_MS));
        let f = Form::parse(Some("start=10&end=5"), b"");
        assert!(parse_start_end(&f).is_err());
    }
}
