//! Parser for the promqltest script language (see `shared/spec/promqltest-format.md`).
//!
//! Two stages: the file is split into commands by its line rules (comments become blank lines,
//! blank lines end blocks), then load bodies and expected results are read with a small
//! series-description grammar (labels + value items). PromQL queries are kept as text.

use engine::Labels;
use regex::Regex;
use std::sync::OnceLock;

/// Prometheus's stale marker: a NaN with this exact bit pattern.
pub(crate) const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// True if `v` is the stale marker.
pub(crate) fn is_stale(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// One slot of a value sequence.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum SeqVal {
    /// `_`: the slot has no sample.
    Omitted,
    /// A float sample (possibly the stale marker).
    Float(f64),
    /// A native histogram sample (not modelled further; its presence decides skipping).
    Hist,
}

/// A series description: labels and value items.
#[derive(Debug, Clone)]
pub(crate) struct SeriesDesc {
    /// The label set (metric name as `__name__`).
    pub(crate) labels: Labels,
    /// Expanded value slots.
    pub(crate) vals: Vec<SeqVal>,
    /// Start-timestamp offsets (ms, relative to each slot's time) from the preceding `@st` line,
    /// one per slot; `None` = no start timestamp.
    pub(crate) st: Option<Vec<Option<i64>>>,
}

/// A `load` / `load_with_nhcb` block.
#[derive(Debug, Clone)]
pub(crate) struct LoadCmd {
    /// 1-based line of the `load` header.
    pub(crate) line: usize,
    /// Gap between slots in ms.
    pub(crate) interval: i64,
    /// `load_with_nhcb`: classic histograms are also converted to NHCB series.
    pub(crate) with_nhcb: bool,
    /// The series of the block.
    pub(crate) series: Vec<SeriesDesc>,
}

/// The kind of an `expect` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExpectKind {
    /// `expect ordered`
    Ordered,
    /// `expect fail`
    Fail,
    /// `expect warn`
    Warn,
    /// `expect no_warn`
    NoWarn,
    /// `expect info`
    Info,
    /// `expect no_info`
    NoInfo,
}

/// How an expectation matches a text.
#[derive(Debug, Clone)]
pub(crate) enum TextMatch {
    /// No `msg:`/`regex:` part: anything matches.
    Any,
    /// `msg:` exact text.
    Msg(String),
    /// `regex:` unanchored search.
    Re(Regex),
}

impl TextMatch {
    /// Whether `s` satisfies this expectation.
    pub(crate) fn matches(&self, s: &str) -> bool {
        match self {
            TextMatch::Any => true,
            TextMatch::Msg(m) => m == s,
            TextMatch::Re(r) => r.is_match(s),
        }
    }
}

impl std::fmt::Display for TextMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TextMatch::Any => f.write_str("<any>"),
            TextMatch::Msg(m) => write!(f, "msg {m:?}"),
            TextMatch::Re(r) => write!(f, "regex {:?}", r.as_str()),
        }
    }
}

/// One expected series of an eval.
#[derive(Debug, Clone)]
pub(crate) struct Expected {
    /// 1-based position among the body lines (for ordered checks).
    pub(crate) pos: usize,
    /// Expected value slots.
    pub(crate) vals: Vec<SeqVal>,
}

/// An `eval*` block.
#[derive(Debug, Clone)]
pub(crate) struct EvalCmd {
    /// 1-based line of the header.
    pub(crate) line: usize,
    /// The PromQL text.
    pub(crate) expr: String,
    /// Range eval (`eval range ...`).
    pub(crate) is_range: bool,
    /// Instant evaluation time (ms).
    pub(crate) eval_t: i64,
    /// Start of the expected points (range evals, `expect range vector`), or the instant time.
    pub(crate) start: i64,
    /// End of the expected points; `None` is Go's zero time (before every timestamp).
    pub(crate) end: Option<i64>,
    /// Step of the expected points (ms).
    pub(crate) step: i64,
    /// `eval_fail`.
    pub(crate) fail: bool,
    /// `eval_warn`.
    pub(crate) warn: bool,
    /// `eval_info`.
    pub(crate) info: bool,
    /// `eval_ordered`.
    pub(crate) ordered: bool,
    /// `expected_fail_message`.
    pub(crate) fail_message: Option<String>,
    /// `expected_fail_regexp`.
    pub(crate) fail_regexp: Option<Regex>,
    /// `expect ...` lines.
    pub(crate) expects: Vec<(ExpectKind, TextMatch)>,
    /// A bare number line: the result is a scalar.
    pub(crate) expect_scalar: Option<f64>,
    /// Expected series keyed by labels (the last of equal label sets wins).
    pub(crate) expected: std::collections::BTreeMap<Labels, Expected>,
    /// `expect string`.
    pub(crate) expected_string: Option<String>,
    /// `expect range vector` was given.
    pub(crate) range_vector: bool,
    /// Not re-checked as a range query.
    pub(crate) exclude_from_range: bool,
}

