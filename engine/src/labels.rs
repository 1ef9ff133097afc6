//! Label sets and label matchers, with Prometheus's semantics.
//!
//! A [`Labels`] is a set of (name, value) pairs sorted by name with unique names; it orders like
//! Prometheus's `labels.Compare` and hashes like `labels.Hash` (xxHash64 over `name 0xff value 0xff`).
//! A [`Matcher`] is one of `=`, `!=`, `=~`, `!~`; regexes are anchored at both ends and `.` matches
//! newlines, as in Prometheus 3. A missing label matches like an empty value.

use std::fmt;
use std::sync::Arc;

use crate::error::{Error, Result};

/// The reserved label holding the metric name.
pub const METRIC_NAME: &str = "__name__";

/// True when `name` is a label name as Prometheus 2 (and its rule files, relabelling and remote
/// write validation) accept it: `[a-zA-Z_][a-zA-Z0-9_]*`.
///
/// ```
/// assert!(engine::labels::valid_label_name("__name__"));
/// assert!(!engine::labels::valid_label_name("0x"));
/// assert!(!engine::labels::valid_label_name("a-b"));
/// ```
pub fn valid_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b == b'_' || b.is_ascii_alphabetic())
        && bytes.all(|b| b == b'_' || b.is_ascii_alphanumeric())
}

/// One label: a name and a value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Label {
    /// Label name.
    pub name: String,
    /// Label value.
    pub value: String,
}

/// A sorted set of labels identifying a series.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Labels(Vec<Label>);

impl Labels {
    /// Builds a label set from pairs in any order; empty values are dropped (Prometheus treats an
    /// empty value as an absent label); the last of duplicate names wins.
    ///
    /// ```
    /// let l = engine::Labels::from_pairs([("job", "api"), ("__name__", "up")]);
    /// assert_eq!(l.to_string(), r#"up{job="api"}"#);
    /// ```
    pub fn from_pairs<N: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (N, V)>) -> Self {
        let mut v: Vec<Label> = pairs
            .into_iter()
            .map(|(n, v)| Label { name: n.into(), value: v.into() })
            .filter(|l| !l.value.is_empty())
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        // keep the last of equal names
        let mut out: Vec<Label> = Vec::with_capacity(v.len());
        for l in v {
            match out.last_mut() {
                Some(last) if last.name == l.name => *last = l,
                _ => out.push(l),
            }
        }
        Labels(out)
    }

    /// Builds a label set from labels that are already one: in name order, names unique, no
    /// empty values (as [`Labels::into_vec`] gives them, or a decoder of a stored set reads
    /// them) without sorting them again; labels that are not are put in order as
    /// [`Labels::from_pairs`] does.
    ///
    /// ```
    /// use engine::labels::Label;
    /// let l = |n: &str, v: &str| Label { name: n.into(), value: v.into() };
    /// let sorted = engine::Labels::from_sorted(vec![l("a", "1"), l("b", "2")]);
    /// assert_eq!(sorted, engine::Labels::from_pairs([("b", "2"), ("a", "1")]));
    /// assert_eq!(engine::Labels::from_sorted(vec![l("b", "2"), l("a", "1"), l("c", "")]), sorted);
    /// ```
    pub fn from_sorted(v: Vec<Label>) -> Self {
        if v.windows(2).all(|w| w[0].name < w[1].name) && v.iter().all(|l| !l.value.is_empty()) {
            return Labels(v);
        }
        Self::from_pairs(v.into_iter().map(|l| (l.name, l.value)))
    }

    /// Builds a label set from pairs and rejects duplicate or empty names instead of fixing them.
    pub fn try_from_pairs<N: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (N, V)>) -> Result<Self> {
        let mut v: Vec<Label> = pairs.into_iter().map(|(n, v)| Label { name: n.into(), value: v.into() }).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        let bad = |reason: String, v: &[Label]| Error::BadLabels { labels: Labels(v.to_vec()).to_string(), reason };
        for w in v.windows(2) {
            if w[0].name == w[1].name {
                return Err(bad(format!("duplicate label name {:?}", w[0].name), &v));
            }
        }
        if v.iter().any(|l| l.name.is_empty()) {
            return Err(bad("empty label name".into(), &v));
        }
        v.retain(|l| !l.value.is_empty());
        Ok(Labels(v))
    }

    /// The labels, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = &Label> {
        self.0.iter()
    }
    /// Number of labels.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// True when there are no labels.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// The value of label `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.binary_search_by(|l| l.name.as_str().cmp(name)).ok().map(|i| self.0[i].value.as_str())
    }
    /// The metric name (`__name__`), if present.
    pub fn metric_name(&self) -> Option<&str> {
        self.get(METRIC_NAME)
    }
    /// Sets (or with an empty value, removes) label `name`.
    pub fn set(&mut self, name: &str, value: &str) {
        match self.0.binary_search_by(|l| l.name.as_str().cmp(name)) {
            Ok(i) if value.is_empty() => {
                self.0.remove(i);
            }
            Ok(i) => self.0[i].value = value.to_string(),
            Err(_) if value.is_empty() => {}
            Err(i) => self.0.insert(i, Label { name: name.to_string(), value: value.to_string() }),
        }
    }
    /// Removes label `name` if present.
    pub fn remove(&mut self, name: &str) {
        self.set(name, "");
    }
    /// Stable 64-bit hash of the label set, equal to Prometheus's `labels.Hash()`.
    pub fn stable_hash(&self) -> u64 {
        let mut h = xxhash_rust::xxh64::Xxh64::new(0);
        for l in &self.0 {
            h.update(l.name.as_bytes());
            h.update(&[0xff]);
            h.update(l.value.as_bytes());
            h.update(&[0xff]);
        }
        h.digest()
    }
    /// Consumes the set into its sorted vector of labels.
    pub fn into_vec(self) -> Vec<Label> {
        self.0
    }
}

