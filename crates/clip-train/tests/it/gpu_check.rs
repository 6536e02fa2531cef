//! `scripts/gpu-check.sh` on this machine's CPU (issue 10): the folder `scripts/pack-gpu-check.sh`
//! assembles from the test binaries, the report's parts in order, each with one status — `ran`
//! with its figures, or `skipped: <why>` —, the parts a CPU can run all ran, and none failed
//! (the script's exit status says so too). So the script the GPU host runs cannot rot.
use crate::common::tempdir;
use crate::golden::{python, root};
use crate::skip::skip;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_clip-train");

/// The report's parts, in order, and whether a machine without a GPU must run them (the
/// profile part must where `clip-train` has `--profile-steps`).
const PARTS: [(&str, bool); 9] = [
    ("Environment", true),
    ("NCCL collectives at world size 1", false),
    (
        "Overlapped gradient all-reduce, bitwise like reduce-after-backward",
        true,
    ),
    ("Features vs OpenCLIP (same weights, TF32 off)", true),
    (
        "Gradient checkpointing: step time and peak memory, both sides",
        true,
    ),
    ("Throughput next to open_clip_train.main", true),
    ("Three --precision amp steps", true),
    ("--profile-steps trace", false),
    (
        "Batches ahead of time, bitwise like each step taking its own",
        true,
    ),
];

#[test]
fn gpu_check_runs_every_cpu_part_and_says_why_it_skips_the_others() {
    if !python().exists() {
        skip(&format!("no Python at {}", python().display()));
        return;
    }
    let dir = tempdir("gpu-check");
    let (folder, reports) = (dir.join("folder"), dir.join("report"));
    let bins = std::path::Path::new(BIN).parent().unwrap();
    let pack = Command::new("bash")
        .arg(root().join("scripts/pack-gpu-check.sh"))
        .args([&folder, bins])
        .env("GPU_CHECK_LINK", "1")
        .output()
        .unwrap();
    assert!(
        pack.status.success(),
        "{}",
        String::from_utf8_lossy(&pack.stderr)
    );
    let out = Command::new("bash")
        .arg(folder.join("scripts/gpu-check.sh"))
        .args([&folder, &reports])
        .env("PY", python())
        .output()
        .unwrap();
    let report = std::fs::read_to_string(reports.join("gpu-check.md")).unwrap_or_default();
    assert!(
        out.status.success(),
        "gpu-check failed:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let gpu = Command::new("nvidia-smi")
        .arg("-L")
        .output()
        .is_ok_and(|o| o.status.success());
    let help = Command::new(BIN).arg("--help").output().unwrap();
    let profiles = String::from_utf8_lossy(&help.stdout).contains("--profile-steps");
    let mut rest = report.as_str();
    for (i, (part, on_cpu)) in PARTS.iter().enumerate() {
        let head = format!("\n## {part}\n");
        let at = rest
            .find(&head)
            .unwrap_or_else(|| panic!("no part `{part}` (in order) in\n{report}"));
        rest = &rest[at + head.len()..];
        let body = &rest[..rest.find("\n## ").unwrap_or(rest.len())];
        let status: Vec<&str> = body.lines().filter(|l| l.starts_with("status: ")).collect();
        assert_eq!(status.len(), 1, "{part}: one status line\n{body}");
        let status = status[0];
        let must_run = *on_cpu || gpu || (i == 7 && profiles);
        if must_run {
            assert_eq!(status, "status: ran", "{part}\n{body}");
        } else {
            assert!(
                status == "status: ran" || status.len() > "status: skipped: ".len() + 3,
                "{part}: ran, or skipped with a reason\n{body}"
            );
        }
        if i == 1 && !gpu {
            assert_eq!(status, "status: skipped: no CUDA device", "{body}");
        }
    }
    // The overlap part compared real runs: every bucket reduced during the backward with overlap,
    // none without, and every checkpoint tensor equal (on a GPU it may be skipped: see the part).
    if !gpu {
        let same = report
            .lines()
            .find_map(|l| l.strip_prefix("- overlap on vs off: "))
            .unwrap_or_else(|| panic!("no overlap comparison in\n{report}"));
        let (n, rest) = same.split_once(" of ").unwrap();
        assert!(n.parse::<usize>().unwrap() > 0, "{same}");
        assert_eq!(rest, format!("{n} tensors bitwise equal"), "{report}");
        for (mode, during) in [("1", "all"), ("0", "none")] {
            let head = format!("- CLIP_TRAIN_DDP_OVERLAP={mode}: DDP gradient buckets: ");
            let l = report.lines().find_map(|l| l.strip_prefix(&head));
            let (b, d) = l
                .and_then(|l| l.split_once(", all-reduced during the backward: "))
                .unwrap();
            let expected = if during == "all" { b } else { "0" };
            assert_eq!(
                d, expected,
                "overlap {mode}: {during} during the backward\n{report}"
            );
        }
    }
    // The prefetch part compared real runs: batches ahead vs each step's own, every tensor equal.
    let same = report
        .lines()
        .find_map(|l| l.strip_prefix("- ahead vs each: "))
        .unwrap_or_else(|| panic!("no prefetch comparison in\n{report}"));
    let (n, rest) = same.split_once(" of ").unwrap();
    assert!(n.parse::<usize>().unwrap() > 0, "{same}");
    assert_eq!(rest, format!("{n} tensors bitwise equal"), "{report}");
    for taken in ["one step ahead", "at each step (CLIP_TRAIN_PREFETCH=0)"] {
        assert!(
            report.contains(&format!("Input batches: taken {taken}")),
            "{report}"
        );
    }
    // Figures, not placeholders: the parity's relative errors, both sides' rates and step times.
    assert!(
        report.contains("fp32 max |ours − OpenCLIP| / max |OpenCLIP|: {\"image_features\": "),
        "{report}"
    );
    for impl_ in ["ours", "openclip"] {
        let rows = |columns: usize| {
            let head = format!("| {impl_} | ");
            let rows = report.lines();
            rows.filter(move |l| l.starts_with(&head) && l.split('|').count() == columns + 2)
        };
        let row = rows(4)
            .next()
            .unwrap_or_else(|| panic!("no throughput row for {impl_}\n{report}"));
        let rate: f64 = row.split('|').nth(2).unwrap().trim().parse().unwrap();
        assert!(rate > 0.0, "{row}");
        assert_eq!(
            rows(5).count(),
            2,
            "{impl_}: a bench row with and without checkpointing\n{report}"
        );
    }
    assert!(report.contains("## Summary"), "{report}");
    let _ = std::fs::remove_dir_all(&dir);
}
