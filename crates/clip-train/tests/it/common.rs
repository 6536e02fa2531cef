//! Helpers shared by clip-train's integration tests.
// Each test binary uses a different subset.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tch::Tensor;

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Python with OpenCLIP: `$CLIP_PYTHON`, else the project venv's.
pub fn python() -> PathBuf {
    std::env::var_os("CLIP_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".venv/bin/python"))
}

/// A fresh, empty folder for one test.
pub fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("clip-train-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The tensor named `name` (shared storage).
pub fn get(tensors: &[(String, Tensor)], name: &str) -> Tensor {
    tensors
        .iter()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("no {name}"))
        .1
        .shallow_clone()
}

/// Runs the clip-train binary.
pub fn run(args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_clip-train"))
        .args(args)
        .output()
        .expect("run clip-train")
}

pub fn ok(args: &[String]) -> Output {
    let out = run(args);
    assert!(
        out.status.success(),
        "clip-train failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn weights(path: &Path) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = Tensor::read_safetensors(path).unwrap();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

pub fn assert_bitwise_equal(a: &Path, b: &Path) {
    let (wa, wb) = (weights(a), weights(b));
    assert_eq!(wa.len(), wb.len());
    for ((ka, ta), (kb, tb)) in wa.iter().zip(&wb) {
        assert_eq!(ka, kb);
        assert!(
            ta.equal(tb),
            "{ka} differs between {} and {}",
            a.display(),
            b.display()
        );
    }
}

/// A run dir holding only the checkpoints of `full` up to `step` (and its log).
pub fn stopped_copy(full: &Path, dir: &Path, step: i64) {
    std::fs::create_dir_all(dir.join("checkpoints")).unwrap();
    std::fs::copy(full.join("out.log"), dir.join("out.log")).unwrap();
    for e in std::fs::read_dir(full.join("checkpoints")).unwrap() {
        let p = e.unwrap().path();
        if clip_train::checkpoint::peek_state(&p).unwrap().step <= step {
            std::fs::copy(&p, dir.join("checkpoints").join(p.file_name().unwrap())).unwrap();
        }
    }
}

const COLOURS: [(&str, [u8; 3]); 4] = [
    ("red", [220, 30, 30]),
    ("green", [30, 200, 40]),
    ("blue", [30, 60, 220]),
    ("yellow", [230, 220, 40]),
];
const SHAPES: [&str; 3] = ["square", "circle", "stripe"];

/// `n` coloured-shape images with captions naming colour and shape, as `clip-tool make-shards`
/// input, then shards of `per_shard` samples (and sizes.json) in `out`.
pub fn make_shards(dir: &Path, out: &Path, n: usize, per_shard: usize, salt: usize) {
    let src = dir.join(format!("src-{salt}"));
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..n {
        let (cname, c) = COLOURS[(i + salt) % 4];
        let shape = SHAPES[(i / 4 + salt) % 3];
        let img = image::RgbImage::from_fn(72, 64, |x, y| {
            let (cx, cy) = (x as i32 - 36, y as i32 - 32);
            let inside = match shape {
                "square" => cx.abs() < 16 && cy.abs() < 16,
                "circle" => cx * cx + cy * cy < 18 * 18,
                _ => (x / 8) % 2 == 0,
            };
            if inside {
                image::Rgb(c)
            } else {
                image::Rgb([
                    ((x * 3 + i as u32) % 64 + 96) as u8,
                    110,
                    ((y * 5) % 64 + 96) as u8,
                ])
            }
        });
        img.save(src.join(format!("{i:05}.png"))).unwrap();
        std::fs::write(
            src.join(format!("{i:05}.txt")),
            format!("a photo of a {cname} {shape}"),
        )
        .unwrap();
    }
    let cfg = clip_data::make_shards::MakeShardsCfg {
        input: src,
        output: out.to_path_buf(),
        samples_per_shard: per_shard,
        max_size: 64,
        quality: 90,
        prefix: String::new(),
        img_key: "filepath".into(),
        caption_key: "title".into(),
        separator: None,
        threads: 2,
    };
    clip_data::make_shards::make_shards(&cfg).unwrap();
}

/// A port nobody listens on right now (for rank 0's store).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The tiny test model without stochastic depth, written into `dir` (its path): runs whose
/// batches are shaped differently (accumulation, world sizes) then see the same forward, where
/// drop-path masks drawn per micro-batch or per rank could not agree.
pub fn no_drop_path_config(dir: &Path) -> String {
    let cfg = std::fs::read_to_string(root().join("configs/clip_tiny_test.json")).unwrap();
    let cfg = cfg.replace("\"timm_drop_path\": 0.1", "\"timm_drop_path\": 0.0");
    assert!(cfg.contains("\"timm_drop_path\": 0.0"));
    let path = dir.join("tiny_no_drop_path.json");
    std::fs::write(&path, cfg).unwrap();
    path.display().to_string()
}

/// The `Loss: X` values of a run directory's out.log lines, in order.
pub fn logged_losses(run_dir: &Path) -> Vec<f64> {
    std::fs::read_to_string(run_dir.join("out.log"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split(" Loss: ").nth(1))
        .map(|v| v.split_whitespace().next().unwrap().parse().unwrap())
        .collect()
}

pub const SIGKILL: i32 = 9;
pub const SIGUSR1: i32 = 10;
pub const SIGTERM: i32 = 15;
pub const SIGSTOP: i32 = 19;

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// Sends `sig` to a child process.
pub fn signal(child: &std::process::Child, sig: i32) {
    unsafe { libc_kill(child.id() as i32, sig) };
}

/// A clip-train command line: `flags`, then `--name NAME --logs LOGS`, then `extra` (which may
/// repeat a flag of `flags`: the last value wins, as in argparse).
pub fn run_args(flags: &[&str], name: &str, logs: &Path, extra: &[&str]) -> Vec<String> {
    let logs = logs.display().to_string();
    flags
        .iter()
        .chain(&["--name", name, "--logs", &logs])
        .chain(extra)
        .map(|s| s.to_string())
        .collect()
}
