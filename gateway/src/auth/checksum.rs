//! Flexible checksums (`x-amz-checksum-*`): CRC32, CRC32C, CRC64NVME, SHA-1 and SHA-256,
//! encoded as base64 of the big-endian digest the way S3 sends and expects them; and the
//! object checksums of multipart uploads, made from the parts' checksums without reading data:
//! composite (the checksum of the concatenated binary part checksums, `-N` suffixed) and full
//! object (the parts' CRCs combined into the CRC of the whole object, see [`crc_combine`]).

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
    /// SHA-1, `x-amz-checksum-sha1`.
    Sha1,
    /// CRC-64/NVME, `x-amz-checksum-crc64nvme`.
    Crc64Nvme,
}

impl ChecksumAlgo {
    /// Every algorithm.
    pub const ALL: [ChecksumAlgo; 5] = [
        Self::Crc32,
        Self::Crc32c,
        Self::Crc64Nvme,
        Self::Sha1,
        Self::Sha256,
    ];

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
            "sha1" => Some(Self::Sha1),
            "crc64nvme" => Some(Self::Crc64Nvme),
            _ => None,
        }
    }

    /// The lowercase header carrying this checksum.
    pub fn header_name(self) -> &'static str {
        match self {
            Self::Crc32 => "x-amz-checksum-crc32",
            Self::Crc32c => "x-amz-checksum-crc32c",
            Self::Sha256 => "x-amz-checksum-sha256",
            Self::Sha1 => "x-amz-checksum-sha1",
            Self::Crc64Nvme => "x-amz-checksum-crc64nvme",
        }
    }

    /// The algorithm name as S3 spells it (`CRC32`, `CRC32C`, `SHA256`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::Crc32 => "CRC32",
            Self::Crc32c => "CRC32C",
            Self::Sha256 => "SHA256",
            Self::Sha1 => "SHA1",
            Self::Crc64Nvme => "CRC64NVME",
        }
    }

    /// The name of the element carrying this checksum in S3 documents (`ChecksumCRC32`, ...).
    pub fn element(self) -> &'static str {
        match self {
            Self::Crc32 => "ChecksumCRC32",
            Self::Crc32c => "ChecksumCRC32C",
            Self::Sha256 => "ChecksumSHA256",
            Self::Sha1 => "ChecksumSHA1",
            Self::Crc64Nvme => "ChecksumCRC64NVME",
        }
    }

    /// Length of the digest in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            Self::Crc32 | Self::Crc32c => 4,
            Self::Crc64Nvme => 8,
            Self::Sha1 => 20,
            Self::Sha256 => 32,
        }
    }

    /// The CRC this algorithm is, in crc-fast's catalogue; `None` for the hashes.
    fn crc(self) -> Option<crc_fast::CrcAlgorithm> {
        match self {
            Self::Crc32 => Some(crc_fast::CrcAlgorithm::Crc32IsoHdlc),
            Self::Crc32c => Some(crc_fast::CrcAlgorithm::Crc32Iscsi),
            Self::Crc64Nvme => Some(crc_fast::CrcAlgorithm::Crc64Nvme),
            Self::Sha1 | Self::Sha256 => None,
        }
    }

    /// Whether a multipart upload may use this algorithm for a full-object checksum (the CRCs)
    /// and for a composite one (all but CRC64NVME), as on AWS.
    pub fn allows(self, full_object: bool) -> bool {
        if full_object {
            self.crc().is_some()
        } else {
            self != Self::Crc64Nvme
        }
    }

    /// Decodes a checksum value as a client sends it: base64 of exactly [`Self::digest_len`] bytes.
    pub fn decode(self, value: &str) -> Option<Vec<u8>> {
        STANDARD
            .decode(value.trim())
            .ok()
            .filter(|raw| raw.len() == self.digest_len())
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
    Sha1(sha1::Sha1),
    Crc64(crc_fast::Digest),
}

