//! What this machine is (facts, sent at enrollment and in each hello) and
//! how busy it is (sent in each heartbeat).

use std::{net::UdpSocket, process::Command};

use minispod_proto::v1::{Heartbeat, MachineFacts, WorkerResources};
use sysinfo::{Disks, System};

/// Pods a K3s node admits by default.
pub const MAX_PODS: i64 = 110;

/// Reads the machine: sysinfo, plus kubelet/k3s and containerd versions when
/// their binaries are on PATH. `server_host` picks the local address facing
/// the control plane.
pub fn machine_facts(machine_id: &str, server_host: Option<&str>) -> MachineFacts {
    let mut sys = System::new().ok();
    if let Some(s) = sys.as_mut() {
        s.refresh_memory();
        s.refresh_cpu_all();
    }
    let (cpu_model, cpu_cores, memory) = sys
        .as_ref()
        .map(|s| {
            let model = s
                .cpus()
                .first()
                .map(|c| c.brand().trim().to_owned())
                .unwrap_or_default();
            (model, s.cpus().len() as i32, s.total_memory() as i64)
        })
        .unwrap_or_default();
    let (storage, _) = disk_usage();
    MachineFacts {
        hostname: System::host_name().unwrap_or_else(|_| "unknown".into()),
        machine_id: machine_id.to_owned(),
        ip_address: server_host.and_then(local_ip_towards).unwrap_or_default(),
        cpu_model,
        cpu_cores,
        architecture: System::cpu_arch(),
        memory_bytes: memory,
        storage_bytes: storage,
        os: System::long_os_version().unwrap_or_default(),
        kernel_version: System::kernel_version().unwrap_or_default(),
        kubelet_version: first_version(&[("k3s", "--version"), ("kubelet", "--version")]),
        container_runtime: first_version(&[("containerd", "--version"), ("crio", "--version")]),
        agent_version: crate::VERSION.to_owned(),
    }
}

/// (total, used) bytes over the machine's disks.
fn disk_usage() -> (i64, i64) {
    let Ok(disks) = Disks::new_with_refreshed_list() else {
        return (0, 0);
    };
    let mut seen = std::collections::HashSet::new();
    let (mut total, mut used) = (0u64, 0u64);
    for d in disks.iter() {
        // The same device mounted twice counts once.
        if seen.insert(d.name().to_owned()) {
            total += d.total_space();
            used += d.total_space().saturating_sub(d.available_space());
        }
    }
    (total as i64, used as i64)
}

/// The local address the kernel would use to reach `host` (no packet is sent).
fn local_ip_towards(host: &str) -> Option<String> {
    let sock = UdpSocket::bind("0.0.0.0:0").ok()?;
    sock.connect((host, 9)).ok()?;
    Some(sock.local_addr().ok()?.ip().to_string())
}

/// The first line of `<binary> --version` for the first binary present.
fn first_version(candidates: &[(&str, &str)]) -> String {
    for (bin, arg) in candidates {
        if let Ok(out) = Command::new(bin).arg(arg).output()
            && out.status.success()
        {
            let text = String::from_utf8_lossy(&out.stdout);
            if let Some(line) = text.lines().next() {
                return line.trim().chars().take(200).collect();
            }
        }
    }
    String::new()
}

/// Where heartbeat figures come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatSource {
    /// This machine, through sysinfo.
    Machine,
    /// Plausible constant figures, no system calls: for the swarm, which
    /// simulates thousands of agents in one process.
    Synthetic,
}

impl HeartbeatSource {
    /// A sampler of this kind.
    pub fn sampler(self) -> LoadSampler {
        match self {
            HeartbeatSource::Machine => LoadSampler::new(),
            HeartbeatSource::Synthetic => LoadSampler {
                sys: None,
                synthetic: true,
                sequence: 0,
            },
        }
    }
}

/// Samples load for heartbeats; keeps the sysinfo state between samples so
/// CPU use is measured over the interval.
#[derive(Debug)]
pub struct LoadSampler {
    sys: Option<System>,
    synthetic: bool,
    sequence: u64,
}

impl Default for LoadSampler {
    fn default() -> Self {
        Self::new()
    }
}

impl LoadSampler {
    /// A sampler; the first CPU figure covers the time since creation.
    pub fn new() -> Self {
        let mut sys = System::new().ok();
        if let Some(s) = sys.as_mut() {
            s.refresh_cpu_usage();
        }
        LoadSampler {
            sys,
            synthetic: false,
            sequence: 0,
        }
    }

    /// The next heartbeat.
    pub fn heartbeat(&mut self, ready: bool) -> Heartbeat {
        self.sequence += 1;
        if self.synthetic {
            const GIB: i64 = 1 << 30;
            return Heartbeat {
                sequence: self.sequence,
                cpu_used_percent: 5.0 + (self.sequence % 10) as f64,
                memory_used_bytes: GIB,
                storage_used_bytes: 10 * GIB,
                pod_count: 0,
                ready,
                allocatable: Some(WorkerResources {
                    cpu_millicores: 2000,
                    memory_bytes: 4 * GIB,
                    storage_bytes: 100 * GIB,
                    pods: MAX_PODS,
                }),
            };
        }
        let (cpu, mem_used, mem_total, cores) = match self.sys.as_mut() {
            Some(s) => {
                s.refresh_cpu_usage();
                s.refresh_memory();
                (
                    f64::from(s.global_cpu_usage()),
                    s.used_memory() as i64,
                    s.total_memory() as i64,
                    s.cpus().len() as i64,
                )
            }
            None => (0.0, 0, 0, 0),
        };
        let (disk_total, disk_used) = disk_usage();
        Heartbeat {
            sequence: self.sequence,
            cpu_used_percent: cpu,
            memory_used_bytes: mem_used,
            storage_used_bytes: disk_used,
            pod_count: 0,
            ready,
            allocatable: Some(WorkerResources {
                cpu_millicores: cores * 1000,
                memory_bytes: mem_total,
                storage_bytes: disk_total,
                pods: MAX_PODS,
            }),
        }
    }
}
