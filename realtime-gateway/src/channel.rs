//! Channel names, namespaces and who may do what on a channel (pure functions).

use crate::config::{GatewayConfig, NamespaceConfig};
use crate::error::GatewayError;
use nexus_auth::{Claims, Role};

/// Longest channel name accepted.
pub const MAX_CHANNEL_LEN: usize = 255;

/// What a client asks to do on a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Subscribe (client-side).
    Subscribe,
    /// Publish from the client.
    Publish,
    /// Read history.
    History,
    /// Read presence or presence stats.
    Presence,
}

/// The authenticated user behind a connection, from its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// User id (`sub`).
    pub user: String,
    /// Platform roles.
    pub roles: Vec<Role>,
    /// Channels the token names: server-side subscriptions and memberships.
    pub channels: Vec<String>,
}

impl Principal {
    /// The principal of verified claims.
    pub fn from_claims(claims: &Claims) -> Self {
        Principal {
            user: claims.sub.clone(),
            roles: claims.roles.clone(),
            channels: claims.channels.clone().unwrap_or_default(),
        }
    }

    fn is_admin(&self) -> bool {
        self.roles.contains(&Role::Admin)
    }

    fn is_member(&self, channel: &str) -> bool {
        self.is_admin() || self.channels.iter().any(|c| c == channel)
    }
}

/// The namespace key of a channel: its name up to the first `:` or `#`.
pub fn namespace_key(channel: &str) -> &str {
    let end = channel.find([':', '#']).unwrap_or(channel.len());
    &channel[..end]
}

/// The users a `#`-limited channel is restricted to (`user#7` → `["7"]`, `dm#1,2` → `["1","2"]`).
pub fn allowed_users(channel: &str) -> Option<impl Iterator<Item = &str>> {
    channel
        .split_once('#')
        .map(|(_, users)| users.split(',').filter(|u| !u.is_empty()))
}

/// Resolves the namespace of `channel`, refusing malformed names.
pub fn resolve<'c>(
    config: &'c GatewayConfig,
    channel: &str,
) -> Result<&'c NamespaceConfig, GatewayError> {
    if channel.is_empty()
        || channel.len() > MAX_CHANNEL_LEN
        || channel.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(GatewayError::UnknownChannel);
    }
    config
        .namespace(channel)
        .ok_or(GatewayError::UnknownChannel)
}

/// Whether `who` may perform `action` on `channel` of namespace `ns`.
///
/// Order of checks: personal (`#`) channels admit only their users; `members_only`
/// namespaces admit members (token `channels` claim) and admins; `allowed_roles` must
/// intersect the user's roles (admins pass); publish also needs `allow_publish`; history and
/// presence need the feature on (else [`GatewayError::NotAvailable`]).
pub fn check(
    ns: &NamespaceConfig,
    channel: &str,
    who: &Principal,
    action: Action,
) -> Result<(), GatewayError> {
    match action {
        Action::History if !ns.history_enabled() => return Err(GatewayError::NotAvailable),
        Action::Presence if !ns.presence => return Err(GatewayError::NotAvailable),
        Action::Publish if !ns.allow_publish => return Err(GatewayError::PermissionDenied),
        _ => {}
    }
    if let Some(mut users) = allowed_users(channel)
        && !users.any(|u| u == who.user)
    {
        return Err(GatewayError::PermissionDenied);
    }
    if ns.members_only && !who.is_member(channel) {
        return Err(GatewayError::PermissionDenied);
    }
    if !ns.allowed_roles.is_empty()
        && !who.is_admin()
        && !ns.allowed_roles.iter().any(|r| who.roles.contains(r))
    {
        return Err(GatewayError::PermissionDenied);
    }
    Ok(())
}

