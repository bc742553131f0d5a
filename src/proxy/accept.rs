//! Back-off for accept loops. Every listener rattle opens (the proxy API, each proxy, the demo
//! balancer and workers) accepts in a loop; an accept error that persists (EMFILE/ENFILE: out of
//! file descriptors) returns at once on every call, so a loop that just continues pins a core
//! and starves the very connections whose closing would free descriptors (#19).
//!
//! Shaped as a small value each loop owns rather than a wrapper around the listener, so that
//! every loop keeps its own `select!` (cancellation, reaping) and only its error arm changes.

use std::time::Duration;

/// First pause after an accept error.
const FIRST: Duration = Duration::from_millis(100);
/// Longest pause: new connections wait at most this long once descriptors are free again.
const MAX: Duration = Duration::from_secs(1);

/// The pause before the next accept after an error: 100 ms, doubling up to 1 s, back to
/// 100 ms after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

impl Backoff {
    /// A back-off at its first step.
    pub fn new() -> Self {
        Self { next: FIRST }
    }

    /// An accept succeeded: the next error pauses briefly again.
    pub fn reset(&mut self) {
        self.next = FIRST;
    }

    /// The pause to make now; the one after is twice as long (up to a second).
    pub fn step(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(MAX);
        d
    }

    /// Sleeps for [`Backoff::step`].
    pub async fn pause(&mut self) {
        tokio::time::sleep(self.step()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_a_second_and_resets() {
        let mut b = Backoff::new();
        let steps: Vec<u128> = (0..6).map(|_| b.step().as_millis()).collect();
        assert_eq!(steps, [100, 200, 400, 800, 1000, 1000]);
        b.reset();
        assert_eq!(b.step().as_millis(), 100);
    }
}
