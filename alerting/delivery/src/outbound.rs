//! The outbound-request guard (server-side request forgery): requests to URLs that come from
//! outside — CAP feeds and the CAP documents they link, Web Push endpoints that browsers
//! hand us — must not reach the server's own network.
//!
//! An [`OutboundPolicy`] refuses every address that is not globally routable: unspecified,
//! loopback, private (RFC 1918, unique-local `fc00::/7`), shared (CGNAT `100.64.0.0/10`),
//! link-local (`169.254.0.0/16` — cloud metadata endpoints live there — and `fe80::/10`),
//! multicast, broadcast, reserved, benchmarking and documentation ranges, and IPv6 forms
//! that embed such an IPv4 address (mapped, NAT64, 6to4). Networks the operator lists
//! ([`OutboundPolicy::allowing`]) are let through anyway.
//!
//! The check happens **after DNS resolution**, inside the HTTP client ([`OutboundPolicy::client`]
//! installs a resolver that refuses a name if *any* of its addresses is refused, so a
//! rebinding answer mixing a public and a private address does not slip through), on IP
//! literals in URLs (which never reach a resolver), and again on every redirect hop. The
//! client also ignores proxy environment variables (a proxy would resolve names itself).
//!
//! [`fetch`] does all of it for a `GET`. For other requests (a Web Push `POST`) build the
//! client with [`OutboundPolicy::client`] and call [`OutboundPolicy::check_url`] on the URL
//! before sending: IP-literal hosts never reach the resolver. The server builds the policy
//! from `NEXUS_OUTBOUND_ALLOW` (`server/src/alert_ingest.rs`, `outbound_policy`).
//!
//! ```no_run
//! use nexus_alert_delivery::outbound::{OutboundPolicy, fetch};
//! use std::time::Duration;
//! # async fn run() -> Result<(), nexus_alert_delivery::FetchError> {
//! let policy = OutboundPolicy::default(); // nothing private allowed
//! let client = policy.client(Duration::from_secs(10))?;
//! let url = reqwest::Url::parse("https://alerts.example.org/feed.atom").unwrap();
//! let got = fetch(&client, &policy, &url, &[("accept", "application/atom+xml")], 1 << 20).await?;
//! assert!(got.body.len() <= 1 << 20);
//! # Ok(()) }
//! ```

use crate::error::FetchError;
use ipnet::IpNet;
use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Most redirects followed by a guarded client.
pub const MAX_REDIRECTS: usize = 5;

/// Which destinations outgoing requests may reach: every globally routable address, plus
/// the networks the operator allows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboundPolicy {
    allow: Vec<IpNet>,
}

/// Why the guard refused a destination (the error inside a refused request).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

impl OutboundPolicy {
    /// A policy that also lets `allow` through (e.g. `127.0.0.0/8` for a feed served on the
    /// same machine, or the internal network of a national hub mirror).
    pub fn allowing(allow: Vec<IpNet>) -> Self {
        OutboundPolicy { allow }
    }

    /// The networks let through although not public.
    pub fn allowed(&self) -> &[IpNet] {
        &self.allow
    }

    /// Whether a request may go to `ip`.
    pub fn permits(&self, ip: IpAddr) -> bool {
        !is_internal(ip) || self.allow.iter().any(|n| n.contains(&ip))
    }

    /// Checks what can be checked before resolution: the scheme (`http`, `https`) and an IP
    /// literal host.
    pub fn check_url(&self, url: &Url) -> Result<(), Refusal> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Refusal(format!(
                "scheme {}: only http and https may be fetched",
                url.scheme()
            )));
        }
        let Some(host) = url.host_str() else {
            return Err(Refusal("the URL has no host".into()));
        };
        // The URL parser has normalised IPv4 forms (`0x7f000001`, `2130706433`) already.
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        let Ok(ip) = literal.parse::<IpAddr>() else {
            return Ok(()); // a name: checked when resolved
        };
        if self.permits(ip) {
            Ok(())
        } else {
            Err(Refusal(format!(
                "{ip} is a private, loopback, link-local, multicast or otherwise non-public address"
            )))
        }
    }

    /// An HTTP client that enforces this policy on every connection and redirect, with a
    /// total `timeout` per request (and a connect timeout of at most 5 s).
    pub fn client(&self, timeout: Duration) -> Result<reqwest::Client, FetchError> {
        let redirects = self.clone();
        self.builder(timeout)
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= MAX_REDIRECTS {
                    return attempt.error(Refusal(format!("more than {MAX_REDIRECTS} redirects")));
                }
                match redirects.check_url(attempt.url()) {
                    Ok(()) => attempt.follow(),
                    Err(refusal) => attempt.error(refusal),
                }
            }))
            .build()
            .map_err(|e| FetchError::Http(e.to_string()))
    }

    /// Like [`OutboundPolicy::client`], but redirects are answers, never followed (a Web
    /// Push `POST` goes to the endpoint the subscriber registered, nowhere else).
    pub fn client_without_redirects(
        &self,
        timeout: Duration,
    ) -> Result<reqwest::Client, FetchError> {
        self.builder(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| FetchError::Http(e.to_string()))
    }

    fn builder(&self, timeout: Duration) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver {
                policy: self.clone(),
            }))
    }
}

