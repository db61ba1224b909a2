//! The acceptance test's verdicts: one PASS/FAIL line per assertion with its evidence, a summary, and
//! `artifacts/report.txt`.

use std::fmt::Write as _;
use std::path::Path;

/// One assertion's outcome.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: String,
    pub pass: bool,
    pub evidence: String,
}

impl Check {
    pub fn pass(name: &str, evidence: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            pass: true,
            evidence: evidence.into(),
        }
    }

    pub fn fail(name: &str, evidence: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            pass: false,
            evidence: evidence.into(),
        }
    }

    /// PASS when `ok`, FAIL otherwise, with the same evidence.
    pub fn verdict(name: &str, ok: bool, evidence: impl Into<String>) -> Check {
        if ok {
            Check::pass(name, evidence)
        } else {
            Check::fail(name, evidence)
        }
    }

    /// A check whose evidence could not even be gathered (SSH down, command failed): FAIL with why.
    pub fn from_result(name: &str, r: anyhow::Result<Check>) -> Check {
        r.unwrap_or_else(|e| Check::fail(name, format!("{e:#}")))
    }
}

/// All verdicts so far; printed as they come.
#[derive(Debug, Default)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    pub fn add(&mut self, c: Check) {
        println!("{}", render(&c));
        self.checks.push(c);
    }

    pub fn failed(&self) -> usize {
        self.checks.iter().filter(|c| !c.pass).count()
    }

    pub fn summary(&self) -> String {
        let mut s = String::new();
        for c in &self.checks {
            let _ = writeln!(s, "{} {}", if c.pass { "PASS" } else { "FAIL" }, c.name);
        }
        let _ = write!(
            s,
            "{} passed, {} failed",
            self.checks.len() - self.failed(),
            self.failed()
        );
        s
    }

    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let mut s = String::new();
        for c in &self.checks {
            s.push_str(&render(c));
            s.push('\n');
        }
        s.push('\n');
        s.push_str(&self.summary());
        s.push('\n');
        std::fs::write(path, s)
    }
}

/// `PASS name` then the evidence indented.
fn render(c: &Check) -> String {
    let mut s = format!("{} {}", if c.pass { "PASS" } else { "FAIL" }, c.name);
    for line in c.evidence.trim_end().lines() {
        s.push_str("\n      ");
        s.push_str(line);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_renders() {
        let mut r = Report::default();
        r.add(Check::pass("a", "x\ny"));
        r.add(Check::from_result(
            "b",
            Err(anyhow::anyhow!("ssh: no route")),
        ));
        assert_eq!(r.failed(), 1);
        assert_eq!(render(&r.checks[0]), "PASS a\n      x\n      y");
        assert!(render(&r.checks[1]).starts_with("FAIL b\n      ssh: no route"));
        assert!(r.summary().ends_with("1 passed, 1 failed"));
    }
}
