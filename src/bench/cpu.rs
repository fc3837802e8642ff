//! CPU time of server processes, read from `/proc/<pid>/stat`, for
//! `ydht bench --server-pid` (CPU per operation separates a better server from
//! a good one where ops/s cannot: the load generator shares the machine).

/// Clock ticks per second of `/proc/<pid>/stat`'s times (`USER_HZ`, fixed at
/// 100 by the Linux ABI whatever the kernel's internal tick rate).
pub const TICKS_PER_SECOND: u64 = 100;

/// Why a process's CPU time could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CpuError {
    /// The stat file cannot be read (no such process, or not Linux).
    #[error("cannot read /proc/{pid}/stat ({source}); is the process running (Linux only)?")]
    Unreadable {
        /// The process.
        pid: u32,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The stat file does not have the expected fields.
    #[error("/proc/{pid}/stat has no user and system times")]
    Malformed {
        /// The process.
        pid: u32,
    },
}

/// User + system clock ticks process `pid` (all its threads, live and ended) has used.
pub fn ticks(pid: u32) -> Result<u64, CpuError> {
    let stat =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|source| CpuError::Unreadable { pid, source })?;
    parse(&stat).ok_or(CpuError::Malformed { pid })
}

/// The sum of [`ticks`] over `pids`.
pub fn total_ticks(pids: &[u32]) -> Result<u64, CpuError> {
    pids.iter().map(|&pid| ticks(pid)).sum()
}

/// utime + stime (fields 14 and 15) of a stat line. The command name (field 2)
/// is in parentheses and may hold spaces and parentheses, so fields are
/// counted after its last `)`.
fn parse(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(user + system)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_and_system_times_are_found_after_an_odd_command_name() {
        let stat = "4242 (ydht (serve) x) S 1 4242 4242 0 -1 4194560 9000 0 0 0 731 268 0 0 20 0 12 0 100 0 0";
        assert_eq!(parse(stat), Some(731 + 268));
        assert_eq!(parse("4242 (ydht) S 1"), None);
    }

    #[test]
    fn a_running_process_is_read_and_a_missing_one_is_named() {
        assert!(ticks(std::process::id()).is_ok());
        let error = ticks(u32::MAX).unwrap_err().to_string();
        assert!(error.contains(&u32::MAX.to_string()) && error.contains("running"), "{error}");
    }
}
