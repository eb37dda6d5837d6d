//! What the numbers were measured on: printed with every table, since harvest costs scale
//! with the CPU and a VM's page-table walks cost more than bare metal's.

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub memory_gib: f64,
    pub kernel: String,
    /// The hypervisor, when the CPU says it runs under one (`hypervisor` cpuinfo flag).
    pub virtualized: Option<String>,
    /// Transparent huge pages mode: with `always`, the bench buffer is huge pages, which
    /// soft-dirty reports 512 pages at a time while a uffd-wp write splits them.
    pub thp: String,
    /// The load average (1, 5 and 15 minutes) when the bench began.
    pub load_at_start: [f64; 3],
}

/// `/proc/loadavg`'s three averages (zeros if unreadable).
pub fn load_average() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut fields = text.split_whitespace().map(|f| f.parse().unwrap_or(0.0));
    [(); 3].map(|()| fields.next().unwrap_or(0.0))
}

impl Machine {
    pub fn read() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let field = |name: &str| {
            cpuinfo
                .lines()
                .find(|l| l.split(':').next().is_some_and(|k| k.trim() == name))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        };
        let under_hypervisor =
            field("flags").is_some_and(|f| f.split(' ').any(|x| x == "hypervisor"));
        let dmi = |f: &str| {
            std::fs::read_to_string(format!("/sys/class/dmi/id/{f}"))
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        };
        let memory_kib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
            .unwrap_or(0);
        Machine {
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model: field("model name").unwrap_or_else(|| "unknown CPU".into()),
            memory_gib: memory_kib as f64 / (1 << 20) as f64,
            kernel: uffd_dirty::probe::kernel_release(),
            thp: std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
                .ok()
                .and_then(|s| {
                    let (_, rest) = s.split_once('[')?;
                    Some(rest.split_once(']')?.0.to_string())
                })
                .unwrap_or_else(|| "unknown".into()),
            load_at_start: load_average(),
            virtualized: under_hypervisor.then(|| {
                let vendor = dmi("sys_vendor").unwrap_or_default();
                let product = dmi("product_name").unwrap_or_default();
                let name = format!("{vendor} {product}").trim().to_string();
                if name.is_empty() {
                    "a virtual machine".into()
                } else {
                    format!("a virtual machine ({name})")
                }
            }),
        }
    }

    /// One line for the table header.
    pub fn describe(&self) -> String {
        format!(
            "{} CPUs ({}), {:.0} GiB, kernel {}, THP {}, {}",
            self.cpus,
            self.cpu_model,
            self.memory_gib,
            self.kernel,
            self.thp,
            self.virtualized
                .as_deref()
                .unwrap_or("bare metal (no hypervisor flag)")
        )
    }
}
