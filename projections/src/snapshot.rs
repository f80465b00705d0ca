//! Snapshots: a `State` serialised with the head it covers, so start-up can
//! load the newest one and replay only the tail. Pure: bytes in, bytes out.
//!
//! Layout: an 8-byte magic naming the layout of [`State`], then the bincode
//! (standard config) of [`State`], whose `head_seq` / `head_hash` name the
//! record it covers. The magic changes whenever `State`'s layout does:
//! `TLSNAP01` held full task specs and execution texts; `TLSNAP02` (this
//! one) holds the compact projection (indexes derived from it, such as
//! the open tasks, are rebuilt on decode). A snapshot of another layout is not
//! an error of the log: it is [`is_current`] false, and start-up replays
//! from genesis instead (the log is the truth; snapshots are a cache).

use crate::state::State;
use taskledger_events::codec::{self, CodecError};

/// The magic of the layout this build writes and reads.
pub const MAGIC: &[u8; 8] = b"TLSNAP02";

pub fn encode(state: &State) -> Result<Vec<u8>, CodecError> {
    let body = codec::encode_value(state)?;
    let mut out = Vec::with_capacity(MAGIC.len() + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&body);
    Ok(out)
}

/// True if `bytes` are a snapshot of the layout this build reads.
pub fn is_current(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

pub fn decode(bytes: &[u8]) -> Result<State, CodecError> {
    match bytes.strip_prefix(MAGIC.as_slice()) {
        Some(body) => {
            let mut state: State = codec::decode_value(body)?;
            state.index_open_tasks();
            Ok(state)
        }
        None => Err(CodecError::Decode(
            "not a taskledger snapshot of this layout (bad magic)".into(),
        )),
    }
}