/// Resolves through the system resolver, then refuses the name if any address is refused.
struct GuardedResolver {
    policy: OutboundPolicy,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if let Some(bad) = addrs.iter().find(|a| !policy.permits(a.ip())) {
                return Err(Box::new(Refusal(format!(
                    "{host} resolves to {}, a private, loopback, link-local, multicast or otherwise non-public address",
                    bad.ip()
                )))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// Whether `ip` is not a globally routable unicast address.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => is_internal_v6(v6),
    }
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    a == 0                                   // "this network", unspecified
        || a == 10                           // private
        || a == 127                          // loopback
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 169 && b == 254)            // link-local (cloud metadata)
        || (a == 172 && (16..32).contains(&b)) // private
        || (a == 192 && b == 168)            // private
        || (a == 192 && b == 0 && c == 0)    // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2)    // documentation
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || (a == 198 && b == 51 && c == 100) // documentation
        || (a == 203 && b == 0 && c == 113)  // documentation
        || a >= 224 // multicast, reserved, broadcast
}

fn is_internal_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_internal_v4(v4);
    }
    // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) carry an IPv4 destination.
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        return is_internal_v4(Ipv4Addr::new(
            (s[6] >> 8) as u8,
            s[6] as u8,
            (s[7] >> 8) as u8,
            s[7] as u8,
        ));
    }
    if s[0] == 0x2002 {
        return is_internal_v4(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
    }
    ip.is_unspecified()
        || ip.is_loopback()
        || s[0..6] == [0, 0, 0, 0, 0, 0]   // IPv4-compatible (deprecated)
        || (s[0] & 0xfe00) == 0xfc00      // unique local
        || (s[0] & 0xffc0) == 0xfe80      // link-local
        || (s[0] & 0xffc0) == 0xfec0      // site-local (deprecated)
        || (s[0] & 0xff00) == 0xff00      // multicast
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x0100 && s[1..4] == [0, 0, 0]) // discard-only
}

/// A fetched response.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// HTTP status (2xx or 304; other statuses are errors).
    pub status: u16,
    /// The URL finally answered (after redirects).
    pub url: Url,
    /// `ETag`, for the next conditional request.
    pub etag: Option<String>,
    /// `Last-Modified`, likewise.
    pub last_modified: Option<String>,
    /// The body (empty for 304), at most the limit given.
    pub body: Vec<u8>,
}

/// `GET url` through a guarded `client`, with extra `headers`, reading at most `max_bytes`
/// of body. A 304 answer is returned as is (for conditional requests); other non-2xx
/// statuses are [`FetchError::Status`].
pub async fn fetch(
    client: &reqwest::Client,
    policy: &OutboundPolicy,
    url: &Url,
    headers: &[(&str, &str)],
    max_bytes: usize,
) -> Result<Fetched, FetchError> {
    policy
        .check_url(url)
        .map_err(|r| FetchError::Refused(r.0))?;
    let mut req = client.get(url.clone());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut resp = req.send().await.map_err(classify)?;
    let status = resp.status().as_u16();
    let header = |name: reqwest::header::HeaderName| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let etag = header(reqwest::header::ETAG);
    let last_modified = header(reqwest::header::LAST_MODIFIED);
    let final_url = resp.url().clone();
    if status == 304 {
        return Ok(Fetched {
            status,
            url: final_url,
            etag,
            last_modified,
            body: Vec::new(),
        });
    }
    if !(200..300).contains(&status) {
        return Err(FetchError::Status { status });
    }
    if resp
        .content_length()
        .is_some_and(|n| n > u64::try_from(max_bytes).unwrap_or(u64::MAX))
    {
        return Err(FetchError::TooLarge { limit: max_bytes });
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(classify)? {
        if body.len() + chunk.len() > max_bytes {
            return Err(FetchError::TooLarge { limit: max_bytes });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Fetched {
        status,
        url: final_url,
        etag,
        last_modified,
        body,
    })
}

/// A guard refusal anywhere in the error chain is [`FetchError::Refused`]; everything else
/// (timeouts, connection failures) is [`FetchError::Http`].
fn classify(e: reqwest::Error) -> FetchError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(err) = source {
        if let Some(r) = err.downcast_ref::<Refusal>() {
            return FetchError::Refused(r.0.clone());
        }
        source = err.source();
    }
    if e.is_timeout() {
        return FetchError::Http("timed out".into());
    }
    FetchError::Http(e.without_url().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn non_public_addresses_are_internal() {
        for s in [
            "0.0.0.0",
            "10.1.2.3",
            "100.64.0.1",
            "127.0.0.1",
            "127.8.9.10",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "224.0.0.1",
            "239.255.255.250",
            "255.255.255.255",
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
        ] {
            assert!(is_internal(ip(s)), "{s} must be refused");
        }
        for s in [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(!is_internal(ip(s)), "{s} is public");
        }
    }

    #[test]
    fn allowed_networks_pass_and_urls_are_checked_before_resolution() {
        let strict = OutboundPolicy::default();
        let local = OutboundPolicy::allowing(vec!["127.0.0.0/8".parse().unwrap()]);
        assert!(!strict.permits(ip("127.0.0.1")));
        assert!(local.permits(ip("127.0.0.1")));
        assert!(!local.permits(ip("10.0.0.1")));
        let url = |s: &str| Url::parse(s).unwrap();
        assert!(
            strict
                .check_url(&url("http://127.0.0.1:8080/feed"))
                .is_err()
        );
        assert!(strict.check_url(&url("http://[::1]/feed")).is_err());
        assert!(strict.check_url(&url("http://0x7f000001/feed")).is_err());
        assert!(strict.check_url(&url("file:///etc/passwd")).is_err());
        assert!(
            strict
                .check_url(&url("https://alerts.example.org/"))
                .is_ok()
        );
        assert!(local.check_url(&url("http://127.0.0.1:8080/feed")).is_ok());
    }
}
