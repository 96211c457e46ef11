//! SSRF policy: which webhook targets HookIt is willing to connect to.
//!
//! Checked twice: when an endpoint is registered (URL syntax, literal addresses and a
//! DNS lookup), and at delivery time by the worker's resolver, which hands the HTTP
//! client only addresses that passed, so a DNS answer that changes between the check
//! and the connection (rebinding) cannot reach a forbidden address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use url::{Host, Url};

/// Longest accepted endpoint URL.
pub const MAX_URL_LEN: usize = 2048;

/// Why a target was refused. `slug` names the problem type in API errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SsrfError {
    /// Not a parseable absolute URL.
    #[error("the URL could not be parsed: {0}")]
    Malformed(String),
    /// Longer than [`MAX_URL_LEN`].
    #[error("the URL is longer than {MAX_URL_LEN} characters")]
    TooLong,
    /// Not http or https.
    #[error("only http and https URLs are allowed, not `{0}`")]
    Scheme(String),
    /// Has `user:pass@`.
    #[error("URLs with userinfo (user:password@) are not allowed")]
    Userinfo,
    /// `localhost` or a `.localhost` name.
    #[error("`{0}` is a loopback host name")]
    LocalhostName(String),
    /// The address falls in a forbidden range.
    #[error("{addr} is a {class} address, which webhooks may not target")]
    Forbidden {
        /// The offending address.
        addr: IpAddr,
        /// The range class, e.g. "loopback".
        class: &'static str,
    },
    /// The host name has no address.
    #[error("the host `{0}` does not resolve")]
    Unresolvable(String),
}

impl SsrfError {
    /// Short machine-readable reason, used as the last part of the problem `type`.
    pub fn slug(&self) -> String {
        match self {
            SsrfError::Malformed(_) => "url-malformed".into(),
            SsrfError::TooLong => "url-too-long".into(),
            SsrfError::Scheme(_) => "url-scheme".into(),
            SsrfError::Userinfo => "url-userinfo".into(),
            SsrfError::LocalhostName(_) => "ssrf-loopback".into(),
            SsrfError::Forbidden { class, .. } => format!("ssrf-{}", class.replace(' ', "-")),
            SsrfError::Unresolvable(_) => "url-unresolvable".into(),
        }
    }
}

/// The policy: everything non-global is refused except the configured CIDRs.
#[derive(Debug, Clone, Default)]
pub struct SsrfPolicy {
    allow: Vec<IpNet>,
}

impl SsrfPolicy {
    /// A policy that exempts `allow` (from `HOOKIT_ALLOW_PRIVATE_TARGETS`).
    pub fn new(allow: Vec<IpNet>) -> Self {
        Self { allow }
    }

    /// The exempted ranges.
    pub fn allowed(&self) -> &[IpNet] {
        &self.allow
    }

    /// Checks the syntax of a target URL and any literal address in it. A host
    /// name still needs [`SsrfPolicy::check_ip`] on each resolved address.
    pub fn check_url(&self, raw: &str) -> Result<Url, SsrfError> {
        if raw.len() > MAX_URL_LEN {
            return Err(SsrfError::TooLong);
        }
        // The WHATWG parser normalises `127.1`, `0x7f.1`, `2130706433` and friends to
        // 127.0.0.1, so the check below sees what a connection would use.
        let url = Url::parse(raw).map_err(|e| SsrfError::Malformed(e.to_string()))?;
        match url.scheme() {
            "http" | "https" => {}
            other => return Err(SsrfError::Scheme(other.to_string())),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(SsrfError::Userinfo);
        }
        match url.host() {
            None => return Err(SsrfError::Malformed("the URL has no host".into())),
            Some(Host::Ipv4(v4)) => self.check_ip(IpAddr::V4(v4))?,
            Some(Host::Ipv6(v6)) => self.check_ip(IpAddr::V6(v6))?,
            Some(Host::Domain(d)) => {
                let name = d.trim_end_matches('.').to_ascii_lowercase();
                if name == "localhost" || name.ends_with(".localhost") {
                    let exempt = self.is_exempt(IpAddr::V4(Ipv4Addr::LOCALHOST))
                        && self.is_exempt(IpAddr::V6(Ipv6Addr::LOCALHOST));
                    if !exempt {
                        return Err(SsrfError::LocalhostName(d.to_string()));
                    }
                }
            }
        }
        Ok(url)
    }

    /// Checks one address a connection would go to.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), SsrfError> {
        if self.is_exempt(ip) {
            return Ok(());
        }
        match classify(ip) {
            None => Ok(()),
            Some(class) => Err(SsrfError::Forbidden { addr: ip, class }),
        }
    }

    fn is_exempt(&self, ip: IpAddr) -> bool {
        let canonical = embedded_v4(ip).map(IpAddr::V4).unwrap_or(ip);
        self.allow
            .iter()
            .any(|n| n.contains(&ip) || n.contains(&canonical))
    }
}

/// The IPv4 address inside IPv4-mapped, IPv4-compatible, NAT64 and 6to4 forms.
fn embedded_v4(ip: IpAddr) -> Option<Ipv4Addr> {
    let IpAddr::V6(v6) = ip else { return None };
    let s = v6.segments();
    let o = v6.octets();
    let low = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    if let Some(m) = v6.to_ipv4_mapped() {
        return Some(m);
    }
    // ::a.b.c.d (deprecated IPv4-compatible), but not :: or ::1.
    if s[..6] == [0; 6] && !(s[6] == 0 && s[7] <= 1) {
        return Some(low);
    }
    // NAT64 well-known and local-use prefixes.
    if s[0] == 0x64 && s[1] == 0xff9b && (s[2..6] == [0; 4] || s[2] == 1) {
        return Some(low);
    }
    // 6to4: 2002:AABB:CCDD::/48 embeds AA.BB.CC.DD.
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    None
}

