//! `--precision`, decided once: what each value means for the weights' dtype, autocast, the
//! images' dtype and the loss scaler. Everything downstream asks this enum; no code matches the
//! flag's text again.

use anyhow::{bail, Result};
use tch::Kind;

/// The precisions clip-train trains in (OpenCLIP's names; `amp_bfloat16` is `amp_bf16`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// OpenCLIP's default: fp32 weights, fp16 autocast, PyTorch's GradScaler.
    Amp,
    /// fp32 weights, bf16 autocast.
    AmpBf16,
    /// bf16 weights except the text LayerNorms (OpenCLIP's `LayerNormFp32`); bf16 images.
    Bf16,
    /// Every weight bf16; bf16 images.
    PureBf16,
    Fp32,
}

/// How the model's weights are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weights {
    Fp32,
    /// bf16, with (`true`) or without the text LayerNorms kept in fp32.
    Bf16 {
        text_layer_norms_fp32: bool,
    },
}

impl Precision {
    /// The `--precision` value, or the reason it is refused.
    pub fn parse(flag: &str) -> Result<Precision> {
        Ok(match flag {
            "amp" => Precision::Amp,
            "amp_bf16" | "amp_bfloat16" => Precision::AmpBf16,
            "bf16" => Precision::Bf16,
            "pure_bf16" => Precision::PureBf16,
            "fp32" => Precision::Fp32,
            other => bail!(
                "not supported yet: --precision {other} (amp, amp_bf16, bf16, pure_bf16 and fp32 are)"
            ),
        })
    }

    /// OpenCLIP's `get_autocast`: fp16 for `amp`, bf16 for `amp_bf16`, none otherwise.
    pub fn autocast(self) -> Option<Kind> {
        match self {
            Precision::Amp => Some(Kind::Half),
            Precision::AmpBf16 => Some(Kind::BFloat16),
            Precision::Bf16 | Precision::PureBf16 | Precision::Fp32 => None,
        }
    }

    /// OpenCLIP's `get_input_dtype`: images in the weights' dtype for bf16 / pure_bf16.
    pub fn input_kind(self) -> Kind {
        match self.weights() {
            Weights::Bf16 { .. } => Kind::BFloat16,
            Weights::Fp32 => Kind::Float,
        }
    }

    /// The dtype images may cross to the device in, bit-identical to converting them there:
    /// bf16 where the model rounds them to bf16 before anything else — bf16 weights (the input
    /// dtype above), and bf16 autocast, under which the image tower's first op, the stem /
    /// patch-embedding convolution (ConvNeXt and ViT alike; ConvNeXt's channels-last copy
    /// before it moves values, it does not change them), casts its input to bf16. Rounded on
    /// the host as torch rounds (`clip_data::buffers::bf16_bits`), they take half the bytes.
    pub fn image_kind(self) -> Kind {
        match self {
            Precision::AmpBf16 | Precision::Bf16 | Precision::PureBf16 => Kind::BFloat16,
            Precision::Amp | Precision::Fp32 => Kind::Float,
        }
    }

    pub fn weights(self) -> Weights {
        match self {
            Precision::Bf16 => Weights::Bf16 {
                text_layer_norms_fp32: true,
            },
            Precision::PureBf16 => Weights::Bf16 {
                text_layer_norms_fp32: false,
            },
            Precision::Amp | Precision::AmpBf16 | Precision::Fp32 => Weights::Fp32,
        }
    }

    /// Whether the loss is scaled (`amp`'s GradScaler, whose state the checkpoints carry).
    pub fn scales_loss(self) -> bool {
        self == Precision::Amp
    }

    /// Whether the matmuls run in 16 bits (the MFU peak is the device's 16-bit one).
    pub fn is_16_bit(self) -> bool {
        self != Precision::Fp32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_accepted_flag_value_maps_as_openclip_does() {
        let p = |s| Precision::parse(s).unwrap();
        assert_eq!(p("amp").autocast(), Some(Kind::Half));
        assert!(p("amp").scales_loss());
        assert_eq!(p("amp_bfloat16"), Precision::AmpBf16);
        assert_eq!(p("amp_bf16").autocast(), Some(Kind::BFloat16));
        assert_eq!(p("amp_bf16").input_kind(), Kind::Float);
        assert_eq!(p("bf16").input_kind(), Kind::BFloat16);
        assert_eq!(p("amp_bf16").image_kind(), Kind::BFloat16);
        assert_eq!(p("amp").image_kind(), Kind::Float);
        assert_eq!(
            p("bf16").weights(),
            Weights::Bf16 {
                text_layer_norms_fp32: true
            }
        );
        assert_eq!(
            p("pure_bf16").weights(),
            Weights::Bf16 {
                text_layer_norms_fp32: false
            }
        );
        assert!(!p("fp32").is_16_bit() && p("fp32").autocast().is_none());
        for refused in ["fp16", "pure_fp16"] {
            let e = Precision::parse(refused).unwrap_err().to_string();
            assert!(e.contains(&format!("--precision {refused}")), "{e}");
        }
    }
}
