//! A pod's network counters, from `/proc/<pid>/net/dev` of a process in
//! its network namespace: procfs shows the namespace of the reading
//! process's target, so no `setns` (which would taint a pooled thread).

/// One interface's counters, as cAdvisor exports them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InterfaceCounters {
    pub interface: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// The interfaces of the network namespace `pid` is in, loopback left
/// out (as cAdvisor does). `None` when the process has gone.
pub fn read(pid: i32) -> Option<Vec<InterfaceCounters>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).ok()?;
    Some(
        parse(&text)
            .into_iter()
            .filter(|i| i.interface != "lo")
            .collect(),
    )
}

/// Parses `/proc/net/dev`: two header lines, then `name: 16 numbers`
/// (8 receive, 8 transmit: bytes packets errs drop fifo frame/colls
/// compressed multicast/carrier).
pub fn parse(text: &str) -> Vec<InterfaceCounters> {
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let (name, numbers) = line.split_once(':')?;
            let n: Vec<u64> = numbers
                .split_whitespace()
                .map(|v| v.parse().ok())
                .collect::<Option<_>>()?;
            (n.len() >= 16).then(|| InterfaceCounters {
                interface: name.trim().to_owned(),
                rx_bytes: n[0],
                rx_packets: n[1],
                rx_errors: n[2],
                rx_dropped: n[3],
                tx_bytes: n[8],
                tx_packets: n[9],
                tx_errors: n[10],
                tx_dropped: n[11],
            })
        })
        .collect()
}

/// Receive and transmit bytes over every interface.
pub fn totals(interfaces: &[InterfaceCounters]) -> (u64, u64) {
    interfaces.iter().fold((0, 0), |(rx, tx), i| {
        (rx.saturating_add(i.rx_bytes), tx.saturating_add(i.tx_bytes))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NET_DEV: &str = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     840      10    0    0    0     0          0         0      840      10    0    0    0     0       0          0
  eth0: 1296123   16000    1    2    0     0          0         0   656789    8000    3    4    0     0       0          0
";

    #[test]
    fn reads_the_kernel_format() {
        let all = parse(NET_DEV);
        assert_eq!(all.len(), 2);
        assert_eq!(
            all[1],
            InterfaceCounters {
                interface: "eth0".into(),
                rx_bytes: 1_296_123,
                rx_packets: 16_000,
                rx_errors: 1,
                rx_dropped: 2,
                tx_bytes: 656_789,
                tx_packets: 8000,
                tx_errors: 3,
                tx_dropped: 4,
            }
        );
        assert_eq!(totals(&all), (1_296_963, 657_629));
    }

    #[test]
    fn this_process_has_a_loopback_to_leave_out() {
        let own = read(i32::try_from(std::process::id()).expect("pid fits")).expect("own net/dev");
        assert!(own.iter().all(|i| i.interface != "lo"));
        assert_eq!(read(-1), None);
    }
}
