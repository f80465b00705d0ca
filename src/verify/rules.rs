//! `auto_rules`: contains, not_contains, regex, min_length, json_path_equals.
//!
//! Pure and linear in the size of the submission: regexes run on the
//! `regex` crate (finite automata, no backtracking), compiled exactly as
//! publish checked it (`rule_regex`). Every rule is evaluated (no early exit)
//! so the detail lists each outcome; a hidden rule's value never appears in
//! it, since the agent reads the detail.

use crate::commands::rule_regex;
use serde_json::{Value, json};
use taskledger_events::{Rule, RuleKind};

/// The verdict of a rule list.
#[derive(Clone, Debug, PartialEq)]
pub struct RulesVerdict {
    pub accepted: bool,
    /// Hundredths: 1000 x passed / total.
    pub score: u16,
    pub passed: usize,
    pub total: usize,
    pub feedback: String,
    pub detail: Value,
}

/// Check `result` (and its `result_metadata` JSON text) against `rules`.
pub fn evaluate(rules: &[Rule], result: &str, result_metadata: Option<&str>) -> RulesVerdict {
    let metadata: Option<Value> = result_metadata.and_then(|m| serde_json::from_str(m).ok());
    let mut outcomes = Vec::with_capacity(rules.len());
    let mut passed = 0;
    for (i, rule) in rules.iter().enumerate() {
        let (ok, why) = check(rule, result, metadata.as_ref());
        passed += usize::from(ok);
        let mut o = json!({ "index": i, "type": kind_name(rule.kind), "passed": ok });
        if rule.hidden {
            o["hidden"] = json!(true);
        } else {
            o["value"] = json!(rule.value);
            if let Some(p) = &rule.path {
                o["path"] = json!(p);
            }
        }
        if let Some(why) = why {
            o["reason"] = json!(why);
        }
        outcomes.push(o);
    }
    let total = rules.len();
    // Publish refuses an empty list; if one ever got here, it passes nothing.
    let score = (1000 * passed).checked_div(total).unwrap_or(0) as u16;
    RulesVerdict {
        accepted: total > 0 && passed == total,
        score,
        passed,
        total,
        feedback: format!("auto_rules: {passed} of {total} rules passed"),
        detail: json!({ "mode": "auto_rules", "passed": passed, "total": total, "rules": outcomes }),
    }
}

/// One rule: passed, and why not when that is not obvious from the type.
fn check(rule: &Rule, result: &str, metadata: Option<&Value>) -> (bool, Option<String>) {
    match rule.kind {
        RuleKind::Contains => (result.contains(rule.value.as_str()), None),
        RuleKind::NotContains => (!result.contains(rule.value.as_str()), None),
        RuleKind::MinLength => match rule.value.trim().parse::<u64>() {
            Ok(min) => {
                // Count no further than needed: a 1 MiB result with a small
                // minimum stops early.
                let n = result.chars().take(min as usize).count() as u64;
                (n >= min, None)
            }
            Err(_) => (false, Some("min_length is not a whole number".into())),
        },
        RuleKind::Regex => match rule_regex(&rule.value) {
            Ok(re) => (re.is_match(result), None),
            Err(_) => (false, Some("the pattern does not compile".into())),
        },
        RuleKind::JsonPathEquals => {
            let Some(path) = rule.path.as_deref() else {
                return (false, Some("no path".into()));
            };
            let Some(root) = metadata else {
                return (false, Some("result_metadata is missing or not JSON".into()));
            };
            match lookup(root, path) {
                Some(found) => (json_equals(found, &rule.value), None),
                None => (false, Some("path not found in result_metadata".into())),
            }
        }
    }
}