impl fmt::Display for Labels {
    /// Prints like Prometheus: `name{a="b", c="d"}` (the name outside the braces when present).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.metric_name();
        if let Some(n) = name {
            f.write_str(n)?;
        }
        let rest: Vec<&Label> = self.0.iter().filter(|l| l.name != METRIC_NAME).collect();
        if rest.is_empty() && name.is_some() {
            return Ok(());
        }
        f.write_str("{")?;
        for (i, l) in rest.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}={:?}", l.name, l.value)?;
        }
        f.write_str("}")
    }
}

/// The four kinds of label matcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatchOp {
    /// `=`
    Equal,
    /// `!=`
    NotEqual,
    /// `=~`
    RegexMatch,
    /// `!~`
    RegexNoMatch,
}

impl fmt::Display for MatchOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::RegexMatch => "=~",
            MatchOp::RegexNoMatch => "!~",
        })
    }
}

/// A label matcher, e.g. `job=~"api|web"`.
#[derive(Debug, Clone)]
pub struct Matcher {
    /// Label name the matcher tests.
    pub name: String,
    /// Kind of test.
    pub op: MatchOp,
    /// The literal value or the (unanchored) regex source.
    pub value: String,
    re: Option<regex::Regex>,
    /// A regex's whole language when it is a small set of strings (`a|b`, `api-(eu|us)`), sorted
    /// (shared: matchers are cloned per block).
    set: Option<Arc<[String]>>,
}

impl PartialEq for Matcher {
    fn eq(&self, o: &Self) -> bool {
        self.name == o.name && self.op == o.op && self.value == o.value
    }
}

impl Matcher {
    /// Builds a matcher; regexes are anchored (`^(?s:...)$`) as Prometheus does.
    ///
    /// ```
    /// use engine::{Matcher, MatchOp};
    /// let m = Matcher::new(MatchOp::RegexMatch, "job", "api|web").unwrap();
    /// assert!(m.matches("web") && !m.matches("webx"));
    /// ```
    pub fn new(op: MatchOp, name: impl Into<String>, value: impl Into<String>) -> Result<Self> {
        let name = name.into();
        let value = value.into();
        let (re, set) = match op {
            MatchOp::RegexMatch | MatchOp::RegexNoMatch => (
                Some(
                    regex::Regex::new(&format!("^(?s:{value})$"))
                        .map_err(|e| Error::BadRegex { label: name.clone(), source: Box::new(e) })?,
                ),
                literal_set(&value).map(Arc::from),
            ),
            _ => (None, None),
        };
        Ok(Matcher { name, op, value, re, set })
    }

    /// Shorthand for an equality matcher (cannot fail).
    pub fn equal(name: impl Into<String>, value: impl Into<String>) -> Self {
        Matcher { name: name.into(), op: MatchOp::Equal, value: value.into(), re: None, set: None }
    }

    /// For a regex matcher whose regex matches a small set of strings and nothing else (an
    /// alternation of literals, as Grafana's multi-value variables write, possibly inside a
    /// literal prefix or suffix), those strings, sorted: an index can look them up instead of
    /// running the regex on every value. `None` for any other matcher.
    pub fn literal_set(&self) -> Option<&[String]> {
        self.set.as_deref()
    }

