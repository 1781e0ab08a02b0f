//! The generated exports, through the built shim (`libvgpu_cuda.so`, opened as a program opens
//! libcuda) in front of a stand-in for the real driver built from `data/real-libcuda.c`. Each
//! case re-runs this test binary with its own variables, as the configuration is read once per
//! process.

#![cfg(all(target_arch = "x86_64", target_os = "linux"))]

use std::ffi::{c_char, c_int, c_uint, c_void};
use std::ptr;
use std::sync::{OnceLock, mpsc};
use std::time::Duration;

use vgpu_trace_fixtures::dlsym;

#[path = "../../common/test-support/child.rs"]
mod child;
#[path = "../../common/test-support/real_library.rs"]
mod real_library;
use child::{run_child, started_by_parent};
use real_library::{build_c_library, folded, function, open_shim, real_calls};

const PASS_THROUGH: &str = "VGPU_CUDA_PASSTHROUGH";

type LaunchKernel = unsafe extern "C" fn(
    *mut c_void,
    c_uint,
    c_uint,
    c_uint,
    c_uint,
    c_uint,
    c_uint,
    c_uint,
    *mut c_void,
    *mut *mut c_void,
    *mut *mut c_void,
) -> c_int;
/// The stand-in's own variadic signature for this name.
type BorderColor = unsafe extern "C" fn(c_int, ...) -> c_int;
type MemGetInfo = unsafe extern "C" fn(*mut usize, *mut usize) -> c_int;
type GetExportTable = unsafe extern "C" fn(*mut *const c_void, *const c_void) -> c_int;
type NoArguments = unsafe extern "C" fn() -> c_int;
type GetProcAddress =
    unsafe extern "C" fn(*const c_char, *mut *mut c_void, c_int, u64, *mut c_int) -> c_int;

fn real_driver() -> String {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| {
        let path = build_c_library("real-libcuda.c");
        path.to_str().expect("UTF-8 path").to_owned()
    })
    .clone()
}

fn shim() -> usize {
    open_shim("libvgpu_cuda.so")
}

/// cuLaunchKernel with distinct values everywhere; the stand-in's answer for them.
unsafe fn launch(launch_kernel: LaunchKernel) -> (c_int, c_int) {
    let pointers = [0x1000_usize, 0x2000, 0x3000, 0x4000];
    let result = unsafe {
        launch_kernel(
            pointers[0] as *mut c_void,
            2,
            3,
            4,
            5,
            6,
            7,
            8,
            pointers[1] as *mut c_void,
            pointers[2] as *mut *mut c_void,
            pointers[3] as *mut *mut c_void,
        )
    };
    let expected = folded(&[0x1000, 2, 3, 4, 5, 6, 7, 8, 0x2000, 0x3000, 0x4000]);
    (result, expected)
}

fn query(shim: usize, symbol: &std::ffi::CStr) -> (c_int, *mut c_void, c_int) {
    // SAFETY: the driver's signature.
    let get: GetProcAddress = unsafe { function(shim, "cuGetProcAddress_v2") };
    let (mut pfn, mut status) = (ptr::dangling_mut(), 99);
    let result = unsafe { get(symbol.as_ptr(), &mut pfn, 12080, 0, &mut status) };
    (result, pfn, status)
}

#[test]
fn forwards_by_symbol() {
    run_child(
        "child_forwards_by_symbol",
        &[(PASS_THROUGH, &real_driver())],
    );
}

#[test]
#[ignore = "run by forwards_by_symbol"]
fn child_forwards_by_symbol() {
    if !started_by_parent("child_forwards_by_symbol") {
        return;
    }
    let shim = shim();
    unsafe {
        let (result, expected) = launch(function(shim, "cuLaunchKernel"));
        assert_eq!(result, expected, "eleven arguments, five on the stack");
        assert_eq!(real_calls(PASS_THROUGH), 1);

        let border_color: BorderColor = function(shim, "cuTexRefSetBorderColor");
        let result = border_color(
            10, 1, 0.5, 2, 1.25, 3, 2.0, 4, 3.5, 5, 4.75, 6, 5.0, 7, 6.25, 8, 7.5, 9, 8.0, 10,
            9.125,
        );
        let mut values = Vec::new();
        for (int, double) in [
            (1, 0.5),
            (2, 1.25),
            (3, 2.0),
            (4, 3.5),
            (5, 4.75),
            (6, 5.0),
            (7, 6.25),
            (8, 7.5),
            (9, 8.0),
            (10, 9.125),
        ] {
            values.extend([int, (double * 8.0) as u64]);
        }
        assert_eq!(result, folded(&values), "varargs, ten doubles");

        let get_info: MemGetInfo = function(shim, "cuMemGetInfo_v2");
        let (mut free, mut total) = (0, 0);
        assert_eq!(get_info(&mut free, &mut total), 0);
        assert_eq!(
            (free, total),
            (111, 222),
            "a hand-written export forwards too"
        );

        let get_table: GetExportTable = function(shim, "cuGetExportTable");
        let (mut table, id) = (ptr::null(), 0x5150_usize as *const c_void);
        assert_eq!(get_table(&mut table, id), 0);
        assert_eq!(table, id);
        assert_eq!(real_calls(PASS_THROUGH), 4);

        let synchronize: NoArguments = function(shim, "cuCtxSynchronize");
        assert_eq!(synchronize(), 500, "listed, but not in this driver");
    }
}

