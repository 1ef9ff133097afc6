//! Prometheus relabelling (`relabel_configs`): parsing the YAML list and applying it to a label set.
//!
//! Used where Thanos takes a relabel configuration, e.g. the store gateway's
//! `--selector.relabel-config` that shards a bucket's blocks between gateways: each block's external
//! labels plus `__block_id` (its ULID) go through the rules, and the block is served only when the
//! rules keep it.
//!
//! ```text
//!   - action: hashmod            labels ──► rule 1 ──► rule 2 ──► ... ──► Some(labels) | None (dropped)
//!     source_labels: [__block_id]
//!     modulus: 3
//!     target_label: shard
//!   - action: keep
//!     source_labels: [shard]
//!     regex: "1"
//! ```
//!
//! Semantics as Prometheus's: every action (`replace`, `keep`, `drop`, `keepequal`, `dropequal`,
//! `hashmod`, `labelmap`, `labeldrop`, `labelkeep`, `lowercase`, `uppercase`), the defaults
//! (`separator: ";"`, `regex: "(.*)"`, `replacement: "$1"`, `action: replace`), regexes anchored at
//! both ends, `hashmod` as the big-endian last 8 bytes of the MD5 of the joined source values
//! modulo `modulus`, and the same validation errors at load time.

use std::sync::LazyLock;

use md5::{Digest, Md5};
use regex::Regex;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::labels::{Labels, valid_label_name};

/// The label a block selector sees its block's ULID under (as Thanos's `__block_id`).
pub const BLOCK_ID_LABEL: &str = "__block_id";

/// What a relabel rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Writes the regex-expanded replacement into the (expanded) target label.
    Replace,
    /// Drops the label set unless the joined source values match.
    Keep,
    /// Drops the label set when the joined source values match.
    Drop,
    /// Drops the label set unless the target label equals the joined source values.
    KeepEqual,
    /// Drops the label set when the target label equals the joined source values.
    DropEqual,
    /// Sets the target label to the hash of the joined source values modulo `modulus`.
    HashMod,
    /// Copies every label whose name matches to the name given by the replacement.
    LabelMap,
    /// Removes every label whose name matches.
    LabelDrop,
    /// Removes every label whose name does not match.
    LabelKeep,
    /// Sets the target label to the lower-cased joined source values.
    Lowercase,
    /// Sets the target label to the upper-cased joined source values.
    Uppercase,
}

impl Action {
    fn parse(s: &str) -> Option<Action> {
        Some(match s.to_ascii_lowercase().as_str() {
            "replace" => Action::Replace,
            "keep" => Action::Keep,
            "drop" => Action::Drop,
            "keepequal" => Action::KeepEqual,
            "dropequal" => Action::DropEqual,
            "hashmod" => Action::HashMod,
            "labelmap" => Action::LabelMap,
            "labeldrop" => Action::LabelDrop,
            "labelkeep" => Action::LabelKeep,
            "lowercase" => Action::Lowercase,
            "uppercase" => Action::Uppercase,
            _ => return None,
        })
    }
    fn name(self) -> &'static str {
        match self {
            Action::Replace => "replace",
            Action::Keep => "keep",
            Action::Drop => "drop",
            Action::KeepEqual => "keepequal",
            Action::DropEqual => "dropequal",
            Action::HashMod => "hashmod",
            Action::LabelMap => "labelmap",
            Action::LabelDrop => "labeldrop",
            Action::LabelKeep => "labelkeep",
            Action::Lowercase => "lowercase",
            Action::Uppercase => "uppercase",
        }
    }
}

/// One rule as written in YAML; absent fields take Prometheus's defaults.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    source_labels: Option<Vec<String>>,
    separator: Option<String>,
    regex: Option<String>,
    modulus: Option<u64>,
    target_label: Option<String>,
    replacement: Option<String>,
    action: Option<String>,
}

/// A validated relabel rule.
#[derive(Debug, Clone)]
pub struct Rule {
    source_labels: Vec<String>,
    separator: String,
    regex: Regex,
    regex_is_default: bool,
    modulus: u64,
    target_label: String,
    replacement: String,
    action: Action,
}

/// An ordered list of relabel rules, applied one after the other.
#[derive(Debug, Clone, Default)]
pub struct RelabelConfig {
    rules: Vec<Rule>,
}

