//! Virtual time and seeded randomness: the two things that make ordinary programs
//! non-deterministic, replaced by values that depend only on the manifest and on what the
//! guest has done so far.
//!
//! Like ZeroVM's ZRT, every clock read advances the clocks by a fixed step, and sleeping only
//! moves the clocks forward: no guest ever waits on the host's clock, and two runs of the same
//! program read the same times.

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use zvm_manifest::Clock;

/// Resolution the guest is told its clocks have.
pub const CLOCK_RESOLUTION_NS: u64 = 1;

/// The guest's clocks: realtime starts at the manifest's start time, monotonic at zero, and
/// both move together.
#[derive(Debug, Clone)]
pub struct VirtualClock {
    start_ns: u64,
    step_ns: u64,
    elapsed_ns: u64,
}

impl VirtualClock {
    pub fn new(clock: Clock) -> VirtualClock {
        VirtualClock {
            start_ns: clock.start_ns,
            step_ns: clock.step_ns,
            elapsed_ns: 0,
        }
    }

    /// Reads the realtime clock and advances time by one step.
    pub fn realtime(&mut self) -> u64 {
        let now = self.peek_realtime();
        self.tick();
        now
    }

    /// Reads the monotonic clock and advances time by one step.
    pub fn monotonic(&mut self) -> u64 {
        let now = self.elapsed_ns;
        self.tick();
        now
    }

    /// The realtime clock without advancing it (used for file timestamps).
    pub fn peek_realtime(&self) -> u64 {
        self.start_ns.saturating_add(self.elapsed_ns)
    }

    /// The monotonic clock without advancing it.
    pub fn peek_monotonic(&self) -> u64 {
        self.elapsed_ns
    }

    /// Moves time forward by `ns` (a sleep).
    pub fn advance(&mut self, ns: u64) {
        self.elapsed_ns = self.elapsed_ns.saturating_add(ns);
    }

    /// Moves the monotonic clock forward to `deadline` if it is in the future.
    pub fn advance_monotonic_to(&mut self, deadline: u64) {
        self.elapsed_ns = self.elapsed_ns.max(deadline);
    }

    /// Moves the realtime clock forward to `deadline` if it is in the future.
    pub fn advance_realtime_to(&mut self, deadline: u64) {
        let now = self.peek_realtime();
        if deadline > now {
            self.advance(deadline - now);
        }
    }

    fn tick(&mut self) {
        self.advance(self.step_ns);
    }
}

/// The guest's one stream of random bytes (`random_get`, `/dev/random`, `/dev/urandom`),
/// seeded from the manifest. ChaCha20 is a well-studied stream whose output is the same on
/// every host and every version of the crate.
#[derive(Debug, Clone)]
pub struct Entropy {
    rng: ChaCha20Rng,
}

impl Entropy {
    pub fn new(seed: u64) -> Entropy {
        Entropy {
            rng: ChaCha20Rng::seed_from_u64(seed),
        }
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        self.rng.fill_bytes(buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_advance_by_step_and_sleep() {
        let mut c = VirtualClock::new(Clock {
            start_ns: 1_000,
            step_ns: 10,
        });
        assert_eq!(c.realtime(), 1_000);
        assert_eq!(c.realtime(), 1_010);
        assert_eq!(c.monotonic(), 20);
        c.advance(1_000_000);
        assert_eq!(c.monotonic(), 1_000_030);
        c.advance_monotonic_to(5);
        assert_eq!(c.peek_monotonic(), 1_000_040);
    }

    #[test]
    fn entropy_is_seeded() {
        let (mut a, mut b, mut c) = (Entropy::new(7), Entropy::new(7), Entropy::new(8));
        let (mut x, mut y, mut z) = ([0u8; 32], [0u8; 32], [0u8; 32]);
        a.fill(&mut x);
        b.fill(&mut y);
        c.fill(&mut z);
        assert_eq!(x, y);
        assert_ne!(x, z);
    }
}
