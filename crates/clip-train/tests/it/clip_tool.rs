//! clip-tool end to end: embed, tokenize and convert against OpenCLIP itself, and bad input.
use crate::common::{get, succeeds, tempdir};
use crate::golden::{golden, openclip_tiny_inputs, root, run_python};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tch::{Device, Kind, Tensor};

/// Python with open_clip, the tiny test trunk registered and its config added.
const PY_PRELUDE: &str = r#"
import sys, json, torch, open_clip
ROOT = sys.argv[1]
sys.path.insert(0, ROOT + "/scripts")
import openclip_tiny
"#;

/// `PY_PRELUDE` + `code` run by OpenCLIP's Python with `args` (after the repository root); its
/// stdout.
pub(crate) fn openclip<S: AsRef<OsStr>>(code: &str, args: impl IntoIterator<Item = S>) -> String {
    let code = format!("{PY_PRELUDE}\n{code}");
    let mut all: Vec<OsString> = vec!["-c".into(), code.into(), root().into()];
    all.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
    run_python(all)
}

/// The golden `name` that `code` makes (cached, see `golden`): keyed by `code`, `args` and the
/// contents of `files` (what it reads) and of the tiny-model files the prelude imports.
pub(crate) fn openclip_golden(
    name: &str,
    code: &str,
    files: &[&Path],
    args: &[&str],
    make: impl FnOnce(&Path),
) -> Option<PathBuf> {
    let mut inputs = openclip_tiny_inputs();
    inputs.extend(files.iter().map(|f| f.to_path_buf()));
    golden(name, &inputs, &[&[code], args].concat(), make)
}

/// Python (after `PY_PRELUDE`) that trains a small lower-cased WordPiece tokenizer, as BERT's
/// (`[CLS] $A [SEP]`, pad `[PAD]`), on the texts `sys.argv[3:]` and saves it in the folder
/// `sys.argv[2]` (`out`) as a Hugging Face repository holds it; the hub's cannot be fetched here.
pub(crate) const TRAIN_WORDPIECE: &str = r#"
from tokenizers import BertWordPieceTokenizer
from tokenizers.processors import BertProcessing
out = sys.argv[2]
tok = BertWordPieceTokenizer(lowercase=True)
tok.train_from_iterator(sys.argv[3:] * 20, vocab_size=300, show_progress=False,
                        special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
tok.post_processor = BertProcessing(("[SEP]", 3), ("[CLS]", 2))
tok.save(out + "/tokenizer.json")
json.dump({"tokenizer_class": "BertTokenizer", "pad_token": "[PAD]", "sep_token": "[SEP]"},
          open(out + "/tokenizer_config.json", "w"))
"#;

fn clip_tool(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_clip-tool"))
        .args(args)
        .output()
        .expect("run clip-tool")
}

fn ok(args: &[&str]) -> String {
    let out = succeeds(Command::new(env!("CARGO_BIN_EXE_clip-tool")).args(args));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[]) / b.abs().max().double_value(&[])
}

#[test]
fn embed_gives_openclips_features_from_tensors() {
    let dir = tempdir("embed");
    let golden = root().join("tests/golden/model/clip_tiny_test.safetensors");
    let g = Tensor::read_safetensors(&golden).unwrap();
    let inputs = dir.join("in.safetensors");
    Tensor::write_safetensors(
        &[("image", get(&g, "image")), ("text", get(&g, "text"))],
        &inputs,
    )
    .unwrap();
    // The golden file holds the weights under OpenCLIP keys plus inputs, outputs and grads:
    // convert keeps only what the model has (strict against --model).
    let weights = dir.join("w.safetensors");
    let keep: Vec<(String, Tensor)> = g
        .iter()
        .filter(|(k, _)| {
            !k.starts_with("grad.")
                && !["image", "text", "image_features", "text_features", "loss"]
                    .contains(&k.as_str())
        })
        .map(|(k, t)| (k.clone(), t.shallow_clone()))
        .collect();
    Tensor::write_safetensors(&keep, &weights).unwrap();
    let out = dir.join("out.safetensors");
    ok(&[
        "embed",
        "--model",
        "clip_tiny_test",
        "--pretrained",
        weights.to_str().unwrap(),
        "--inputs",
        inputs.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--batch-size",
        "3",
    ]);
    let o = Tensor::read_safetensors(&out).unwrap();
    for name in ["image_features", "text_features"] {
        let e = rel_err(&get(&o, name), &get(&g, name));
        assert!(e <= 1e-4, "{name}: relative error {e}");
    }
}

