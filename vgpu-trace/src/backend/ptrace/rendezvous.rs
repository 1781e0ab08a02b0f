//! ld.so's rendezvous with debuggers (`struct r_debug`, <link.h>): the list of objects a
//! process has mapped, kept by ld.so itself (glibc's and musl's alike), and the address ld.so
//! calls around every change of it (`r_brk`, `_dl_debug_state`). A breakpoint there tells of
//! each library ld.so maps, DT_NEEDED loads included, with no system call stopped: the
//! light way for `attach` under ptrace to see loads.
//!
//! Everything here is read from the tracee's memory, which the tracee owns: a list that loops
//! or runs on is cut at [`MAX_OBJECTS`], and a name at [`MAX_NAME`] bytes.
use std::collections::HashMap;

use nix::unistd::Pid;

use crate::text::Text;

/// `r_state` when the list is whole again: the moment to read it (RT_ADD, 1, and RT_DELETE,
/// 2, say it is being changed).
pub const RT_CONSISTENT: i32 = 0;

/// Objects read from one list at most.
pub const MAX_OBJECTS: usize = 4096;
/// Bytes of an object's name read at most.
pub const MAX_NAME: usize = 4096;

/// A process's memory, as the rendezvous is read from it.
pub trait Memory {
    /// Up to `len` bytes at `addr`: fewer where the mapping ends, none where there is none.
    fn read(&self, addr: u64, len: usize) -> Vec<u8>;

    fn u64_at(&self, addr: u64) -> Option<u64> {
        let b = self.read(addr, 8);
        Some(u64::from_ne_bytes(b.get(..8)?.try_into().ok()?))
    }

    /// The NUL-terminated string at `addr`, cut at `max` bytes (marked so), or what was read
    /// before memory ran out (marked unreadable).
    fn text_at(&self, addr: u64, max: usize) -> Text {
        let mut out = Vec::new();
        // A page at most per read: a string ending near a mapping's end is still read whole.
        while out.len() < max {
            let at = addr + out.len() as u64;
            let room = (0x1000 - (at & 0xfff)) as usize;
            let chunk = self.read(at, room.min(max - out.len()));
            if chunk.is_empty() {
                return Text {
                    unreadable: true,
                    ..Text::from_bytes(&out)
                };
            }
            match chunk.iter().position(|&b| b == 0) {
                Some(end) => {
                    out.extend_from_slice(&chunk[..end]);
                    return Text::from_bytes(&out);
                }
                None => out.extend_from_slice(&chunk),
            }
        }
        Text {
            truncated: true,
            ..Text::from_bytes(&out)
        }
    }
}

/// Another process's memory (process_vm_readv: a tracer, or the process itself).
pub struct ProcessMemory(pub Pid);

impl Memory for ProcessMemory {
    fn read(&self, addr: u64, len: usize) -> Vec<u8> {
        super::tracee::read_bytes(self.0, addr, len)
    }
}

/// `struct r_debug` (x86-64 layout).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rendezvous {
    pub version: i32,
    /// The first `struct link_map`.
    pub map: u64,
    /// Called by ld.so before and after each change of the list.
    pub brk: u64,
    pub state: i32,
    /// ld.so's load address.
    pub ldbase: u64,
}

/// One `struct link_map`: an object ld.so has mapped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Object {
    /// Where the node is: one object's identity while it stays mapped.
    pub node: u64,
    /// `l_addr`: the difference between its addresses in memory and in the file.
    pub base: u64,
    /// `l_name`: its path as ld.so opened it (empty for the executable, often for the vDSO).
    pub name: Text,
    /// Where `l_name` points.
    pub name_at: u64,
    /// `l_ld`: its dynamic section in memory.
    pub dynamic: u64,
}

impl Rendezvous {
    /// One read of the 40 bytes: r_version, r_map, r_brk, r_state, r_ldbase.
    pub fn read(mem: &impl Memory, addr: u64) -> Option<Self> {
        let bytes = mem.read(addr, 40);
        let (words, _) = bytes.as_chunks::<8>();
        let [version, map, brk, state, ldbase] = *words.first_chunk::<5>()?;
        let low = |w: [u8; 8]| i32::from_ne_bytes([w[0], w[1], w[2], w[3]]);
        Some(Self {
            version: low(version),
            map: u64::from_ne_bytes(map),
            brk: u64::from_ne_bytes(brk),
            state: low(state),
            ldbase: u64::from_ne_bytes(ldbase),
        })
    }