/// Glob match for the `channels` API: `*` matches any run of characters.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ni < n.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if pi < p.len() && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(user: &str, roles: &[Role], channels: &[&str]) -> Principal {
        Principal {
            user: user.into(),
            roles: roles.to_vec(),
            channels: channels.iter().map(|c| c.to_string()).collect(),
        }
    }

    fn can(channel: &str, p: &Principal, a: Action) -> Result<(), GatewayError> {
        let c = GatewayConfig::default();
        check(resolve(&c, channel)?, channel, p, a)
    }

    #[test]
    fn namespace_keys() {
        assert_eq!(namespace_key("incidents"), "incidents");
        assert_eq!(namespace_key("class:42"), "class");
        assert_eq!(namespace_key("user#7"), "user");
        assert_eq!(
            allowed_users("dm#1,2").unwrap().collect::<Vec<_>>(),
            ["1", "2"]
        );
        assert!(allowed_users("class:1").is_none());
    }

    #[test]
    fn feeds_are_readable_by_all_and_writable_by_none() {
        let p = who("u1", &[Role::Responder], &[]);
        assert!(can("incidents", &p, Action::Subscribe).is_ok());
        assert!(can("alerts", &p, Action::History).is_ok());
        assert!(matches!(
            can("incidents", &p, Action::Publish),
            Err(GatewayError::PermissionDenied)
        ));
        assert!(matches!(
            can("incidents", &p, Action::Presence),
            Err(GatewayError::NotAvailable)
        ));
    }

    #[test]
    fn rooms_admit_members_and_admins_only() {
        let member = who("u1", &[Role::Student], &["class:42"]);
        let stranger = who("u2", &[Role::Student], &["class:41"]);
        let admin = who("root", &[Role::Admin], &[]);
        assert!(can("class:42", &member, Action::Subscribe).is_ok());
        assert!(can("class:42", &member, Action::Publish).is_ok());
        assert!(can("class:42", &member, Action::Presence).is_ok());
        assert!(matches!(
            can("class:42", &stranger, Action::Subscribe),
            Err(GatewayError::PermissionDenied)
        ));
        assert!(can("consult:9", &admin, Action::Subscribe).is_ok());
    }

    #[test]
    fn personal_channels_admit_their_user_only() {
        assert!(can("user#7", &who("7", &[], &[]), Action::Subscribe).is_ok());
        assert!(can("user#7", &who("8", &[], &[]), Action::Subscribe).is_err());
        assert!(
            can(
                "user#7",
                &who("root", &[Role::Admin], &[]),
                Action::Subscribe
            )
            .is_err()
        );
        assert!(can("user#7", &who("7", &[], &[]), Action::Publish).is_err());
    }

    #[test]
    fn unknown_and_malformed_channels() {
        let p = who("u", &[], &[]);
        assert!(matches!(
            can("nope", &p, Action::Subscribe),
            Err(GatewayError::UnknownChannel)
        ));
        assert!(matches!(
            can("", &p, Action::Subscribe),
            Err(GatewayError::UnknownChannel)
        ));
        assert!(matches!(
            can("class: 1", &p, Action::Subscribe),
            Err(GatewayError::UnknownChannel)
        ));
    }

    #[test]
    fn allowed_roles_restrict_subscribers() {
        let mut ns = NamespaceConfig::new("ops");
        ns.allowed_roles = vec![Role::Coordinator];
        assert!(
            check(
                &ns,
                "ops",
                &who("c", &[Role::Coordinator], &[]),
                Action::Subscribe
            )
            .is_ok()
        );
        assert!(
            check(
                &ns,
                "ops",
                &who("p", &[Role::Patient], &[]),
                Action::Subscribe
            )
            .is_err()
        );
        assert!(
            check(
                &ns,
                "ops",
                &who("a", &[Role::Admin], &[]),
                Action::Subscribe
            )
            .is_ok()
        );
    }

    #[test]
    fn globs() {
        assert!(glob_match("*", "anything"));
        assert!(glob_match("class:*", "class:42"));
        assert!(!glob_match("class:*", "consult:42"));
        assert!(glob_match("*:4*", "class:42"));
        assert!(glob_match("incidents", "incidents"));
        assert!(!glob_match("incident", "incidents"));
    }
}
