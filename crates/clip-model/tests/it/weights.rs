//! Weights in and out against files written by real torch.save (the project venv's torch).
use std::ffi::OsStr;
use std::path::PathBuf;

use crate::golden::{golden, run_python};

use clip_model::weights::{load_weights, named_variables, read_state_dict, save_safetensors};
use tch::{nn::VarStore, Device, Kind, Tensor};

/// A store with OpenCLIP-like names: a 2-D weight, a bias, a scalar.
fn small_store() -> VarStore {
    let vs = VarStore::new(Device::Cpu);
    let root = vs.root();
    let _ = root
        .sub("visual")
        .sub("head")
        .var("weight", &[3, 4], tch::nn::Init::Const(0.0));
    let _ = root
        .sub("visual")
        .sub("head")
        .var("bias", &[3], tch::nn::Init::Const(0.0));
    let _ = root.var("logit_scale", &[], tch::nn::Init::Const(0.0));
    vs
}

const MAKE_EPOCH_PT: &str = r#"
import sys, collections, torch
torch.manual_seed(0)
m = torch.nn.Module()
m.w = torch.nn.Parameter(torch.randn(3, 4)); m.b = torch.nn.Parameter(torch.randn(3)); m.s = torch.nn.Parameter(torch.tensor(2.5))
opt = torch.optim.AdamW(m.parameters(), lr=1e-3, betas=(0.9, 0.98))
(m.w.sum() + m.b.sum() + m.s).backward(); opt.step()
sd = collections.OrderedDict([("module.visual.head.weight", m.w.data), ("module.visual.head.bias", m.b.data), ("module.logit_scale", m.s.data)])
torch.save({"epoch": 7, "name": "run", "state_dict": sd, "optimizer": opt.state_dict()}, sys.argv[1])
torch.save(collections.OrderedDict((k[len("module."):], v) for k, v in sd.items()), sys.argv[2])
"#;

/// An OpenCLIP-style `epoch_7.pt` (DDP keys, AdamW state) and the same weights as a plain state
/// dict `model.bin`, both written by real torch.save (cached, see `golden`); `None` after a loud
/// skip where there are neither the cache nor Python.
fn checkpoints() -> Option<(PathBuf, PathBuf)> {
    let dir = golden("torch-save", &[], &[MAKE_EPOCH_PT], |out| {
        let (epoch, plain) = (out.join("epoch_7.pt"), out.join("model.bin"));
        let code = OsStr::new(MAKE_EPOCH_PT);
        run_python([OsStr::new("-c"), code, epoch.as_os_str(), plain.as_os_str()]);
    })?;
    Some((dir.join("epoch_7.pt"), dir.join("model.bin")))
}

#[test]
fn reads_openclip_epoch_checkpoints_and_plain_state_dicts() {
    let _rng = crate::rng_lock();
    let Some((epoch, plain)) = checkpoints() else {
        return;
    };
    let a = read_state_dict(&epoch).unwrap();
    let b = read_state_dict(&plain).unwrap();
    let names = |v: &[(String, Tensor)]| {
        let mut n: Vec<String> = v.iter().map(|(k, _)| k.clone()).collect();
        n.sort();
        n
    };
    assert_eq!(
        names(&a),
        vec!["logit_scale", "visual.head.bias", "visual.head.weight"]
    );
    assert_eq!(names(&a), names(&b));
    let vs = small_store();
    load_weights(&vs, &epoch).unwrap();
    let vars = vs.variables();
    for (k, t) in &b {
        assert!(vars[k].equal(t), "{k}");
    }
    // Moved by the optimizer step before saving: a real value, not the init.
    assert_ne!(vars["logit_scale"].double_value(&[]), 0.0);
    let meta = torch_ext::load_pickle(&epoch).unwrap();
    assert_eq!(meta.ints, vec![("epoch".to_string(), 7)]);
}

#[test]
fn safetensors_round_trip_is_exact_and_atomic() {
    let _rng = crate::rng_lock();
    let dir = tempdir();
    let vs = small_store();
    tch::no_grad(|| {
        for (_, mut v) in vs.variables() {
            v.copy_(&Tensor::randn(v.size(), (Kind::Float, Device::Cpu)));
        }
    });
    let out = dir.join("w.safetensors");
    save_safetensors(&named_variables(&vs), &out).unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        leftovers.len(),
        1,
        "only the final file remains: {leftovers:?}"
    );
    let vs2 = small_store();
    load_weights(&vs2, &out).unwrap();
    for (k, v) in vs.variables() {
        assert!(v.equal(&vs2.variables()[&k]), "{k}");
    }
}

#[test]
fn strict_load_names_missing_unexpected_and_misshaped_keys() {
    let _rng = crate::rng_lock();
    let dir = tempdir();
    let out = dir.join("other.safetensors");
    let tensors = vec![
        (
            "visual.head.weight".to_string(),
            Tensor::zeros([4, 4], (Kind::Float, Device::Cpu)),
        ),
        (
            "text_projection".to_string(),
            Tensor::zeros([2, 2], (Kind::Float, Device::Cpu)),
        ),
    ];
    save_safetensors(&tensors, &out).unwrap();
    let err = format!("{:#}", load_weights(&small_store(), &out).unwrap_err());
    assert!(!err.contains('\n'), "one line: {err}");
    assert!(
        err.contains("2 missing (logit_scale, visual.head.bias)"),
        "{err}"
    );
    assert!(err.contains("1 unexpected (text_projection)"), "{err}");
    assert!(
        err.contains("visual.head.weight: checkpoint [4, 4] vs model [3, 4]"),
        "{err}"
    );
}

#[test]
fn truncated_and_foreign_files_are_clear_errors() {
    let _rng = crate::rng_lock();
    let dir = tempdir();
    let vs = small_store();
    let good = dir.join("w.safetensors");
    save_safetensors(&named_variables(&vs), &good).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let cut = dir.join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = format!("{:#}", read_state_dict(&cut).unwrap_err());
    assert!(
        err.contains("cut.safetensors") && err.contains("unreadable"),
        "{err}"
    );

    let text = dir.join("notes.pt");
    std::fs::write(&text, "hello").unwrap();
    let err = format!("{:#}", read_state_dict(&text).unwrap_err());
    assert!(err.contains("notes.pt: not a checkpoint"), "{err}");

    let err = format!("{:#}", read_state_dict(&dir.join("absent.pt")).unwrap_err());
    assert!(
        err.contains("cannot open") && err.contains("absent.pt"),
        "{err}"
    );
}

#[test]
fn truncated_torch_zip_is_a_clear_error() {
    let _rng = crate::rng_lock();
    let Some((full, _)) = checkpoints() else {
        return;
    };
    let dir = tempdir();
    let epoch = dir.join("epoch_1.pt");
    let bytes = std::fs::read(&full).unwrap();
    std::fs::write(&epoch, &bytes[..bytes.len() - 300]).unwrap();
    let err = format!("{:#}", read_state_dict(&epoch).unwrap_err());
    assert!(
        err.contains("epoch_1.pt: unreadable torch.save file"),
        "{err}"
    );
}

fn tempdir() -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "clip-model-weights-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
