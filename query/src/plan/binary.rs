//! `PromBinary`: binary operators between vectors and scalars: arithmetic (`+ - * / % ^ atan2`),
//! comparisons (filters, or 0/1 with `bool`) and the set operators `and`, `or`, `unless`, with
//! vector matching (`on` / `ignoring`, `group_left` / `group_right`).
//!
//! ```text
//!   lhs (labels, t, v)            rhs (labels, t, v)
//!        │  signature = on(labels) or labels − ignoring − __name__
//!        └──────── join on (signature, t) ────────┘
//!                         ▼
//!   one-to-one / many-to-one / one-to-many: (result labels, t, lhs op rhs)
//!   and: lhs rows whose (sig, t) is on the right   (semi join)
//!   unless: lhs rows whose (sig, t) is not        (anti join)
//!   or: all lhs rows + rhs rows whose (sig, t) is not on the left   (union)
//!   vector ∘ scalar: each row with the scalar of its step
//! ```
//!
//! Matching errors carry Prometheus's messages (duplicate series for a match group,
//! many-to-one matching must be explicit, grouping labels must ensure unique matches).

mod join;

use std::collections::{HashMap, HashSet};
use std::fmt;

use arrow::array::RecordBatch;
use engine::Labels;

use self::join::Input;
use super::functions::{go_max, go_min};
use super::label_fn::go_quote;
use super::{
    BatchView, EvalCtx, F64, Grid, NodeSpec, SeriesData, batch_to_series, decode_labels, encode_labels, encode_pair,
    encoded_pairs, is_name_label_bytes, mark_drop_name_encoded, scalar_per_step, series_to_batch,
};
use crate::error::{Error, Result};

/// A binary operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd)]
pub(crate) enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Atan2,
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    And,
    Or,
    Unless,
    /// `min_of(a, b)` (scalars).
    MinOf,
    /// `max_of(a, b)` (scalars).
    MaxOf,
}

impl BinOp {
    /// The operator of a PromQL token text.
    pub(crate) fn from_token(s: &str) -> Option<BinOp> {
        use BinOp::*;
        Some(match s.to_ascii_lowercase().as_str() {
            "+" => Add,
            "-" => Sub,
            "*" => Mul,
            "/" => Div,
            "%" => Mod,
            "^" => Pow,
            "atan2" => Atan2,
            "==" => Eq,
            "!=" => Ne,
            ">" => Gt,
            "<" => Lt,
            ">=" => Ge,
            "<=" => Le,
            "and" => And,
            "or" => Or,
            "unless" => Unless,
            _ => return None,
        })
    }

    fn text(&self) -> &'static str {
        use BinOp::*;
        match self {
            Add => "+",
            Sub => "-",
            Mul => "*",
            Div => "/",
            Mod => "%",
            Pow => "^",
            Atan2 => "atan2",
            Eq => "==",
            Ne => "!=",
            Gt => ">",
            Lt => "<",
            Ge => ">=",
            Le => "<=",
            And => "and",
            Or => "or",
            Unless => "unless",
            MinOf => "min_of",
            MaxOf => "max_of",
        }
    }

    /// True for comparisons.
    pub(crate) fn is_comparison(&self) -> bool {
        matches!(self, BinOp::Eq | BinOp::Ne | BinOp::Gt | BinOp::Lt | BinOp::Ge | BinOp::Le)
    }

    fn is_set(&self) -> bool {
        matches!(self, BinOp::And | BinOp::Or | BinOp::Unless)
    }

    /// Applies the operator: `(value, keep)`; comparisons return the left value and whether
    /// the comparison holds.
    pub(crate) fn apply(&self, l: f64, r: f64) -> (f64, bool) {
        use BinOp::*;
        match self {
            Add => (l + r, true),
            Sub => (l - r, true),
            Mul => (l * r, true),
            Div => (l / r, true),
            Mod => (l % r, true),
            Pow => (l.powf(r), true),
            Atan2 => (l.atan2(r), true),
            Eq => (l, l == r),
            Ne => (l, l != r),
            Gt => (l, l > r),
            Lt => (l, l < r),
            Ge => (l, l >= r),
            Le => (l, l <= r),
            And | Or | Unless => (l, true),
            MinOf => (go_min(l, r), true),
            MaxOf => (go_max(l, r), true),
        }
    }

    /// Arithmetic drops the metric name; comparisons without `bool` keep it.
    fn drops_name(&self) -> bool {
        matches!(self, BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Mod | BinOp::Pow | BinOp::Atan2)
    }
}