#[test]
fn proc_address_gives_the_shims_entries() {
    run_child(
        "child_proc_address_gives_the_shims_entries",
        &[(PASS_THROUGH, &real_driver())],
    );
}

#[test]
#[ignore = "run by proc_address_gives_the_shims_entries"]
fn child_proc_address_gives_the_shims_entries() {
    if !started_by_parent("child_proc_address_gives_the_shims_entries") {
        return;
    }
    let shim = shim();
    unsafe {
        let (result, pfn, status) = query(shim, c"cuLaunchKernel");
        assert_eq!((result, status), (0, 0));
        assert_eq!(
            pfn as usize,
            dlsym(shim, "cuLaunchKernel"),
            "the shim's entry"
        );
        assert_ne!(pfn as usize, dlsym(real_library_handle(), "cuLaunchKernel"));
        let (result, expected) = launch(std::mem::transmute::<*mut c_void, LaunchKernel>(pfn));
        assert_eq!(result, expected);

        let (_, pfn, _) = query(shim, c"cuMemGetInfo");
        assert_eq!(pfn as usize, dlsym(shim, "cuMemGetInfo_v2"));
        let (mut free, mut total) = (0, 0);
        let get_info = std::mem::transmute::<*mut c_void, MemGetInfo>(pfn);
        assert_eq!(get_info(&mut free, &mut total), 0);
        assert_eq!((free, total), (111, 222));

        let (result, pfn, _) = query(shim, c"cuHidden");
        assert_eq!(result, 0);
        let hidden = std::mem::transmute::<*mut c_void, NoArguments>(pfn);
        assert_eq!(hidden(), 4242, "exported by no name: as the driver gave it");

        let (result, pfn, status) = query(shim, c"cuNoSuchFunction");
        assert_eq!((result, pfn, status), (500, ptr::null_mut(), 1));
    }
}

fn real_library_handle() -> usize {
    let path = std::env::var(PASS_THROUGH).expect("the pass-through library");
    vgpu_trace_fixtures::dlopen(&path, libc::RTLD_NOW)
}

#[test]
fn injected_failures_apply_to_generated_exports() {
    let vars = [
        (PASS_THROUGH, real_driver()),
        (
            "VGPU_FAIL",
            "cuLaunchKernel=CUDA_ERROR_LAUNCH_FAILED".to_owned(),
        ),
    ];
    let vars = vars.each_ref().map(|(name, value)| (*name, value.as_str()));
    run_child("child_injected_failures_apply_to_generated_exports", &vars);
}

#[test]
#[ignore = "run by injected_failures_apply_to_generated_exports"]
fn child_injected_failures_apply_to_generated_exports() {
    if !started_by_parent("child_injected_failures_apply_to_generated_exports") {
        return;
    }
    let shim = shim();
    unsafe {
        let launch_kernel: LaunchKernel = function(shim, "cuLaunchKernel");
        assert_eq!(launch(launch_kernel).0, 719);
        let path = std::env::var(PASS_THROUGH).expect("the pass-through library");
        let loaded = vgpu_trace_fixtures::dlopen(&path, libc::RTLD_NOW | libc::RTLD_NOLOAD);
        assert_eq!(
            loaded, 0,
            "nothing else done: the driver is not even loaded"
        );
        let (_, pfn, _) = query(shim, c"cuLaunchKernel");
        assert_eq!(
            launch(std::mem::transmute::<*mut c_void, LaunchKernel>(pfn)).0,
            719
        );
        assert_eq!(
            real_calls(PASS_THROUGH),
            1,
            "only cuGetProcAddress_v2 reached it"
        );
    }
}

#[test]
fn hang_applies_to_generated_exports() {
    run_child(
        "child_hang_applies_to_generated_exports",
        &[("VGPU_FAIL", "cuCtxSynchronize=hang")],
    );
}

#[test]
#[ignore = "run by hang_applies_to_generated_exports"]
fn child_hang_applies_to_generated_exports() {
    if !started_by_parent("child_hang_applies_to_generated_exports") {
        return;
    }
    // SAFETY: cuCtxSynchronize takes no arguments.
    let synchronize: NoArguments = unsafe { function(shim(), "cuCtxSynchronize") };
    let (finished, watcher) = mpsc::channel();
    std::thread::spawn(move || finished.send(unsafe { synchronize() }));
    assert_eq!(
        watcher.recv_timeout(Duration::from_millis(300)),
        Err(mpsc::RecvTimeoutError::Timeout)
    );
}

#[test]
fn emulated_generated_exports_are_not_supported() {
    run_child("child_emulated_generated_exports_are_not_supported", &[]);
}

#[test]
#[ignore = "run by emulated_generated_exports_are_not_supported"]
fn child_emulated_generated_exports_are_not_supported() {
    if !started_by_parent("child_emulated_generated_exports_are_not_supported") {
        return;
    }
    let shim = shim();
    unsafe {
        assert_eq!(launch(function(shim, "cuLaunchKernel")).0, 801);
        let synchronize: NoArguments = function(shim, "cuCtxSynchronize");
        assert_eq!(synchronize(), 801);
        let (result, pfn, _) = query(shim, c"cuLaunchKernel");
        assert_eq!(
            (result, pfn),
            (500, ptr::null_mut()),
            "emulated exports only"
        );
        let (result, pfn, _) = query(shim, c"cuInit");
        assert_eq!((result, pfn as usize), (0, dlsym(shim, "cuInit")));
    }
}
