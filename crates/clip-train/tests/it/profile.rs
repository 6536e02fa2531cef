//! `--profile-steps`: libtorch's profiler over chosen steps, the trace torch.profiler writes,
//! and `clip-tool profile`'s summary of it (ops, host syncs, time per phase).
use crate::common::{assert_bitwise_equal, cli, ok, succeeds, tempdir};
use clip_train::tool::profile::PHASES;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// 8 steps of the tiny model; `--log-every-n-steps 4` logs steps 1, 5 and 8, so steps 2–4 do
/// not log.
fn args(logs: &Path, name: &str, extra: &[&str]) -> Vec<String> {
    let flags = "--model clip_tiny_test --dataset-type synthetic --train-num-samples 64 \
                 --batch-size 8 --epochs 1 --lr 1e-3 --warmup 2 --log-every-n-steps 4 --seed 5";
    cli(flags, name, logs, extra)
}

fn summary(trace: &Path) -> Value {
    let out = succeeds(
        Command::new(env!("CARGO_BIN_EXE_clip-tool"))
            .args(["profile", "--json"])
            .arg(trace),
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The profiled steps of a run with `--profile-steps 2:4` (and `extra`), summarised.
fn profiled(logs: &Path, name: &str, extra: &[&str]) -> Value {
    ok(&args(
        logs,
        name,
        &[&["--profile-steps", "2:4"], extra].concat(),
    ));
    let trace = logs.join(name).join("profile/rank0_steps2-4.pt.trace.json");
    let text = std::fs::read_to_string(&trace).unwrap();
    let json: Value = serde_json::from_str(&text).unwrap();
    assert!(json["traceEvents"]
        .as_array()
        .is_some_and(|e| !e.is_empty()));
    summary(&trace)
}

#[test]
fn profile_steps_write_a_chrome_trace_of_every_phase_and_change_nothing() {
    let logs = tempdir("profile");
    let clip = ["--grad-clip-norm", "1.0"];
    let s = profiled(&logs, "profiled", &clip);
    assert_eq!(s["steps"], 3, "{s}");
    for phase in PHASES {
        assert_eq!(s["phases"][phase]["count"], 3, "{phase}: {s}");
    }
    let fb = &s["phases"]["forward_backward"];
    assert!(fb["ops"].as_u64().unwrap() > 100, "{s}");
    assert!(fb["op_names"]["aten::matmul"].as_u64().unwrap() > 0, "{s}");
    assert!(s["total"]["ms"].as_f64().unwrap() > 0.0, "{s}");
    // Clipping's gradient norm decides on the device whether the step is skipped: no host sync.
    assert_eq!(s["total"]["syncs"], 0, "{s}");
    let log = std::fs::read_to_string(logs.join("profiled/out.log")).unwrap();
    assert!(log.contains("Profile of steps 2 to 4 written to"), "{log}");
    // The profiler only watches: the run trains to the same weights as one without it.
    ok(&args(&logs, "plain", &clip));
    assert_bitwise_equal(
        &logs.join("plain/checkpoints/epoch_1.safetensors"),
        &logs.join("profiled/checkpoints/epoch_1.safetensors"),
    );
    let _ = std::fs::remove_dir_all(&logs);
}

/// Issue 9's bar: a step that does not log never waits for the device (no
/// `aten::_local_scalar_dense`), and the optimizer's work is a few fused ops, whatever the
/// parameter count. Without `--grad-clip-norm` (the other test clips), the gradient norm is
/// computed for the non-finite check alone, on the device too (issue 24).
#[test]
fn steps_that_do_not_log_have_no_host_sync_and_a_fused_optimizer() {
    let logs = tempdir("profile-syncs");
    let s = profiled(&logs, "syncs", &[]);
    assert_eq!(s["total"]["syncs"], 0, "{s}");
    // libtorch's CPU fused AdamW reads its step counts with .item(); counted apart, and only
    // there (the CUDA kernel reads them on the device)
    assert_eq!(
        s["total"]["kernel_reads"], s["phases"]["optimizer"]["kernel_reads"],
        "{s}"
    );
    let optimizer_ops = s["phases"]["optimizer"]["ops"].as_u64().unwrap() / 3;
    assert!(optimizer_ops <= 50, "{optimizer_ops} ops per step: {s}");
    let _ = std::fs::remove_dir_all(&logs);
}