#[test]
fn embed_from_files_and_strings_matches_openclip_pipeline() {
    let dir = tempdir("embed-files");
    let img = dir.join("a.png");
    // A smooth, non-square picture: eval preprocessing resizes and centre-crops it.
    let (w, h) = (90u32, 70u32);
    let mut buf = image::RgbImage::new(w, h);
    for (x, y, p) in buf.enumerate_pixels_mut() {
        *p = image::Rgb([
            (x * 255 / w) as u8,
            (y * 255 / h) as u8,
            ((x + y) % 256) as u8,
        ]);
    }
    buf.save(&img).unwrap();
    let out = dir.join("out.safetensors");
    // The tiny test config with CLIP's full vocabulary, so real token ids fit.
    let config = dir.join("clip_tiny_vocab.json");
    let tiny = std::fs::read_to_string(root().join("configs/clip_tiny_test.json")).unwrap();
    std::fs::write(
        &config,
        tiny.replace("\"vocab_size\": 1000", "\"vocab_size\": 49408"),
    )
    .unwrap();
    let code = r#"
from safetensors.torch import save_file
open_clip.add_model_config(sys.argv[5])
torch.manual_seed(0)
model = open_clip.create_model("clip_tiny_vocab")
model.eval()
save_file({k: v.contiguous() for k, v in model.state_dict().items()}, sys.argv[2])
pre = open_clip.image_transform(model.visual.image_size, is_train=False)
from PIL import Image
x = pre(Image.open(sys.argv[3])).unsqueeze(0)
t = open_clip.get_tokenizer("clip_tiny_vocab")(["a photo of a cat", "Ünïcode &amp; emoji 🐱!"])
with torch.no_grad():
    save_file({"image_features": model.encode_image(x), "text_features": model.encode_text(t)}, sys.argv[4])
"#;
    let Some(gold) = openclip_golden("embed-files", code, &[&img, &config], &[], |out| {
        let (weights, reference) = (out.join("w.safetensors"), out.join("ref.safetensors"));
        openclip(code, [&weights, &img, &reference, &config]);
    }) else {
        return;
    };
    let (weights, reference) = (gold.join("w.safetensors"), gold.join("ref.safetensors"));
    ok(&[
        "embed",
        "--model",
        config.to_str().unwrap(),
        "--pretrained",
        weights.to_str().unwrap(),
        "--images",
        img.to_str().unwrap(),
        "--texts",
        "a photo of a cat",
        "Ünïcode &amp; emoji 🐱!",
        "--output",
        out.to_str().unwrap(),
    ]);
    let (o, r) = (
        Tensor::read_safetensors(&out).unwrap(),
        Tensor::read_safetensors(&reference).unwrap(),
    );
    let e = rel_err(&get(&o, "text_features"), &get(&r, "text_features"));
    assert!(e <= 1e-4, "text features: {e}");
    // Pixels may differ by rounding in the resize (≤ 2/255 on average), so image features are
    // close, not equal.
    let e = rel_err(&get(&o, "image_features"), &get(&r, "image_features"));
    assert!(e <= 0.05, "image features: {e}");
}

