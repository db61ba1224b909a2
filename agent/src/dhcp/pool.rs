//! The address pool: who holds which address of the DHCP range, and which address a client should get.
//!
//! Addresses must not change (Swarm and Consul break when they do), so allocation prefers, in order:
//! 1. the address this client (client identifier, else hardware address) holds or last held, even expired;
//! 2. the address it asks for (option 50), if no other client holds or remembers it;
//! 3. the address last held under the same hostname (a re-flashed card keeps its hostname but gets a new client
//!    identifier). An active lease is only taken over when the hardware address matches too, so two machines
//!    flashed by mistake with one hostname do not steal each other's address;
//! 4. the address last held by the same hardware address, once that lease has ended;
//! 5. a deterministic address: FNV-1a hash of the client key modulo the pool size, probing forward for an address
//!    that nobody ever held, so a client that lost every record still tends to land on the same address;
//! 6. when every address has a history, the one whose lease ended longest ago.
//!
//! Times are Unix seconds so they survive restarts; the pool itself never reads the clock.

use std::collections::HashMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// Who a client is: its client identifier (option 61) if it sent one, else its hardware address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ClientKey {
    Id(Vec<u8>),
    Hw(Vec<u8>),
}

impl ClientKey {
    fn hash(&self) -> u64 {
        let (tag, bytes) = match self {
            ClientKey::Id(b) => (b'i', b),
            ClientKey::Hw(b) => (b'h', b),
        };
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in std::iter::once(&tag).chain(bytes.iter()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h
    }
}

/// Colon-separated hex, as `ip link` shows hardware addresses.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Parse what [`hex`] writes.
pub fn parse_hex(s: &str) -> Option<Vec<u8>> {
    if s.is_empty() {
        return Some(Vec::new());
    }
    s.split(':')
        .map(|p| u8::from_str_radix(p, 16).ok())
        .collect()
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientKey::Id(b) => write!(f, "id:{}", hex(b)),
            ClientKey::Hw(b) => write!(f, "hw:{}", hex(b)),
        }
    }
}

impl FromStr for ClientKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("client key {s:?} is not id:<hex> or hw:<hex>");
        let (kind, rest) = s.split_once(':').ok_or_else(bad)?;
        let bytes = parse_hex(rest).ok_or_else(bad)?;
        match kind {
            "id" => Ok(ClientKey::Id(bytes)),
            "hw" => Ok(ClientKey::Hw(bytes)),
            _ => Err(bad()),
        }
    }
}

/// The client asking for an address.
#[derive(Clone, Debug)]
pub struct Client {
    pub key: ClientKey,
    pub hw: Vec<u8>,
    pub hostname: Option<String>,
}

/// What the pool knows about an address that has (had) a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub client: ClientKey,
    pub hw: Vec<u8>,
    pub hostname: Option<String>,
    /// Bound until (Unix seconds); 0 when only ever offered.
    pub expires: u64,
    /// Reserved by an OFFER until (Unix seconds), not persisted.
    pub offered_until: u64,
}

impl Lease {
    /// Whether the address is taken at `now` (bound or offered).
    pub fn held(&self, now: u64) -> bool {
        self.expires > now || self.offered_until > now
    }
}

#[derive(Clone, Debug)]
enum Slot {
    Lease(Lease),
    Quarantined { until: u64 },
}

/// The DHCP range and the state of every address in it.
#[derive(Debug)]
pub struct Pool {
    first: u32,
    size: u32,
    exclude: Vec<Ipv4Addr>,
    slots: HashMap<Ipv4Addr, Slot>,
    by_client: HashMap<ClientKey, Ipv4Addr>,
    by_hw: HashMap<Vec<u8>, Ipv4Addr>,
    by_host: HashMap<String, Ipv4Addr>,
}

impl Pool {
    /// The inclusive range `start..=end`, never handing out any address in `exclude`.
    pub fn new(start: Ipv4Addr, end: Ipv4Addr, exclude: &[Ipv4Addr]) -> Pool {
        let (a, b) = (u32::from(start), u32::from(end));
        let (first, last) = (a.min(b), a.max(b));
        let mut exclude = exclude.to_vec();
        exclude.sort();
        exclude.dedup();
        Pool {
            first,
            size: last.wrapping_sub(first).saturating_add(1),
            exclude,
            slots: HashMap::new(),
            by_client: HashMap::new(),
            by_hw: HashMap::new(),
            by_host: HashMap::new(),
        }
    }