impl ChecksumHasher {
    /// Starts a checksum.
    pub fn new(algo: ChecksumAlgo) -> Self {
        let state = match algo {
            ChecksumAlgo::Crc32 => State::Crc32(crc32fast::Hasher::new()),
            ChecksumAlgo::Crc32c => State::Crc32c(0),
            ChecksumAlgo::Sha256 => State::Sha256(Sha256::new()),
            ChecksumAlgo::Sha1 => State::Sha1(<sha1::Sha1 as sha1::Digest>::new()),
            ChecksumAlgo::Crc64Nvme => {
                State::Crc64(crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc64Nvme))
            }
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
            State::Sha1(h) => sha1::Digest::update(h, data),
            State::Crc64(h) => h.update(data),
        }
    }

    /// The big-endian digest.
    pub fn finish_raw(self) -> Vec<u8> {
        match self.state {
            State::Crc32(h) => h.finalize().to_be_bytes().to_vec(),
            State::Crc32c(c) => c.to_be_bytes().to_vec(),
            State::Sha256(h) => h.finalize().to_vec(),
            State::Sha1(h) => sha1::Digest::finalize(h).to_vec(),
            State::Crc64(h) => h.finalize().to_be_bytes().to_vec(),
        }
    }

    /// Base64 of the big-endian digest, as in `x-amz-checksum-*` headers.
    pub fn finish(self) -> String {
        STANDARD.encode(self.finish_raw())
    }

    /// Fails with `BadDigest` unless the checksum equals `expected` (base64).
    pub fn verify(self, expected: &str) -> Result<(), AuthError> {
        let algo = self.algo;
        if algo.decode(expected).as_deref() == Some(self.finish_raw().as_slice()) {
            Ok(())
        } else {
            Err(AuthError::BadDigest(format!(
                "The {} you specified did not match the calculated checksum.",
                algo.name()
            )))
        }
    }
}

/// The CRC of `A || B` from `crc(A)`, `crc(B)` and the length of `B`, for CRC32, CRC32C and
/// CRC64NVME (`None` for the hashes): crc-fast's combination, O(log len(B)).
pub fn crc_combine(algo: ChecksumAlgo, crc_a: u64, crc_b: u64, len_b: u64) -> Option<u64> {
    Some(crc_fast::checksum_combine(algo.crc()?, crc_a, crc_b, len_b))
}

