//! `--dataset-type csv` (and `auto` on a .csv/.tsv path): OpenCLIP's CsvDataset layout — a header,
//! image paths and captions in the `--csv-img-key` / `--csv-caption-key` columns, quoted fields —
//! trained end to end, independent of `--workers`, resumed bitwise, split across ranks.
use crate::common::{assert_bitwise_equal, cli, free_port, ok, run, stopped_copy, tempdir};
use std::path::Path;
use std::process::{Command, Stdio};

/// 40 PNGs and a TSV naming them (absolute paths, some captions quoted with tabs and quotes).
pub(crate) fn table(dir: &Path, sep: char, img_key: &str, caption_key: &str) -> String {
    let imgs = dir.join("imgs");
    std::fs::create_dir_all(&imgs).unwrap();
    let mut text = format!("{img_key}{sep}{caption_key}\n");
    for i in 0..40u32 {
        let img = image::RgbImage::from_fn(48, 40, |x, y| {
            image::Rgb([
                ((x * 5 + i * 7) % 256) as u8,
                ((y * 3) % 256) as u8,
                (i * 6) as u8,
            ])
        });
        let path = imgs.join(format!("{i:03}.png"));
        img.save(&path).unwrap();
        let caption = if i % 3 == 0 {
            format!("\"a \"\"pattern\"\"{sep}number {i}\"")
        } else {
            format!("pattern number {i}")
        };
        text.push_str(&format!("{}{sep}{caption}\n", path.display()));
    }
    let name = if sep == '\t' {
        "train.tsv"
    } else {
        "train.csv"
    };
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn args(logs: &Path, name: &str, data: &str, extra: &[&str]) -> Vec<String> {
    let flags = "--batch-size 4 --epochs 2 --model clip_tiny --lr 1e-3 --warmup 2 --workers 2 \
                 --save-every-n-steps 3 --log-every-n-steps 1 --seed 4";
    cli(
        flags,
        name,
        logs,
        &[&["--train-data", data], extra].concat(),
    )
}

#[test]
fn csv_trains_resumes_and_splits_across_ranks() {
    let dir = tempdir("csv");
    let tsv = table(&dir, '\t', "filepath", "title");
    ok(&args(&dir, "full", &tsv, &[]));
    let full = dir.join("full");
    let log = std::fs::read_to_string(full.join("out.log")).unwrap();
    assert!(log.contains("Train Epoch: 1 [40/40 (100%)]"), "{log}");
    let last = full.join("checkpoints/epoch_2.safetensors");

    // Every sample's augmentation has its own seed: the number of decode threads changes nothing.
    ok(&args(&dir, "w3", &tsv, &["--workers", "3"]));
    assert_bitwise_equal(&dir.join("w3/checkpoints/epoch_2.safetensors"), &last);

    // Stopped mid-epoch (10 steps per epoch: step 6 in the first, 12 in the second), resumed:
    // bitwise.
    for stop in [6, 12] {
        let name = format!("stop{stop}");
        stopped_copy(&full, &dir.join(&name), stop);
        ok(&args(&dir, &name, &tsv, &["--resume", "latest"]));
        assert_bitwise_equal(
            &dir.join(&name).join("checkpoints/epoch_2.safetensors"),
            &last,
        );
    }

    // Other column names and a comma separator, as OpenCLIP's flags give them.
    let sub = dir.join("comma");
    std::fs::create_dir_all(&sub).unwrap();
    let csv = table(&sub, ',', "path", "caption");
    ok(&args(
        &dir,
        "comma",
        &csv,
        &[
            "--dataset-type",
            "csv",
            "--csv-separator",
            ",",
            "--csv-img-key",
            "path",
            "--csv-caption-key",
            "caption",
        ],
    ));
    // A missing column: one line naming it, exit 2, nothing written.
    let out = run(&args(
        &dir,
        "nocol",
        &csv,
        &[
            "--csv-separator",
            ",",
            "--csv-img-key",
            "path",
            "--csv-caption-key",
            "text",
        ],
    ));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--csv-caption-key text") && err.contains("\"caption\""),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(!dir.join("nocol").exists());

    // Two ranks: each reads its half of every epoch's permutation (20 rows, 5 batches of 4).
    let port = free_port().to_string();
    let children: Vec<_> = (0..2)
        .map(|r| {
            crate::procs::Guarded::spawn(
                Command::new(env!("CARGO_BIN_EXE_clip-train"))
                    .args(args(&dir, "ddp", &tsv, &[]))
                    .env("RANK", r.to_string())
                    .env("WORLD_SIZE", "2")
                    .env("MASTER_ADDR", "127.0.0.1")
                    .env("MASTER_PORT", &port)
                    .env("OMP_NUM_THREADS", "1")
                    .stderr(Stdio::piped()),
            )
        })
        .collect();
    for c in children {
        let o = c.wait_with_output();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let log = std::fs::read_to_string(dir.join("ddp/out.log")).unwrap();
    assert!(log.contains("Train Epoch: 1 [40/40 (100%)]"), "{log}");
    assert!(
        log.contains("(5 batches of 4 = 40 samples per epoch)"),
        "{log}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
