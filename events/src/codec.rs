//! The one place where events become bytes and back (bincode 2, serde,
//! standard configuration: little-endian, variable-length integers).
//!
//! Replace the format here and only here; a change of format bumps the
//! record domain tag (see `record`). Decoding is bounded: a length field can
//! never make the decoder allocate more than [`EVENT_BYTES_MAX`].

use crate::event::Event;
use thiserror::Error;

/// The largest event the codec will encode or decode.
pub const EVENT_BYTES_MAX: usize = 16 * 1024 * 1024;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CodecError {
    #[error("event encode failed: {0}")]
    Encode(String),
    #[error("event decode failed: {0}")]
    Decode(String),
    #[error("event has {trailing} trailing bytes after a complete value")]
    Trailing { trailing: usize },
    #[error("event is {len} bytes, above the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<EVENT_BYTES_MAX>()
}

/// Encode an event to its canonical bytes.
pub fn encode_event(event: &Event) -> Result<Vec<u8>, CodecError> {
    let bytes = bincode::serde::encode_to_vec(event, config())
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    if bytes.len() > EVENT_BYTES_MAX {
        return Err(CodecError::TooLarge {
            len: bytes.len(),
            max: EVENT_BYTES_MAX,
        });
    }
    Ok(bytes)
}

/// Encode an event to its canonical bytes at the end of `out` (the same
/// bytes as [`encode_event`]); on error `out` is left as it was.
pub fn encode_event_into(event: &Event, out: &mut Vec<u8>) -> Result<(), CodecError> {
    let start = out.len();
    let written = bincode::serde::encode_into_std_write(event, out, config());
    let len = out.len() - start;
    if let Err(e) = written {
        out.truncate(start);
        return Err(CodecError::Encode(e.to_string()));
    }
    if len > EVENT_BYTES_MAX {
        out.truncate(start);
        return Err(CodecError::TooLarge {
            len,
            max: EVENT_BYTES_MAX,
        });
    }
    Ok(())
}

/// Decode an event; the bytes must hold exactly one value.
pub fn decode_event(bytes: &[u8]) -> Result<Event, CodecError> {
    if bytes.len() > EVENT_BYTES_MAX {
        return Err(CodecError::TooLarge {
            len: bytes.len(),
            max: EVENT_BYTES_MAX,
        });
    }
    let (event, used): (Event, usize) = bincode::serde::decode_from_slice(bytes, config())
        .map_err(|e| CodecError::Decode(e.to_string()))?;
    if used != bytes.len() {
        return Err(CodecError::Trailing {
            trailing: bytes.len() - used,
        });
    }
    Ok(event)
}

/// Encode any serde value with the same configuration (snapshots use this).
pub fn encode_value<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(value, bincode::config::standard())
        .map_err(|e| CodecError::Encode(e.to_string()))
}

/// Decode any serde value written by [`encode_value`].
pub fn decode_value<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, used): (T, usize) =
        bincode::serde::decode_from_slice(bytes, bincode::config::standard())
            .map_err(|e| CodecError::Decode(e.to_string()))?;
    if used != bytes.len() {
        return Err(CodecError::Trailing {
            trailing: bytes.len() - used,
        });
    }
    Ok(value)
}
