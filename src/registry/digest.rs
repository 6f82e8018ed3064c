//! Content digests (`algorithm:hex`) and their verification.
//!
//! Everything ibu reads from a registry is content-addressed: a manifest named by digest, the
//! config and every blob. A registry, a proxy or a CDN in between can serve the wrong bytes, so
//! the client recomputes the digest of what it received instead of trusting the server. The
//! OCI image spec registers `sha256` and `sha512`; both are supported, anything else is refused
//! (an unverifiable digest is an error, not a pass).

use sha2::Digest as _;

/// A running digest over bytes, compared with an expected `algorithm:hex` at the end.
#[derive(Clone)]
pub(crate) struct Verifier {
    hasher: Hasher,
    expected: String,
}

#[derive(Clone)]
enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Verifier {
    /// A verifier for `expected`; an error names the digest when its algorithm is unsupported
    /// or its hex part is malformed.
    pub(crate) fn new(expected: &str) -> Result<Verifier, String> {
        let (algo, hex) = expected
            .split_once(':')
            .ok_or_else(|| format!("digest {expected:?} is not algorithm:hex"))?;
        let (hasher, len) = match algo {
            "sha256" => (Hasher::Sha256(sha2::Sha256::new()), 64),
            "sha512" => (Hasher::Sha512(sha2::Sha512::new()), 128),
            other => {
                return Err(format!(
                    "digest {expected:?} uses algorithm {other:?}; only sha256 and sha512 can be \
                     verified"
                ));
            }
        };
        if hex.len() != len
            || !hex
                .bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        {
            return Err(format!(
                "digest {expected:?} must have {len} lowercase hex digits"
            ));
        }
        Ok(Verifier {
            hasher,
            expected: expected.to_string(),
        })
    }

    pub(crate) fn update(&mut self, bytes: &[u8]) {
        match &mut self.hasher {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    pub(crate) fn expected(&self) -> &str {
        &self.expected
    }

    /// `Ok(())` when the bytes fed so far have the expected digest, else `Err(actual)`.
    pub(crate) fn finish(self) -> Result<(), String> {
        let actual = match self.hasher {
            Hasher::Sha256(h) => format!("sha256:{}", hex(&h.finalize())),
            Hasher::Sha512(h) => format!("sha512:{}", hex(&h.finalize())),
        };
        if actual == self.expected {
            Ok(())
        } else {
            Err(actual)
        }
    }
}

/// Check `bytes` against the digest `expected`.
pub(crate) fn verify(expected: &str, bytes: &[u8]) -> Result<(), DigestCheck> {
    let mut v = Verifier::new(expected).map_err(DigestCheck::Invalid)?;
    v.update(bytes);
    v.finish().map_err(DigestCheck::Mismatch)
}

/// Why [`verify`] failed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum DigestCheck {
    /// The expected digest cannot be verified (the message says why).
    Invalid(String),
    /// The bytes have this other digest.
    Mismatch(String),
}

fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[usize::from(b >> 4)] as char);
        s.push(HEX[usize::from(b & 0xf)] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY256: &str =
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const ABC512: &str = "sha512:ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
                          2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f";

    #[test]
    fn verifies_sha256_and_sha512() {
        assert_eq!(verify(EMPTY256, b""), Ok(()));
        assert_eq!(verify(ABC512, b"abc"), Ok(()));
        assert_eq!(verify(&crate::oci::sha256_digest(b"x"), b"x"), Ok(()));
    }

    #[test]
    fn streaming_equals_one_shot() {
        let data = b"hello, registry";
        let want = crate::oci::sha256_digest(data);
        let mut v = Verifier::new(&want).unwrap();
        for chunk in data.chunks(4) {
            v.update(chunk);
        }
        assert_eq!(v.finish(), Ok(()));
    }

    #[test]
    fn mismatch_reports_the_actual_digest() {
        let err = verify(EMPTY256, b"not empty").unwrap_err();
        assert_eq!(
            err,
            DigestCheck::Mismatch(crate::oci::sha256_digest(b"not empty"))
        );
    }

    #[test]
    fn unverifiable_digests_are_refused() {
        for (d, want) in [
            (
                "md5:0123456789abcdef0123456789abcdef",
                "only sha256 and sha512",
            ),
            ("sha256:abc", "64 lowercase hex"),
            (
                "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
                "lowercase",
            ),
            ("nocolon", "algorithm:hex"),
        ] {
            match verify(d, b"") {
                Err(DigestCheck::Invalid(m)) => assert!(m.contains(want), "{d}: {m}"),
                other => panic!("{d}: {other:?}"),
            }
        }
    }
}