impl EvalCmd {
    /// Failure expected (`eval_fail` or `expect fail`).
    pub(crate) fn is_fail(&self) -> bool {
        self.fail || self.expects.iter().any(|e| e.0 == ExpectKind::Fail)
    }
    /// Ordered result expected.
    pub(crate) fn is_ordered(&self) -> bool {
        self.ordered || self.expects.iter().any(|e| e.0 == ExpectKind::Ordered)
    }
    /// The expectations of one kind.
    pub(crate) fn expects_of(&self, k: ExpectKind) -> Vec<&TextMatch> {
        self.expects.iter().filter(|e| e.0 == k).map(|e| &e.1).collect()
    }
    /// True if any expected value is a native histogram.
    pub(crate) fn expects_histograms(&self) -> bool {
        self.expected.values().any(|e| e.vals.iter().any(|v| matches!(v, SeqVal::Hist)))
    }
}

/// A script command.
#[derive(Debug, Clone)]
pub(crate) enum Cmd {
    /// `clear`
    Clear,
    /// `load` / `load_with_nhcb`
    Load(LoadCmd),
    /// `eval*`
    Eval(Box<EvalCmd>),
}

fn re(cell: &'static OnceLock<Regex>, pat: &str) -> &'static Regex {
    cell.get_or_init(|| Regex::new(pat).unwrap_or_else(|e| panic!("bad built-in regex {pat}: {e}")))
}

/// Parses a Prometheus duration (`1h30m`, `0`, `10s53ms`) into ms.
pub(crate) fn parse_duration(s: &str) -> Result<i64, String> {
    static R: OnceLock<Regex> = OnceLock::new();
    if s == "0" {
        return Ok(0);
    }
    let r = re(
        &R,
        r"^(?:([0-9]+)y)?(?:([0-9]+)w)?(?:([0-9]+)d)?(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+)s)?(?:([0-9]+)ms)?$",
    );
    let caps = match r.captures(s) {
        Some(c) if !s.is_empty() => c,
        _ => return Err(format!("not a valid duration string: {s:?}")),
    };
    const UNIT: [i64; 7] = [365 * 86_400_000, 7 * 86_400_000, 86_400_000, 3_600_000, 60_000, 1000, 1];
    let mut total: i64 = 0;
    for (i, unit) in UNIT.iter().enumerate() {
        if let Some(m) = caps.get(i + 1) {
            let n: i64 = m.as_str().parse().map_err(|_| format!("duration out of range: {s:?}"))?;
            total = n
                .checked_mul(*unit)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(|| format!("duration out of range: {s:?}"))?;
        }
    }
    Ok(total)
}

/// Go's `strconv.ParseInt(s, 0, 64)` then `ParseFloat(s, 64)`, as the runner reads scalar lines.
pub(crate) fn parse_go_number(s: &str) -> Option<f64> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let sign = if neg { -1.0 } else { 1.0 };
    let lower = body.to_ascii_lowercase();
    let radix_int = |digits: &str, radix: u32| -> Option<f64> {
        let d: String = digits.chars().filter(|c| *c != '_').collect();
        if d.is_empty() {
            return None;
        }
        i64::from_str_radix(&d, radix).ok().map(|v| sign * v as f64)
    };
    if let Some(d) = lower.strip_prefix("0x") {
        if let Some(v) = radix_int(d, 16) {
            return Some(v);
        }
    } else if let Some(d) = lower.strip_prefix("0o") {
        return radix_int(d, 8);
    } else if let Some(d) = lower.strip_prefix("0b") {
        return radix_int(d, 2);
    } else if body.len() > 1 && body.starts_with('0') && body.bytes().all(|b| b.is_ascii_digit()) {
        return radix_int(&body[1..], 8);
    } else if !body.is_empty() && body.bytes().all(|b| b.is_ascii_digit()) {
        return body.parse::<i64>().ok().map(|v| sign * v as f64).or_else(|| s.parse().ok());
    }
    if s.contains('_') {
        return None;
    }
    s.parse::<f64>().ok()
}

