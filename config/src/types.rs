//! Value types of `cluster-lab.toml` that check themselves while they are parsed.
//!
//! Each newtype's `Deserialize` rejects impossible values with a message that says what is allowed, so the
//! error points at the value in the file (the loader adds file, line, column and key).

use std::fmt;
use std::marker::PhantomData;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use ipnetwork::Ipv4Network;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::duration::{format_duration, parse_duration};

/// Longest cluster name accepted: it travels in a DHCP option and becomes part of names on the nodes.
pub const CLUSTER_NAME_MAX: usize = 63;
/// Linux interface names are at most 15 bytes (IFNAMSIZ minus the NUL).
pub const IFNAME_MAX: usize = 15;

/// A value parsed from a TOML string; `EXPECTING` completes "expected ..." in type errors.
trait FromTomlStr: Sized {
    const EXPECTING: &'static str;
    fn from_toml_str(s: &str) -> Result<Self, String>;
}

struct StrVisitor<T>(PhantomData<T>);

impl<T: FromTomlStr> Visitor<'_> for StrVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(T::EXPECTING)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        T::from_toml_str(v).map_err(E::custom)
    }
}

macro_rules! deserialize_from_str {
    ($($ty:ty),* $(,)?) => {$(
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_str(StrVisitor::<$ty>(PhantomData))
            }
        }
        impl FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                <$ty as FromTomlStr>::from_toml_str(s)
            }
        }
    )*};
}

deserialize_from_str!(
    ClusterName,
    Secret,
    Hostname,
    SshKey,
    PasswordHash,
    InterfaceName,
    Subnet,
    Addr,
    AddrRange,
    AbsPath
);

/// `version`: the schema version; only 1 exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaVersion(pub u32);

impl<'de> Deserialize<'de> for SchemaVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = SchemaVersion;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("the integer 1 (the only schema version)")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<SchemaVersion, E> {
                if v == 1 {
                    Ok(SchemaVersion(1))
                } else {
                    Err(E::custom(format!(
                        "schema version {v} is not supported; this cluster-lab reads version 1 \
                         (write `version = 1` or leave the key out)"
                    )))
                }
            }
        }
        d.deserialize_i64(V)
    }
}

/// `network.vlan`: an 802.1Q VLAN id, 1–4094 (0 and 4095 are reserved by the standard).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VlanId(pub u16);

impl<'de> Deserialize<'de> for VlanId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = VlanId;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a VLAN id, an integer 1–4094")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<VlanId, E> {
                if (1..=4094).contains(&v) {
                    Ok(VlanId(v as u16))
                } else {
                    Err(E::custom(format!(
                        "VLAN id must be 1–4094, got {v} (0 and 4095 are reserved by 802.1Q)"
                    )))
                }
            }
        }
        d.deserialize_i64(V)
    }
}

/// `cluster.name`: 1–63 characters `A-Z a-z 0-9 . _ -`, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterName(pub String);

impl FromTomlStr for ClusterName {
    const EXPECTING: &'static str = "a cluster name string such as \"cluster-lab\"";
    fn from_toml_str(s: &str) -> Result<Self, String> {
        const ALLOWED: &str =
            "1–63 characters from A-Z a-z 0-9 . _ - starting with a letter or digit";
        if s.is_empty() {
            return Err(format!("the cluster name is empty; use {ALLOWED}"));
        }
        if s.len() > CLUSTER_NAME_MAX {
            return Err(format!(
                "the cluster name is {} characters long; use {ALLOWED}",
                s.chars().count()
            ));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(format!(
                "the cluster name {s:?} contains {c:?}; use {ALLOWED}"
            ));
        }
        if !s.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return Err(format!(
                "the cluster name {s:?} must start with a letter or digit; use {ALLOWED}"
            ));
        }
        Ok(ClusterName(s.to_owned()))
    }
}

/// `cluster.secret`: at least 32 printable ASCII characters, no spaces, of at least 8 different characters —
/// 128 bits or more when written as hex, as `openssl rand -hex 16` (the image builder writes 256 random bits).
///
/// Never printed: `Debug` shows `Secret(<set>)`, and there is no `Display`. [`Secret::expose`] is the one way to the
/// text, for the key derivations that need it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret's text, for deriving keys from it. Do not print it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("Secret(<set>)")
    }
}

/// Shortest secret accepted: 32 hex digits carry 128 bits; any other alphabet carries more per character.
pub const SECRET_MIN: usize = 32;
/// Fewest different characters in a secret: a long run of few characters (`aaaa…`, `abab…`) is not random.
pub const SECRET_MIN_DISTINCT: usize = 8;

