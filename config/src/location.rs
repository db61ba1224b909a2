//! Turning byte offsets in the file into what a person reads: `line:column` and the dotted key.

use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = text[line_start..offset].chars().count() + 1;
    (line, column)
}

/// The dotted key (`dhcp.range`, `dhcp.dns[1]`) whose key or value covers byte `offset`, if any.
pub fn key_at(text: &str, offset: usize) -> Option<String> {
    let (root, _errors) = DeTable::parse_recoverable(text);
    let mut path = Vec::new();
    if find_in_table(root.get_ref(), offset, &mut path) {
        Some(join(&path))
    } else {
        None
    }
}

/// For a file that does not parse: the key on the line holding `offset`, prefixed by its `[table]` header.
pub fn key_on_line(text: &str, offset: usize) -> Option<String> {
    let (line, _) = line_col(text, offset);
    let mut table: Option<String> = None;
    for (i, raw) in text.split('\n').enumerate() {
        let l = raw.trim();
        let key = l
            .split_once('=')
            .map(|(k, _)| k.trim())
            .filter(|k| is_plain_key(k));
        if i + 1 == line {
            return match (key, &table) {
                (Some(k), Some(t)) => Some(format!("{t}.{k}")),
                (Some(k), None) => Some(k.to_owned()),
                (None, _) if l.starts_with('[') => header(l),
                (None, t) => t.clone(),
            };
        }
        if l.starts_with('[') {
            table = header(l);
        }
    }
    table
}

fn header(line: &str) -> Option<String> {
    let inner = line.trim_start_matches('[').split(']').next()?.trim();
    is_plain_key(inner).then(|| inner.to_owned())
}

fn is_plain_key(k: &str) -> bool {
    !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ' ' | '"'))
}

fn covers(span: &Range<usize>, offset: usize) -> bool {
    span.contains(&offset) || (span.is_empty() && span.start == offset)
}

enum Part {
    Key(String),
    Index(usize),
}

fn join(path: &[Part]) -> String {
    let mut out = String::new();
    for part in path {
        match part {
            Part::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Part::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

fn find_in_table(table: &DeTable<'_>, offset: usize, path: &mut Vec<Part>) -> bool {
    for (key, value) in table {
        path.push(Part::Key(key.get_ref().to_string()));
        // Children first: a `[table]` header's own span need not cover its body.
        if find_in_value(value, offset, path) || covers(&key.span(), offset) {
            return true;
        }
        if covers(&value.span(), offset) {
            return true;
        }
        path.pop();
    }
    false
}

fn find_in_value(value: &Spanned<DeValue<'_>>, offset: usize, path: &mut Vec<Part>) -> bool {
    match value.get_ref() {
        DeValue::Table(t) => find_in_table(t, offset, path),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                path.push(Part::Index(i));
                if find_in_value(item, offset, path) || covers(&item.span(), offset) {
                    return true;
                }
                path.pop();
            }
            false
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based_in_characters() {
        let text = "a = 1\n[dhcp]\nrange = \"x\"\n# ü\nb = 2";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, text.find("range").unwrap()), (3, 1));
        assert_eq!(line_col(text, text.find("\"x\"").unwrap()), (3, 9));
        assert_eq!(line_col(text, text.find("b =").unwrap()), (5, 1));
        assert_eq!(line_col(text, text.len()), (5, 6));
    }

    #[test]
    fn finds_dotted_keys_and_array_indexes() {
        let text = "version = 1\n[dhcp]\nrange = \"x\"\ndns = [\"1.1.1.1\", \"bad\"]\n[network]\nvlan = 0\n";
        let at = |needle: &str| key_at(text, text.find(needle).unwrap());
        assert_eq!(at("1\n").as_deref(), Some("version"));
        assert_eq!(at("\"x\"").as_deref(), Some("dhcp.range"));
        assert_eq!(at("range").as_deref(), Some("dhcp.range"));
        assert_eq!(at("\"bad\"").as_deref(), Some("dhcp.dns[1]"));
        assert_eq!(at("0\n").as_deref(), Some("network.vlan"));
    }

    #[test]
    fn inline_and_dotted_tables() {
        let text = "network = { vlan = 0 }\ndhcp.lease_time = \"1x\"\n";
        let at = |needle: &str| key_at(text, text.find(needle).unwrap());
        assert_eq!(at("0 }").as_deref(), Some("network.vlan"));
        assert_eq!(at("\"1x\"").as_deref(), Some("dhcp.lease_time"));
    }

    #[test]
    fn key_on_a_broken_line() {
        let text = "[network]\nvlan = 20x0\n[dhcp]\n";
        assert_eq!(
            key_on_line(text, text.find("x0").unwrap()).as_deref(),
            Some("network.vlan")
        );
        assert_eq!(
            key_on_line(text, text.find("[dhcp]").unwrap()).as_deref(),
            Some("dhcp")
        );
    }
}
