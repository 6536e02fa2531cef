//! `scripts/gpu-check.sh` on this machine's CPU (issues 10 and 25): the folder
//! `scripts/pack-gpu-check.sh` assembles from the test binaries — stripped copies, dist-selftest
//! included, the wheels the GPU host lacks, at most 60 MiB —, then the report's parts in order,
//! each with one status (`ran` with its figures, or `skipped: <why>`), every part a CPU can run
//! ran and none failed (the exit status says so too), and every negative control saw its planted
//! fault: a bitwise or parity check that cannot fail proves nothing. So the script the GPU host
//! runs cannot rot.
use crate::common::tempdir;
use crate::golden::{python, root};
use crate::skip::skip;
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_clip-train");

/// The report's parts, in order, and whether a machine without a GPU must run them.
const PARTS: [(&str, bool); 10] = [
    ("Environment", true),
    ("Matmul peak (the MFU denominator)", true),
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
    ("--profile-steps trace", true),
    (
        "Batches ahead of time, bitwise like each step taking its own",
        true,
    ),
];

/// Bytes of the files under `dir`.
fn size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            match e.file_type().unwrap().is_dir() {
                true => size(&e.path()),
                false => e.metadata().unwrap().len(),
            }
        })
        .sum()
}

/// The value after `prefix` on the report's line that starts with it.
fn after<'a>(report: &'a str, prefix: &str) -> &'a str {
    report
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no line `{prefix}…` in\n{report}"))
}

/// "N of M tensors bitwise equal[; differ: …]" → (N, M).
fn equal_of(s: &str) -> (usize, usize) {
    let (n, rest) = s.split_once(" of ").unwrap_or_else(|| panic!("{s}"));
    let m = rest.split_whitespace().next().unwrap();
    (n.parse().unwrap(), m.parse().unwrap())
}

#[test]
fn gpu_check_runs_every_cpu_part_and_each_negative_control_fails() {
    if !python().exists() {
        skip(&format!("no Python at {}", python().display()));
        return;
    }
    let dir = tempdir("gpu-check");
    let (folder, reports) = (dir.join("folder"), dir.join("report"));
    let bins = Path::new(BIN).parent().unwrap();
    let pack = Command::new("bash")
        .arg(root().join("scripts/pack-gpu-check.sh"))
        .args([&folder, bins])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&pack.stdout);
    assert!(
        pack.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&pack.stderr)
    );
    // The folder fits (the host takes 64 MiB), binaries stripped, dist-selftest in it, the
    // wheels OpenCLIP's side installs from; the script's own figure is the folder's.
    let bytes = size(&folder);
    assert!(bytes <= 60 << 20, "{bytes} bytes: {said}");
    assert!(said.contains(&format!(": {bytes} bytes (")), "{said}");
    for b in ["clip-train", "clip-tool", "dist-selftest"] {
        let file = Command::new("file")
            .arg(folder.join("bin").join(b))
            .output();
        if let Ok(f) = file {
            let f = String::from_utf8_lossy(&f.stdout);
            assert!(f.contains("stripped") && !f.contains("not stripped"), "{f}");
        }
    }
    let wheels: Vec<String> = std::fs::read_dir(folder.join("wheels"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for w in [
        "open_clip_torch-",
        "ftfy-",
        "wcwidth-",
        "webdataset-",
        "braceexpand-",
    ] {
        assert!(wheels.iter().any(|f| f.starts_with(w)), "{wheels:?}");
    }

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
        if *on_cpu || gpu {
            assert_eq!(status[0], "status: ran", "{part}\n{body}");
        }
        if i == 2 && !gpu {
            assert_eq!(status[0], "status: skipped: no CUDA device", "{body}");
        }
        // Each part's row in the time-budget table, with what it took.
        let row = format!("| {part} | ");
        let row = report.lines().find(|l| l.starts_with(&row));
        assert!(
            row.is_some_and(|r| r.split('|').count() == 6),
            "{part}\n{report}"
        );
    }
    assert!(report.contains("\n## Time budget\n"), "{report}");

    // The bitwise parts compared real runs, equal where they must be, and their negative
    // controls saw the planted fault: the sum for an average, the step's read before its copy.
    if !gpu {
        let (n, m) = equal_of(after(&report, "- overlap on vs off: "));
        assert!(n > 0 && n == m, "{report}");
        let control = "- negative control (CLIP_TRAIN_FAULT=sum-grads) vs off: ";
        let (n, m) = equal_of(after(&report, control));
        assert!(n < m, "the control saw nothing\n{report}");
        for (mode, during) in [("1", "all"), ("0", "none")] {
            let head = format!("- CLIP_TRAIN_DDP_OVERLAP={mode}: DDP gradient buckets: ");
            let (b, d) = after(&report, &head)
                .split_once(", all-reduced during the backward: ")
                .unwrap();
            let expected = if during == "all" { b } else { "0" };
            assert_eq!(d, expected, "overlap {mode}: {during}\n{report}");
        }
        let control = "- negative control (CLIP_TRAIN_FAULT=skip-copy-wait) vs each: ";
        let (n, m) = equal_of(after(&report, control));
        assert!(n < m, "the control saw nothing\n{report}");
    }
    let (n, m) = equal_of(after(&report, "- ahead vs each: "));
    assert!(n > 0 && n == m, "{report}");
    for taken in ["one step ahead", "at each step (CLIP_TRAIN_PREFETCH=0)"] {
        assert!(
            report.contains(&format!("Input batches: taken {taken}")),
            "{report}"
        );
    }
    // Parity within its bound; TF32 on OpenCLIP's side (emulated on the CPU) past it.
    let worst = |json_then_more: &str| -> f64 {
        let json = json_then_more.split(" (").next().unwrap();
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        let towers = ["image_features", "text_features"].map(|k| v[k].as_f64().unwrap());
        towers.into_iter().fold(0.0, f64::max)
    };
    let rel = worst(after(
        &report,
        "- fp32 max |ours − OpenCLIP| / max |OpenCLIP|: ",
    ));
    assert!(rel <= 1e-4, "{report}");
    let (_, control) = after(&report, "- negative control (TF32")
        .split_once("): ")
        .unwrap();
    assert!(worst(control) > 1e-4, "the control saw nothing\n{report}");

    // Figures, not placeholders: both sides' rates and peaks, timed the same way, the same steps.
    let rows = |impl_: &str, columns: usize| -> Vec<String> {
        let head = format!("| {impl_} | ");
        let rows = report.lines();
        rows.filter(|l| l.starts_with(&head) && l.split('|').count() == columns + 2)
            .map(str::to_string)
            .collect()
    };
    for impl_ in ["ours", "ours-dist", "openclip"] {
        let row = rows(impl_, 11);
        assert_eq!(row.len(), 1, "no throughput row for {impl_}\n{report}");
        let cells: Vec<&str> = row[0].split('|').map(str::trim).collect();
        assert_eq!((cells[2], cells[3]), ("6", "3"), "{}", row[0]);
        let rate: f64 = cells[5].parse().unwrap();
        assert!(rate > 0.0, "{}", row[0]);
        assert!(
            cells[6].parse::<f64>().unwrap() >= 0.0,
            "data time: {}",
            row[0]
        );
        assert!(cells[10].ends_with('%'), "MFU: {}", row[0]);
    }
    for impl_ in ["ours", "openclip"] {
        assert_eq!(
            rows(impl_, 7).len(),
            2,
            "{impl_}: a bench row with and without checkpointing\n{report}"
        );
    }
    assert!(report.contains("## Summary"), "{report}");
    let _ = std::fs::remove_dir_all(&dir);
}
