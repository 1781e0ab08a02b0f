//! Storms: what the tracer reports against what the traced program counted itself doing. A
//! count is exact, or short by no more than the records the kernel says it lost.
use serde_json::Value;

mod common;
use common::*;

fn storm(args: &[&str]) -> Vec<String> {
    let mut cmd = vec![fixture("storm").display().to_string()];
    cmd.extend(args.iter().map(|a| a.to_string()));
    cmd
}

/// Runs `storm ARGS` under the tracer; the trace, the storm's pid and what it printed. The
/// ring is large: every exec ships its argv and environment, and a busy machine (a whole
/// test suite) may drain it late. Losses are still counted, and allowed for where it is cheap.
fn trace_storm(tag: &str, args: &[&str]) -> (Trace, u64, Vec<String>) {
    let (trace, out) = run_traced(tag, &["--ring-size", "64M"], &mut storm(args));
    assert!(out.status.success(), "{out:?}");
    let pid = trace
        .of_type("exec")
        .find(|e| e["argv"][1] == args[0])
        .expect("the storm's exec")["pid"]
        .as_u64()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    (trace, pid, printed)
}

/// `key=value` words of the printed line holding `key`.
fn printed(lines: &[String], key: &str) -> u64 {
    lines
        .iter()
        .flat_map(|l| l.split_whitespace())
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("{key} not printed: {lines:?}"))
        .parse()
        .unwrap()
}

