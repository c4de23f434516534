//! The data block's per-sample transforms: `random_crop`,
//! `horizontal_flip`, `mean` and `std`. Each needs samples laid out as
//! `[channels, height, width]`, and `mean`/`std` one value per channel.

use super::settings::Settings;
use super::CheckError;
use crate::plan::{Augment, DataSource};

/// Reads the transforms of a data block whose samples have `sample_shape`
/// (empty when the data was not read and no `shape` says it).
pub(super) fn read(
    settings: &Settings<'_>,
    sample_shape: &[i64],
    source: &DataSource,
    errors: &mut Vec<CheckError>,
) -> Option<Augment> {
    // Every setting read before any is given up on: all their mistakes
    // are reported together.
    let crop = settings.int("random_crop", 0..=4096, Some(0), errors);
    let flip = settings.float("horizontal_flip", 0.0..1.0, 0.0, errors);
    let mean = settings.floats("mean", errors);
    let std = settings.floats("std", errors);
    let read_all = crop.is_some() && flip.is_some() && mean.is_some() && std.is_some();
    let (mean, std) = (mean.flatten(), std.flatten());
    let augment = Augment {
        crop_padding: crop.unwrap_or(0) as u64,
        flip: flip.unwrap_or(0.0),
        mean: mean.as_ref().map_or_else(Vec::new, |(m, _)| m.clone()),
        std: std.as_ref().map_or_else(Vec::new, |(s, _)| s.clone()),
    };
    if augment.is_none() {
        return read_all.then_some(augment);
    }
    let first = ["random_crop", "horizontal_flip", "mean", "std"]
        .into_iter()
        .find_map(|key| settings.get(key))
        .expect("a transform is set");
    let span = first.key.span;
    if matches!(
        source,
        DataSource::Text { .. } | DataSource::Tokens { .. } | DataSource::Synthetic { .. }
    ) {
        errors.push(CheckError::Unsupported {
            message: "image transforms on a text, token or synthetic source".into(),
            span,
            help: Some("transforms apply to samples of [channels, height, width]".into()),
        });
        return None;
    }
    if !sample_shape.is_empty() && sample_shape.len() != 3 {
        errors.push(CheckError::InvalidValue {
            message: format!(
                "`{}` transforms samples of [channels, height, width]; these are {sample_shape:?}",
                first.key.name
            ),
            span,
            label: "needs images".into(),
            help: Some("lay the rows out as images: `shape = [1, 8, 8]`".into()),
        });
        return None;
    }
    normalization(&augment, mean, std, sample_shape, errors)?;
    read_all.then_some(augment)
}

/// `mean` and `std` come together, one value per channel, `std` above 0.
fn normalization(
    augment: &Augment,
    mean: Option<(Vec<f64>, crate::span::Span)>,
    std: Option<(Vec<f64>, crate::span::Span)>,
    sample_shape: &[i64],
    errors: &mut Vec<CheckError>,
) -> Option<()> {
    let (mean_span, std_span) = match (&mean, &std) {
        (None, None) => return Some(()),
        (Some((_, m)), Some((_, s))) => (*m, *s),
        (Some((_, span)), None) | (None, Some((_, span))) => {
            errors.push(CheckError::InvalidValue {
                message: "`mean` and `std` normalise together".into(),
                span: *span,
                label: "the other one is missing".into(),
                help: Some("e.g. `mean = [0.5, 0.5, 0.5]; std = [0.25, 0.25, 0.25]`".into()),
            });
            return None;
        }
    };
    let before = errors.len();
    if let Some(at) = augment.std.iter().position(|s| !s.is_finite() || *s <= 0.0) {
        errors.push(CheckError::invalid(
            format!(
                "std {} of channel {at}: it divides, so it must be above 0",
                augment.std[at]
            ),
            std_span,
            "not above 0",
        ));
    }
    let channels = sample_shape.first().copied();
    for (values, span, key) in [
        (&augment.mean, mean_span, "mean"),
        (&augment.std, std_span, "std"),
    ] {
        let expected = channels.map_or(augment.mean.len(), |c| c as usize);
        if values.len() != expected {
            errors.push(CheckError::invalid(
                format!(
                    "`{key}` has {} values, for samples of {expected} channels",
                    values.len()
                ),
                span,
                "one per channel",
            ));
        }
    }
    if errors.len() > before {
        return None;
    }
    Some(())
}
