//! Process-level helpers: file-descriptor limit, resident memory, wall clock, sockets left in
//! `TIME_WAIT`.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::{SystemTime, UNIX_EPOCH};

/// Raises `RLIMIT_NOFILE` to the hard limit; returns the new soft limit.
pub fn raise_nofile() -> u64 {
    match rlimit::Resource::NOFILE.get() {
        Ok((soft, hard)) => {
            if soft < hard && rlimit::Resource::NOFILE.set(hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Err(_) => 1024,
    }
}

/// Resident set size of a process in KiB (`VmRSS` from `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Number of threads of a process (`Threads` from `/proc/<pid>/status`).
pub fn threads(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
}

/// CPU time (user + system) of a process in seconds, from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// Sockets in `TIME_WAIT` per local IPv4 address, from `/proc/net/tcp` (empty when it cannot be
/// read). The connections a run closed stay there for a minute, and a later connect from the
/// same address searches past their ports for a free one.
pub fn time_wait_by_address() -> HashMap<Ipv4Addr, usize> {
    let mut counts = HashMap::new();
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    for line in table.lines().skip(1) {
        if let Some(address) = time_wait_local_address(line) {
            *counts.entry(address).or_insert(0) += 1;
        }
    }
    counts
}

/// The local address of a `/proc/net/tcp` line whose state is `TIME_WAIT` (`06`).
fn time_wait_local_address(line: &str) -> Option<Ipv4Addr> {
    let mut fields = line.split_whitespace();
    let local = fields.nth(1)?;
    let state = fields.nth(1)?;
    if state != "06" {
        return None;
    }
    let (hex, _port) = local.split_once(':')?;
    // The kernel prints the address's four bytes (network order) as one native-endian u32.
    let raw = u32::from_str_radix(hex, 16).ok()?;
    Some(Ipv4Addr::from(raw.to_ne_bytes()))
}

/// Microseconds since the Unix epoch (the same clock in every process on the machine).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// 1-minute load average and a short description of the machine.
pub fn machine() -> serde_json::Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let mem_kib: u64 = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_default();
    serde_json::json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "cpu": cpu,
        "mem_total_mib": mem_kib / 1024,
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "loadavg": read("/proc/loadavg").trim(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_local_address_of_time_wait_lines_only() {
        let time_wait = "  12: 0200007F:8F2A 0100007F:9C41 06 00000000:00000000 03:00001234 00000000     0        0 0 3 0000000000000000";
        let listening = "   0: 0100007F:1628 00000000:0000 0A 00000000:00000000 00:00000000 00000000   106        0 7191 1 000000001c52a7a5 100 0 0 10 0";
        assert_eq!(
            time_wait_local_address(time_wait),
            Some(Ipv4Addr::new(127, 0, 0, 2))
        );
        assert_eq!(time_wait_local_address(listening), None);
        assert_eq!(time_wait_local_address("garbage"), None);
    }
}
