//! vgpu-trace's eBPF programs: process lifecycle tracepoints and `dl*` uprobes.
//!
//! Programs hold no policy: they filter to followed processes, copy what userspace needs
//! into one ring buffer, and count every record they could not deliver.
#![no_std]
#![no_main]

mod emit;
mod kernel;
mod maps;
mod probes;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable in a loaded program: the verifier rejects any reachable panic path.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
