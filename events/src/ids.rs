//! Typed identifiers. Every id is a UUID; the newtypes keep an account id from
//! ever being passed where a task id is expected. Pure: no I/O, no clock.

use serde::{Deserialize, Serialize};
use std::fmt;
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A fresh random (v4) id. Ids are made by the caller of `decide`,
            /// never inside it, so commands stay pure and replayable.
            pub fn random() -> Self {
                Self(Uuid::new_v4())
            }
            pub fn from_u128(v: u128) -> Self {
                Self(Uuid::from_u128(v))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

id_type!(
    /// An owner account: holds the wallet, publishes, reviews, issues agent keys.
    AccountId
);
id_type!(
    /// An agent key: claims and submits; has its own reputation.
    AgentKeyId
);
id_type!(
    /// A published task.
    TaskId
);
id_type!(
    /// One agent key's attempt at one task.
    ExecutionId
);
id_type!(
    /// A risk flag raised by the risk engine.
    FlagId
);

/// A blake3 digest.
pub type Hash = [u8; 32];