const DEFAULT_REGEX: &str = "(.*)";
const DEFAULT_REPLACEMENT: &str = "$1";
const DEFAULT_SEPARATOR: &str = ";";

/// A target or labelmap replacement with `$n`/`${name}` references, as Prometheus's `relabelTarget`
/// accepts: letters, `_`, and `$`-references, then word characters.
fn valid_template_target(s: &str) -> bool {
    // Prometheus's relabelTarget: ^(?:(?:[a-zA-Z_]|\$(?:\{\w+\}|\w+))+\w*)+$
    static TARGET: LazyLock<Option<Regex>> =
        LazyLock::new(|| Regex::new(r"^(?:(?:[a-zA-Z_]|\$(?:\{\w+\}|\w+))+\w*)+$").ok());
    TARGET.as_ref().is_some_and(|re| re.is_match(s))
}

impl RelabelConfig {
    /// Parses a YAML list of relabel rules (the content of Thanos's `--selector.relabel-config`);
    /// `origin` names the flag or file in errors. Empty content means no rules.
    ///
    /// ```
    /// use engine::relabel::RelabelConfig;
    /// let cfg = RelabelConfig::parse("- action: keep\n  source_labels: [zone]\n  regex: eu.*\n", "inline").unwrap();
    /// assert!(cfg.process(&engine::Labels::from_pairs([("zone", "eu-1")])).is_some());
    /// assert!(cfg.process(&engine::Labels::from_pairs([("zone", "us-1")])).is_none());
    /// ```
    pub fn parse(yaml: &str, origin: &str) -> Result<RelabelConfig> {
        let bad = |reason: String| Error::BadConfig { origin: origin.to_string(), reason };
        if yaml.trim().is_empty() {
            return Ok(RelabelConfig::default());
        }
        let raw: Option<Vec<RawRule>> = serde_saphyr::from_str(yaml).map_err(|e| bad(e.to_string()))?;
        let rules = raw
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, r)| Rule::validate(r).map_err(|e| bad(format!("rule {}: {e}", i + 1))))
            .collect::<Result<Vec<_>>>()?;
        Ok(RelabelConfig { rules })
    }

    /// True when there are no rules (every label set is kept unchanged).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Applies the rules in order: `None` when a rule drops the set or the result has no labels
    /// left (an empty result counts as dropped, as in Thanos's block selector), else the relabelled
    /// set.
    pub fn process(&self, labels: &Labels) -> Option<Labels> {
        let mut out = labels.clone();
        for rule in &self.rules {
            if !rule.apply(&mut out) {
                return None;
            }
        }
        (!out.is_empty()).then_some(out)
    }
}

