//! `--siglip` end to end on the tiny model and synthetic data (CPU; fp32, and amp_bf16 / bf16 /
//! amp for training and resume): SigLIP's model
//! (`logit_bias` in every checkpoint, logit scale from ln 10), OpenCLIP's log line, exact resume,
//! `--accum-freq`, `--pretrained` CLIP weights without a `logit_bias`, and the loads that do not
//! fit; the SigLIP configs' text tower (CustomTextCLIP's `text.` keys) against OpenCLIP itself.
use crate::clip_tool::{openclip, openclip_golden};
use crate::common::{
    assert_bitwise_equal, cli, get, logged_losses, model_weights, no_drop_path_config, ok,
    resume_latest, run, stopped_copy, tempdir, weights,
};
use crate::golden::root;
use std::path::{Path, PathBuf};

fn args(logs: &Path, name: &str, model: &str, extra: &[&str]) -> Vec<String> {
    let flags = "--dataset-type synthetic --train-num-samples 64 --batch-size 8 --epochs 1 \
                 --lr 1e-3 --warmup 2 --log-every-n-steps 1 --seed 5 --siglip";
    cli(flags, name, logs, &[&["--model", model], extra].concat())
}

/// The run's checkpoint tensor `key`.
fn tensor(logs: &Path, run: &str, ckpt: &str, key: &str) -> tch::Tensor {
    let w = weights(&logs.join(run).join("checkpoints").join(ckpt));
    get(&w, key)
}

#[test]
fn siglip_trains_logs_and_resumes_exactly() {
    let logs = tempdir("siglip");
    let model = no_drop_path_config(&logs);
    let save = ["--save-every-n-steps", "3"];
    ok(&args(&logs, "full", &model, &save));
    let log = std::fs::read_to_string(logs.join("full/out.log")).unwrap();
    // OpenCLIP's line: SigLipLoss's dict key is `contrastive_loss`, the scale starts at 10.
    let first = log
        .lines()
        .find(|l| l.contains("Train Epoch: 0 [ 8/64"))
        .unwrap();
    let scale: f64 = first.split("Logit Scale: ").nth(1).unwrap()[..6]
        .trim()
        .parse()
        .unwrap();
    assert!((scale - 10.0).abs() < 0.01, "{first}");
    assert!(first.contains(" Contrastive_loss: "), "{first}");
    let losses = logged_losses(&logs.join("full"));
    assert_eq!(losses.len(), 8);
    assert!(losses[7] < losses[0], "{losses:?}");
    // logit_bias is a parameter: in every checkpoint, trained (AdamW moves it from −10), with
    // its optimizer moments.
    let bias = tensor(&logs, "full", "epoch_1.safetensors", "logit_bias");
    assert_eq!(bias.size(), Vec::<i64>::new());
    let b = bias.double_value(&[]);
    assert!(b != -10.0 && (b + 10.0).abs() < 0.1, "logit_bias {b}");
    let ckpt = weights(&logs.join("full/checkpoints/step_3.safetensors"));
    assert!(ckpt
        .iter()
        .any(|(k, _)| k == "optimizer.exp_avg.logit_bias"));
    // Stopped after step 3 and resumed: bitwise the uninterrupted run.
    let full = logs.join("full");
    stopped_copy(&full, &logs.join("stopped"), 3);
    ok(&resume_latest(&args(&logs, "stopped", &model, &save)));
    assert_bitwise_equal(
        &logs.join("stopped/checkpoints/epoch_1.safetensors"),
        &full.join("checkpoints/epoch_1.safetensors"),
    );
    // --accum-freq 2 × 4: the first step sees the same 8 samples and weights, so the same loss.
    ok(&args(
        &logs,
        "accum",
        &model,
        &["--batch-size", "4", "--accum-freq", "2"],
    ));
    let la = logged_losses(&logs.join("accum"));
    assert!(
        (la[0] - losses[0]).abs() <= 1e-5 * losses[0],
        "{la:?} vs {losses:?}"
    );
    let _ = std::fs::remove_dir_all(&logs);
}

