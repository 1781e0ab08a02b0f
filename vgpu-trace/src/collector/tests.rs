use vgpu_trace_common::DlFunc;

use super::*;

fn raw(ts_ns: u64, tgid: u32, tid: u32, body: RawBody) -> RawEvent {
    RawEvent {
        ts_ns,
        tgid,
        tid,
        body,
    }
}

fn dlopen(name: &str) -> RawBody {
    RawBody::DlEnter {
        func: DlFunc::Dlopen,
        mode: 2,
        arg: 0,
        name: Some(name.into()),
        version: None,
    }
}

fn dlopen_returns(ret: u64) -> RawBody {
    RawBody::DlReturn {
        func: DlFunc::Dlopen,
        ret,
        late_name: None,
        loaded_path: None,
    }
}

fn run(events: Vec<RawEvent>) -> Vec<TraceEvent> {
    let mut c = Collector::new();
    let mut out = Vec::new();
    for e in events {
        c.push(e, &mut out);
    }
    c.finish(&mut out);
    out
}

fn calls(out: &[TraceEvent]) -> Vec<(u32, Call)> {
    out.iter()
        .filter_map(|e| match &e.kind {
            EventKind::Call(c) => Some((e.tid, c.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn failed_dlopen_gets_its_dlerror_text_and_threads_do_not_mix() {
    let out = run(vec![
        raw(1, 10, 10, dlopen("libnope.so")),
        raw(2, 10, 11, dlopen("libm.so.6")),
        raw(3, 10, 10, dlopen_returns(0)),
        raw(4, 10, 11, dlopen_returns(0xabc)),
        raw(
            5,
            10,
            10,
            RawBody::DlError {
                text: "libnope.so: cannot open".into(),
            },
        ),
    ]);
    let calls = calls(&out);
    assert_eq!(calls.len(), 2);
    let (tid, ok) = &calls[0];
    assert_eq!((*tid, ok.ret, ok.ok), (11, Some(0xabc), Some(true)));
    let (tid, failed) = &calls[1];
    assert_eq!(*tid, 10);
    assert_eq!(failed.ok, Some(false));
    assert_eq!(
        failed.error.as_ref().unwrap().value,
        "libnope.so: cannot open"
    );
    assert_eq!(failed.duration_ns, Some(2));
}

#[test]
fn nested_dlopen_from_a_constructor_matches_inner_first() {
    let out = run(vec![
        raw(1, 10, 10, dlopen("outer.so")),
        raw(2, 10, 10, dlopen("inner.so")),
        raw(3, 10, 10, dlopen_returns(2)),
        raw(4, 10, 10, dlopen_returns(1)),
    ]);
    let names: Vec<_> = calls(&out)
        .iter()
        .map(|(_, c)| (c.name.clone().unwrap().value, c.ret))
        .collect();
    assert_eq!(
        names,
        vec![("inner.so".into(), Some(2)), ("outer.so".into(), Some(1))]
    );
}

#[test]
fn exec_carries_argv_env_and_parent() {
    let out = run(vec![
        raw(
            1,
            10,
            10,
            RawBody::Existing {
                ppid: 1,
                comm: "sh".into(),
                exe: None,
                argv: vec![],
                env: vec![],
                announce: false,
            },
        ),
        raw(2, 10, 10, RawBody::Fork { child_tgid: 20 }),
        raw(
            3,
            20,
            20,
            RawBody::ExecArea {
                env: false,
                offset: 0,
                total: 9,
                bytes: b"child\0-x\0".to_vec(),
            },
        ),
        raw(
            4,
            20,
            20,
            RawBody::ExecArea {
                env: true,
                offset: 0,
                total: 24,
                bytes: b"HOME=/\0OLLAMA_HOST=x\0".to_vec(),
            },
        ),
        raw(
            5,
            20,
            20,
            RawBody::Exec {
                old_tid: 20,
                comm: "child".into(),
                filename: "/bin/child".into(),
            },
        ),
        raw(
            6,
            20,
            20,
            RawBody::Exit {
                status: Some(9),
                group_dead: true,
            },
        ),
    ]);
    assert!(matches!(out[0].kind, EventKind::Spawn { child: 20 }));
    let EventKind::Exec {
        ppid, argv, env, ..
    } = &out[1].kind
    else {
        panic!("{out:?}")
    };
    assert_eq!((*ppid, out[1].depth, &*out[1].comm), (10, 1, "child"));
    assert_eq!(argv.len(), 2);
    assert_eq!(env[0].value, "OLLAMA_HOST=x");
    let EventKind::Exit(status) = &out[2].kind else {
        panic!("{out:?}")
    };
    assert_eq!(status.signal, Some(9));
}

#[test]
fn unreturned_calls_are_reported_at_exit() {
    let out = run(vec![
        raw(1, 10, 10, dlopen("hangs.so")),
        raw(
            2,
            10,
            10,
            RawBody::Exit {
                status: Some(9),
                group_dead: true,
            },
        ),
    ]);
    let (_, call) = &calls(&out)[0];
    assert_eq!(call.ret, None);
    assert!(matches!(out[1].kind, EventKind::Exit(_)));
}

#[test]
fn a_name_read_at_return_replaces_the_unreadable_one() {
    let unreadable = Text {
        unreadable: true,
        ..Text::new("")
    };
    let out = run(vec![
        raw(
            1,
            10,
            10,
            RawBody::DlEnter {
                func: DlFunc::Dlopen,
                mode: 2,
                arg: 0,
                name: Some(unreadable),
                version: None,
            },
        ),
        raw(
            2,
            10,
            10,
            RawBody::DlReturn {
                func: DlFunc::Dlopen,
                ret: 0xabc,
                late_name: Some((Some("libcuda.so.1".into()), None)),
                loaded_path: None,
            },
        ),
    ]);
    let (_, call) = &calls(&out)[0];
    assert_eq!(call.name, Some("libcuda.so.1".into()));
    assert_eq!(call.ok, Some(true));
}

#[test]
fn failed_call_without_dlerror_is_reported_after_the_wait() {
    let mut c = Collector::new();
    let mut out = Vec::new();
    c.push(raw(1, 10, 10, dlopen("x.so")), &mut out);
    c.push(raw(2, 10, 10, dlopen_returns(0)), &mut out);
    c.tick(3, &mut out);
    assert!(out.is_empty());
    c.tick(2 + DLERROR_WAIT_NS + 1, &mut out);
    assert_eq!(calls(&out).len(), 1);
}
