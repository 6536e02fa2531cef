//! clip-train's checkpoints: one safetensors file holding the model weights under OpenCLIP's
//! state-dict keys (so `clip-tool convert`, `--pretrained` and OpenCLIP's own loader read the
//! weights directly), the optimizer moments under `optimizer.`, and in the header's metadata the
//! training state (epoch, step, data position, …) and a CRC-32 of all of it.
//!
//! Written atomically (temporary file, fsync, rename, fsync of the folder): a crash or a kill
//! during the save leaves the previous checkpoints untouched. `--resume latest` takes the newest
//! checkpoint (by step) whose checksum verifies, skipping a corrupt or truncated newer one with a
//! warning.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clip_model::weights::{self, write_atomically};
use clip_model::ClipConfig;
use safetensors::tensor::{Dtype, View};
use serde::{Deserialize, Serialize};
use tch::{nn::VarStore, Device, Kind, Tensor};

pub const FORMAT: &str = "clip-train-checkpoint/1";
/// An `--fsdp-checkpoint sharded` checkpoint's index: no tensors, the state and the shards'
/// layout in its header; the shards are files of [`FORMAT`] beside it (`crate::fsdp::sharded`).
pub const SHARDED_FORMAT: &str = "clip-train-sharded/1";
/// Keys under this prefix hold optimizer state, not weights.
pub const OPTIMIZER_PREFIX: &str = "optimizer.";

/// The model weights in a file `--pretrained` and `clip-tool` read (any format
/// `clip_model::weights` reads), keyed as OpenCLIP's state dict: a clip-train checkpoint's
/// without its optimizer state.
pub fn read_weights(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let sharded = read_metadata(path)
        .is_ok_and(|m| m.get("format").map(String::as_str) == Some(SHARDED_FORMAT));
    let mut tensors = match sharded {
        true => load(path)?.model,
        false => weights::read_state_dict(path)?,
    };
    tensors.retain(|(k, _)| !k.starts_with(OPTIMIZER_PREFIX));
    Ok(tensors)
}

/// Reads the weights at `path` (see [`read_weights`]) into `vs` (a model built from `cfg`),
/// strictly, naming the file in any error. As OpenCLIP's `load_checkpoint` does, CLIP weights
/// move under `text.` for a CustomTextCLIP (`weights::convert_to_custom_text`), CLIP weights
/// without a `logit_bias` start a SigLIP model's at 0 (open_clip#712), not at its −10, and
/// positional embeddings made for another image size or context length are resized.
pub fn load_weights(vs: &VarStore, path: &Path, cfg: &ClipConfig) -> Result<()> {
    let mut sd = read_weights(path)?;
    weights::convert_to_custom_text(&mut sd, cfg);
    if cfg.init_logit_bias.is_some() && !sd.iter().any(|(k, _)| k == "logit_bias") {
        sd.push((
            "logit_bias".to_string(),
            Tensor::zeros([], (Kind::Float, Device::Cpu)),
        ));
    }
    weights::resize_pos_embeds(&mut sd, cfg)
        .and_then(|()| weights::load_state_dict(vs, sd))
        .with_context(|| format!("{}", path.display()))
}

/// The training state a checkpoint carries beside its tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// The run's name (`--name`).
    pub name: String,
    /// Epochs completed (OpenCLIP's `epoch` field).
    pub epoch: i64,
    /// Optimizer steps taken since the start of the run.
    pub step: i64,
    /// Optimizer steps taken inside the current epoch (0 at an epoch boundary).
    pub step_in_epoch: i64,
    /// Where the input stands: every rank's position (one, for a single rank); None before
    /// the first step.
    pub data_position: Option<crate::data::SavedPositions>,
    /// `--precision amp`'s loss scaler (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaler: Option<crate::scaler::ScalerState>,
    /// AdamW's own step count (its bias correction), fewer than `step` when the loss scaler
    /// skipped steps; absent: equal to `step`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimizer_step: Option<i64>,
    /// The `--opt` whose state the checkpoint holds (absent: `adamw`, as before there was a
    /// choice); a resume with another one is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimizer: Option<String>,
}