/// Parses a number of a series description: decimal/float, `Inf`/`NaN` with sign, `_` separators.
fn parse_series_number(s: &str) -> Result<f64, String> {
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    let neg = s.starts_with('-');
    let lower = body.to_ascii_lowercase();
    if lower == "inf" {
        return Ok(if neg { f64::NEG_INFINITY } else { f64::INFINITY });
    }
    if lower == "nan" {
        return Ok(f64::NAN);
    }
    let ok_chars = !body.is_empty()
        && body.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-' | b'_'))
        && body.bytes().next().is_some_and(|b| b.is_ascii_digit() || b == b'.');
    if !ok_chars {
        return Err(format!("bad number {s:?}"));
    }
    let cleaned: String = s.chars().filter(|c| *c != '_').collect();
    cleaned.parse::<f64>().map_err(|_| format!("bad number {s:?}"))
}

fn parse_repeat(s: &str) -> Result<usize, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("bad repeat count {s:?}"));
    }
    s.parse().map_err(|_| format!("bad repeat count {s:?}"))
}

/// Splits `head` (the part before `xN`) into `a` and the signed step `b`, if it has one.
fn split_step(head: &str) -> Option<(&str, char, &str)> {
    let bytes = head.as_bytes();
    for i in 1..bytes.len() {
        let c = bytes[i];
        if (c == b'+' || c == b'-') && !matches!(bytes[i - 1], b'e' | b'E' | b'+' | b'-') {
            return Some((&head[..i], c as char, &head[i + 1..]));
        }
    }
    None
}

fn expand_float_item(tok: &str) -> Result<Vec<SeqVal>, String> {
    if tok == "_" {
        return Ok(vec![SeqVal::Omitted]);
    }
    if let Some(n) = tok.strip_prefix("_x") {
        return Ok(vec![SeqVal::Omitted; parse_repeat(n)?]);
    }
    if tok.eq_ignore_ascii_case("stale") {
        return Ok(vec![SeqVal::Float(f64::from_bits(STALE_NAN_BITS))]);
    }
    let (head, n) = match tok.rfind('x') {
        Some(i) if i + 1 < tok.len() && tok[i + 1..].bytes().all(|b| b.is_ascii_digit()) => {
            (&tok[..i], Some(parse_repeat(&tok[i + 1..])?))
        }
        _ => (tok, None),
    };
    let Some(n) = n else {
        return Ok(vec![SeqVal::Float(parse_series_number(head)?)]);
    };
    match split_step(head) {
        None => Ok(vec![SeqVal::Float(parse_series_number(head)?); n + 1]),
        Some((a, op, b)) => {
            let mut cur = parse_series_number(a)?;
            let mut step = parse_series_number(b)?;
            if op == '-' {
                step = -step;
            }
            let mut out = Vec::with_capacity(n + 1);
            for _ in 0..=n {
                out.push(SeqVal::Float(cur));
                cur += step;
            }
            Ok(out)
        }
    }
}

/// Expands a histogram item (`{{...}}`, `{{...}}xN`, `{{A}}+{{B}}xN`) to its number of slots.
fn expand_hist_item(tok: &str) -> Result<Vec<SeqVal>, String> {
    let close = tok.find("}}").ok_or_else(|| format!("unterminated histogram {tok:?}"))?;
    let mut rest = &tok[close + 2..];
    if rest.is_empty() {
        return Ok(vec![SeqVal::Hist]);
    }
    if rest.starts_with("+{{") || rest.starts_with("-{{") {
        let c2 = rest.find("}}").ok_or_else(|| format!("unterminated histogram {tok:?}"))?;
        rest = &rest[c2 + 2..];
        if !rest.starts_with('x') {
            return Err(format!("histogram step without repeat count: {tok:?}"));
        }
    }
    let n = rest.strip_prefix('x').ok_or_else(|| format!("bad histogram item {tok:?}"))?;
    Ok(vec![SeqVal::Hist; parse_repeat(n)? + 1])
}

/// Splits a value list into items; `{{...}}` histograms (which contain spaces) stay whole.
fn tokenize_values(s: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b' ' || b[i] == b'\t' {
            i += 1;
            continue;
        }
        let start = i;
        loop {
            if s[i..].starts_with("{{") || s[i..].starts_with("+{{") || s[i..].starts_with("-{{") {
                let close = s[i..].find("}}").ok_or_else(|| format!("unterminated histogram in {s:?}"))?;
                i += close + 2;
                continue;
            }
            if i >= b.len() || b[i] == b' ' || b[i] == b'\t' {
                break;
            }
            i += 1;
        }
        out.push(&s[start..i]);
    }
    Ok(out)
}

