//! SHA-256 as homelab writes it (lowercase hex), HMAC-SHA-256, and base64 (RFC 4648, padded).
//! Manifests, plan ids, node fingerprints and upload checks use the one hash function; the
//! Telegram bot's buttons and the operator page's cookies the one MAC (RustCrypto's `hmac`,
//! whose check is constant-time); SSH keys and signatures and the binary artifacts of a plan the
//! one base64, so the same bytes always give the same text.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The SHA-256 and SHA-512 of a message: all SSHSIG verification needs of it (the signature
/// covers the message's hash, in one of these two). Lets a large plan file be checked from
/// one streaming pass, never held whole (the operator page's listings, issue 19). SSHSIG
/// itself (`approve::sshsig`) is the only checker of a signature over them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    pub sha256: [u8; 32],
    pub sha512: [u8; 64],
}

impl Digests {
    pub fn of(message: &[u8]) -> Digests {
        let mut d = Digesting::default();
        d.update(message);
        d.finish()
    }
}

/// [`Digests`] of a message read in parts.
#[derive(Default)]
pub struct Digesting {
    sha256: Sha256,
    sha512: sha2::Sha512,
}

impl Digesting {
    pub fn update(&mut self, part: &[u8]) {
        self.sha256.update(part);
        self.sha512.update(part);
    }

    pub fn finish(self) -> Digests {
        Digests { sha256: self.sha256.finalize().into(), sha512: self.sha512.finalize().into() }
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes [`hex`] wrote: lowercase hex only, so that each byte string has one text and a
/// text compared after decoding is accepted exactly when it equals `hex` of the bytes.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    if text.len() % 2 != 0 {
        return None;
    }
    text.as_bytes().chunks(2).map(|p| Some(digit(p[0])? << 4 | digit(p[1])?)).collect()
}

fn mac(key: &[u8], message: &[u8]) -> Hmac<Sha256> {
    // HMAC takes a key of any length (a longer one is hashed first): this never fails.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(message);
    mac
}

/// HMAC-SHA-256 (RFC 2104) of `message` under `key`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    mac(key, message).finalize().into_bytes().into()
}

/// Whether `tag` is the HMAC-SHA-256 of `message` under `key`, in time independent of where
/// they differ.
pub fn hmac_sha256_verify(key: &[u8], message: &[u8], tag: &[u8]) -> bool {
    mac(key, message).verify_slice(tag).is_ok()
}

/// Whether `tag` is the HMAC-SHA-256 of `message` under `key` cut to its first `tag.len()`
/// bytes (RFC 2104 §5), in constant time; an empty tag never is. The caller decides how short
/// a tag it accepts.
pub fn hmac_sha256_verify_prefix(key: &[u8], message: &[u8], tag: &[u8]) -> bool {
    mac(key, message).verify_truncated_left(tag).is_ok()
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub fn base64_decode(text: &[u8]) -> Option<Vec<u8>> {
    if text.len() % 4 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    for quad in text.chunks(4) {
        let mut acc = 0u32;
        let mut pad = 0;
        for &c in quad {
            let v = match c {
                b'=' => {
                    pad += 1;
                    0
                }
                _ if pad > 0 => return None,
                _ => BASE64.iter().position(|&a| a == c)? as u32,
            };
            acc = acc << 6 | v;
        }
        if pad > 2 {
            return None;
        }
        out.extend(&acc.to_be_bytes()[1..4 - pad]);
    }
    Some(out)
}

pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let mut b = [0u8; 3];
        b[..chunk.len()].copy_from_slice(chunk);
        let acc = u32::from_be_bytes([0, b[0], b[1], b[2]]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(BASE64[(acc >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_digest() {
        assert_eq!(
            super::sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn hmac_is_rfc_4231_case_2_and_checks_whole_and_cut_tags() {
        let (key, msg) = (&b"Jefe"[..], &b"what do ya want for nothing?"[..]);
        let mac = super::hmac_sha256(key, msg);
        assert_eq!(
            super::hex(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(super::hmac_sha256_verify(key, msg, &mac));
        assert!(!super::hmac_sha256_verify(key, msg, &mac[..16]));
        assert!(!super::hmac_sha256_verify(b"jefe", msg, &mac));
        assert!(super::hmac_sha256_verify_prefix(key, msg, &mac[..16]));
        assert!(!super::hmac_sha256_verify_prefix(key, msg, &mac[16..]));
        assert!(!super::hmac_sha256_verify_prefix(key, msg, &[]));
        // RFC 4231 case 6: a key longer than the block is hashed first.
        assert_eq!(
            super::hex(&super::hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn unhex_reads_only_what_hex_writes() {
        assert_eq!(super::unhex("00ff7a").as_deref(), Some(&[0, 255, 0x7a][..]));
        assert_eq!(super::unhex("").as_deref(), Some(&[][..]));
        for bad in ["0", "0F", "zz", "0 "] {
            assert_eq!(super::unhex(bad), None, "{bad}");
        }
    }

    #[test]
    fn base64_round_trips() {
        for (bytes, text) in [
            (&b""[..], ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
        ] {
            assert_eq!(super::base64_encode(bytes), text);
            assert_eq!(super::base64_decode(text.as_bytes()).as_deref(), Some(bytes));
        }
        for bad in ["Zg=", "Z===", "====", "Zg=a", "Zm9!"] {
            assert_eq!(super::base64_decode(bad.as_bytes()), None, "{bad}");
        }
    }
}
