//! Snapshots: a `State` serialised with the head it covers, so start-up can
//! load the newest one and replay only the tail. Pure: bytes in, bytes out.
//!
//! Layout: `b"TLSNAP01"`, then the bincode (standard config) of
//! [`State`], whose `head_seq` / `head_hash` name the record it covers.

use crate::state::State;
use taskledger_events::codec::{self, CodecError};

const MAGIC: &[u8; 8] = b"TLSNAP01";

pub fn encode(state: &State) -> Result<Vec<u8>, CodecError> {
    let body = codec::encode_value(state)?;
    let mut out = Vec::with_capacity(MAGIC.len() + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&body);
    Ok(out)
}

pub fn decode(bytes: &[u8]) -> Result<State, CodecError> {
    match bytes.strip_prefix(MAGIC.as_slice()) {
        Some(body) => codec::decode_value(body),
        None => Err(CodecError::Decode(
            "not a taskledger snapshot (bad magic)".into(),
        )),
    }
}
