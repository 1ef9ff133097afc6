//! Vector matching as a join: the kernel behind `PromBinary` between two vectors, on label sets
//! as the batches hold them (encoded, see [`crate::plan::encoded_labels`]).
//!
//! ```text
//!   lhs series ──► signature id (once per series) ─┐
//!   rhs series ──► signature id (once per series) ─┴─► pairs (many, one) per signature,
//!                                                     result labels once per pair
//!        per pair: both sides' steps walked together ──► (t, l op r) column by column
//!   and / unless: lhs steps kept where the signature is (not) present on the right
//!   or:           rhs steps kept where the signature is not present on the left
//! ```
//!
//! Prometheus evaluates a binary operator step by step, hashing every sample's labels at every
//! step. Here the signature of a series is computed once, the "one"-side partners of each
//! "many"-side series are found once, and the values of a pair are combined by walking the two
//! series' steps side by side. Presence of each signature per step is kept as a bitset.
//!
//! Labels are never decoded: signatures are hashed from the encoded pairs, and a result's label
//! set is written once, straight from its two inputs' encoded sets, into the output's label
//! dictionary. The samples are read in place from the input batches and written once, into the
//! output's columns.
//!
//! Prometheus's checks are per step: duplicate "one"-side series, a "many"-side series matched
//! twice in one-to-one matching, two results with the same labels. A pairing that looks
//! ambiguous over the whole range (a signature held by two series) is fine as long as the series
//! never meet at one step, which is common (a restarted target). The join checks exactly that:
//! where two series of one signature, or two results with one label set, meet at an evaluated
//! step, it gives up ([`None`]) and the caller evaluates step by step, which raises the error
//! Prometheus raises at the first such step (or none, when a comparison filters the samples
//! out first). Everything else is answered here, with the results in the order the per-step
//! evaluation would give them.

use std::ops::Range;
use std::sync::Arc;

use arrow::array::{ArrayRef, BinaryArray, DictionaryArray, Float64Array, Int64Array, RecordBatch, UInt32Array};
use arrow::datatypes::UInt32Type;
use hashbrown::HashMap;

use super::{BinOp, BinarySpec, Card};
use crate::error::{Error, Result};
use crate::plan::{Grid, LabelSetIndex, SeriesData, SeriesRef, encode_labels, prom_schema};

/// Marks a series whose signature has no partner on the other side.
const NONE: u32 = u32::MAX;

/// One input series of the join: its encoded label set and its points.
#[derive(Debug, Clone, Copy)]
pub(super) struct Input<'a> {
    /// The label set, encoded.
    pub(super) labels: &'a [u8],
    /// Timestamps (ms), ascending.
    pub(super) ts: &'a [i64],
    /// Values, one per timestamp.
    pub(super) vs: &'a [f64],
}

impl<'a> From<SeriesRef<'a>> for Input<'a> {
    fn from(s: SeriesRef<'a>) -> Self {
        Input { labels: s.labels, ts: s.ts, vs: s.vs }
    }
}

/// The encoded label sets of `series`, for [`inputs`].
pub(super) fn encoded_labels(series: &[SeriesData]) -> Vec<Vec<u8>> {
    series
        .iter()
        .map(|s| {
            let mut b = Vec::new();
            encode_labels(&s.labels, &mut b);
            b
        })
        .collect()
}

/// Decoded series as join inputs, with their label sets encoded by [`encoded_labels`].
pub(super) fn inputs<'a>(series: &'a [SeriesData], encoded: &'a [Vec<u8>]) -> Vec<Input<'a>> {
    series.iter().zip(encoded).map(|(s, l)| Input { labels: l, ts: &s.ts, vs: &s.vs }).collect()
}

/// One set of evaluation steps per id (a signature, a result label set), in one allocation.
struct StepSets {
    /// Words per set.
    words: usize,
    bits: Vec<u64>,
}