/// The forbidden class an address belongs to, or None for a global address.
pub fn classify(ip: IpAddr) -> Option<&'static str> {
    // Mapped, compatible, NAT64 and 6to4 forms are judged by the IPv4 address they
    // carry, since that is where a translating network would deliver the packet.
    if let Some(v4) = embedded_v4(ip) {
        return classify_v4(v4);
    }
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    let class = match o {
        [0, ..] => "unspecified",
        [127, ..] => "loopback",
        [10, ..] => "private",
        [172, b, ..] if (16..=31).contains(&b) => "private",
        [192, 168, ..] => "private",
        [100, b, ..] if (64..=127).contains(&b) => "CGNAT",
        [169, 254, ..] => "link-local",
        [192, 0, 0, _] => "IETF-reserved",
        [192, 0, 2, _] | [198, 51, 100, _] | [203, 0, 113, _] => "documentation",
        [198, b, ..] if b == 18 || b == 19 => "benchmarking",
        [255, 255, 255, 255] => "broadcast",
        [a, ..] if (224..=239).contains(&a) => "multicast",
        [a, ..] if a >= 240 => "reserved",
        _ => return None,
    };
    Some(class)
}

fn classify_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    let class = if ip.is_unspecified() {
        "unspecified"
    } else if ip.is_loopback() {
        "loopback"
    } else if s[0] & 0xfe00 == 0xfc00 {
        "unique-local"
    } else if s[0] & 0xffc0 == 0xfe80 || s[0] & 0xffc0 == 0xfec0 {
        "link-local"
    } else if s[0] & 0xff00 == 0xff00 {
        "multicast"
    } else if s[0] == 0x2001 && s[1] == 0x0db8 {
        "documentation"
    } else if s[0] == 0x2001 && s[1] == 0 {
        "Teredo"
    } else if s[0] == 0x0100 && s[1..4] == [0; 3] {
        "discard"
    } else {
        return None;
    };
    Some(class)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(p: &SsrfPolicy, u: &str) -> bool {
        p.check_url(u).is_err()
    }

    #[test]
    fn refuses_every_spelling_of_internal_targets() {
        let p = SsrfPolicy::default();
        for u in [
            "http://127.0.0.1/",
            "http://127.1/",
            "http://0x7f.1/",
            "http://0x7f000001/",
            "http://2130706433/",
            "http://017700000001/",
            "http://0177.0.0.1/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://[64:ff9b::7f00:1]/",
            "http://[64:ff9b::a9fe:a9fe]/",
            "http://[2002:7f00:1::]/",
            "http://[::127.0.0.1]/",
            "http://localhost/",
            "http://localhost./",
            "http://LOCALHOST:8080/",
            "http://foo.localhost/",
            "http://10.1.2.3/",
            "http://172.16.0.1/",
            "http://192.168.1.1/",
            "http://169.254.169.254/latest/meta-data/",
            "http://100.100.100.200/",
            "http://100.64.0.1/",
            "http://0.0.0.0/",
            "http://0/",
            "http://[::]/",
            "http://224.0.0.1/",
            "http://255.255.255.255/",
            "http://[fd00:ec2::254]/",
            "http://[fe80::1]/",
            "http://[ff02::1]/",
            "ftp://example.com/",
            "file:///etc/passwd",
            "gopher://example.com/",
            "http://user:pw@example.com/",
            "http://user@example.com/",
            "not a url",
        ] {
            assert!(refused(&p, u), "{u} should be refused");
        }
    }

    #[test]
    fn accepts_public_targets_and_names() {
        let p = SsrfPolicy::default();
        for u in [
            "https://example.com/hook",
            "http://93.184.216.34:8080/x",
            "https://[2606:4700::1111]/",
            "https://hooks.example.org./x?y=1",
        ] {
            assert!(p.check_url(u).is_ok(), "{u} should be accepted");
        }
    }

    #[test]
    fn problem_slugs_name_the_reason() {
        let p = SsrfPolicy::default();
        assert_eq!(
            p.check_url("http://127.0.0.1/").unwrap_err().slug(),
            "ssrf-loopback"
        );
        assert_eq!(
            p.check_url("http://10.0.0.1/").unwrap_err().slug(),
            "ssrf-private"
        );
        assert_eq!(
            p.check_url("http://169.254.169.254/").unwrap_err().slug(),
            "ssrf-link-local"
        );
        assert_eq!(
            p.check_url("ftp://x.example/").unwrap_err().slug(),
            "url-scheme"
        );
    }

    #[test]
    fn allow_list_exempts_only_listed_ranges() {
        let p = SsrfPolicy::new(vec![
            "127.0.0.0/8".parse().unwrap(),
            "::1/128".parse().unwrap(),
        ]);
        assert!(p.check_url("http://127.0.0.1:9000/").is_ok());
        assert!(p.check_url("http://localhost:9000/").is_ok());
        assert!(p.check_url("http://[::ffff:127.0.0.1]/").is_ok());
        assert!(p.check_url("http://10.0.0.1/").is_err());
        assert!(p.check_url("http://169.254.169.254/").is_err());
    }
}