/// Matching cardinality.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd)]
pub(crate) enum Card {
    OneToOne,
    /// `group_left`: many on the left.
    ManyToOne,
    /// `group_right`: many on the right.
    OneToMany,
    ManyToMany,
}

/// Parameters of the binary operation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd)]
pub(crate) struct BinarySpec {
    /// Evaluation steps.
    pub(crate) grid: Grid,
    /// The operator.
    pub(crate) op: BinOp,
    /// The left side is a scalar.
    pub(crate) lhs_scalar: bool,
    /// The right side is a scalar.
    pub(crate) rhs_scalar: bool,
    /// `bool` modifier.
    pub(crate) return_bool: bool,
    /// `on` (true) or `ignoring` (false, also the default).
    pub(crate) on: bool,
    /// The `on` / `ignoring` labels.
    pub(crate) matching: Vec<String>,
    /// Cardinality.
    pub(crate) card: Card,
    /// `group_left(...)` / `group_right(...)` labels copied from the "one" side.
    pub(crate) include: Vec<String>,
    /// `fill_left(v)` / `fill(v)`: value for a missing left-hand sample.
    pub(crate) fill_left: Option<F64>,
    /// `fill_right(v)` / `fill(v)`: value for a missing right-hand sample.
    pub(crate) fill_right: Option<F64>,
}

impl NodeSpec for BinarySpec {
    const NAME: &'static str = "PromBinary";

    fn fmt_params(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = |s: bool| if s { "scalar" } else { "vector" };
        write!(
            f,
            "{} {}{} {}",
            kind(self.lhs_scalar),
            self.op.text(),
            if self.return_bool { " bool" } else { "" },
            kind(self.rhs_scalar)
        )?;
        if !self.lhs_scalar && !self.rhs_scalar {
            write!(f, ", {}({})", if self.on { "on" } else { "ignoring" }, self.matching.join(", "))?;
            match self.card {
                Card::ManyToOne => write!(f, " group_left({})", self.include.join(", "))?,
                Card::OneToMany => write!(f, " group_right({})", self.include.join(", "))?,
                _ => {}
            }
        }
        write!(f, ", {}", self.grid)
    }

    /// `vector op scalar` maps each series on its own, so it streams batch by batch (the scalar,
    /// the second input, is collected first); everything else needs both sides whole.
    fn streaming(&self) -> bool {
        !self.lhs_scalar && self.rhs_scalar
    }

    /// Between two vectors the kernel reads the label sets as the input batches hold them
    /// (see [`join`]).
    fn takes_batches(&self) -> bool {
        !self.lhs_scalar && !self.rhs_scalar
    }

    fn eval(&self, main: Vec<SeriesData>, params: &[Vec<SeriesData>], ctx: &EvalCtx) -> Result<Vec<SeriesData>> {
        let rhs = params.first().map_or(&[][..], Vec::as_slice);
        let out = match (self.lhs_scalar, self.rhs_scalar) {
            (true, true) => self.scalar_scalar(&main, rhs),
            (false, true) => self.vector_scalar(&main, rhs, false, ctx),
            (true, false) => self.vector_scalar(rhs, &main, true, ctx),
            (false, false) => {
                let (le, re) = (join::encoded_labels(&main), join::encoded_labels(rhs));
                let (l, r) = (join::inputs(&main, &le), join::inputs(rhs, &re));
                let rb = self.vector_vector(&l, &r, ctx, || Ok((main.clone(), rhs.to_vec())))?;
                batch_to_series(&rb)?
            }
        };
        ctx.check_samples(out.iter().map(|s| s.ts.len()).sum())?;
        in_time_order(out)
    }

    fn eval_batches(&self, inputs: &[Vec<RecordBatch>], ctx: &EvalCtx) -> Result<RecordBatch> {
        let side = |i: usize| inputs.get(i).map_or(&[][..], Vec::as_slice);
        if !self.takes_batches() {
            let decoded = |i: usize| -> Result<Vec<SeriesData>> {
                let mut out = Vec::new();
                for b in side(i) {
                    out.extend(batch_to_series(b)?);
                }
                Ok(out)
            };
            let rhs = decoded(1)?;
            return series_to_batch(&self.eval(decoded(0)?, &[rhs], ctx)?);
        }
        let views = |i: usize| side(i).iter().map(BatchView::new).collect::<Result<Vec<_>>>();
        let (lv, rv) = (views(0)?, views(1)?);
        let lhs: Vec<Input> = lv.iter().flat_map(|v| v.series().map(Input::from)).collect();
        let rhs: Vec<Input> = rv.iter().flat_map(|v| v.series().map(Input::from)).collect();
        let decode = || {
            let decoded = |views: &[BatchView]| -> Result<Vec<SeriesData>> {
                views
                    .iter()
                    .flat_map(|v| v.series())
                    .map(|s| Ok(SeriesData { labels: decode_labels(s.labels)?, ts: s.ts.to_vec(), vs: s.vs.to_vec() }))
                    .collect()
            };
            Ok((decoded(&lv)?, decoded(&rv)?))
        };
        let rb = self.vector_vector(&lhs, &rhs, ctx, decode)?;
        ctx.check_samples(rb.num_rows())?;
        Ok(rb)
    }
}

