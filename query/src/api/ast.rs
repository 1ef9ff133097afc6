//! `/api/v1/parse_query`: a promql-parser AST rendered in the JSON tree shape the Prometheus UI
//! reads (`type` = `vectorSelector`, `matrixSelector`, `binaryExpr`, `aggregation`, `call`,
//! `subquery`, `numberLiteral`, `stringLiteral`, `parenExpr`, `unaryExpr`).
//!
//! Durations and offsets are milliseconds, `timestamp` is the `@` time in ms (or null) and
//! `startOrEnd` is `"start"`/`"end"` for `@ start()`/`@ end()` (or null).

use std::time::{Duration, SystemTime};

use promql_parser::label::{METRIC_NAME, MatchOp, Matcher};
use promql_parser::parser::value::ValueType;
use promql_parser::parser::{AtModifier, Expr, LabelModifier, Offset, VectorMatchCardinality, VectorSelector};
use serde_json::{Value, json};

/// Renders an expression as the Prometheus UI's JSON tree.
///
/// ```
/// let e = promql_parser::parser::parse("sum by (job) (up)").unwrap();
/// let j = query::api::ast::to_json(&e);
/// assert_eq!(j["type"], "aggregation");
/// assert_eq!(j["grouping"][0], "job");
/// assert_eq!(j["expr"]["name"], "up");
/// ```
pub fn to_json(e: &Expr) -> Value {
    match e {
        Expr::Aggregate(a) => {
            let (grouping, without) = match &a.modifier {
                Some(LabelModifier::Include(l)) => (l.labels.clone(), false),
                Some(LabelModifier::Exclude(l)) => (l.labels.clone(), true),
                None => (vec![], false),
            };
            json!({
                "type": "aggregation",
                "op": a.op.to_string(),
                "expr": to_json(&a.expr),
                "param": a.param.as_deref().map(to_json),
                "grouping": grouping,
                "without": without,
            })
        }
        Expr::Binary(b) => {
            let vectors = b.lhs.value_type() == ValueType::Vector && b.rhs.value_type() == ValueType::Vector;
            let matching = if vectors {
                let m = b.modifier.clone().unwrap_or_default();
                let set_op = b.op.is_set_operator();
                let (card, include) = match &m.card {
                    _ if set_op => ("many-to-many", vec![]),
                    VectorMatchCardinality::OneToOne => ("one-to-one", vec![]),
                    VectorMatchCardinality::ManyToOne(l) => ("many-to-one", l.labels.clone()),
                    VectorMatchCardinality::OneToMany(l) => ("one-to-many", l.labels.clone()),
                    VectorMatchCardinality::ManyToMany => ("many-to-many", vec![]),
                };
                let (labels, on) = match &m.matching {
                    Some(LabelModifier::Include(l)) => (l.labels.clone(), true),
                    Some(LabelModifier::Exclude(l)) => (l.labels.clone(), false),
                    None => (vec![], false),
                };
                json!({
                    "card": card,
                    "labels": labels,
                    "on": on,
                    "include": include,
                    "fillValues": {"lhs": m.fill_values.lhs, "rhs": m.fill_values.rhs},
                })
            } else {
                Value::Null
            };
            json!({
                "type": "binaryExpr",
                "op": b.op.to_string(),
                "lhs": to_json(&b.lhs),
                "rhs": to_json(&b.rhs),
                "matching": matching,
                "bool": b.modifier.as_ref().is_some_and(|m| m.return_bool),
            })
        }
        Expr::Call(c) => json!({
            "type": "call",
            "func": {
                "name": c.func.name,
                "argTypes": c.func.arg_types.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "variadic": c.func.variadic,
                "returnType": c.func.return_type.to_string(),
            },
            "args": c.args.args.iter().map(|a| to_json(a)).collect::<Vec<_>>(),
        }),
        Expr::MatrixSelector(m) => {
            let mut v = selector(&m.vs, "matrixSelector");
            v["range"] = json!(millis(&m.range));
            v
        }
        Expr::Subquery(s) => json!({
            "type": "subquery",
            "expr": to_json(&s.expr),
            "range": millis(&s.range),
            "offset": offset_ms(&s.offset),
            "step": s.step.as_ref().map(millis).unwrap_or(0),
            "timestamp": at_timestamp(&s.at),
            "startOrEnd": start_or_end(&s.at),
        }),
        Expr::NumberLiteral(n) => json!({"type": "numberLiteral", "val": number_text(n.val)}),
        Expr::Paren(p) => json!({"type": "parenExpr", "expr": to_json(&p.expr)}),
        Expr::StringLiteral(s) => json!({"type": "stringLiteral", "val": s.val}),
        Expr::Unary(u) => json!({"type": "unaryExpr", "op": "-", "expr": to_json(&u.expr)}),
        Expr::VectorSelector(vs) => selector(vs, "vectorSelector"),
        // The parser never produces extension nodes.
        Expr::Extension(_) => Value::Null,
    }
}

