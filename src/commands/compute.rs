//! Compute compliance: which compute an agent may sell through the market,
//! the compute tier it earns, and the tier's ranking bonus.
//!
//! Pure: no I/O, no clock, no state. Every place that reads a compute
//! source (register, issue_agent_key, claim, the views, the submissions
//! ranking) goes through [`ComputeSource::parse`], so the rule lives here
//! only.
//!
//! # The declaration
//! One string, `<source>[:<token_plan>]`, stored as is (canonical form) in
//! the existing `compute_source` field of `AccountRegistered` and
//! `AgentKeyIssued`; the event format does not change. The REST API takes
//! the plan in its own `token_plan` body field and joins the two with
//! [`declaration`]; giving the plan inline as well is refused.
//!
//! | source                 | tier | may claim |
//! |------------------------|------|-----------|
//! | `local_model`          | 1    | yes       |
//! | `payg_api_key`         | 2    | yes       |
//! | `token_plan_whitelist` | 2    | yes (needs a plan from [`TOKEN_PLAN_WHITELIST`]) |
//! | `platform_credit`      | 3    | yes       |
//! | `unspecified`          | none | no (`compute_source_required`) |
//!
//! Input is normalised before matching: lower case, every run of
//! characters other than ASCII letters and digits becomes one `_`, leading
//! and trailing `_` dropped (`" Local-Model "` is `local_model`).
//!
//! # Refused: consumer subscriptions
//! A value naming a consumer subscription or an OAuth login (see
//! [`CONSUMER_FAMILIES`]) is refused with 403 `compute_source_forbidden`:
//! those subscriptions' terms do not allow reselling their compute. The
//! check runs first, on the value with every separator removed, so no
//! spelling, case or spacing gets one through. Anything else unknown is
//! 400 `validation_failed` naming the field.

use crate::error::{DomainError, FieldError};

pub const LOCAL_MODEL: &str = "local_model";
pub const PAYG_API_KEY: &str = "payg_api_key";
pub const PLATFORM_CREDIT: &str = "platform_credit";
pub const TOKEN_PLAN_WHITELIST_SOURCE: &str = "token_plan_whitelist";
pub const UNSPECIFIED: &str = "unspecified";

/// Token plans a `token_plan_whitelist` source may name. A whitelist, not
/// a pattern: only these, each a pay-as-you-go or enterprise API plan whose
/// terms let the buyer serve the output to third parties. A plan is added
/// here only after its terms were read; anything else is 400.
pub const TOKEN_PLAN_WHITELIST: &[&str] = &[
    "openai_api",
    "openai_scale_tier",
    "anthropic_api",
    "azure_openai",
    "aws_bedrock",
    "google_vertex_ai",
    "google_gemini_api",
    "mistral_api",
    "deepseek_api",
];

/// Consumer-subscription and OAuth families, each as matched (lower case,
/// separators removed) and as named in the refusal. A declaration that
/// contains any of them, anywhere, is refused.
pub const CONSUMER_FAMILIES: &[(&str, &str)] = &[
    ("oauth", "an OAuth login"),
    ("subscription", "a subscription"),
    ("consumer", "a consumer plan"),
    ("claudepro", "Claude Pro"),
    ("claudemax", "Claude Max"),
    ("claudeteam", "Claude Team"),
    ("claudeai", "a claude.ai login"),
    ("chatgptplus", "ChatGPT Plus"),
    ("chatgptpro", "ChatGPT Pro"),
    ("chatgptteam", "ChatGPT Team"),
    ("chatgptfree", "ChatGPT Free"),
    ("geminiadvanced", "Gemini Advanced"),
    ("googleoneai", "Google One AI"),
    ("copilotpro", "Copilot Pro"),
    ("cursorpro", "Cursor Pro"),
    ("perplexitypro", "Perplexity Pro"),
    ("supergrok", "SuperGrok"),
];

/// The ranking bonus of each tier, in reputation hundredths: tier 1 +2.0,
/// tier 2 +0.5, tier 3 and no tier nothing.
pub const TIER_BONUS_HUNDREDTHS: [(u8, u16); 2] = [(1, 200), (2, 50)];

/// A parsed, allowed compute source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ComputeSource {
    LocalModel,
    PaygApiKey,
    PlatformCredit,
    /// A token plan; always an entry of [`TOKEN_PLAN_WHITELIST`].
    TokenPlan(&'static str),
    /// Declared as unknown: accepted, but such a key cannot claim.
    Unspecified,
}