/// Puts the points of every output series in time order. Two input series can give one output
/// label set (e.g. `{job="a"} * 2` over two metric names); they merge when their points do not
/// meet, and a step where both have a point is Prometheus's "same labelset" error.
fn in_time_order(mut out: Vec<SeriesData>) -> Result<Vec<SeriesData>> {
    for s in &mut out {
        if s.ts.windows(2).all(|w| w[0] < w[1]) {
            continue;
        }
        let mut pts: Vec<(i64, f64)> = s.ts.iter().copied().zip(s.vs.iter().copied()).collect();
        pts.sort_by_key(|p| p.0);
        if pts.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(Error::Execution("vector cannot contain metrics with the same labelset".into()));
        }
        (s.ts, s.vs) = pts.into_iter().unzip();
    }
    Ok(out)
}

/// Accumulates output points per result label set, in step order.
#[derive(Default)]
struct Out {
    idx: HashMap<Labels, usize>,
    series: Vec<SeriesData>,
}

impl Out {
    fn push(&mut self, l: Labels, t: i64, v: f64) {
        let i = match self.idx.get(&l) {
            Some(&i) => i,
            None => {
                self.idx.insert(l.clone(), self.series.len());
                self.series.push(SeriesData::new(l));
                self.series.len() - 1
            }
        };
        self.series[i].push(t, v);
    }
}

/// Rows of a side grouped by step: `steps[i]` = (series index, value).
fn by_step(side: &[SeriesData], grid: &Grid) -> Vec<Vec<(usize, f64)>> {
    let mut steps = vec![Vec::new(); grid.len()];
    for (si, s) in side.iter().enumerate() {
        for (&t, &v) in s.ts.iter().zip(&s.vs) {
            if let Some(i) = grid.index_of(t) {
                steps[i].push((si, v));
            }
        }
    }
    steps
}

impl BinarySpec {
    /// True when label `name` is part of the match-group signature; set operators also ignore
    /// the type-and-unit labels, as Prometheus does with them enabled.
    fn in_signature(&self, name: &[u8]) -> bool {
        let listed = self.matching.iter().any(|n| n.as_bytes() == name);
        if self.on {
            listed
        } else {
            let ignored =
                if self.op.is_set() { is_name_label_bytes(name) } else { name == b"__name__" || name == b"\0" };
            !ignored && !listed
        }
    }

    /// The match-group signature of a label set.
    fn signature(&self, l: &Labels) -> Labels {
        Labels::from_pairs(
            l.iter().filter(|x| self.in_signature(x.name.as_bytes())).map(|x| (x.name.clone(), x.value.clone())),
        )
    }

    /// [`Self::signature`] of an encoded label set, appended encoded to `out`.
    fn signature_into(&self, labels: &[u8], out: &mut Vec<u8>) {
        for (n, v) in encoded_pairs(labels) {
            if !v.is_empty() && self.in_signature(n) {
                encode_pair(n, v, out);
            }
        }
    }

    /// [`Self::signature`] of an encoded label set as a 64-bit hash of its names and values
    /// (each followed by a 0xff separator, which no UTF-8 text holds), computed without building
    /// the label set. Prometheus matches series on such hashes too (`signatureFunc`).
    fn signature_hash(&self, labels: &[u8]) -> u64 {
        let mut h = xxhash_rust::xxh64::Xxh64::new(0);
        for (n, v) in encoded_pairs(labels) {
            if !v.is_empty() && self.in_signature(n) {
                h.update(n);
                h.update(&[0xff]);
                h.update(v);
                h.update(&[0xff]);
            }
        }
        h.digest()
    }

