fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("debug").init();
    let mut b = vgpu_trace::backend::ebpf::EbpfBackend::load(&vgpu_trace::backend::ebpf::Options{follow_all:false, ring_bytes: 1<<22})?;
    b.probe_libraries(&vgpu_trace::backend::ebpf::dl_libraries(&[]))?;
    let mut child = std::process::Command::new("python3").args(["-c","import time,ctypes; time.sleep(0.2); ctypes.CDLL('libm.so.6')\ntry: ctypes.CDLL('libnope.so')\nexcept OSError as e: print(e)"]).env("OLLAMA_X","1").spawn()?;
    b.follow(child.id())?;
    child.wait()?;
    std::thread::sleep(std::time::Duration::from_millis(100));
    let mut v = Vec::new(); b.drain(&mut v);
    for e in &v { println!("{e:?}"); }
    println!("{:?}", b.errors()?);
    Ok(())
}