fn dtype(kind: Kind) -> Result<Dtype> {
    Ok(match kind {
        Kind::Float => Dtype::F32,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Half => Dtype::F16,
        Kind::Double => Dtype::F64,
        Kind::Int64 => Dtype::I64,
        Kind::Int => Dtype::I32,
        k => bail!("checkpoint: tensors of kind {k:?} are not supported"),
    })
}

/// CRC-32 over the state JSON and every tensor's name, shape and bytes, in name order.
fn checksum<'a>(
    state_json: &str,
    tensors: impl Iterator<Item = (&'a str, &'a [usize], &'a [u8])>,
) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(state_json.as_bytes());
    for (name, shape, data) in tensors {
        h.update(name.as_bytes());
        for d in shape {
            h.update(&(*d as u64).to_le_bytes());
        }
        h.update(data);
    }
    h.finalize()
}

/// A checkpoint's contents copied off the model: host copies of every tensor ([`host_copies`]:
/// pinned memory when they come from a GPU, copied without blocking, one wait) and the state,
/// taken between two steps. Training may go on changing the weights while [`Snapshot::write`]
/// runs on another thread.
pub struct Snapshot {
    /// Sorted by name: the CRC and the file list tensors in name order.
    entries: Vec<(String, HostTensor)>,
    state_json: String,
}

/// A contiguous CPU copy of one tensor, owned, with its safetensors dtype.
struct HostTensor {
    dtype: Dtype,
    shape: Vec<usize>,
    tensor: Tensor,
}

/// Bytes of host memory per block of [`host_copies`]: a power of two, which torch's caching
/// host allocator rounds every pinned allocation up to.
const SNAPSHOT_BLOCK: usize = 256 << 20;

/// Host copies of `tensors`, carved out of a few blocks of [`SNAPSHOT_BLOCK`] bytes (a tensor
/// larger than that gets a block of its own) at 64-byte-aligned offsets. When any comes from a
/// GPU the blocks are allocated pinned — page-locked once per block, not once per tensor, and
/// no pageable memory pinned by a copy — and every copy is enqueued without blocking, with one
/// wait for each device's current stream at the end.
fn host_copies(tensors: &[&Tensor]) -> Result<Vec<HostTensor>> {
    copies_in_blocks(tensors, SNAPSHOT_BLOCK)
}

/// [`host_copies`] with blocks of `block` bytes.
fn copies_in_blocks(tensors: &[&Tensor], block: usize) -> Result<Vec<HostTensor>> {
    let mut devices: Vec<usize> = tensors
        .iter()
        .filter_map(|t| match t.device() {
            Device::Cuda(i) => Some(i),
            _ => None,
        })
        .collect();
    devices.sort_unstable();
    devices.dedup();
    let nbytes = |t: &Tensor| t.numel() * t.kind().elt_size_in_bytes();
    // The layout: each tensor's (block, offset), and each block's size.
    let (mut blocks, mut place): (Vec<usize>, Vec<(usize, usize)>) = (vec![], vec![]);
    let mut open = None;
    for t in tensors {
        let n = nbytes(t);
        let b = match open {
            Some(b) if n <= block && blocks[b] + n <= block => b,
            _ => {
                blocks.push(0);
                open = (n <= block).then_some(blocks.len() - 1);
                blocks.len() - 1
            }
        };
        place.push((b, blocks[b]));
        blocks[b] = (blocks[b] + n).next_multiple_of(64);
    }
    let memory = blocks
        .iter()
        .map(|&n| match devices.is_empty() {
            true => Ok(Tensor::f_empty([n as i64], (Kind::Uint8, Device::Cpu))?),
            false => torch_ext::pinned::empty(&[n as i64], Kind::Uint8),
        })
        .collect::<Result<Vec<_>>>()?;
    let mut out = Vec::with_capacity(tensors.len());
    for (t, (b, at)) in tensors.iter().zip(place) {
        let bytes = memory[b].f_narrow(0, at as i64, nbytes(t) as i64)?;
        let mut host = bytes.f_view_dtype(t.kind())?.f_view(t.size().as_slice())?;
        tch::no_grad(|| torch_ext::pinned::copy_non_blocking(&mut host, &t.detach()))?;
        out.push(HostTensor {
            dtype: dtype(t.kind())?,
            shape: t.size().iter().map(|&d| d as usize).collect(),
            tensor: host,
        });
    }
    for d in devices {
        torch_ext::cuda::Stream::current(d)?.synchronize()?;
    }
    Ok(out)
}