/// Expands a value list.
pub(crate) fn parse_values(s: &str) -> Result<Vec<SeqVal>, String> {
    let mut out = Vec::new();
    for tok in tokenize_values(s)? {
        if tok.starts_with("{{") {
            out.extend(expand_hist_item(tok)?);
        } else {
            out.extend(expand_float_item(tok).map_err(|e| format!("{e} in item {tok:?}"))?);
        }
    }
    Ok(out)
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c == b':'
}
fn is_ident_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b':'
}

/// Reads a quoted string (`"..."`, `'...'` with Go escapes, or a raw backquoted string) at the
/// start of `s`; returns its value and the rest.
pub(crate) fn read_quoted(s: &str) -> Result<(String, &str), String> {
    let mut chars = s.char_indices();
    let q = match chars.next() {
        Some((_, c @ ('"' | '\'' | '`'))) => c,
        _ => return Err(format!("expected a quoted string at {s:?}")),
    };
    let mut out = String::new();
    while let Some((i, c)) = chars.next() {
        if c == q {
            return Ok((out, &s[i + 1..]));
        }
        if c != '\\' || q == '`' {
            out.push(c);
            continue;
        }
        let (_, e) = chars.next().ok_or("unterminated escape")?;
        let hex = |chars: &mut std::str::CharIndices<'_>, n: usize| -> Result<u32, String> {
            let mut v = 0u32;
            for _ in 0..n {
                let (_, h) = chars.next().ok_or("short escape")?;
                v = v * 16 + h.to_digit(16).ok_or("bad hex escape")?;
            }
            Ok(v)
        };
        match e {
            'a' => out.push('\u{7}'),
            'b' => out.push('\u{8}'),
            'f' => out.push('\u{c}'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'v' => out.push('\u{b}'),
            '\\' | '\'' | '"' => out.push(e),
            'x' => {
                // A byte; non-ASCII bytes cannot be represented in a Rust String, use U+FFFD.
                let v = hex(&mut chars, 2)?;
                out.push(char::from_u32(v).filter(|_| v < 0x80).unwrap_or('\u{fffd}'));
            }
            'u' => out.push(char::from_u32(hex(&mut chars, 4)?).ok_or("bad \\u escape")?),
            'U' => out.push(char::from_u32(hex(&mut chars, 8)?).ok_or("bad \\U escape")?),
            '0'..='7' => {
                let mut v = e.to_digit(8).unwrap_or(0);
                for _ in 0..2 {
                    let (_, o) = chars.next().ok_or("short octal escape")?;
                    v = v * 8 + o.to_digit(8).ok_or("bad octal escape")?;
                }
                out.push(char::from_u32(v).filter(|_| v < 0x80).unwrap_or('\u{fffd}'));
            }
            other => return Err(format!("unknown escape \\{other}")),
        }
    }
    Err(format!("unterminated string {s:?}"))
}

/// Parses the label part of a series description; returns the labels and the rest of the line.
pub(crate) fn parse_labels(s: &str) -> Result<(Labels, &str), String> {
    let b = s.as_bytes();
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut i = 0;
    if i < b.len() && is_ident_start(b[i]) {
        while i < b.len() && is_ident_char(b[i]) {
            i += 1;
        }
        pairs.push(("__name__".into(), s[..i].to_string()));
    }
    let mut rest = &s[i..];
    if rest.starts_with('{') {
        rest = &rest[1..];
        loop {
            rest = rest.trim_start();
            if let Some(r) = rest.strip_prefix('}') {
                rest = r;
                break;
            }
            let (name, quoted, r) = if rest.starts_with(['"', '\'', '`']) {
                let (n, r) = read_quoted(rest)?;
                (n, true, r)
            } else {
                let nb = rest.as_bytes();
                if nb.is_empty() || !is_ident_start(nb[0]) {
                    return Err(format!("bad label name at {rest:?}"));
                }
                let mut j = 0;
                while j < nb.len() && is_ident_char(nb[j]) {
                    j += 1;
                }
                (rest[..j].to_string(), false, &rest[j..])
            };
            rest = r.trim_start();
            if let Some(r) = rest.strip_prefix('=') {
                if r.starts_with(['=', '~']) {
                    return Err(format!("only equality matchers allowed in series descriptions: {s:?}"));
                }
                let (v, r) = read_quoted(r.trim_start())?;
                pairs.push((name, v));
                rest = r.trim_start();
            } else if quoted {
                pairs.push(("__name__".into(), name));
            } else {
                return Err(format!("expected '=' after label name {name:?}"));
            }
            if let Some(r) = rest.strip_prefix(',') {
                rest = r;
            } else if !rest.starts_with('}') {
                return Err(format!("expected ',' or '}}' in label set at {rest:?}"));
            }
        }
    } else if pairs.is_empty() {
        return Err(format!("series description must start with a metric name or '{{': {s:?}"));
    }
    if !rest.is_empty() && !rest.starts_with([' ', '\t']) {
        return Err(format!("unexpected text after label set: {rest:?}"));
    }
    Ok((Labels::from_pairs(pairs), rest))
}

