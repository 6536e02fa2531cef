//! SigLIP's model shape end to end on a small timm ViT trunk (`vit_tiny_patch16_224` with the
//! MAP head, under SigLIP's text tower as CustomTextCLIP has it): `--siglip` trains and resumes
//! bitwise, 1 × 8 and 2 × 4 ranks train the same model, the weights load strictly into
//! OpenCLIP, and OpenCLIP weights made at 224 px start a run at 256 px with the position
//! embedding OpenCLIP's `set_input_size` resamples.
use crate::clip_tool::{openclip, openclip_golden};
use crate::common::{
    assert_bitwise_equal, cli, get, logged_losses, model_weights, ok, resume_latest, stopped_copy,
    tempdir, weights,
};
use crate::distributed::{max_relative_error, max_update_error, run_world_ok};
use std::path::{Path, PathBuf};

/// The tiny SigLIP-shaped config, written into `dir`.
fn config(dir: &Path) -> PathBuf {
    let cfg = serde_json::json!({
        "embed_dim": 192,
        "init_logit_bias": -10,
        "custom_text": true,
        "vision_cfg": {
            "image_size": 224,
            "timm_model_name": "vit_tiny_patch16_224",
            "timm_model_pretrained": false,
            "timm_pool": "map",
            "timm_proj": "none"
        },
        "text_cfg": {
            "context_length": 16,
            "vocab_size": 1000,
            "width": 64,
            "heads": 2,
            "layers": 2,
            "no_causal_mask": true,
            "proj_bias": true,
            "pool_type": "last",
            "norm_kwargs": {"eps": 1e-6},
            "act_kwargs": {"approximate": "tanh"}
        }
    });
    let path = dir.join("siglip_timm_tiny.json");
    std::fs::write(&path, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
    path
}

fn args(logs: &Path, name: &str, model: &Path, batch: usize, extra: &[&str]) -> Vec<String> {
    let flags = "--dataset-type synthetic --train-num-samples 16 --epochs 1 --warmup 1 \
                 --log-every-n-steps 1 --seed 4 --siglip";
    let (batch, model) = (batch.to_string(), model.display().to_string());
    cli(
        flags,
        name,
        logs,
        &[&["--batch-size", &batch, "--model", &model], extra].concat(),
    )
}

/// OpenCLIP builds the config `sys.argv[2]` with the weights `sys.argv[3]` (a strict load) and
/// checks it got exactly them; then it saves its own weights for the config (`sys.argv[4]`) and
/// loads them at 256 px as `--force-image-size 256` does (weights first, then the trunk's
/// `set_input_size`), writing that model's `pos_embed` (`sys.argv[5]`).
const OPENCLIP: &str = r#"
import os
from safetensors.torch import load_file, save_file
open_clip.add_model_config(sys.argv[2])
name = os.path.basename(sys.argv[2])[:-len(".json")]
model = open_clip.create_model(name, pretrained=sys.argv[3])   # strict load
assert type(model.visual.trunk).__name__ == "VisionTransformer"
ref = load_file(sys.argv[3])
assert set(ref) == set(model.state_dict())
for k, v in model.state_dict().items():
    assert torch.equal(v, ref[k]), k
torch.manual_seed(0)
save_file(open_clip.create_model(name).state_dict(), sys.argv[4])
big = open_clip.create_model(name, pretrained=sys.argv[4], force_image_size=256)
save_file({"pos_embed": big.visual.trunk.pos_embed.detach().contiguous()}, sys.argv[5])
print(len(ref))
"#;

#[test]
fn a_timm_vit_siglip_model_trains_resumes_on_two_ranks_and_loads_into_openclip() {
    let logs = tempdir("timm-vit");
    let cfg = config(&logs);
    let ckpt = |name: &str| logs.join(format!("{name}/checkpoints/epoch_1.safetensors"));
    // Trained and resumed bitwise from a mid-run checkpoint.
    let save = ["--save-every-n-steps", "2"];
    ok(&args(&logs, "full", &cfg, 4, &save));
    let w = weights(&ckpt("full"));
    for k in [
        "logit_bias",
        "visual.trunk.attn_pool.latent",
        "optimizer.exp_avg.visual.trunk.attn_pool.kv.weight",
        "text.text_projection.bias",
    ] {
        assert!(w.iter().any(|(n, _)| n == k), "no {k}");
    }
    stopped_copy(&logs.join("full"), &logs.join("stopped"), 2);
    ok(&resume_latest(&args(&logs, "stopped", &cfg, 4, &save)));
    assert_bitwise_equal(&ckpt("stopped"), &ckpt("full"));

    // 1 × 8 and 2 × 4 ranks (`--eps 1`: the update follows the gradient, so the two reductions'
    // round-off is not amplified), compared as distributed.rs compares them.
    let opt = ["--eps", "1", "--lr", "1", "--grad-clip-norm", "0.05"];
    let zero = [&opt[..], &["--lr", "0"]].concat();
    let a = args(&logs, "init", &cfg, 8, &zero);
    run_world_ok(1, &|_| a.clone());
    let a = args(&logs, "w1", &cfg, 8, &opt);
    run_world_ok(1, &|_| a.clone());
    run_world_ok(2, &|_| args(&logs, "w2", &cfg, 4, &opt));
    let (l1, l2) = (
        logged_losses(&logs.join("w1")),
        logged_losses(&logs.join("w2")),
    );
    assert_eq!(l1.len(), 2);
    for (a, b) in l1.iter().zip(&l2) {
        assert!((a - b).abs() <= 1e-5 * a, "{l1:?} vs {l2:?}");
    }
    let (err, k) = max_relative_error(&ckpt("w1"), &ckpt("w2"));
    assert!(err <= 1e-5, "{k} relative error {err}");
    let (err, k) = max_update_error(&ckpt("init"), &ckpt("w1"), &ckpt("w2"));
    assert!(err <= 1e-3, "update of {k} relative error {err}");

    // OpenCLIP's verdict on these exact weights, and its own weights resampled to 256 px.
    let file = model_weights(&ckpt("full"), &logs.join("weights.safetensors"));
    let Some(made) = openclip_golden(
        "timm-vit-siglip-openclip",
        OPENCLIP,
        &[&cfg, &file],
        &[],
        |d| {
            let out = openclip(
                OPENCLIP,
                [
                    cfg.as_path(),
                    file.as_path(),
                    &d.join("openclip.safetensors"),
                    &d.join("pos_embed_256.safetensors"),
                ],
            );
            std::fs::write(d.join("n.txt"), out).unwrap();
        },
    ) else {
        return;
    };
    let n: usize = std::fs::read_to_string(made.join("n.txt"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        n,
        w.iter()
            .filter(|(k, _)| !k.starts_with("optimizer."))
            .count()
    );
    let theirs = made.join("openclip.safetensors").display().to_string();
    let big = [
        "--force-image-size",
        "256",
        "--pretrained",
        &theirs,
        "--lr",
        "0",
        "--train-num-samples",
        "4",
    ];
    ok(&args(&logs, "at256", &cfg, 4, &big));
    let ours = get(&weights(&ckpt("at256")), "visual.trunk.pos_embed");
    let want = get(
        &tch::Tensor::read_safetensors(made.join("pos_embed_256.safetensors")).unwrap(),
        "pos_embed",
    );
    // The class token's row and a 16 × 16 grid.
    assert_eq!(ours.size(), [1, 257, 192]);
    let err = (&ours - &want).abs().max().double_value(&[]);
    assert!(
        err <= 1e-6,
        "pos_embed at 256 px differs from OpenCLIP's by {err}"
    );
    let _ = std::fs::remove_dir_all(&logs);
}
