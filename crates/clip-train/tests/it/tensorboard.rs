//! Event files written here, read back by TensorBoard's own reader.
mod common;
use common::python;
use std::process::Command;

use clip_train::tensorboard::SummaryWriter;

#[test]
fn tensorboard_reads_our_scalars() {
    let dir = std::env::temp_dir().join(format!("clip-tb-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut w = SummaryWriter::new(&dir).unwrap();
    for step in 0..5 {
        w.add_scalars(
            step,
            &[
                ("train/loss", 2.0 - step as f64 * 0.25),
                ("train/lr", 1e-4 * step as f64),
            ],
        )
        .unwrap();
    }
    let code = r#"
import sys, json
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
acc = EventAccumulator(sys.argv[1]); acc.Reload()
print(json.dumps({t: [[e.step, e.value] for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}))
"#;
    let out = Command::new(python())
        .arg("-c")
        .arg(code)
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let loss = v["train/loss"].as_array().unwrap();
    assert_eq!(loss.len(), 5);
    assert_eq!(loss[4], serde_json::json!([4, 1.0]));
    let lr = v["train/lr"].as_array().unwrap();
    assert!((lr[3][1].as_f64().unwrap() - 3e-4).abs() < 1e-9);
    let _ = std::fs::remove_dir_all(&dir);
}
