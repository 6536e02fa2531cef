//! Batches ahead of time: step i+1's batches are taken and sent to the device before step i's
//! compute (seen in a `--profile-steps` trace), trained values unchanged; images crossing as
//! bf16 where that is bit-identical (host rounding against torch's, one-step runs).
use crate::common::{assert_bitwise_equal, cli, make_shards, ok, ok_with_env, tempdir};
use clip_data::buffers::to_bf16;
use serde_json::Value;
use std::path::Path;
use tch::{Kind, Tensor};

/// (name, start, end) of the profiler's named ranges, in µs.
fn ranges(trace: &Path) -> Vec<(String, f64, f64)> {
    let json: Value = serde_json::from_str(&std::fs::read_to_string(trace).unwrap()).unwrap();
    let events = json["traceEvents"].as_array().unwrap();
    events
        .iter()
        .filter(|e| e["ph"] == "X" && e["cat"] == "user_annotation")
        .map(|e| {
            let ts = e["ts"].as_f64().unwrap();
            let name = e["name"].as_str().unwrap().to_string();
            (name, ts, ts + e["dur"].as_f64().unwrap())
        })
        .collect()
}

/// (start, end) in µs.
type Span = (f64, f64);

/// Per recorded step: the `to_device` ranges inside it, and its `forward_backward` range.
fn steps(trace: &Path, n: usize) -> Vec<(Vec<Span>, Span)> {
    let all = ranges(trace);
    (1..=n)
        .map(|k| {
            let step = all
                .iter()
                .find(|r| r.0 == format!("ProfilerStep#{k}"))
                .unwrap_or_else(|| panic!("no step {k} in the trace"));
            let inside = |name: &str| {
                all.iter()
                    .filter(|r| r.0 == name && r.1 >= step.1 && r.2 <= step.2)
                    .map(|r| (r.1, r.2))
                    .collect::<Vec<_>>()
            };
            let fb = inside("forward_backward");
            assert_eq!(fb.len(), 1, "step {k}");
            (inside("to_device"), fb[0])
        })
        .collect()
}

#[test]
fn the_next_steps_batches_go_to_the_device_before_this_steps_compute_same_values() {
    let logs = tempdir("prefetch-order");
    // 8 steps of one epoch, all profiled
    let args = |name: &str| {
        let flags = "--model clip_tiny_test --dataset-type synthetic --train-num-samples 32 \
                     --batch-size 4 --epochs 1 --lr 1e-3 --warmup 2 --log-every-n-steps 4 \
                     --seed 5 --profile-steps 1:8";
        cli(flags, name, &logs, &[])
    };
    ok(&args("ahead"));
    let trace = |name: &str| logs.join(name).join("profile/rank0_steps1-8.pt.trace.json");
    let ahead = steps(&trace("ahead"), 8);
    // step 1 takes its own batch and step 2's; steps 2–7 the next one's; step 8, the epoch's
    // last, none (never across the epoch's end)
    let counts: Vec<usize> = ahead.iter().map(|s| s.0.len()).collect();
    assert_eq!(counts, [2, 1, 1, 1, 1, 1, 1, 0]);
    for (k, (to_device, fb)) in ahead.iter().enumerate().take(7) {
        let next = to_device.last().unwrap();
        assert!(
            next.0 < fb.1 && next.1 <= fb.0,
            "step {}: the next step's to_device {next:?} is not before forward_backward {fb:?}",
            k + 1
        );
    }
    // the old order: each step takes its own batch, and trains the same values
    ok_with_env(&args("each"), &[("CLIP_TRAIN_PREFETCH", "0")]);
    let counts: Vec<usize> = steps(&trace("each"), 8).iter().map(|s| s.0.len()).collect();
    assert_eq!(counts, [1; 8]);
    assert_bitwise_equal(
        &logs.join("ahead/checkpoints/epoch_1.safetensors"),
        &logs.join("each/checkpoints/epoch_1.safetensors"),
    );
    let _ = std::fs::remove_dir_all(&logs);
}

