//! Standard Webhooks signatures: `v1,<base64 HMAC-SHA256("{id}.{timestamp}.{body}")>`.
//! The signing side is used by the worker; `verify` is what receivers (and
//! `hookit verify`) run.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Replay window: a signature whose timestamp is further than this from now is refused.
pub const TOLERANCE_SECS: i64 = 5 * 60;

/// An endpoint's signing secret (`whsec_` + base64 of random bytes).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// A `whsec_…` string that is not a usable secret.
#[derive(Debug, thiserror::Error)]
#[error("a secret is `whsec_` followed by base64 of 24 to 64 bytes")]
pub struct BadSecret;

impl Secret {
    /// 32 fresh random bytes.
    pub fn generate() -> Self {
        let mut b = vec![0u8; 32];
        rand::thread_rng().fill_bytes(&mut b);
        Self(b)
    }
    /// Parses `whsec_<base64>`.
    pub fn parse(s: &str) -> Result<Self, BadSecret> {
        let b64 = s.strip_prefix("whsec_").ok_or(BadSecret)?;
        let bytes = STANDARD.decode(b64).map_err(|_| BadSecret)?;
        if !(24..=64).contains(&bytes.len()) {
            return Err(BadSecret);
        }
        Ok(Self(bytes))
    }
    /// The `whsec_…` form shown to users.
    pub fn expose(&self) -> String {
        format!("whsec_{}", STANDARD.encode(&self.0))
    }
    /// Raw key bytes, for encryption at rest.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
    /// From raw key bytes (after decryption).
    pub fn from_bytes(b: Vec<u8>) -> Self {
        Self(b)
    }

    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        // Fed piecewise: the body is never copied into a "{id}.{ts}.{body}" buffer.
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(itoa_i64(timestamp).as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// The `v1,<base64>` signature of one message.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let tag = self.mac(id, timestamp, body).finalize().into_bytes();
        format!("v1,{}", STANDARD.encode(tag))
    }
}

fn itoa_i64(v: i64) -> String {
    v.to_string()
}

/// The `webhook-signature` header value: one signature per active secret,
/// space-separated (more than one while a rotated secret overlaps).
pub fn signature_header(secrets: &[&Secret], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut out = String::with_capacity(secrets.len() * 48);
    for (i, s) in secrets.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(&s.sign(id, timestamp, body));
    }
    out
}

/// Why a signature did not verify.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    /// The timestamp is not a number.
    #[error("the webhook-timestamp is not a unix timestamp")]
    BadTimestamp,
    /// Older than the tolerance: possibly a replay.
    #[error("the webhook-timestamp is too old (more than 5 minutes): possible replay")]
    TooOld,
    /// Too far in the future.
    #[error("the webhook-timestamp is too far in the future (more than 5 minutes)")]
    TooNew,
    /// No `v1,` signature in the header matches.
    #[error("no signature matches")]
    NoMatch,
}

/// Verifies a Standard Webhooks message against a secret at time `now` (unix seconds).
/// Signatures are compared in constant time.
pub fn verify(
    secret: &Secret,
    id: &str,
    timestamp: &str,
    signature_header: &str,
    body: &[u8],
    now: i64,
) -> Result<(), VerifyError> {
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| VerifyError::BadTimestamp)?;
    if now - ts > TOLERANCE_SECS {
        return Err(VerifyError::TooOld);
    }
    if ts - now > TOLERANCE_SECS {
        return Err(VerifyError::TooNew);
    }
    for part in signature_header.split_whitespace() {
        let Some(b64) = part.strip_prefix("v1,") else {
            continue;
        };
        let Ok(tag) = STANDARD.decode(b64) else {
            continue;
        };
        // verify_slice compares in constant time.
        if secret.mac(id, ts, body).verify_slice(&tag).is_ok() {
            return Ok(());
        }
    }
    Err(VerifyError::NoMatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_webhooks_reference_vector() {
        // The test vector published with the Standard Webhooks reference libraries.
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        let sig = secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(verify(
            &secret,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            "1614265330",
            &sig,
            body,
            1614265330
        )
        .is_ok());
    }

    #[test]
    fn rejects_replays_tampering_and_wrong_secrets() {
        let s = Secret::generate();
        let other = Secret::generate();
        let body = b"{}";
        let hdr = signature_header(&[&other, &s], "evt_1", 1000, body);
        assert_eq!(hdr.split(' ').count(), 2);
        assert!(verify(&s, "evt_1", "1000", &hdr, body, 1000).is_ok());
        assert_eq!(
            verify(&s, "evt_1", "1000", &hdr, b"{ }", 1000),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(
            verify(&s, "evt_2", "1000", &hdr, body, 1000),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(
            verify(&s, "evt_1", "1000", &hdr, body, 1000 + 301),
            Err(VerifyError::TooOld)
        );
        assert_eq!(
            verify(&s, "evt_1", "1000", &hdr, body, 1000 - 301),
            Err(VerifyError::TooNew)
        );
        assert_eq!(
            verify(&s, "evt_1", "x", &hdr, body, 1000),
            Err(VerifyError::BadTimestamp)
        );
        let only_other = signature_header(&[&other], "evt_1", 1000, body);
        assert_eq!(
            verify(&s, "evt_1", "1000", &only_other, body, 1000),
            Err(VerifyError::NoMatch)
        );
        assert!(Secret::parse(&s.expose()).unwrap() == s);
        assert!(Secret::parse("whsec_c2hvcnQ=").is_err());
        assert!(Secret::parse("nope").is_err());
    }
}