/// Parses a series description line.
pub(crate) fn parse_series_desc(s: &str) -> Result<SeriesDesc, String> {
    let (labels, rest) = parse_labels(s)?;
    Ok(SeriesDesc { labels, vals: parse_values(rest)?, st: None })
}

/// Expands an `@st` offset sequence into one offset (ms) per slot; `_` slots have none.
fn parse_st_items(s: &str) -> Result<Vec<Option<i64>>, String> {
    static R: OnceLock<Regex> = OnceLock::new();
    let r =
        re(&R, r"^([+-]?(?:[0-9]+(?:ms|[smhdwy])|0)|\*)(?:x([0-9]+)|([+-])((?:[0-9]+(?:ms|[smhdwy])|0))x([0-9]+))?$");
    let signed = |d: &str| -> Result<i64, String> {
        let (neg, body) = match d.as_bytes().first() {
            Some(b'-') => (true, &d[1..]),
            Some(b'+') => (false, &d[1..]),
            _ => (false, d),
        };
        let v = parse_duration(body)?;
        Ok(if neg { -v } else { v })
    };
    let mut out = Vec::new();
    for item in s.split_whitespace() {
        if item == "_" {
            out.push(None);
        } else if let Some(k) = item.strip_prefix("_x") {
            out.extend(std::iter::repeat_n(None, parse_repeat(k)?));
        } else if let Some(c) = r.captures(item) {
            let head = c.get(1).map_or("", |m| m.as_str());
            if head == "*" {
                // `*` slots carry no offset the runner can use: no start timestamp.
                let n = match c.get(2).or(c.get(5)) {
                    Some(k) => parse_repeat(k.as_str())? + 1,
                    None => 1,
                };
                out.extend(std::iter::repeat_n(None, n));
                continue;
            }
            let start = signed(head)?;
            match (c.get(2), c.get(3), c.get(4), c.get(5)) {
                (Some(k), ..) => out.extend(std::iter::repeat_n(Some(start), parse_repeat(k.as_str())? + 1)),
                (None, Some(sign), Some(step), Some(k)) => {
                    let step = parse_duration(step.as_str())?;
                    let step = if sign.as_str() == "-" { -step } else { step };
                    let n = parse_repeat(k.as_str())?;
                    out.extend((0..=n as i64).map(|i| Some(start + i * step)));
                }
                _ => out.push(Some(start)),
            }
        } else {
            return Err(format!("invalid @st item {item:?}"));
        }
    }
    Ok(out)
}

fn is_st_line(l: &str) -> bool {
    match l.find([' ', '\t']) {
        Some(i) => l[..i].ends_with("@st"),
        None => false,
    }
}

/// Splits a file into trimmed lines with comments blanked.
fn lines_of(input: &str) -> Vec<String> {
    input
        .split('\n')
        .map(|l| {
            let l = l.trim_matches(|c: char| {
                c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\u{b}' || c == '\u{c}'
            });
            if l.starts_with('#') { String::new() } else { l.to_string() }
        })
        .collect()
}

