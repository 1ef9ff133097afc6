//! Prometheus rule files: YAML parsing (`groups`, `interval`, `limit`, `query_offset`, `record`,
//! `alert`, `expr`, `for`, `keep_firing_for`, `labels`, `annotations`) and the checks
//! `promtool check rules` makes, with every error naming the file, the group and the rule.
//!
//! ```text
//!   --rule-file globs ──► files (sorted, deduplicated) ──► YAML ──► validate ──► [GroupSpec]
//!                                    errors: "<file>: group \"g\", rule 2 (\"x\"): <what>"
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::template::RuleTemplate;
use engine::labels::valid_label_name;

/// A parsed, checked rule group.
#[derive(Debug)]
pub struct GroupSpec {
    /// The file the group came from.
    pub file: String,
    /// The group's name (unique within its file).
    pub name: String,
    /// Evaluation interval (ms); the default when the group sets none.
    pub interval_ms: i64,
    /// `query_offset` (ms): rules query this much in the past.
    pub query_offset_ms: i64,
    /// Most series a recording rule / alerts an alerting rule may produce (0: no limit).
    pub limit: usize,
    /// The rules, in file order.
    pub rules: Vec<RuleSpec>,
}

/// A parsed, checked rule.
#[derive(Debug)]
pub struct RuleSpec {
    /// What kind of rule it is.
    pub kind: RuleKind,
    /// The PromQL expression (as written).
    pub expr: String,
    /// Labels added to the results (alert labels are templates, recording labels are not).
    pub labels: BTreeMap<String, RuleTemplate>,
}

/// A recording or an alerting rule.
#[derive(Debug)]
pub enum RuleKind {
    /// `record: <name>`.
    Recording {
        /// The metric name of the recorded series.
        record: String,
    },
    /// `alert: <name>`.
    Alerting {
        /// The alert name.
        alert: String,
        /// `for` (ms).
        for_ms: i64,
        /// `keep_firing_for` (ms).
        keep_firing_for_ms: i64,
        /// Annotations (templates), by name.
        annotations: BTreeMap<String, RuleTemplate>,
    },
}