fn argv(exec: &Value) -> Vec<&str> {
    exec["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect()
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn sixty_four_threads_calling_dlopen_and_dlsym_at_once() {
    let _serial = serial();
    let (trace, pid, out) = trace_storm("threads", &["threads", "64", "200", "libm.so.6", "cos"]);
    let calls = |func: &str, name: &str| -> Vec<&Value> {
        trace
            .of_type("call")
            .filter(|c| c["pid"] == pid && c["func"] == func && c["name"] == name)
            .collect()
    };
    let opens = calls("dlopen", "libm.so.6");
    let syms = calls("dlsym", "cos");
    exact_or_lost("dlopen", opens.len(), printed(&out, "dlopen"), &trace);
    exact_or_lost("dlsym", syms.len(), printed(&out, "dlsym"), &trace);
    assert!(opens.iter().chain(&syms).all(|c| c["ok"] == true));
    let mut threads: Vec<u64> = opens.iter().map(|c| c["tid"].as_u64().unwrap()).collect();
    threads.sort_unstable();
    threads.dedup();
    assert_eq!(threads.len() as u64, printed(&out, "threads"));
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn an_exec_storm_of_ten_seconds() {
    let _serial = serial();
    let (trace, _, out) = trace_storm("exec", &["exec", "10", "4"]);
    let execs = printed(&out, "execs");
    let seen = trace
        .of_type("exec")
        .filter(|e| argv(e).get(1) == Some(&"nothing"))
        .count();
    eprintln!("{execs} execs in 10 s");
    exact_or_lost("exec", seen, execs, &trace);
    let exits = trace
        .of_type("exit")
        .filter(|e| e["comm"] == "storm" && e["code"] == 0)
        .count();
    // Each child's exit, and the storm's own.
    exact_or_lost("exit", exits, execs + 1, &trace);
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn a_fork_tree_eight_deep() {
    let _serial = serial();
    let (trace, root, out) = trace_storm("tree", &["tree", "8"]);
    assert_eq!(out.len(), 255, "{out:?}");
    let root_depth = trace.of_type("exec").find(|e| e["pid"] == root).unwrap()["depth"]
        .as_u64()
        .unwrap();
    trace.assert_nothing_lost();
    for line in &out {
        let node = printed(std::slice::from_ref(line), "node");
        let parent = printed(std::slice::from_ref(line), "parent");
        let level = printed(std::slice::from_ref(line), "level");
        let execs: Vec<&Value> = trace.of_type("exec").filter(|e| e["pid"] == node).collect();
        assert_eq!(execs.len(), 1, "{line}: {execs:?}");
        assert_eq!(execs[0]["ppid"], parent, "{line}");
        assert_eq!(execs[0]["depth"], root_depth + level, "{line}");
        assert_eq!(
            trace
                .of_type("exit")
                .filter(|e| e["pid"] == node && e["code"] == 0)
                .count(),
            1,
            "{line}"
        );
    }
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn a_pid_reused_during_the_trace_is_a_new_process() {
    let _serial = serial();
    let (trace, _, out) = trace_storm("pid-reuse", &["pid-reuse", "libm.so.6"]);
    let pid = printed(&out, "reused");
    trace.assert_nothing_lost();
    let of_pid = |ty: &'static str| -> Vec<&Value> {
        trace.of_type(ty).filter(|e| e["pid"] == pid).collect()
    };
    let execs = of_pid("exec");
    assert_eq!(execs.len(), 2, "{execs:?}");
    assert_eq!(argv(execs[0])[3], "3");
    assert_eq!(argv(execs[1])[3], "4");
    let codes: Vec<&Value> = of_pid("exit").iter().map(|e| &e["code"]).collect();
    assert_eq!(codes, [3, 4]);
    // Each life has its own dlopen, after its own exec and before its own exit.
    let opens = trace
        .of_type("call")
        .filter(|c| c["pid"] == pid && c["func"] == "dlopen" && c["name"] == "libm.so.6")
        .count();
    assert_eq!(opens, 2);
    let order: Vec<&str> = trace
        .lines
        .iter()
        .filter(|e| {
            e["pid"] == pid && ["exec", "exit", "call"].contains(&e["type"].as_str().unwrap())
        })
        .filter(|e| e["type"] != "call" || e["func"] == "dlopen")
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["exec", "call", "exit", "exec", "call", "exit"]);
}

#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn a_process_that_execs_itself_a_thousand_times() {
    let _serial = serial();
    let (trace, pid, out) = trace_storm("self-exec", &["self-exec", "1000"]);
    assert_eq!(printed(&out, "pid"), pid);
    let execs = trace.of_type("exec").filter(|e| e["pid"] == pid).count();
    // The first exec (of `run`) and a thousand more.
    exact_or_lost("exec", execs, 1001, &trace);
    let exits: Vec<&Value> = trace.of_type("exit").filter(|e| e["pid"] == pid).collect();
    assert_eq!(exits.len(), 1, "{exits:?}");
    // Each exec ships its argv and environment: on a busy machine the ring may overflow, and
    // then the exit may be among the lost records (and say it was not seen).
    let lost = trace.summary()["lost"].as_u64().unwrap();
    let seen_exit = exits[0]["code"] == 0;
    assert!(
        seen_exit || (lost > 0 && exits[0]["unseen"] == true),
        "{} ({lost} lost)",
        exits[0]
    );
}

/// A process that floods its output is kept to its budget (64 KiB a second), and says so;
/// the library events of the same run are all there.
#[test]
#[ignore = "needs root and a BPF-capable kernel (cargo xtask test runs it)"]
fn an_output_flood_is_capped_and_costs_the_library_events_nothing() {
    let _serial = serial();
    let file = temp_file("output-flood");
    let script = format!(
        "yes | head -c 200000000 > /dev/null; {} threads 4 2000 libm.so.6 cos",
        fixture("storm").display()
    );
    let started = std::time::Instant::now();
    let out = tracer()
        .args(["run", "--format", "jsonl", "-o"])
        .arg(&*file)
        .args(["--", "sh", "-c", &script])
        .output()
        .unwrap();
    let seconds = started.elapsed().as_secs() + 1;
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("were not kept: over 64 KiB a second"),
        "{stderr}"
    );
    let trace = Trace::read(&file);
    let cos = trace
        .of_type("call")
        .filter(|c| c["name"] == "cos" && c["ok"] == true)
        .count();
    exact_or_lost("dlsym(cos)", cos, 8000, &trace);
    // `yes` writes "y\n": 2 bytes a line, 64 KiB a second at most.
    let lines = trace.of_type("log").filter(|l| l["comm"] == "yes").count() as u64;
    assert!(
        lines > 0 && lines <= (seconds + 1) * 32 * 1024,
        "{lines} lines"
    );
}