fn parse_load(lines: &[String], mut i: usize) -> Result<(usize, LoadCmd), String> {
    static R: OnceLock<Regex> = OnceLock::new();
    let r = re(&R, r"^load(?:_(with_nhcb))?\s+(.+?)$");
    let c = r.captures(&lines[i]).ok_or("invalid load command (load[_with_nhcb] <step:duration>)")?;
    let with_nhcb = c.get(1).is_some();
    let interval = parse_duration(c.get(2).map_or("", |m| m.as_str())).map_err(|e| format!("invalid step: {e}"))?;
    let mut cmd = LoadCmd { line: i + 1, interval, with_nhcb, series: Vec::new() };
    let mut pending_st: Option<(String, Vec<Option<i64>>, usize)> = None; // (label text, offsets, line)
    while i + 1 < lines.len() {
        i += 1;
        let l = &lines[i];
        if l.is_empty() {
            i -= 1;
            break;
        }
        if is_st_line(l) {
            if let Some((_, _, pl)) = &pending_st {
                return Err(format!("line {}: @st line has no following sample line", pl + 1));
            }
            let sp = l.find([' ', '\t']).unwrap_or(l.len());
            let metric = l[..sp].trim_end_matches("@st").to_string();
            let n = parse_st_items(&l[sp..]).map_err(|e| format!("line {}: {e}", i + 1))?;
            if metric.is_empty() {
                continue; // a default @st sequence for the following lines
            }
            pending_st = Some((metric, n, i));
            continue;
        }
        let mut sd = parse_series_desc(l).map_err(|e| format!("line {}: {e}", i + 1))?;
        if let Some((metric, offsets, pl)) = pending_st.take() {
            let (st_labels, _) = parse_labels(&metric).map_err(|e| format!("line {}: {e}", pl + 1))?;
            if st_labels != sd.labels {
                return Err(format!("line {}: @st metric does not match the following sample line", pl + 1));
            }
            if offsets.len() != sd.vals.len() {
                return Err(format!(
                    "line {}: @st line has {} values but sample line has {}",
                    pl + 1,
                    offsets.len(),
                    sd.vals.len()
                ));
            }
            sd.st = Some(offsets);
        }
        cmd.series.push(sd);
    }
    if let Some((_, _, pl)) = pending_st {
        return Err(format!("line {}: @st line has no following sample line", pl + 1));
    }
    Ok((i, cmd))
}

