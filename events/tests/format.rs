//! Pins the byte layout documented in `events/FORMAT.md`: if one of these
//! fails, the format changed, and FORMAT.md (and the domain tag) must too.

use taskledger_events::codec::encode_event;
use taskledger_events::*;

fn enc(e: Event) -> String {
    hex(&encode_event(&e).unwrap())
}

#[test]
fn event_encoding_matches_format_md() {
    // variant index varint, uuid as varint length 16 + 16 bytes
    assert_eq!(
        enc(Event::TaskReopened(TaskReopened {
            task_id: TaskId::from_u128(0x0102030405060708090a0b0c0d0e0f10)
        })),
        "0c100102030405060708090a0b0c0d0e0f10"
    );
    // Vec: varint length; nested enums: varint index; u64 300: fb + u16 LE
    let transfer = Transfer {
        debit: Account::Escrow(TaskId::from_u128(1)),
        credit: Account::Gift(AccountId::from_u128(2)),
        class: CreditClass::Gift,
        amount: 300,
    };
    assert_eq!(
        enc(Event::TaskClosed(TaskClosed {
            task_id: TaskId::from_u128(1),
            transfers: vec![transfer]
        })),
        "0d1000000000000000000000000000000001\
         01\
         05100000000000000000000000000000000102100000000000000000000000000000000200fb2c01"
    );
    // String: varint length + UTF-8
    assert_eq!(
        enc(Event::VerificationFallback(VerificationFallback {
            task_id: TaskId::from_u128(1),
            execution_id: ExecutionId::from_u128(2),
            reason: "hi".into()
        })),
        "09100000000000000000000000000000000110000000000000000000000000000000020268 69"
            .replace(' ', "")
    );
    // Option: 0 / 1 tag; empty String and Vec: length 0
    assert_eq!(
        enc(Event::RiskFlagRaised(RiskFlagRaised {
            flag_id: FlagId::from_u128(1),
            kind: RiskKind::OperatorHold,
            owner_id: AccountId::from_u128(2),
            task_id: Some(TaskId::from_u128(3)),
            reason: String::new(),
            transfers: vec![]
        })),
        "1110000000000000000000000000000000010310000000000000000000000000000000020110000000000000000000000000000000030000"
    );
    // [u8; 32] hashes: 32 raw bytes, no length
    assert_eq!(
        enc(Event::OwnerKeyRotated(OwnerKeyRotated {
            account_id: AccountId::from_u128(1),
            key_hash: [0xab; 32]
        })),
        format!("011000000000000000000000000000000001{}", "ab".repeat(32))
    );
}

#[test]
fn varint_boundaries_match_format_md() {
    let cases = [
        (250u64, "fa"),
        (251, "fbfb00"),
        (65535, "fbffff"),
        (65536, "fc00000100"),
        (1 << 32, "fd0000000001000000"),
    ];
    for (v, want) in cases {
        assert_eq!(hex(&codec::encode_value(&v).unwrap()), want, "u64 {v}");
    }
}

#[test]
fn worked_record_example_matches_format_md() {
    let e = Event::TaskReopened(TaskReopened {
        task_id: TaskId::from_u128(0x0102030405060708090a0b0c0d0e0f10),
    });
    let (rec, bytes) = seal(Head::EMPTY, 1_700_000_000_000, e).unwrap();
    let want = concat!(
        "0100000000000000",                                                 // seq 1
        "0068e5cf8b010000", // at_ms 1_700_000_000_000
        "0000000000000000000000000000000000000000000000000000000000000000", // prev
        "337d6d11c7e8d82ba7d80d38a621dab07b605f4a583e3164bc6efcc3d927eaaa", // hash
        "12000000",         // event_len 18
        "0c100102030405060708090a0b0c0d0e0f10", // event
    );
    assert_eq!(hex(&bytes), want);
    // the hash input, spelled out
    let mut input = Vec::new();
    input.extend_from_slice(b"taskledger/record/v1");
    input.extend_from_slice(&[0u8; 32]);
    input.extend_from_slice(&1u64.to_le_bytes());
    input.extend_from_slice(&1_700_000_000_000u64.to_le_bytes());
    input.extend_from_slice(&bytes[84..]);
    assert_eq!(*blake3::hash(&input).as_bytes(), rec.hash);
}
