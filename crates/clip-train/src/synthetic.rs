//! `--dataset-type synthetic`: random images and token rows that are a pure function of
//! (seed, sample index in the dataset), so runs with any world size, batch split or stop/resume
//! point see the same samples and can be compared exactly. Every epoch sees the same
//! `--train-num-samples` samples, so a model can learn them (the demo's loss falls).

use anyhow::Result;
use tch::{Device, Kind, Tensor};
use torch_ext::generator::Generator;

#[derive(Clone)]
pub struct Synthetic {
    pub seed: i64,
    pub image_size: (i64, i64),
    pub context_length: i64,
    pub vocab_size: i64,
}

/// A 63-bit mix of (seed, index) (splitmix64), the per-sample generator seed.
fn mix(seed: i64, index: i64) -> i64 {
    let mut z = (seed as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (index as u64);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) >> 1) as i64
}

impl Synthetic {
    /// Samples `first .. first + n` as (images f32 [n,3,H,W], tokens i64 [n,ctx]) on the CPU.
    /// Token rows look like the tokenizer's: random ids, then the largest id (the eot, where the
    /// text tower reads its feature), then zero padding. Each sample draws from a generator of
    /// its own seeded by (seed, index), never libtorch's default one, so batches can be made on
    /// any thread.
    pub fn batch(&self, first: i64, n: i64) -> Result<(Tensor, Tensor)> {
        let (h, w) = self.image_size;
        let ctx = self.context_length;
        let mut images = Vec::with_capacity(n as usize);
        let mut tokens = Vec::with_capacity(n as usize);
        for i in first..first + n {
            let mut g = Generator::new(mix(self.seed, i))?;
            images.push(g.randn(&[3, h, w])?);
            // Read with a plain copy, not `.item()`: a trace of the step then shows no
            // `aten::_local_scalar_dense` for the data (it is not a device read either way).
            let mut len = [0i64];
            g.randint(1, ctx - 1, &[1])?.copy_data(&mut len, 1);
            let len = len[0];
            let ids = g.randint(1, self.vocab_size - 1, &[len])?;
            let row = Tensor::zeros([ctx], (Kind::Int64, Device::Cpu));
            let mut head = row.narrow(0, 0, len);
            head.copy_(&ids);
            let _ = row.narrow(0, len, 1).fill_(self.vocab_size - 1);
            tokens.push(row);
        }
        Ok((Tensor::stack(&images, 0), Tensor::stack(&tokens, 0)))
    }
}