    /// The objects on the list, in its order (the executable, its DT_NEEDED in load order,
    /// then dlopen'ed ones), cut at [`MAX_OBJECTS`] or at the first node met twice.
    pub fn objects(&self, mem: &impl Memory) -> Vec<Object> {
        self.objects_after(mem, &[])
    }

    /// [`Rendezvous::objects`], with the names of nodes unchanged since `known` was read
    /// taken from it: one read per node, where a list of hundreds is read at every dlopen.
    pub fn objects_after(&self, mem: &impl Memory, known: &[Object]) -> Vec<Object> {
        let known: HashMap<u64, &Object> = known.iter().map(|o| (o.node, o)).collect();
        let mut seen = std::collections::HashSet::new();
        let mut out: Vec<Object> = Vec::new();
        let mut node = self.map;
        while node != 0 && out.len() < MAX_OBJECTS && seen.insert(node) {
            // l_addr, l_name, l_ld, l_next.
            let words = mem.read(node, 32);
            let Some((words, _)) = words.as_chunks::<8>().0.split_first_chunk::<4>() else {
                break;
            };
            let [base, name_at, dynamic, next] = words.map(u64::from_ne_bytes);
            let name = match known.get(&node) {
                Some(o) if (o.base, o.name_at, o.dynamic) == (base, name_at, dynamic) => {
                    o.name.clone()
                }
                _ if name_at == 0 => Text::default(),
                _ => mem.text_at(name_at, MAX_NAME),
            };
            out.push(Object {
                node,
                base,
                name,
                name_at,
                dynamic,
            });
            node = next;
        }
        out
    }
}

/// Where the rendezvous of process `pid` is: the `DT_DEBUG` entry of its executable's
/// dynamic section, which ld.so fills in at start (glibc and musl alike). None for a static
/// executable, or before ld.so has run.
pub fn find(pid: u32, mem: &impl Memory) -> Option<u64> {
    const AT_PHDR: u64 = 3;
    const AT_PHNUM: u64 = 5;
    const PT_DYNAMIC: u32 = 2;
    const PT_PHDR: u32 = 6;
    const DT_NULL: u64 = 0;
    const DT_DEBUG: u64 = 21;
    let auxv = std::fs::read(format!("/proc/{pid}/auxv")).ok()?;
    let entry = |key: u64| {
        auxv.as_chunks::<16>().0.iter().find_map(|e| {
            let k = u64::from_ne_bytes(e[..8].try_into().ok()?);
            (k == key).then(|| u64::from_ne_bytes(e[8..].try_into().unwrap_or_default()))
        })
    };
    let (phdr, phnum) = (entry(AT_PHDR)?, entry(AT_PHNUM)?.min(256));
    // Elf64_Phdr: p_type u32, p_flags u32, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_align.
    let headers = mem.read(phdr, phnum as usize * 56);
    let field =
        |h: &[u8], at: usize| u64::from_ne_bytes(h[at..at + 8].try_into().unwrap_or_default());
    let mut bias = None;
    let mut dynamic = None;
    for h in headers.as_chunks::<56>().0 {
        let kind = u32::from_ne_bytes(h[..4].try_into().ok()?);
        match kind {
            PT_PHDR => bias = Some(phdr.wrapping_sub(field(h, 16))),
            PT_DYNAMIC => dynamic = Some(field(h, 16)),
            _ => {}
        }
    }
    // Without PT_PHDR the headers sit at the file's start, in its first loaded page.
    let bias = bias.unwrap_or(phdr & !0xfff);
    let dynamic = bias.wrapping_add(dynamic?);
    // Elf64_Dyn: d_tag, d_val; a section that never ends is cut like a list.
    for i in 0..MAX_OBJECTS as u64 {
        let tag = mem.u64_at(dynamic + i * 16)?;
        match tag {
            DT_NULL => return None,
            DT_DEBUG => return mem.u64_at(dynamic + i * 16 + 8).filter(|&a| a != 0),
            _ => {}
        }
    }
    None
}

