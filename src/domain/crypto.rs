//! Encryption of endpoint secrets at rest (AES-256-GCM under the master key).

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use rand::RngCore;

/// The 32-byte master key that encrypts endpoint secrets.
#[derive(Clone)]
pub struct MasterKey(Aes256Gcm);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

/// Why a master key or ciphertext was refused.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// The master key is not base64 of exactly 32 bytes.
    #[error("must be base64 of exactly 32 bytes")]
    BadKey,
    /// Decryption failed: wrong master key or tampered ciphertext.
    #[error("ciphertext does not decrypt under this master key")]
    Decrypt,
}

impl MasterKey {
    /// Parses base64 of 32 bytes.
    pub fn from_base64(s: &str) -> Result<Self, CryptoError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .map_err(|_| CryptoError::BadKey)?;
        Self::from_bytes(&bytes)
    }
    /// Uses 32 raw bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        if bytes.len() != 32 {
            return Err(CryptoError::BadKey);
        }
        Aes256Gcm::new_from_slice(bytes)
            .map(Self)
            .map_err(|_| CryptoError::BadKey)
    }
    /// A fresh random key, as base64 (for first start of an embedded install).
    pub fn generate_base64() -> String {
        let mut k = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut k);
        base64::engine::general_purpose::STANDARD.encode(k)
    }
    /// Encrypts `plaintext`, bound to `aad` (the owning row's id) so a ciphertext
    /// copied to another row does not decrypt. Output: nonce || ciphertext.
    pub fn encrypt(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut nonce);
        let ct = self
            .0
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .expect("AES-GCM encryption of a short secret cannot fail");
        let mut out = Vec::with_capacity(12 + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }
    /// Decrypts what `encrypt` produced with the same `aad`.
    pub fn decrypt(&self, blob: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if blob.len() < 12 + 16 {
            return Err(CryptoError::Decrypt);
        }
        let (nonce, ct) = blob.split_at(12);
        self.0
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
            .map_err(|_| CryptoError::Decrypt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_binding() {
        let k = MasterKey::from_base64(&MasterKey::generate_base64()).unwrap();
        let blob = k.encrypt(b"whsec_abc", b"row-1");
        assert!(!blob.windows(9).any(|w| w == b"whsec_abc"));
        assert_eq!(k.decrypt(&blob, b"row-1").unwrap(), b"whsec_abc");
        assert!(k.decrypt(&blob, b"row-2").is_err());
        let other = MasterKey::from_base64(&MasterKey::generate_base64()).unwrap();
        assert!(other.decrypt(&blob, b"row-1").is_err());
        assert!(MasterKey::from_base64("c2hvcnQ=").is_err());
        assert!(MasterKey::from_base64("not base64!").is_err());
    }
}
