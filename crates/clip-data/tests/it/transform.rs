//! Image preprocessing vs OpenCLIP/torchvision/PIL (goldens from scripts/make-data-goldens.py),
//! plus statistical checks of the random train transforms and --aug-cfg parsing.

use clip_data::transform::*;
use rand::SeedableRng;
use rand_pcg::Pcg64;
use serde_json::Value;

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/golden/data");

fn golden() -> Value {
    serde_json::from_str(&std::fs::read_to_string(format!("{GOLDEN}/preprocess.json")).unwrap())
        .unwrap()
}

fn load_f32(name: &str) -> Vec<f32> {
    let b = std::fs::read(format!("{GOLDEN}/preprocess/{name}")).unwrap();
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn load_img(name: &str) -> image::RgbImage {
    decode_image(&std::fs::read(format!("{GOLDEN}/images/{name}")).unwrap()).unwrap()
}

/// (mean, max) absolute difference in [0, 1] pixel units (normalised difference × std).
fn pixel_err(got: &[f32], want: &[f32]) -> (f64, f64) {
    assert_eq!(got.len(), want.len());
    let n = got.len() / 3;
    let (mut sum, mut max) = (0f64, 0f64);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let d = ((g - w).abs() * OPENAI_STD[i / n]) as f64;
        sum += d;
        max = max.max(d);
    }
    (sum / got.len() as f64, max)
}

fn normalise(img: &image::RgbImage) -> Vec<f32> {
    let n = (img.width() * img.height()) as usize;
    let mut out = vec![0f32; 3 * n];
    for (i, p) in img.pixels().enumerate() {
        for c in 0..3 {
            out[c * n + i] = (p.0[c] as f32 / 255.0 - OPENAI_MEAN[c]) / OPENAI_STD[c];
        }
    }
    out
}