/// What changed between two readings of a list: the objects added and those removed (a node
/// reused for another object counts as both).
pub fn diff<'a>(before: &'a [Object], after: &'a [Object]) -> (Vec<&'a Object>, Vec<&'a Object>) {
    // By node: a list read at every dlopen may hold thousands.
    let not_in = |list: &'a [Object], other: &'a [Object]| {
        let by_node: HashMap<u64, &Object> = other.iter().map(|o| (o.node, o)).collect();
        list.iter()
            .filter(|o| by_node.get(&o.node) != Some(o))
            .collect()
    };
    (not_in(after, before), not_in(before, after))
}

/// The list as last read in each traced process, to tell what each change of it added.
#[derive(Default)]
pub struct Lists {
    by_process: HashMap<u32, List>,
}

#[derive(Clone, Default)]
struct List {
    /// Where `r_debug` is, once found.
    at: Option<u64>,
    objects: Vec<Object>,
}

impl Lists {
    /// A process attached to: what it has loaded already (not news), and its `r_brk`, where
    /// the breakpoint goes when ld.so's symbol was not found. None before ld.so has run.
    pub fn attached(&mut self, tgid: u32, mem: &impl Memory) -> Option<u64> {
        let at = find(tgid, mem)?;
        let r = Rendezvous::read(mem, at)?;
        // Read even mid-change: what is on it then is not news either.
        let objects = r.objects(mem);
        self.by_process.insert(
            tgid,
            List {
                at: Some(at),
                objects,
            },
        );
        Some(r.brk).filter(|&b| b != 0)
    }

    /// ld.so called `r_brk` in `tgid`: once the list is whole and differs from when it was
    /// last read, the objects it gained, in its order (none where it only lost some). ld.so
    /// itself and the vDSO (no file: no slash in the name) are left out, as no open of theirs
    /// is ever seen either.
    pub fn changed(&mut self, tgid: u32, mem: &impl Memory) -> Option<Vec<Object>> {
        let list = self.by_process.entry(tgid).or_default();
        let at = list.at.or_else(|| find(tgid, mem))?;
        list.at = Some(at);
        let r = Rendezvous::read(mem, at).filter(|r| r.state == RT_CONSISTENT)?;
        let objects = r.objects_after(mem, &list.objects);
        if objects == list.objects {
            return None;
        }
        let added = diff(&list.objects, &objects)
            .0
            .into_iter()
            .filter(|o| o.name.value.contains('/') && o.base != r.ldbase)
            .cloned()
            .collect();
        list.objects = objects;
        Some(added)
    }

    /// A fork: the child's memory is a copy of the parent's, list included.
    pub fn forked(&mut self, parent: u32, child: u32) {
        if let Some(list) = self.by_process.get(&parent).cloned() {
            self.by_process.insert(child, list);
        }
    }

