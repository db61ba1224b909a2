//! docs/benchmarks.md: each benchmark and timing owns one section, from its `## ` heading to the next one, and
//! rewrites only that section (the others are kept as they are on disk right before the write).

use std::path::Path;

use anyhow::{Context, Result};

/// Replace (or append) the section whose heading is `section`'s first line.
pub fn write_section(doc: &Path, section: &str) -> Result<()> {
    let heading = section.lines().next().unwrap_or_default().to_owned();
    write_section_at(doc, &heading, section)
}

/// Replace (or append) the section whose heading line starts with `heading`.
pub fn write_section_at(doc: &Path, heading: &str, section: &str) -> Result<()> {
    let text =
        std::fs::read_to_string(doc).with_context(|| format!("reading {}", doc.display()))?;
    let new = replace_section(&text, heading, section);
    std::fs::write(doc, new).with_context(|| format!("writing {}", doc.display()))
}

fn replace_section(text: &str, heading: &str, section: &str) -> String {
    let section = section.trim_end();
    let lines: Vec<&str> = text.lines().collect();
    let Some(start) = lines.iter().position(|l| l.starts_with(heading)) else {
        return format!("{}\n\n{section}\n", text.trim_end());
    };
    let end = lines[start + 1..]
        .iter()
        .position(|l| l.starts_with("## "))
        .map_or(lines.len(), |i| start + 1 + i);
    let mut out = lines[..start].join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    out.push_str(section);
    out.push('\n');
    if end < lines.len() {
        out.push('\n');
        out.push_str(&lines[end..].join("\n"));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_only_its_own_section() {
        let doc = "# Benchmarks\n\nintro\n\n## DHCP server (`cargo xtask bench dhcp`)\n\n(old)\n\n## Agent\n\nkeep\n";
        let section = "## DHCP server (`cargo xtask bench dhcp`)\n\nnew table\n";
        assert_eq!(
            replace_section(doc, section.lines().next().unwrap(), section),
            "# Benchmarks\n\nintro\n\n## DHCP server (`cargo xtask bench dhcp`)\n\nnew table\n\n## Agent\n\nkeep\n"
        );
    }

    #[test]
    fn replaces_a_last_section_and_appends_a_missing_one() {
        let doc = "# B\n\n## DHCP server x\n\n(old)\n";
        assert_eq!(
            replace_section(doc, "## DHCP server x", "## DHCP server x\n\nnew"),
            "# B\n\n## DHCP server x\n\nnew\n"
        );
        // Another bench's section is its own: the DHCP one stays.
        assert_eq!(
            replace_section(doc, "## Flashing y", "## Flashing y\n\nnew"),
            "# B\n\n## DHCP server x\n\n(old)\n\n## Flashing y\n\nnew\n"
        );
        assert_eq!(
            replace_section("# B\n", "## DHCP server x", "## DHCP server x\n\nnew\n"),
            "# B\n\n## DHCP server x\n\nnew\n"
        );
    }

    #[test]
    fn a_heading_prefix_finds_a_section_whose_heading_changed() {
        let doc = "# B\n\n## A\n\na\n\n## Cluster formation (old)\n\nold\n\n## C\n\nc\n";
        assert_eq!(
            replace_section(
                doc,
                "## Cluster formation",
                "## Cluster formation (x)\n\nnew\n"
            ),
            "# B\n\n## A\n\na\n\n## Cluster formation (x)\n\nnew\n\n## C\n\nc\n"
        );
    }
}