/// [`HostTensor::view_of`] each of `tensors`: contiguous CPU tensors as they are, the others
/// copied together ([`host_copies`]: one wait for all of a GPU's).
fn views_or_copies(tensors: &[&Tensor]) -> Result<Vec<HostTensor>> {
    let viewable = |t: &Tensor| t.device() == Device::Cpu && t.is_contiguous();
    let copied: Vec<&Tensor> = tensors.iter().copied().filter(|t| !viewable(t)).collect();
    let mut copies = host_copies(&copied)?.into_iter();
    tensors
        .iter()
        .map(|t| match viewable(t) {
            true => HostTensor::view_of(t),
            false => copies.next().context("a host copy per tensor copied"),
        })
        .collect()
}

impl HostTensor {
    /// `t` itself when it is a contiguous CPU tensor nothing writes (a file just read: its
    /// checksum needs no copy of its bytes), else a copy ([`host_copies`]).
    fn view_of(t: &Tensor) -> Result<HostTensor> {
        if t.device() != Device::Cpu || !t.is_contiguous() {
            return Ok(host_copies(&[t])?.remove(0));
        }
        Ok(HostTensor {
            dtype: dtype(t.kind())?,
            shape: t.size().iter().map(|&d| d as usize).collect(),
            tensor: t.shallow_clone(),
        })
    }

    fn bytes(&self) -> &[u8] {
        let len = self.tensor.numel() * self.tensor.kind().elt_size_in_bytes();
        if len == 0 {
            return &[];
        }
        // SAFETY: `tensor` is a contiguous CPU tensor (made by `host_copies`, or checked by
        // `view_of`) that nothing writes while `self` lives, so its `len` bytes stay valid and
        // unchanged.
        unsafe { std::slice::from_raw_parts(self.tensor.data_ptr() as *const u8, len) }
    }
}

impl View for &HostTensor {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self.bytes())
    }
    fn data_len(&self) -> usize {
        self.bytes().len()
    }
}

impl Snapshot {
    /// Copies `model` (OpenCLIP-keyed tensors), `optimizer` tensors (keyed without the prefix,
    /// which is added here) and `state`.
    pub fn take(
        model: &[(String, Tensor)],
        optimizer: &[(String, Tensor)],
        state: &TrainState,
    ) -> Result<Snapshot> {
        Self::made(model, optimizer, state, host_copies)
    }

    /// A snapshot of tensors nothing writes while it lives (copies made for it — gathered
    /// shards —, or shards written before training goes on): contiguous CPU tensors are taken
    /// as they are, without a copy ([`views_or_copies`]).
    pub fn of_copies(
        model: &[(String, Tensor)],
        optimizer: &[(String, Tensor)],
        state: &TrainState,
    ) -> Result<Snapshot> {
        Self::made(model, optimizer, state, views_or_copies)
    }

