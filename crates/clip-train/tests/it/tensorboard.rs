//! Event files written here, read back by TensorBoard's own reader. Not cached as a golden: the
//! events carry their wall time, so no two files are the same bytes.
use crate::common::tempdir;
use crate::golden::{python, run_python};
use crate::skip::skip;
use std::ffi::OsStr;

use clip_train::tensorboard::SummaryWriter;

#[test]
fn tensorboard_reads_our_scalars() {
    if !python().exists() {
        return skip(&format!(
            "no Python with TensorBoard at {}",
            python().display()
        ));
    }
    let dir = tempdir("tb");
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
    let out = run_python([OsStr::new("-c"), OsStr::new(code), dir.as_os_str()]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let loss = v["train/loss"].as_array().unwrap();
    assert_eq!(loss.len(), 5);
    assert_eq!(loss[4], serde_json::json!([4, 1.0]));
    let lr = v["train/lr"].as_array().unwrap();
    assert!((lr[3][1].as_f64().unwrap() - 3e-4).abs() < 1e-9);
    let _ = std::fs::remove_dir_all(&dir);
}
