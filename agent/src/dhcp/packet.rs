//! Incoming DHCP requests: the raw bytes are checked before dhcproto decodes them, then reduced to the facts the
//! server acts on.
//!
//! The check rejects what no honest client sends and what would trip the decoder: short packets, a wrong magic
//! cookie, replies (op != BOOTREQUEST), hardware addresses longer than 16 bytes, options running past the end of
//! the packet, and options whose length is impossible for their code.

use std::net::Ipv4Addr;

use dhcproto::v4::{DhcpOption, Message, MessageType, OptionCode};
use dhcproto::{Decodable, Decoder};

use super::pool::{Client, ClientKey};

/// Fixed BOOTP header (236 bytes) plus the magic cookie.
pub const HEADER_LEN: usize = 240;
const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];

/// Why a packet was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("{0} bytes, shorter than a DHCP header")]
    Short(usize),
    #[error("op {0} is not BOOTREQUEST")]
    NotRequest(u8),
    #[error("hardware address length {0} is over 16")]
    HardwareLength(u8),
    #[error("bad magic cookie")]
    Cookie,
    #[error("option {0} runs past the end of the packet")]
    TruncatedOption(u8),
    #[error("option {code} has impossible length {len}")]
    OptionLength { code: u8, len: usize },
    #[error("undecodable: {0}")]
    Decode(String),
    #[error("no DHCP message type")]
    NoMessageType,
    #[error("message type {0:?} is not one a client sends")]
    NotClientMessage(MessageType),
    #[error("no client identifier and no hardware address")]
    NoClient,
}

/// A decoded request and what the server needs from it.
#[derive(Debug, Clone)]
pub struct Request {
    pub msg: Message,
    pub kind: MessageType,
    pub client: Client,
    /// Option 61 as sent, echoed in replies (RFC 6842).
    pub client_id: Option<Vec<u8>>,
    /// Option 50.
    pub requested: Option<Ipv4Addr>,
    /// Option 54.
    pub server_id: Option<Ipv4Addr>,
}

/// Check `buf` and decode it.
pub fn parse(buf: &[u8]) -> Result<Request, Malformed> {
    check(buf)?;
    let msg =
        Message::decode(&mut Decoder::new(buf)).map_err(|e| Malformed::Decode(e.to_string()))?;
    let opts = msg.opts();
    let kind = match opts.get(OptionCode::MessageType) {
        Some(DhcpOption::MessageType(t)) => *t,
        _ => return Err(Malformed::NoMessageType),
    };
    if !matches!(
        kind,
        MessageType::Discover
            | MessageType::Request
            | MessageType::Decline
            | MessageType::Release
            | MessageType::Inform
    ) {
        return Err(Malformed::NotClientMessage(kind));
    }
    let client_id = match opts.get(OptionCode::ClientIdentifier) {
        Some(DhcpOption::ClientIdentifier(id)) if !id.is_empty() => Some(id.clone()),
        _ => None,
    };
    // check() guaranteed hlen <= 16, so chaddr() cannot panic.
    let hw = msg.chaddr().to_vec();
    let key = match &client_id {
        Some(id) => ClientKey::Id(id.clone()),
        None if !hw.is_empty() && hw.iter().any(|b| *b != 0) => ClientKey::Hw(hw.clone()),
        None => return Err(Malformed::NoClient),
    };
    let hostname = match opts.get(OptionCode::Hostname) {
        Some(DhcpOption::Hostname(h)) => clean_hostname(h),
        _ => None,
    };
    let requested = match opts.get(OptionCode::RequestedIpAddress) {
        Some(DhcpOption::RequestedIpAddress(ip)) => Some(*ip),
        _ => None,
    };
    let server_id = match opts.get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
        _ => None,
    };
    Ok(Request {
        kind,
        client: Client { key, hw, hostname },
        client_id,
        requested,
        server_id,
        msg,
    })
}

/// A hostname fit for the lease file and the logs, or `None`.
fn clean_hostname(h: &str) -> Option<String> {
    let h = h.trim_end_matches('\0').trim();
    let ok = !h.is_empty()
        && h.len() <= 253
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    ok.then(|| h.to_ascii_lowercase())
}

/// Structural checks on the raw bytes.
pub fn check(buf: &[u8]) -> Result<(), Malformed> {
    if buf.len() < HEADER_LEN {
        return Err(Malformed::Short(buf.len()));
    }
    if buf[0] != 1 {
        return Err(Malformed::NotRequest(buf[0]));
    }
    if buf[2] > 16 {
        return Err(Malformed::HardwareLength(buf[2]));
    }
    if buf[236..240] != MAGIC_COOKIE {
        return Err(Malformed::Cookie);
    }
    // Walk the options, joining consecutive runs of one code as the decoder does (RFC 3396).
    let mut i = HEADER_LEN;
    let mut run: Option<(u8, usize)> = None;
    loop {
        // A missing end option is tolerated: the options simply stop at the end of the packet.
        let code = buf.get(i).copied().unwrap_or(255);
        if code == 0 || code == 255 {
            if let Some((c, len)) = run.take() {
                check_length(c, len)?;
            }
            if code == 255 {
                return Ok(());
            }
            i += 1;
            continue;
        }
        let len = usize::from(*buf.get(i + 1).ok_or(Malformed::TruncatedOption(code))?);
        if i + 2 + len > buf.len() {
            return Err(Malformed::TruncatedOption(code));
        }
        run = match run {
            Some((c, total)) if c == code => Some((c, total + len)),
            Some((c, total)) => {
                check_length(c, total)?;
                Some((code, len))
            }
            None => Some((code, len)),
        };
        i += 2 + len;
    }
}

/// Lengths the decoder (or the server) relies on.
fn check_length(code: u8, len: usize) -> Result<(), Malformed> {
    let ok = match code {
        // message type, requested address, server identifier
        53 => len == 1,
        50 | 54 => len == 4,
        // client identifier, hostname, bulk lease query status
        61 | 12 | 151 => len >= 1,
        // The decoder asserts these lengths.
        152..=155 => len == 4,
        80 => len == 0,
        81 => len >= 3,
        94 => len == 3,
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(Malformed::OptionLength { code, len })
    }
}

#[cfg(test)]
#[path = "packet_tests.rs"]
mod tests;