    fn made(
        model: &[(String, Tensor)],
        optimizer: &[(String, Tensor)],
        state: &TrainState,
        host: fn(&[&Tensor]) -> Result<Vec<HostTensor>>,
    ) -> Result<Snapshot> {
        let names = model.iter().map(|(k, _)| k.clone()).chain(
            optimizer
                .iter()
                .map(|(k, _)| format!("{OPTIMIZER_PREFIX}{k}")),
        );
        let tensors: Vec<&Tensor> = model.iter().chain(optimizer).map(|(_, t)| t).collect();
        let mut entries: Vec<(String, HostTensor)> = names.zip(host(&tensors)?).collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Snapshot {
            entries,
            state_json: serde_json::to_string(state)?,
        })
    }

    /// Writes the snapshot at `path`, atomically, with its CRC-32.
    pub fn write(&self, path: &Path) -> Result<()> {
        let crc = checksum(
            &self.state_json,
            self.entries
                .iter()
                .map(|(k, t)| (k.as_str(), t.shape.as_slice(), t.bytes())),
        );
        let meta = HashMap::from([
            ("format".to_string(), FORMAT.to_string()),
            ("state".to_string(), self.state_json.clone()),
            ("crc32".to_string(), format!("{crc:08x}")),
        ]);
        write_atomically(path, |tmp| {
            safetensors::tensor::serialize_to_file(
                self.entries.iter().map(|(k, t)| (k.as_str(), t)),
                &Some(meta),
                tmp,
            )
            .map_err(|e| anyhow!("{e:?}"))?;
            test_signal_in_write(path);
            Ok(())
        })
    }
}

/// Test hook (crates/clip-train/tests/it/crash.rs), inert unless the variable is set:
/// `CLIP_TRAIN_TEST_SIGNAL_IN_CHECKPOINT_WRITE=PREFIX:SIGNAL` (e.g. `step_4.safetensors:9`) makes
/// the process send itself SIGNAL when the temporary file of a checkpoint whose name starts with
/// PREFIX is written, before its fsync and rename. A kill (9) or a stop (19) then lands inside
/// the write every time; raced from outside, it mostly missed a write that takes milliseconds.
fn test_signal_in_write(path: &Path) {
    let Ok(hook) = std::env::var("CLIP_TRAIN_TEST_SIGNAL_IN_CHECKPOINT_WRITE") else {
        return;
    };
    let (prefix, signal) = hook.rsplit_once(':').expect("PREFIX:SIGNAL");
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    if name.starts_with(prefix) {
        signal_hook::low_level::raise(signal.parse().expect("a signal number")).unwrap();
    }
}

/// A checkpoint read back and verified.
pub struct Loaded {
    pub state: TrainState,
    /// Model weights, OpenCLIP keys.
    pub model: Vec<(String, Tensor)>,
    /// Optimizer tensors, keys without the `optimizer.` prefix.
    pub optimizer: Vec<(String, Tensor)>,
}

/// The header metadata of a safetensors file (reads only the header).
pub(crate) fn read_metadata(path: &Path) -> Result<HashMap<String, String>> {
    let mut f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .with_context(|| format!("{}: truncated header", path.display()))?;
    let len = u64::from_le_bytes(len);
    if len > 100 << 20 {
        bail!(
            "{}: not a safetensors file (header length {len})",
            path.display()
        );
    }
    let mut header = vec![0u8; len as usize];
    f.read_exact(&mut header)
        .with_context(|| format!("{}: truncated header", path.display()))?;
    metadata_of(&header).with_context(|| format!("{}: unreadable header", path.display()))
}

/// The `__metadata__` of a safetensors header (the JSON after the 8-byte length).
fn metadata_of(header: &[u8]) -> Result<HashMap<String, String>> {
    let v: serde_json::Value = serde_json::from_slice(header)?;
    let meta = v.get("__metadata__").cloned().unwrap_or_default();
    Ok(serde_json::from_value(meta).unwrap_or_default())
}

