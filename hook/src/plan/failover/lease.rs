//! The Lease, pure: what it says (held, expired, free) against what the agent saw before, and
//! what the agent does about it this poll (renew, follow, elect, wait out the cooldown).
//!
//! Time comes in two kinds: `now` is the agent's monotonic clock (durations since it started),
//! used for everything that decides safety (expiry, fencing), so a clock step or skew between
//! nodes cannot make two pods primary; wall-clock time appears only in the cooldown, which is a
//! guard against flapping, not a safety property.

use std::time::{Duration, SystemTime};

/// The Lease as read from the Kubernetes API (coordination.k8s.io/v1).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseRecord {
    /// The holder's address (its pod's DNS name); None when nobody holds it.
    pub holder: Option<String>,
    /// When the current holder acquired it (wall clock, its own).
    pub acquired: Option<SystemTime>,
    /// How many times the holder changed.
    pub transitions: u32,
    /// Changes on every write: what tells the agent that the holder renewed.
    pub version: String,
}

/// The timing every agent of a release shares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// A Lease not renewed for this long (as each agent measures it) has expired.
    pub lease_duration: Duration,
    pub poll_interval: Duration,
    /// The longest a Kubernetes API call may take.
    pub call_timeout: Duration,
    /// After a failover, no other for this long.
    pub cooldown: Duration,
}

impl Timing {
    /// A holder whose last successful renew was sent this long ago stops acting as primary: the
    /// next poll (one interval later, plus a call) could come after the others see the Lease
    /// expire, and they measure from a moment no earlier than that renew.
    pub fn fence_after(&self) -> Duration {
        self.lease_duration
            .saturating_sub(self.poll_interval + self.call_timeout)
    }
}

/// What the agent remembers about the Lease between polls.
#[derive(Clone, Debug, Default)]
pub struct LeaseMemory {
    /// The version last seen and when it was first seen.
    seen: Option<(String, Duration)>,
    /// When the last renew (or acquisition) that succeeded was sent.
    renewed: Option<Duration>,
}

impl LeaseMemory {
    /// A renew or acquisition sent at `sent` succeeded and produced `version`.
    pub fn renewed(&mut self, version: &str, sent: Duration) {
        self.seen = Some((version.to_string(), sent));
        self.renewed = Some(sent);
    }

    /// This pod holds the Lease, as far as it knows.
    pub fn holds(&self) -> bool {
        self.renewed.is_some()
    }

    /// When the last successful renew (or acquisition) was sent.
    pub fn renewed_at(&self) -> Option<Duration> {
        self.renewed
    }

    /// Until when a holder may act as primary: its last renew plus [`Timing::fence_after`].
    pub fn serving_until(&self, timing: &Timing) -> Option<Duration> {
        self.renewed.map(|sent| sent + timing.fence_after())
    }

    /// This pod no longer holds the Lease.
    pub fn lost(&mut self) {
        self.renewed = None;
    }

    /// A holder must stop acting as primary: it has not renewed for [`Timing::fence_after`]
    /// (or never did since the agent started).
    pub fn fence_due(&self, now: Duration, timing: &Timing) -> bool {
        self.serving_until(timing).is_none_or(|until| now >= until)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseState {
    /// No Lease, or one without a holder.
    Free,
    /// Renewed within the lease duration, as this agent measures it.
    Held { holder: String },
    /// Not renewed for a whole lease duration.
    Expired { holder: String },
}

/// Reads the Lease against what the agent saw before: a Lease expires when its version has not
/// changed for a lease duration since this agent first saw that version. An agent that just
/// started therefore waits a whole duration before it calls a Lease expired.
pub fn observe(
    lease: Option<&LeaseRecord>,
    memory: &mut LeaseMemory,
    now: Duration,
    timing: &Timing,
) -> LeaseState {
    let Some(lease) = lease else {
        memory.seen = None;
        return LeaseState::Free;
    };
    let since = match &memory.seen {
        Some((version, since)) if *version == lease.version => *since,
        _ => {
            memory.seen = Some((lease.version.clone(), now));
            now
        }
    };
    match &lease.holder {
        None => LeaseState::Free,
        Some(holder) if now.saturating_sub(since) >= timing.lease_duration => LeaseState::Expired {
            holder: holder.clone(),
        },
        Some(holder) => LeaseState::Held {
            holder: holder.clone(),
        },
    }
}

/// What the agent does with the Lease this poll.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseStep {
    /// This pod holds it (or held it last and nobody took it since): renew.
    Renew,
    /// Another pod holds it: follow that primary.
    Follow { primary: String },
    /// Nobody holds it: compare with the peers and let the most advanced take it.
    Elect { previous: Option<String> },
    /// It expired, but the last failover was less than a cooldown ago.
    Cooldown { previous: String, left: Duration },
}

pub fn lease_step(
    me: &str,
    state: &LeaseState,
    lease: Option<&LeaseRecord>,
    wall: SystemTime,
    timing: &Timing,
) -> LeaseStep {
    match state {
        LeaseState::Held { holder } | LeaseState::Expired { holder } if holder == me => {
            LeaseStep::Renew
        }
        LeaseState::Held { holder } => LeaseStep::Follow {
            primary: holder.clone(),
        },
        LeaseState::Free => LeaseStep::Elect { previous: None },
        LeaseState::Expired { holder } => {
            // The first acquisition is not a failover; every later change of holder is.
            let failover_at = lease.filter(|l| l.transitions > 0).and_then(|l| l.acquired);
            let elapsed = failover_at.map(|at| wall.duration_since(at).unwrap_or_default());
            match elapsed {
                Some(elapsed) if elapsed < timing.cooldown => LeaseStep::Cooldown {
                    previous: holder.clone(),
                    left: timing.cooldown - elapsed,
                },
                _ => LeaseStep::Elect {
                    previous: Some(holder.clone()),
                },
            }
        }
    }
}

#[cfg(test)]
#[path = "lease_tests.rs"]
mod tests;