/// CLIP weights without a `logit_bias` start a `--siglip` run with it at 0 (OpenCLIP's
/// `load_checkpoint`, open_clip#712); resuming across the two losses fails on the key that does
/// not fit; a non-SigLIP run resumes checkpoints that never had one.
#[test]
fn pretrained_clip_weights_and_checkpoints_across_losses() {
    let logs = tempdir("siglip-load");
    let model = no_drop_path_config(&logs);
    let clip = |name: &str, extra: &[&str]| {
        let mut a = args(&logs, name, &model, extra);
        a.retain(|f| f != "--siglip");
        a
    };
    let short = ["--train-num-samples", "16", "--save-every-n-steps", "1"];
    ok(&clip("clip", &short));
    let clip_ckpt = logs.join("clip/checkpoints/epoch_1.safetensors");
    assert!(!weights(&clip_ckpt)
        .iter()
        .any(|(k, _)| k.contains("logit_bias")));
    // A non-SigLIP run resumes its own checkpoints as before.
    stopped_copy(&logs.join("clip"), &logs.join("clip-stopped"), 1);
    ok(&resume_latest(&clip("clip-stopped", &short)));
    assert_bitwise_equal(
        &logs.join("clip-stopped/checkpoints/epoch_1.safetensors"),
        &clip_ckpt,
    );
    // --pretrained CLIP weights under --siglip (lr 0: the loaded values stay).
    let pre = clip_ckpt.display().to_string();
    ok(&args(
        &logs,
        "from-clip",
        &model,
        &[
            "--train-num-samples",
            "16",
            "--lr",
            "0",
            "--pretrained",
            &pre,
        ],
    ));
    let bias = tensor(&logs, "from-clip", "epoch_1.safetensors", "logit_bias");
    assert_eq!(bias.double_value(&[]), 0.0);
    let scale = |run: &str| tensor(&logs, run, "epoch_1.safetensors", "logit_scale");
    assert!(scale("from-clip").equal(&scale("clip")));
    // Resuming across the losses: the missing or unexpected key, named.
    let siglip_ckpt = logs.join("from-clip/checkpoints/epoch_1.safetensors");
    let siglip_ckpt = siglip_ckpt.display().to_string();
    for (cmd, want) in [
        (
            args(&logs, "siglip-from-clip", &model, &["--resume", &pre]),
            "1 missing (logit_bias)",
        ),
        (
            clip("clip-from-siglip", &["--resume", &siglip_ckpt]),
            "1 unexpected (logit_bias)",
        ),
    ] {
        let out = run(&cmd);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(want), "{err}");
    }
    let _ = std::fs::remove_dir_all(&logs);
}

