//! A tiny market for command tests: decide, seal, apply, all in memory,
//! with a clock the test moves by hand.

use super::*;
use taskledger_events::{
    AccountKind, Head, Principal, Record, TaskSpec, VerifierKind, record::seal,
};

pub struct World {
    pub state: State,
    pub now: u64,
    pub policy: Policy,
    next: u128,
    pub records: Vec<Record>,
}

impl World {
    pub fn new() -> Self {
        World {
            state: State::new(),
            now: 1_700_000_000_000,
            policy: Policy::default(),
            next: 1,
            records: Vec::new(),
        }
    }

    fn fresh(&mut self) -> u128 {
        self.next += 1;
        self.next
    }

    /// Decide and apply; every event must pass `apply`.
    pub fn run(&mut self, principal: &Principal, cmd: Command) -> Result<Vec<Event>, DomainError> {
        let ctx = Ctx {
            principal,
            now_ms: self.now,
            policy: &self.policy,
        };
        let events = decide(&self.state, ctx, &cmd)?;
        for e in &events {
            let head = Head {
                seq: self.state.head_seq,
                hash: self.state.head_hash,
            };
            let (record, _) = seal(head, self.now, e.clone()).expect("encodes");
            self.state
                .apply_ref(&record)
                .unwrap_or_else(|v| panic!("decide made an illegal event: {v}"));
            self.records.push(record);
        }
        Ok(events)
    }

    pub fn run_system(&mut self, cmd: Command) -> Result<Vec<Event>, DomainError> {
        self.run(&Principal::System, cmd)
    }

    pub fn register_cmd(&mut self, name: &str) -> Register {
        let n = self.fresh();
        Register {
            account_id: AccountId::from_u128(n),
            kind: AccountKind::Human,
            name: name.into(),
            email: None,
            compute_source: None,
            compute_attestation: None,
            metadata: None,
            key_hash: *blake3::hash(&n.to_le_bytes()).as_bytes(),
            client_addr: None,
        }
    }

    pub fn owner(&mut self, name: &str) -> AccountId {
        let cmd = self.register_cmd(name);
        let id = cmd.account_id;
        self.run_system(Command::Register(cmd)).expect("registers");
        id
    }

    pub fn agent_cmd(&mut self, name: &str) -> IssueAgentKey {
        let n = self.fresh();
        IssueAgentKey {
            key_id: AgentKeyId::from_u128(n),
            name: name.into(),
            compute_source: "local_model".into(),
            key_hash: *blake3::hash(&n.to_be_bytes()).as_bytes(),
        }
    }

    pub fn agent_with_source(&mut self, owner: AccountId, source: &str) -> AgentKeyId {
        let mut cmd = self.agent_cmd("bot");
        cmd.compute_source = source.into();
        let id = cmd.key_id;
        self.run(&Principal::Owner(owner), Command::IssueAgentKey(cmd))
            .expect("issues");
        id
    }

    pub fn agent(&mut self, owner: AccountId) -> AgentKeyId {
        self.agent_with_source(owner, "local_model")
    }

    pub fn spec(&self, reward: u64) -> TaskSpec {
        TaskSpec::manual("Summarise", "Summarise the text", "text", reward)
    }

    pub fn publish_spec(
        &mut self,
        owner: AccountId,
        spec: TaskSpec,
    ) -> Result<TaskId, DomainError> {
        let task_id = TaskId::from_u128(self.fresh());
        self.run(
            &Principal::Owner(owner),
            Command::Publish(Publish { task_id, spec }),
        )?;
        Ok(task_id)
    }

    pub fn run_as_agent_publish(
        &mut self,
        key: AgentKeyId,
        spec: TaskSpec,
    ) -> Result<TaskId, DomainError> {
        let task_id = TaskId::from_u128(self.fresh());
        self.run(
            &Principal::Agent(key),
            Command::Publish(Publish { task_id, spec }),
        )?;
        Ok(task_id)
    }

    pub fn publish(&mut self, owner: AccountId, reward: u64) -> Result<TaskId, DomainError> {
        let spec = self.spec(reward);
        self.publish_spec(owner, spec)
    }

    pub fn claim(&mut self, key: AgentKeyId, task_id: TaskId) -> Result<ExecutionId, DomainError> {
        let execution_id = ExecutionId::from_u128(self.fresh());
        self.run(
            &Principal::Agent(key),
            Command::Claim(Claim {
                task_id,
                execution_id,
            }),
        )?;
        Ok(execution_id)
    }

    pub fn claim_as_owner(
        &mut self,
        owner: AccountId,
        task_id: TaskId,
    ) -> Result<ExecutionId, DomainError> {
        let execution_id = ExecutionId::from_u128(self.fresh());
        self.run(
            &Principal::Owner(owner),
            Command::Claim(Claim {
                task_id,
                execution_id,
            }),
        )?;
        Ok(execution_id)
    }

    pub fn submit(
        &mut self,
        key: AgentKeyId,
        task_id: TaskId,
        result: &str,
    ) -> Result<Vec<Event>, DomainError> {
        let cmd = Submit {
            task_id,
            result: result.into(),
            result_metadata: None,
        };
        self.run(&Principal::Agent(key), Command::Submit(cmd))
    }

    pub fn verify(
        &mut self,
        owner: AccountId,
        task_id: TaskId,
        execution_id: ExecutionId,
        accepted: bool,
        reopen: bool,
    ) -> Result<Vec<Event>, DomainError> {
        let cmd = Verify {
            task_id,
            execution_id,
            accepted,
            feedback: None,
            score: None,
            reopen,
        };
        self.run(&Principal::Owner(owner), Command::Verify(cmd))
    }

    pub fn auto_cmd(
        &self,
        task_id: TaskId,
        execution_id: ExecutionId,
        accepted: bool,
        verifier: VerifierKind,
    ) -> Command {
        Command::AutoVerdict(AutoVerdict {
            task_id,
            execution_id,
            accepted,
            score: if accepted { 1000 } else { 0 },
            verifier,
            detail: None,
            feedback: None,
        })
    }

    pub fn cancel(&mut self, owner: AccountId, task_id: TaskId) -> Result<Vec<Event>, DomainError> {
        self.run(
            &Principal::Owner(owner),
            Command::Cancel(Cancel { task_id }),
        )
    }

    pub fn redeem(&mut self, owner: AccountId, amount: u64) -> Result<Vec<Event>, DomainError> {
        self.run(&Principal::Owner(owner), Command::Redeem(Redeem { amount }))
    }

    /// Give `owner` earned credits the only way there is: its agent does a
    /// task for someone else, who accepts it.
    pub fn give_earned(&mut self, owner: AccountId, amount: u64) {
        let funder = self.owner("funder");
        self.run(
            &Principal::Operator("ops".into()),
            Command::Grant(Grant {
                owner_id: funder,
                amount,
            }),
        )
        .expect("grants");
        let key = self.agent(owner);
        let task = self.publish(funder, amount).expect("publishes");
        let x = self.claim(key, task).expect("claims");
        self.submit(key, task, "work").expect("submits");
        self.verify(funder, task, x, true, true).expect("accepts");
    }
}