fn parse_eval(lines: &[String], mut i: usize) -> Result<(usize, EvalCmd), String> {
    static RI: OnceLock<Regex> = OnceLock::new();
    static RR: OnceLock<Regex> = OnceLock::new();
    static RE: OnceLock<Regex> = OnceLock::new();
    static RV: OnceLock<Regex> = OnceLock::new();
    let ri = re(&RI, r"^eval(?:_(fail|warn|ordered|info))?\s+instant\s+(?:at\s+(.+?))?\s+(.+)$");
    let rr = re(&RR, r"^eval(?:_(fail|warn|info))?\s+range\s+from\s+(.+)\s+to\s+(.+)\s+step\s+(.+?)\s+(.+)$");
    let rexp = re(&RE, r"^expect\s+(ordered|fail|warn|no_warn|info|no_info)(?:\s+(regex|msg):(.+))?$");
    let rvec = re(&RV, r"^expect range vector\s+from\s+(.+)\s+to\s+(.+)\s+step\s+(.+)$");
    let header = &lines[i];
    let line = i + 1;
    let g = |c: &regex::Captures<'_>, k: usize| c.get(k).map_or(String::new(), |m| m.as_str().to_string());
    let mut cmd = if let Some(c) = ri.captures(header) {
        let t = parse_duration(&g(&c, 2)).map_err(|e| format!("line {line}: invalid timestamp: {e}"))?;
        new_eval(line, g(&c, 3), false, t, t, None, 0, &g(&c, 1))
    } else if let Some(c) = rr.captures(header) {
        let (s, e, st) = durations3(&g(&c, 2), &g(&c, 3), &g(&c, 4)).map_err(|e| format!("line {line}: {e}"))?;
        new_eval(line, g(&c, 5), true, 0, s, Some(e), st, &g(&c, 1))
    } else {
        return Err(format!("line {line}: invalid evaluation command {header:?}"));
    };
    let mut j = 1usize;
    while i + 1 < lines.len() {
        i += 1;
        let l = lines[i].as_str();
        if l.is_empty() {
            i -= 1;
            break;
        }
        if cmd.fail && l.starts_with("expected_fail_message") {
            cmd.fail_message = Some(l["expected_fail_message".len()..].trim().to_string());
            break;
        }
        if cmd.fail && l.starts_with("expected_fail_regexp") {
            let p = l["expected_fail_regexp".len()..].trim();
            cmd.fail_regexp = Some(Regex::new(p).map_err(|e| format!("line {}: bad regexp: {e}", i + 1))?);
            break;
        }
        if l.starts_with("expect range vector") {
            let c = rvec.captures(l).ok_or_else(|| format!("line {}: invalid range vector definition", i + 1))?;
            let (s, e, st) = durations3(&g(&c, 1), &g(&c, 2), &g(&c, 3)).map_err(|e| format!("line {}: {e}", i + 1))?;
            cmd.range_vector = true;
            cmd.start = s;
            cmd.end = Some(e);
            cmd.step = st;
            cmd.eval_t = e;
            cmd.exclude_from_range = true;
            j += 1;
            continue;
        }
        if l.starts_with("expect string") {
            let rest = l.strip_prefix("expect string ").unwrap_or("");
            let v = match rest.as_bytes().first() {
                Some(b'"') | Some(b'`') => match read_quoted(rest) {
                    Ok((v, "")) => v,
                    _ => return Err(format!("line {}: expected string literal not valid", i + 1)),
                },
                _ => return Err(format!("line {}: expected string literal not valid", i + 1)),
            };
            cmd.expected_string = Some(v);
            cmd.exclude_from_range = true;
            j += 1;
            continue;
        }
        if l.split(' ').next() == Some("expect") {
            let c = rexp.captures(l.trim()).ok_or_else(|| format!("line {}: invalid expect statement {l:?}", i + 1))?;
            let kind = match &g(&c, 1)[..] {
                "ordered" => ExpectKind::Ordered,
                "fail" => ExpectKind::Fail,
                "warn" => ExpectKind::Warn,
                "no_warn" => ExpectKind::NoWarn,
                "info" => ExpectKind::Info,
                _ => ExpectKind::NoInfo,
            };
            let tm = match (&g(&c, 2)[..], g(&c, 3).trim()) {
                ("msg", m) => TextMatch::Msg(m.to_string()),
                ("regex", p) => {
                    TextMatch::Re(Regex::new(p).map_err(|e| format!("line {}: invalid regex: {e}", i + 1))?)
                }
                _ => TextMatch::Any,
            };
            cmd.expects.push((kind, tm));
            let count = |k: ExpectKind| cmd.expects.iter().filter(|e| e.0 == k).count();
            if count(ExpectKind::Info) > 0 && count(ExpectKind::NoInfo) > 0 {
                return Err(format!("line {}: info and no_info cannot be used together", i + 1));
            }
            if count(ExpectKind::Warn) > 0 && count(ExpectKind::NoWarn) > 0 {
                return Err(format!("line {}: warn and no_warn cannot be used together", i + 1));
            }
            if count(ExpectKind::Fail) > 1 {
                return Err(format!("line {}: multiple expect fail lines", i + 1));
            }
            continue;
        }
        if let Some(v) = parse_go_number(l) {
            cmd.expect_scalar = Some(v);
            break;
        }
        let sd = parse_series_desc(l).map_err(|e| format!("line {}: {e}", i + 1))?;
        if sd.vals.len() > 1 && !cmd.is_range && !cmd.range_vector {
            return Err(format!(
                "line {}: multiple values in an instant evaluation without 'expect range vector'",
                i + 1
            ));
        }
        cmd.expected.insert(sd.labels, Expected { pos: j, vals: sd.vals });
        j += 1;
    }
    Ok((i, cmd))
}

fn durations3(s: &str, e: &str, st: &str) -> Result<(i64, i64, i64), String> {
    let s = parse_duration(s).map_err(|x| format!("invalid start: {x}"))?;
    let e = parse_duration(e).map_err(|x| format!("invalid end: {x}"))?;
    if e < s {
        return Err("end timestamp is before start timestamp".into());
    }
    let st = parse_duration(st).map_err(|x| format!("invalid step: {x}"))?;
    Ok((s, e, st))
}

#[allow(clippy::too_many_arguments)]
fn new_eval(
    line: usize,
    expr: String,
    is_range: bool,
    eval_t: i64,
    start: i64,
    end: Option<i64>,
    step: i64,
    m: &str,
) -> EvalCmd {
    EvalCmd {
        line,
        expr,
        is_range,
        eval_t,
        start,
        end,
        step,
        fail: m == "fail",
        warn: m == "warn",
        info: m == "info",
        ordered: m == "ordered",
        fail_message: None,
        fail_regexp: None,
        expects: Vec::new(),
        expect_scalar: None,
        expected: Default::default(),
        expected_string: None,
        range_vector: false,
        exclude_from_range: false,
    }
}