/// A model config with OpenCLIP's SigLIP key `init_logit_bias` trains with `--siglip` only (its
/// ClipLoss would fail on the extra `logit_bias`): refused without, one line, exit 2.
#[test]
fn a_siglip_config_needs_siglip_to_train() {
    let logs = tempdir("siglip-config");
    let cfg = std::fs::read_to_string(no_drop_path_config(&logs)).unwrap();
    let path = logs.join("siglip_tiny.json");
    std::fs::write(&path, cfg.replacen('{', r#"{"init_logit_bias": -10,"#, 1)).unwrap();
    let model = path.display().to_string();
    let short = ["--train-num-samples", "16"];
    let mut without = args(&logs, "refused", &model, &short);
    without.retain(|f| f != "--siglip");
    let out = run(&without);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("init_logit_bias") && err.contains("--siglip"),
        "{err}"
    );
    assert!(!logs.join("refused").exists());
    ok(&args(&logs, "trained", &model, &short));
    let _ = std::fs::remove_dir_all(&logs);
}

/// `--siglip` on the low-precision paths: `amp_bf16` (bf16 autocast), `bf16` (bf16 weights, text
/// LayerNorms fp32) and `amp` (fp16 autocast, the loss scaler). Each trains from the fp32 run's
/// first loss (within bf16/fp16 rounding), keeps `logit_bias` in its checkpoints, and resumes
/// from a mid-run checkpoint bitwise.
#[test]
fn siglip_trains_and_resumes_exactly_in_every_precision() {
    let logs = tempdir("siglip-precisions");
    let model = no_drop_path_config(&logs);
    let save = ["--save-every-n-steps", "3"];
    ok(&args(&logs, "fp32", &model, &save));
    let first = logged_losses(&logs.join("fp32"))[0];
    for precision in ["amp_bf16", "bf16", "amp"] {
        let run = |name: &str| {
            args(
                &logs,
                name,
                &model,
                &[&save[..], &["--precision", precision]].concat(),
            )
        };
        ok(&run(precision));
        let losses = logged_losses(&logs.join(precision));
        assert_eq!(losses.len(), 8, "{precision}");
        assert!(
            losses.iter().all(|l| l.is_finite()),
            "{precision}: {losses:?}"
        );
        assert!(
            (losses[0] - first).abs() <= 0.02 * first,
            "{precision}: first loss {} vs fp32 {first}",
            losses[0]
        );
        let bias = tensor(&logs, precision, "epoch_1.safetensors", "logit_bias");
        assert!(bias.double_value(&[]).is_finite(), "{precision}");
        let stopped = format!("{precision}-stopped");
        stopped_copy(&logs.join(precision), &logs.join(&stopped), 3);
        ok(&resume_latest(&run(&stopped)));
        assert_bitwise_equal(
            &logs.join(&stopped).join("checkpoints/epoch_1.safetensors"),
            &logs.join(precision).join("checkpoints/epoch_1.safetensors"),
        );
    }
    let _ = std::fs::remove_dir_all(&logs);
}

/// The tiny ViT with the SigLIP configs' text tower, as make-vit-goldens.py's
/// `vit_tiny_siglip_text`: CustomTextCLIP, `init_logit_bias`, no causal mask, last-token pooling,
/// an nn.Linear projection, LayerNorm eps 1e-6, tanh GELU.
fn siglip_text_config(dir: &Path) -> PathBuf {
    let base = std::fs::read_to_string(root().join("configs/vit_tiny_test.json")).unwrap();
    let mut cfg: serde_json::Value = serde_json::from_str(&base).unwrap();
    cfg["custom_text"] = true.into();
    cfg["init_logit_bias"] = (-10).into();
    let text = cfg["text_cfg"].as_object_mut().unwrap();
    for (k, v) in [
        ("no_causal_mask", serde_json::json!(true)),
        ("pool_type", serde_json::json!("last")),
        ("proj_bias", serde_json::json!(true)),
        ("norm_kwargs", serde_json::json!({"eps": 1e-6})),
        ("act_kwargs", serde_json::json!({"approximate": "tanh"})),
    ] {
        text.insert(k.to_string(), v);
    }
    let path = dir.join("vit_tiny_siglip_text.json");
    std::fs::write(&path, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
    path
}

/// OpenCLIP builds the config `sys.argv[2]` with the weights `sys.argv[3]` (a strict load),
/// checks it got exactly them, and prints its state-dict keys and the text keys its
/// `lock_text_tower(1)` leaves trainable.
const OPENCLIP_SIGLIP_TEXT: &str = r#"
import os
from safetensors.torch import load_file
open_clip.add_model_config(sys.argv[2])
name = os.path.basename(sys.argv[2])[:-len(".json")]
model = open_clip.create_model(name, pretrained=sys.argv[3])   # strict load
assert type(model).__name__ == "CustomTextCLIP"
ref = load_file(sys.argv[3])
for k, v in model.state_dict().items():
    assert torch.equal(v, ref[k]), k
model.lock_text_tower(1)
trainable = [k for k, p in model.named_parameters() if p.requires_grad and k.startswith("text.")]
print(json.dumps({"keys": list(model.state_dict()), "trainable": trainable}))
"#;

/// The SigLIP configs' text tower (CustomTextCLIP on the tiny ViT) under `--siglip`: its `text.`
/// keys and `logit_bias` trained and checkpointed with their optimizer state, an exact resume,
/// weights that OpenCLIP's `create_model` loads strictly for the same config, `--lock-text`
/// leaving trainable what OpenCLIP's `lock_text_tower` leaves, `--pretrained` CLIP weights moved
/// under `text.` (`--force-custom-text`) as OpenCLIP's `load_checkpoint` moves them, and the two
/// settings OpenCLIP fails on refused.
#[test]
fn custom_text_siglip_config_trains_resumes_and_loads_into_openclip() {
    let logs = tempdir("siglip-text");
    let cfg = siglip_text_config(&logs);
    let model = cfg.display().to_string();
    let short = ["--train-num-samples", "32", "--save-every-n-steps", "2"];
    ok(&args(&logs, "full", &model, &short));
    let full = logs.join("full");
    let ckpt = full.join("checkpoints/epoch_1.safetensors");
    let w = weights(&ckpt);
    let has = |k: &str| w.iter().any(|(n, _)| n == k);
    for k in [
        "logit_bias",
        "text.token_embedding.weight",
        "text.text_projection.weight",
        "text.text_projection.bias",
        "optimizer.exp_avg.logit_bias",
        "optimizer.exp_avg.text.text_projection.bias",
    ] {
        assert!(has(k), "no {k}");
    }
    assert!(!has("token_embedding.weight") && !has("positional_embedding"));
    let bias = get(&w, "logit_bias").double_value(&[]);
    assert!(
        bias != -10.0 && (bias + 10.0).abs() < 0.1,
        "logit_bias {bias}"
    );
    stopped_copy(&full, &logs.join("stopped"), 2);
    ok(&resume_latest(&args(&logs, "stopped", &model, &short)));
    assert_bitwise_equal(&logs.join("stopped/checkpoints/epoch_1.safetensors"), &ckpt);

    // OpenCLIP's verdict on these exact weights (cached by their contents and the config's).
    let file = model_weights(&ckpt, &logs.join("weights.safetensors"));
    let made = openclip_golden(
        "siglip-text-strict",
        OPENCLIP_SIGLIP_TEXT,
        &[&cfg, &file],
        &[],
        |d| {
            let out = openclip(OPENCLIP_SIGLIP_TEXT, [&cfg, &file]);
            std::fs::write(d.join("out.json"), out).unwrap();
        },
    );
    let lock = [
        "--train-num-samples",
        "16",
        "--lock-text",
        "--lock-text-unlocked-layers",
        "1",
    ];
    ok(&args(&logs, "locked", &model, &lock));
    if let Some(made) = made {
        let out: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(made.join("out.json")).unwrap()).unwrap();
        let mut keys: Vec<&str> = out["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap())
            .collect();
        keys.sort();
        let ours: Vec<&str> = w
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| !k.starts_with("optimizer."))
            .collect();
        assert_eq!(ours, keys);
        // The optimizer keeps state for the trainable parameters alone.
        let locked = weights(&logs.join("locked/checkpoints/epoch_1.safetensors"));
        let trainable: Vec<&str> = locked
            .iter()
            .filter_map(|(k, _)| k.strip_prefix("optimizer.exp_avg.text."))
            .collect();
        let want: Vec<&str> = out["trainable"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap().strip_prefix("text.").unwrap())
            .collect();
        assert_eq!(trainable.len(), want.len());
        assert!(
            want.iter().all(|k| trainable.contains(k)),
            "{trainable:?} vs {want:?}"
        );
    }

    // CLIP weights into the same tower as a CustomTextCLIP: moved under `text.`, unchanged (lr 0).
    let one = ["--train-num-samples", "8"];
    ok(&args(&logs, "plain", "vit_tiny_test", &one));
    let plain = logs.join("plain/checkpoints/epoch_1.safetensors");
    let pre = plain.display().to_string();
    let from = [
        "--train-num-samples",
        "8",
        "--lr",
        "0",
        "--force-custom-text",
        "--pretrained",
        &pre,
    ];
    ok(&args(&logs, "custom", "vit_tiny_test", &from));
    let custom = weights(&logs.join("custom/checkpoints/epoch_1.safetensors"));
    let plain = weights(&plain);
    let mut moved = 0;
    for (k, t) in plain.iter().filter(|(k, _)| !k.starts_with("optimizer.")) {
        let text = [
            "positional_embedding",
            "text_projection",
            "token_embedding.",
            "transformer.",
            "ln_final.",
        ];
        let k2 = match text.iter().any(|p| k.starts_with(p)) {
            true => {
                moved += 1;
                format!("text.{k}")
            }
            false => k.clone(),
        };
        assert!(get(&custom, &k2).equal(t), "{k2}");
    }
    assert!(moved > 10, "{moved}");

    // What OpenCLIP fails on: bf16 weights with an nn.Linear projection on a ViT model
    // (convert_weights_to_lp), and act_kwargs given to QuickGELU.
    for (flags, want) in [
        (&["--precision", "bf16"][..], "convert_weights_to_lp"),
        (&["--force-quick-gelu"][..], "act_kwargs"),
    ] {
        let out = run(&args(&logs, "refused", &model, flags));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(want), "{err}");
    }
    assert!(!logs.join("refused").exists());
    let _ = std::fs::remove_dir_all(&logs);
}
