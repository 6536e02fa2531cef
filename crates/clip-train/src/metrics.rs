//! What the log line reports beyond OpenCLIP's: model FLOP utilisation (MFU) where the device's
//! peak is known, and the progress bar drawn on an interactive terminal.

use std::io::{IsTerminal, Write};

use tch::Device;

/// Dense bf16 peaks (FLOP/s; fp16's are the same on these cards) by the marketing name
/// `nvidia-smi` prints; first match wins.
const BF16_PEAKS: &[(&str, f64)] = &[
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12), // SXM / HBM3
    ("H200", 989e12),
    ("GH200", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("L40S", 362e12),
    ("A10G", 70e12),
];

/// The device's peak FLOP/s for this precision, if known: `CLIP_TRAIN_PEAK_TFLOPS` overrides
/// (any device; how a CPU run or an unlisted card gets an MFU); else the 16-bit peak of a listed
/// CUDA card under a 16-bit precision. Unknown → None, and the log line leaves MFU out.
pub fn peak_flops(device: Device, half: bool) -> Option<f64> {
    if let Some(t) = std::env::var("CLIP_TRAIN_PEAK_TFLOPS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|t| *t > 0.0)
    {
        return Some(t * 1e12);
    }
    let Device::Cuda(index) = device else {
        return None;
    };
    if !half {
        return None;
    }
    let out = std::process::Command::new("nvidia-smi")
        .args(["--query-gpu=name", "--format=csv,noheader", "-i"])
        .arg(index.to_string())
        .output()
        .ok()?;
    let name = String::from_utf8_lossy(&out.stdout);
    BF16_PEAKS
        .iter()
        .find(|(n, _)| name.contains(n))
        .map(|(_, p)| *p)
}

/// A one-line progress bar on stderr, redrawn after every step when stderr is a terminal;
/// log lines clear it first so the two never interleave.
pub struct Progress {
    enabled: bool,
    drawn: bool,
}

impl Progress {
    /// Enabled when stderr is an interactive terminal.
    pub fn new() -> Self {
        Progress {
            enabled: std::io::stderr().is_terminal(),
            drawn: false,
        }
    }

    /// Never draws (ranks other than 0).
    pub fn disabled() -> Self {
        Progress {
            enabled: false,
            drawn: false,
        }
    }

    /// Draws `epoch E [#####.....] n/N loss L X samples/s`.
    pub fn update(&mut self, epoch: i64, done: i64, total: i64, loss: f64, samples_per_s: f64) {
        if !self.enabled {
            return;
        }
        const WIDTH: i64 = 30;
        let filled = (WIDTH * done / total.max(1)).clamp(0, WIDTH) as usize;
        let bar = format!(
            "{}{}",
            "#".repeat(filled),
            ".".repeat(WIDTH as usize - filled)
        );
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[2Kepoch {epoch} [{bar}] {done}/{total} loss {loss:.4} {samples_per_s:.1} samples/s"
        );
        let _ = err.flush();
        self.drawn = true;
    }

    /// Erases the bar (before a log line is printed).
    pub fn clear(&mut self) {
        if self.drawn {
            eprint!("\r\x1b[2K");
            self.drawn = false;
        }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}
