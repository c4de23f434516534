//! `images(path, size: [H, W], channels: 3)`: an image folder as a data
//! source, and what the checker reads of it before launch (the listing and
//! the first image of each class).

use super::args::Value;
use super::CheckError;
use crate::ast::Setting;
use crate::dataset::images;
use crate::plan::{DataSource, Features, TargetKind};

/// The largest side `size` may give (as the decoder allows).
const MAX_SIDE: i64 = 16384;

/// The source from its values: sides from 1 to 16384, 1 or 3 channels,
/// class labels.
pub(super) fn source(
    path: String,
    size: &Value,
    channels: &Value,
    setting: &Setting,
    target: TargetKind,
    errors: &mut Vec<CheckError>,
) -> Option<DataSource> {
    let [h, w] = match size {
        Value::Int(side) => [*side, *side],
        pair => pair.as_int_pair(),
    };
    let span = setting.value.span;
    let mut ok = true;
    if !(1..=MAX_SIDE).contains(&h) || !(1..=MAX_SIDE).contains(&w) {
        errors.push(CheckError::invalid(
            format!("an image size of [{h}, {w}]: each side from 1 to {MAX_SIDE} pixels"),
            span,
            "size",
        ));
        ok = false;
    }
    let channels = channels.as_int();
    if channels != 1 && channels != 3 {
        errors.push(CheckError::InvalidValue {
            message: format!("{channels} channels"),
            span,
            label: "channels".into(),
            help: Some("`channels: 3` reads RGB (alpha dropped), `channels: 1` greyscale".into()),
        });
        ok = false;
    }
    if target == TargetKind::Float {
        errors.push(CheckError::invalid(
            "an image folder's targets are its classes, not real values",
            span,
            "not for this source",
        ));
        ok = false;
    }
    ok.then_some(DataSource::Images {
        path,
        size: [h as u32, w as u32],
        channels: channels as u32,
    })
}

/// What an image folder gives the checker: its samples' shape, classes
/// and rows, and the class names (a held-out folder must have the same).
pub(super) struct Found {
    pub sample_shape: Vec<i64>,
    pub classes: Vec<String>,
    pub rows: u64,
    pub features: Features,
    /// Images left out under `on_bad_row = skip`.
    pub skipped: crate::dataset::Skipped,
}

/// The sample shape `[channels, height, width]` of an image source.
pub(super) fn sample_shape(source: &DataSource) -> Option<Vec<i64>> {
    match source {
        DataSource::Images { size, channels, .. } => Some(vec![
            i64::from(*channels),
            i64::from(size[0]),
            i64::from(size[1]),
        ]),
        _ => None,
    }
}

/// Lists the folder and decodes the first image of each class.
pub(super) fn probe(
    source: &DataSource,
    limits: &crate::dataset::Limits,
) -> Result<Found, crate::dataset::DataError> {
    let DataSource::Images {
        path,
        size,
        channels,
    } = source
    else {
        unreachable!("probe is called on image sources")
    };
    let (folder, skipped) = images::probe(path, *channels, *size, limits)?;
    Ok(Found {
        skipped,
        sample_shape: sample_shape(source).unwrap_or_default(),
        classes: folder.classes,
        rows: folder.files.len() as u64,
        features: Features::Float,
    })
}