impl FromTomlStr for Secret {
    const EXPECTING: &'static str = "a secret string (the image builder writes a random one)";
    fn from_toml_str(s: &str) -> Result<Self, String> {
        const HOW: &str = "generate one with `openssl rand -hex 32`, or remove the key and let \
                           `cargo xtask image` write one";
        if !s.chars().all(|c| c.is_ascii_graphic()) {
            return Err(format!(
                "the secret must be printable ASCII without spaces; {HOW}"
            ));
        }
        if s.len() < SECRET_MIN {
            return Err(format!(
                "the secret is {} characters long; it must be at least {SECRET_MIN} printable \
                 characters (128 bits as hex); {HOW}",
                s.len()
            ));
        }
        let distinct = s.bytes().collect::<std::collections::BTreeSet<u8>>().len();
        if distinct < SECRET_MIN_DISTINCT {
            return Err(format!(
                "the secret uses only {distinct} different characters, too few to be random \
                 (at least {SECRET_MIN_DISTINCT}); {HOW}"
            ));
        }
        Ok(Secret(s.to_owned()))
    }
}

/// `node.hostname`: one RFC 1123 label (1–63 of `a-z A-Z 0-9 -`, not starting or ending with `-`), kept in lower
/// case. The one hostname rule: the agent (config file, user-data, the system's name), `cargo xtask flash` and the
/// image library all parse through it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hostname(String);

