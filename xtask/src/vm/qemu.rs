//! One boot of a kernel and the initramfs under QEMU's TCG (KVM does not work inside these
//! machines, see docs), its serial console captured to a log, with a wall-clock limit.
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

/// What /init prints once the workload has returned, before powering off.
pub const DONE: &str = "VGPU-VM-DONE";
/// The prefix of a result line: `VGPU-VM key=value`.
const RESULT: &str = "VGPU-VM ";
/// Virtual CPUs: one. With 2 (MTTCG, a host thread per vCPU; host of 2 cores) only
/// independent busy processes gained (two dl-bench 300000: 1.6-2.0 s against 2.7-4.0 s).
/// The tracer and its tracee taking turns under ptrace lost: dl-bench 2000 took 11-23 s
/// against 6.5-7.2 s with 1 (sid; a wake-up on the other vCPU is slow under TCG); the eBPF
/// run and the lab took about as long, and the boot 0.5 s longer. And one boot in about 120
/// with 2 vCPUs died of an `Oops: int3` in code the kernel was patching (trixie, at boot),
/// which the kernel does again when the tracer turns a tracepoint on.
pub const CPUS: u32 = 1;

pub struct Boot<'a> {
    pub vmlinuz: &'a Path,
    pub initrd: &'a Path,
    /// Where the serial console (and QEMU's own messages) go.
    pub log: &'a Path,
    pub timeout: Duration,
    pub cpus: u32,
}

pub struct Outcome {
    /// The console output, carriage returns removed.
    pub output: String,
    pub seconds: f64,
    /// QEMU was killed at the limit.
    pub timed_out: bool,
    /// /init printed DONE: the workload ran to its end.
    pub done: bool,
}

pub fn ensure_installed() -> anyhow::Result<()> {
    crate::testbed::install_missing(&[("qemu-system-x86_64", "qemu-system-x86")])
}

pub fn boot(b: &Boot) -> anyhow::Result<Outcome> {
    let log =
        std::fs::File::create(b.log).with_context(|| format!("creating {}", b.log.display()))?;
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-accel", "tcg", "-cpu", "max"])
        .args(["-smp", &b.cpus.to_string(), "-m", "2048"])
        // No network: nothing is fetched in the VM, and no NIC means no option ROM to load.
        .args(["-nographic", "-no-reboot", "-nic", "none"])
        .arg("-kernel")
        .arg(b.vmlinuz)
        .arg("-initrd")
        .arg(b.initrd)
        // panic=-1 with -no-reboot: a panic (an /init that exits) ends QEMU at once.
        .args(["-append", "console=ttyS0 rdinit=/init panic=-1 quiet"])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("failed to run {cmd:?}"))?;
    let mut timed_out = false;
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if start.elapsed() >= b.timeout {
            timed_out = true;
            // Already gone is fine: it exited between the two calls.
            let _ = child.kill();
            child.wait()?;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let seconds = start.elapsed().as_secs_f64();
    let raw = std::fs::read(b.log).with_context(|| format!("reading {}", b.log.display()))?;
    let output = String::from_utf8_lossy(&raw).replace('\r', "");
    let done = output.lines().any(|l| l.contains(DONE));
    Ok(Outcome {
        output,
        seconds,
        timed_out,
        done,
    })
}

/// The `VGPU-VM key=value` lines, in order; a line without `=` gives an empty value.
pub fn results(output: &str) -> Vec<(String, String)> {
    output
        .lines()
        .filter_map(|l| l.trim_end().split_once(RESULT).map(|(_, kv)| kv))
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.trim().to_string(), v.to_string()),
            None => (kv.trim().to_string(), String::new()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_lines() {
        let out = "[    1.0] random: crng init done\nVGPU-VM uname=6.1.0-50-cloud-amd64\n\
                   VGPU-VM verifier=vgpu-trace: error: a=b\nnoise VGPU-VM-DONE\nVGPU-VM flag\n";
        assert_eq!(
            results(out),
            [
                ("uname".to_string(), "6.1.0-50-cloud-amd64".to_string()),
                ("verifier".to_string(), "vgpu-trace: error: a=b".to_string()),
                ("flag".to_string(), String::new()),
            ]
        );
    }
}