impl ComputeSource {
    /// Parse a declaration `<source>[:<token_plan>]`. Errors: 403
    /// `compute_source_forbidden` for a consumer subscription, 400
    /// `validation_failed` (field `compute_source` or `token_plan`) for
    /// anything else not allowed.
    pub fn parse(declared: &str) -> Result<ComputeSource, DomainError> {
        if let Some(label) = consumer_family(declared) {
            return Err(DomainError::ComputeSourceForbidden(format!(
                "the compute source names {label}: consumer subscriptions' terms do not \
                 allow reselling their compute, so the market refuses them; declare \
                 local_model, payg_api_key, platform_credit, or token_plan_whitelist \
                 with an allowed token_plan"
            )));
        }
        let (source, plan) = match declared.split_once(':') {
            Some((s, p)) => (normalise(s), Some(p)),
            None => (normalise(declared), None),
        };
        let parsed = match source.as_str() {
            LOCAL_MODEL => ComputeSource::LocalModel,
            PAYG_API_KEY => ComputeSource::PaygApiKey,
            PLATFORM_CREDIT => ComputeSource::PlatformCredit,
            UNSPECIFIED => ComputeSource::Unspecified,
            TOKEN_PLAN_WHITELIST_SOURCE => {
                return match plan {
                    None => Err(invalid(
                        "token_plan",
                        format!(
                            "token_plan_whitelist needs a token_plan, one of {}",
                            TOKEN_PLAN_WHITELIST.join(", ")
                        ),
                    )),
                    Some(p) if p.contains(':') => {
                        Err(invalid("token_plan", "give the token plan once"))
                    }
                    Some(p) => {
                        let p = normalise(p);
                        TOKEN_PLAN_WHITELIST
                            .iter()
                            .copied()
                            .find(|w| *w == p)
                            .map(ComputeSource::TokenPlan)
                            .ok_or_else(|| {
                                invalid(
                                    "token_plan",
                                    format!(
                                        "not a whitelisted token plan; one of {}",
                                        TOKEN_PLAN_WHITELIST.join(", ")
                                    ),
                                )
                            })
                    }
                };
            }
            "" if plan.is_some() => {
                return Err(invalid(
                    "compute_source",
                    "a token_plan needs compute_source token_plan_whitelist",
                ));
            }
            "" => return Err(invalid("compute_source", "must not be empty")),
            _ => {
                return Err(invalid(
                    "compute_source",
                    "unknown compute source; one of local_model, payg_api_key, \
                     platform_credit, token_plan_whitelist (with a token_plan), unspecified",
                ));
            }
        };
        if plan.is_some() {
            return Err(invalid(
                "token_plan",
                "a token_plan goes only with compute_source token_plan_whitelist",
            ));
        }
        Ok(parsed)
    }

    /// The canonical declaration, as stored in the log.
    pub fn canonical(self) -> String {
        match self {
            ComputeSource::TokenPlan(p) => format!("{TOKEN_PLAN_WHITELIST_SOURCE}:{p}"),
            other => other.name().to_owned(),
        }
    }

    /// The source's name without the plan, as the API shows it.
    pub fn name(self) -> &'static str {
        match self {
            ComputeSource::LocalModel => LOCAL_MODEL,
            ComputeSource::PaygApiKey => PAYG_API_KEY,
            ComputeSource::PlatformCredit => PLATFORM_CREDIT,
            ComputeSource::TokenPlan(_) => TOKEN_PLAN_WHITELIST_SOURCE,
            ComputeSource::Unspecified => UNSPECIFIED,
        }
    }

    pub fn token_plan(self) -> Option<&'static str> {
        match self {
            ComputeSource::TokenPlan(p) => Some(p),
            _ => None,
        }
    }

    /// 1 local, 2 pay as you go or a whitelisted plan, 3 platform credit;
    /// none for `unspecified`.
    pub fn tier(self) -> Option<u8> {
        match self {
            ComputeSource::LocalModel => Some(1),
            ComputeSource::PaygApiKey | ComputeSource::TokenPlan(_) => Some(2),
            ComputeSource::PlatformCredit => Some(3),
            ComputeSource::Unspecified => None,
        }
    }

    /// Whether a key with this source may claim tasks.
    pub fn may_claim(self) -> bool {
        self.tier().is_some()
    }
}

/// A stored declaration as the API shows it: the source's name, its token
/// plan and its tier. A value that no longer parses is shown as stored,
/// without a tier.
pub fn describe(stored: &str) -> (String, Option<String>, Option<u8>) {
    match ComputeSource::parse(stored) {
        Ok(s) => (
            s.name().to_owned(),
            s.token_plan().map(str::to_owned),
            s.tier(),
        ),
        Err(_) => (stored.to_owned(), None, None),
    }
}

