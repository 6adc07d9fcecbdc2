//! Flexible checksums (`x-amz-checksum-*`): CRC32, CRC32C and SHA-256, encoded
//! as base64 of the big-endian digest the way S3 sends and expects them.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha2::{Digest, Sha256};

use super::error::AuthError;

/// A supported checksum algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumAlgo {
    /// CRC-32 (IEEE), `x-amz-checksum-crc32`.
    Crc32,
    /// CRC-32C (Castagnoli), `x-amz-checksum-crc32c`.
    Crc32c,
    /// SHA-256, `x-amz-checksum-sha256`.
    Sha256,
}

impl ChecksumAlgo {
    /// Maps a header name such as `x-amz-checksum-crc32` (any case) to its algorithm.
    pub fn from_header_name(name: &str) -> Option<Self> {
        let suffix = name
            .get(..15)?
            .eq_ignore_ascii_case("x-amz-checksum-")
            .then(|| &name[15..])?;
        Self::from_algorithm(suffix)
    }

    /// Maps an algorithm name as in `x-amz-checksum-algorithm` (`CRC32`, `crc32c`, ...).
    pub fn from_algorithm(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "crc32" => Some(Self::Crc32),
            "crc32c" => Some(Self::Crc32c),
            "sha256" => Some(Self::Sha256),
            _ => None,
        }
    }

    /// The lowercase header carrying this checksum.
    pub fn header_name(self) -> &'static str {
        match self {
            Self::Crc32 => "x-amz-checksum-crc32",
            Self::Crc32c => "x-amz-checksum-crc32c",
            Self::Sha256 => "x-amz-checksum-sha256",
        }
    }

    /// The algorithm name as S3 spells it (`CRC32`, `CRC32C`, `SHA256`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Crc32 => "CRC32",
            Self::Crc32c => "CRC32C",
            Self::Sha256 => "SHA256",
        }
    }
}

/// Incremental checksum computation.
#[derive(Clone)]
pub struct ChecksumHasher {
    algo: ChecksumAlgo,
    state: State,
}

#[derive(Clone)]
enum State {
    Crc32(crc32fast::Hasher),
    Crc32c(u32),
    Sha256(Sha256),
}

impl ChecksumHasher {
    /// Starts a checksum.
    pub fn new(algo: ChecksumAlgo) -> Self {
        let state = match algo {
            ChecksumAlgo::Crc32 => State::Crc32(crc32fast::Hasher::new()),
            ChecksumAlgo::Crc32c => State::Crc32c(0),
            ChecksumAlgo::Sha256 => State::Sha256(Sha256::new()),
        };
        Self { algo, state }
    }

    /// The algorithm being computed.
    pub fn algo(&self) -> ChecksumAlgo {
        self.algo
    }

    /// Feeds more data.
    pub fn update(&mut self, data: &[u8]) {
        match &mut self.state {
            State::Crc32(h) => h.update(data),
            State::Crc32c(c) => *c = crc32c::crc32c_append(*c, data),
            State::Sha256(h) => h.update(data),
        }
    }

    /// Base64 of the big-endian digest, as in `x-amz-checksum-*` headers.
    pub fn finish(self) -> String {
        match self.state {
            State::Crc32(h) => STANDARD.encode(h.finalize().to_be_bytes()),
            State::Crc32c(c) => STANDARD.encode(c.to_be_bytes()),
            State::Sha256(h) => STANDARD.encode(h.finalize()),
        }
    }

    /// Fails with `BadDigest` unless the checksum equals `expected` (base64).
    pub fn verify(self, expected: &str) -> Result<(), AuthError> {
        let name = self.algo.name();
        if self.finish() == expected.trim() {
            Ok(())
        } else {
            Err(AuthError::BadDigest(format!(
                "The {name} you specified did not match the calculated checksum."
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(algo: ChecksumAlgo, data: &[u8]) -> String {
        let mut h = ChecksumHasher::new(algo);
        let (a, b) = data.split_at(data.len() / 2);
        h.update(a);
        h.update(b);
        h.finish()
    }

    #[test]
    fn known_values() {
        // CRC32("123456789") = 0xCBF43926, CRC32C("123456789") = 0xE3069283.
        assert_eq!(
            sum(ChecksumAlgo::Crc32, b"123456789"),
            STANDARD.encode([0xCB, 0xF4, 0x39, 0x26])
        );
        assert_eq!(
            sum(ChecksumAlgo::Crc32c, b"123456789"),
            STANDARD.encode([0xE3, 0x06, 0x92, 0x83])
        );
        assert_eq!(sum(ChecksumAlgo::Crc32, b""), "AAAAAA==");
        assert_eq!(
            sum(ChecksumAlgo::Sha256, b""),
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
    }

    #[test]
    fn names_and_verify() {
        assert_eq!(
            ChecksumAlgo::from_header_name("X-Amz-Checksum-CRC32C"),
            Some(ChecksumAlgo::Crc32c)
        );
        assert_eq!(ChecksumAlgo::from_header_name("x-amz-checksum-sha1"), None);
        assert_eq!(ChecksumAlgo::from_header_name("x-amz-checksum"), None);
        assert_eq!(
            ChecksumAlgo::from_algorithm("CRC32"),
            Some(ChecksumAlgo::Crc32)
        );
        assert!(ChecksumHasher::new(ChecksumAlgo::Crc32)
            .verify("AAAAAA==")
            .is_ok());
        let err = ChecksumHasher::new(ChecksumAlgo::Crc32)
            .verify("AAAAAQ==")
            .unwrap_err();
        assert_eq!((err.code(), err.status()), ("BadDigest", 400));
    }
}
