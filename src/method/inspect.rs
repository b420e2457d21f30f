//! Looking inside a trained spatial-reasoning model: what its relation head predicts for the
//! patch pairs of an image (notebook `02-spatial-task`).
//!
//! [`crate::train::load_sr_model`] reads the newest checkpoint of a run directory into an
//! [`SrModel`]; [`predict_offsets`] cuts patches like training does (same sampler and patch mode, but no
//! colour augmentation), runs backbone and head in evaluation mode and returns, per patch pair,
//! the true normalised offset next to the predicted one.

use dfdx::prelude::*;

use super::{RelationHead, SslModel};
use crate::augment::{offset_target, ColorParams, Image, PatchAugment, PatchPos, PatchSampler};
use crate::data::ImageDataset;
use crate::models::{Backbone, FEATURES};
use crate::rng::{rng_for, Stream};

/// An SR model (backbone + relation head with 3 outputs) on [`crate::Device`], e.g.
/// `SrModel<Conv4<Device>>`.
pub type SrModel<B> = SslModel<B, RelationHead<f32, crate::Device>>;
/// An SR model with the Conv-4 backbone (the quickstart's).
pub type SrConv4 = SrModel<crate::models::Conv4<crate::Device>>;

/// Why a model could not be inspected; each variant names the value.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("{0}")]
    Invalid(String),
    #[error("device: {0}")]
    Device(String),
}

/// One patch pair `(a, b)` of one image and what the head makes of it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OffsetPrediction {
    /// Index of the image in the dataset.
    pub image: usize,
    /// Top-left corners of the two patches (the pair's left and right item).
    pub a: PatchPos,
    pub b: PatchPos,
    /// The training target [`offset_target`]`(a, b, S, p)`: `(Δrow, Δcol)` in [−1, 1].
    pub target: (f32, f32),
    /// The head's `(Δrow, Δcol)` outputs.
    pub predicted: (f32, f32),
    /// The head's same-image logit (> 0: "same image").
    pub logit: f32,
}