    fn scalar_scalar(&self, l: &[SeriesData], r: &[SeriesData]) -> Vec<SeriesData> {
        let (lv, rv) = (scalar_per_step(l, &self.grid), scalar_per_step(r, &self.grid));
        let mut s = SeriesData::new(Labels::default());
        for (i, t) in self.grid.times().enumerate() {
            let (v, keep) = self.op.apply(lv[i], rv[i]);
            let v = if self.op.is_comparison() { if keep { 1.0 } else { 0.0 } } else { v };
            s.push(t, v);
        }
        vec![s]
    }

    /// `vector op scalar`, or `scalar op vector` when `swap`.
    fn vector_scalar(&self, vec: &[SeriesData], scalar: &[SeriesData], swap: bool, ctx: &EvalCtx) -> Vec<SeriesData> {
        let sv = scalar_per_step(scalar, &self.grid);
        let mut out = Out::default();
        for s in vec {
            let mut labels = s.labels.clone();
            if self.op.drops_name() || self.return_bool {
                super::drop_name_or_mark(&mut labels, ctx);
            }
            for (&t, &v) in s.ts.iter().zip(&s.vs) {
                let Some(i) = self.grid.index_of(t) else { continue };
                let (l, r) = if swap { (sv[i], v) } else { (v, sv[i]) };
                let (mut value, mut keep) = self.op.apply(l, r);
                if self.op.is_comparison() && swap {
                    value = r;
                }
                if self.return_bool {
                    value = if keep { 1.0 } else { 0.0 };
                    keep = true;
                }
                if keep {
                    out.push(labels.clone(), t, value);
                }
            }
        }
        out.series
    }

    /// Two vectors: the join ([`join`]), or, when it gives up, the per-step evaluation over the
    /// series `decode` gives (the same inputs, decoded).
    fn vector_vector(
        &self,
        lhs: &[Input],
        rhs: &[Input],
        ctx: &EvalCtx,
        decode: impl FnOnce() -> Result<(Vec<SeriesData>, Vec<SeriesData>)>,
    ) -> Result<RecordBatch> {
        if self.op.is_set() {
            return self.set_join(lhs, rhs);
        }
        // The join answers unless series of one signature (or results of one label set) meet at
        // a step; then the per-step evaluation finds Prometheus's error, if any.
        if let Some(out) = self.vector_join(lhs, rhs, ctx.delayed_name_removal) {
            return out.finish();
        }
        let (l, r) = decode()?;
        series_to_batch(&in_time_order(self.vector_vector_per_step(&l, &r, ctx)?)?)
    }

    /// The set operators evaluated step by step, as Prometheus does: the reference the join
    /// ([`BinarySpec::set_join`]) is tested against.
    #[cfg(test)]
    fn set_op_per_step(&self, lhs: &[SeriesData], rhs: &[SeriesData]) -> Vec<SeriesData> {
        let lsig: Vec<Labels> = lhs.iter().map(|s| self.signature(&s.labels)).collect();
        let rsig: Vec<Labels> = rhs.iter().map(|s| self.signature(&s.labels)).collect();
        let (ls, rs) = (by_step(lhs, &self.grid), by_step(rhs, &self.grid));
        let mut out = Out::default();
        for (i, t) in self.grid.times().enumerate() {
            match self.op {
                BinOp::And | BinOp::Unless => {
                    let right: HashSet<&Labels> = rs[i].iter().map(|(s, _)| &rsig[*s]).collect();
                    for &(s, v) in &ls[i] {
                        if right.contains(&lsig[s]) == (self.op == BinOp::And) {
                            out.push(lhs[s].labels.clone(), t, v);
                        }
                    }
                }
                _ => {
                    let left: HashSet<&Labels> = ls[i].iter().map(|(s, _)| &lsig[*s]).collect();
                    for &(s, v) in &ls[i] {
                        out.push(lhs[s].labels.clone(), t, v);
                    }
                    for &(s, v) in &rs[i] {
                        if !left.contains(&rsig[s]) {
                            out.push(rhs[s].labels.clone(), t, v);
                        }
                    }
                }
            }
        }
        out.series
    }