/// The tier of a stored declaration (none when absent or not allowed).
pub fn tier_of(stored: Option<&str>) -> Option<u8> {
    stored.and_then(|s| ComputeSource::parse(s).ok()?.tier())
}

/// The ranking bonus of a tier, in reputation hundredths.
pub fn tier_bonus_hundredths(tier: Option<u8>) -> u16 {
    TIER_BONUS_HUNDREDTHS
        .iter()
        .find(|(t, _)| Some(*t) == tier)
        .map_or(0, |(_, b)| *b)
}

/// Join the API's two fields into one declaration: `source` alone, or
/// `source:plan` when a plan is given (a missing source stays empty, so
/// the parser names it).
pub fn declaration(source: Option<&str>, token_plan: Option<&str>) -> Option<String> {
    match (source, token_plan) {
        (s, Some(p)) => Some(format!("{}:{p}", s.unwrap_or_default())),
        (Some(s), None) => Some(s.to_owned()),
        (None, None) => None,
    }
}

/// Lower case; each run of characters other than ASCII letters and digits
/// becomes one `_`; no `_` at either end.
pub fn normalise(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('_') {
            out.push('_');
        }
    }
    if out.ends_with('_') {
        out.pop();
    }
    out
}

/// The consumer family `value` names, if any: matched on the lower-case
/// ASCII letters and digits alone, so separators cannot hide one.
fn consumer_family(value: &str) -> Option<&'static str> {
    let squashed: String = value
        .chars()
        .flat_map(char::to_lowercase)
        .filter(char::is_ascii_alphanumeric)
        .collect();
    CONSUMER_FAMILIES
        .iter()
        .find(|(needle, _)| squashed.contains(needle))
        .map(|(_, label)| *label)
}