/// For each image in `images`, draw `sampler.count()` patch positions from
/// `rng_for(seed, Stream::Patches, 0, image)`, turn them into backbone inputs with `aug` (its mode
/// and normalisation; colour augmentation off; in additive mode the paste place is drawn from the
/// same RNG), and run every slot pair `q < r` (left = patch `q`, right = patch `r`, as in
/// training) through backbone and head in evaluation mode (the head aggregates each pair its own
/// way, `method.aggregation`).
///
/// Returns `images.len() · P(P−1)/2` predictions, image by image.
///
/// # Shapes
/// Backbone inputs `(images · P, 3, S, S)` with `S = aug.out_size`; head input
/// `(images · P(P−1)/2, 2F)` (cat; `F` for sum, mean, max) → `(…, 3)`.
pub fn predict_offsets<B: Backbone<crate::Device>>(
    model: &SrModel<B>,
    ds: &ImageDataset,
    images: &[usize],
    sampler: &PatchSampler,
    aug: &PatchAugment,
    seed: u64,
) -> Result<Vec<OffsetPrediction>, InspectError> {
    if model.head.outputs() != 3 {
        return Err(InspectError::Invalid(format!(
            "the relation head has {} output(s): offsets need an SR head (3)",
            model.head.outputs()
        )));
    }
    if sampler.image_size() != (ds.height, ds.width) {
        return Err(InspectError::Invalid(format!(
            "the sampler is for {:?} images, the dataset {} holds {}×{}",
            sampler.image_size(),
            ds.name,
            ds.height,
            ds.width
        )));
    }
    if let Some(&i) = images.iter().find(|&&i| i >= ds.len()) {
        return Err(InspectError::Invalid(format!(
            "image index {i} out of range: {} has {} images",
            ds.name,
            ds.len()
        )));
    }
    let (p, count, s) = (sampler.patch(), sampler.count(), aug.out_size);
    let no_colour = ColorParams {
        jitter: None,
        gray: false,
    };
    let mut pixels = Vec::with_capacity(images.len() * count * 3 * s * s);
    let mut positions = Vec::with_capacity(images.len() * count);
    for &i in images {
        let img = Image::from_hwc_u8(ds.image(i), ds.height, ds.width);
        let mut rng = rng_for(seed, Stream::Patches, 0, i as u64);
        for pos in sampler.sample(&mut rng) {
            let params = crate::augment::PatchParams {
                color: no_colour,
                ..aug.sample_params(&mut rng, pos, p)
            };
            pixels.extend_from_slice(&aug.apply(&img, p, &params).data);
            positions.push(pos);
        }
    }
    let dev = crate::new_device(0).map_err(|e| InspectError::Device(e.to_string()))?;
    let n = positions.len();
    let device_err = |e| InspectError::Device(format!("{e:?}"));
    let x = dev
        .try_tensor_from_vec(pixels, (n, Const::<3>, s, s))
        .map_err(device_err)?;
    let feats = model.backbone.forward_eval(x).map_err(device_err)?.as_vec();
    let mut left = Vec::new();
    let mut right = Vec::new();
    let mut pairs = Vec::new();
    for (k, &image) in images.iter().enumerate() {
        for q in 0..count {
            for r in q + 1..count {
                let (iq, ir) = (k * count + q, k * count + r);
                left.extend_from_slice(&feats[iq * FEATURES..(iq + 1) * FEATURES]);
                right.extend_from_slice(&feats[ir * FEATURES..(ir + 1) * FEATURES]);
                pairs.push((image, positions[iq], positions[ir]));
            }
        }
    }
    let m = pairs.len();
    let a = dev
        .try_tensor_from_vec(left, (m, Const::<FEATURES>))
        .map_err(device_err)?;
    let b = dev
        .try_tensor_from_vec(right, (m, Const::<FEATURES>))
        .map_err(device_err)?;
    let out = model
        .head
        .forward_pairs_eval(a, b)
        .map_err(device_err)?
        .as_vec();
    Ok(pairs
        .into_iter()
        .enumerate()
        .map(|(j, (image, a, b))| OffsetPrediction {
            image,
            a,
            b,
            target: offset_target(a, b, ds.height, p),
            predicted: (out[3 * j], out[3 * j + 1]),
            logit: out[3 * j + 2],
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::augment::Normalize;
    use crate::config::{OverlapRule, PatchMode};
    use crate::models::Conv4;

    fn model() -> SrModel<Conv4<crate::Device>> {
        let dev = crate::Device::seed_from_u64(3);
        SslModel {
            backbone: Conv4::new(&dev, 3).unwrap(),
            head: RelationHead::new(&dev, super::super::HeadSpec::sr()).unwrap(),
        }
    }

    #[test]
    fn predictions_are_the_head_on_aggregated_patch_features() {
        let ds = crate::data::synthetic::generate(crate::data::Split::Test, 4, 7).unwrap();
        let model = model();
        let sampler = PatchSampler::square(32, 12, 3, OverlapRule::Forbidden).unwrap();
        let aug = PatchAugment::new(PatchMode::Zoom, 32, 12, Normalize::IDENTITY).unwrap();
        let preds = predict_offsets(&model, &ds, &[2, 0], &sampler, &aug, 5).unwrap();
        // 2 images × 3·2/2 slot pairs, image by image.
        assert_eq!(preds.len(), 6);
        assert_eq!(
            preds.iter().map(|p| p.image).collect::<Vec<_>>(),
            [2, 2, 2, 0, 0, 0]
        );
        // Positions are the sampler's draws for that image; targets follow SPEC §3.
        let mut rng = rng_for(5, Stream::Patches, 0, 2);
        let pos = sampler.sample(&mut rng);
        assert_eq!((preds[0].a, preds[0].b), (pos[0], pos[1]));
        assert_eq!((preds[2].a, preds[2].b), (pos[1], pos[2]));
        for p in &preds {
            assert_eq!(p.target, offset_target(p.a, p.b, 32, 12));
            assert!(crate::augment::patches::separated(p.a, p.b, 12));
        }
        // Recompute the first pair by hand: zoomed, uncoloured crops through the eval backbone.
        let dev = crate::Device::default();
        let img = Image::from_hwc_u8(ds.image(2), 32, 32);
        let cut = |pp: PatchPos| {
            let c = crate::augment::crop(&img, pp.row, pp.col, 12, 12);
            crate::augment::resize_bilinear(&c, 32, 32).data
        };
        let mut px = cut(preds[0].a);
        px.extend(cut(preds[0].b));
        let x = dev.tensor_from_vec(px, (2, Const::<3>, 32, 32));
        let f = model.backbone.forward_eval(x).unwrap().as_vec();
        let h = dev.tensor_from_vec(f, (1, 2 * FEATURES));
        let out = model.head.forward_eval(h).unwrap().as_vec();
        let got = [preds[0].predicted.0, preds[0].predicted.1, preds[0].logit];
        for (g, w) in got.iter().zip(&out) {
            assert!((g - w).abs() < 1e-5, "{got:?} vs {out:?}");
        }
        // Different pairs get different predictions (the inputs reach the head).
        assert_ne!(preds[0].predicted, preds[3].predicted);
    }

    #[test]
    fn mismatched_inputs_are_errors_that_name_the_value() {
        let ds = crate::data::synthetic::generate(crate::data::Split::Test, 2, 7).unwrap();
        let model = model();
        let aug = PatchAugment::new(PatchMode::Additive, 32, 12, Normalize::IDENTITY).unwrap();
        let sampler = PatchSampler::square(32, 12, 2, OverlapRule::Forbidden).unwrap();
        let e = predict_offsets(&model, &ds, &[5], &sampler, &aug, 1).unwrap_err();
        assert!(e.to_string().contains("index 5"), "{e}");
        let wrong = PatchSampler::square(64, 24, 2, OverlapRule::Forbidden).unwrap();
        let e = predict_offsets(&model, &ds, &[0], &wrong, &aug, 1).unwrap_err();
        assert!(e.to_string().contains("(64, 64)"), "{e}");
        let mut rr = model.clone();
        rr.head = RelationHead::new(
            &crate::Device::default(),
            super::super::HeadSpec {
                outputs: 1,
                ..super::super::HeadSpec::sr()
            },
        )
        .unwrap();
        let e = predict_offsets(&rr, &ds, &[0], &sampler, &aug, 1).unwrap_err();
        assert!(e.to_string().contains("1 output"), "{e}");
        // Additive mode works too and keeps the pair count.
        assert_eq!(
            predict_offsets(&model, &ds, &[0, 1], &sampler, &aug, 1)
                .unwrap()
                .len(),
            2
        );
    }
}
