//! `--dataset-type csv` (OpenCLIP's `CsvDataset`): the table is read and checked once
//! ([`CsvData::open`]), then every epoch is a permutation of its rows decoded batch by batch.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clip_data::buffers::{to_bf16, BatchBuffer, ImagesMut};
use clip_data::loader::Processor;
use clip_data::processor::ClipProcessor;
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64;

use crate::data::fill_parallel;
use crate::params::Params;

/// `--dataset-type csv` (OpenCLIP's `CsvDataset`): (image path, caption) rows, read in a fresh
/// permutation every epoch — seeded by (seed, epoch), split across ranks as `DistributedSampler`
/// does, the last partial batch dropped — and decoded by `--workers` threads per batch, off the
/// training thread (`data.rs`'s `csv_batches`), into the trainer's host buffers. Each
/// sample's augmentation draws from an RNG seeded by (seed, epoch, row), so the batches do not
/// depend on the number of workers and a resumed run sees the same pixels.
pub(crate) struct CsvData {
    rows: Vec<(PathBuf, String)>,
    processor: ClipProcessor,
    seed: u64,
    workers: usize,
}

impl CsvData {
    /// This rank's rows of `epoch`, in order.
    pub(crate) fn order(&self, epoch: i64, rank: i64, world: i64) -> Vec<usize> {
        let n = self.rows.len();
        let mut perm: Vec<usize> = (0..n).collect();
        let mut rng = Pcg64::seed_from_u64(self.epoch_seed(epoch));
        for i in (1..n).rev() {
            perm.swap(i, rng.random_range(0..=i));
        }
        // DistributedSampler: pad to a multiple of the world by repeating from the start, then
        // every world-th index from this rank's.
        let total = n.div_ceil(world as usize) * world as usize;
        (0..total)
            .map(|i| perm[i % n])
            .skip(rank as usize)
            .step_by(world as usize)
            .collect()
    }

    /// The image side and caption length of a batch.
    pub(crate) fn shape(&self) -> (usize, usize) {
        (self.processor.image_size(), self.processor.context_length())
    }

    /// `rows` of `epoch` decoded into `buf` (images as the buffer holds them: f32, or bf16
    /// rounded as torch rounds).
    pub(crate) fn batch_into(
        &self,
        rows: &[usize],
        epoch: i64,
        buf: &mut dyn BatchBuffer,
    ) -> Result<()> {
        let (s, ctx) = self.shape();
        let n = rows.len() * 3 * s * s;
        let decode = |pixels: &mut [f32]| {
            fill_parallel(rows, self.workers, pixels, &|&r, out| {
                let path = &self.rows[r].0;
                let bytes = std::fs::read(path)
                    .with_context(|| format!("--train-data: cannot read {}", path.display()))?;
                let mut rng = Pcg64::seed_from_u64(
                    self.epoch_seed(epoch) ^ (r as u64).wrapping_mul(0xd1b5_4a32_d192_ed03),
                );
                self.processor
                    .image_into(&bytes, &mut rng, out)
                    .with_context(|| format!("--train-data: {}", path.display()))
            })
        };
        match buf.images_mut() {
            ImagesMut::F32(images) => decode(&mut images[..n])?,
            ImagesMut::Bf16(images) => {
                let mut pixels = vec![0f32; n];
                decode(&mut pixels)?;
                to_bf16(&pixels, &mut images[..n]);
            }
        }
        for (&r, t) in rows.iter().zip(buf.tokens_mut().chunks_mut(ctx)) {
            self.processor.text(&self.rows[r].1, t);
        }
        Ok(())
    }

    /// The seed of `epoch`'s permutation; each sample's augmentation mixes in its row.
    fn epoch_seed(&self, epoch: i64) -> u64 {
        self.seed ^ (epoch as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }

    /// Reads `--train-data` as a table, checks its columns and that every image exists.
    pub(crate) fn open(p: &Params, processor: ClipProcessor) -> Result<CsvData> {
        let path = p.train_data.as_deref().unwrap_or_default();
        if p.dataset_resampled || p.train_data_upsampling_factors.is_some() {
            bail!("--dataset-resampled / --train-data-upsampling-factors are webdataset options, not for --dataset-type csv");
        }
        let sep = match p.csv_separator.chars().collect::<Vec<_>>().as_slice() {
            [c] => *c,
            _ => bail!(
                "--csv-separator {:?}: expected one character",
                p.csv_separator
            ),
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--train-data {path}: cannot read the CSV file"))?;
        let table = clip_data::csv::Table::parse(&text, sep)
            .with_context(|| format!("--train-data {path}"))?;
        let ic = table
            .column(&p.csv_img_key)
            .with_context(|| format!("--csv-img-key {} in {path}", p.csv_img_key))?;
        let cc = table
            .column(&p.csv_caption_key)
            .with_context(|| format!("--csv-caption-key {} in {path}", p.csv_caption_key))?;
        let rows: Vec<(PathBuf, String)> = table
            .values(ic)?
            .into_iter()
            .zip(table.values(cc)?)
            .map(|(i, c)| (PathBuf::from(i), c.to_string()))
            .collect();
        // OpenCLIP opens the paths as given (relative to the working directory).
        if let Some((missing, _)) = rows.iter().find(|(i, _)| !i.is_file()) {
            bail!("--train-data {path}: no such image: {}", missing.display());
        }
        Ok(CsvData {
            rows,
            processor,
            seed: p.seed as u64,
            workers: p.workers.max(1) as usize,
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.rows.len()
    }
}
