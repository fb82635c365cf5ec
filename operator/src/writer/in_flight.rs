//! How many record stores the writer keeps in flight: enough to cover the store's round trip.
//!
//! A record's store is a PUT and then the HEAD that confirms its lock (with the header index
//! PUT beside it), so each record spends at least two round trips in flight. By Little's law
//! `n` stores in flight carry at most `n / latency` records a second: 32 are plenty on
//! loopback, a third of the throughput at an 80 ms round trip (docs/benchmarks.md, "How many
//! stores in flight"). More stores than needed cost CPU on loopback (measured 11% at 128), so
//! the limit follows the store instead of being raised for everyone: [`FLOOR`] plus what
//! [`AIM_PER_SECOND`] records a second need over the fastest store seen lately, at most
//! [`CEILING`]. The fastest store, not the mean, is the network's part of the latency; the
//! mean also holds the servers' queueing, which more stores in flight would only lengthen.
//! "Lately" is the last one to two [`WINDOW`]s of stores, so a round trip that grows during a
//! run (a route change, a throttled bucket) is followed within a thousand records.
//!
//! The message bytes in flight are bounded separately by the writer (a count alone would let
//! large messages take memory).

use std::time::Duration;

/// Stores in flight however short the round trip (32 measured 15% faster than 8 on 50,000
/// short messages on loopback).
pub const FLOOR: usize = 32;
/// Stores in flight however long the round trip: memory and the store's own connection limits
/// (each store in flight holds a connection).
pub const CEILING: usize = 256;
/// The records a second the limit is sized to carry: twice what one writer measured on this
/// machine's loopback versitygw, so the round trip is not what bounds a run.
pub const AIM_PER_SECOND: u32 = 1_000;
/// Stores per window of the windowed minimum.
pub const WINDOW: u32 = 500;

/// The limit on stores in flight, from the latency of the stores that finished.
#[derive(Debug, Clone, Default)]
pub struct InFlightLimit {
    /// The fastest store of the window being filled.
    current: Option<Duration>,
    /// The fastest store of the window before it.
    previous: Option<Duration>,
    /// Stores seen in the current window.
    seen: u32,
}

impl InFlightLimit {
    /// Notes how long one record's store took, from its first request to its last answer.
    pub fn observe(&mut self, latency: Duration) {
        self.current = Some(self.current.map_or(latency, |c| c.min(latency)));
        self.seen += 1;
        if self.seen >= WINDOW {
            self.previous = self.current.take();
            self.seen = 0;
        }
    }

    /// The fastest store seen in the last one to two windows; `None` before the first.
    pub fn fastest(&self) -> Option<Duration> {
        match (self.current, self.previous) {
            (Some(c), Some(p)) => Some(c.min(p)),
            (c, p) => c.or(p),
        }
    }

    /// How many stores may be in flight now.
    pub fn limit(&self) -> usize {
        let Some(fastest) = self.fastest() else {
            return FLOOR;
        };
        let needed = fastest
            .as_micros()
            .saturating_mul(u128::from(AIM_PER_SECOND))
            .div_ceil(1_000_000);
        usize::try_from(needed).map_or(CEILING, |n| FLOOR.saturating_add(n).min(CEILING))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn before_any_store_the_floor_applies() {
        assert_eq!(InFlightLimit::default().limit(), FLOOR);
        assert_eq!(InFlightLimit::default().fastest(), None);
    }

    #[test]
    fn the_limit_carries_the_aim_over_the_fastest_store() {
        let mut l = InFlightLimit::default();
        for latency in [ms(300), ms(41), ms(95)] {
            l.observe(latency);
        }
        assert_eq!(l.fastest(), Some(ms(41)));
        // 1,000 a second over 41 ms is 41 stores on top of the floor.
        assert_eq!(l.limit(), FLOOR + 41);
    }

    #[test]
    fn loopback_stays_at_the_floor_and_a_long_round_trip_stops_at_the_ceiling() {
        let mut fast = InFlightLimit::default();
        fast.observe(Duration::from_micros(400));
        assert_eq!(fast.limit(), FLOOR + 1);
        let mut slow = InFlightLimit::default();
        slow.observe(ms(2_000));
        assert_eq!(slow.limit(), CEILING);
        let mut absurd = InFlightLimit::default();
        absurd.observe(Duration::MAX);
        assert_eq!(absurd.limit(), CEILING);
    }

    #[test]
    fn a_round_trip_that_grows_is_followed_within_two_windows() {
        let mut l = InFlightLimit::default();
        l.observe(ms(1));
        for _ in 0..WINDOW {
            l.observe(ms(80));
        }
        // The 1 ms store is in the window before: still remembered.
        assert_eq!(l.fastest(), Some(ms(1)));
        for _ in 0..WINDOW {
            l.observe(ms(80));
        }
        assert_eq!(l.fastest(), Some(ms(80)));
        assert_eq!(l.limit(), FLOOR + 80);
    }

    #[test]
    fn a_round_trip_that_shrinks_is_followed_at_once() {
        let mut l = InFlightLimit::default();
        for _ in 0..(WINDOW * 3) {
            l.observe(ms(80));
        }
        l.observe(ms(20));
        assert_eq!(l.limit(), FLOOR + 20);
    }
}