/// The training state in a checkpoint's header bytes (the JSON after the 8-byte length), for
/// files read remotely by their first bytes.
pub fn state_of_header(header: &[u8]) -> Result<TrainState> {
    state_of(Path::new("(remote)"), &metadata_of(header)?)
}

/// The training state of a checkpoint, from its header only (no verification).
pub fn peek_state(path: &Path) -> Result<TrainState> {
    state_of(path, &read_metadata(path)?)
}

/// The training state in a checkpoint's header metadata.
fn state_of(path: &Path, meta: &HashMap<String, String>) -> Result<TrainState> {
    if !matches!(
        meta.get("format").map(String::as_str),
        Some(FORMAT | SHARDED_FORMAT)
    ) {
        bail!("{}: not a clip-train checkpoint", path.display());
    }
    let state = meta
        .get("state")
        .ok_or_else(|| anyhow!("{}: no training state", path.display()))?;
    serde_json::from_str(state)
        .with_context(|| format!("{}: unreadable training state", path.display()))
}

/// The first tensor holding a NaN or an inf, by name (an optimizer tensor with its
/// `optimizer.` prefix), or None when all are finite. One fused check on the tensors' device and
/// one host read: every floating tensor's 2-norm (fast, and finite only for a finite tensor); only
/// a tensor whose 2-norm is not finite gets the exact look (its largest magnitude, which unlike
/// the 2-norm does not overflow on finite values beyond ~1e19).
pub fn first_non_finite(
    model: &[(String, Tensor)],
    optimizer: &[(String, Tensor)],
) -> Result<Option<String>> {
    use torch_ext::finite::{norms, Norm};
    let named: Vec<(Cow<str>, &Tensor)> = model
        .iter()
        .map(|(k, t)| (Cow::Borrowed(k.as_str()), t))
        .chain(
            optimizer
                .iter()
                .map(|(k, t)| (Cow::Owned(format!("{OPTIMIZER_PREFIX}{k}")), t)),
        )
        .filter(|(_, t)| t.is_floating_point())
        .collect();
    let tensors: Vec<&Tensor> = named.iter().map(|(_, t)| *t).collect();
    let two = norms(&tensors, Norm::Two)?;
    if tch::no_grad(|| two.isfinite().all()).int64_value(&[]) != 0 {
        return Ok(None);
    }
    let two = Vec::<f32>::try_from(two.to_device(Device::Cpu))?;
    for ((k, t), n) in named.iter().zip(two) {
        if !n.is_finite() && !norms(&[t], Norm::Max)?.double_value(&[0]).is_finite() {
            return Ok(Some(k.to_string()));
        }
    }
    Ok(None)
}

/// [`load`], refusing a checkpoint whose weights or optimizer state hold a NaN or an inf: it
/// cannot be trained on (`--resume latest` skips it as it skips a corrupt one).
pub fn load_finite(path: &Path) -> Result<Loaded> {
    let loaded = load(path)?;
    if let Some(key) = first_non_finite(&loaded.model, &loaded.optimizer)? {
        bail!(
            "{}: not finite (NaN or inf in {key}): never resumed from",
            path.display()
        );
    }
    Ok(loaded)
}