fn invalid(field: &str, message: impl Into<String>) -> DomainError {
    DomainError::Validation(vec![FieldError::new(field, message)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn code(declared: &str) -> &'static str {
        match ComputeSource::parse(declared) {
            Ok(_) => "ok",
            Err(e) => e.code(),
        }
    }

    fn field(declared: &str) -> String {
        match ComputeSource::parse(declared) {
            Err(DomainError::Validation(f)) => f[0].field.clone(),
            other => panic!("{declared}: {other:?}"),
        }
    }

    #[test]
    fn each_allowed_source_parses_to_its_tier() {
        // given each allowed declaration, when parsed, then its tier and canonical form
        let cases = [
            ("local_model", Some(1), "local_model"),
            ("payg_api_key", Some(2), "payg_api_key"),
            (
                "token_plan_whitelist:anthropic_api",
                Some(2),
                "token_plan_whitelist:anthropic_api",
            ),
            ("platform_credit", Some(3), "platform_credit"),
            ("unspecified", None, "unspecified"),
        ];
        for (declared, tier, canonical) in cases {
            let s = ComputeSource::parse(declared).unwrap();
            assert_eq!(s.tier(), tier, "{declared}");
            assert_eq!(s.canonical(), canonical, "{declared}");
            assert_eq!(s.may_claim(), tier.is_some(), "{declared}");
        }
    }

    #[test]
    fn every_whitelisted_plan_parses_and_round_trips() {
        for plan in TOKEN_PLAN_WHITELIST {
            let s = ComputeSource::parse(&format!("token_plan_whitelist:{plan}")).unwrap();
            assert_eq!(s, ComputeSource::TokenPlan(plan));
            assert_eq!(ComputeSource::parse(&s.canonical()).unwrap(), s);
        }
    }

    #[test]
    fn case_and_spacing_variants_are_the_same_source() {
        // given variants of an allowed value, then they parse to it
        for v in [
            " Local-Model ",
            "LOCAL_MODEL",
            "local  model",
            "Payg API key",
        ] {
            assert!(ComputeSource::parse(v).is_ok(), "{v}");
        }
        assert_eq!(
            ComputeSource::parse("Token Plan Whitelist: AWS-Bedrock").unwrap(),
            ComputeSource::TokenPlan("aws_bedrock")
        );
    }

    #[test]
    fn each_consumer_family_is_forbidden_in_any_spelling() {
        // given values naming a consumer subscription, then 403
        let refused = [
            "oauth",
            "claude_oauth",
            "OAuth token",
            "claude pro",
            "Claude-Max",
            "claude max 20x",
            "claude team",
            "claude.ai",
            "chatgpt plus",
            "ChatGPT_Pro",
            "chatgpt team",
            "chatgpt free",
            "gemini advanced",
            "google one ai premium",
            "copilot pro",
            "cursor pro",
            "perplexity pro",
            "supergrok",
            "my subscription",
            "consumer",
            "C-l-a-u-d-e M-a-x",
            "token_plan_whitelist:claude_max",
            "payg_api_key:chatgpt plus",
        ];
        for v in refused {
            assert_eq!(code(v), "compute_source_forbidden", "{v}");
        }
        let err = ComputeSource::parse("Claude Max").unwrap_err();
        assert_eq!(err.status(), 403);
        assert!(err.to_string().contains("Claude Max"), "{err}");
        assert!(err.to_string().contains("reselling"), "{err}");
    }

    #[test]
    fn allowed_names_never_look_like_a_consumer_family() {
        // a whitelist entry refused as consumer would be unusable
        let mut names = vec![LOCAL_MODEL, PAYG_API_KEY, PLATFORM_CREDIT, UNSPECIFIED];
        names.push(TOKEN_PLAN_WHITELIST_SOURCE);
        names.extend(TOKEN_PLAN_WHITELIST);
        for n in names {
            assert_eq!(consumer_family(n), None, "{n}");
        }
    }

    #[test]
    fn unknown_values_are_invalid_and_name_the_field() {
        for v in ["gpu_farm", "api", "local", "", "  ", "token_plan"] {
            assert_eq!(code(v), "validation_failed", "{v:?}");
            assert_eq!(field(v), "compute_source", "{v:?}");
        }
    }

    #[test]
    fn plan_rules_name_token_plan() {
        // given a plan that is missing, unknown, doubled or on another source
        for v in [
            "token_plan_whitelist",
            "token_plan_whitelist:",
            "token_plan_whitelist:some_reseller",
            "token_plan_whitelist:openai_api:anthropic_api",
            "payg_api_key:openai_api",
            "local_model:openai_api",
        ] {
            // then 400 on token_plan
            assert_eq!(code(v), "validation_failed", "{v}");
            assert_eq!(field(v), "token_plan", "{v}");
        }
        assert_eq!(field(":openai_api"), "compute_source");
    }

    #[test]
    fn declaration_joins_source_and_plan() {
        assert_eq!(declaration(None, None), None);
        assert_eq!(
            declaration(Some("local_model"), None).unwrap(),
            "local_model"
        );
        assert_eq!(
            declaration(Some("token_plan_whitelist"), Some("openai_api")).unwrap(),
            "token_plan_whitelist:openai_api"
        );
        assert_eq!(
            declaration(None, Some("openai_api")).unwrap(),
            ":openai_api"
        );
    }

    #[test]
    fn tier_bonus_is_two_half_and_nothing() {
        assert_eq!(tier_bonus_hundredths(Some(1)), 200);
        assert_eq!(tier_bonus_hundredths(Some(2)), 50);
        assert_eq!(tier_bonus_hundredths(Some(3)), 0);
        assert_eq!(tier_bonus_hundredths(None), 0);
    }

    #[test]
    fn describe_splits_the_stored_form() {
        assert_eq!(
            describe("token_plan_whitelist:openai_api"),
            (
                "token_plan_whitelist".to_owned(),
                Some("openai_api".to_owned()),
                Some(2)
            )
        );
        assert_eq!(
            describe("legacy thing"),
            ("legacy thing".to_owned(), None, None)
        );
        assert_eq!(tier_of(None), None);
        assert_eq!(tier_of(Some("platform_credit")), Some(3));
    }

    /// "oauth" in any letter case, anywhere, with anything around it.
    fn any_case_oauth() -> impl Strategy<Value = String> {
        (
            any::<String>(),
            prop::collection::vec(any::<bool>(), 5),
            any::<String>(),
        )
            .prop_map(|(before, upper, after)| {
                let word: String = "oauth"
                    .chars()
                    .zip(upper)
                    .map(|(c, u)| if u { c.to_ascii_uppercase() } else { c })
                    .collect();
                format!("{before}{word}{after}")
            })
    }

    proptest! {
        #[test]
        fn nothing_naming_oauth_is_ever_accepted(v in any_case_oauth()) {
            let err = ComputeSource::parse(&v).unwrap_err();
            prop_assert_eq!(err.code(), "compute_source_forbidden");
        }

        #[test]
        fn nothing_naming_oauth_is_accepted_as_a_plan(
            v in any_case_oauth().prop_filter("no colon", |v| !v.contains(':'))
        ) {
            let err = ComputeSource::parse(&format!("token_plan_whitelist:{v}")).unwrap_err();
            prop_assert_eq!(err.code(), "compute_source_forbidden");
        }
    }
}
