//! The node's own checks, read every interval: the Tailscale interface and the disk.
//!
//! The interface is read every interval (5 s by default) with `SIOCGIFFLAGS` on a socket,
//! which answers for the network namespace the agent runs in (the host's, with
//! `network_mode: host`), unlike `/sys/class/net`, which shows the namespace of whoever mounted
//! that sysfs. The kernel has an event source for links (an rtnetlink multicast group), but std
//! has no netlink and a crate for it is not worth its weight for one flag read every few
//! seconds: a link that flaps faster than the interval is not one the observer could act on.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use serde_json::{Map, Value};

use super::state::Observation;

/// Whether the interface `name` is up: administratively up (`IFF_UP`) and operational
/// (`IFF_RUNNING`: carrier, or a tun device with its process attached, as `tailscaled`
/// keeps it). A missing interface is down.
pub fn interface(name: &str) -> Observation {
    let state = match flags(name) {
        Ok(f) if f & libc::IFF_UP != 0 && f & libc::IFF_RUNNING != 0 => "up",
        Ok(f) if f & libc::IFF_UP != 0 => "no-carrier",
        Ok(_) => "down",
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => "absent",
        Err(e) => {
            tracing::warn!("interface {name}: {e}");
            "unreadable"
        }
    };
    let mut data = Map::new();
    data.insert("kind".into(), Value::from("tailscale"));
    data.insert("state".into(), Value::from(state));
    Observation::Link { link: name.to_owned(), up: state == "up", data }
}

/// The interface's flags (`SIOCGIFFLAGS`).
fn flags(name: &str) -> std::io::Result<i32> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(std::io::Error::from_raw_os_error(libc::ENODEV));
    }
    // SAFETY: a plain datagram socket, owned (and closed) by `sock`.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: `ifreq` is plain data; zeroed is valid, and the name fits with its NUL.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the name and writes `ifru_flags` of `req`, which we own.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the union's member the kernel just wrote.
    Ok(i32::from(unsafe { req.ifr_ifru.ifru_flags }))
}

/// The use of the filesystem holding `path`, as `df` counts it: used over what non-root users
/// could have (used + available), in percent.
pub fn disk_used_percent(path: &Path) -> std::io::Result<f64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: a zeroed statvfs is a valid out-parameter; `c` is a NUL-terminated path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let used = st.f_blocks.saturating_sub(st.f_bfree) as f64;
    let total = used + st.f_bavail as f64;
    Ok(if total == 0.0 { 0.0 } else { used * 100.0 / total })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(o: Observation) -> (bool, Value) {
        match o {
            Observation::Link { up, data, .. } => (up, data["state"].clone()),
            _ => unreachable!(),
        }
    }

    #[test]
    fn an_interface_is_read_by_name_and_a_missing_one_is_down() {
        assert_eq!(state(interface("lo")), (true, Value::from("up")));
        assert_eq!(state(interface("hl-no-such-if")), (false, Value::from("absent")));
        assert_eq!(
            state(interface("a-name-far-too-long-for-linux")),
            (false, Value::from("absent"))
        );
    }

    #[test]
    fn disk_use_is_a_percentage() {
        let p = disk_used_percent(Path::new("/")).unwrap();
        assert!((0.0..=100.0).contains(&p), "{p}");
        assert!(disk_used_percent(Path::new("/no/such/folder")).is_err());
    }
}