/// Reads a checkpoint and verifies its checksum.
pub fn load(path: &Path) -> Result<Loaded> {
    let meta = read_metadata(path)?;
    let state = state_of(path, &meta)?;
    if meta.get("format").map(String::as_str) == Some(SHARDED_FORMAT) {
        let (model, optimizer) = crate::fsdp::sharded::assemble(path, &meta)?;
        return Ok(Loaded {
            state,
            model,
            optimizer,
        });
    }
    let want = meta
        .get("crc32")
        .ok_or_else(|| anyhow!("{}: no checksum", path.display()))?;
    let mut tensors = Tensor::read_safetensors(path)
        .with_context(|| format!("{}: unreadable checkpoint (truncated?)", path.display()))?;
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let host: Vec<HostTensor> = tensors
        .iter()
        .map(|(_, t)| HostTensor::view_of(t))
        .collect::<Result<_>>()?;
    let crc = checksum(
        &meta["state"],
        tensors
            .iter()
            .zip(&host)
            .map(|((k, _), h)| (k.as_str(), h.shape.as_slice(), h.bytes())),
    );
    if format!("{crc:08x}") != *want {
        bail!("{}: checksum mismatch (corrupt checkpoint)", path.display());
    }
    let (optimizer, model): (Vec<_>, Vec<_>) = tensors
        .into_iter()
        .partition(|(k, _)| k.starts_with(OPTIMIZER_PREFIX));
    let optimizer = optimizer
        .into_iter()
        .map(|(k, t)| (k[OPTIMIZER_PREFIX.len()..].to_owned(), t))
        .collect();
    Ok(Loaded {
        state,
        model,
        optimizer,
    })
}

/// The clip-train checkpoints in `dir`, newest (highest step) first; unreadable headers are
/// listed last so they are reported, not silently ignored.
pub fn candidates(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return vec![];
    };
    let mut found: Vec<(i64, PathBuf)> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors") && p.is_file())
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .map(|p| (peek_state(&p).map(|s| s.step).unwrap_or(i64::MIN), p))
        .collect();
    found.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.cmp(&a.1)));
    found.into_iter().map(|(_, p)| p).collect()
}

/// Removes the temp files of checkpoint writes that never finished (the writer was killed between
/// creating and renaming them: `weights::write_atomically` names them `.NAME.tmp-PID`); returns
/// their paths. They are never loaded, only wasted space.
pub fn remove_stale_temp_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return vec![];
    };
    let mut removed = vec![];
    for p in rd.filter_map(|e| e.ok().map(|e| e.path())) {
        if p.is_dir() && p.extension().is_some_and(|e| e == "shards") {
            // A sharded checkpoint's shards are written in a folder of their own.
            removed.extend(remove_stale_temp_files(&p));
            continue;
        }
        let stale = p.file_name().is_some_and(|n| {
            let n = n.to_string_lossy();
            n.starts_with('.') && n.contains(".safetensors.tmp-")
        });
        if stale && std::fs::remove_file(&p).is_ok() {
            removed.push(p);
        }
    }
    removed
}

/// Writes a sharded checkpoint's index at `path`, atomically: no tensors; in the header
/// `format` ([`SHARDED_FORMAT`]), `state`, `layout` (the shards' files and layout, JSON) and a
/// CRC-32 of both.
pub fn write_index(path: &Path, state: &TrainState, layout: &str) -> Result<()> {
    let state_json = serde_json::to_string(state)?;
    let crc = checksum(&format!("{state_json}{layout}"), std::iter::empty());
    let meta = HashMap::from([
        ("format".to_string(), SHARDED_FORMAT.to_string()),
        ("state".to_string(), state_json),
        ("layout".to_string(), layout.to_string()),
        ("crc32".to_string(), format!("{crc:08x}")),
    ]);
    // A safetensors file of no tensors, written by hand (safetensors 0.3 writes an invalid
    // header for an empty list): the 8-byte length, the JSON header padded to 8 bytes.
    let mut header = serde_json::to_string(&serde_json::json!({ "__metadata__": meta }))?;
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    write_atomically(path, |tmp| {
        std::fs::write(tmp, &bytes)?;
        test_signal_in_write(path);
        Ok(())
    })
}

/// A sharded checkpoint index's layout, its checksum verified.
pub fn index_layout<'a>(path: &Path, meta: &'a HashMap<String, String>) -> Result<&'a str> {
    let (Some(state), Some(layout), Some(want)) =
        (meta.get("state"), meta.get("layout"), meta.get("crc32"))
    else {
        bail!("{}: an incomplete sharded checkpoint index", path.display());
    };
    let crc = checksum(&format!("{state}{layout}"), std::iter::empty());
    if format!("{crc:08x}") != *want {
        bail!(
            "{}: checksum mismatch (corrupt checkpoint index)",
            path.display()
        );
    }
    Ok(layout)
}