    /// An exec or the end: the list is gone with the memory (a new one starts empty).
    pub fn forget(&mut self, tgid: u32) {
        self.by_process.remove(&tgid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> ProcessMemory {
        ProcessMemory(Pid::this())
    }

    fn own_list() -> (Rendezvous, Vec<Object>) {
        let at = find(std::process::id(), &me()).expect("a dynamic executable has DT_DEBUG");
        let r = Rendezvous::read(&me(), at).unwrap();
        let objects = r.objects(&me());
        (r, objects)
    }

    #[test]
    fn the_own_list_is_what_proc_maps_shows() {
        let (r, objects) = own_list();
        assert!(r.version >= 1, "{r:?}");
        assert_eq!(r.state, RT_CONSISTENT);
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let libc = objects
            .iter()
            .find(|o| o.name.value.contains("libc.so"))
            .expect("libc on the list");
        assert!(maps.contains(&libc.name.value), "{:?}", libc.name);
        // r_brk is code of ld.so, which is mapped at r_ldbase.
        let ld = objects
            .iter()
            .find(|o| o.base == r.ldbase)
            .expect("ld.so on the list");
        assert!(
            ld.name.value.contains("ld-linux") || ld.name.value.contains("ld-musl"),
            "{:?}",
            ld.name
        );
        assert!(r.brk > r.ldbase, "{r:?}");
        // The executable comes first, nameless.
        assert_eq!(objects[0].name.value, "");
    }

    #[test]
    fn a_dlopen_adds_an_object_and_its_dlclose_removes_it() {
        let before = own_list().1;
        let name = c"libresolv.so.2";
        // SAFETY: dlopen/dlclose of a library without constructors that matter.
        let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        assert!(!handle.is_null());
        let during = own_list().1;
        let (added, removed) = diff(&before, &during);
        assert!(removed.is_empty(), "{removed:?}");
        assert!(
            added
                .iter()
                .any(|o| o.name.value.ends_with("/libresolv.so.2")),
            "{added:?}"
        );
        unsafe { libc::dlclose(handle) };
        let after = own_list().1;
        let (_, removed) = diff(&during, &after);
        assert!(
            removed
                .iter()
                .any(|o| o.name.value.ends_with("/libresolv.so.2")),
            "{removed:?}"
        );
    }

    #[test]
    fn another_process_list_is_read_from_its_memory() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let pid = child.id();
        let mem = ProcessMemory(Pid::from_raw(pid as i32));
        // Until ld.so has run and filled DT_DEBUG in.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let objects = loop {
            let found = find(pid, &mem).and_then(|at| Rendezvous::read(&mem, at));
            if let Some(r) = found.filter(|r| r.state == RT_CONSISTENT && r.map != 0) {
                break r.objects(&mem);
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no rendezvous in sleep"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            objects.iter().any(|o| o.name.value.contains("libc.so")),
            "{objects:?}"
        );
    }

    #[test]
    fn lists_tell_only_what_was_added_since_attaching() {
        let mut lists = Lists::default();
        let me_ = std::process::id();
        assert!(lists.attached(me_, &me()).is_some());
        // What was there at attach is not news (other tests may dlopen meanwhile).
        let libc_again = |added: &[Object]| added.iter().any(|o| o.name.value.contains("libc.so"));
        assert!(!libc_again(&lists.changed(me_, &me()).unwrap_or_default()));
        let name = c"libanl.so.1";
        // SAFETY: dlopen/dlclose of a library without constructors that matter.
        let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        assert!(!handle.is_null());
        let added = lists.changed(me_, &me()).expect("the list changed");
        assert!(
            added.iter().any(|o| o.name.value.ends_with("/libanl.so.1")),
            "{added:?}"
        );
        // Neither ld.so nor the vDSO is ever news.
        assert!(
            added.iter().all(|o| o.name.value.starts_with('/')),
            "{added:?}"
        );
        let again = lists.changed(me_, &me()).unwrap_or_default();
        assert!(!again.iter().any(|o| o.name.value.ends_with("/libanl.so.1")));
        unsafe { libc::dlclose(handle) };
    }

    /// Memory made of words at chosen addresses.
    struct Words(HashMap<u64, u64>);

    impl Memory for Words {
        fn read(&self, addr: u64, len: usize) -> Vec<u8> {
            let mut out = Vec::new();
            let mut at = addr;
            while out.len() < len {
                let Some(word) = self.0.get(&(at & !7)) else {
                    break;
                };
                out.push(word.to_ne_bytes()[(at & 7) as usize]);
                at += 1;
            }
            out
        }
    }

    #[test]
    fn a_list_that_loops_or_runs_off_is_cut() {
        // Two nodes pointing at each other, names unreadable.
        let mut w = HashMap::new();
        for (node, next) in [(0x1000u64, 0x2000u64), (0x2000, 0x1000)] {
            w.insert(node, 0);
            w.insert(node + 8, 0xdead_0000);
            w.insert(node + 16, 0);
            w.insert(node + 24, next);
        }
        let r = Rendezvous {
            version: 1,
            map: 0x1000,
            brk: 0,
            state: RT_CONSISTENT,
            ldbase: 0,
        };
        let objects = r.objects(&Words(w.clone()));
        assert_eq!(objects.len(), 2);
        assert!(objects.iter().all(|o| o.name.unreadable));
        // A next pointer into nothing ends the list there.
        w.insert(0x2000 + 24, 0x9000);
        assert_eq!(r.objects(&Words(w)).len(), 2);
    }

    #[test]
    fn a_reused_node_is_a_removal_and_an_addition() {
        let obj = |node, name: &str| Object {
            node,
            base: 0x7f00,
            name: Text::new(name),
            name_at: 0x5000,
            dynamic: 0,
        };
        let before = [obj(1, ""), obj(2, "/lib/a.so")];
        let after = [obj(1, ""), obj(2, "/lib/b.so")];
        let (added, removed) = diff(&before, &after);
        assert_eq!(added, [&after[1]]);
        assert_eq!(removed, [&before[1]]);
    }
}
