//! The virtual GPU that the reference CUDA and NVML shims present, and what both shims share:
//! the configuration read from the environment once per process, failure injection
//! (`VGPU_FAIL`), `CUDA_VISIBLE_DEVICES`, pass-through to a real NVIDIA library, the macro
//! that declares each hand-written C function once, and the one that generates the others.

pub mod c_buffer;
pub mod codes;
mod config;
pub mod export;
mod fail;
pub mod forward;
mod passthrough;
mod uuid;
mod visible;

pub use config::{ComputeCapability, Config, Device, MAX_DEVICES, PciLocation};
pub use fail::{FailAction, FailPlan};
pub use passthrough::{Api, Backend, PassThrough, RealLibrary};
pub use uuid::Uuid;
pub use visible::visible_devices;