/// Removes checkpoint `path` and, for a sharded one, the folder of its shards.
pub fn remove_checkpoint(path: &Path) {
    // Already gone is fine: only the newest matters.
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_dir_all(path.with_extension("shards"));
}

/// `--resume latest`: the newest checkpoint in `dir` that verifies and is finite
/// ([`load_finite`]), with a warning (through `warn`) for each newer one skipped; None when
/// there is none (start fresh, as OpenCLIP does).
pub fn load_latest(dir: &Path, mut warn: impl FnMut(String)) -> Option<(PathBuf, Loaded)> {
    for p in candidates(dir) {
        match load_finite(&p) {
            Ok(l) => return Some((p, l)),
            Err(e) => warn(format!("skipping checkpoint: {e:#}")),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Copies carved out of shared blocks hold their tensors' bits, dtypes and shapes — a
    /// non-contiguous source, a scalar, an empty tensor, one larger than a block — and no two
    /// overlap (each is then filled with a value of its own, and keeps it).
    #[test]
    fn host_copies_share_blocks_and_keep_every_tensor() {
        let f = (Kind::Float, Device::Cpu);
        let sources = [
            Tensor::arange(15, f).view([3, 5]).transpose(0, 1),
            Tensor::arange(7, f).to_kind(Kind::BFloat16),
            Tensor::from(42i64),
            Tensor::zeros([0, 4], f),
            Tensor::arange(100, f) * -1.5,
            Tensor::arange(3, (Kind::Int64, Device::Cpu)),
        ];
        let refs: Vec<&Tensor> = sources.iter().collect();
        // 256-byte blocks: the 400-byte tensor gets one of its own.
        let copies = copies_in_blocks(&refs, 256).unwrap();
        for (c, s) in copies.iter().zip(&sources) {
            assert_eq!(c.tensor.kind(), s.kind());
            assert_eq!(c.tensor.size(), s.size());
            assert!(c.tensor.equal(s), "{s:?}");
            assert_eq!(
                c.shape,
                s.size().iter().map(|&d| d as usize).collect::<Vec<_>>()
            );
        }
        for (i, c) in copies.iter().enumerate() {
            let _ = c.tensor.shallow_clone().fill_(i as i64 + 1);
        }
        for (i, (c, s)) in copies.iter().zip(&sources).enumerate() {
            assert!(c.tensor.equal(&s.full_like(i as i64 + 1)), "{s:?}");
        }
    }

    fn named(name: &str, t: Tensor) -> (String, Tensor) {
        (name.to_string(), t)
    }

    /// The culprit is named (an optimizer tensor with its prefix); finite tensors pass, also
    /// those whose 2-norm overflows (elements near f32's largest).
    #[test]
    fn first_non_finite_names_the_culprit_and_passes_large_finite_values() {
        let ones = |k: Kind| Tensor::ones([3, 2], (k, Device::Cpu));
        let model = vec![
            named("w", ones(Kind::Float)),
            named("huge", Tensor::full([4], 3e38, (Kind::Float, Device::Cpu))),
            named("b", ones(Kind::BFloat16)),
        ];
        let optimizer = vec![named("exp_avg.w", ones(Kind::Float))];
        assert_eq!(first_non_finite(&model, &optimizer).unwrap(), None);
        let _ = optimizer[0].1.get(1).get(0).fill_(f64::NAN);
        let found = first_non_finite(&model, &optimizer).unwrap();
        assert_eq!(found.as_deref(), Some("optimizer.exp_avg.w"));
        let _ = model[2].1.get(2).get(1).fill_(f64::NEG_INFINITY);
        assert_eq!(
            first_non_finite(&model, &optimizer).unwrap().as_deref(),
            Some("b")
        );
    }
}