/// The bits of `v` as torch's `to(torch.bfloat16)` makes them.
fn torch_bf16(v: &[f32]) -> Vec<u16> {
    let t = Tensor::from_slice(v)
        .to_kind(Kind::BFloat16)
        .view_dtype(Kind::Int16);
    let mut out = vec![0i16; v.len()];
    t.copy_data(&mut out, v.len());
    out.into_iter().map(|x| x as u16).collect()
}

#[test]
fn host_bf16_rounding_is_torchs_bit_for_bit() {
    // edge cases, then random bit patterns (every exponent, subnormals, ties), an odd length so
    // that torch's vectorised loop and its scalar tail both convert some
    let mut v: Vec<f32> = vec![
        0.0,
        -0.0,
        1.0,
        f32::MAX,
        f32::MIN,
        f32::MIN_POSITIVE,
        f32::from_bits(1),
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::from_bits(0x3F80_8000),
        f32::from_bits(0x3F81_8000),
        f32::from_bits(0x7F7F_8000),
        f32::NAN,
        -f32::NAN,
    ];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..100_003 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let bits = x as u32;
        // a quarter exact ties (low 16 bits 0x8000)
        let bits = if x >> 40 & 3 == 0 {
            bits & 0xFFFF_0000 | 0x8000
        } else {
            bits
        };
        v.push(f32::from_bits(bits));
    }
    let mut mine = vec![0u16; v.len()];
    to_bf16(&v, &mut mine);
    let torch = torch_bf16(&v);
    let as_f32 = |b: u16| f32::from_bits((b as u32) << 16);
    for (i, x) in v.iter().enumerate() {
        if x.is_nan() {
            // a NaN stays a NaN (torch's payload depends on which of its loops converted it)
            assert!(as_f32(mine[i]).is_nan() && as_f32(torch[i]).is_nan(), "{x}");
        } else {
            assert_eq!(mine[i], torch[i], "{x:e} ({:#010x})", x.to_bits());
        }
    }
}

/// One step of the tiny model on webdataset shards and on a CSV table at `precision`: images
/// crossing as bf16 (the default under bf16 and amp_bf16) train bitwise what f32 images
/// converted on the device train.
#[test]
fn bf16_images_train_bitwise_what_device_converted_images_train() {
    let logs = tempdir("prefetch-bf16");
    make_shards(&logs, &logs.join("shards"), 8, 4, 0);
    let shards = format!("{}/{{00000..00001}}.tar", logs.join("shards").display());
    let csv = crate::train_csv::table(&logs, '\t', "filepath", "title");
    for (precision, data) in [("amp_bf16", &shards), ("bf16", &shards), ("bf16", &csv)] {
        let kind = if data.ends_with(".tsv") { "csv" } else { "wds" };
        let run = |name: &str, bf16_images: &str| {
            let flags = "--model clip_tiny --batch-size 2 --train-num-samples 2 --epochs 1 \
                         --workers 1 --lr 1e-3 --seed 5";
            let extra = ["--train-data", data, "--precision", precision];
            let args = cli(flags, name, &logs, &extra);
            ok_with_env(&args, &[("CLIP_TRAIN_BF16_IMAGES", bf16_images)]);
            let log = std::fs::read_to_string(logs.join(name).join("out.log")).unwrap();
            let kind = if bf16_images == "1" { "bf16" } else { "fp32" };
            assert!(
                log.contains(&format!("images to the device as {kind}")),
                "{log}"
            );
            logs.join(name).join("checkpoints/epoch_1.safetensors")
        };
        let host = run(&format!("{precision}-{kind}-host"), "1");
        let device = run(&format!("{precision}-{kind}-device"), "0");
        assert_bitwise_equal(&host, &device);
    }
    let _ = std::fs::remove_dir_all(&logs);
}
