//! Vector matching as a join: the kernel behind `PromBinary` between two vectors.
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
//! Prometheus's checks are per step: duplicate "one"-side series, a "many"-side series matched
//! twice in one-to-one matching, two results with the same labels. A pairing that looks
//! ambiguous over the whole range (a signature held by two series) is fine as long as the series
//! never meet at one step, which is common (a restarted target). The join checks exactly that:
//! where two series of one signature, or two results with one label set, meet at an evaluated
//! step, it gives up ([`None`]) and the caller evaluates step by step, which raises the error
//! Prometheus raises at the first such step (or none, when a comparison filters the samples
//! out first). Everything else is answered here, with the results in the order the per-step
//! evaluation would give them.

use hashbrown::HashMap;

use engine::Labels;

use super::{BinOp, BinarySpec, Card};
use crate::plan::{EvalCtx, Grid, SeriesData};

/// Marks a series whose signature has no partner on the other side.
const NONE: u32 = u32::MAX;

/// A set of evaluation steps.
#[derive(Clone)]
struct Steps(Vec<u64>);

impl Steps {
    fn new(n: usize) -> Self {
        Steps(vec![0; n.div_ceil(64)])
    }
    fn get(&self, i: u32) -> bool {
        self.0[(i / 64) as usize] & (1 << (i % 64)) != 0
    }
    /// Sets step `i`; true when it was set already.
    fn test_and_set(&mut self, i: u32) -> bool {
        let (w, b) = ((i / 64) as usize, 1u64 << (i % 64));
        let was = self.0[w] & b != 0;
        self.0[w] |= b;
        was
    }
}

/// One side of the operation: per series, the step index of each point (`NONE` off the grid).
struct Side<'a> {
    series: &'a [SeriesData],
    steps: Vec<Vec<u32>>,
    /// Points per step.
    count: Vec<u32>,
}

impl<'a> Side<'a> {
    fn new(series: &'a [SeriesData], grid: &Grid) -> Self {
        let mut count = vec![0u32; grid.len()];
        let steps = series
            .iter()
            .map(|s| {
                s.ts.iter()
                    .map(|&t| match grid.index_of(t) {
                        Some(i) => {
                            count[i] += 1;
                            i as u32
                        }
                        None => NONE,
                    })
                    .collect()
            })
            .collect();
        Side { series, steps, count }
    }

    /// The points of series `s` on the grid: (step, value).
    fn points(&self, s: usize) -> impl Iterator<Item = (u32, f64)> + '_ {
        self.steps[s].iter().copied().zip(self.series[s].vs.iter().copied()).filter(|p| p.0 != NONE)
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

/// The result series in the order the per-step evaluation creates them: a label set's position
/// is that of the first contribution with a kept point.
#[derive(Default)]
struct Output {
    ids: HashMap<Labels, usize>,
    series: Vec<SeriesData>,
    /// Per result: contributions merged into it (their points then need a sort).
    merged: Vec<bool>,
}

impl Output {
    /// Adds a result of a label set no other contribution has (no lookup needed).
    fn add_unique(&mut self, labels: Labels, ts: Vec<i64>, vs: Vec<f64>) {
        if !ts.is_empty() {
            self.series.push(SeriesData { labels, ts, vs });
            self.merged.push(false);
        }
    }

    fn add(&mut self, labels: Labels, ts: Vec<i64>, vs: Vec<f64>) {
        if ts.is_empty() {
            return;
        }
        match self.ids.get(&labels) {
            Some(&i) => {
                self.series[i].ts.extend(ts);
                self.series[i].vs.extend(vs);
                self.merged[i] = true;
            }
            None => {
                self.ids.insert(labels.clone(), self.series.len());
                self.series.push(SeriesData { labels, ts, vs });
                self.merged.push(false);
            }
        }
    }