impl StepSets {
    /// `sets` empty sets of `steps` steps each.
    fn new(steps: usize, sets: usize) -> Self {
        let words = steps.div_ceil(64);
        StepSets { words, bits: vec![0; words * sets] }
    }
    /// Adds an empty set; its id is the number of sets before.
    fn push(&mut self) {
        self.bits.resize(self.bits.len() + self.words, 0);
    }
    fn get(&self, id: u32, i: u32) -> bool {
        self.bits[id as usize * self.words + (i / 64) as usize] & (1 << (i % 64)) != 0
    }
    /// Sets step `i` of set `id`; true when it was set already.
    fn test_and_set(&mut self, id: u32, i: u32) -> bool {
        let (w, b) = (id as usize * self.words + (i / 64) as usize, 1u64 << (i % 64));
        let was = self.bits[w] & b != 0;
        self.bits[w] |= b;
        was
    }
}

/// One side of the operation: the step index of each point (`NONE` off the grid), series
/// after series.
struct Side<'a, 'b> {
    series: &'b [Input<'a>],
    steps: Vec<u32>,
    /// Where the points of each series start in `steps` (one more entry: the end).
    starts: Vec<usize>,
    /// Points per step.
    count: Vec<u32>,
}

impl<'a, 'b> Side<'a, 'b> {
    fn new(series: &'b [Input<'a>], grid: &Grid) -> Self {
        let mut count = vec![0u32; grid.len()];
        let mut starts = Vec::with_capacity(series.len() + 1);
        let mut steps = Vec::with_capacity(series.iter().map(|s| s.ts.len()).sum());
        starts.push(0);
        for s in series {
            steps.extend(s.ts.iter().map(|&t| match grid.index_of(t) {
                Some(i) => {
                    count[i] += 1;
                    i as u32
                }
                None => NONE,
            }));
            starts.push(steps.len());
        }
        Side { series, steps, starts, count }
    }

    /// The points of series `s` on the grid: (step, value).
    fn points(&self, s: usize) -> impl Iterator<Item = (u32, f64)> + '_ {
        self.steps[self.starts[s]..self.starts[s + 1]]
            .iter()
            .copied()
            .zip(self.series[s].vs.iter().copied())
            .filter(|p| p.0 != NONE)
    }
}

/// Signature ids: each distinct signature hash of the side that is looked up gets a dense id.
#[derive(Default)]
struct Signatures {
    ids: HashMap<u64, u32>,
    /// Per id, the series that brought it in (its signature's labels are built from it).
    first: Vec<usize>,
}

impl Signatures {
    /// The id of `sig`, first seen on series `s` if it is new.
    fn intern(&mut self, sig: u64, s: usize) -> u32 {
        let next = self.first.len() as u32;
        let id = *self.ids.entry(sig).or_insert(next);
        if id == next {
            self.first.push(s);
        }
        id
    }
    fn get(&self, sig: u64) -> u32 {
        self.ids.get(&sig).copied().unwrap_or(NONE)
    }
}

/// Where a result's points are.
enum Points {
    /// A range of the output columns (a result one contribution makes so far).
    Columns(Range<usize>),
    /// Points gathered from several contributions; sorted by time at the end.
    Gathered(Vec<i64>, Vec<f64>),
}

/// The results, in the order the per-step evaluation creates them: a label set's position is
/// that of the first contribution with a kept point. Label sets are written back to back into
/// the output's label dictionary, points into its columns (a result that a second contribution
/// adds to gathers its points apart).
#[derive(Default)]
pub(super) struct Output {
    dict: Vec<u8>,
    offsets: Vec<i32>,
    points: Vec<Points>,
    ts: Vec<i64>,
    vs: Vec<f64>,
    /// The results of label sets several contributions may share.
    shared: LabelSetIndex,
    gathered: bool,
}

impl Output {
    fn with_capacity(series: usize, points: usize, label_bytes: usize) -> Self {
        let mut offsets = Vec::with_capacity(series + 1);
        offsets.push(0);
        Output {
            dict: Vec::with_capacity(label_bytes),
            offsets,
            points: Vec::with_capacity(series),
            ts: Vec::with_capacity(points),
            vs: Vec::with_capacity(points),
            ..Default::default()
        }
    }

