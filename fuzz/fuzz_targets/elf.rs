//! ELF facts from any bytes: facts or an error, never a panic; the same answer from memory
//! (`elf::parse`, as `doctor` reads) and from a file read by ranges (`files::read_elf_file`, as
//! the tracer reads, which must read nothing outside the file); and the loader's facts
//! (`parse_dynamic`) the full facts less the symbols.
#![no_main]
use std::os::unix::fs::FileExt as _;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vgpu_trace::loader::elf::{self, ElfFacts, Ident};
use vgpu_trace::files::read_elf_file;

/// One scratch file per fuzzing process, unlinked at once: the input is written to it each run.
fn scratch() -> &'static std::fs::File {
    static FILE: OnceLock<std::fs::File> = OnceLock::new();
    FILE.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("vgpu-fuzz-elf-{}", std::process::id()));
        let file = std::fs::File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .expect("a scratch file");
        std::fs::remove_file(&path).expect("unlink the scratch file");
        file
    })
}

fn same<E: std::fmt::Debug>(
    what: &str,
    memory: &Result<ElfFacts, elf::ElfError>,
    file: Result<ElfFacts, E>,
) {
    match (memory, file) {
        (Ok(m), Ok(f)) => assert_eq!(m, &f, "{what}: memory and file readers disagree"),
        (Err(_), Err(_)) => {}
        (m, f) => panic!("{what}: from memory {m:?}, from the file {f:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let full = elf::parse(data);
    let dynamic = elf::parse_dynamic(data);
    if let Ok(facts) = &full {
        assert_eq!(Some(facts.ident), Ident::parse(data));
        let mut loader = dynamic
            .as_ref()
            .expect("whatever gives full facts gives the loader's")
            .clone();
        assert!(loader.exports.is_empty() && loader.imports.is_empty());
        loader.exports.clone_from(&facts.exports);
        loader.imports.clone_from(&facts.imports);
        assert_eq!(&loader, facts);
        let _ = facts.ident.mismatch(&Ident::native());
        let _ = facts.ident.describe();
        let names = facts.exports.iter().take(8).map(|e| (e.name.as_str(), 1));
        let _ = facts.probe_points(names);
    }
    let file = scratch();
    file.set_len(0).unwrap();
    file.write_all_at(data, 0).unwrap();
    let by_ranges = |symbols| read_elf_file(file.try_clone().unwrap(), symbols).map(|f| f.facts);
    same("parse", &full, by_ranges(true));
    same("parse_dynamic", &dynamic, by_ranges(false));
});
