//! Arbitrary (rules, result, metadata) through `verify::rules::evaluate` and
//! the publish-side checks (`commands::rule_regex`, `validate_spec`). Never
//! panics; the score is 0..=1000 and is 1000 x passed / total; accepted iff
//! every rule passed (and there is at least one); a hidden rule's value and
//! path never appear in the detail.
//!
//! Input: segments split on 0x00: the result, the metadata (empty: none),
//! then one segment per rule: a flag byte (bits 0-2: kind mod 5, bit 3:
//! hidden, bit 4: has a path), then the value, then 0x01 and the path.
//! Text is read as lossy UTF-8. `fuzz/seeds/rules_engine` has examples.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use taskledger::commands::{rule_regex, validate_spec};
use taskledger::verify::rules::evaluate;
use taskledger_events::{Rule, RuleKind, TaskSpec, Verification};

/// More rules than publish allows (50), to reach the engine's edges.
const FUZZ_RULES_MAX: usize = 64;

/// The only texts a hidden rule's entry may give as its reason: fixed
/// strings, so nothing of the rule's value can reach the agent.
const FIXED_REASONS: &[&str] = &[
    "min_length is not a whole number",
    "the pattern does not compile",
    "no path",
    "result_metadata is missing or not JSON",
    "path not found in result_metadata",
];

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn rule(segment: &[u8]) -> Option<Rule> {
    let (&flags, rest) = segment.split_first()?;
    let kind = match (flags & 7) % 5 {
        0 => RuleKind::Contains,
        1 => RuleKind::NotContains,
        2 => RuleKind::Regex,
        3 => RuleKind::MinLength,
        _ => RuleKind::JsonPathEquals,
    };
    let (value, path) = match rest.iter().position(|b| *b == 1) {
        Some(i) if flags & 16 != 0 => (&rest[..i], Some(text(&rest[i + 1..]))),
        _ => (rest, None),
    };
    Some(Rule {
        kind,
        value: text(value),
        path,
        hidden: flags & 8 != 0,
    })
}

fuzz_target!(|data: &[u8]| {
    let mut segments = data.split(|b| *b == 0);
    let result = text(segments.next().unwrap_or_default());
    let metadata = segments.next().filter(|m| !m.is_empty()).map(text);
    let rules: Vec<Rule> = segments.filter_map(rule).take(FUZZ_RULES_MAX).collect();

    // Publish side: each regex compiles or is refused; the spec check
    // answers either way.
    for r in &rules {
        if r.kind == RuleKind::Regex {
            let _ = rule_regex(&r.value);
        }
    }
    let spec = TaskSpec {
        title: "t".into(),
        description: String::new(),
        task_type: "x".into(),
        reward: 1,
        requirements: None,
        input_data: None,
        deadline_ms: None,
        max_executors: 1,
        tags: vec![],
        min_reputation: 0,
        verification: Verification::AutoRules {
            rules: rules.clone(),
        },
    };
    let _ = validate_spec(&spec, 0);

    let v = evaluate(&rules, &result, metadata.as_deref());
    assert_eq!(v.total, rules.len());
    assert!(v.passed <= v.total);
    assert!(v.score <= 1000, "score {}", v.score);
    let share = (1000 * v.passed).checked_div(v.total).unwrap_or(0);
    assert_eq!(usize::from(v.score), share);
    assert_eq!(v.accepted, v.total > 0 && v.passed == v.total);

    let top = v.detail.as_object().expect("the detail is an object");
    assert!(
        top.keys()
            .all(|k| ["mode", "passed", "total", "rules"].contains(&k.as_str()))
    );
    let entries = v.detail["rules"]
        .as_array()
        .expect("detail lists the rules");
    assert_eq!(entries.len(), rules.len());
    let passed = entries
        .iter()
        .filter(|e| e["passed"] == Value::Bool(true))
        .count();
    assert_eq!(passed, v.passed);
    for (r, entry) in rules.iter().zip(entries) {
        let object = entry.as_object().expect("an entry is an object");
        if !r.hidden {
            continue;
        }
        for key in object.keys() {
            assert!(
                ["index", "type", "passed", "hidden", "reason"].contains(&key.as_str()),
                "a hidden rule's entry carries {key}: {entry}"
            );
        }
        if let Some(reason) = object.get("reason") {
            let reason = reason.as_str().expect("a reason is text");
            assert!(FIXED_REASONS.contains(&reason), "reason {reason:?}");
        }
    }
    // And nowhere else: a long hidden value that no visible rule repeats is
    // absent from the whole detail text.
    let detail_text = v.detail.to_string();
    for r in rules.iter().filter(|r| r.hidden) {
        let visible_repeats = rules.iter().any(|o| {
            !o.hidden
                && (o.value.contains(&r.value)
                    || o.path.as_deref().is_some_and(|p| p.contains(&r.value)))
        });
        let mut fixed =
            FIXED_REASONS
                .iter()
                .chain(&["json_path_equals", "not_contains", "auto_rules"]);
        let fixed_repeats = fixed.any(|f| f.contains(r.value.as_str()));
        if r.value.chars().count() >= 16 && !visible_repeats && !fixed_repeats {
            let escaped = serde_json::to_string(&r.value).expect("a string serializes");
            let inner = &escaped[1..escaped.len() - 1];
            assert!(
                !detail_text.contains(inner),
                "hidden value in {detail_text}"
            );
        }
    }
});