impl RuleSpec {
    /// The record or alert name.
    pub fn name(&self) -> &str {
        match &self.kind {
            RuleKind::Recording { record } => record,
            RuleKind::Alerting { alert, .. } => alert,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    groups: Vec<RawGroup>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    #[serde(default)]
    name: String,
    interval: Option<String>,
    query_offset: Option<String>,
    #[serde(default)]
    limit: usize,
    #[serde(default)]
    rules: Vec<RawRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(default)]
    record: String,
    #[serde(default)]
    alert: String,
    #[serde(default)]
    expr: String,
    #[serde(rename = "for")]
    for_: Option<String>,
    keep_firing_for: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// Expands `--rule-file` globs into the files they match (sorted, each once). A pattern without
/// glob characters must name an existing file; a glob may match nothing (as Prometheus).
pub fn expand_globs(patterns: &[String]) -> Result<Vec<PathBuf>, String> {
    let mut out = BTreeSet::new();
    for p in patterns {
        let is_glob = p.contains(['*', '?', '[']);
        if !is_glob {
            if !Path::new(p).is_file() {
                return Err(format!("--rule-file {p}: no such file"));
            }
            out.insert(PathBuf::from(p));
            continue;
        }
        let paths = glob::glob(p).map_err(|e| format!("--rule-file {p}: bad glob: {e}"))?;
        for entry in paths {
            let path = entry.map_err(|e| format!("--rule-file {p}: {e}"))?;
            if path.is_file() {
                out.insert(path);
            }
        }
    }
    Ok(out.into_iter().collect())
}

/// Reads and checks the rule files; `default_interval_ms` is `--eval-interval`. All errors of all
/// files are reported together, one per line.
pub fn load_files(files: &[PathBuf], default_interval_ms: i64) -> Result<Vec<GroupSpec>, String> {
    let mut groups = Vec::new();
    let mut errors = Vec::new();
    for f in files {
        let name = f.display().to_string();
        match std::fs::read_to_string(f) {
            Ok(text) => match parse_file(&name, &text, default_interval_ms) {
                Ok(g) => groups.extend(g),
                Err(e) => errors.extend(e),
            },
            Err(e) => errors.push(format!("{name}: cannot read: {e}")),
        }
    }
    if errors.is_empty() { Ok(groups) } else { Err(errors.join("\n")) }
}

fn valid_metric_name(s: &str) -> bool {
    let mut cs = s.chars();
    matches!(cs.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && cs.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn duration(field: &str, v: &Option<String>) -> Result<i64, String> {
    match v {
        None => Ok(0),
        Some(s) => engine::duration::parse_prometheus_duration(s.trim())
            .filter(|ms| *ms >= 0)
            .ok_or_else(|| format!("{field}: not a valid duration: {s:?}")),
    }
}

/// Parses one file's text; `file` names it in the errors.
pub fn parse_file(file: &str, text: &str, default_interval_ms: i64) -> Result<Vec<GroupSpec>, Vec<String>> {
    let raw: RawFile = if text.trim().is_empty() {
        RawFile { groups: vec![] }
    } else {
        serde_saphyr::from_str(text).map_err(|e| vec![format!("{file}: {e}")])?
    };
    let mut errors = Vec::new();
    let mut names = BTreeSet::new();
    let mut out = Vec::new();
    for g in raw.groups {
        let at = format!("{file}: group {:?}", g.name);
        if g.name.is_empty() {
            errors.push(format!("{file}: Groupname must not be empty"));
        }
        if !names.insert(g.name.clone()) {
            errors.push(format!("{at}: groupname is repeated in the same file"));
        }
        let interval_ms = match duration("interval", &g.interval) {
            Ok(0) => default_interval_ms,
            Ok(ms) => ms,
            Err(e) => {
                errors.push(format!("{at}: {e}"));
                default_interval_ms
            }
        };
        let query_offset_ms = duration("query_offset", &g.query_offset).unwrap_or_else(|e| {
            errors.push(format!("{at}: {e}"));
            0
        });
        let mut rules = Vec::new();
        for (i, r) in g.rules.into_iter().enumerate() {
            let name = if r.alert.is_empty() { &r.record } else { &r.alert };
            let rat = format!("{at}, rule {} ({name:?})", i + 1);
            match check_rule(r) {
                Ok(rule) => rules.push(rule),
                Err(es) => errors.extend(es.into_iter().map(|e| format!("{rat}: {e}"))),
            }
        }
        out.push(GroupSpec {
            file: file.to_string(),
            name: g.name,
            interval_ms,
            query_offset_ms,
            limit: g.limit,
            rules,
        });
    }
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}

fn check_rule(r: RawRule) -> Result<RuleSpec, Vec<String>> {
    let mut errs = Vec::new();
    match (r.record.is_empty(), r.alert.is_empty()) {
        (false, false) => errs.push("only one of 'record' and 'alert' must be set".to_string()),
        (true, true) => errs.push("one of 'record' or 'alert' must be set".to_string()),
        _ => {}
    }
    if r.expr.is_empty() {
        errs.push("field 'expr' must be set in rule".into());
    } else if let Err(e) = crate::planner::parse(&r.expr) {
        errs.push(format!("could not parse expression: {e}"));
    }
    let for_ms = duration("for", &r.for_).unwrap_or_else(|e| {
        errs.push(e);
        0
    });
    let keep_firing_for_ms = duration("keep_firing_for", &r.keep_firing_for).unwrap_or_else(|e| {
        errs.push(e);
        0
    });
    if !r.record.is_empty() {
        if !r.annotations.is_empty() {
            errs.push("invalid field 'annotations' in recording rule".into());
        }
        if for_ms != 0 {
            errs.push("invalid field 'for' in recording rule".into());
        }
        if keep_firing_for_ms != 0 {
            errs.push("invalid field 'keep_firing_for' in recording rule".into());
        }
        if !valid_metric_name(&r.record) {
            errs.push(format!("invalid recording rule name: {}", r.record));
        }
    }
    let is_alert = !r.alert.is_empty();
    let mut labels = BTreeMap::new();
    for (k, v) in &r.labels {
        if !valid_label_name(k) || k == "__name__" {
            errs.push(format!("invalid label name: {k}"));
        }
        let parsed = if is_alert {
            RuleTemplate::parse(v).map_err(|e| format!("label {k}: template: {e}"))
        } else {
            Ok(RuleTemplate::literal(v))
        };
        match parsed {
            Ok(t) => {
                labels.insert(k.clone(), t);
            }
            Err(e) => errs.push(e),
        }
    }
    let mut annotations = BTreeMap::new();
    for (k, v) in &r.annotations {
        if !valid_label_name(k) {
            errs.push(format!("invalid annotation name: {k}"));
        }
        match RuleTemplate::parse(v) {
            Ok(t) => {
                annotations.insert(k.clone(), t);
            }
            Err(e) => errs.push(format!("annotation {k}: template: {e}")),
        }
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    let kind = if is_alert {
        RuleKind::Alerting { alert: r.alert, for_ms, keep_firing_for_ms, annotations }
    } else {
        RuleKind::Recording { record: r.record }
    };
    Ok(RuleSpec { kind, expr: r.expr, labels })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const GOOD: &str = r#"
groups:
  - name: node
    interval: 30s
    limit: 10
    rules:
      - record: job:up:sum
        expr: sum by (job) (up)
        labels:
          team: infra
      - alert: InstanceDown
        expr: up == 0
        for: 5m
        keep_firing_for: 1m
        labels:
          severity: "{{ if eq $labels.job \"db\" }}page{{ else }}ticket{{ end }}"
        annotations:
          summary: "{{ $labels.instance }} down ({{ $value | humanize }})"
  - name: other
    query_offset: 1m
    rules:
      - record: x
        expr: vector(1)
"#;

    #[test]
    fn parses_groups_and_rules() {
        let gs = parse_file("a.yml", GOOD, 60_000).unwrap();
        assert_eq!(gs.len(), 2);
        assert_eq!((gs[0].name.as_str(), gs[0].interval_ms, gs[0].limit), ("node", 30_000, 10));
        assert_eq!((gs[1].interval_ms, gs[1].query_offset_ms), (60_000, 60_000));
        assert_eq!(gs[0].rules[0].name(), "job:up:sum");
        let RuleKind::Alerting { for_ms, keep_firing_for_ms, annotations, .. } = &gs[0].rules[1].kind else { panic!() };
        assert_eq!((*for_ms, *keep_firing_for_ms), (300_000, 60_000));
        assert!(annotations["summary"].text().contains("humanize"));
    }

    #[test]
    fn errors_name_file_group_and_rule() {
        let cases = [
            (
                "groups:\n- name: g\n  rules:\n  - record: a\n    alert: b\n    expr: up\n",
                "only one of 'record' and 'alert'",
            ),
            ("groups:\n- name: g\n  rules:\n  - expr: up\n", "one of 'record' or 'alert' must be set"),
            ("groups:\n- name: g\n  rules:\n  - record: a\n", "field 'expr' must be set"),
            ("groups:\n- name: g\n  rules:\n  - record: a\n    expr: sum(\n", "could not parse expression"),
            ("groups:\n- name: g\n  rules:\n  - record: a-b\n    expr: up\n", "invalid recording rule name: a-b"),
            ("groups:\n- name: g\n  rules:\n  - record: a\n    expr: up\n    for: 1m\n", "invalid field 'for'"),
            (
                "groups:\n- name: g\n  rules:\n  - alert: a\n    expr: up\n    labels:\n      1x: y\n",
                "invalid label name: 1x",
            ),
            (
                "groups:\n- name: g\n  rules:\n  - alert: a\n    expr: up\n    annotations:\n      s: '{{ $x'\n",
                "annotation s: template",
            ),
            ("groups:\n- name: g\n  rules:\n  - alert: a\n    expr: up\n    for: soon\n", "for: not a valid duration"),
            ("groups:\n- name: g\n  rules:\n  - alert: a\n    expr: up\n    fro: 1m\n", "fro"),
            ("groups:\n- name: g\n  rules: []\n- name: g\n  rules: []\n", "repeated"),
            ("groups:\n- rules: []\n", "Groupname must not be empty"),
        ];
        for (text, want) in cases {
            let errs = parse_file("r.yml", text, 60_000).unwrap_err().join("\n");
            assert!(errs.contains(want), "{want:?} not in {errs}");
            assert!(errs.starts_with("r.yml"), "{errs}");
        }
        let errs = parse_file("r.yml", cases[4].0, 60_000).unwrap_err().join("\n");
        assert!(errs.contains(r#"group "g", rule 1 ("a-b")"#), "{errs}");
    }
}
