//! Reputation: a fixed-point EMA of verified outcomes, so every machine
//! replays the same numbers. Pure: no I/O, no clock.
//!
//! Scores are hundredths in `0..=1000` (5.00 is `500`). After a verdict with
//! outcome `o` (hundredths; a reject is 0):
//!
//! ```text
//! new = (ALPHA_DEN - ALPHA_NUM) * old + ALPHA_NUM * o     (alpha = 15/100)
//! new = (new + ALPHA_DEN / 2) / ALPHA_DEN                 (round half up)
//! ```
//!
//! The result stays in `0..=1000` because it is a convex mix of two values
//! in that range.

/// Where every identity starts: 5.00.
pub const REPUTATION_START: u16 = 500;
/// The top of the scale: 10.00.
pub const REPUTATION_MAX: u16 = 1000;
/// Manual accept without an explicit score: 8.00.
pub const MANUAL_ACCEPT_SCORE: u16 = 800;
/// A passing automatic rules or tests verdict: 10.00.
pub const AUTO_PASS_SCORE: u16 = 1000;

const ALPHA_NUM: u32 = 15;
const ALPHA_DEN: u32 = 100;

/// One EMA step. `outcome` above the scale is clamped to it.
pub fn ema(old: u16, outcome: u16) -> u16 {
    let old = u32::from(old.min(REPUTATION_MAX));
    let outcome = u32::from(outcome.min(REPUTATION_MAX));
    let mixed = (ALPHA_DEN - ALPHA_NUM) * old + ALPHA_NUM * outcome;
    // Provably within u16: mixed <= 100 * 1000, so the quotient is <= 1000.
    ((mixed + ALPHA_DEN / 2) / ALPHA_DEN) as u16
}

/// Hundredths as the 0-10 number the API shows.
pub fn as_points(hundredths: u16) -> f64 {
    f64::from(hundredths) / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accept_at_eight_moves_start_up() {
        // given the start score, when an 8.00 accept lands, then 0.85*5 + 0.15*8 = 5.45
        assert_eq!(ema(REPUTATION_START, MANUAL_ACCEPT_SCORE), 545);
    }

    #[test]
    fn reject_moves_start_down() {
        // 0.85 * 5.00 = 4.25
        assert_eq!(ema(REPUTATION_START, 0), 425);
    }

    #[test]
    fn rounding_is_half_up() {
        // 0.85 * 1 = 0.85 hundredths -> 1
        assert_eq!(ema(1, 0), 1);
        // 0.85 * 3 + 0.15 * 0 = 2.55 -> 3
        assert_eq!(ema(3, 0), 3);
    }

    proptest! {
        #[test]
        fn stays_on_scale(old in 0u16..=1000, outcome in 0u16..=1000) {
            let new = ema(old, outcome);
            prop_assert!(new <= REPUTATION_MAX);
            prop_assert!(new >= old.min(outcome) && new <= old.max(outcome));
        }
    }
}
