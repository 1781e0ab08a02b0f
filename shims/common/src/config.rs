//! The configuration of the virtual GPUs, read from the environment once per process.

use std::ffi::CString;
use std::fmt;
use std::io::Write;
use std::sync::OnceLock;

use crate::fail::FailPlan;
use crate::uuid::Uuid;
use crate::visible::visible_devices;

/// Most devices a configuration may declare (NVML hands out one static handle per slot).
pub const MAX_DEVICES: usize = 64;

const MIB: u64 = 1 << 20;
const DEFAULT_NAME: &str = "vGPU H100 80GB";
const DEFAULT_TOTAL_MIB: u64 = 81920;
/// Default free memory is the total minus this, as a driver keeps some for itself.
const DRIVER_RESERVED_MIB: u64 = 512;
const DEFAULT_COMPUTE_CAPABILITY: ComputeCapability = ComputeCapability { major: 9, minor: 0 };
const DEFAULT_DRIVER_VERSION: &str = "580.65.06";
const DEFAULT_CUDA_VERSION: CudaVersion = CudaVersion(13000);
/// NVML's buffer sizes (NVML_DEVICE_NAME_V2_BUFFER_SIZE, NVML_SYSTEM_DRIVER_VERSION_BUFFER_SIZE)
/// less the NUL: longer strings could never be returned.
const MAX_NAME_LEN: usize = 95;
const MAX_DRIVER_VERSION_LEN: usize = 79;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ComputeCapability {
    pub major: i32,
    pub minor: i32,
}

/// Where a device sits on the PCI bus; derived from its index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciLocation {
    pub domain: u32,
    pub bus: u32,
    pub device: u32,
}

/// One physical virtual GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub name: String,
    pub uuid: Uuid,
    pub total_memory_bytes: u64,
    pub free_memory_bytes: u64,
    pub compute_capability: ComputeCapability,
    pub pci: PciLocation,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// Every device, in NVML (physical) order.
    pub devices: Vec<Device>,
    /// Indices into `devices` that CUDA shows, in CUDA ordinal order (`CUDA_VISIBLE_DEVICES`).
    pub cuda_visible: Vec<usize>,
    /// NVML's driver version string, e.g. "580.65.06".
    pub driver_version: String,
    /// `cuDriverGetVersion`'s number, e.g. 13000 for CUDA 13.0.
    pub cuda_version: i32,
    pub fail: FailPlan,
    pub cuda_passthrough: Option<CString>,
    pub nvml_passthrough: Option<CString>,
    /// What was wrong with the environment; `get` prints each line once.
    pub warnings: Vec<String>,
}

impl Config {
    /// The process's configuration, read from the environment on first use. Problems are
    /// reported on stderr once and replaced by defaults; reading never fails.
    pub fn get() -> &'static Config {
        static CONFIG: OnceLock<Config> = OnceLock::new();
        CONFIG.get_or_init(|| {
            let config = Config::from_lookup(|name| {
                std::env::var_os(name).map(|value| value.to_string_lossy().into_owned())
            });
            let mut stderr = std::io::stderr().lock();
            for warning in &config.warnings {
                // Nowhere to report a failing stderr; the default is used either way.
                let _ = writeln!(stderr, "vgpu-shim: {warning}");
            }
            config
        })
    }

    /// Builds the configuration from `NAME=value` pairs instead of the environment.
    pub fn from_pairs(vars: &[(&str, &str)]) -> Self {
        Self::from_lookup(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    /// Builds the configuration from `lookup(variable name)`: pure, for tests.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let mut env = Reader {
            lookup: &lookup,
            warnings: Vec::new(),
        };
        let count = env.parsed(
            "VGPU_DEVICE_COUNT",
            1,
            "a device count from 0 to 64",
            |text| text.parse().ok().filter(|&count| count <= MAX_DEVICES),
        );
        let name = env.parsed(
            "VGPU_DEVICE_NAME",
            DEFAULT_NAME.to_owned(),
            "at most 95 bytes",
            |text| (text.len() <= MAX_NAME_LEN).then(|| text.to_owned()),
        );
        let total_mib = env.parsed(
            "VGPU_TOTAL_MEMORY_MIB",
            DEFAULT_TOTAL_MIB,
            "a positive number of MiB",
            |text| {
                text.parse()
                    .ok()
                    .filter(|mib| (1..=u64::MAX / MIB).contains(mib))
            },
        );
        let default_free_mib = total_mib.saturating_sub(DRIVER_RESERVED_MIB);
        let free_mib = env.parsed(
            "VGPU_FREE_MEMORY_MIB",
            default_free_mib,
            "a number of MiB no larger than the total",
            |text| text.parse().ok().filter(|&mib| mib <= total_mib),
        );
        let compute_capability = env.parsed(
            "VGPU_COMPUTE_CAPABILITY",
            DEFAULT_COMPUTE_CAPABILITY,
            "major.minor such as 8.6",
            parse_compute_capability,
        );
        let driver_version = env.parsed(
            "VGPU_DRIVER_VERSION",
            DEFAULT_DRIVER_VERSION.to_owned(),
            "at most 79 bytes",
            |text| (text.len() <= MAX_DRIVER_VERSION_LEN).then(|| text.to_owned()),
        );
        let cuda_version = env.parsed(
            "VGPU_CUDA_VERSION",
            DEFAULT_CUDA_VERSION,
            "major.minor such as 12.4",
            parse_cuda_version,
        );
        let uuids = env.uuids(count);
        let fail = FailPlan::parse(
            &env.value("VGPU_FAIL").unwrap_or_default(),
            &mut env.warnings,
        );
        let cuda_passthrough = env.path("VGPU_CUDA_PASSTHROUGH");
        let nvml_passthrough = env.path("VGPU_NVML_PASSTHROUGH");

        let devices = (0_u32..)
            .zip(uuids)
            .map(|(index, uuid)| Device {
                name: name.clone(),
                uuid,
                total_memory_bytes: total_mib * MIB,
                free_memory_bytes: free_mib * MIB,
                compute_capability,
                pci: PciLocation {
                    domain: 0,
                    bus: index + 1,
                    device: 0,
                },
            })
            .collect::<Vec<_>>();
        let all_uuids = devices.iter().map(|device| device.uuid).collect::<Vec<_>>();
        // Not `value`: an empty CUDA_VISIBLE_DEVICES hides every device rather than meaning unset.
        let cuda_visible = visible_devices(lookup("CUDA_VISIBLE_DEVICES").as_deref(), &all_uuids);

        Self {
            devices,
            cuda_visible,
            driver_version,
            cuda_version: cuda_version.0,
            fail,
            cuda_passthrough,
            nvml_passthrough,
            warnings: env.warnings,
        }
    }
}

