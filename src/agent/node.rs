//! The node's own checks, read every interval: the Tailscale interface and the disk.
//!
//! The interface is read from `/sys/class/net/<if>/` every interval (5 s by default). The kernel
//! has an event source for links (an rtnetlink multicast group), but std has no netlink and a
//! crate for it is not worth its weight for one flag read every few seconds: a link that flaps
//! faster than the interval is not a link the observer could act on anyway.

use std::path::Path;

use serde_json::{Map, Value};

use super::state::Observation;

/// `IFF_UP` in `/sys/class/net/<if>/flags`.
const IFF_UP: u64 = 0x1;

/// Whether the interface `name` is up, read from `sysfs` (the network namespace the agent runs
/// in: the host's, with `network_mode: host`). A missing interface is down. Up means
/// administratively up and an operstate other than down: a Tailscale tun device (and the test's
/// dummy link) reports `unknown` when it works.
pub fn interface(sys_class_net: &Path, name: &str) -> Observation {
    let dir = sys_class_net.join(name);
    let operstate = std::fs::read_to_string(dir.join("operstate"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "absent".to_owned());
    let flags = std::fs::read_to_string(dir.join("flags"))
        .ok()
        .and_then(|s| u64::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok())
        .unwrap_or(0);
    let up = flags & IFF_UP != 0
        && !matches!(operstate.as_str(), "down" | "lowerlayerdown" | "notpresent" | "absent");
    let mut data = Map::new();
    data.insert("kind".into(), Value::from("tailscale"));
    data.insert("operstate".into(), Value::from(operstate));
    Observation::Link { link: name.to_owned(), up, data }
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

    fn fake(dir: &Path, name: &str, operstate: &str, flags: &str) {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("operstate"), format!("{operstate}\n")).unwrap();
        std::fs::write(d.join("flags"), format!("{flags}\n")).unwrap();
    }

    fn up(o: Observation) -> bool {
        match o {
            Observation::Link { up, .. } => up,
            _ => unreachable!(),
        }
    }

    #[test]
    fn an_interface_is_up_when_flagged_up_and_not_down() {
        let dir = tempfile::tempdir().unwrap();
        fake(dir.path(), "ts-unknown", "unknown", "0x1091");
        fake(dir.path(), "ts-up", "up", "0x1003");
        fake(dir.path(), "ts-down", "down", "0x1002");
        fake(dir.path(), "ts-admin-down", "unknown", "0x1090");
        assert!(up(interface(dir.path(), "ts-unknown")));
        assert!(up(interface(dir.path(), "ts-up")));
        assert!(!up(interface(dir.path(), "ts-down")));
        assert!(!up(interface(dir.path(), "ts-admin-down")));
        assert!(!up(interface(dir.path(), "missing")));
    }

    #[test]
    fn disk_use_is_a_percentage() {
        let p = disk_used_percent(Path::new("/")).unwrap();
        assert!((0.0..=100.0).contains(&p), "{p}");
        assert!(disk_used_percent(Path::new("/no/such/folder")).is_err());
    }
}
