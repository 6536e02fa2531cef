//! `--pretrained-image`: a timm checkpoint (timm's keys, its ImageNet classifier) loads into the
//! model's `visual.trunk.`, every other parameter unchanged; a file that does not fit is named.
//! (Finding the file in the Hugging Face cache is `pretrained_image`'s unit tests; the refusal
//! when it is absent, `plan.rs`'s.)
use crate::common::{get, tempdir};
use clip_model::{Clip, ClipConfig};
use tch::{nn::VarStore, Device, Kind, Tensor};

#[test]
fn timm_trunk_weights_load_under_visual_trunk() {
    tch::manual_seed(1);
    let vs = VarStore::new(Device::Cpu);
    let model = Clip::new(&vs.root(), &ClipConfig::load("clip_tiny_test").unwrap()).unwrap();
    let before: Vec<(String, Tensor)> = model
        .named_parameters()
        .iter()
        .map(|(k, t)| (k.clone(), t.detach().copy()))
        .collect();
    // timm's file: the trunk's keys without OpenCLIP's prefix, other values, and a classifier.
    let mut file: Vec<(String, Tensor)> = before
        .iter()
        .filter_map(|(k, t)| Some((k.strip_prefix("visual.trunk.")?.to_string(), t + 1.0)))
        .collect();
    let width = get(&before, "visual.trunk.head.norm.weight").size()[0];
    file.push((
        "head.fc.weight".into(),
        Tensor::randn([1000, width], (Kind::Float, Device::Cpu)),
    ));
    file.push((
        "head.fc.bias".into(),
        Tensor::zeros([1000], (Kind::Float, Device::Cpu)),
    ));
    let dir = tempdir("pretrained-image");
    let path = dir.join("model.safetensors");
    Tensor::write_safetensors(&file, &path).unwrap();
    clip_train::pretrained_image::load(&vs, &model, &path).unwrap();
    let mut trunk = 0;
    for (k, t) in model.named_parameters() {
        let b = get(&before, k);
        let want = if k.starts_with("visual.trunk.") {
            trunk += 1;
            b + 1.0
        } else {
            b
        };
        assert!(t.equal(&want), "{k}");
    }
    assert!(trunk > 10);
    // A trunk key missing from the file.
    file.retain(|(k, _)| k != "stem.0.weight");
    Tensor::write_safetensors(&file, &path).unwrap();
    let err = clip_train::pretrained_image::load(&vs, &model, &path).unwrap_err();
    let err = format!("{err:#}");
    assert!(
        err.contains("1 missing (visual.trunk.stem.0.weight)"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
