//! A dry run's plan: what a step would change, one line per action, collected by the library and printed by the
//! CLI (`cluster-lab firstboot --dry-run`). A step given a plan records instead of acting.

use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct Plan {
    lines: Mutex<Vec<String>>,
}

impl Plan {
    /// Record one action that would be taken.
    pub fn note(&self, line: impl Into<String>) {
        self.lines
            .lock()
            .expect("plan lock poisoned")
            .push(line.into());
    }

    /// The actions recorded so far, in order.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("plan lock poisoned").clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_actions_in_order() {
        let plan = Plan::default();
        plan.note("would write /etc/hostname");
        plan.note(String::from("would create VLAN eth0.200"));
        assert_eq!(
            plan.lines(),
            ["would write /etc/hostname", "would create VLAN eth0.200"]
        );
    }
}