    /// Adds a result of a label set no other contribution has (no lookup needed).
    fn add_unique(&mut self, labels: &[u8], ts: &[i64], vs: &[f64]) {
        if ts.is_empty() {
            return;
        }
        self.dict.extend_from_slice(labels);
        self.offsets.push(self.dict.len() as i32);
        let start = self.ts.len();
        self.ts.extend_from_slice(ts);
        self.vs.extend_from_slice(vs);
        self.points.push(Points::Columns(start..self.ts.len()));
    }

    /// Adds points to the result of `labels`, which other contributions may share.
    fn add(&mut self, labels: &[u8], ts: &[i64], vs: &[f64]) {
        if ts.is_empty() {
            return;
        }
        let (dict, offsets) = (&self.dict, &self.offsets);
        let set = |i: usize| &dict[offsets[i] as usize..offsets[i + 1] as usize];
        let Some(i) = self.shared.find_or_insert(labels, self.points.len(), set) else {
            return self.add_unique(labels, ts, vs);
        };
        self.gathered = true;
        let p = &mut self.points[i];
        if let Points::Columns(r) = p {
            *p = Points::Gathered(self.ts[r.clone()].to_vec(), self.vs[r.clone()].to_vec());
        }
        if let Points::Gathered(t, v) = p {
            t.extend_from_slice(ts);
            v.extend_from_slice(vs);
        }
    }

    /// The results as one batch of the plan's layout, every series in time order (two points of
    /// one label set at one time are Prometheus's "same labelset" error).
    pub(super) fn finish(self) -> Result<RecordBatch> {
        let Output { dict, offsets, points, ts, vs, gathered, .. } = self;
        let mut keys = Vec::with_capacity(ts.len());
        let (ts, vs) = if !gathered {
            // Every result is a run of the output columns already, in result order.
            let (mut ts, mut vs) = (ts, vs);
            for (k, p) in points.iter().enumerate() {
                if let Points::Columns(r) = p {
                    keys.extend(std::iter::repeat_n(k as u32, r.len()));
                    in_time_order(&mut ts[r.clone()], &mut vs[r.clone()])?;
                }
            }
            (ts, vs)
        } else {
            let (mut out_ts, mut out_vs) = (Vec::with_capacity(ts.len()), Vec::with_capacity(ts.len()));
            for (k, p) in points.into_iter().enumerate() {
                let start = out_ts.len();
                match p {
                    Points::Columns(r) => {
                        out_ts.extend_from_slice(&ts[r.clone()]);
                        out_vs.extend_from_slice(&vs[r]);
                    }
                    Points::Gathered(t, v) => {
                        out_ts.extend(t);
                        out_vs.extend(v);
                    }
                }
                in_time_order(&mut out_ts[start..], &mut out_vs[start..])?;
                keys.extend(std::iter::repeat_n(k as u32, out_ts.len() - start));
            }
            (out_ts, out_vs)
        };
        let bad = |e: arrow::error::ArrowError| Error::Internal(format!("building a binary operator's output: {e}"));
        let values =
            BinaryArray::try_new(arrow::buffer::OffsetBuffer::new(offsets.into()), dict.into(), None).map_err(bad)?;
        let labels = DictionaryArray::<UInt32Type>::try_new(UInt32Array::from(keys), Arc::new(values)).map_err(bad)?;
        let cols: Vec<ArrayRef> =
            vec![Arc::new(labels), Arc::new(Int64Array::from(ts)), Arc::new(Float64Array::from(vs))];
        RecordBatch::try_new(prom_schema(), cols).map_err(bad)
    }
}

/// Puts the points of one result in time order; two at one time are Prometheus's "same
/// labelset" error.
fn in_time_order(ts: &mut [i64], vs: &mut [f64]) -> Result<()> {
    if ts.windows(2).all(|w| w[0] < w[1]) {
        return Ok(());
    }
    let mut pts: Vec<(i64, f64)> = ts.iter().copied().zip(vs.iter().copied()).collect();
    pts.sort_by_key(|p| p.0);
    if pts.windows(2).any(|w| w[0].0 == w[1].0) {
        return Err(Error::Execution("vector cannot contain metrics with the same labelset".into()));
    }
    for (i, (t, v)) in pts.into_iter().enumerate() {
        (ts[i], vs[i]) = (t, v);
    }
    Ok(())
}