impl Rule {
    fn validate(r: RawRule) -> std::result::Result<Rule, String> {
        let action = match r.action.as_deref() {
            None => Action::Replace,
            Some("") => return Err("relabel action cannot be empty".into()),
            Some(a) => Action::parse(a).ok_or_else(|| format!("unknown relabel action {a:?}"))?,
        };
        let regex_src = r.regex.clone().unwrap_or_else(|| DEFAULT_REGEX.to_string());
        let regex =
            Regex::new(&format!("^(?:{regex_src})$")).map_err(|e| format!("invalid regex {regex_src:?}: {e}"))?;
        let regex_is_default = r.regex.is_none() || regex_src == DEFAULT_REGEX;
        let separator = r.separator.clone().unwrap_or_else(|| DEFAULT_SEPARATOR.to_string());
        let replacement = r.replacement.clone().unwrap_or_else(|| DEFAULT_REPLACEMENT.to_string());
        let target_label = r.target_label.clone().unwrap_or_default();
        let modulus = r.modulus.unwrap_or(0);
        let name = action.name();
        if modulus == 0 && action == Action::HashMod {
            return Err("relabel configuration for hashmod requires non-zero modulus".into());
        }
        let needs_target = matches!(
            action,
            Action::Replace
                | Action::HashMod
                | Action::Lowercase
                | Action::Uppercase
                | Action::KeepEqual
                | Action::DropEqual
        );
        if needs_target && target_label.is_empty() {
            return Err(format!("relabel configuration for {name} action requires 'target_label' value"));
        }
        let bad_target = || format!("{target_label:?} is invalid 'target_label' for {name} action");
        if action == Action::Replace {
            let ok = if target_label.contains('$') {
                valid_template_target(&target_label)
            } else {
                valid_label_name(&target_label)
            };
            if !ok {
                return Err(bad_target());
            }
        }
        if matches!(
            action,
            Action::Lowercase | Action::Uppercase | Action::KeepEqual | Action::DropEqual | Action::HashMod
        ) && !valid_label_name(&target_label)
        {
            return Err(bad_target());
        }
        if matches!(action, Action::Lowercase | Action::Uppercase | Action::KeepEqual | Action::DropEqual)
            && replacement != DEFAULT_REPLACEMENT
        {
            return Err(format!("'replacement' can not be set for {name} action"));
        }
        if action == Action::LabelMap && !valid_template_target(&replacement) {
            return Err(format!("{replacement:?} is invalid 'replacement' for {name} action"));
        }
        if matches!(action, Action::KeepEqual | Action::DropEqual)
            && (!regex_is_default
                || modulus != 0
                || separator != DEFAULT_SEPARATOR
                || replacement != DEFAULT_REPLACEMENT)
        {
            return Err(format!("{name} action requires only 'source_labels' and `target_label`, and no other fields"));
        }
        if matches!(action, Action::LabelDrop | Action::LabelKeep)
            && (r.source_labels.is_some()
                || !target_label.is_empty()
                || modulus != 0
                || separator != DEFAULT_SEPARATOR
                || replacement != DEFAULT_REPLACEMENT)
        {
            return Err(format!("{name} action requires only 'regex', and no other fields"));
        }
        Ok(Rule {
            source_labels: r.source_labels.unwrap_or_default(),
            separator,
            regex,
            regex_is_default,
            modulus,
            target_label,
            replacement,
            action,
        })
    }