#[test]
fn tokenize_prints_openclips_ids() {
    let texts = [
        "a photo of a cat",
        "Hello,   WORLD!! &quot;quoted&quot; 123",
        "é à ü — ok",
    ];
    let short = "one two three four five six";
    // OpenCLIP's ids: all three texts at the default context length, then `short` at 5.
    let code = "print(json.dumps(open_clip.tokenize(sys.argv[2:5]).tolist()))
print(json.dumps(open_clip.tokenize(sys.argv[5:], context_length=5).tolist()))";
    let args = [texts[0], texts[1], texts[2], short];
    let Some(gold) = openclip_golden("tokenize", code, &[], &args, |out| {
        std::fs::write(out.join("ids.jsonl"), openclip(code, args)).unwrap();
    }) else {
        return;
    };
    let theirs = std::fs::read_to_string(gold.join("ids.jsonl")).unwrap();
    let json = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap();
    let mut theirs = theirs.lines().map(json);
    let ours = ok(&["tokenize", texts[0], texts[1], texts[2]]);
    assert_eq!(json(&ours), theirs.next().unwrap());
    let ours = ok(&["tokenize", "--context-length", "5", short]);
    assert_eq!(json(&ours), theirs.next().unwrap());
}

/// `--hf-tokenizer`: OpenCLIP's `HFTokenizer` ids for a WordPiece tokenizer (trained here; the
/// hub's cannot be fetched) from its folder and from the Hugging Face cache, canonicalized, its
/// [SEP] stripped; a hub id not in the cache is one line naming the path searched and the
/// download command. (clip-data's tests compare thousands of captions in every mode.)
#[test]
fn tokenize_with_a_hugging_face_tokenizer_prints_openclips_ids() {
    let texts = [
        "A Photo of a CAT!",
        "two_dogs &amp; a ball, running",
        "Ünïcode — ok 🐱",
    ];
    let code = format!(
        "{TRAIN_WORDPIECE}
from open_clip.tokenizer import HFTokenizer
ids = HFTokenizer(out, context_length=12, clean='canonicalize', strip_sep_token=True)(sys.argv[3:])
print(json.dumps(ids.tolist()))"
    );
    let code = code.as_str();
    let Some(gold) = openclip_golden("tokenize-hf", code, &[], &texts, |out| {
        let args = [&[out.to_str().unwrap()][..], &texts].concat();
        std::fs::write(out.join("ids.json"), openclip(code, args)).unwrap();
    }) else {
        return;
    };
    let want: serde_json::Value =
        serde_json::from_slice(&std::fs::read(gold.join("ids.json")).unwrap()).unwrap();
    let flags = [
        "tokenize",
        "--context-length",
        "12",
        "--clean",
        "canonicalize",
    ];
    let from_dir = [
        &flags[..],
        &[
            "--strip-sep-token",
            "--hf-tokenizer",
            gold.to_str().unwrap(),
        ],
    ];
    let ours = ok(&[&from_dir.concat()[..], &texts].concat());
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&ours).unwrap(),
        want
    );

    // The same files as huggingface_hub caches them, found by hub id under --cache-dir.
    let cache = tempdir("hf-cache");
    let snap = cache.join("models--org--tiny-bert/snapshots/c0ffee");
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(cache.join("models--org--tiny-bert/refs")).unwrap();
    std::fs::write(cache.join("models--org--tiny-bert/refs/main"), "c0ffee\n").unwrap();
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(gold.join(f), snap.join(f)).unwrap();
    }
    let c = cache.to_str().unwrap();
    let by_id = [
        "--strip-sep-token",
        "--hf-tokenizer",
        "org/tiny-bert",
        "--cache-dir",
        c,
    ];
    let ours = ok(&[&flags[..], &by_id, &texts].concat());
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&ours).unwrap(),
        want
    );

    let missing = [
        "tokenize",
        "--hf-tokenizer",
        "org/absent",
        "--cache-dir",
        c,
        "x",
    ];
    let out = clip_tool(&missing);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.lines().count() == 1, "{err}");
    let searched = cache.join("models--org--absent").display().to_string();
    assert!(err.contains(&searched), "{err}");
    assert!(
        err.contains("huggingface-cli download org/absent tokenizer.json"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&cache);
}