    /// Arithmetic and comparisons between vectors evaluated step by step, as Prometheus does
    /// (the join, [`BinarySpec::vector_join`], hands over to it when a step is ambiguous).
    fn vector_vector_per_step(&self, lhs: &[SeriesData], rhs: &[SeriesData], ctx: &EvalCtx) -> Result<Vec<SeriesData>> {
        // "many" side iterates, "one" side is looked up; group_right swaps them.
        let swapped = self.card == Card::OneToMany;
        let (many, one) = if swapped { (rhs, lhs) } else { (lhs, rhs) };
        let msig: Vec<Labels> = many.iter().map(|s| self.signature(&s.labels)).collect();
        let osig: Vec<Labels> = one.iter().map(|s| self.signature(&s.labels)).collect();
        let (ms, os) = (by_step(many, &self.grid), by_step(one, &self.grid));
        let mut out = Out::default();
        // As Prometheus does, `fill_left` stands in for a missing "many" side sample and
        // `fill_right` for a missing "one" side sample, also with group_right.
        let (fill_many, fill_one) = (self.fill_left.map(|f| f.0), self.fill_right.map(|f| f.0));
        for (i, t) in self.grid.times().enumerate() {
            // Nothing can match at a step where a side is empty (unless a fill value stands in
            // for it): Prometheus returns at once, before it looks for duplicates on the other.
            let (no_many, no_one) = (ms[i].is_empty(), os[i].is_empty());
            if (no_many && no_one) || ((no_many || no_one) && fill_many.is_none() && fill_one.is_none()) {
                continue;
            }
            let mut lookup: HashMap<&Labels, (usize, f64)> = HashMap::new();
            for &(s, v) in &os[i] {
                if let Some((prev, _)) = lookup.insert(&osig[s], (s, v)) {
                    let side = if swapped { "left" } else { "right" };
                    // Prometheus orders the pair so that the message does not change between runs.
                    let (mut a, mut b) = (fmt_sig(&one[s].labels), fmt_sig(&one[prev].labels));
                    if a > b {
                        std::mem::swap(&mut a, &mut b);
                    }
                    return Err(Error::Execution(format!(
                        "found duplicate series for the match group {} on the {side} hand-side of the operation: [{a}, {b}];many-to-many matching not allowed: matching labels must be unique on one side",
                        fmt_sig(&osig[s]),
                    )));
                }
            }
            let mut matched: HashSet<&Labels> = HashSet::new();
            let mut inserted: HashSet<Labels> = HashSet::new();
            let empty = Labels::default();
            for &(s, v) in &ms[i] {
                let Some(&(o, ov)) = lookup.get(&msig[s]) else {
                    // No partner on the "one" side: only with a fill value for it.
                    if let Some(f) = fill_one {
                        let (l, r) = if swapped { (f, v) } else { (v, f) };
                        if let Some(value) = self.compute(l, r) {
                            out.push(self.result_labels(&many[s].labels, &empty, ctx)?, t, value);
                        }
                    }
                    continue;
                };
                if self.card == Card::OneToOne && !matched.insert(&msig[s]) {
                    return Err(Error::Execution(
                        "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)"
                            .into(),
                    ));
                }
                let (l, r) = if swapped { (ov, v) } else { (v, ov) };
                let (mut value, mut keep) = self.op.apply(l, r);
                if self.return_bool {
                    value = if keep { 1.0 } else { 0.0 };
                    keep = true;
                }
                // Prometheus checks the result labels before a comparison filters the sample.
                let labels = self.result_labels(&many[s].labels, &one[o].labels, ctx)?;
                if self.card != Card::OneToOne && !inserted.insert(labels.clone()) {
                    return Err(Error::Execution(
                        "multiple matches for labels: grouping labels must ensure unique matches".into(),
                    ));
                }
                if keep {
                    out.push(labels, t, value);
                }
            }
            if let Some(f) = fill_many {
                // "One" side samples nothing matched, paired with the fill value.
                let hit: HashSet<&Labels> = ms[i].iter().map(|(s, _)| &msig[*s]).collect();
                for &(o, ov) in &os[i] {
                    if hit.contains(&osig[o]) {
                        continue;
                    }
                    let (l, r) = if swapped { (ov, f) } else { (f, ov) };
                    if let Some(value) = self.compute(l, r) {
                        out.push(osig[o].clone(), t, value);
                    }
                }
            }
        }
        Ok(out.series)
    }

    /// The operator with `bool` applied; `None` when a comparison filters the sample out.
    fn compute(&self, l: f64, r: f64) -> Option<f64> {
        let (value, keep) = self.op.apply(l, r);
        if self.return_bool {
            return Some(if keep { 1.0 } else { 0.0 });
        }
        keep.then_some(value)
    }

    /// The labels of a result sample (see [`Self::result_labels_into`]).
    fn result_labels(&self, many: &Labels, one: &Labels, ctx: &EvalCtx) -> Result<Labels> {
        let (mut m, mut o, mut out) = (Vec::new(), Vec::new(), Vec::new());
        encode_labels(many, &mut m);
        encode_labels(one, &mut o);
        self.result_labels_into(&m, &o, ctx.delayed_name_removal, &mut out);
        decode_labels(&out)
    }