    /// Tests one label value (use `""` for an absent label).
    pub fn matches(&self, v: &str) -> bool {
        match self.op {
            MatchOp::Equal => v == self.value,
            MatchOp::NotEqual => v != self.value,
            MatchOp::RegexMatch => self.re.as_ref().is_some_and(|r| r.is_match(v)),
            MatchOp::RegexNoMatch => !self.re.as_ref().is_some_and(|r| r.is_match(v)),
        }
    }

    /// True when this matcher accepts the empty value, i.e. also series without the label.
    pub fn matches_empty(&self) -> bool {
        self.matches("")
    }

    /// Tests a whole label set.
    pub fn matches_labels(&self, l: &Labels) -> bool {
        self.matches(l.get(&self.name).unwrap_or(""))
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{:?}", self.name, self.op, self.value)
    }
}

/// Most strings [`literal_set`] enumerates: beyond it the regex runs per value.
const MAX_LITERAL_SET: usize = 256;

/// The strings `regex` (anchored at both ends, `s` flag on, as [`Matcher::new`] compiles it)
/// matches, sorted and distinct, when they are at most [`MAX_LITERAL_SET`] and the regex is built
/// from literals, small character classes (`(a|b)` and `(?i)` letters become classes),
/// alternations, concatenations and groups only (no repetitions or look-around, whose languages
/// this does not enumerate).
fn literal_set(regex: &str) -> Option<Vec<String>> {
    use regex_syntax::hir::{Class, Hir, HirKind};
    fn strings(h: &Hir) -> Option<Vec<Vec<u8>>> {
        match h.kind() {
            HirKind::Empty => Some(vec![Vec::new()]),
            HirKind::Literal(l) => Some(vec![l.0.to_vec()]),
            HirKind::Capture(c) => strings(&c.sub),
            HirKind::Alternation(subs) => {
                let mut out = Vec::new();
                for s in subs {
                    out.extend(strings(s)?);
                    if out.len() > MAX_LITERAL_SET {
                        return None;
                    }
                }
                Some(out)
            }
            HirKind::Concat(subs) => {
                let mut out = vec![Vec::new()];
                for s in subs {
                    let tails = strings(s)?;
                    if out.len() * tails.len() > MAX_LITERAL_SET {
                        return None;
                    }
                    out = out
                        .iter()
                        .flat_map(|head| {
                            tails.iter().map(move |t| {
                                let mut v = head.clone();
                                v.extend_from_slice(t);
                                v
                            })
                        })
                        .collect();
                }
                Some(out)
            }
            HirKind::Class(Class::Unicode(c)) => {
                let mut out = Vec::new();
                for r in c.ranges() {
                    if out.len() + (r.end() as usize - r.start() as usize + 1) > MAX_LITERAL_SET {
                        return None;
                    }
                    out.extend((r.start()..=r.end()).map(|ch| ch.to_string().into_bytes()));
                }
                Some(out)
            }
            HirKind::Class(Class::Bytes(_)) | HirKind::Look(_) | HirKind::Repetition(_) => None,
        }
    }
    let hir = regex_syntax::Parser::new().parse(&format!("(?s:{regex})")).ok()?;
    let mut set: Vec<String> =
        strings(&hir)?.into_iter().map(String::from_utf8).collect::<std::result::Result<_, _>>().ok()?;
    set.sort_unstable();
    set.dedup();
    Some(set)
}

/// The matchers that external labels do not decide: those on a label `external` has no value for.
/// `None` when a matcher on an external label rejects its value (nothing can match).
///
/// ```
/// use engine::labels::{Matcher, non_external};
/// let ext = |n: &str| (n == "zone").then_some("eu");
/// let ms = [Matcher::equal("zone", "eu"), Matcher::equal("job", "api")];
/// assert_eq!(non_external(&ms, ext).unwrap().len(), 1);
/// assert!(non_external(&[Matcher::equal("zone", "us")], ext).is_none());
/// ```
pub fn non_external<'a>(matchers: &[Matcher], external: impl Fn(&str) -> Option<&'a str>) -> Option<Vec<Matcher>> {
    let mut rest = Vec::with_capacity(matchers.len());
    for m in matchers {
        match external(&m.name) {
            Some(v) if !m.matches(v) => return None,
            Some(_) => {}
            None => rest.push(m.clone()),
        }
    }
    Some(rest)
}