#[test]
fn eval_and_resized_crop_match_open_clip() {
    let g = golden();
    let mut rng = Pcg64::seed_from_u64(0);
    let mut worst = 0f64;
    let kinds: std::collections::BTreeSet<&str> = g["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["kind"].as_str().unwrap())
        .collect();
    for kind in [
        "eval",
        "eval_bilinear",
        "eval_longest",
        "eval_squash",
        "resized_crop",
    ] {
        assert!(kinds.contains(kind), "no {kind} case in the golden");
    }
    for c in g["cases"].as_array().unwrap() {
        let img = load_img(c["image"].as_str().unwrap());
        let size = c["image_size"].as_u64().unwrap() as u32;
        let want = load_f32(c["file"].as_str().unwrap());
        let got = match c["kind"].as_str().unwrap() {
            "eval" => ImageTransform::eval(size, OPENAI_MEAN, OPENAI_STD).apply(&img, &mut rng),
            "eval_bilinear" => ImageTransform::eval(size, OPENAI_MEAN, OPENAI_STD)
                .with_interpolation(Interpolation::Bilinear)
                .apply(&img, &mut rng),
            // --image-resize-mode with --image-interpolation.
            kind @ ("eval_longest" | "eval_squash") => {
                let mode = ResizeMode::parse(&kind["eval_".len()..]).unwrap();
                let interpolation = Interpolation::parse(c["interpolation"].as_str().unwrap());
                ImageTransform::eval(size, OPENAI_MEAN, OPENAI_STD)
                    .with_resize_mode(mode)
                    .with_interpolation(interpolation.unwrap())
                    .apply(&img, &mut rng)
            }
            "resized_crop" => {
                let b: Vec<u32> = c["box"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap() as u32)
                    .collect();
                let crop = CropBox {
                    top: b[0],
                    left: b[1],
                    height: b[2],
                    width: b[3],
                };
                normalise(&resized_crop(&img, crop, size, size))
            }
            k => panic!("unknown kind {k}"),
        };
        let (mean, max) = pixel_err(&got, &want);
        eprintln!(
            "{:<13} {:<30} {:>3}px: mean |diff| {:.5} ({:.3}/255), max {:.4} ({:.1}/255)",
            c["kind"].as_str().unwrap(),
            c["image"].as_str().unwrap(),
            size,
            mean,
            mean * 255.0,
            max,
            max * 255.0
        );
        assert!(mean < 2.0 / 255.0, "{}: mean error {mean}", c["file"]);
        // Lossless inputs isolate the resampler: it is Pillow's algorithm in 14-bit (not 22-bit)
        // fixed point, so a byte may differ by a rounding step per pass (two at most), rarely.
        // JPEG inputs also differ by the decoder (zune-jpeg vs libjpeg-turbo IDCT/upsampling).
        if !c["image"].as_str().unwrap().ends_with(".jpg") {
            assert!(
                max <= 2.01 / 255.0,
                "{}: lossless input: max error {max} over 2/255",
                c["file"]
            );
            assert!(
                mean < 0.05 / 255.0,
                "{}: lossless input: mean error {mean} over 0.05/255",
                c["file"]
            );
        }
        worst = worst.max(mean);
    }
    eprintln!("worst mean error {:.3}/255", worst * 255.0);
}

#[test]
fn decode_modes() {
    let gray = load_img("camera_gray_256.jpg");
    assert_eq!(gray.dimensions(), (256, 256));
    assert!(gray.pixels().all(|p| p.0[0] == p.0[1] && p.0[1] == p.0[2]));
    let rgba = load_img("ihc_alpha_150x100.png");
    assert_eq!(rgba.dimensions(), (150, 100));
    // alpha is dropped, not composited: the fully transparent left edge keeps its colour
    assert!(rgba.get_pixel(0, 50).0.iter().any(|&v| v > 0));
    assert_eq!(load_img("astronaut_150x120.webp").dimensions(), (150, 120));
    assert!(decode_image(b"not an image").is_err());
}

#[test]
fn train_with_identity_crop_equals_eval() {
    let img = load_img("coffee_600x400.jpg");
    let sq = image::imageops::crop_imm(&img, 100, 0, 400, 400).to_image();
    let aug = AugCfg::parse(&[
        "scale=(1.0, 1.0)".into(),
        "ratio=(1.0, 1.0)".into(),
        "use_timm=True".into(),
    ])
    .unwrap();
    let mut rng = Pcg64::seed_from_u64(1);
    let t = ImageTransform::train(96, &aug, OPENAI_MEAN, OPENAI_STD).apply(&sq, &mut rng);
    let e = ImageTransform::eval(96, OPENAI_MEAN, OPENAI_STD).apply(&sq, &mut rng);
    assert_eq!(t, e);
}

fn mean_std(v: &[f64]) -> (f64, f64) {
    let m = v.iter().sum::<f64>() / v.len() as f64;
    let var = v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / v.len() as f64;
    (m, var.sqrt())
}

#[test]
fn random_resized_crop_law() {
    // Square 1000x1000, scale (0.08, 0.5): every attempt fits, so the law is exact:
    // area ~ U(0.08, 0.5) (mean 0.29, sd 0.1212), log aspect ~ U(ln 3/4, ln 4/3) (mean 0, sd 0.1661).
    let mut rng = Pcg64::seed_from_u64(42);
    let n = 20000;
    let (mut areas, mut logr) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let b = random_resized_crop_params(1000, 1000, (0.08, 0.5), (0.75, 4.0 / 3.0), &mut rng);
        assert!(b.left + b.width <= 1000 && b.top + b.height <= 1000);
        let a = (b.width * b.height) as f64 / 1e6;
        assert!((0.075..=0.51).contains(&a), "area {a}");
        let r = (b.width as f64 / b.height as f64).ln();
        assert!(r.abs() <= (4.0f64 / 3.0).ln() + 0.02, "log ratio {r}");
        areas.push(a);
        logr.push(r);
    }
    let (am, asd) = mean_std(&areas);
    let (rm, rsd) = mean_std(&logr);
    eprintln!("rrc area mean {am:.4} sd {asd:.4}; log-aspect mean {rm:.4} sd {rsd:.4}");
    assert!((am - 0.29).abs() < 0.004, "area mean {am}");
    assert!((asd - 0.1212).abs() < 0.004, "area sd {asd}");
    assert!(rm.abs() < 0.005, "log aspect mean {rm}");
    assert!((rsd - 0.1661).abs() < 0.004, "log aspect sd {rsd}");
    // Positions are uniform: mean left of the free range ≈ half of it.
    let mut rel = Vec::new();
    for _ in 0..5000 {
        let b = random_resized_crop_params(1000, 1000, (0.1, 0.1), (1.0, 1.0), &mut rng);
        assert_eq!((b.width, b.height), (316, 316));
        rel.push(b.left as f64 / (1000 - 316) as f64);
    }
    let (pm, _) = mean_std(&rel);
    assert!((pm - 0.5).abs() < 0.02, "position mean {pm}");
}

