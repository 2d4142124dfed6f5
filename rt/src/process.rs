//! The process's own resource use, for the node's `process_*` metrics (the Prometheus
//! client's process collector, which etcd registers): read from `/proc/self` on Linux.
//! Under the simulator every member shares one process and nothing may depend on the host,
//! so there is nothing to read: [`stats`] is `None` and the metrics are left out.

/// What the Prometheus process collector reports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessStats {
    /// User and system CPU time, in seconds.
    pub cpu_seconds: f64,
    /// Resident memory, in bytes.
    pub resident_bytes: u64,
    /// Virtual memory, in bytes.
    pub virtual_bytes: u64,
    /// The soft limit on the address space, in bytes (`u64::MAX`: unlimited).
    pub virtual_max_bytes: u64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// The soft limit on open file descriptors.
    pub max_fds: u64,
    /// When the process started, in seconds since the Unix epoch.
    pub start_time_seconds: f64,
}

/// The process's resource use now; `None` under the simulator, off Linux, or when `/proc`
/// cannot be read.
pub fn stats() -> Option<ProcessStats> {
    #[cfg(madsim)]
    {
        None
    }
    #[cfg(all(not(madsim), target_os = "linux"))]
    {
        linux::read()
    }
    #[cfg(all(not(madsim), not(target_os = "linux")))]
    {
        None
    }
}

#[cfg(all(not(madsim), target_os = "linux"))]
mod linux {
    use super::ProcessStats;

    /// Clock ticks per second of `/proc`'s times (`USER_HZ`, 100 on every Linux port; the
    /// Prometheus Go client assumes the same).
    const USER_HZ: f64 = 100.0;

    pub(super) fn read() -> Option<ProcessStats> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
        let boot = std::fs::read_to_string("/proc/stat").ok()?;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        parse(&stat, &status, &limits, &boot, open_fds)
    }

    /// The collector's numbers from the texts of `/proc/self/stat`, `/proc/self/status`,
    /// `/proc/self/limits` and `/proc/stat`.
    pub(super) fn parse(
        stat: &str,
        status: &str,
        limits: &str,
        boot: &str,
        open_fds: u64,
    ) -> Option<ProcessStats> {
        // Fields after the command (which may hold spaces and parentheses): the third
        // field (state) is index 0.
        let rest = &stat[stat.rfind(')')? + 1..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| -> Option<u64> { f.get(n - 3)?.parse().ok() };
        let (utime, stime, start, vsize) = (field(14)?, field(15)?, field(22)?, field(23)?);
        let rss_kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        let btime: u64 = boot
            .lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()?;
        let limit = |name: &str| -> Option<u64> {
            let soft = limits.lines().find_map(|l| l.strip_prefix(name))?;
            match soft.split_whitespace().next()? {
                "unlimited" => Some(u64::MAX),
                n => n.parse().ok(),
            }
        };
        Some(ProcessStats {
            cpu_seconds: (utime + stime) as f64 / USER_HZ,
            resident_bytes: rss_kb * 1024,
            virtual_bytes: vsize,
            virtual_max_bytes: limit("Max address space")?,
            open_fds,
            max_fds: limit("Max open files")?,
            start_time_seconds: btime as f64 + start as f64 / USER_HZ,
        })
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn parses_procfs_texts() {
            let stat = "4242 (my (odd) cmd) S 1 4242 4242 0 -1 4194560 500 0 0 0 250 130 0 0 20 0 7 0 123456 11944128512 6156 18446744073709551615";
            let status = "Name:\tetcd\nVmSize:\t11664188 kB\nVmRSS:\t   24624 kB\n";
            let limits = "Limit                     Soft Limit           Hard Limit           Units     \nMax open files            20000                20000                files     \nMax address space         unlimited            unlimited            bytes     \n";
            let boot = "cpu  1 2 3\nbtime 1796480000\nprocesses 9\n";
            let s = super::parse(stat, status, limits, boot, 19).expect("parses");
            assert_eq!(s.cpu_seconds, 3.8);
            assert_eq!(s.resident_bytes, 24624 * 1024);
            assert_eq!(s.virtual_bytes, 11944128512);
            assert_eq!(s.virtual_max_bytes, u64::MAX);
            assert_eq!(s.max_fds, 20000);
            assert_eq!(s.open_fds, 19);
            assert_eq!(s.start_time_seconds, 1796480000.0 + 1234.56);
        }

        #[test]
        fn reads_this_process() {
            let s = super::read().expect("/proc/self is readable on Linux");
            assert!(s.resident_bytes > 0 && s.open_fds > 0 && s.max_fds >= s.open_fds);
            assert!(s.start_time_seconds > 1.0e9);
        }
    }
}
