//! Where the operator page may listen, and which `Host` names it answers.
//!
//! The page is plain HTTP: it belongs on loopback (reached through `ssh -L` or `tailscale
//! serve`) or on the tailnet, whose WireGuard links encrypt it. Any other address (a LAN,
//! `0.0.0.0`, a public one) is refused unless the operator says so. Requests whose `Host` is
//! a name the page does not know are refused too: a web site can make a browser's name point
//! at 127.0.0.1 (DNS rebinding), but it cannot make it send an IP literal or `localhost`.
//! Pure functions; no IO.

use std::net::{IpAddr, SocketAddr};

/// Why an address is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("refusing to listen on {addr}: it is neither loopback nor a tailnet address (100.64.0.0/10, fd7a:115c:a1e0::/48), and the page is plain HTTP; listen on 127.0.0.1 or the node's tailnet address, or pass --allow-any-address to serve it there anyway")]
pub struct NotPrivate {
    pub addr: SocketAddr,
}

/// Whether `ip` is a Tailscale address: 100.64.0.0/10 (CGNAT) or fd7a:115c:a1e0::/48.
pub fn is_tailnet(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            o[0] == 100 && (64..128).contains(&o[1])
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            s[0] == 0xfd7a && s[1] == 0x115c && s[2] == 0xa1e0
        }
    }
}

/// Checks the address the page would listen on.
pub fn check(addr: SocketAddr, allow_any: bool) -> Result<(), NotPrivate> {
    let ip = addr.ip();
    if allow_any || ip.is_loopback() || is_tailnet(ip) {
        Ok(())
    } else {
        Err(NotPrivate { addr })
    }
}

/// Whether a request's `Host` header is one the page answers: an IP literal (with or
/// without port), `localhost`, or one of the names the operator allowed (`--allow-host`,
/// e.g. the node's MagicDNS name), compared without case.
pub fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        match rest.split_once(']') {
            Some((v6, _)) => return v6.parse::<std::net::Ipv6Addr>().is_ok(),
            None => return false,
        }
    } else {
        match host.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => host,
        }
    };
    if name.is_empty() {
        return false;
    }
    name.parse::<std::net::Ipv4Addr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn loopback_and_tailnet_are_allowed_anything_else_only_when_asked() {
        for ok in [
            "127.0.0.1:8470",
            "[::1]:8470",
            "100.64.0.1:80",
            "100.127.255.254:1",
            "[fd7a:115c:a1e0::1]:8470",
        ] {
            assert_eq!(check(addr(ok), false), Ok(()), "{ok}");
        }
        for bad in [
            "0.0.0.0:8470",
            "192.168.1.10:80",
            "100.128.0.1:80",
            "100.63.255.255:80",
            "[::]:80",
            "[fd7a:115c:a1e1::1]:80",
            "8.8.8.8:80",
        ] {
            let e = check(addr(bad), false).unwrap_err();
            assert!(e.to_string().contains("--allow-any-address"), "{e}");
            assert_eq!(check(addr(bad), true), Ok(()), "{bad}");
        }
    }

    #[test]
    fn hosts_are_ip_literals_localhost_or_allowed_names() {
        let allowed = vec!["vps.tail1234.ts.net".to_owned()];
        for ok in [
            "127.0.0.1:8470",
            "127.0.0.1",
            "[::1]:8470",
            "localhost:8470",
            "LOCALHOST",
            "100.64.0.1",
            "VPS.tail1234.ts.net:8470",
        ] {
            assert!(host_allowed(ok, &allowed), "{ok}");
        }
        for bad in [
            "",
            ":80",
            "evil.example:8470",
            "127.0.0.1.evil.example",
            "[::1",
            "[nope]:80",
            "localhost.evil",
        ] {
            assert!(!host_allowed(bad, &allowed), "{bad}");
        }
    }
}
