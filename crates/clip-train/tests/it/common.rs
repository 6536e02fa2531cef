//! Helpers shared by clip-train's integration tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tch::Tensor;

use crate::golden::root;

/// A fresh, empty folder for one test (numbered: the tests share one process, and two may use
/// the same tag).
pub fn tempdir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("clip-train-test-{tag}-{}-{n}", std::process::id()));
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
    run_with_env(args, &[])
}

/// Runs the clip-train binary with `env` added to its environment.
pub fn run_with_env(args: &[String], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_clip-train"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run clip-train")
}

pub fn ok(args: &[String]) -> Output {
    ok_with_env(args, &[])
}

/// [`run_with_env`], which must succeed.
pub fn ok_with_env(args: &[String], env: &[(&str, &str)]) -> Output {
    succeeds(
        Command::new(env!("CARGO_BIN_EXE_clip-train"))
            .args(args)
            .envs(env.iter().copied()),
    )
}

/// Runs `cmd`, which must succeed (else the panic shows it and its stderr); its output.
pub fn succeeds(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn weights(path: &Path) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = Tensor::read_safetensors(path).unwrap();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// The model weights of checkpoint `ckpt` alone (no optimizer state, no training state) written
/// to `out` in name order: the same weights always make the same bytes, where a checkpoint's
/// header does not (its metadata's key order varies), so goldens keyed by them are found again.
pub fn model_weights(ckpt: &Path, out: &Path) -> PathBuf {
    let model: Vec<(String, Tensor)> = weights(ckpt)
        .into_iter()
        .filter(|(k, _)| !k.starts_with("optimizer."))
        .collect();
    Tensor::write_safetensors(&model, out).unwrap();
    out.to_path_buf()
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

/// Coloured-shape picture `i` (of a set drawn with `salt`), `w`×`h`, and its caption naming
/// colour and shape.
fn shape_image(i: usize, salt: usize, w: u32, h: u32) -> (image::RgbImage, String) {
    let (cname, c) = COLOURS[(i + salt) % 4];
    let shape = SHAPES[(i / 4 + salt) % 3];
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let (cx, cy) = (x as i32 - w as i32 / 2, y as i32 - h as i32 / 2);
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
    (img, format!("a photo of a {cname} {shape}"))
}

/// `n` coloured-shape images (72×64 PNGs) with their captions as `clip-tool make-shards` input,
/// then shards of `per_shard` samples (JPEGs, at most 64 px, and sizes.json) in `out`.
pub fn make_shards(dir: &Path, out: &Path, n: usize, per_shard: usize, salt: usize) {
    let src = dir.join(format!("src-{salt}"));
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..n {
        let (img, caption) = shape_image(i, salt, 72, 64);
        img.save(src.join(format!("{i:05}.png"))).unwrap();
        std::fs::write(src.join(format!("{i:05}.txt")), caption).unwrap();
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

/// Sample `i`'s caption in [`image_shards`]: its picture's, numbered.
pub fn shape_caption(i: usize, salt: usize) -> String {
    format!("{} {i}", shape_image(i, salt, 1, 1).1)
}

/// The same `n` pictures as `make_shards`, but `size`×`size`, encoded as `format` (PNG or JPEG,
/// at the `image` crate's defaults), in shards `{00000..}.tar` of `per_shard` samples in `out`
/// (the same bytes every time: no timestamps); their paths. Each caption ends with its sample's
/// number: no two texts are equal, so no two candidates of a retrieval tie exactly (torch's
/// unstable argsort orders exact ties differently on different CPUs).
pub fn image_shards(
    out: &Path,
    n: usize,
    per_shard: usize,
    salt: usize,
    size: u32,
    format: image::ImageFormat,
) -> Vec<PathBuf> {
    let ext = format.extensions_str()[0];
    std::fs::create_dir_all(out).unwrap();
    (0..n.div_ceil(per_shard))
        .map(|s| {
            let members: Vec<(String, Vec<u8>)> = (s * per_shard..n.min((s + 1) * per_shard))
                .flat_map(|i| {
                    let (img, _) = shape_image(i, salt, size, size);
                    let mut bytes = Vec::new();
                    img.write_to(&mut std::io::Cursor::new(&mut bytes), format)
                        .unwrap();
                    [
                        (format!("{i:05}.{ext}"), bytes),
                        (format!("{i:05}.txt"), shape_caption(i, salt).into_bytes()),
                    ]
                })
                .collect();
            let path = out.join(format!("{s:05}.tar"));
            write_tar(&path, &members);
            path
        })
        .collect()
}

/// A tar of (name, bytes) members (ustar headers), for shards `make-shards` would not write.
pub fn write_tar(path: &Path, members: &[(String, Vec<u8>)]) {
    let mut out = Vec::new();
    for (name, data) in members {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..107].copy_from_slice(b"0000644");
        h[108..115].copy_from_slice(b"0000000");
        h[116..123].copy_from_slice(b"0000000");
        h[124..135].copy_from_slice(format!("{:011o}", data.len()).as_bytes());
        h[136..147].copy_from_slice(b"00000000000");
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| b as u32).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    std::fs::write(path, out).unwrap();
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
pub const SIGCONT: i32 = 18;
pub const SIGSTOP: i32 = 19;

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// `args` with `--resume latest` added.
pub fn resume_latest(args: &[String]) -> Vec<String> {
    [args, &["--resume".into(), "latest".into()]].concat()
}

/// Polls `ready` until it holds, or panics naming `what`. The limit only catches a stuck run: it
/// is far beyond any wait here (seconds).
pub fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !ready() {
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "waited 10 min for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `run_dir`'s out.log holds `needle`.
pub fn wait_for_log(run_dir: &Path, needle: &str) {
    wait_until(needle, || {
        std::fs::read_to_string(run_dir.join("out.log"))
            .unwrap_or_default()
            .contains(needle)
    });
}

/// Sends `sig` to a started process.
pub fn signal(child: &crate::procs::Guarded, sig: i32) {
    unsafe { libc_kill(child.id() as i32, sig) };
}

/// A clip-train command line: `--device cpu --precision fp32`, then `flags` (split at
/// whitespace), then `--name NAME --logs LOGS`, then `extra` (values with spaces, paths; a flag
/// repeated from `flags` wins: the last value does in argparse).
pub fn cli(flags: &str, name: &str, logs: &Path, extra: &[&str]) -> Vec<String> {
    let logs = logs.display().to_string();
    ["--device", "cpu", "--precision", "fp32"]
        .into_iter()
        .chain(flags.split_whitespace())
        .chain(["--name", name, "--logs", &logs])
        .chain(extra.iter().copied())
        .map(str::to_string)
        .collect()
}