    /// The series; merged ones sorted by time (their steps are disjoint).
    fn finish(self) -> Vec<SeriesData> {
        let mut out = self.series;
        for (s, merged) in out.iter_mut().zip(self.merged) {
            if merged {
                let mut pts: Vec<(i64, f64)> = s.ts.iter().copied().zip(s.vs.iter().copied()).collect();
                pts.sort_by_key(|p| p.0);
                (s.ts, s.vs) = pts.into_iter().unzip();
            }
        }
        out
    }
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
    pub(super) fn set_join(&self, lhs: &[SeriesData], rhs: &[SeriesData]) -> Vec<SeriesData> {
        let n = self.grid.len();
        let (l, r) = (Side::new(lhs, &self.grid), Side::new(rhs, &self.grid));
        let mut out = Output::default();
        // Presence per step of the signatures of the side that is looked up.
        let (looked_up, other) = if self.op == BinOp::Or { (&l, &r) } else { (&r, &l) };
        let mut sigs = Signatures::default();
        let mut present: Vec<Steps> = Vec::new();
        for s in 0..looked_up.series.len() {
            let id = sigs.intern(self.signature_hash(&looked_up.series[s].labels), s) as usize;
            if id == present.len() {
                present.push(Steps::new(n));
            }
            for (i, _) in looked_up.points(s) {
                present[id].test_and_set(i);
            }
        }
        let times: Vec<i64> = self.grid.times().collect();
        // The points of a series at the steps `keep` accepts.
        let filtered = |side: &Side, s: usize, keep: &dyn Fn(u32) -> bool, out: &mut Output| {
            let (mut ts, mut vs) = (Vec::new(), Vec::new());
            for (i, v) in side.points(s) {
                if keep(i) {
                    ts.push(times[i as usize]);
                    vs.push(v);
                }
            }
            out.add(side.series[s].labels.clone(), ts, vs);
        };
        let (sigs, present) = (&sigs, &present);
        let present_at = |side: &Side, s: usize| {
            let id = sigs.get(self.signature_hash(&side.series[s].labels));
            move |i: u32| id != NONE && present[id as usize].get(i)
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
    pub(super) fn vector_join(&self, lhs: &[SeriesData], rhs: &[SeriesData], ctx: &EvalCtx) -> Option<Vec<SeriesData>> {
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
            return Some(Vec::new());
        }
        let is_active = |i: u32| active[i as usize];

        // The "one" side: signatures, series per signature, presence per step. Two series of
        // one signature at an evaluated step are Prometheus's duplicate-series error.
        let mut sigs = Signatures::default();
        let mut one_sig = Vec::with_capacity(one.series.len());
        let mut one_by_sig: Vec<Vec<usize>> = Vec::new();
        let mut one_present: Vec<Steps> = Vec::new();
        for o in 0..one.series.len() {
            let id = sigs.intern(self.signature_hash(&one.series[o].labels), o);
            if id as usize == one_by_sig.len() {
                one_by_sig.push(Vec::new());
                one_present.push(Steps::new(n));
            }
            one_sig.push(id);
            one_by_sig[id as usize].push(o);
            for (i, _) in one.points(o) {
                if one_present[id as usize].test_and_set(i) && is_active(i) {
                    return None;
                }
            }
        }
        // The "many" side: signatures looked up, presence per step for the matched ones. In
        // one-to-one matching, two of them meeting a partner at one step is an error.
        let mut many_sig = Vec::with_capacity(many.series.len());
        let mut many_present: Vec<Option<Steps>> = vec![None; one_by_sig.len()];
        for m in 0..many.series.len() {
            let id = sigs.get(self.signature_hash(&many.series[m].labels));
            many_sig.push(id);
            if id == NONE {
                continue;
            }
            let present = many_present[id as usize].get_or_insert_with(|| Steps::new(n));
            for (i, _) in many.points(m) {
                if present.test_and_set(i) && self.card == Card::OneToOne && one_present[id as usize].get(i) {
                    return None;
                }
            }
        }

        // The contributions to the result, in the order the per-step evaluation meets them.
        let mut parts: Vec<(Contribution, Labels)> = Vec::with_capacity(many.series.len());
        let empty = Labels::default();
        for m in 0..many.series.len() {
            if many_sig[m] != NONE {
                for &o in &one_by_sig[many_sig[m] as usize] {
                    let labels = self.result_labels(&many.series[m].labels, &one.series[o].labels, ctx);
                    parts.push((Contribution::Pair(m, o), labels));
                }
            }
            if fill_one.is_some() {
                parts.push((Contribution::FillOne(m), self.result_labels(&many.series[m].labels, &empty, ctx)));
            }
        }
        if fill_many.is_some() {
            for (o, &sig) in one_sig.iter().enumerate() {
                parts.push((Contribution::FillMany(o), self.signature(&one.series[sigs.first[sig as usize]].labels)));
            }
        }
        // Results that several contributions share: their evaluated steps must not meet.
        // Only those are looked up again; the others move into the output as they are.
        let is_shared: Vec<bool> = {
            let mut count: HashMap<&Labels, u32> = HashMap::with_capacity(parts.len());
            for (_, l) in &parts {
                *count.entry(l).or_insert(0) += 1;
            }
            parts.iter().map(|(_, l)| count.get(l).is_some_and(|&c| c > 1)).collect()
        };
        let mut shared: HashMap<Labels, Steps> = HashMap::new();
        for ((_, l), _) in parts.iter().zip(&is_shared).filter(|(_, s)| **s) {
            if !shared.contains_key(l) {
                shared.insert(l.clone(), Steps::new(n));
            }
        }

        let mut out = Output::default();
        let times: Vec<i64> = self.grid.times().collect();
        for ((part, labels), is_shared) in parts.into_iter().zip(is_shared) {
            let (mut ts, mut vs) = (Vec::new(), Vec::new());
            let mut meet = if is_shared { shared.get_mut(&labels) } else { None };
            let mut emit = |i: u32, l: f64, r: f64| -> bool {
                if let Some(s) = meet.as_deref_mut()
                    && s.test_and_set(i)
                {
                    return false;
                }
                if let Some(v) = self.compute(l, r) {
                    ts.push(times[i as usize]);
                    vs.push(v);
                }
                true
            };
            let ok = match part {
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
                        if is_active(i) && (sig == NONE || !one_present[sig as usize].get(i)) {
                            let (l, r) = if swapped { (f, mv) } else { (mv, f) };
                            ok &= emit(i, l, r);
                        }
                    }
                    ok
                }
                Contribution::FillMany(o) => {
                    let (present, f) = (&many_present[one_sig[o] as usize], fill_many.unwrap_or(f64::NAN));
                    let mut ok = true;
                    for (i, ov) in one.points(o) {
                        if is_active(i) && !present.as_ref().is_some_and(|p| p.get(i)) {
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
                out.add(labels, ts, vs);
            } else {
                out.add_unique(labels, ts, vs);
            }
        }
        Some(out.finish())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::plan::{F64, NodeSpec};

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
                match spec.vector_join(&lhs, &rhs, &ctx) {
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