    /// Applies the rule (setting a label to "" removes it); false when it drops the label set.
    fn apply(&self, lb: &mut Labels) -> bool {
        let get = |lb: &Labels, n: &str| lb.get(n).unwrap_or_default().to_string();
        let val = self.source_labels.iter().map(|n| get(lb, n)).collect::<Vec<_>>().join(&self.separator);
        match self.action {
            Action::Drop => return !self.regex.is_match(&val),
            Action::Keep => return self.regex.is_match(&val),
            Action::DropEqual => return get(lb, &self.target_label) != val,
            Action::KeepEqual => return get(lb, &self.target_label) == val,
            Action::Replace => {
                if val.is_empty()
                    && self.regex_is_default
                    && !self.target_label.contains('$')
                    && !self.replacement.contains('$')
                {
                    lb.set(&self.target_label, &self.replacement);
                    return true;
                }
                let Some(caps) = self.regex.captures(&val) else { return true };
                let mut target = String::new();
                caps.expand(&self.target_label, &mut target);
                if !valid_label_name(&target) {
                    return true;
                }
                let mut res = String::new();
                caps.expand(&self.replacement, &mut res);
                lb.set(&target, &res);
            }
            Action::Lowercase => lb.set(&self.target_label, &val.to_lowercase()),
            Action::Uppercase => lb.set(&self.target_label, &val.to_uppercase()),
            Action::HashMod => {
                let digest = Md5::digest(val.as_bytes());
                let mut last8 = [0u8; 8];
                last8.copy_from_slice(&digest[8..16]);
                lb.set(&self.target_label, &(u64::from_be_bytes(last8) % self.modulus).to_string());
            }
            Action::LabelMap => {
                for l in lb.clone().iter().filter(|l| self.regex.is_match(&l.name)) {
                    lb.set(&self.regex.replace_all(&l.name, self.replacement.as_str()), &l.value);
                }
            }
            Action::LabelDrop | Action::LabelKeep => {
                let keep_matching = self.action == Action::LabelKeep;
                let gone: Vec<String> = lb
                    .iter()
                    .filter(|l| self.regex.is_match(&l.name) != keep_matching)
                    .map(|l| l.name.clone())
                    .collect();
                for name in gone {
                    lb.remove(&name);
                }
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn l(pairs: &[(&str, &str)]) -> Labels {
        Labels::from_pairs(pairs.iter().copied())
    }

    #[test]
    fn hashmod_matches_prometheus_values() {
        // Expected values computed with Python: int.from_bytes(md5(b"...").digest()[8:], "big") % m
        // md5("a") = 0cc175b9c0f1b6a831c399e269772661 -> last 8 bytes 31c399e269772661
        let expected_a = 0x31c3_99e2_6977_2661_u64 % 7;
        let cfg =
            RelabelConfig::parse("- action: hashmod\n  source_labels: [x]\n  modulus: 7\n  target_label: shard\n", "t")
                .unwrap();
        let out = cfg.process(&l(&[("x", "a")])).unwrap();
        assert_eq!(out.get("shard"), Some(expected_a.to_string().as_str()));
    }

    #[test]
    fn keep_drop_and_anchoring() {
        let keep = RelabelConfig::parse("- action: keep\n  source_labels: [zone]\n  regex: eu\n", "t").unwrap();
        assert!(keep.process(&l(&[("zone", "eu")])).is_some());
        // anchored: "eu" does not match "eu-1"
        assert!(keep.process(&l(&[("zone", "eu-1")])).is_none());
        let drop =
            RelabelConfig::parse("- action: drop\n  source_labels: [a, b]\n  separator: '/'\n  regex: x/y\n", "t")
                .unwrap();
        assert!(drop.process(&l(&[("a", "x"), ("b", "y")])).is_none());
        assert!(drop.process(&l(&[("a", "x"), ("b", "z")])).is_some());
    }

    #[test]
    fn replace_with_captures_and_deletion() {
        let cfg = RelabelConfig::parse(
            "- source_labels: [instance]\n  regex: '(.*):(\\d+)'\n  target_label: host\n  replacement: '${1}'\n\
             - source_labels: [nothing]\n  regex: '(.*)'\n  target_label: instance\n  replacement: '$1'\n",
            "t",
        )
        .unwrap();
        let out = cfg.process(&l(&[("instance", "node1:9100"), ("job", "n")])).unwrap();
        assert_eq!(out.get("host"), Some("node1"));
        // an empty replacement result deletes the target label
        assert_eq!(out.get("instance"), None);
    }

    #[test]
    fn labelmap_labeldrop_labelkeep_case_equal() {
        let cfg = RelabelConfig::parse(
            "- action: labelmap\n  regex: 'meta_(.+)'\n  replacement: '$1'\n\
             - action: labeldrop\n  regex: 'meta_.*'\n\
             - action: uppercase\n  source_labels: [zone]\n  target_label: zone_up\n\
             - action: keepequal\n  source_labels: [zone]\n  target_label: region\n",
            "t",
        )
        .unwrap();
        let out = cfg.process(&l(&[("meta_zone", "eu"), ("zone", "eu"), ("region", "eu")])).unwrap();
        assert_eq!(out.to_string(), r#"{region="eu", zone="eu", zone_up="EU"}"#);
        assert!(cfg.process(&l(&[("zone", "eu"), ("region", "us")])).is_none());
        let keep = RelabelConfig::parse("- action: labelkeep\n  regex: 'z.*'\n", "t").unwrap();
        assert_eq!(keep.process(&l(&[("zone", "a"), ("b", "c")])).unwrap().to_string(), r#"{zone="a"}"#);
    }

    #[test]
    fn validation_errors_as_prometheus() {
        let err = |y: &str| RelabelConfig::parse(y, "--selector.relabel-config").unwrap_err().to_string();
        assert!(err("- action: hashmod\n  target_label: s\n").contains("requires non-zero modulus"));
        assert!(err("- action: replace\n").contains("requires 'target_label' value"));
        assert!(err("- action: bogus\n").contains("unknown relabel action \"bogus\""));
        assert!(err("- action: keep\n  regex: '('\n").contains("invalid regex"));
        assert!(err("- action: labeldrop\n  regex: a\n  source_labels: [x]\n").contains("requires only 'regex'"));
        assert!(
            err("- action: lowercase\n  source_labels: [x]\n  target_label: '1x'\n").contains("invalid 'target_label'")
        );
        assert!(err("- action: keep\n  unknown_field: 1\n").contains("--selector.relabel-config"));
        assert!(RelabelConfig::parse("", "t").unwrap().is_empty());
    }

    #[test]
    fn template_target_regex_compiles() {
        assert!(valid_template_target("${1}_x"));
        assert!(!valid_template_target("1abc"));
    }
}