/// True when every matcher accepts the label set.
pub fn matches_all(ms: &[Matcher], l: &Labels) -> bool {
    ms.iter().all(|m| m.matches_labels(l))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn literal_sets_are_exactly_what_the_regex_matches() {
        let set = |re: &str| Matcher::new(MatchOp::RegexMatch, "l", re).unwrap().literal_set().map(<[String]>::to_vec);
        let s = |v: &[&str]| Some(v.iter().map(|x| x.to_string()).collect::<Vec<_>>());
        assert_eq!(set("api"), s(&["api"]));
        assert_eq!(set("web|api|web"), s(&["api", "web"]));
        assert_eq!(set("foo|foobar"), s(&["foo", "foobar"]));
        assert_eq!(set("(eu|us)-(a|b)"), s(&["eu-a", "eu-b", "us-a", "us-b"]));
        assert_eq!(set("a|"), s(&["", "a"]));
        assert_eq!(set(""), s(&[""]));
        assert_eq!(set(r"10\.0\.0\.1:9100|h\|x"), s(&["10.0.0.1:9100", "h|x"]));
        assert_eq!(set("(?:x)(y)"), s(&["xy"]));
        assert_eq!(set("é|ü"), s(&["é", "ü"]));
        assert_eq!(set("[ab]c"), s(&["ac", "bc"]));
        assert_eq!(set("(?i)ab"), s(&["AB", "Ab", "aB", "ab"]));
        for re in ["a.", ".*", "a+", "a?", "[a-z][a-z]x", r"\bapi", "^api$", "a{2}b", r"\d", "[^a]"] {
            assert_eq!(set(re), None, "{re}");
        }
        let many = (0..300).map(|i| format!("h{i}")).collect::<Vec<_>>().join("|");
        assert_eq!(set(&many), None);
        assert_eq!(set("(a|b|c|d)(a|b|c|d)(a|b|c|d)(a|b|c|d)(a|b|c|d)"), None);
        assert!(Matcher::new(MatchOp::Equal, "l", "a|b").unwrap().literal_set().is_none());
        // Whatever the set, it is the regex's language: every probe agrees with the regex crate.
        let probes =
            ",a,api,web,foo,foob,foobar,eu-a,us-b,eu-c,h|x,hx,10.0.0.1:9100,10a0.0.1:9100,xy,é,ü,u,x,API,aPi,epi,Epi";
        for re in [
            "api",
            "web|api|web",
            "foo|foobar",
            "(eu|us)-(a|b)",
            "a|",
            "",
            r"10\.0\.0\.1:9100|h\|x",
            "(?:x)(y)",
            "é|ü",
            "(?i)API",
            "[ae]pi",
        ] {
            let m = Matcher::new(MatchOp::RegexMatch, "l", re).unwrap();
            let set = m.literal_set().unwrap();
            for p in probes.split(',') {
                assert_eq!(set.iter().any(|v| v == p), m.matches(p), "{re} on {p:?}");
            }
        }
    }

    #[test]
    fn order_and_hash_like_prometheus() {
        let a = Labels::from_pairs([("a", "1"), ("b", "2")]);
        let b = Labels::from_pairs([("a", "1"), ("b", "3")]);
        let c = Labels::from_pairs([("a", "1")]);
        assert!(c < a && a < b);
        // Value from Prometheus's labels.Hash for {} (xxhash64 of no bytes, seed 0).
        assert_eq!(Labels::default().stable_hash(), 0xef46db3751d8e999);
        assert_ne!(a.stable_hash(), b.stable_hash());
    }

    #[test]
    fn regex_is_anchored_and_dotall() {
        let m = Matcher::new(MatchOp::RegexMatch, "x", "a.b").unwrap();
        assert!(m.matches("a\nb"));
        assert!(!m.matches("xa\nb"));
        let n = Matcher::new(MatchOp::RegexNoMatch, "x", "").unwrap();
        assert!(!n.matches(""));
        assert!(n.matches("v"));
        assert!(Matcher::new(MatchOp::RegexMatch, "x", "(").is_err());
    }

    #[test]
    fn display_and_set() {
        let mut l = Labels::from_pairs([("__name__", "up"), ("job", "a\"b")]);
        assert_eq!(l.to_string(), "up{job=\"a\\\"b\"}");
        l.set("instance", "i");
        l.remove("job");
        assert_eq!(l.to_string(), "up{instance=\"i\"}");
        assert!(Labels::try_from_pairs([("a", "1"), ("a", "2")]).is_err());
    }
}