/// Follow a dotted path (`a.b.0.c`: object keys, or indices into arrays).
/// A leading `$.` or `$` is accepted and ignored.
fn lookup<'v>(root: &'v Value, path: &str) -> Option<&'v Value> {
    let path = path.trim();
    let path = path
        .strip_prefix("$.")
        .or_else(|| path.strip_prefix('$'))
        .unwrap_or(path);
    if path.is_empty() {
        return Some(root);
    }
    path.split('.').try_fold(root, |v, seg| match v {
        Value::Object(m) => m.get(seg),
        Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

/// The rule's value read as JSON (`42`, `true`, `"x"`, `{..}`) equals the
/// found value; a value that is not JSON is compared as a string.
fn json_equals(found: &Value, expected: &str) -> bool {
    match serde_json::from_str::<Value>(expected) {
        Ok(v) if v == *found => true,
        _ => found.as_str() == Some(expected),
    }
}

fn kind_name(kind: RuleKind) -> &'static str {
    match kind {
        RuleKind::Contains => "contains",
        RuleKind::NotContains => "not_contains",
        RuleKind::Regex => "regex",
        RuleKind::MinLength => "min_length",
        RuleKind::JsonPathEquals => "json_path_equals",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rule(kind: RuleKind, value: &str) -> Rule {
        Rule {
            kind,
            value: value.into(),
            path: None,
            hidden: false,
        }
    }

    fn path_rule(path: &str, value: &str) -> Rule {
        Rule {
            path: Some(path.into()),
            ..rule(RuleKind::JsonPathEquals, value)
        }
    }

    #[test]
    fn each_rule_type_passes_and_fails() {
        let meta = Some(r#"{"lang":"rust","n":3,"ok":true,"items":[{"id":"a"}]}"#);
        let cases = [
            (rule(RuleKind::Contains, "fn main"), true),
            (rule(RuleKind::Contains, "class"), false),
            (rule(RuleKind::NotContains, "TODO"), true),
            (rule(RuleKind::NotContains, "main"), false),
            (rule(RuleKind::Regex, r"^fn \w+\(\)"), true),
            (rule(RuleKind::Regex, r"^\d+$"), false),
            (rule(RuleKind::MinLength, "12"), true),
            (rule(RuleKind::MinLength, "13"), false),
            (path_rule("lang", "rust"), true),
            (path_rule("lang", "\"rust\""), true),
            (path_rule("n", "3"), true),
            (path_rule("ok", "true"), true),
            (path_rule("$.items.0.id", "a"), true),
            (path_rule("items.1.id", "a"), false),
            (path_rule("n", "4"), false),
        ];
        for (r, expect) in cases {
            let v = evaluate(std::slice::from_ref(&r), "fn main() {}", meta);
            assert_eq!(v.accepted, expect, "{r:?}");
            assert_eq!(v.score, if expect { 1000 } else { 0 }, "{r:?}");
        }
    }

    #[test]
    fn the_score_is_the_share_of_rules_passed_and_all_must_pass() {
        let rules = [
            rule(RuleKind::Contains, "a"),
            rule(RuleKind::Contains, "b"),
            rule(RuleKind::Contains, "c"),
            rule(RuleKind::Contains, "z"),
        ];
        let v = evaluate(&rules, "abc", None);
        assert!(!v.accepted);
        assert_eq!((v.passed, v.total, v.score), (3, 4, 750));
        assert_eq!(v.feedback, "auto_rules: 3 of 4 rules passed");
        assert_eq!(v.detail["rules"][3]["passed"], json!(false));
    }

    #[test]
    fn hidden_values_stay_out_of_the_detail() {
        let mut secret = rule(RuleKind::Contains, "the-secret-word");
        secret.hidden = true;
        let v = evaluate(&[secret, rule(RuleKind::MinLength, "1")], "x", None);
        let text = v.detail.to_string();
        assert!(!text.contains("the-secret-word"), "{text}");
        assert_eq!(v.detail["rules"][0]["hidden"], json!(true));
        assert_eq!(v.detail["rules"][1]["value"], json!("1"));
    }

    #[test]
    fn json_path_on_missing_or_broken_metadata_fails_with_a_reason() {
        let r = path_rule("a", "1");
        let none = evaluate(std::slice::from_ref(&r), "x", None);
        let broken = evaluate(std::slice::from_ref(&r), "x", Some("{not json"));
        for v in [none, broken] {
            assert!(!v.accepted);
            assert_eq!(
                v.detail["rules"][0]["reason"],
                json!("result_metadata is missing or not JSON")
            );
        }
    }

    #[test]
    fn min_length_counts_characters_not_bytes() {
        let r = rule(RuleKind::MinLength, "3");
        assert!(evaluate(std::slice::from_ref(&r), "héé", None).accepted);
        assert!(!evaluate(std::slice::from_ref(&r), "hé", None).accepted);
    }

    #[test]
    fn a_catastrophic_backtracking_pattern_returns_at_once() {
        // (a+)+$ against a long run of 'a' ending in '!' takes exponential
        // time on a backtracking engine; here it is one linear pass. This
        // test would not finish on such an engine.
        let input = format!("{}!", "a".repeat(1 << 20));
        let v = evaluate(&[rule(RuleKind::Regex, "(a+)+$")], &input, None);
        assert!(!v.accepted);
        let v = evaluate(&[rule(RuleKind::Regex, "^(a|aa)+$")], &input, None);
        assert!(!v.accepted);
    }

    #[test]
    fn an_empty_rule_list_passes_nothing() {
        let v = evaluate(&[], "x", None);
        assert!(!v.accepted);
        assert_eq!(v.score, 0);
    }

    proptest! {
        #[test]
        fn contains_and_not_contains_always_disagree(
            result in ".{0,64}", needle in ".{1,8}"
        ) {
            let rules = [
                rule(RuleKind::Contains, &needle),
                rule(RuleKind::NotContains, &needle),
            ];
            let v = evaluate(&rules, &result, None);
            prop_assert_eq!(v.passed, 1);
            prop_assert_eq!(v.score, 500);
            prop_assert!(!v.accepted);
        }

        #[test]
        fn the_score_never_exceeds_ten_and_matches_the_count(
            picks in proptest::collection::vec(any::<bool>(), 1..20)
        ) {
            let rules: Vec<Rule> = picks
                .iter()
                .map(|p| rule(RuleKind::Contains, if *p { "x" } else { "y" }))
                .collect();
            let v = evaluate(&rules, "x", None);
            let passed = picks.iter().filter(|p| **p).count();
            prop_assert_eq!(v.passed, passed);
            prop_assert_eq!(usize::from(v.score), 1000 * passed / picks.len());
            prop_assert_eq!(v.accepted, passed == picks.len());
        }
    }
}
