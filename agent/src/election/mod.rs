//! Master election as a pure state machine: no sockets, no clocks. The firstboot runtime feeds it probe results,
//! ARP-probe results, claims heard from peers and the time, and carries out what it asks for.
//!
//! Protocol (docs/firstboot.md): probe for a master of this cluster (DHCP DISCOVER); if none answers, announce a
//! claim (own MAC + cluster name) on the VLAN for a claim window while listening to others' claims. A candidate
//! that hears a claim from a lower MAC backs off and probes again later; the lowest MAC finishes its window, checks
//! with an ARP probe that nobody holds the master address, and becomes master. A claim marked `master` (sent by an
//! elected master until its DHCP service answers) turns every candidate into a node at once.

pub mod claim;
pub mod runner;
pub mod socket;
pub mod switch_check;

pub use claim::{Claim, Mac};

/// The role a machine ends up with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClusterRole {
    Master,
    Node,
}

/// Durations of the protocol, in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub claim_window: u64,
    pub announce_every: u64,
    pub backoff: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            claim_window: 3_000,
            announce_every: 500,
            backoff: 4_000,
        }
    }
}

/// What the runtime tells the election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Begin (first boot, or after a restart of the agent).
    Start,
    /// A DHCP probe finished; `master_found` if a master of this cluster offered.
    ProbeResult { master_found: bool },
    /// An ARP probe for the master address finished; `taken` if anyone answered or probed for it too.
    ArpResult { taken: bool },
    /// A claim heard on the VLAN.
    Claim(Claim),
    /// Time passed (the runtime calls this at [`Election::deadline`]).
    Tick,
}

/// What the election asks the runtime to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Run a DHCP probe and report [`Input::ProbeResult`].
    Probe,
    /// Broadcast this claim on the VLAN.
    Announce(Claim),
    /// ARP-probe the master address and report [`Input::ArpResult`].
    ArpProbe,
    /// The election is over.
    Decided(ClusterRole),
}

/// Where a candidate is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Idle,
    Probing,
    Claiming { until: u64, next_announce: u64 },
    ArpProbing,
    BackOff { until: u64 },
    Decided(ClusterRole),
}

/// One machine's view of the election.
#[derive(Debug, Clone)]
pub struct Election {
    mac: Mac,
    cluster: String,
    timing: Timing,
    state: State,
    /// When a claim from a lower MAC was last heard.
    lower_heard: Option<u64>,
    /// Rounds backed off so far (for logs and give-up decisions by the runtime).
    pub rounds: u32,
}

impl Election {
    pub fn new(mac: Mac, cluster: &str, timing: Timing) -> Election {
        Election {
            mac,
            cluster: cluster.to_string(),
            timing,
            state: State::Idle,
            lower_heard: None,
            rounds: 0,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// When the runtime must send [`Input::Tick`] next, if a timer is running.
    pub fn deadline(&self) -> Option<u64> {
        match self.state {
            State::Claiming {
                until,
                next_announce,
            } => Some(until.min(next_announce)),
            State::BackOff { until } => Some(until),
            _ => None,
        }
    }

    fn claim(&self, master: bool) -> Claim {
        Claim {
            cluster: self.cluster.clone(),
            mac: self.mac,
            master,
        }
    }

    /// Back-off length: the base plus a spread of up to `backoff` again, picked from the MAC and the round, so two
    /// candidates that collided (both lost each other's claims and ARP-probed together) drift apart instead of
    /// colliding again in lockstep. Deterministic, so the simulation tests are too.
    fn backoff(&self) -> u64 {
        let mut x = u64::from_be_bytes([
            0,
            0,
            self.mac.0[0],
            self.mac.0[1],
            self.mac.0[2],
            self.mac.0[3],
            self.mac.0[4],
            self.mac.0[5],
        ]);
        x ^= u64::from(self.rounds).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        // splitmix64 finaliser: every bit of MAC and round affects the result.
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^= x >> 31;
        self.timing.backoff + x % self.timing.backoff.max(1)
    }

    fn back_off(&mut self, now: u64) -> Vec<Output> {
        self.state = State::BackOff {
            until: now + self.backoff(),
        };
        self.rounds += 1;
        Vec::new()
    }

    fn decide(&mut self, role: ClusterRole) -> Vec<Output> {
        self.state = State::Decided(role);
        vec![Output::Decided(role)]
    }

    fn lower_heard_since(&self, since: u64) -> bool {
        self.lower_heard
            .is_some_and(|t| t + self.timing.claim_window >= since)
    }

    /// Feed one input at time `now` (milliseconds on any monotonic clock).
    pub fn handle(&mut self, now: u64, input: Input) -> Vec<Output> {
        if let State::Decided(_) = self.state {
            return Vec::new();
        }
        match input {
            Input::Claim(c) if c.cluster == self.cluster && c.mac != self.mac => {
                if c.master {
                    return self.decide(ClusterRole::Node);
                }
                if c.mac < self.mac {
                    self.lower_heard = Some(now);
                    if matches!(self.state, State::Claiming { .. }) {
                        return self.back_off(now);
                    }
                }
                Vec::new()
            }
            Input::Claim(_) => Vec::new(),
            Input::Start => {
                self.state = State::Probing;
                vec![Output::Probe]
            }
            Input::ProbeResult { master_found } if self.state == State::Probing => {
                if master_found {
                    return self.decide(ClusterRole::Node);
                }
                if self.lower_heard_since(now) {
                    return self.back_off(now);
                }
                self.state = State::Claiming {
                    until: now + self.timing.claim_window,
                    next_announce: now + self.timing.announce_every,
                };
                vec![Output::Announce(self.claim(false))]
            }
            Input::ArpResult { taken } if self.state == State::ArpProbing => {
                if taken || self.lower_heard_since(now) {
                    return self.back_off(now);
                }
                let mut out = vec![Output::Announce(self.claim(true))];
                out.extend(self.decide(ClusterRole::Master));
                out
            }
            Input::Tick => self.tick(now),
            // Results that arrive in the wrong state (stale) are ignored.
            Input::ProbeResult { .. } | Input::ArpResult { .. } => Vec::new(),
        }
    }

    fn tick(&mut self, now: u64) -> Vec<Output> {
        match self.state {
            State::Claiming {
                until,
                next_announce,
            } => {
                if now >= until {
                    self.state = State::ArpProbing;
                    return vec![Output::ArpProbe];
                }
                if now >= next_announce {
                    self.state = State::Claiming {
                        until,
                        next_announce: now + self.timing.announce_every,
                    };
                    return vec![Output::Announce(self.claim(false))];
                }
                Vec::new()
            }
            State::BackOff { until } if now >= until => {
                self.state = State::Probing;
                vec![Output::Probe]
            }
            _ => Vec::new(),
        }
    }

    /// The claim an elected master keeps broadcasting until its DHCP service answers probes.
    pub fn master_claim(&self) -> Claim {
        self.claim(true)
    }
}

#[cfg(test)]
mod sim;
