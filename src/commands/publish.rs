//! `publish`: a task, its reward moved from the publisher's wallet into
//! escrow (gift first, then earned).

use super::{Ctx, Fields, caller_owner, limits};
use crate::error::DomainError;
use serde::{Deserialize, Serialize};
use taskledger_events::{Event, RuleKind, TaskId, TaskPublished, TaskSpec, Verification};
use taskledger_projections::{State, money, reputation::REPUTATION_MAX};

/// The largest compiled size of an `auto_rules` regex.
pub const REGEX_COMPILED_BYTES_MAX: usize = 256 * 1024;

/// An `auto_rules` pattern compiled as publish checks it and verification
/// runs it: the `regex` crate (linear time), with size limits.
pub fn rule_regex(pattern: &str) -> Result<regex::Regex, regex::Error> {
    regex::RegexBuilder::new(pattern)
        .size_limit(REGEX_COMPILED_BYTES_MAX)
        .dfa_size_limit(REGEX_COMPILED_BYTES_MAX)
        .build()
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Publish {
    pub task_id: TaskId,
    pub spec: TaskSpec,
}

impl Publish {
    pub fn decide(&self, state: &State, ctx: Ctx<'_>) -> Result<Vec<Event>, DomainError> {
        let publisher = caller_owner(state, ctx)?;
        validate_spec(&self.spec, ctx.now_ms)?;
        if state.tasks.contains_key(&self.task_id) {
            return Err(DomainError::Conflict(
                "task id already in use; retry".into(),
            ));
        }
        let transfers = money::publish(publisher, self.task_id, self.spec.reward).ok_or(
            DomainError::InsufficientCredits {
                needed: self.spec.reward,
                available: publisher.wallet.spendable(),
            },
        )?;
        Ok(vec![Event::TaskPublished(TaskPublished {
            task_id: self.task_id,
            publisher_id: publisher.id,
            spec: self.spec.clone(),
            transfers,
        })])
    }
}

/// Every field of a task spec, all problems reported together.
pub fn validate_spec(spec: &TaskSpec, now_ms: u64) -> Result<(), DomainError> {
    let mut f = Fields::default();
    f.text(&spec.title, "title", true, limits::TITLE_CHARS_MAX);
    f.text(
        &spec.description,
        "description",
        false,
        limits::DESCRIPTION_CHARS_MAX,
    );
    f.text(&spec.task_type, "type", true, limits::TASK_TYPE_CHARS_MAX);
    f.check(
        (1..=limits::REWARD_MAX).contains(&spec.reward),
        "reward_credits",
        format!("must be 1..={}", limits::REWARD_MAX),
    );
    f.json(
        spec.requirements.as_deref(),
        "requirements",
        limits::TASK_JSON_BYTES_MAX,
    );
    f.json(
        spec.input_data.as_deref(),
        "input_data",
        limits::TASK_JSON_BYTES_MAX,
    );
    if let Some(d) = spec.deadline_ms {
        f.check(d > now_ms, "deadline", "must be in the future");
        f.check(
            d <= now_ms.saturating_add(limits::DEADLINE_AHEAD_MS_MAX),
            "deadline",
            "must be within a year",
        );
    }
    f.check(
        (1..=10).contains(&spec.max_executors),
        "max_executors",
        "must be 1..=10",
    );
    f.check(
        spec.tags.len() <= limits::TAGS_MAX,
        "tags",
        format!("at most {} tags", limits::TAGS_MAX),
    );
    for tag in &spec.tags {
        f.text(tag, "tags", true, limits::TAG_CHARS_MAX);
    }
    f.check(
        spec.min_reputation <= REPUTATION_MAX,
        "min_reputation",
        "must be 0..=10",
    );
    match &spec.verification {
        Verification::Manual => {}
        Verification::AutoRules { rules } => {
            f.check(
                !rules.is_empty(),
                "verification.rules",
                "auto_rules needs at least one rule",
            );
            f.check(
                rules.len() <= limits::RULES_MAX,
                "verification.rules",
                format!("at most {} rules", limits::RULES_MAX),
            );
            for (i, rule) in rules.iter().enumerate() {
                let field = format!("verification.rules[{i}]");
                f.text(&rule.value, &field, false, limits::RULE_VALUE_CHARS_MAX);
                match rule.kind {
                    RuleKind::MinLength => f.check(
                        rule.value.parse::<u64>().is_ok(),
                        &field,
                        "min_length needs a whole number",
                    ),
                    RuleKind::JsonPathEquals => f.check(
                        rule.path.as_deref().is_some_and(|p| !p.trim().is_empty()),
                        &field,
                        "json_path_equals needs a path",
                    ),
                    RuleKind::Regex => f.check(
                        rule_regex(&rule.value).is_ok(),
                        &field,
                        "not a valid regex within the size limit",
                    ),
                    RuleKind::Contains | RuleKind::NotContains => {
                        f.check(!rule.value.is_empty(), &field, "needs a value")
                    }
                }
            }
        }
        Verification::AutoTests {
            tests,
            hidden_tests,
            ..
        } => {
            f.check(
                !tests.trim().is_empty(),
                "verification.tests",
                "must not be empty",
            );
            let size = tests.len() + hidden_tests.as_ref().map_or(0, String::len);
            f.check(
                size <= limits::TESTS_BYTES_MAX,
                "verification.tests",
                format!("at most {} bytes", limits::TESTS_BYTES_MAX),
            );
        }
        Verification::AutoLlm {
            rubric,
            pass_threshold,
            hidden_rubric,
        } => {
            f.text(
                rubric,
                "verification.rubric",
                true,
                limits::RUBRIC_CHARS_MAX,
            );
            if let Some(h) = hidden_rubric {
                f.text(
                    h,
                    "verification.hidden_rubric",
                    false,
                    limits::RUBRIC_CHARS_MAX,
                );
            }
            f.check(
                *pass_threshold <= REPUTATION_MAX,
                "verification.pass_threshold",
                "must be 0..=10",
            );
        }
    }
    f.finish()
}

#[cfg(test)]
mod tests {
    use crate::commands::testkit::World;
    use taskledger_events::{Rule, RuleKind, Verification};

    #[test]
    fn the_reward_is_escrowed_gift_first() {
        // given alice with 1000 gift and 300 earned
        let mut w = World::new();
        let alice = w.owner("alice");
        w.give_earned(alice, 300);
        // when she publishes a task worth 1100
        let task = w.publish(alice, 1100).unwrap();
        // then escrow holds 1000 gift and 100 earned, and her wallet the rest
        let t = &w.state.tasks[&task];
        assert_eq!((t.escrow_gift, t.escrow_earned), (1000, 100));
        let wallet = w.state.owners[&alice].wallet;
        assert_eq!((wallet.gift, wallet.earned), (0, 200));
    }

    #[test]
    fn a_reward_the_wallet_cannot_cover_is_refused_with_402() {
        let mut w = World::new();
        let alice = w.owner("alice");
        let err = w.publish(alice, 1001).unwrap_err();
        assert_eq!((err.code(), err.status()), ("insufficient_credits", 402));
        assert_eq!(w.state.owners[&alice].wallet.gift, 1000);
        assert!(w.state.tasks.is_empty());
    }

    #[test]
    fn empty_rules_and_bad_fields_are_all_named() {
        let mut w = World::new();
        let alice = w.owner("alice");
        let mut spec = w.spec(0);
        spec.title = String::new();
        spec.max_executors = 11;
        spec.verification = Verification::AutoRules { rules: vec![] };
        let err = w.publish_spec(alice, spec).unwrap_err();
        let crate::error::DomainError::Validation(fields) = err else {
            panic!()
        };
        let names: Vec<_> = fields.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(
            names,
            [
                "title",
                "reward_credits",
                "max_executors",
                "verification.rules"
            ]
        );
    }

    #[test]
    fn an_invalid_regex_is_refused() {
        let mut w = World::new();
        let alice = w.owner("alice");
        let mut spec = w.spec(10);
        spec.verification = Verification::AutoRules {
            rules: vec![Rule {
                kind: RuleKind::Regex,
                value: "(".into(),
                path: None,
                hidden: false,
            }],
        };
        assert_eq!(
            w.publish_spec(alice, spec).unwrap_err().code(),
            "validation_failed"
        );
    }

    #[test]
    fn agents_cannot_publish() {
        let mut w = World::new();
        let alice = w.owner("alice");
        let key = w.agent(alice);
        let spec = w.spec(10);
        let err = w.run_as_agent_publish(key, spec).unwrap_err();
        assert_eq!(err.code(), "forbidden");
    }
}