#[test]
fn convert_openclip_epoch_checkpoint_loads_back_into_openclip_strictly() {
    let dir = tempdir("convert");
    let out = dir.join("tiny.safetensors");
    // An OpenCLIP training checkpoint as its trainer writes it: DDP `module.` keys, optimizer.
    let make = r#"
torch.manual_seed(1)
model = open_clip.create_model("clip_tiny_test")
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
img = torch.randn(2, 3, 64, 64); txt = torch.randint(1, 999, (2, 77))
f_i, f_t, s = model(img, txt)
(f_i.sum() + f_t.sum() + s).backward(); opt.step()
sd = {"module." + k: v for k, v in model.state_dict().items()}
torch.save({"epoch": 3, "name": "tiny", "state_dict": sd, "optimizer": opt.state_dict()}, sys.argv[2])
"#;
    let Some(made) = openclip_golden("convert-epoch", make, &[], &[], |out| {
        openclip(make, [out.join("epoch_3.pt")]);
    }) else {
        return;
    };
    let epoch = made.join("epoch_3.pt");
    ok(&[
        "convert",
        epoch.to_str().unwrap(),
        out.to_str().unwrap(),
        "--model",
        "clip_tiny_test",
    ]);
    let check = r#"
model = open_clip.create_model("clip_tiny_test", pretrained=sys.argv[3])   # strict load
ref = torch.load(sys.argv[2], map_location="cpu", weights_only=False)["state_dict"]
for k, v in model.state_dict().items():
    assert torch.equal(v, ref["module." + k]), k
print(len(ref))
"#;
    // OpenCLIP's verdict on these exact bytes (cached by their contents).
    let Some(checked) = openclip_golden("convert-check", check, &[&epoch, &out], &[], |dir| {
        std::fs::write(dir.join("n.txt"), openclip(check, [&epoch, &out])).unwrap();
    }) else {
        return;
    };
    let n = std::fs::read_to_string(checked.join("n.txt")).unwrap();
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let cfg = clip_model::ClipConfig::load("clip_tiny_test").unwrap();
    let expected = clip_model::Clip::new(&vs.root(), &cfg)
        .unwrap()
        .named_parameters()
        .len();
    assert_eq!(n.trim().parse::<usize>().unwrap(), expected);
}