fn selector(vs: &VectorSelector, kind: &str) -> Value {
    let mut matchers: Vec<Value> = vs.matchers.matchers.iter().map(matcher).collect();
    if let Some(name) = &vs.name
        && !vs.matchers.matchers.iter().any(|m| m.name == METRIC_NAME)
    {
        matchers.push(json!({"name": METRIC_NAME, "type": "=", "value": name}));
    }
    json!({
        "type": kind,
        "name": vs.name.clone().unwrap_or_default(),
        "offset": offset_ms(&vs.offset),
        "matchers": matchers,
        "timestamp": at_timestamp(&vs.at),
        "startOrEnd": start_or_end(&vs.at),
        "anchored": false,
        "smoothed": false,
    })
}

fn matcher(m: &Matcher) -> Value {
    let op = match m.op {
        MatchOp::Equal => "=",
        MatchOp::NotEqual => "!=",
        MatchOp::Re(_) => "=~",
        MatchOp::NotRe(_) => "!~",
    };
    json!({"name": m.name, "type": op, "value": m.value})
}

fn millis(d: &Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn offset_ms(o: &Option<Offset>) -> i64 {
    match o {
        Some(Offset::Pos(d)) => millis(d),
        Some(Offset::Neg(d)) => -millis(d),
        None => 0,
    }
}

fn at_timestamp(at: &Option<AtModifier>) -> Value {
    match at {
        Some(AtModifier::At(t)) => match t.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(d) => json!(millis(&d)),
            Err(before) => json!(-millis(&before.duration())),
        },
        _ => Value::Null,
    }
}

fn start_or_end(at: &Option<AtModifier>) -> Value {
    match at {
        Some(AtModifier::Start) => json!("start"),
        Some(AtModifier::End) => json!("end"),
        _ => Value::Null,
    }
}

/// A number literal as Go's `FormatFloat(v, 'f', -1, 64)`.
fn number_text(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf".into() } else { "-Inf".into() }
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn tree(q: &str) -> Value {
        to_json(&promql_parser::parser::parse(q).unwrap())
    }

    #[test]
    fn selectors() {
        let j = tree(r#"rate(http_requests_total{job=~"a.*"}[5m] offset 1m)"#);
        assert_eq!(j["type"], "call");
        assert_eq!(j["func"]["name"], "rate");
        assert_eq!(j["func"]["argTypes"], json!(["matrix"]));
        assert_eq!(j["func"]["returnType"], "vector");
        let m = &j["args"][0];
        assert_eq!(m["type"], "matrixSelector");
        assert_eq!(m["range"], 300_000);
        assert_eq!(m["offset"], 60_000);
        assert_eq!(m["name"], "http_requests_total");
        assert_eq!(
            m["matchers"],
            json!([{"name": "job", "type": "=~", "value": "a.*"}, {"name": "__name__", "type": "=", "value": "http_requests_total"}])
        );
        assert_eq!(m["timestamp"], Value::Null);
        let j = tree("up @ 100");
        assert_eq!(j["timestamp"], 100_000);
        let j = tree("up @ start()");
        assert_eq!(j["startOrEnd"], "start");
    }

    #[test]
    fn operators() {
        let j = tree("a + on(job) group_left(x) b");
        assert_eq!(j["type"], "binaryExpr");
        assert_eq!(j["op"], "+");
        assert_eq!(j["matching"]["card"], "many-to-one");
        assert_eq!(j["matching"]["on"], true);
        assert_eq!(j["matching"]["labels"], json!(["job"]));
        assert_eq!(j["matching"]["include"], json!(["x"]));
        let j = tree("a > bool 1");
        assert_eq!(j["matching"], Value::Null);
        assert_eq!(j["bool"], true);
        assert_eq!(j["rhs"], json!({"type": "numberLiteral", "val": "1"}));
        let j = tree("a and b");
        assert_eq!(j["matching"]["card"], "many-to-many");
        let j = tree("max_over_time((-topk(3, x))[5m:1m])");
        let sq = &j["args"][0];
        assert_eq!(sq["type"], "subquery");
        assert_eq!((sq["range"].as_i64(), sq["step"].as_i64()), (Some(300_000), Some(60_000)));
        assert_eq!(sq["expr"]["type"], "parenExpr");
        assert_eq!(sq["expr"]["expr"]["type"], "unaryExpr");
        assert_eq!(sq["expr"]["expr"]["expr"]["param"]["val"], "3");
        assert_eq!(tree(r#""s""#), json!({"type": "stringLiteral", "val": "s"}));
    }
}