    /// Appends the encoded labels of a result sample to `out`, written once from the encoded
    /// label sets of its "many"- and "one"-side series. Arithmetic drops the metric name (also
    /// with delayed name removal, as Prometheus does); `bool` drops it or, delayed, marks it; a
    /// comparison filter keeps the name and, as in Prometheus, clears an earlier mark.
    /// One-to-one matching keeps only the `on` labels or drops the `ignoring` ones; the
    /// `group_left`/`group_right` labels come from the "one" side (absent there: absent).
    fn result_labels_into(&self, many: &[u8], one: &[u8], delayed_name_removal: bool, out: &mut Vec<u8>) {
        let drop_name = self.op.drops_name() || (self.return_bool && !delayed_name_removal);
        let included = |n: &[u8]| self.include.iter().any(|i| i.as_bytes() == n);
        let keep = |n: &[u8]| {
            if n == b"\0" || (drop_name && is_name_label_bytes(n)) || included(n) {
                return false;
            }
            if self.card != Card::OneToOne {
                return true;
            }
            let listed = self.matching.iter().any(|m| m.as_bytes() == n);
            if self.on { listed } else { !listed }
        };
        // The copied labels, merged in name order into the kept ones.
        let mut copied: Vec<(&[u8], &[u8])> = Vec::new();
        if !self.include.is_empty() {
            copied.extend(encoded_pairs(one).filter(|(n, v)| !v.is_empty() && included(n)));
        }
        let mut copied = copied.into_iter().peekable();
        let start = out.len();
        for (n, v) in encoded_pairs(many) {
            while let Some((cn, cv)) = copied.next_if(|(cn, _)| *cn < n) {
                encode_pair(cn, cv, out);
            }
            if keep(n) {
                encode_pair(n, v, out);
            }
        }
        for (cn, cv) in copied {
            encode_pair(cn, cv, out);
        }
        if self.return_bool && delayed_name_removal {
            mark_drop_name_encoded(out, start);
        }
    }
}

/// A label set as Prometheus prints it in errors (Go's `labels.String()`): `{a="b", c="d"}`,
/// values quoted as Go quotes them, names quoted only when they are not legacy names.
fn fmt_sig(l: &Labels) -> String {
    let parts: Vec<String> = l
        .iter()
        .filter(|x| x.name != super::DROP_NAME_MARK)
        .map(|x| {
            let name = if is_legacy_label_name(&x.name) { x.name.clone() } else { go_quote(x.name.as_bytes()) };
            format!("{name}={}", go_quote(x.value.as_bytes()))
        })
        .collect();
    format!("{{{}}}", parts.join(", "))
}

