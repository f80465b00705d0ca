//! The single writer through the service handle: group commit, one winner
//! among concurrent claims, idempotent retries, and restart from the log.

use std::sync::Arc;
use taskledger::clock::ManualClock;
use taskledger::commands::*;
use taskledger::service::Service;
use taskledger::writer::Idempotency;
use taskledger_events::*;

fn register(i: u128) -> (AccountId, Command) {
    let id = AccountId::from_u128(i);
    let cmd = Command::Register(Register {
        account_id: id,
        kind: AccountKind::Human,
        name: format!("o{i}"),
        email: None,
        compute_source: None,
        compute_attestation: None,
        metadata: None,
        key_hash: *blake3::hash(&i.to_le_bytes()).as_bytes(),
        client_addr: None,
    });
    (id, cmd)
}

fn spec(reward: u64) -> TaskSpec {
    TaskSpec::manual("t", "", "text", reward)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_have_one_winner_and_restart_replays() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let store = SledStore::open(dir.path()).unwrap();
    let (svc, writer) = Service::start(Box::new(store), Policy::default(), clock.clone()).unwrap();
    let (alice, cmd) = register(1);
    svc.execute(Principal::System, None, cmd).await.unwrap();
    let (bob, cmd) = register(2);
    svc.execute(Principal::System, None, cmd).await.unwrap();
    let mut keys = Vec::new();
    for k in 0..64u128 {
        let key_id = AgentKeyId::from_u128(100 + k);
        let cmd = Command::IssueAgentKey(IssueAgentKey {
            key_id,
            name: format!("k{k}"),
            compute_source: "local_model".into(),
            key_hash: *blake3::hash(&(1000 + k).to_le_bytes()).as_bytes(),
        });
        svc.execute(Principal::Owner(bob), None, cmd).await.unwrap();
        keys.push(key_id);
    }
    let task_id = TaskId::from_u128(7);
    let publish = Command::Publish(Publish {
        task_id,
        spec: spec(50),
    });
    let idem = Idempotency {
        key: "pub-1".into(),
        request_hash: [1; 32],
    };
    let first = svc
        .execute(Principal::Owner(alice), Some(idem.clone()), publish.clone())
        .await
        .unwrap();
    // A retry with the same key answers the same records and appends nothing.
    let head = svc.read().head_seq;
    let again = svc
        .execute(Principal::Owner(alice), Some(idem.clone()), publish)
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(first.records, again.records);
    assert_eq!(svc.read().head_seq, head);
    // The same key for another request is a conflict.
    let other = Command::Publish(Publish {
        task_id: TaskId::from_u128(8),
        spec: spec(5),
    });
    let err = svc
        .execute(
            Principal::Owner(alice),
            Some(Idempotency {
                request_hash: [2; 32],
                ..idem
            }),
            other,
        )
        .await;
    assert_eq!(err.unwrap_err().code(), "conflict");

    let mut joins = Vec::new();
    for (n, key) in keys.iter().enumerate() {
        let svc = svc.clone();
        let key = *key;
        joins.push(tokio::spawn(async move {
            let cmd = Command::Claim(Claim {
                task_id,
                execution_id: ExecutionId::from_u128(5000 + n as u128),
            });
            svc.execute(Principal::Agent(key), None, cmd).await
        }));
    }
    let mut winners = 0;
    for j in joins {
        match j.await.unwrap() {
            Ok(_) => winners += 1,
            Err(e) => assert_eq!(e.code(), "task_full"),
        }
    }
    assert_eq!(winners, 1);
    assert!(
        svc.metrics()
            .batches
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    let before = svc.read().clone();
    svc.shutdown().await.unwrap();
    drop(svc);
    writer.join().unwrap();

    // Restart: snapshot + tail equals the state before.
    let store = SledStore::open(dir.path()).unwrap();
    let (svc, writer) = Service::start(Box::new(store), Policy::default(), clock).unwrap();
    assert_eq!(*svc.read(), before);
    svc.shutdown().await.unwrap();
    drop(svc);
    writer.join().unwrap();
}

/// Periodic snapshots: with a small interval the writer stores snapshots
/// while it runs (not only at shutdown), each one is the fold of the log
/// up to its seq, and one plus the replayed tail after it is the state the
/// writer had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_snapshots_are_folds_of_the_log_and_restarts_use_them() {
    use std::sync::atomic::Ordering;
    use taskledger::service::{load_state, replay_into};
    use taskledger::writer::WriterSettings;
    use taskledger_projections::{State, snapshot};

    const EVERY: u64 = 40;
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let store = SledStore::open(dir.path()).unwrap();
    let settings = WriterSettings {
        snapshot_every_records: EVERY,
    };
    let (svc, writer) =
        Service::start_with(Box::new(store), Policy::default(), clock.clone(), settings).unwrap();
    // Snapshots are encoded on their own thread and stored between later
    // batches: keep writing until two have landed (bounded).
    let mut n = 0u128;
    while svc.metrics().snapshot_seq.load(Ordering::Relaxed) < 2 * EVERY {
        n += 1;
        assert!(n < 5_000, "no second periodic snapshot after {n} commands");
        let (_, cmd) = register(n);
        svc.execute(Principal::System, None, cmd).await.unwrap();
    }
    let periodic = svc.metrics().snapshot_seq.load(Ordering::Relaxed);
    // Past the newest periodic snapshot, so the restart below replays a tail.
    for i in 0..5 {
        let (_, cmd) = register(10_000 + i);
        svc.execute(Principal::System, None, cmd).await.unwrap();
    }
    let before = svc.read().clone();
    assert!(before.head_seq > periodic);
    svc.shutdown().await.unwrap();
    drop(svc);
    writer.join().unwrap();

    // Kept: the newest periodic snapshot and the one shutdown stored.
    let store = SledStore::open(dir.path()).unwrap();
    let stored = store.snapshots().unwrap();
    let seqs: Vec<u64> = stored.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs, [periodic, before.head_seq]);
    let mut full = State::new();
    replay_into(&store, &mut full, u64::MAX).unwrap();
    assert_eq!(full, before);
    for (seq, bytes) in &stored {
        let mut from_snapshot = snapshot::decode(bytes).unwrap();
        assert_eq!(from_snapshot.head_seq, *seq);
        let mut prefix = State::new();
        replay_into(&store, &mut prefix, *seq).unwrap();
        assert_eq!(
            from_snapshot, prefix,
            "snapshot at {seq} is not the fold up to it"
        );
        // A restart from this snapshot replays the tail after it.
        replay_into(&store, &mut from_snapshot, u64::MAX).unwrap();
        assert_eq!(from_snapshot, before);
    }
    let (loaded, loaded_seq) = load_state(&store).unwrap();
    assert_eq!(loaded_seq, seqs[1]);
    assert_eq!(loaded, before);
}
