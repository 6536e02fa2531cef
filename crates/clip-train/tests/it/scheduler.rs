//! The schedules against OpenCLIP's own `open_clip_train.scheduler`, step by step.
use crate::golden::{golden, run_python, script_inputs};

use clip_train::scheduler::LrSchedule;

#[test]
fn every_step_matches_openclip() {
    let inputs = script_inputs("schedule-goldens.py");
    let Some(dir) = golden("schedules", &inputs, &[], |out| {
        std::fs::write(out.join("lrs.json"), run_python([&inputs[0]])).unwrap();
    }) else {
        return;
    };
    let lrs = std::fs::read(dir.join("lrs.json")).unwrap();
    let cases: serde_json::Value = serde_json::from_slice(&lrs).unwrap();
    let mut checked = 0;
    for c in cases.as_array().unwrap() {
        let cooldown = c["cooldown"]
            .as_i64()
            .map(|n| (n, c["power"].as_f64().unwrap(), c["end"].as_f64().unwrap()));
        let s = LrSchedule::new(
            c["name"].as_str().unwrap(),
            c["base"].as_f64().unwrap(),
            c["warmup"].as_i64().unwrap(),
            c["total"].as_i64().unwrap(),
            cooldown,
        )
        .unwrap();
        for (step, want) in c["lrs"].as_array().unwrap().iter().enumerate() {
            let (got, want) = (s.lr(step as i64), want.as_f64().unwrap());
            assert!(
                (got - want).abs() <= 1e-15 * want.abs().max(1e-30),
                "{c:?} step {step}: {got} vs {want}"
            );
            checked += 1;
        }
    }
    assert!(checked > 18_000);
}

#[test]
fn unknown_scheduler_and_missing_cooldown_are_errors() {
    let e = LrSchedule::new("linear", 1.0, 0, 10, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("--lr-scheduler linear"), "{e}");
    let e = LrSchedule::new("const-cooldown", 1.0, 0, 10, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("--epochs-cooldown"), "{e}");
}