/// What a result series is made of.
enum Contribution {
    /// A "many"-side series with a "one"-side partner.
    Pair(usize, usize),
    /// A "many"-side series at the steps its partner is missing (`fill_right`).
    FillOne(usize),
    /// A "one"-side series at the steps no "many"-side series matches it (`fill_left`).
    FillMany(usize),
}

impl BinarySpec {
    /// `and`, `or`, `unless` as a semi join, a union and an anti join on signatures. Never
    /// ambiguous: the result is the per-step evaluation's.
    pub(super) fn set_join(&self, lhs: &[Input], rhs: &[Input]) -> Result<RecordBatch> {
        let n = self.grid.len();
        let (l, r) = (Side::new(lhs, &self.grid), Side::new(rhs, &self.grid));
        let mut out = Output::with_capacity(lhs.len(), l.steps.len(), lhs.iter().map(|s| s.labels.len()).sum());
        // Presence per step of the signatures of the side that is looked up.
        let (looked_up, other) = if self.op == BinOp::Or { (&l, &r) } else { (&r, &l) };
        let mut sigs = Signatures::default();
        let mut present = StepSets::new(n, 0);
        for s in 0..looked_up.series.len() {
            let id = sigs.intern(self.signature_hash(looked_up.series[s].labels), s);
            if sigs.first[id as usize] == s {
                present.push();
            }
            for (i, _) in looked_up.points(s) {
                present.test_and_set(id, i);
            }
        }
        let times: Vec<i64> = self.grid.times().collect();
        let (mut ts, mut vs) = (Vec::new(), Vec::new());
        // The points of a series at the steps `keep` accepts.
        let mut filtered = |side: &Side, s: usize, keep: &dyn Fn(u32) -> bool, out: &mut Output| {
            ts.clear();
            vs.clear();
            for (i, v) in side.points(s) {
                if keep(i) {
                    ts.push(times[i as usize]);
                    vs.push(v);
                }
            }
            out.add(side.series[s].labels, &ts, &vs);
        };
        let (sigs, present) = (&sigs, &present);
        let present_at = |side: &Side, s: usize| {
            let id = sigs.get(self.signature_hash(side.series[s].labels));
            move |i: u32| id != NONE && present.get(id, i)
        };
        match self.op {
            BinOp::Or => {
                for s in 0..lhs.len() {
                    filtered(&l, s, &|_| true, &mut out);
                }
                for s in 0..rhs.len() {
                    let hit = present_at(other, s);
                    filtered(other, s, &|i| !hit(i), &mut out);
                }
            }
            op => {
                for s in 0..lhs.len() {
                    let hit = present_at(other, s);
                    filtered(other, s, &|i| hit(i) == (op == BinOp::And), &mut out);
                }
            }
        }
        out.finish()
    }