impl Hostname {
    /// Check `s` against the hostname rule; the error names the value and says what is allowed
    /// (`hostname "node_1": "node_1" contains '_'; use …`), for messages outside a TOML file.
    pub fn parse(s: &str) -> Result<Hostname, String> {
        Hostname::from_toml_str(s).map_err(|e| format!("hostname {s:?}: {e}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Hostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromTomlStr for Hostname {
    const EXPECTING: &'static str = "a hostname string such as \"node1\"";
    fn from_toml_str(s: &str) -> Result<Self, String> {
        const ALLOWED: &str = "a single label of 1–63 letters, digits and '-', \
                               not starting or ending with '-' (RFC 1123), e.g. \"node1\"";
        if s.is_empty() {
            return Err(format!("the hostname is empty; use {ALLOWED}"));
        }
        if s.contains('.') {
            return Err(format!(
                "{s:?} is not a single label (no dots; the domain comes from the network); use {ALLOWED}"
            ));
        }
        if s.len() > 63 {
            return Err(format!(
                "{s:?} is {} characters long; use {ALLOWED}",
                s.chars().count()
            ));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            return Err(format!("{s:?} contains {c:?}; use {ALLOWED}"));
        }
        if s.starts_with('-') || s.ends_with('-') {
            return Err(format!("{s:?} starts or ends with '-'; use {ALLOWED}"));
        }
        Ok(Hostname(s.to_ascii_lowercase()))
    }
}

/// OpenSSH public key types accepted in `node.ssh_authorized_keys`.
pub const SSH_KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// One `node.ssh_authorized_keys` entry: `TYPE BASE64 [COMMENT]`, as in a `.pub` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshKey(String);

impl SshKey {
    /// The key line as in a `.pub` file.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromTomlStr for SshKey {
    const EXPECTING: &'static str = "an OpenSSH public key string, the contents of a .pub file";
    fn from_toml_str(s: &str) -> Result<Self, String> {
        let hint = "give one public key per string, as in a .pub file: \
                    \"ssh-ed25519 AAAA... user@host\"";
        let line = s.trim();
        if line.contains('\n') || line.contains('\r') {
            return Err(format!("the key spans several lines; {hint}"));
        }
        if line.starts_with("-----") || line.contains("PRIVATE KEY") {
            return Err(format!(
                "this looks like a private key; never put it here; {hint}"
            ));
        }
        let mut fields = line.split_ascii_whitespace();
        let kind = fields.next().unwrap_or("");
        if !SSH_KEY_TYPES.contains(&kind) {
            let shown: String = kind.chars().take(40).collect();
            return Err(format!(
                "{shown:?} is not a known SSH public key type (allowed: {}); {hint}",
                SSH_KEY_TYPES.join(", ")
            ));
        }
        let blob = fields.next().unwrap_or("");
        let base64 = |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=');
        if blob.len() < 16 || !blob.chars().all(base64) {
            return Err(format!(
                "the key data after {kind:?} is missing or not base64; {hint}"
            ));
        }
        Ok(SshKey(line.to_owned()))
    }
}

/// `node.password_hash`: a crypt(3) hash as it goes into /etc/shadow (`$y$…`, `$6$…`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordHash(pub String);

impl FromTomlStr for PasswordHash {
    const EXPECTING: &'static str = "a crypt(3) password hash string such as \"$y$j9T$...\"";
    fn from_toml_str(s: &str) -> Result<Self, String> {
        let hint = "give a crypt(3) hash made with `mkpasswd -m yescrypt` or `openssl passwd -6`, \
                    never the password itself";
        if !s.starts_with('$') || s.len() < 20 {
            return Err(format!("this is not a password hash; {hint}"));
        }
        if s.chars()
            .any(|c| c == ':' || c.is_whitespace() || c.is_control())
        {
            return Err(format!(
                "a password hash cannot contain ':' or whitespace; {hint}"
            ));
        }
        Ok(PasswordHash(s.to_owned()))
    }
}

/// `network.interface`: a Linux interface name (1–15 bytes, no '/', ':' or whitespace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceName(pub String);

impl FromTomlStr for InterfaceName {
    const EXPECTING: &'static str = "an interface name string such as \"eth0\"";
    fn from_toml_str(s: &str) -> Result<Self, String> {
        const ALLOWED: &str = "a Linux interface name of 1–15 characters without '/', ':', \
                               '.' or whitespace, e.g. \"eth0\"";
        if s.is_empty() || s.len() > IFNAME_MAX {
            return Err(format!("{s:?} is {} bytes long; use {ALLOWED}", s.len()));
        }
        if let Some(c) = s.chars().find(|c| {
            matches!(c, '/' | ':' | '.') || c.is_whitespace() || c.is_control() || !c.is_ascii()
        }) {
            return Err(format!("{s:?} contains {c:?}; use {ALLOWED}"));
        }
        Ok(InterfaceName(s.to_owned()))
    }
}

/// `network.subnet`: an IPv4 network in CIDR form with host bits clear, /8 to /30.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet(pub Ipv4Network);

impl FromTomlStr for Subnet {
    const EXPECTING: &'static str = "an IPv4 subnet string such as \"192.168.200.0/24\"";
    fn from_toml_str(s: &str) -> Result<Self, String> {
        let example = "e.g. \"192.168.200.0/24\"";
        let Some((addr, prefix)) = s.split_once('/') else {
            return Err(format!(
                "{s:?} has no prefix length; write the subnet in CIDR form, {example}"
            ));
        };
        let addr: Ipv4Addr = addr.parse().map_err(|_| {
            format!("{s:?} is not an IPv4 subnet; write it in CIDR form, {example}")
        })?;
        let prefix: u8 = prefix.parse().ok().filter(|p| *p <= 32).ok_or_else(|| {
            format!("{s:?} has an invalid prefix length; use /8 to /30, {example}")
        })?;
        if !(8..=30).contains(&prefix) {
            return Err(format!(
                "/{prefix} is not allowed; the subnet needs room for the master and at least one \
                 node and must not be larger than a /8: use /8 to /30, {example}"
            ));
        }
        let net = Ipv4Network::new(addr, prefix).map_err(|e| format!("{s:?}: {e}"))?;
        if net.network() != addr {
            return Err(format!(
                "{s:?} has host bits set; write the network address: \"{}/{prefix}\"",
                net.network()
            ));
        }
        Ok(Subnet(net))
    }
}

/// An IPv4 address in dotted-quad form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addr(pub Ipv4Addr);

impl FromTomlStr for Addr {
    const EXPECTING: &'static str = "an IPv4 address string such as \"192.168.200.1\"";
    fn from_toml_str(s: &str) -> Result<Self, String> {
        s.parse().map(Addr).map_err(|_| {
            format!("{s:?} is not an IPv4 address; write four numbers 0–255 separated by dots, e.g. \"192.168.200.1\"")
        })
    }
}

/// `dhcp.range`: `"FIRST-LAST"`, both inclusive, FIRST <= LAST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddrRange {
    pub start: Ipv4Addr,
    pub end: Ipv4Addr,
}

impl AddrRange {
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.start <= ip && ip <= self.end
    }
}

impl fmt::Display for AddrRange {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

impl FromTomlStr for AddrRange {
    const EXPECTING: &'static str =
        "an address range string such as \"192.168.200.101-192.168.200.200\"";
    fn from_toml_str(s: &str) -> Result<Self, String> {
        let example = "e.g. \"192.168.200.101-192.168.200.200\"";
        let parsed = s.split_once('-').and_then(|(a, b)| {
            Some((
                a.trim().parse::<Ipv4Addr>().ok()?,
                b.trim().parse::<Ipv4Addr>().ok()?,
            ))
        });
        let Some((start, end)) = parsed else {
            return Err(format!(
                "{s:?} is not an address range; write FIRST-LAST (both included), {example}"
            ));
        };
        if start > end {
            return Err(format!(
                "{s:?} starts after it ends; write the lower address first: \"{end}-{start}\""
            ));
        }
        Ok(AddrRange { start, end })
    }
}

/// An absolute filesystem path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbsPath(pub PathBuf);

impl FromTomlStr for AbsPath {
    const EXPECTING: &'static str =
        "an absolute path string such as \"/var/lib/cluster-lab/dhcp-leases\"";
    fn from_toml_str(s: &str) -> Result<Self, String> {
        if !s.starts_with('/') {
            return Err(format!(
                "{s:?} is not an absolute path; give a path starting with '/', \
                 e.g. \"/var/lib/cluster-lab/dhcp-leases\""
            ));
        }
        if s.ends_with('/') || s.contains('\0') {
            return Err(format!(
                "{s:?} is not a file path; give a file name, not a directory"
            ));
        }
        Ok(AbsPath(PathBuf::from(s)))
    }
}

/// A duration written as `"1h"`, `"30m"`, `"3600s"`, `"1h30m"`, `"1d"`, or an integer number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as \"1h\", \"30m\", \"90s\" or a number of seconds")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<HumanDuration, E> {
                u64::try_from(v)
                    .map(|s| HumanDuration(Duration::from_secs(s)))
                    .map_err(|_| E::custom(format!("a duration cannot be negative, got {v}")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HumanDuration, E> {
                parse_duration(v).map(HumanDuration).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}