/// Reads variables, turning each bad value into its default plus a warning.
struct Reader<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    warnings: Vec<String>,
}

impl Reader<'_> {
    /// The variable's value; empty counts as unset.
    fn value(&self, name: &str) -> Option<String> {
        (self.lookup)(name).filter(|value| !value.trim().is_empty())
    }

    fn parsed<T: fmt::Display>(
        &mut self,
        name: &str,
        default: T,
        expected: &str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> T {
        let Some(text) = self.value(name) else {
            return default;
        };
        parse(text.trim()).unwrap_or_else(|| {
            self.warnings.push(format!(
                "{name}={text:?} is not {expected}; using {default}"
            ));
            default
        })
    }

    fn path(&self, name: &str) -> Option<CString> {
        self.value(name).and_then(|path| CString::new(path).ok())
    }

    /// `VGPU_DEVICE_UUIDS`, entry by entry over the defaults.
    fn uuids(&mut self, count: usize) -> Vec<Uuid> {
        let mut uuids = (0..count).map(Uuid::default_for).collect::<Vec<_>>();
        let Some(list) = self.value("VGPU_DEVICE_UUIDS") else {
            return uuids;
        };
        for (index, entry) in list.split(',').map(str::trim).enumerate() {
            let Some(default) = uuids.get(index).copied() else {
                let warning = format!(
                    "VGPU_DEVICE_UUIDS has more than {count} entries; ignoring {entry:?} on"
                );
                self.warnings.push(warning);
                break;
            };
            let problem = match Uuid::parse(entry) {
                None => "is not GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx",
                Some(uuid) if uuids.iter().take(index).any(|&earlier| earlier == uuid) => {
                    "repeats an earlier device's"
                }
                Some(uuid) => {
                    if let Some(slot) = uuids.get_mut(index) {
                        *slot = uuid;
                    }
                    continue;
                }
            };
            self.warnings.push(format!(
                "VGPU_DEVICE_UUIDS entry {entry:?} {problem}; device {index} keeps {default}"
            ));
        }
        uuids
    }
}

impl fmt::Display for ComputeCapability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

fn parse_compute_capability(text: &str) -> Option<ComputeCapability> {
    let (major, minor) = parse_major_minor(text)?;
    (major >= 1).then_some(ComputeCapability { major, minor })
}

/// A CUDA version as the driver API numbers it: 1000 × major + 10 × minor.
struct CudaVersion(i32);

impl fmt::Display for CudaVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.0 / 1000, self.0 % 1000 / 10)
    }
}

fn parse_cuda_version(text: &str) -> Option<CudaVersion> {
    let (major, minor) = parse_major_minor(text)?;
    (major >= 1).then_some(CudaVersion(major * 1000 + minor * 10))
}

/// `major.minor` with a major below 1000 and a one- or two-digit minor.
fn parse_major_minor(text: &str) -> Option<(i32, i32)> {
    let (major, minor) = text.split_once('.')?;
    let digits = |part: &str, max_len: usize| {
        (!part.is_empty() && part.len() <= max_len && part.bytes().all(|c| c.is_ascii_digit()))
            .then(|| part.parse::<i32>().ok())
            .flatten()
    };
    Some((digits(major, 3)?, digits(minor, 2)?))
}

#[cfg(test)]
mod tests;