#[test]
fn random_resized_crop_openclip_default_and_fallback() {
    let mut rng = Pcg64::seed_from_u64(7);
    // OpenCLIP default scale (0.9, 1.0) on a 4:3 image: crops stay inside and cover >= ~0.9 area
    // unless the fallback (whole image, ratio within bounds) is taken.
    let mut areas = Vec::new();
    for _ in 0..5000 {
        let b = random_resized_crop_params(640, 480, (0.9, 1.0), (0.75, 4.0 / 3.0), &mut rng);
        assert!(b.left + b.width <= 640 && b.top + b.height <= 480);
        let a = (b.width * b.height) as f64 / (640.0 * 480.0);
        assert!((0.89..=1.0).contains(&a), "area {a}");
        areas.push(a);
    }
    let (am, _) = mean_std(&areas);
    assert!((0.9..0.99).contains(&am), "area mean {am}");
    // Very wide image: no attempt fits often → fallback centre crop clamped to ratio 4/3.
    let b = (0..200)
        .map(|_| random_resized_crop_params(1000, 100, (0.99, 1.0), (0.75, 4.0 / 3.0), &mut rng))
        .find(|b| b.height == 100)
        .unwrap();
    assert_eq!(
        b,
        CropBox {
            top: 0,
            left: (1000 - 133) / 2,
            height: 100,
            width: 133
        }
    );
    // Very tall: width kept, height = round(w / (3/4)).
    let b = random_resized_crop_params(50, 1000, (1.0, 1.0), (0.75, 4.0 / 3.0), &mut rng);
    assert_eq!(
        b,
        CropBox {
            top: (1000 - 67) / 2,
            left: 0,
            height: 67,
            width: 50
        }
    );
}

