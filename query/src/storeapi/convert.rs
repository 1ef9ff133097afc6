//! Conversions between the StoreAPI wire types (`proto::prometheus::{Label, LabelMatcher}`, which
//! Thanos's `thanos.Label`/`thanos.LabelMatcher` equal on the wire) and the engine's [`Labels`] and
//! [`Matcher`]s.
//!
//! ```
//! use engine::{Labels, MatchOp, Matcher};
//! use query::storeapi::convert;
//!
//! let m = Matcher::new(MatchOp::RegexMatch, "job", "api|web").unwrap();
//! let wire = convert::matchers_to_proto(std::slice::from_ref(&m));
//! assert_eq!(convert::matchers_from_proto(&wire).unwrap(), vec![m]);
//!
//! let l = Labels::from_pairs([("__name__", "up"), ("job", "api")]);
//! assert_eq!(convert::labels_from_proto(convert::labels_to_proto(&l)), l);
//! ```

use engine::{Labels, MatchOp, Matcher};
use proto::prometheus::{Label as PbLabel, LabelMatcher as PbMatcher, label_matcher::Type as PbMatchType};

use crate::error::{Error, Result};

/// The downsampled aggregates a `SeriesRequest.aggregates` list asks for (`RAW` and unknown
/// values left out), in request order.
pub(crate) fn aggregates_from_proto(aggrs: &[i32]) -> Vec<engine::aggr::Aggregate> {
    use engine::aggr::Aggregate;
    use proto::thanos::Aggr;
    aggrs
        .iter()
        .filter_map(|&a| match Aggr::try_from(a).ok()? {
            Aggr::Count => Some(Aggregate::Count),
            Aggr::Sum => Some(Aggregate::Sum),
            Aggr::Min => Some(Aggregate::Min),
            Aggr::Max => Some(Aggregate::Max),
            Aggr::Counter => Some(Aggregate::Counter),
            Aggr::Raw => None,
        })
        .collect()
}

/// The `SeriesRequest.aggregates` values of `aggrs`.
pub(crate) fn aggregates_to_proto(aggrs: &[engine::aggr::Aggregate]) -> Vec<i32> {
    use engine::aggr::Aggregate;
    use proto::thanos::Aggr;
    aggrs
        .iter()
        .map(|a| {
            (match a {
                Aggregate::Count => Aggr::Count,
                Aggregate::Sum => Aggr::Sum,
                Aggregate::Min => Aggr::Min,
                Aggregate::Max => Aggr::Max,
                Aggregate::Counter => Aggr::Counter,
            }) as i32
        })
        .collect()
}

/// The engine's match operator as the wire enum.
pub fn match_op_to_proto(op: MatchOp) -> PbMatchType {
    match op {
        MatchOp::Equal => PbMatchType::Eq,
        MatchOp::NotEqual => PbMatchType::Neq,
        MatchOp::RegexMatch => PbMatchType::Re,
        MatchOp::RegexNoMatch => PbMatchType::Nre,
    }
}

/// Matchers as sent in `SeriesRequest.matchers` and the label requests.
pub fn matchers_to_proto(ms: &[Matcher]) -> Vec<PbMatcher> {
    ms.iter()
        .map(|m| PbMatcher { r#type: match_op_to_proto(m.op) as i32, name: m.name.clone(), value: m.value.clone() })
        .collect()
}

/// Matchers from the wire; an unknown type or a regex that does not compile is a
/// [`Error::BadData`] naming the matcher (gRPC `InvalidArgument`).
pub fn matchers_from_proto(ms: &[PbMatcher]) -> Result<Vec<Matcher>> {
    ms.iter()
        .map(|m| {
            let op = match PbMatchType::try_from(m.r#type) {
                Ok(PbMatchType::Eq) => MatchOp::Equal,
                Ok(PbMatchType::Neq) => MatchOp::NotEqual,
                Ok(PbMatchType::Re) => MatchOp::RegexMatch,
                Ok(PbMatchType::Nre) => MatchOp::RegexNoMatch,
                Err(_) => {
                    return Err(Error::BadData(format!(
                        "matcher on label {:?}: unknown matcher type {}",
                        m.name, m.r#type
                    )));
                }
            };
            Matcher::new(op, m.name.clone(), m.value.clone())
                .map_err(|e| Error::BadData(format!("matcher {}{}{:?}: {e}", m.name, op, m.value)))
        })
        .collect()
}

/// A label set on the wire, in the set's (name-sorted) order.
pub fn labels_to_proto(l: &Labels) -> Vec<PbLabel> {
    l.iter().map(|l| PbLabel { name: l.name.clone(), value: l.value.clone() }).collect()
}

/// A label set from the wire; sorted by name whatever the order received.
pub fn labels_from_proto(ls: Vec<PbLabel>) -> Labels {
    Labels::from_pairs(ls.into_iter().map(|l| (l.name, l.value)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn match_types_have_the_wire_numbers_of_the_spec() {
        // spec/storeapi.md §1: EQ=0, NEQ=1, RE=2, NRE=3.
        let ops = [MatchOp::Equal, MatchOp::NotEqual, MatchOp::RegexMatch, MatchOp::RegexNoMatch];
        for (n, op) in ops.into_iter().enumerate() {
            assert_eq!(match_op_to_proto(op) as i32, n as i32);
            let m = Matcher::new(op, "a", "b").unwrap();
            assert_eq!(matchers_from_proto(&matchers_to_proto(std::slice::from_ref(&m))).unwrap(), vec![m]);
        }
    }

    #[test]
    fn bad_matchers_name_the_label() {
        let unknown = PbMatcher { r#type: 7, name: "job".into(), value: "x".into() };
        let e = matchers_from_proto(&[unknown]).unwrap_err().to_string();
        assert!(e.contains("\"job\"") && e.contains("unknown matcher type 7"), "{e}");
        let bad_re = PbMatcher { r#type: PbMatchType::Re as i32, name: "job".into(), value: "(".into() };
        let e = matchers_from_proto(&[bad_re]).unwrap_err().to_string();
        assert!(e.contains("job=~\"(\""), "{e}");
    }

    #[test]
    fn labels_are_sorted_on_the_way_in() {
        let wire =
            vec![PbLabel { name: "z".into(), value: "1".into() }, PbLabel { name: "a".into(), value: "2".into() }];
        let l = labels_from_proto(wire);
        assert_eq!(l.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(), vec!["a", "z"]);
    }
}
