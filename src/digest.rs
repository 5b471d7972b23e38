//! SHA-256 as homelab writes it (lowercase hex), and base64 (RFC 4648, padded). Manifests, plan
//! ids, node fingerprints and upload checks use the one hash function; SSH keys and signatures
//! and the binary artifacts of a plan the one base64, so the same bytes always give the same
//! text.

use sha2::{Digest, Sha256};

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