/// A label name of the classic character set `[a-zA-Z_][a-zA-Z0-9_]*`.
fn is_legacy_label_name(n: &str) -> bool {
    let b = n.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn s(pairs: &[(&str, &str)], v: f64) -> SeriesData {
        SeriesData { labels: Labels::from_pairs(pairs.iter().copied()), ts: vec![0], vs: vec![v] }
    }

    fn spec(op: BinOp, card: Card, on: bool, matching: &[&str], include: &[&str]) -> BinarySpec {
        BinarySpec {
            grid: Grid::new(0, 0, 1),
            op,
            lhs_scalar: false,
            rhs_scalar: false,
            return_bool: false,
            on,
            matching: matching.iter().map(|x| x.to_string()).collect(),
            card,
            include: include.iter().map(|x| x.to_string()).collect(),
            fill_left: None,
            fill_right: None,
        }
    }

    #[test]
    fn one_to_one_divides_and_drops_name() {
        let l = vec![s(&[("__name__", "a"), ("i", "1")], 6.0), s(&[("__name__", "a"), ("i", "2")], 8.0)];
        let r = vec![s(&[("__name__", "b"), ("i", "1")], 2.0)];
        let out = spec(BinOp::Div, Card::OneToOne, false, &[], &[]).eval(l, &[r], &EvalCtx::new(10)).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].labels.to_string(), out[0].vs[0]), ("{i=\"1\"}".to_string(), 3.0));
    }

    #[test]
    fn group_left_copies_labels_and_many_to_many_fails() {
        let l = vec![s(&[("i", "1"), ("x", "a")], 1.0), s(&[("i", "1"), ("x", "b")], 2.0)];
        let r = vec![s(&[("i", "1"), ("team", "t")], 10.0)];
        let ctx = EvalCtx::new(10);
        let out = spec(BinOp::Mul, Card::ManyToOne, true, &["i"], &["team"])
            .eval(l.clone(), std::slice::from_ref(&r), &ctx)
            .unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].labels.get("team"), Some("t"));
        assert_eq!(out[1].vs[0], 20.0);
        let e = spec(BinOp::Mul, Card::OneToOne, true, &["i"], &[]).eval(l.clone(), &[r], &ctx).unwrap_err();
        assert!(e.to_string().starts_with("multiple matches for labels: many-to-one"), "{e}");
        let one = vec![s(&[("i", "1"), ("y", "z")], 3.0)];
        let e =
            spec(BinOp::Mul, Card::OneToOne, true, &["i"], &[]).eval(one, std::slice::from_ref(&l), &ctx).unwrap_err();
        assert_eq!(
            e.to_string(),
            "found duplicate series for the match group {i=\"1\"} on the right hand-side of the operation: \
             [{i=\"1\", x=\"a\"}, {i=\"1\", x=\"b\"}];many-to-many matching not allowed: matching labels must be unique on one side"
        );
        // An empty side matches nothing: Prometheus answers at once, without looking for
        // duplicates on the other side (`nonexistent - on(i) x`).
        let out =
            spec(BinOp::Sub, Card::OneToOne, true, &["i"], &[]).eval(vec![], std::slice::from_ref(&l), &ctx).unwrap();
        assert!(out.is_empty(), "{out:?}");
        let out = spec(BinOp::Mul, Card::OneToMany, true, &["i"], &[]).eval(l.clone(), &[vec![]], &ctx).unwrap();
        assert!(out.is_empty(), "{out:?}");
        // With a fill value for the missing side the other side is still checked.
        let mut filled = spec(BinOp::Sub, Card::OneToOne, true, &["i"], &[]);
        filled.fill_left = Some(F64(0.0));
        assert!(filled.eval(vec![], &[l], &ctx).is_err());
    }

    #[test]
    fn empty_side_is_checked_per_step() {
        // Step 0: the left side is empty, the right has duplicates -> nothing; step 1: both
        // sides have samples -> the duplicates are an error.
        let mut sp = spec(BinOp::Add, Card::OneToOne, true, &["i"], &[]);
        sp.grid = Grid::new(0, 10, 10);
        let l = vec![SeriesData { labels: Labels::from_pairs([("i", "1")]), ts: vec![10], vs: vec![1.0] }];
        let r = vec![
            SeriesData { labels: Labels::from_pairs([("i", "1"), ("x", "a")]), ts: vec![0], vs: vec![1.0] },
            SeriesData { labels: Labels::from_pairs([("i", "1"), ("x", "b")]), ts: vec![0], vs: vec![2.0] },
        ];
        let ctx = EvalCtx::new(10);
        assert!(sp.eval(l.clone(), std::slice::from_ref(&r), &ctx).unwrap().is_empty());
        let mut r10 = r;
        r10[1].ts = vec![10];
        r10[0].ts = vec![10];
        assert!(sp.eval(l, &[r10], &ctx).is_err());
    }

    #[test]
    fn grouping_collisions_are_checked_before_a_comparison_filters() {
        // group_left(x) takes x from the one side, so both left series get the labels
        // {i="1", x="c"}; Prometheus reports that although `>` filters both samples out.
        let l = vec![s(&[("i", "1"), ("x", "a")], 1.0), s(&[("i", "1"), ("x", "b")], 2.0)];
        let r = vec![s(&[("i", "1"), ("x", "c")], 10.0)];
        let ctx = EvalCtx::new(10);
        let e = spec(BinOp::Gt, Card::ManyToOne, true, &["i"], &["x"]).eval(l, &[r], &ctx).unwrap_err();
        assert_eq!(e.to_string(), "multiple matches for labels: grouping labels must ensure unique matches");
    }

    #[test]
    fn result_labels_follow_prometheus() {
        let l = |pairs: &[(&str, &str)]| Labels::from_pairs(pairs.iter().copied());
        let many = l(&[("__name__", "a"), ("__type__", "gauge"), ("i", "1"), ("x", "m"), ("z", "9")]);
        let one = l(&[("__name__", "b"), ("i", "1"), ("team", "t"), ("x", "o")]);
        let (plain, mut delayed) = (EvalCtx::new(10), EvalCtx::new(10));
        delayed.delayed_name_removal = true;
        let got = |sp: &BinarySpec, ctx: &EvalCtx| sp.result_labels(&many, &one, ctx).unwrap();
        // Arithmetic drops the name (and the type label with it), delayed or not.
        let div = spec(BinOp::Div, Card::OneToOne, false, &[], &[]);
        assert_eq!(got(&div, &plain), l(&[("i", "1"), ("x", "m"), ("z", "9")]));
        assert_eq!(got(&div, &delayed), l(&[("i", "1"), ("x", "m"), ("z", "9")]));
        // ignoring(...) drops the listed labels, on(...) keeps only them.
        assert_eq!(got(&spec(BinOp::Sub, Card::OneToOne, false, &["x"], &[]), &plain), l(&[("i", "1"), ("z", "9")]));
        assert_eq!(got(&spec(BinOp::Sub, Card::OneToOne, true, &["i", "q"], &[]), &plain), l(&[("i", "1")]));
        // A comparison filter keeps the name; `bool` drops it, or marks it when delayed.
        let gt = spec(BinOp::Gt, Card::OneToOne, true, &["i", "__name__"], &[]);
        assert_eq!(got(&gt, &plain), l(&[("__name__", "a"), ("i", "1")]));
        let mut gt_bool = gt.clone();
        gt_bool.return_bool = true;
        assert_eq!(got(&gt_bool, &plain), l(&[("i", "1")]));
        assert_eq!(got(&gt_bool, &delayed), l(&[("\0", "1"), ("__name__", "a"), ("i", "1")]));
        // group_left copies the listed labels from the one side, removes those it lacks, and
        // keeps the rest of the many side (no on/ignoring filter).
        let gl = spec(BinOp::Mul, Card::ManyToOne, true, &["i"], &["team", "x", "nope", "team"]);
        assert_eq!(got(&gl, &plain), l(&[("i", "1"), ("team", "t"), ("x", "o"), ("z", "9")]));
        let gl_z = spec(BinOp::Mul, Card::ManyToOne, true, &["i"], &["z", "__name__"]);
        assert_eq!(got(&gl_z, &plain), l(&[("__name__", "b"), ("i", "1"), ("x", "m")]));
        // A marked input loses its mark, whatever the operator.
        let mut marked = many.clone();
        crate::plan::mark_drop_name(&mut marked);
        let eq = spec(BinOp::Eq, Card::OneToOne, false, &[], &[]);
        assert_eq!(eq.result_labels(&marked, &one, &delayed).unwrap(), many);
    }

    #[test]
    fn min_of_and_max_of_follow_go() {
        let nan = f64::NAN;
        let inf = f64::INFINITY;
        let bits = |v: f64| v.to_bits();
        assert!(BinOp::MinOf.apply(nan, 3.0).0.is_nan() && BinOp::MaxOf.apply(3.0, nan).0.is_nan());
        // An infinity in the direction of the operation wins over NaN, as in Go's math.Max/Min.
        assert_eq!(BinOp::MaxOf.apply(nan, inf).0, inf);
        assert_eq!(BinOp::MinOf.apply(-inf, nan).0, -inf);
        assert_eq!(bits(BinOp::MaxOf.apply(-0.0, 0.0).0), bits(0.0));
        assert_eq!(bits(BinOp::MinOf.apply(0.0, -0.0).0), bits(-0.0));
        assert_eq!(BinOp::MinOf.apply(-2.0, -5.0).0, -5.0);
    }

    #[test]
    fn set_operators() {
        let l = vec![s(&[("i", "1")], 1.0), s(&[("i", "2")], 2.0)];
        let r = vec![s(&[("i", "2")], 20.0), s(&[("i", "3")], 30.0)];
        let ctx = EvalCtx::new(10);
        let and = spec(BinOp::And, Card::ManyToMany, false, &[], &[])
            .eval(l.clone(), std::slice::from_ref(&r), &ctx)
            .unwrap();
        assert_eq!((and.len(), and[0].vs[0]), (1, 2.0));
        let or =
            spec(BinOp::Or, Card::ManyToMany, false, &[], &[]).eval(l.clone(), std::slice::from_ref(&r), &ctx).unwrap();
        assert_eq!(or.iter().map(|s| s.vs[0]).collect::<Vec<_>>(), vec![1.0, 2.0, 30.0]);
        let unless = spec(BinOp::Unless, Card::ManyToMany, false, &[], &[]).eval(l, &[r], &ctx).unwrap();
        assert_eq!((unless.len(), unless[0].vs[0]), (1, 1.0));
    }
}