/// The object checksum of a multipart upload from its parts' checksums (raw digests) and sizes,
/// in part order: base64 of the CRC of the whole object (`full_object`), or base64 of the
/// checksum of the concatenated part checksums followed by `-<number of parts>` (composite).
/// `None` when the algorithm cannot make that kind or a digest has the wrong length.
pub fn combine_parts(
    algo: ChecksumAlgo,
    full_object: bool,
    parts: &[(Vec<u8>, u64)],
) -> Option<String> {
    if !algo.allows(full_object) || parts.iter().any(|(d, _)| d.len() != algo.digest_len()) {
        return None;
    }
    if !full_object {
        let mut h = ChecksumHasher::new(algo);
        for (digest, _) in parts {
            h.update(digest);
        }
        return Some(format!("{}-{}", h.finish(), parts.len()));
    }
    let value = |d: &[u8]| d.iter().fold(0u64, |acc, b| acc << 8 | u64::from(*b));
    let mut crc = parts.first().map_or(0, |(d, _)| value(d));
    for (digest, len) in parts.iter().skip(1) {
        crc = crc_combine(algo, crc, value(digest), *len)?;
    }
    let bytes = crc.to_be_bytes();
    Some(STANDARD.encode(&bytes[8 - algo.digest_len()..]))
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

    fn raw(algo: ChecksumAlgo, data: &[u8]) -> Vec<u8> {
        let mut h = ChecksumHasher::new(algo);
        h.update(data);
        h.finish_raw()
    }

    #[test]
    fn known_values() {
        // The check values of the CRC catalogue ("123456789").
        assert_eq!(
            sum(ChecksumAlgo::Crc32, b"123456789"),
            STANDARD.encode([0xCB, 0xF4, 0x39, 0x26])
        );
        assert_eq!(
            sum(ChecksumAlgo::Crc32c, b"123456789"),
            STANDARD.encode([0xE3, 0x06, 0x92, 0x83])
        );
        assert_eq!(
            sum(ChecksumAlgo::Crc64Nvme, b"123456789"),
            STANDARD.encode(0xAE8B_1486_0A79_9888u64.to_be_bytes())
        );
        assert_eq!(sum(ChecksumAlgo::Crc32, b""), "AAAAAA==");
        assert_eq!(
            sum(ChecksumAlgo::Sha256, b""),
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
        assert_eq!(
            sum(ChecksumAlgo::Sha1, b"abc"),
            STANDARD.encode(hex::decode("a9993e364706816aba3e25717850c26c9cd0d89d").unwrap())
        );
    }

    #[test]
    fn names_and_verify() {
        assert_eq!(
            ChecksumAlgo::from_header_name("X-Amz-Checksum-CRC32C"),
            Some(ChecksumAlgo::Crc32c)
        );
        assert_eq!(
            ChecksumAlgo::from_header_name("x-amz-checksum-sha1"),
            Some(ChecksumAlgo::Sha1)
        );
        assert_eq!(
            ChecksumAlgo::from_header_name("x-amz-checksum-crc64nvme"),
            Some(ChecksumAlgo::Crc64Nvme)
        );
        assert_eq!(ChecksumAlgo::from_header_name("x-amz-checksum-md5"), None);
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
        // Malformed values: not base64, or the wrong length for the algorithm.
        assert_eq!(ChecksumAlgo::Crc32.decode("AAAAAA=="), Some(vec![0; 4]));
        assert_eq!(ChecksumAlgo::Crc32.decode("not base64!"), None);
        assert_eq!(ChecksumAlgo::Crc32.decode("AAAAAAAAAAA="), None);
        assert_eq!(ChecksumAlgo::Sha256.decode("AAAAAA=="), None);
    }

    #[test]
    fn combined_crcs_equal_the_crc_of_the_whole() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let data: Vec<u8> = (0..5000).map(|_| rng.gen()).collect();
        for algo in [
            ChecksumAlgo::Crc32,
            ChecksumAlgo::Crc32c,
            ChecksumAlgo::Crc64Nvme,
        ] {
            let whole = ChecksumAlgo::decode(algo, &sum(algo, &data)).unwrap();
            for _ in 0..50 {
                // Random cuts, empty parts included.
                let mut cuts: Vec<usize> = (0..rng.gen_range(0..6))
                    .map(|_| rng.gen_range(0..=data.len()))
                    .collect();
                cuts.push(0);
                cuts.push(data.len());
                cuts.sort();
                let parts: Vec<(Vec<u8>, u64)> = cuts
                    .windows(2)
                    .map(|w| (raw(algo, &data[w[0]..w[1]]), (w[1] - w[0]) as u64))
                    .collect();
                let combined = combine_parts(algo, true, &parts).unwrap();
                assert_eq!(
                    STANDARD.decode(combined).unwrap(),
                    whole,
                    "{algo:?} {cuts:?}"
                );
            }
        }
        // Long parts: x^(8n) by squaring reaches 5 GiB in a few dozen steps.
        let big = 5u64 << 30;
        let a = crc_combine(ChecksumAlgo::Crc32, 0x1234_5678, 0, big).unwrap();
        assert_ne!(a, 0);
    }

    #[test]
    fn composite_checksums_hash_the_part_checksums() {
        let parts = [b"hello ".as_slice(), b"world"];
        for algo in ChecksumAlgo::ALL {
            let digests: Vec<(Vec<u8>, u64)> = parts
                .iter()
                .map(|p| (raw(algo, p), p.len() as u64))
                .collect();
            let composite = combine_parts(algo, false, &digests);
            if algo == ChecksumAlgo::Crc64Nvme {
                assert_eq!(composite, None, "CRC64NVME is full-object only");
                continue;
            }
            let concat: Vec<u8> = digests.iter().flat_map(|(d, _)| d.clone()).collect();
            assert_eq!(
                composite,
                Some(format!("{}-2", STANDARD.encode(raw(algo, &concat))))
            );
        }
        let sha = [(raw(ChecksumAlgo::Sha1, b"x"), 1)];
        assert_eq!(combine_parts(ChecksumAlgo::Sha1, true, &sha), None);
        assert!(!ChecksumAlgo::Sha256.allows(true));
        assert!(ChecksumAlgo::Crc32.allows(true) && ChecksumAlgo::Crc32.allows(false));
    }
}
