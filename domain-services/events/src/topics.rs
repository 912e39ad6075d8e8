//! Topic names: one topic per domain, with a configurable prefix, plus retry and dead-letter
//! topics.
//!
//! The outbox stores the *logical* topic, always with the default prefix (`nexus.users`); a
//! bus maps it to the *physical* topic with [`Topics::physical`], so changing the prefix does
//! not rewrite stored events.

use crate::catalogue::Domain;

/// The default topic prefix.
pub const DEFAULT_PREFIX: &str = "nexus.";

/// Topic naming for one deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    prefix: String,
}

impl Default for Topics {
    fn default() -> Self {
        Topics::new(DEFAULT_PREFIX)
    }
}

impl Topics {
    /// Topics named `<prefix><domain>` (`nexus.` → `nexus.users`).
    pub fn new(prefix: impl Into<String>) -> Self {
        Topics {
            prefix: prefix.into(),
        }
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The logical topic of a domain, as stored in the outbox: `nexus.<domain>`.
    pub fn logical(domain: Domain) -> String {
        format!("{DEFAULT_PREFIX}{}", domain.as_str())
    }

    /// The physical topic of a domain: `<prefix><domain>`.
    pub fn domain(&self, domain: Domain) -> String {
        format!("{}{}", self.prefix, domain.as_str())
    }

    /// Maps a logical (stored) topic to the physical one. Topics outside the `nexus.`
    /// namespace are used as they are.
    pub fn physical(&self, logical: &str) -> String {
        match logical.strip_prefix(DEFAULT_PREFIX) {
            Some(rest) => format!("{}{rest}", self.prefix),
            None => logical.to_string(),
        }
    }

    /// Every domain's physical topic.
    pub fn all(&self) -> Vec<String> {
        Domain::ALL.iter().map(|d| self.domain(*d)).collect()
    }

    /// The retry topic of a physical topic: `<topic>.retry`.
    pub fn retry(topic: &str) -> String {
        format!("{topic}.retry")
    }

    /// The dead-letter topic of a physical topic: `<topic>.dlq`.
    pub fn dlq(topic: &str) -> String {
        format!("{topic}.dlq")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_interface() {
        let t = Topics::default();
        assert_eq!(t.domain(Domain::Users), "nexus.users");
        assert_eq!(t.all().len(), 6);
        assert_eq!(Topics::retry("nexus.crisis"), "nexus.crisis.retry");
        assert_eq!(Topics::dlq("nexus.crisis"), "nexus.crisis.dlq");
        let t = Topics::new("prod.");
        assert_eq!(t.physical("nexus.crisis"), "prod.crisis");
        assert_eq!(t.physical("other"), "other");
        assert_eq!(Topics::logical(Domain::System), "nexus.system");
    }
}
