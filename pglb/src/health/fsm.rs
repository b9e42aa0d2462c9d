//! HAProxy's rise/fall state machine, as a plain value (no I/O, no clock).
//!
//! `health` runs from 0 to rise+fall-1; the server is UP when it is at least
//! `rise`. A server starts at `rise` ("UP, going down at the first failure"),
//! a success while below `rise` climbs by one and jumps to the top on
//! reaching `rise`; a failure steps down by one and drops to 0 (DOWN) when
//! it goes below `rise`. So a stable UP server needs `fall` consecutive
//! failures to go DOWN, and a DOWN one `rise` consecutive successes.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Up,
    Down,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fsm {
    health: u32,
    rise: u32,
    fall: u32,
}

impl Fsm {
    pub fn new(rise: u32, fall: u32) -> Self {
        let (rise, fall) = (rise.max(1), fall.max(1));
        Fsm { health: rise, rise, fall }
    }

    /// Starts DOWN (e.g. an address that just appeared after failing to resolve).
    pub fn new_down(rise: u32, fall: u32) -> Self {
        Fsm { health: 0, ..Fsm::new(rise, fall) }
    }

    /// Starts DOWN but one success away from UP: for servers whose role is
    /// unknown until their first check.
    pub fn new_pending(rise: u32, fall: u32) -> Self {
        let f = Fsm::new(rise, fall);
        Fsm { health: f.rise - 1, ..f }
    }

    /// Resumes at a known check_health value (a server carried over a reload).
    pub fn with_health(rise: u32, fall: u32, health: u32) -> Self {
        let f = Fsm::new(rise, fall);
        Fsm { health: health.min(f.top()), ..f }
    }

    /// HAProxy's check_health value.
    pub fn health(&self) -> u32 {
        self.health
    }

    pub fn is_up(&self) -> bool {
        self.health >= self.rise
    }

    fn top(&self) -> u32 {
        self.rise + self.fall - 1
    }

    /// Records one check result; returns the transition it caused, if any.
    pub fn record(&mut self, ok: bool) -> Option<Transition> {
        let was_up = self.is_up();
        if ok {
            if self.health < self.top() {
                self.health += 1;
                if self.health >= self.rise {
                    self.health = self.top();
                }
            }
        } else if self.health > 0 {
            self.health -= 1;
            if self.health < self.rise {
                self.health = 0;
            }
        }
        match (was_up, self.is_up()) {
            (false, true) => Some(Transition::Up),
            (true, false) => Some(Transition::Down),
            _ => None,
        }
    }

    /// A failure that needs no confirmation (a server that answers with the
    /// wrong role): straight to DOWN, whatever `fall` says.
    pub fn fail_now(&mut self) -> Option<Transition> {
        let was_up = self.is_up();
        self.health = 0;
        was_up.then_some(Transition::Down)
    }

    /// HAProxy's `on-error sudden-death`: an UP server is left where one
    /// more failure marks it DOWN; the failure that follows is recorded by
    /// the caller (it is part of the action).
    pub fn sudden_death(&mut self) {
        if self.health > self.rise {
            self.health = self.rise + 1;
        }
    }

    /// UP at once, whatever `rise` says: the only server that proves to be
    /// primary in a backend that has none.
    pub fn force_up(&mut self) -> Option<Transition> {
        let was_up = self.is_up();
        self.health = self.top();
        (!was_up).then_some(Transition::Up)
    }

    /// The delay before the next check: `downinter` while DOWN, `fastinter`
    /// while a change is in progress, `inter` when stable.
    pub fn interval(&self, inter: Duration, fastinter: Duration, downinter: Duration) -> Duration {
        if self.health == 0 {
            downinter
        } else if self.health < self.top() {
            fastinter
        } else {
            inter
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_now_goes_down_whatever_fall_says() {
        let mut f = Fsm::new(2, 5);
        assert_eq!(f.record(true), None);
        assert!(f.is_up());
        assert_eq!(f.fail_now(), Some(Transition::Down));
        assert_eq!(f.health(), 0);
        assert_eq!(f.fail_now(), None, "already DOWN: no second transition");
        // Back UP needs `rise` passes as from any DOWN.
        assert_eq!(f.record(true), None);
        assert_eq!(f.record(true), Some(Transition::Up));
    }

    #[test]
    fn starts_up_and_a_first_failure_marks_down() {
        let mut f = Fsm::new(2, 3);
        assert!(f.is_up());
        assert_eq!(f.record(false), Some(Transition::Down));
    }

    #[test]
    fn stable_up_needs_fall_failures() {
        let mut f = Fsm::new(2, 3);
        assert_eq!(f.record(true), None);
        assert!(f.is_up());
        assert_eq!(f.record(false), None);
        assert_eq!(f.record(false), None);
        assert_eq!(f.record(false), Some(Transition::Down));
        // A success in between resets the count.
        let mut f = Fsm::new(2, 3);
        f.record(true);
        f.record(false);
        f.record(false);
        f.record(true);
        assert_eq!(f.record(false), None);
        assert_eq!(f.record(false), None);
        assert_eq!(f.record(false), Some(Transition::Down));
    }

    #[test]
    fn down_needs_rise_successes() {
        let mut f = Fsm::new_down(2, 3);
        assert_eq!(f.record(true), None);
        assert_eq!(f.record(false), None);
        assert_eq!(f.record(true), None);
        assert_eq!(f.record(true), Some(Transition::Up));
        let mut f = Fsm::new_down(1, 1);
        assert_eq!(f.record(true), Some(Transition::Up));
        assert_eq!(f.record(false), Some(Transition::Down));
    }

    #[test]
    fn pending_needs_one_success() {
        let mut f = Fsm::new_pending(2, 3);
        assert!(!f.is_up());
        assert_eq!(f.record(true), Some(Transition::Up));
        let mut f = Fsm::new_pending(2, 3);
        assert_eq!(f.record(false), None);
        assert_eq!(f.record(true), None);
        assert_eq!(f.record(true), Some(Transition::Up));
    }

    #[test]
    fn sudden_death_leaves_one_failure_to_down() {
        let mut f = Fsm::new(2, 5);
        f.record(true);
        f.sudden_death();
        assert_eq!(f.record(false), None, "one simulated failure keeps it UP");
        assert_eq!(f.record(false), Some(Transition::Down), "the next failure marks it DOWN");
        let mut rising = Fsm::new_down(3, 3);
        rising.record(true);
        rising.sudden_death();
        assert_eq!(rising.health(), 1, "a server below rise is not lifted");
    }

    #[test]
    fn force_up_skips_rise() {
        let mut f = Fsm::new_down(5, 3);
        assert_eq!(f.force_up(), Some(Transition::Up));
        assert_eq!(f.health(), 7);
        assert_eq!(f.force_up(), None);
    }

    #[test]
    fn intervals_follow_the_state() {
        let (i, fi, di) = (Duration::from_secs(2), Duration::from_secs(1), Duration::from_secs(5));
        let mut f = Fsm::new(2, 3);
        assert_eq!(f.interval(i, fi, di), fi, "going down at first failure counts as transition");
        f.record(true);
        assert_eq!(f.interval(i, fi, di), i);
        f.record(false);
        assert_eq!(f.interval(i, fi, di), fi);
        f.record(false);
        f.record(false);
        assert_eq!(f.interval(i, fi, di), di);
    }
}