    /// Arithmetic and comparisons between two vectors as a join; `None` when two series of one
    /// signature or two results of one label set meet at an evaluated step (see the module docs).
    pub(super) fn vector_join(&self, lhs: &[Input], rhs: &[Input], delayed_name_removal: bool) -> Option<Output> {
        let n = self.grid.len();
        let swapped = self.card == Card::OneToMany;
        let (many, one) = if swapped { (rhs, lhs) } else { (lhs, rhs) };
        let (many, one) = (Side::new(many, &self.grid), Side::new(one, &self.grid));
        let (fill_many, fill_one) = (self.fill_left.map(|f| f.0), self.fill_right.map(|f| f.0));
        let fill = fill_many.is_some() || fill_one.is_some();
        // A step is evaluated when both sides have samples there, or one has and a fill value
        // stands in for the other (Prometheus returns at once when a side is empty).
        let active: Vec<bool> = (0..n)
            .map(|i| {
                let (m, o) = (many.count[i] > 0, one.count[i] > 0);
                (m && o) || ((m || o) && fill)
            })
            .collect();
        if !active.contains(&true) {
            return Some(Output::with_capacity(0, 0, 0));
        }
        let is_active = |i: u32| active[i as usize];

        // The "one" side: signatures, series per signature, presence per step. Two series of
        // one signature at an evaluated step are Prometheus's duplicate-series error.
        let mut sigs = Signatures::default();
        let mut one_sig = Vec::with_capacity(one.series.len());
        let mut one_present = StepSets::new(n, 0);
        for o in 0..one.series.len() {
            let id = sigs.intern(self.signature_hash(one.series[o].labels), o);
            if sigs.first[id as usize] == o {
                one_present.push();
            }
            one_sig.push(id);
            for (i, _) in one.points(o) {
                if one_present.test_and_set(id, i) && is_active(i) {
                    return None;
                }
            }
        }
        // The "one"-side series of each signature, in series order:
        // `one_by_sig[one_starts[id]..one_starts[id + 1]]`.
        let mut one_starts = vec![0usize; sigs.first.len() + 1];
        for &id in &one_sig {
            one_starts[id as usize + 1] += 1;
        }
        for i in 1..one_starts.len() {
            one_starts[i] += one_starts[i - 1];
        }
        let mut one_by_sig = vec![0usize; one_sig.len()];
        let mut next = one_starts.clone();
        for (o, &id) in one_sig.iter().enumerate() {
            one_by_sig[next[id as usize]] = o;
            next[id as usize] += 1;
        }
        // The "many" side: signatures looked up, presence per step for the matched ones. In
        // one-to-one matching, two of them meeting a partner at one step is an error.
        let mut many_sig = Vec::with_capacity(many.series.len());
        let mut many_present = StepSets::new(n, sigs.first.len());
        for m in 0..many.series.len() {
            let id = sigs.get(self.signature_hash(many.series[m].labels));
            many_sig.push(id);
            if id == NONE {
                continue;
            }
            for (i, _) in many.points(m) {
                if many_present.test_and_set(id, i) && self.card == Card::OneToOne && one_present.get(id, i) {
                    return None;
                }
            }
        }

        // The contributions to the result, in the order the per-step evaluation meets them,
        // with their result label sets written back to back.
        let mut parts: Vec<(Contribution, Range<usize>)> = Vec::with_capacity(many.series.len());
        let mut labels: Vec<u8> = Vec::with_capacity(many.series.iter().map(|s| s.labels.len()).sum());
        let mut add = |c: Contribution, write: &mut dyn FnMut(&mut Vec<u8>)| {
            let start = labels.len();
            write(&mut labels);
            parts.push((c, start..labels.len()));
        };
        for (m, &sig) in many_sig.iter().enumerate() {
            let ml = many.series[m].labels;
            if sig != NONE {
                let id = sig as usize;
                for &o in &one_by_sig[one_starts[id]..one_starts[id + 1]] {
                    let ol = one.series[o].labels;
                    add(Contribution::Pair(m, o), &mut |out| {
                        self.result_labels_into(ml, ol, delayed_name_removal, out)
                    });
                }
            }
            if fill_one.is_some() {
                add(Contribution::FillOne(m), &mut |out| self.result_labels_into(ml, &[], delayed_name_removal, out));
            }
        }
        if fill_many.is_some() {
            for (o, &sig) in one_sig.iter().enumerate() {
                let first = one.series[sigs.first[sig as usize]].labels;
                add(Contribution::FillMany(o), &mut |out| self.signature_into(first, out));
            }
        }
        let set = |r: &Range<usize>| &labels[r.clone()];
        // Results that several contributions share: their evaluated steps must not meet.
        // Only those are looked up again; the others move into the output as they are.
        let mut shared_ids: HashMap<&[u8], u32> = HashMap::new();
        let is_shared: Vec<bool> = if parts.len() < 2 {
            vec![false; parts.len()]
        } else {
            let mut count: HashMap<&[u8], u32> = HashMap::with_capacity(parts.len());
            for (_, r) in &parts {
                *count.entry(set(r)).or_insert(0) += 1;
            }
            for (l, c) in count {
                if c > 1 {
                    let id = shared_ids.len() as u32;
                    shared_ids.insert(l, id);
                }
            }
            parts.iter().map(|(_, r)| shared_ids.contains_key(set(r))).collect()
        };
        let mut shared = StepSets::new(n, shared_ids.len());

        let mut out = Output::with_capacity(parts.len(), many.steps.len(), labels.len());
        let times: Vec<i64> = self.grid.times().collect();
        let (mut ts, mut vs) = (Vec::new(), Vec::new());
        for ((part, range), is_shared) in parts.iter().zip(is_shared) {
            ts.clear();
            vs.clear();
            let meet = if is_shared { shared_ids.get(set(range)).copied() } else { None };
            let mut emit = |i: u32, l: f64, r: f64| -> bool {
                if let Some(id) = meet
                    && shared.test_and_set(id, i)
                {
                    return false;
                }
                if let Some(v) = self.compute(l, r) {
                    ts.push(times[i as usize]);
                    vs.push(v);
                }
                true
            };
            let ok = match *part {
                Contribution::Pair(m, o) => {
                    let mut op = one.points(o).peekable();
                    let mut ok = true;
                    for (i, mv) in many.points(m) {
                        while op.next_if(|p| p.0 < i).is_some() {}
                        if let Some(&(j, ov)) = op.peek()
                            && j == i
                        {
                            let (l, r) = if swapped { (ov, mv) } else { (mv, ov) };
                            ok &= emit(i, l, r);
                        }
                    }
                    ok
                }
                Contribution::FillOne(m) => {
                    let (sig, f) = (many_sig[m], fill_one.unwrap_or(f64::NAN));
                    let mut ok = true;
                    for (i, mv) in many.points(m) {
                        if is_active(i) && (sig == NONE || !one_present.get(sig, i)) {
                            let (l, r) = if swapped { (f, mv) } else { (mv, f) };
                            ok &= emit(i, l, r);
                        }
                    }
                    ok
                }
                Contribution::FillMany(o) => {
                    let (sig, f) = (one_sig[o], fill_many.unwrap_or(f64::NAN));
                    let mut ok = true;
                    for (i, ov) in one.points(o) {
                        if is_active(i) && !many_present.get(sig, i) {
                            let (l, r) = if swapped { (ov, f) } else { (f, ov) };
                            ok &= emit(i, l, r);
                        }
                    }
                    ok
                }
            };
            if !ok {
                return None;
            }
            if is_shared {
                out.add(set(range), &ts, &vs);
            } else {
                out.add_unique(set(range), &ts, &vs);
            }
        }
        Some(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::plan::{EvalCtx, F64, NodeSpec};
    use engine::Labels;

    use engine::testkit::XorShift64Star as Rng;

    /// Series over few label values, so that signatures collide, with points at random steps.
    fn side(rng: &mut Rng, name: &str, grid: &Grid, n: usize, density: u64) -> Vec<SeriesData> {
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for _ in 0..n {
            let labels = Labels::from_pairs([
                ("__name__", if rng.below(4) == 0 { format!("{name}2") } else { name.to_string() }),
                ("i", format!("{}", rng.below(3))),
                ("x", format!("{}", rng.below(3))),
                ("y", if rng.below(2) == 0 { String::new() } else { format!("{}", rng.below(2)) }),
            ]);
            if !seen.insert(labels.clone()) {
                continue;
            }
            let mut s = SeriesData::new(labels);
            for t in grid.times() {
                if rng.below(10) < density {
                    s.push(t, rng.below(5) as f64);
                }
            }
            out.push(s);
        }
        out
    }

    fn sorted(mut v: Vec<SeriesData>) -> Vec<SeriesData> {
        v.sort_by(|a, b| a.labels.cmp(&b.labels));
        v
    }

    /// The join answers exactly what the per-step evaluation answers (values, labels, errors),
    /// over random inputs where signatures collide at some steps and not at others.
    #[test]
    fn join_agrees_with_the_per_step_evaluation() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let ops = [BinOp::Add, BinOp::Div, BinOp::Gt, BinOp::Eq, BinOp::And, BinOp::Or, BinOp::Unless];
        let (mut joined, mut fallbacks, mut errors, mut points) = (0, 0, 0, 0usize);
        for round in 0..3000 {
            let grid = if round % 3 == 0 { Grid::new(100, 100, 10) } else { Grid::new(0, 90, 10) };
            let density = 1 + rng.below(9);
            let (nl, nr) = (rng.below(8) as usize, rng.below(8) as usize);
            let lhs = side(&mut rng, "a", &grid, nl, density);
            let rhs = side(&mut rng, "b", &grid, nr, density);
            let op = ops[rng.below(ops.len() as u64) as usize];
            let card = if op.is_set() {
                Card::ManyToMany
            } else {
                [Card::OneToOne, Card::ManyToOne, Card::OneToMany][rng.below(3) as usize]
            };
            let on = rng.below(2) == 0;
            let matching: Vec<String> = match rng.below(4) {
                0 => vec![],
                1 => vec!["i".into()],
                2 => vec!["i".into(), "y".into()],
                _ => vec!["x".into()],
            };
            let include: Vec<String> = if card == Card::OneToOne || card == Card::ManyToMany || rng.below(2) == 0 {
                vec![]
            } else {
                vec!["x".into()]
            };
            let fill =
                |rng: &mut Rng| if !op.is_set() && rng.below(4) == 0 { Some(F64(rng.below(3) as f64)) } else { None };
            let spec = BinarySpec {
                grid,
                op,
                lhs_scalar: false,
                rhs_scalar: false,
                return_bool: op.is_comparison() && rng.below(2) == 0,
                on,
                matching,
                card,
                include,
                fill_left: fill(&mut rng),
                fill_right: fill(&mut rng),
            };
            let mut ctx = EvalCtx::new(1_000_000);
            ctx.delayed_name_removal = rng.below(3) == 0;
            let want = if op.is_set() {
                super::super::in_time_order(spec.set_op_per_step(&lhs, &rhs))
            } else {
                spec.vector_vector_per_step(&lhs, &rhs, &ctx).and_then(super::super::in_time_order)
            };
            if !op.is_set() {
                let (le, re) = (encoded_labels(&lhs), encoded_labels(&rhs));
                match spec.vector_join(&inputs(&lhs, &le), &inputs(&rhs, &re), ctx.delayed_name_removal) {
                    Some(_) => joined += 1,
                    None => fallbacks += 1,
                }
            }
            let got = spec.eval(lhs.clone(), std::slice::from_ref(&rhs), &ctx);
            match (&got, &want) {
                (Ok(g), Ok(w)) => {
                    points += w.iter().map(|s| s.ts.len()).sum::<usize>();
                    let bits = |v: &[SeriesData]| {
                        v.iter()
                            .map(|s| {
                                (s.labels.clone(), s.ts.clone(), s.vs.iter().map(|x| x.to_bits()).collect::<Vec<_>>())
                            })
                            .collect::<Vec<_>>()
                    };
                    if grid.len() == 1 {
                        // One step: the order is the per-step evaluation's (an instant query's).
                        assert_eq!(bits(g), bits(w), "round {round}: {spec:?}\n{lhs:?}\n{rhs:?}");
                    } else {
                        assert_eq!(
                            bits(&sorted(g.clone())),
                            bits(&sorted(w.clone())),
                            "round {round}: {spec:?}\n{lhs:?}\n{rhs:?}"
                        );
                    }
                }
                (Err(g), Err(w)) => {
                    errors += 1;
                    assert_eq!(g.to_string(), w.to_string(), "round {round}: {spec:?}");
                }
                _ => panic!("round {round}: {spec:?}\n{lhs:?}\n{rhs:?}\ngot {got:?}\nwant {want:?}"),
            }
        }
        // The rounds cover both paths, errors and plenty of results.
        assert!(
            joined > 500 && fallbacks > 100 && errors > 100 && points > 10_000,
            "{joined} {fallbacks} {errors} {points}"
        );
    }
}