    /// Whether `ip` may be handed out at all.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let n = u32::from(ip);
        n.wrapping_sub(self.first) < self.size && !self.exclude.contains(&ip)
    }

    /// The address `key` holds or last held, with its lease.
    pub fn lease_of(&self, key: &ClientKey) -> Option<(Ipv4Addr, &Lease)> {
        let ip = *self.by_client.get(key)?;
        match self.slots.get(&ip) {
            Some(Slot::Lease(l)) if l.client == *key => Some((ip, l)),
            _ => None,
        }
    }

    /// The lease recorded on `ip`, if any.
    pub fn lease_at(&self, ip: Ipv4Addr) -> Option<&Lease> {
        match self.slots.get(&ip) {
            Some(Slot::Lease(l)) => Some(l),
            _ => None,
        }
    }

    /// Whether `key` may take `ip` now: in the range, not quarantined, not held by another client.
    pub fn available_for(&self, ip: Ipv4Addr, key: &ClientKey, now: u64) -> bool {
        self.contains(ip)
            && match self.slots.get(&ip) {
                None => true,
                Some(Slot::Quarantined { until }) => *until <= now,
                Some(Slot::Lease(l)) => l.client == *key || !l.held(now),
            }
    }

    /// Like [`Self::available_for`] but also refusing addresses another client still remembers.
    fn untouched_for(&self, ip: Ipv4Addr, key: &ClientKey, now: u64) -> bool {
        self.contains(ip)
            && match self.slots.get(&ip) {
                None => true,
                Some(Slot::Quarantined { until }) => *until <= now,
                Some(Slot::Lease(l)) => l.client == *key,
            }
    }

    /// The address to offer `client`, or `None` when the pool is exhausted.
    pub fn choose(
        &self,
        client: &Client,
        requested: Option<Ipv4Addr>,
        now: u64,
    ) -> Option<Ipv4Addr> {
        if let Some((ip, _)) = self.lease_of(&client.key) {
            if self.available_for(ip, &client.key, now) {
                return Some(ip);
            }
        }
        if let Some(ip) = requested.filter(|ip| self.untouched_for(*ip, &client.key, now)) {
            return Some(ip);
        }
        // Clients without a hardware address (hlen 0) share the empty one: it identifies nobody.
        let real_hw = client.hw.iter().any(|b| *b != 0);
        if let Some(name) = &client.hostname {
            if let Some(&ip) = self.by_host.get(name) {
                if let Some(l) = self.lease_at(ip) {
                    let same_name = l.hostname.as_deref() == Some(name.as_str());
                    let same_hw = real_hw && l.hw == client.hw;
                    if same_name && (!l.held(now) || same_hw) && self.contains(ip) {
                        return Some(ip);
                    }
                }
            }
        }
        if let Some(&ip) = self.by_hw.get(&client.hw).filter(|_| real_hw) {
            if matches!(self.lease_at(ip), Some(l) if l.hw == client.hw && !l.held(now))
                && self.contains(ip)
            {
                return Some(ip);
            }
        }
        self.probe(&client.key, now)
    }

    /// Steps 5 and 6 of the allocation order.
    fn probe(&self, key: &ClientKey, now: u64) -> Option<Ipv4Addr> {
        if self.size == 0 {
            return None;
        }
        let start = (key.hash() % u64::from(self.size)) as u32;
        let mut oldest: Option<(u64, Ipv4Addr)> = None;
        for i in 0..self.size {
            let offset = (u64::from(start) + u64::from(i)) % u64::from(self.size);
            let ip = Ipv4Addr::from(self.first.wrapping_add(offset as u32));
            if self.exclude.contains(&ip) {
                continue;
            }
            match self.slots.get(&ip) {
                None => return Some(ip),
                Some(Slot::Quarantined { until }) if *until <= now => return Some(ip),
                Some(Slot::Quarantined { .. }) => {}
                Some(Slot::Lease(l)) if !l.held(now) => {
                    let ended = l.expires.max(l.offered_until);
                    if oldest.is_none_or(|(t, _)| ended < t) {
                        oldest = Some((ended, ip));
                    }
                }
                Some(Slot::Lease(_)) => {}
            }
        }
        oldest.map(|(_, ip)| ip)
    }

    /// Reserve `ip` for `client` until `until` (an OFFER).
    pub fn offer(&mut self, client: &Client, ip: Ipv4Addr, until: u64) {
        let expires = match self.slots.get(&ip) {
            Some(Slot::Lease(l)) if l.client == client.key => l.expires,
            _ => 0,
        };
        self.assign(client, ip, expires, until);
    }

    /// Forget the OFFER made to `key` (it chose another server).
    pub fn cancel_offer(&mut self, key: &ClientKey) {
        if let Some(&ip) = self.by_client.get(key) {
            if let Some(Slot::Lease(l)) = self.slots.get_mut(&ip) {
                l.offered_until = 0;
            }
        }
    }

    /// Bind `ip` to `client` until `expires` (an ACK, or a lease read back from disk).
    pub fn bind(&mut self, client: &Client, ip: Ipv4Addr, expires: u64) {
        self.assign(client, ip, expires, 0);
    }

    fn assign(&mut self, client: &Client, ip: Ipv4Addr, expires: u64, offered_until: u64) {
        // A client holds one address: moving drops the old one.
        if let Some(&prev) = self.by_client.get(&client.key) {
            if prev != ip {
                self.vacate(prev);
            }
        }
        self.vacate(ip);
        self.by_client.insert(client.key.clone(), ip);
        self.by_hw.insert(client.hw.clone(), ip);
        if let Some(name) = &client.hostname {
            self.by_host.insert(name.clone(), ip);
        }
        let lease = Lease {
            client: client.key.clone(),
            hw: client.hw.clone(),
            hostname: client.hostname.clone(),
            expires,
            offered_until,
        };
        self.slots.insert(ip, Slot::Lease(lease));
    }

    /// Empty `ip` and every index entry pointing at it, so the indexes never outgrow the range (a flood of
    /// random hardware addresses cannot grow memory).
    fn vacate(&mut self, ip: Ipv4Addr) {
        if let Some(Slot::Lease(old)) = self.slots.remove(&ip) {
            if self.by_client.get(&old.client) == Some(&ip) {
                self.by_client.remove(&old.client);
            }
            if self.by_hw.get(&old.hw) == Some(&ip) {
                self.by_hw.remove(&old.hw);
            }
            if let Some(name) = &old.hostname {
                if self.by_host.get(name) == Some(&ip) {
                    self.by_host.remove(name);
                }
            }
        }
    }

    /// End `key`'s lease on `ip` at `at`; the address stays remembered for it. False if it was not its lease.
    pub fn release(&mut self, key: &ClientKey, ip: Ipv4Addr, at: u64) -> bool {
        match self.slots.get_mut(&ip) {
            Some(Slot::Lease(l)) if l.client == *key => {
                l.expires = l.expires.min(at);
                l.offered_until = 0;
                true
            }
            _ => false,
        }
    }

    /// Keep `ip` out of the pool until `until` (a client found it in use).
    pub fn quarantine(&mut self, ip: Ipv4Addr, until: u64) {
        self.vacate(ip);
        self.slots.insert(ip, Slot::Quarantined { until });
    }

    /// The system clock was stepped by `delta` seconds: every time kept here moves with it, so what was left of each
    /// lease, offer and quarantine is still left (a step forward must not end every lease at once, nor a step back
    /// lengthen them). 0 ("never bound", "not offered") stays 0.
    pub fn shift(&mut self, delta: i64) {
        let moved = |t: &mut u64| {
            if *t > 0 {
                *t = t.saturating_add_signed(delta).max(1);
            }
        };
        for slot in self.slots.values_mut() {
            match slot {
                Slot::Lease(l) => {
                    moved(&mut l.expires);
                    moved(&mut l.offered_until);
                }
                Slot::Quarantined { until } => moved(until),
            }
        }
    }

    /// Every remembered lease that was ever bound (for compaction).
    pub fn leases(&self) -> impl Iterator<Item = (Ipv4Addr, &Lease)> {
        self.slots.iter().filter_map(|(ip, s)| match s {
            Slot::Lease(l) if l.expires > 0 => Some((*ip, l)),
            _ => None,
        })
    }

    /// Every quarantine still running at `now`.
    pub fn quarantined(&self, now: u64) -> impl Iterator<Item = (Ipv4Addr, u64)> + '_ {
        self.slots.iter().filter_map(move |(ip, s)| match s {
            Slot::Quarantined { until } if *until > now => Some((*ip, *until)),
            _ => None,
        })
    }

    /// Number of leases bound at `now`.
    pub fn active(&self, now: u64) -> usize {
        self.slots
            .values()
            .filter(|s| matches!(s, Slot::Lease(l) if l.expires > now))
            .count()
    }

    /// Sizes of the slot table and its indexes (for tests: none may outgrow the range).
    pub fn table_sizes(&self) -> [usize; 4] {
        [
            self.slots.len(),
            self.by_client.len(),
            self.by_hw.len(),
            self.by_host.len(),
        ]
    }

    /// Number of addresses the pool may hand out.
    pub fn capacity(&self) -> u32 {
        let excluded = self
            .exclude
            .iter()
            .filter(|ip| u32::from(**ip).wrapping_sub(self.first) < self.size);
        self.size.saturating_sub(excluded.count() as u32)
    }
}

#[cfg(test)]
#[path = "pool_tests.rs"]
mod tests;