#[test]
fn random_erasing_law() {
    let mut rng = Pcg64::seed_from_u64(3);
    let (h, w) = (64usize, 64usize);
    let trials = 10000;
    let mut hits = 0;
    let mut fracs = Vec::new();
    let mut vals = Vec::new();
    for _ in 0..trials {
        let mut buf = vec![0f32; 3 * h * w];
        let boxes = random_erasing(&mut buf, 3, h, w, 0.4, 1, &mut rng);
        if !boxes.is_empty() {
            hits += 1;
            let b = boxes[0];
            let frac = (b.width * b.height) as f64 / (h * w) as f64;
            assert!((0.015..=0.36).contains(&frac), "erased fraction {frac}");
            assert!(
                (b.top as usize + b.height as usize) <= h
                    && (b.left as usize + b.width as usize) <= w
            );
            fracs.push(frac);
            let nonzero = buf.iter().filter(|v| **v != 0.0).count();
            assert_eq!(nonzero, 3 * (b.width * b.height) as usize);
            if vals.len() < 1_000_000 {
                vals.extend(buf.iter().filter(|v| **v != 0.0).map(|&v| v as f64));
            }
        }
    }
    let p = hits as f64 / trials as f64;
    let (fm, _) = mean_std(&fracs);
    let (vm, vsd) = mean_std(&vals);
    eprintln!(
        "erasing frequency {p:.4} (p=0.4), box area mean {fm:.4}, fill mean {vm:.4} sd {vsd:.4}"
    );
    assert!((p - 0.4).abs() < 0.02, "frequency {p}");
    assert!((0.15..0.19).contains(&fm), "mean area {fm}");
    assert!(vm.abs() < 0.01 && (vsd - 1.0).abs() < 0.01);
    // max_count 3: 1..=3 boxes, each with area scaled by 1/count.
    let mut counts = [0usize; 4];
    for _ in 0..3000 {
        let mut buf = vec![0f32; 3 * h * w];
        let boxes = random_erasing(&mut buf, 3, h, w, 1.0, 3, &mut rng);
        counts[boxes.len()] += 1;
        for b in &boxes {
            let frac = (b.width * b.height) as f64 / (h * w) as f64 * boxes.len() as f64;
            assert!((0.012..=0.37).contains(&frac), "scaled fraction {frac}");
        }
    }
    assert!(
        counts[1..].iter().all(|&c| (850..1150).contains(&c)),
        "counts {counts:?}"
    );
}

#[test]
fn train_transform_erases_at_re_prob() {
    let img = load_img("chelsea_451x300.jpg");
    let aug = AugCfg::parse(&[
        "scale=(0.5, 1.0)".into(),
        "re_prob=0.4".into(),
        "re_count=1".into(),
        "use_timm=True".into(),
    ])
    .unwrap();
    let t = ImageTransform::train(64, &aug, OPENAI_MEAN, OPENAI_STD);
    let lut: Vec<Vec<f32>> = (0..3)
        .map(|c| {
            (0..256)
                .map(|v| (v as f32 / 255.0 - OPENAI_MEAN[c]) / OPENAI_STD[c])
                .collect()
        })
        .collect();
    // Normalisation is one FMA per value: within a few ulp of torchvision's formula.
    let on_grid = |c: usize, v: f32| {
        lut[c]
            .iter()
            .any(|&l| (l - v).abs() <= 4.0 * f32::EPSILON * l.abs().max(1.0))
    };
    let mut rng = Pcg64::seed_from_u64(11);
    let n = 2000;
    let mut erased = 0;
    let mut buf = vec![0f32; t.output_len()];
    for _ in 0..n {
        t.apply_into(&img, &mut rng, &mut buf);
        let plane = 64 * 64;
        if buf.iter().enumerate().any(|(i, &v)| !on_grid(i / plane, v)) {
            erased += 1;
        }
    }
    let p = erased as f64 / n as f64;
    eprintln!("train transform erased fraction {p:.3}");
    assert!((p - 0.4).abs() < 0.04, "erased fraction {p}");
    // Non-timm path: no erasing even if re_prob is given (OpenCLIP ignores it there).
    let aug = AugCfg::parse(&["re_prob=0.9".into()]).unwrap();
    assert_eq!(aug.unused_keys(), vec!["re_prob"]);
    let t = ImageTransform::train(64, &aug, OPENAI_MEAN, OPENAI_STD);
    for _ in 0..50 {
        t.apply_into(&img, &mut rng, &mut buf);
        assert!(buf.iter().enumerate().all(|(i, &v)| on_grid(i / 4096, v)));
    }
}

#[test]
fn gray_scale_prob() {
    let img = load_img("chelsea_451x300.jpg");
    let aug = AugCfg::parse(&["gray_scale_prob=0.5".into()]).unwrap();
    let t = ImageTransform::train(32, &aug, [0.0; 3], [1.0; 3]);
    let mut rng = Pcg64::seed_from_u64(5);
    let n = 2000;
    let mut grays = 0;
    for _ in 0..n {
        let o = t.apply(&img, &mut rng);
        if o[..1024] == o[1024..2048] && o[1024..2048] == o[2048..] {
            grays += 1;
        }
    }
    let p = grays as f64 / n as f64;
    assert!((p - 0.5).abs() < 0.04, "gray fraction {p}");
}

