//! A new program's argv and environment, assembled from the areas the kernel copied from its
//! stack at exec (NUL-separated strings, the environment in several records), then cut to what
//! a trace keeps: the first `ARGV_MAX` arguments and the allowlisted variables.
use vgpu_trace_common::{ARGV_MAX, env_allowlisted};

use crate::text::Text;

#[derive(Debug, Default)]
struct Area {
    bytes: Vec<u8>,
    /// The area's whole length in the new program.
    total: usize,
}

impl Area {
    fn add(&mut self, offset: u32, total: u32, bytes: &[u8]) {
        // The records of one area arrive in order; a gap (a lost record) ends what is kept.
        if offset as usize == self.bytes.len() {
            self.bytes.extend_from_slice(bytes);
        }
        self.total = total as usize;
    }

    /// The strings, the last flagged when the area was cut inside it.
    fn strings(&self) -> Vec<Text> {
        let cut = self.bytes.len() < self.total;
        let body = self.bytes.strip_suffix(&[0]).unwrap_or(&self.bytes);
        if body.is_empty() {
            return Vec::new();
        }
        let mut items: Vec<Text> = body.split(|b| *b == 0).map(Text::from_bytes).collect();
        if cut
            && !self.bytes.ends_with(&[0])
            && let Some(last) = items.last_mut()
        {
            last.truncated = true;
        }
        items
    }

    fn cut(&self) -> bool {
        self.bytes.len() < self.total
    }
}

/// argv and environment of an exec in progress.
#[derive(Debug, Default)]
pub struct Areas {
    argv: Area,
    env: Area,
}

impl Areas {
    pub fn add(&mut self, env: bool, offset: u32, total: u32, bytes: &[u8]) {
        let area = if env { &mut self.env } else { &mut self.argv };
        area.add(offset, total, bytes);
    }

    /// The first `ARGV_MAX` arguments, and whether there were more (or the area was cut).
    pub fn argv(&self) -> (Vec<Text>, bool) {
        let mut argv = self.argv.strings();
        let more = argv.len() > ARGV_MAX || self.argv.cut();
        argv.truncate(ARGV_MAX);
        (argv, more)
    }

    /// The allowlisted variables (`K=V`).
    pub fn env(&self) -> Vec<Text> {
        self.env
            .strings()
            .into_iter()
            .filter(|v| env_allowlisted(v.value.as_bytes()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_and_the_allowlisted_environment() {
        let mut a = Areas::default();
        a.add(false, 0, 9, b"ls\0-l\0/x\0");
        a.add(true, 0, 36, b"HOME=/root\0LD_LIBRARY_PATH=/a\0");
        a.add(true, 30, 36, b"GGML_\0");
        let (argv, more) = a.argv();
        assert_eq!(
            argv,
            vec![Text::new("ls"), Text::new("-l"), Text::new("/x")]
        );
        assert!(!more);
        assert_eq!(
            a.env(),
            vec![Text::new("LD_LIBRARY_PATH=/a"), Text::new("GGML_")]
        );
    }

    #[test]
    fn a_cut_area_flags_its_last_string() {
        let mut a = Areas::default();
        a.add(false, 0, 100, b"prog\0argument-that-goes-o");
        let (argv, more) = a.argv();
        assert!(more);
        assert_eq!(argv[0], Text::new("prog"));
        assert!(argv[1].truncated && argv[1].value == "argument-that-goes-o");
        // A missing middle record: what came after it is not glued on.
        let mut a = Areas::default();
        a.add(true, 0, 30, b"OLLAMA_HOST=x\0");
        a.add(true, 20, 30, b"VGPU_X=1\0");
        assert_eq!(a.env(), vec![Text::new("OLLAMA_HOST=x")]);
    }

    #[test]
    fn argv_beyond_the_limit_is_counted_as_more() {
        let mut a = Areas::default();
        let many: Vec<u8> = (0..40)
            .flat_map(|i| format!("a{i}\0").into_bytes())
            .collect();
        a.add(false, 0, many.len() as u32, &many);
        let (argv, more) = a.argv();
        assert_eq!((argv.len(), more), (ARGV_MAX, true));
    }
}