#[test]
fn large_model_weights_written_here_load_into_openclip_strictly() {
    let dir = tempdir("large");
    let path = dir.join("convnext_large_d_320.safetensors");
    let cfg = clip_model::ClipConfig::load("convnext_large_d_320").unwrap();
    let vs = tch::nn::VarStore::new(Device::Cpu);
    tch::manual_seed(0);
    let model = clip_model::Clip::new(&vs.root(), &cfg).unwrap();
    assert_eq!(model.parameter_count(), 351_772_609);
    clip_model::weights::save_safetensors(model.named_parameters(), &path).unwrap();
    let probe = get(
        model.named_parameters(),
        "visual.trunk.stages.2.blocks.26.mlp.fc2.weight",
    );
    drop(model);
    drop(vs);
    let check = r#"
model = open_clip.create_model("convnext_large_d_320", pretrained=sys.argv[2])  # strict load
print(model.state_dict()["visual.trunk.stages.2.blocks.26.mlp.fc2.weight"].double().sum().item())
"#;
    // OpenCLIP's verdict on these exact bytes (cached by their contents).
    let Some(checked) = openclip_golden("large-strict-load", check, &[&path], &[], |dir| {
        std::fs::write(dir.join("sum.txt"), openclip(check, [&path])).unwrap();
    }) else {
        return;
    };
    let theirs: f64 = std::fs::read_to_string(checked.join("sum.txt"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let ours = probe
        .to_kind(Kind::Double)
        .sum(Kind::Double)
        .double_value(&[]);
    assert!(
        (theirs - ours).abs() <= 1e-9 * ours.abs().max(1.0),
        "{theirs} vs {ours}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn fails_with(args: &[&str], needle: &str) {
    let out = clip_tool(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} should fail");
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "{args:?}: one line: {stderr}"
    );
    assert!(
        stderr.contains(needle),
        "{args:?}: expected {needle:?} in {stderr}"
    );
}

#[test]
fn bad_input_is_one_clear_line() {
    let dir = tempdir("bad");
    let out = dir.join("o.safetensors");
    let o = out.to_str().unwrap();
    fails_with(
        &[
            "embed",
            "--model",
            "convnext_nope",
            "--texts",
            "x",
            "--output",
            o,
        ],
        "convnext_large_d_320",
    );
    // OpenCLIP configs on towers not built: refused by name, naming the tower; a HuggingFace
    // tokenizer not in the cache (SigLIP's, CLIPA's): named.
    fails_with(
        &[
            "embed",
            "--model",
            "EVA02-L-14",
            "--texts",
            "x",
            "--output",
            o,
        ],
        "eva02_large_patch14_clip_224",
    );
    fails_with(
        &[
            "embed",
            "--model",
            "ViT-B-16-SigLIP",
            "--texts",
            "x",
            "--output",
            o,
        ],
        "timm/ViT-B-16-SigLIP",
    );
    fails_with(
        &[
            "embed",
            "--model",
            "ViT-L-14-CLIPA",
            "--texts",
            "x",
            "--output",
            o,
        ],
        "bert-base-uncased",
    );
    let bad_json = dir.join("bad.json");
    std::fs::write(&bad_json, r#"{"embed_dim": 32, "vision_cfg": {"timm_model_name": "convnext_tiny", "image_size": "big"}, "text_cfg": {}}"#).unwrap();
    fails_with(
        &[
            "embed",
            "--model",
            bad_json.to_str().unwrap(),
            "--texts",
            "x",
            "--output",
            o,
        ],
        "image_size",
    );
    let truncated = dir.join("t.json");
    std::fs::write(&truncated, r#"{"embed_dim": 32, "vision_cfg": {"#).unwrap();
    fails_with(
        &[
            "embed",
            "--model",
            truncated.to_str().unwrap(),
            "--texts",
            "x",
            "--output",
            o,
        ],
        "t.json",
    );

    // A checkpoint of another architecture: the tiny golden weights into convnext_base_w.
    let golden = root().join("tests/golden/model/clip_tiny_test.safetensors");
    fails_with(
        &[
            "convert",
            golden.to_str().unwrap(),
            o,
            "--model",
            "convnext_base_w",
        ],
        "mis-shaped (",
    );
    let cut = dir.join("cut.safetensors");
    let bytes = std::fs::read(&golden).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();
    fails_with(&["convert", cut.to_str().unwrap(), o], "cut.safetensors");
    fails_with(
        &[
            "embed",
            "--model",
            "clip_tiny_test",
            "--pretrained",
            cut.to_str().unwrap(),
            "--texts",
            "x",
            "--output",
            o,
        ],
        "cut.safetensors",
    );

    let wrong = dir.join("wrong.safetensors");
    Tensor::write_safetensors(
        &[(
            "image",
            Tensor::zeros([2, 64, 64], (Kind::Float, Device::Cpu)),
        )],
        &wrong,
    )
    .unwrap();
    fails_with(
        &[
            "embed",
            "--model",
            "clip_tiny_test",
            "--inputs",
            wrong.to_str().unwrap(),
            "--output",
            o,
        ],
        "[N,3,H,W]",
    );
    Tensor::write_safetensors(
        &[("text", Tensor::zeros([2, 10], (Kind::Int64, Device::Cpu)))],
        &wrong,
    )
    .unwrap();
    fails_with(
        &[
            "embed",
            "--model",
            "clip_tiny_test",
            "--inputs",
            wrong.to_str().unwrap(),
            "--output",
            o,
        ],
        "[N,77]",
    );
    assert!(!out.exists(), "nothing written on failure");
}

#[test]
fn binaries_run_with_no_environment_and_link_torch_cuda() {
    for bin in [
        env!("CARGO_BIN_EXE_clip-tool"),
        env!("CARGO_BIN_EXE_clip-train"),
    ] {
        // Without any environment: the panic shows the command (its env_clear too).
        succeeds(Command::new(bin).env_clear().arg("--version"));
        // The libtorch here is the CUDA wheel's: without torch_cuda in NEEDED, CUDA would be
        // silently unavailable on a GPU host.
        let elf = std::fs::read(bin).unwrap();
        let needle = b"libtorch_cuda.so";
        assert!(
            elf.windows(needle.len()).any(|w| w == needle),
            "{bin} does not link libtorch_cuda.so"
        );
    }
}

/// OpenCLIP's released file formats for a ViT (`open_clip_pytorch_model.bin`: a torch.save'd
/// state dict; `open_clip_model.safetensors`) of ViT-B-32 load strictly into `clip-tool embed` and
/// give OpenCLIP's features; `clip-tool convert` writes weights that OpenCLIP loads strictly.
#[test]
fn vit_b_32_release_files_load_and_converted_weights_load_into_openclip() {
    let dir = tempdir("vit-release");
    let make = r#"
from safetensors.torch import save_file
torch.manual_seed(0)
model = open_clip.create_model("ViT-B-32").eval()
out = sys.argv[2]
torch.save(model.state_dict(), out + "/open_clip_pytorch_model.bin")
save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out + "/open_clip_model.safetensors")
g = torch.Generator().manual_seed(1)
image = torch.randn(2, 3, 224, 224, generator=g)
text = open_clip.tokenize(["a photo of a cat", "a diagram"])
with torch.no_grad():
    save_file({"image": image, "text": text, "image_features": model.encode_image(image),
               "text_features": model.encode_text(text)}, out + "/io.safetensors")
"#;
    let Some(made) = openclip_golden("vit-b-32-release", make, &[], &[], |out| {
        openclip(make, [out]);
    }) else {
        return;
    };
    let io = Tensor::read_safetensors(made.join("io.safetensors")).unwrap();
    let inputs = dir.join("in.safetensors");
    Tensor::write_safetensors(
        &[("image", get(&io, "image")), ("text", get(&io, "text"))],
        &inputs,
    )
    .unwrap();
    for file in ["open_clip_pytorch_model.bin", "open_clip_model.safetensors"] {
        let out = dir.join("out.safetensors");
        let w = made.join(file);
        ok(&[
            "embed",
            "--model",
            "ViT-B-32",
            "--pretrained",
            w.to_str().unwrap(),
            "--inputs",
            inputs.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ]);
        let o = Tensor::read_safetensors(&out).unwrap();
        for name in ["image_features", "text_features"] {
            let e = rel_err(&get(&o, name), &get(&io, name));
            assert!(e <= 1e-4, "{file} {name}: relative error {e}");
        }
    }
    let converted = dir.join("converted.safetensors");
    let bin = made.join("open_clip_pytorch_model.bin");
    ok(&[
        "convert",
        bin.to_str().unwrap(),
        converted.to_str().unwrap(),
        "--model",
        "ViT-B-32",
    ]);
    let check = r#"
model = open_clip.create_model("ViT-B-32", pretrained=sys.argv[3])   # strict load
ref = torch.load(sys.argv[2], map_location="cpu")
assert all(torch.equal(v, ref[k]) for k, v in model.state_dict().items())
print(len(ref))
"#;
    let Some(checked) =
        openclip_golden("vit-convert-check", check, &[&bin, &converted], &[], |d| {
            std::fs::write(d.join("n.txt"), openclip(check, [&bin, &converted])).unwrap();
        })
    else {
        return;
    };
    let n = std::fs::read_to_string(checked.join("n.txt")).unwrap();
    assert_eq!(n.trim(), "302");
    let _ = std::fs::remove_dir_all(&dir);
}