fn toks(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn aug_cfg_parse() {
    let d = AugCfg::parse(&[]).unwrap();
    assert_eq!(
        (d.scale, d.re_prob, d.re_count, d.use_timm),
        ((0.9, 1.0), 0.0, 1, false)
    );
    assert_eq!(d.ratio, (0.75, 4.0 / 3.0));
    // The reference run's model-card tokens.
    let a = AugCfg::parse(&toks(&[
        "scale=(0.5, 1.0)",
        "re_prob=0.4",
        "re_count=1",
        "use_timm=True",
    ]))
    .unwrap();
    assert_eq!(
        (a.scale, a.re_prob, a.re_count, a.use_timm),
        ((0.5, 1.0), 0.4, 1, true)
    );
    assert!(a.unused_keys().is_empty());
    let a = AugCfg::parse(&toks(&[
        "scale=[0.4,1]",
        "ratio=(0.5,2.)",
        "use_timm=1",
        "re_count=2",
        "re_prob=None",
    ]))
    .unwrap();
    assert_eq!(
        (a.scale, a.ratio, a.use_timm, a.re_count, a.re_prob),
        ((0.4, 1.0), (0.5, 2.0), true, 2, 0.0)
    );
    let a = AugCfg::parse(&toks(&[
        "use_timm=False",
        "gray_scale_prob=0.2",
        "color_jitter=(0.4, 0.4, 0.4, 0.1)",
    ]))
    .unwrap();
    assert_eq!(a.gray_scale_prob, 0.2);
    assert_eq!(a.unused_keys(), vec!["color_jitter"]);

    let err = |t: &[&str]| AugCfg::parse(&toks(t)).unwrap_err().to_string();
    assert!(err(&["scal=(0.5, 1.0)"]).contains("scal"));
    assert!(err(&["scale=(0.5, 1.0"]).contains("(0.5, 1.0"));
    assert!(err(&["scale=0.5"]).contains("scale"));
    assert!(err(&["re_prob=(1,2)"]).contains("re_prob"));
    assert!(err(&["re_prob=abc"]).contains("re_prob"));
    assert!(err(&["re_count=1.5"]).contains("re_count"));
    assert!(err(&["use_timm"]).contains("use_timm"));
    assert!(err(&["re_prob=1.5"]).contains("re_prob"));
    assert!(err(&["scale=(0.5, 1e999)"]).contains("scale"));
    assert!(err(&["ratio=(0.75, 1e999)"]).contains("ratio"));
    let e = err(&["color_jitter=0.4", "use_timm=True"]);
    assert!(e.contains("not supported yet: aug-cfg color_jitter"), "{e}");
    let e = err(&["color_jitter=(0.4,0.4,0.4,0.1)", "color_jitter_prob=0.8"]);
    assert!(
        e.contains("not supported yet: aug-cfg color_jitter_prob"),
        "{e}"
    );
}

/// Throughput of decode + OpenCLIP train transform (timm path, scale (0.5,1), re_prob 0.4) to 320
/// on one core. Run: `CLIP_BENCH_DIR=/path/to/jpgs cargo test --release -p clip-data --test
/// transform -- --ignored --nocapture bench` (images from `scripts/make-data-goldens.py --bench-images DIR`).
#[test]
#[ignore]
fn bench_decode_train_transform() {
    let dir = std::env::var("CLIP_BENCH_DIR").expect("set CLIP_BENCH_DIR");
    let mut files: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    files.sort_by_key(|f| f.len());
    assert!(!files.is_empty());
    let aug = AugCfg::parse(&toks(&[
        "scale=(0.5, 1.0)",
        "re_prob=0.4",
        "re_count=1",
        "use_timm=True",
    ]))
    .unwrap();
    let t = ImageTransform::train(320, &aug, OPENAI_MEAN, OPENAI_STD);
    let mut rng = Pcg64::seed_from_u64(0);
    let mut out = vec![0f32; t.output_len()];
    let n = 2000;
    // Thread CPU time (not wall time) so that other processes on the machine do not count.
    let cpu = || -> f64 {
        let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
        s.split_whitespace().next().unwrap().parse::<f64>().unwrap() * 1e-9
    };
    let (mut t_dec, mut t_tf) = (0f64, 0f64);
    let wall = std::time::Instant::now();
    for i in 0..n {
        let s = cpu();
        let img = decode_image(&files[i % files.len()]).unwrap();
        let m = cpu();
        t.apply_into(&img, &mut rng, &mut out);
        t_dec += m - s;
        t_tf += cpu() - m;
    }
    eprintln!("bench wall time {:.2} s", wall.elapsed().as_secs_f64());
    let avg_kb = files.iter().map(|f| f.len()).sum::<usize>() as f64 / files.len() as f64 / 1024.0;
    eprintln!(
        "bench: {} files (avg {avg_kb:.1} KB): {:.0} images/s per core (thread CPU time; decode {:.2} ms, transform {:.2} ms per image)",
        files.len(),
        n as f64 / (t_dec + t_tf),
        t_dec / n as f64 * 1e3,
        t_tf / n as f64 * 1e3
    );
}

/// Per-stage costs of the train transform (same images and settings as the bench above):
/// `CLIP_BENCH_DIR=DIR cargo test --release -p clip-data --test transform -- --ignored
/// --nocapture stage_costs`.
#[test]
#[ignore]
fn stage_costs() {
    let dir = std::env::var("CLIP_BENCH_DIR").expect("set CLIP_BENCH_DIR");
    let imgs: Vec<image::RgbImage> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .map(|p| decode_image(&std::fs::read(p).unwrap()).unwrap())
        .collect();
    let cpu = || -> f64 {
        let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
        s.split_whitespace().next().unwrap().parse::<f64>().unwrap() * 1e-9
    };
    let n = 2000;
    let mut rng = Pcg64::seed_from_u64(0);
    for re in ["0.4", "0.0"] {
        let aug = AugCfg::parse(&toks(&[
            "scale=(0.5, 1.0)",
            &format!("re_prob={re}"),
            "use_timm=True",
        ]))
        .unwrap();
        let t = ImageTransform::train(320, &aug, OPENAI_MEAN, OPENAI_STD);
        let mut out = vec![0f32; t.output_len()];
        let s = cpu();
        for i in 0..n {
            t.apply_into(&imgs[i % imgs.len()], &mut rng, &mut out);
        }
        eprintln!(
            "apply_into re_prob={re}: {:.3} ms",
            (cpu() - s) / n as f64 * 1e3
        );
    }
    let mut px = vec![0u8; 320 * 320 * 3];
    let s = cpu();
    for i in 0..n {
        let img = &imgs[i % imgs.len()];
        let b = random_resized_crop_params(
            img.width(),
            img.height(),
            (0.5, 1.0),
            (0.75, 4.0 / 3.0),
            &mut rng,
        );
        resize_crop_window(img, b, 320, 320, (0, 0, 320, 320), &mut px);
    }
    eprintln!("resize only: {:.3} ms", (cpu() - s) / n as f64 * 1e3);
    let mut buf = vec![0f32; 3 * 320 * 320];
    let s = cpu();
    for _ in 0..n {
        random_erasing(&mut buf, 3, 320, 320, 1.0, 1, &mut rng);
    }
    eprintln!("erasing (p=1): {:.3} ms", (cpu() - s) / n as f64 * 1e3);
}
