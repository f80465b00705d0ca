//! The JSON bodies of every write route, through the handlers' own path:
//! `http::extract::parse_json` (the strict body parser), the body's
//! `into_command` / `into_spec`, then the command's `decide` against a small
//! market built once (a publisher with a task under review and a task
//! claimed by a worker's agent key, and a risk flag on the worker). The
//! first byte picks the route, the rest is the body. Never panics; every
//! refusal is an `ApiError`; and whatever `decide` accepts, `State::apply`
//! accepts too (decide never makes an illegal event).
//!
//! Routes: register, issue agent key, publish (with its verification),
//! submit, verify, redeem, release flag, confirm flag; and grant, which has
//! no REST route: its body is the command's own JSON (operator tooling).

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use taskledger::commands::{
    Claim, Command, Ctx, Grant, IssueAgentKey, Policy, Publish, RaiseFlag, Redeem, Register,
    Submit, decide,
};
use taskledger::error::DomainError;
use taskledger::http::accounts::{AgentKeyBody, RedeemBody, RegisterBody};
use taskledger::http::admin::ResolveBody;
use taskledger::http::error::ApiError;
use taskledger::http::extract::parse_json;
use taskledger::http::tasks::{PublishBody, SubmitBody, VerifyBody};
use taskledger_events::{
    AccountId, AccountKind, AgentKeyId, ExecutionId, FlagId, Head, Principal, RiskKind, TaskId,
    TaskSpec, seal,
};
use taskledger_projections::State;

const NOW_MS: u64 = 1_700_000_000_000;

struct Market {
    state: State,
    policy: Policy,
    publisher: AccountId,
    worker: AccountId,
    key: AgentKeyId,
    /// Claimed by `key` and submitted: verify acts on it.
    reviewed_task: TaskId,
    /// Claimed by `key`, not yet submitted: submit acts on it.
    claimed_task: TaskId,
    flag: FlagId,
}

/// Decide and apply, as the writer does; every event must pass `apply`.
fn run(
    state: &mut State,
    policy: &Policy,
    principal: &Principal,
    command: &Command,
) -> Result<(), DomainError> {
    let ctx = Ctx {
        principal,
        now_ms: NOW_MS,
        policy,
    };
    for event in decide(state, ctx, command)? {
        let head = Head {
            seq: state.head_seq,
            hash: state.head_hash,
        };
        let (record, _) = seal(head, NOW_MS, event).expect("a decided event encodes");
        if let Err(v) = state.apply(record) {
            panic!("decide made an illegal event for {}: {v}", command.name());
        }
    }
    Ok(())
}

fn spec(title: &str) -> TaskSpec {
    TaskSpec::manual(title, "fuzz", "text", 100)
}

fn market() -> Market {
    let mut state = State::new();
    let policy = Policy {
        redeem_enabled: true,
        ..Policy::default()
    };
    let system = Principal::System;
    let register = |n: u128| Register {
        account_id: AccountId::from_u128(n),
        kind: AccountKind::Human,
        name: format!("owner {n}"),
        email: None,
        compute_source: None,
        compute_attestation: None,
        metadata: None,
        key_hash: [n as u8; 32],
        client_addr: None,
    };
    let (publisher, worker) = (AccountId::from_u128(1), AccountId::from_u128(2));
    for n in [1, 2] {
        run(
            &mut state,
            &policy,
            &system,
            &Command::Register(register(n)),
        )
        .expect("registers");
    }
    let key = AgentKeyId::from_u128(3);
    let issue = IssueAgentKey {
        key_id: key,
        name: "bot".into(),
        compute_source: "local_model".into(),
        key_hash: [3; 32],
    };
    run(
        &mut state,
        &policy,
        &Principal::Owner(worker),
        &Command::IssueAgentKey(issue),
    )
    .expect("issues");
    let grant = Grant {
        owner_id: worker,
        amount: 500,
    };
    run(&mut state, &policy, &system, &Command::Grant(grant)).expect("grants");
    let (reviewed_task, claimed_task) = (TaskId::from_u128(4), TaskId::from_u128(5));
    for (task_id, execution) in [(reviewed_task, 6), (claimed_task, 7)] {
        let publish = Publish {
            task_id,
            spec: spec("a task"),
        };
        run(
            &mut state,
            &policy,
            &Principal::Owner(publisher),
            &Command::Publish(publish),
        )
        .expect("publishes");
        let claim = Claim {
            task_id,
            execution_id: ExecutionId::from_u128(execution),
        };
        run(
            &mut state,
            &policy,
            &Principal::Agent(key),
            &Command::Claim(claim),
        )
        .expect("claims");
    }
    let submit = Submit {
        task_id: reviewed_task,
        result: "done".into(),
        result_metadata: None,
    };
    run(
        &mut state,
        &policy,
        &Principal::Agent(key),
        &Command::Submit(submit),
    )
    .expect("submits");
    let flag = FlagId::from_u128(8);
    let raise = RaiseFlag {
        flag_id: flag,
        kind: RiskKind::OperatorHold,
        owner_id: worker,
        task_id: None,
        reason: "fuzz".into(),
        freeze: 0,
    };
    run(&mut state, &policy, &system, &Command::RaiseFlag(raise)).expect("raises a flag");
    Market {
        state,
        policy,
        publisher,
        worker,
        key,
        reviewed_task,
        claimed_task,
        flag,
    }
}

/// Parse the body as its route does and make the command and its caller.
fn command(m: &Market, route: u8, body: &[u8]) -> Result<(Principal, Command), ApiError> {
    let operator = || Principal::Operator("fuzz".into());
    Ok(match route % 9 {
        0 => {
            let b: RegisterBody = parse_json(body)?;
            let cmd = b.into_command(
                AccountId::from_u128(100),
                [100; 32],
                Some("127.0.0.1".into()),
            );
            (Principal::System, Command::Register(cmd))
        }
        1 => {
            let b: AgentKeyBody = parse_json(body)?;
            let cmd = b.into_command(AgentKeyId::from_u128(101), [101; 32]);
            (Principal::Owner(m.publisher), Command::IssueAgentKey(cmd))
        }
        2 => {
            let b: PublishBody = parse_json(body)?;
            let publish = Publish {
                task_id: TaskId::from_u128(102),
                spec: b.into_spec()?,
            };
            (Principal::Owner(m.publisher), Command::Publish(publish))
        }
        3 => {
            let b: SubmitBody = parse_json(body)?;
            (
                Principal::Agent(m.key),
                Command::Submit(b.into_command(m.claimed_task)),
            )
        }
        4 => {
            let b: VerifyBody = parse_json(body)?;
            let cmd = b.into_command(m.reviewed_task)?;
            (Principal::Owner(m.publisher), Command::Verify(cmd))
        }
        5 => {
            let b: RedeemBody = parse_json(body)?;
            (
                Principal::Owner(m.worker),
                Command::Redeem(Redeem { amount: b.amount }),
            )
        }
        6 | 7 => {
            let b: ResolveBody = parse_json(body)?;
            (operator(), b.into_command(m.flag, route % 9 == 6))
        }
        _ => {
            let b: Grant = parse_json(body)?;
            (operator(), Command::Grant(b))
        }
    })
}

static MARKET: OnceLock<Market> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let m = MARKET.get_or_init(market);
    let Some((&route, body)) = data.split_first() else {
        return;
    };
    let Ok((principal, command)) = command(m, route, body) else {
        return;
    };
    let mut state = m.state.clone();
    if let Err(e) = run(&mut state, &m.policy, &principal, &command) {
        let _ = ApiError::from(e);
    }
});
