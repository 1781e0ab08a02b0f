//! Files the CLI writes (`-o`, records, Perfetto traces): traces hold command lines and
//! environments, so only their owner may read them.
use std::{
    fs::{File, OpenOptions, Permissions},
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::Path,
};

use anyhow::Context as _;

use crate::failure::{FailAs as _, Failure};

/// Opens `path` for writing, truncated, with mode 0600: a new file is created so, and an
/// existing regular file is narrowed to it before anything is written. Devices and FIFOs
/// (`/dev/null`, a pipe a reader waits on) are written as they are.
pub fn create_private(path: &Path) -> anyhow::Result<File> {
    let open = || -> std::io::Result<File> {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        let meta = file.metadata()?;
        if meta.is_file() && meta.permissions().mode() & 0o7777 != 0o600 {
            file.set_permissions(Permissions::from_mode(0o600))?;
        }
        Ok(file)
    };
    open()
        .with_context(|| format!("cannot write {}", path.display()))
        .fail_as(Failure::Usage)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn new_and_existing_files_end_up_0600() {
        let dir = tempfile::tempdir().unwrap();
        let new = dir.path().join("new.vgt");
        create_private(&new).unwrap();
        assert_eq!(mode(&new), 0o600);
        let old = dir.path().join("old.vgt");
        std::fs::write(&old, "secret environment").unwrap();
        std::fs::set_permissions(&old, Permissions::from_mode(0o644)).unwrap();
        create_private(&old).unwrap();
        assert_eq!(mode(&old), 0o600);
        assert_eq!(std::fs::read(&old).unwrap(), b"");
    }

    #[test]
    fn a_fifo_keeps_its_mode() {
        // A FIFO of our own stands for /dev/null, whose mode a regression must not change.
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        std::fs::set_permissions(&fifo, Permissions::from_mode(0o644)).unwrap();
        // A reader, so that opening the writing end does not wait.
        let _reader = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        create_private(&fifo).unwrap();
        assert_eq!(mode(&fifo), 0o644);
    }

    #[test]
    fn an_unwritable_path_is_bad_input() {
        let err = create_private(Path::new("/nonexistent-dir/out.vgt")).unwrap_err();
        assert_eq!(crate::failure::exit_code(&err), 2);
        assert!(
            format!("{err:#}").starts_with("cannot write /nonexistent-dir/out.vgt: "),
            "{err:#}"
        );
    }
}