/// Parses a whole script. An unknown command is an error.
pub(crate) fn parse_script(input: &str) -> Result<Vec<Cmd>, String> {
    let lines = lines_of(input);
    let mut cmds = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let l = &lines[i];
        if l.is_empty() {
            i += 1;
            continue;
        }
        let first = l.split([' ', '\t']).next().unwrap_or("").to_ascii_lowercase();
        if first == "clear" {
            cmds.push(Cmd::Clear);
        } else if first.starts_with("load") {
            let (ni, c) = parse_load(&lines, i)?;
            i = ni;
            cmds.push(Cmd::Load(c));
        } else if first.starts_with("eval") {
            let (ni, c) = parse_eval(&lines, i)?;
            i = ni;
            cmds.push(Cmd::Eval(Box::new(c)));
        } else {
            return Err(format!("line {}: invalid command {l:?}", i + 1));
        }
        i += 1;
    }
    Ok(cmds)
}

/// Self-checks of the parser (run at the start of the conformance test).
pub(crate) fn self_check() {
    let f = |s: &str| -> Vec<f64> {
        parse_values(s)
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .into_iter()
            .map(|v| match v {
                SeqVal::Float(f) => f,
                SeqVal::Omitted => -999.0,
                SeqVal::Hist => -777.0,
            })
            .collect()
    };
    assert_eq!(f("-2-1x4"), vec![-2.0, -3.0, -4.0, -5.0, -6.0]);
    assert_eq!(f("-2+4x3"), vec![-2.0, 2.0, 6.0, 10.0]);
    assert_eq!(f("1-2x4"), vec![1.0, -1.0, -3.0, -5.0, -7.0]);
    assert_eq!(f("1x5").len(), 6);
    assert_eq!(f("0+10x10").len(), 11);
    assert_eq!(f("1 2 _ 4 _x3 5+5x2"), vec![1.0, 2.0, -999.0, 4.0, -999.0, -999.0, -999.0, 5.0, 10.0, 15.0]);
    assert_eq!(f("1e-3 .5 1_000 -Inf +inf"), vec![0.001, 0.5, 1000.0, f64::NEG_INFINITY, f64::INFINITY]);
    assert_eq!(f("1e+3+1e-3x1"), vec![1000.0, 1000.001]);
    assert!(f("NaN -NaN").iter().all(|v| v.is_nan()));
    assert!(matches!(parse_values("stale").as_deref(), Ok([SeqVal::Float(v)]) if is_stale(*v)));
    assert_eq!(f("{{schema:0 sum:5 buckets:[1 2 ]}}x2 {{sum:1}}+{{sum:2}}x3 1").len(), 8);
    assert_eq!(parse_duration("1h30m"), Ok(5_400_000));
    assert_eq!(parse_duration("10s53ms"), Ok(10_053));
    assert_eq!(parse_duration("5ms"), Ok(5));
    assert_eq!(parse_duration("0"), Ok(0));
    assert!(parse_duration("1m1h").is_err() && parse_duration("-1m").is_err() && parse_duration("10").is_err());
    assert_eq!(parse_go_number("0x10"), Some(16.0));
    assert_eq!(parse_go_number("-Inf"), Some(f64::NEG_INFINITY));
    assert_eq!(parse_go_number("3.5e2"), Some(350.0));
    assert_eq!(parse_go_number("foo"), None);
    assert_eq!(parse_go_number("{} 1"), None);
    let (l, rest) = parse_labels(r#"foo{b="x\"y", a='z',} 1 2"#).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(l, Labels::from_pairs([("__name__", "foo"), ("a", "z"), ("b", "x\"y")]));
    assert_eq!(rest, " 1 2");
    let (l, _) = parse_labels(r#"{__name__="m", "x"="y"}"#).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(l, Labels::from_pairs([("__name__", "m"), ("x", "y")]));
    assert!(parse_script("load 5m\n  a 1\n\nfoo bar\n").is_err());
    assert_eq!(
        parse_st_items("_ _ -30s-1mx2 -1m"),
        Ok(vec![None, None, Some(-30_000), Some(-90_000), Some(-150_000), Some(-60_000)])
    );
    let items = parse_st_items("_x2 0-1mx4 -0msx3 *").unwrap_or_default();
    assert_eq!(items.len(), 12);
    assert_eq!((items[2], items[6], items[7], items[11]), (Some(0), Some(-240_000), Some(0), None));
    assert_eq!(parse_st_items("1ms+1sx1"), Ok(vec![Some(1), Some(1001)]));
    assert!(parse_st_items("1m+").is_err());
}
