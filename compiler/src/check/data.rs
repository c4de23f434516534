//! The `data` block: which source, how its samples are laid out, the
//! validation split. With `probe` the data is read at check time, so its
//! width and classes can be checked against the model.

use std::path::Path;

use super::args::{ParamSig, Ty, Value};
use super::settings::{choose, type_error, Settings};
use super::CheckError;
use crate::ast::{DataDef, ExprKind, Setting};
use crate::dataset;
use crate::plan::{BadRows, DataPlan, DataSource, Features, TargetKind, TextEncoding, TokenDtype};
use crate::span::Span;

/// The settings a `data` block accepts.
pub const DATA_KEYS: [&str; 12] = [
    "source",
    "shape",
    "scale",
    "valid",
    "test",
    "shuffle",
    "target",
    "random_crop",
    "horizontal_flip",
    "mean",
    "std",
    "on_bad_row",
];

/// Resolves a `data` block. With `probe` the file is read to learn its
/// width, class count and rows; without, those come from the model later.
pub fn data(
    def: &DataDef,
    options: &super::Options,
    errors: &mut Vec<CheckError>,
    lints: &mut Vec<super::Lint>,
) -> Option<DataPlan> {
    let base_dir = &options.base_dir;
    let settings = Settings::new(
        &format!("data {}", def.name.name),
        def.name.span,
        &def.settings,
        &DATA_KEYS,
        errors,
    );
    let source = settings.require(
        "source",
        "e.g. `source = csv(\"digits.csv.gz\", label: -1)`",
        errors,
    )?;
    let (format, v) = choose(source, "data format", &Format::choices(), errors)?;
    let scale = settings.float("scale", f64::MIN_POSITIVE..f64::INFINITY, 1.0, errors)?;
    let valid_call = settings
        .get("valid")
        .filter(|v| matches!(v.value.kind, ExprKind::Call(_)));
    let valid_fraction = match valid_call {
        Some(_) => 0.0,
        None => settings.float("valid", 0.0..1.0, 0.2, errors)?,
    };
    let shuffle = settings.bool("shuffle", true, errors)?;
    let target = settings.choice_or("target", TargetKind::Class, errors)?;
    let on_bad_row = settings.choice_or("on_bad_row", BadRows::Error, errors)?;
    let options = &super::Options {
        data_limits: dataset::Limits {
            skip_bad_rows: on_bad_row == BadRows::Skip,
            ..options.data_limits.clone()
        },
        ..options.clone()
    };
    let source_plan = source_plan(format, &v, source, target, base_dir, errors)?;
    for raw in format.paths(&v) {
        super::paths::check(
            raw.as_str(),
            base_dir,
            source.value.span,
            options.strict,
            errors,
            lints,
        );
    }
    if target == TargetKind::Float && matches!(source_plan, DataSource::Synthetic { .. }) {
        let span = settings
            .get("target")
            .map_or(source.value.span, |t| t.value.span);
        errors.push(CheckError::invalid(
            "synthetic data has class labels, not real-valued targets",
            span,
            "not for this source",
        ));
        return None;
    }
    let found = probe(
        &source_plan,
        &settings,
        source,
        target,
        scale,
        valid_fraction,
        options,
        errors,
    )?;
    let mut files = if options.probe_data {
        identify(&source_plan, source, base_dir, errors)?
    } else {
        Vec::new()
    };
    let mut found = found;
    found.sample_shape =
        image_shape(&source_plan, &settings, errors)?.unwrap_or(found.sample_shape);
    let mut held_out = |setting: Option<&Setting>| -> Option<Option<DataSource>> {
        let Some(setting) = setting else {
            return Some(None);
        };
        let held = other_source(setting, &source_plan, target, options, errors, lints)?;
        if options.probe_data {
            found = fits_with(found.clone(), &held, setting, target, options, errors)?;
            files.extend(identify(&held, setting, base_dir, errors)?);
        }
        Some(Some(held))
    };
    let valid_source = held_out(valid_call)?;
    let test_source = held_out(settings.get("test"))?;
    let augment = super::augment::read(&settings, &found.sample_shape, &source_plan, errors)?;
    report_skipped(&found, source, lints);
    Some(DataPlan {
        name: def.name.name.clone(),
        files,
        source: source_plan,
        sample_shape: found.sample_shape,
        features: found.features,
        target,
        target_shape: found.target_shape,
        classes: found.classes,
        rows: found.rows,
        scale,
        valid_fraction,
        valid_source,
        test_source,
        shuffle,
        augment,
        on_bad_row,
    })
}

/// An image source's sample shape, `[channels, height, width]`, which a
/// `shape` setting may not change; `None` inside for other sources.
fn image_shape(
    source: &DataSource,
    settings: &Settings<'_>,
    errors: &mut Vec<CheckError>,
) -> Option<Option<Vec<i64>>> {
    let Some(shape) = super::images::sample_shape(source) else {
        return Some(None);
    };
    if let Some(setting) = settings.get("shape") {
        errors.push(CheckError::invalid(
            "an image's shape is [channels, height, width], from the source's `channels` and `size`",
            setting.value.span,
            "not for images",
        ));
        return None;
    }
    Some(Some(shape))
}

/// A warning for each file that left rows out (`on_bad_row = skip`).
fn report_skipped(found: &Probed, source: &Setting, lints: &mut Vec<super::Lint>) {
    for (path, skipped) in &found.skipped {
        if skipped.rows > 0 {
            lints.push(super::Lint::SkippedRows {
                path: path.clone(),
                words: skipped.words(),
                span: source.value.span,
            });
        }
    }
}

/// What the source says before launch: read when `options.probe_data`,
/// else unknown.
#[allow(clippy::too_many_arguments)]
fn probe(
    source_plan: &DataSource,
    settings: &Settings<'_>,
    source: &Setting,
    target: TargetKind,
    scale: f64,
    valid_fraction: f64,
    options: &super::Options,
    errors: &mut Vec<CheckError>,
) -> Option<Probed> {
    let base_dir = &options.base_dir;
    Some(match (options.probe_data, source_plan) {
        (false, _) => Probed::unknown(),
        (
            true,
            DataSource::Tokens {
                path,
                dtype,
                context,
            },
        ) => probe_tokens(
            path,
            *dtype,
            *context,
            valid_fraction,
            source,
            options,
            errors,
        )?,
        (true, DataSource::Images { .. }) => {
            match super::images::probe(source_plan, &options.data_limits) {
                Ok(found) => Probed {
                    sample_shape: found.sample_shape,
                    target_shape: Vec::new(),
                    classes: found.classes.len() as i64,
                    rows: found.rows,
                    features: found.features,
                    class_names: found.classes,
                    skipped: vec![(source_plan.path().to_string(), found.skipped)],
                },
                Err(err) => {
                    errors.push(data_file_error(err.to_string(), source, base_dir));
                    return None;
                }
            }
        }
        (true, _) => {
            let table = match dataset::load(source_plan, target, &options.data_limits) {
                Ok(table) => table,
                Err(err) => {
                    errors.push(data_file_error(err.to_string(), source, base_dir));
                    return None;
                }
            };
            one_class(&table, source, errors);
            let mut found = probe_table(&table, settings, scale, errors)?;
            found.skipped = vec![(source_plan.path().to_string(), table.skipped)];
            found
        }
    })
}

/// `valid = <source>` or `test = <source>`: another file of samples for the
/// same model, read as the training source is (a table: its rows are
/// whole samples, so text and token sources, whose windows and vocabulary
/// belong to their file, and synthetic data, whose blobs belong to their
/// seed, have none).
fn other_source(
    setting: &Setting,
    main: &DataSource,
    target: TargetKind,
    options: &super::Options,
    errors: &mut Vec<CheckError>,
    lints: &mut Vec<super::Lint>,
) -> Option<DataSource> {
    let key = &setting.key.name;
    let not_a_table = |source: &DataSource| {
        matches!(
            source,
            DataSource::Text { .. } | DataSource::Tokens { .. } | DataSource::Synthetic { .. }
        )
    };
    if not_a_table(main) {
        errors.push(CheckError::Unsupported {
            message: format!("`{key} = <source>` with a text, token or synthetic source"),
            span: setting.value.span,
            help: Some(if key == "valid" {
                "hold out a fraction of it: `valid = 0.1`".into()
            } else {
                "a test file is a table of samples (csv, jsonl, npy, idx, safetensors)".into()
            }),
        });
        return None;
    }
    let (format, v) = choose(setting, "data format", &Format::choices(), errors)?;
    let held = source_plan(format, &v, setting, target, &options.base_dir, errors)?;
    let images = |s: &DataSource| super::images::sample_shape(s);
    if images(main) != images(&held) {
        errors.push(CheckError::Unsupported {
            message: format!("`{key}` and the training source must both be image folders of one size and channel count, or neither"),
            span: setting.value.span,
            help: None,
        });
        return None;
    }
    if not_a_table(&held) {
        errors.push(CheckError::Unsupported {
            message: format!("`{key}` from a text, token or synthetic source"),
            span: setting.value.span,
            help: Some(
                "a held-out file is a table of samples (csv, jsonl, npy, idx, safetensors)".into(),
            ),
        });
        return None;
    }
    for raw in format.paths(&v) {
        super::paths::check(
            raw.as_str(),
            &options.base_dir,
            setting.value.span,
            options.strict,
            errors,
            lints,
        );
    }
    Some(held)
}

/// What the training source told, with a held-out source read too: its
/// samples must have the training samples' width and target shape, and the
/// classes are the most either needs.
fn fits_with(
    mut found: Probed,
    held: &DataSource,
    setting: &Setting,
    target: TargetKind,
    options: &super::Options,
    errors: &mut Vec<CheckError>,
) -> Option<Probed> {
    if let DataSource::Images { .. } = held {
        let other = match super::images::probe(held, &options.data_limits) {
            Ok(other) => other,
            Err(err) => {
                errors.push(data_file_error(err.to_string(), setting, &options.base_dir));
                return None;
            }
        };
        if other.classes != found.class_names {
            errors.push(CheckError::DataFile {
                reason: format!(
                    "{}: its classes are not the training folder's ({} here, {} there): class i must be the same folder name in both",
                    held.path(),
                    other.classes.len(),
                    found.class_names.len()
                ),
                span: setting.value.span,
                help: None,
            });
            return None;
        }
        return Some(found);
    }
    let table = match dataset::load(held, target, &options.data_limits) {
        Ok(table) => table,
        Err(err) => {
            errors.push(data_file_error(err.to_string(), setting, &options.base_dir));
            return None;
        }
    };
    let width: i64 = found.sample_shape.iter().product();
    let problem = if table.feature_count as i64 != width {
        Some(format!(
            "its samples have {} features, the training samples {width}",
            table.feature_count
        ))
    } else if table.targets.shape() != found.target_shape.as_slice() {
        Some(format!(
            "its targets have shape {:?} per sample, the training targets {:?}",
            table.targets.shape(),
            found.target_shape
        ))
    } else {
        None
    };
    if let Some(reason) = problem {
        errors.push(CheckError::DataFile {
            reason: format!("{}: {reason}", held.path()),
            span: setting.value.span,
            help: None,
        });
        return None;
    }
    found.classes = found.classes.max(table.classes());
    found.skipped.push((held.path().to_string(), table.skipped));
    Some(found)
}

/// The identity of each of the source's files, which a run checks before
/// it reads them.
fn identify(
    source_plan: &DataSource,
    source: &Setting,
    base_dir: &Path,
    errors: &mut Vec<CheckError>,
) -> Option<Vec<crate::plan::DataFile>> {
    let mut files = Vec::new();
    for path in source_plan.files() {
        match dataset::read::fingerprint(Path::new(path)) {
            Ok((bytes, sample_hash)) => files.push(crate::plan::DataFile {
                path: path.to_string(),
                bytes,
                sample_hash,
            }),
            Err(message) => {
                errors.push(data_file_error(
                    format!("{path}: {message}"),
                    source,
                    base_dir,
                ));
                return None;
            }
        }
    }
    Some(files)
}

/// The kinds of data source, the calls of `source = ...`.
#[derive(Clone, Copy)]
enum Format {
    Csv,
    Jsonl,
    Parquet,
    HfDataset,
    Images,
    Npy,
    Idx,
    Safetensors,
    Text,
    Tokens,
    Synthetic,
}

impl Format {
    /// Each format's name and signature, for [`choose`].
    fn choices() -> [(&'static str, Format, Vec<ParamSig>); 11] {
        [
            (
                "csv",
                Format::Csv,
                vec![
                    ParamSig::required("path", Ty::Str),
                    ParamSig::optional("label", Ty::Int, Value::Int(-1)),
                    ParamSig::optional("header", Ty::Bool, Value::Bool(false)),
                ],
            ),
            (
                "jsonl",
                Format::Jsonl,
                vec![
                    ParamSig::required("path", Ty::Str),
                    ParamSig::optional("features", Ty::StrOrList, Value::Str("x".into())),
                    ParamSig::optional("label", Ty::Str, Value::Str("y".into())),
                ],
            ),
            (
                "parquet",
                Format::Parquet,
                vec![
                    ParamSig::required("path", Ty::Str),
                    ParamSig::optional("features", Ty::StrOrList, Value::Str("x".into())),
                    ParamSig::optional("label", Ty::Str, Value::Str("y".into())),
                ],
            ),
            (
                "hf_dataset",
                Format::HfDataset,
                vec![
                    ParamSig::required("path", Ty::Str),
                    ParamSig::optional("features", Ty::StrOrList, Value::Str("x".into())),
                    ParamSig::optional("label", Ty::Str, Value::Str("label".into())),
                    ParamSig::optional("split", Ty::Str, Value::Str(String::new())),
                ],
            ),
            (
                "images",
                Format::Images,
                vec![
                    ParamSig::required("path", Ty::Str),
                    ParamSig::required("size", Ty::IntOrPair),
                    ParamSig::optional("channels", Ty::Int, Value::Int(3)),
                ],
            ),
            (
                "npy",
                Format::Npy,
                vec![
                    ParamSig::required("features", Ty::Str),
                    ParamSig::required("labels", Ty::Str),
                ],
            ),
            (
                "idx",
                Format::Idx,
                vec![
                    ParamSig::required("images", Ty::Str),
                    ParamSig::required("labels", Ty::Str),
                ],
            ),
            (
                "safetensors",
                Format::Safetensors,
                vec![
                    ParamSig::required("path", Ty::Str),
                    ParamSig::optional("features", Ty::Str, Value::Str("features".into())),
                    ParamSig::optional("labels", Ty::Str, Value::Str("labels".into())),
                ],
            ),
            (
                "text",
                Format::Text,
                vec![
                    ParamSig::required("path", Ty::Str),
                    ParamSig::required("context", Ty::Int),
                    ParamSig::optional("encoding", Ty::Str, Value::Str("chars".into())),
                ],
            ),
            (
                "tokens",
                Format::Tokens,
                vec![
                    ParamSig::required("path", Ty::Str),
                    ParamSig::required("context", Ty::Int),
                    ParamSig::optional("dtype", Ty::Str, Value::Str("uint16".into())),
                ],
            ),
            (
                "synthetic",
                Format::Synthetic,
                vec![
                    ParamSig::required("rows", Ty::Int),
                    ParamSig::required("features", Ty::Int),
                    ParamSig::required("classes", Ty::Int),
                    ParamSig::optional("seed", Ty::Int, Value::Int(0)),
                ],
            ),
        ]
    }

    /// The values of `v` that name files, as written.
    fn paths(self, v: &[Value]) -> &[Value] {
        match self {
            Format::Csv
            | Format::Jsonl
            | Format::Parquet
            | Format::HfDataset
            | Format::Images
            | Format::Safetensors
            | Format::Text
            | Format::Tokens => &v[..1],
            Format::Npy | Format::Idx => &v[..2],
            Format::Synthetic => &[],
        }
    }
}

/// The source's plan from its bound values `v`; paths are relative to the
/// .dtl file.
fn source_plan(
    format: Format,
    v: &[Value],
    source: &Setting,
    target: TargetKind,
    base_dir: &Path,
    errors: &mut Vec<CheckError>,
) -> Option<DataSource> {
    let file = |value: &Value| {
        super::paths::normalize(&base_dir.join(value.as_str()))
            .display()
            .to_string()
    };
    Some(match format {
        Format::Csv => DataSource::Csv {
            path: file(&v[0]),
            label_column: v[1].as_int(),
            header: v[2].as_bool(),
        },
        Format::Jsonl => {
            let (features, label) = named_columns(&v[1], &v[2], source, errors)?;
            DataSource::Jsonl {
                path: file(&v[0]),
                features,
                label,
            }
        }
        Format::Parquet => {
            let (features, label) = named_columns(&v[1], &v[2], source, errors)?;
            DataSource::Parquet {
                path: file(&v[0]),
                features,
                label,
            }
        }
        Format::HfDataset => {
            let (features, label) = named_columns(&v[1], &v[2], source, errors)?;
            DataSource::HfDataset {
                path: file(&v[0]),
                split: v[3].as_str().to_string(),
                features,
                label,
            }
        }
        Format::Images => super::images::source(file(&v[0]), &v[1], &v[2], source, target, errors)?,
        Format::Npy => DataSource::Npy {
            features: file(&v[0]),
            labels: file(&v[1]),
        },
        Format::Idx => DataSource::Idx {
            images: file(&v[0]),
            labels: file(&v[1]),
        },
        Format::Safetensors => DataSource::Safetensors {
            path: file(&v[0]),
            features: v[1].as_str().to_string(),
            labels: v[2].as_str().to_string(),
        },
        Format::Text => text_source(file(&v[0]), &v[1], &v[2], source, target, errors)?,
        Format::Tokens => tokens_source(file(&v[0]), &v[1], &v[2], source, target, errors)?,
        Format::Synthetic => synthetic_source(v, source, errors)?,
    })
}

/// The `features: "x" | ["a", "b"]` and `label: "y"` of a source that
/// reads named fields or columns: the label may not be one of the
/// features, nor a feature named twice.
fn named_columns(
    features: &Value,
    label: &Value,
    source: &Setting,
    errors: &mut Vec<CheckError>,
) -> Option<(Vec<String>, String)> {
    let features = features.as_strings();
    let label = label.as_str().to_string();
    let twice = features
        .iter()
        .enumerate()
        .find(|(i, f)| features[..*i].contains(f));
    let problem = if features.contains(&label) {
        Some(format!("`{label}` is both a feature and the label"))
    } else {
        twice.map(|(_, f)| format!("the feature `{f}` is named twice"))
    };
    if let Some(message) = problem {
        errors.push(CheckError::invalid(message, source.value.span, "here"));
        return None;
    }
    Some((features, label))
}

/// `synthetic(rows: 2000, features: 16, classes: 4, seed: 7)`, within
/// bounds that keep generating it cheap.
fn synthetic_source(
    v: &[Value],
    source: &Setting,
    errors: &mut Vec<CheckError>,
) -> Option<DataSource> {
    let (rows, features, classes, seed) =
        (v[0].as_int(), v[1].as_int(), v[2].as_int(), v[3].as_int());
    let sane = (1..=10_000_000).contains(&rows)
        && (1..=1_000_000).contains(&features)
        && (2..=100_000).contains(&classes)
        && seed >= 0
        && rows.saturating_mul(features) <= 1 << 30;
    if !sane {
        errors.push(CheckError::InvalidValue {
            message: "synthetic data needs rows ≥ 1, features ≥ 1, classes ≥ 2, seed ≥ 0 and at most 2^30 values".into(),
            span: source.value.span,
            label: "out of range".into(),
            help: None,
        });
        return None;
    }
    Some(DataSource::Synthetic {
        rows: rows as u64,
        features: features as u64,
        classes: classes as u64,
        seed: seed as u64,
    })
}

/// What reading the data at check time tells: nothing without `probe`.
#[derive(Clone)]
struct Probed {
    sample_shape: Vec<i64>,
    target_shape: Vec<i64>,
    classes: i64,
    rows: u64,
    features: Features,
    /// An image folder's classes, in order (empty for other sources).
    class_names: Vec<String>,
    /// Rows left out under `on_bad_row = skip`, by file.
    skipped: Vec<(String, dataset::Skipped)>,
}

impl Probed {
    fn unknown() -> Probed {
        Probed {
            sample_shape: Vec::new(),
            target_shape: Vec::new(),
            classes: 0,
            rows: 0,
            features: Features::Unknown,
            class_names: Vec::new(),
            skipped: Vec::new(),
        }
    }
}

/// A data file that could not be read, with where paths start from.
fn data_file_error(reason: String, source: &Setting, base_dir: &Path) -> CheckError {
    CheckError::DataFile {
        reason,
        span: source.value.span,
        help: Some(if base_dir.as_os_str().is_empty() {
            "paths are relative to the .dtl file's folder (here the current folder)".to_string()
        } else {
            format!(
                "paths are relative to the .dtl file's folder ({})",
                base_dir.display()
            )
        }),
    }
}

/// Reads a token file's length and largest id: its windows of `context`
/// tokens must leave some for training, and every id must be exact in
/// float32.
fn probe_tokens(
    path: &str,
    dtype: TokenDtype,
    context: u64,
    valid_fraction: f64,
    source: &Setting,
    options: &super::Options,
    errors: &mut Vec<CheckError>,
) -> Option<Probed> {
    let found = match dataset::probe_tokens(path, dtype, &options.data_limits) {
        Ok(found) => found,
        Err(err) => {
            errors.push(data_file_error(err.to_string(), source, &options.base_dir));
            return None;
        }
    };
    let windows = found.tokens.saturating_sub(1) / context;
    let split = dataset::TokenSplit::new(found.tokens, context, |w| {
        (w as f64 * valid_fraction).round() as u64
    });
    let problem = if windows == 0 {
        Some(format!(
            "{} tokens make no window of {context} tokens and its next token",
            found.tokens
        ))
    } else if split.train_windows == 0 {
        Some(format!(
            "all {windows} windows of {context} tokens are held out (valid = {valid_fraction}); none is left for training"
        ))
    } else if found.max >= 1 << 24 {
        Some(format!(
            "token {} (at token {}) is 2^24 or more: ids are carried as float32, exact only below 2^24",
            found.max, found.max_at
        ))
    } else {
        None
    };
    if let Some(reason) = problem {
        errors.push(CheckError::DataFile {
            reason: format!("{path}: {reason}"),
            span: source.value.span,
            help: None,
        });
        return None;
    }
    Some(Probed {
        sample_shape: vec![context as i64],
        target_shape: vec![context as i64],
        classes: found.max as i64 + 1,
        rows: windows,
        features: Features::Indices {
            max: found.max as u64,
        },
        class_names: Vec::new(),
        skipped: Vec::new(),
    })
}

/// Each source format's name and signature (for editors).
pub(super) fn source_signatures() -> impl Iterator<Item = (&'static str, Vec<ParamSig>)> {
    Format::choices()
        .into_iter()
        .map(|(name, _, sig)| (name, sig))
}

/// Class labels that are all the same value over two rows or more:
/// nothing to learn, and most often the label setting naming a column
/// that is not the label (a constant pixel). An error at `label:` (or at
/// the source, whose default label it is); the other checks go on.
fn one_class(table: &dataset::Table, source: &Setting, errors: &mut Vec<CheckError>) {
    let dataset::Targets::Classes { labels, .. } = &table.targets else {
        return;
    };
    let Some(&first) = labels.first() else {
        return;
    };
    if table.rows < 2 || labels.iter().any(|&l| l != first) {
        return;
    }
    let label_arg = match &source.value.kind {
        ExprKind::Call(call) => call
            .args
            .iter()
            .find(|a| a.name.as_ref().is_some_and(|n| n.name == "label")),
        _ => None,
    };
    let (span, label) = match label_arg {
        Some(arg) => (arg.span, "this column"),
        None => (source.value.span, "its default label column"),
    };
    errors.push(CheckError::InvalidValue {
        message: format!(
            "every one of the {} rows has the label {first}: a single class, nothing to learn",
            table.rows
        ),
        span,
        label: label.into(),
        help: Some(
            "point `label:` at the column that holds the classes (`label: -1` is the last); a column that is the same in every row is a feature, often a constant pixel".into(),
        ),
    });
}

/// What a table read at check time says, laid out by the `shape` setting
/// when there is one.
fn probe_table(
    table: &dataset::Table,
    settings: &Settings<'_>,
    scale: f64,
    errors: &mut Vec<CheckError>,
) -> Option<Probed> {
    let mut sample_shape = table.sample_shape.clone();
    if let Some((shape, span)) = sample_shape_setting(settings, errors) {
        let size: i64 = shape.iter().product();
        if size != table.feature_count as i64 {
            errors.push(CheckError::InvalidValue {
                message: format!(
                    "shape {shape:?} holds {size} values, but each sample has {}",
                    table.feature_count
                ),
                span,
                label: "does not match the data".into(),
                help: None,
            });
            return None;
        }
        sample_shape = shape;
    }
    Some(Probed {
        sample_shape,
        target_shape: table.targets.shape().to_vec(),
        classes: table.classes(),
        rows: table.rows as u64,
        features: feature_kind(&table.features, scale),
        class_names: Vec::new(),
        skipped: Vec::new(),
    })
}

/// Indices when every feature, scaled, is a whole number from 0 up (below
/// 2^24, where float32 holds every integer); real values otherwise.
fn feature_kind(values: &[f32], scale: f64) -> Features {
    let mut max = 0.0f64;
    for &v in values {
        let v = v as f64 * scale;
        if !(v >= 0.0 && v.fract() == 0.0 && v < (1u64 << 24) as f64) {
            return Features::Float;
        }
        max = max.max(v);
    }
    Features::Indices { max: max as u64 }
}

/// `text("book.txt", context: 64, encoding: "chars")`.
fn text_source(
    path: String,
    context: &Value,
    encoding: &Value,
    source: &Setting,
    target: TargetKind,
    errors: &mut Vec<CheckError>,
) -> Option<DataSource> {
    let encoding = match encoding.as_str() {
        "chars" => TextEncoding::Chars,
        "bytes" => TextEncoding::Bytes,
        other => {
            errors.push(CheckError::InvalidValue {
                message: format!("unknown text encoding `{other}`"),
                span: source.value.span,
                label: "not an encoding".into(),
                help: Some("use `encoding: \"chars\"` or `encoding: \"bytes\"`".into()),
            });
            return None;
        }
    };
    let context = next_token_context(context, "text predicts", source, target, errors)?;
    Some(DataSource::Text {
        path,
        encoding,
        context,
    })
}

/// The context of a next-token source (`text`, `tokens`): 1 to 2^20
/// tokens, and class targets; `what` begins the message for a float target.
fn next_token_context(
    context: &Value,
    what: &str,
    source: &Setting,
    target: TargetKind,
    errors: &mut Vec<CheckError>,
) -> Option<u64> {
    let context = context.as_int();
    if !(1..=1 << 20).contains(&context) {
        errors.push(CheckError::invalid(
            format!("context must be between 1 and 2^20 tokens, got {context}"),
            source.value.span,
            "out of range",
        ));
        return None;
    }
    if target == TargetKind::Float {
        errors.push(CheckError::invalid(
            format!("{what} the next token, a class: `target = float` does not apply"),
            source.value.span,
            "class targets",
        ));
        return None;
    }
    Some(context as u64)
}

/// `tokens("train.bin", context: 1024, dtype: "uint16")`.
fn tokens_source(
    path: String,
    context: &Value,
    dtype: &Value,
    source: &Setting,
    target: TargetKind,
    errors: &mut Vec<CheckError>,
) -> Option<DataSource> {
    let dtype = match dtype.as_str() {
        "uint16" => TokenDtype::Uint16,
        "uint32" => TokenDtype::Uint32,
        other => {
            errors.push(CheckError::InvalidValue {
                message: format!("unknown token dtype `{other}`"),
                span: source.value.span,
                label: "not a dtype".into(),
                help: Some(
                    "use `dtype: \"uint16\"` (vocabularies up to 65,536, as GPT-2's) or `dtype: \"uint32\"`".into(),
                ),
            });
            return None;
        }
    };
    let context = next_token_context(context, "tokens predict", source, target, errors)?;
    Some(DataSource::Tokens {
        path,
        dtype,
        context,
    })
}

/// `shape = [1, 8, 8]`: how each row's features are laid out.
fn sample_shape_setting(
    settings: &Settings<'_>,
    errors: &mut Vec<CheckError>,
) -> Option<(Vec<i64>, Span)> {
    let setting = settings.get("shape")?;
    let dims: Option<Vec<i64>> = match &setting.value.kind {
        ExprKind::List(items) => items
            .iter()
            .map(|e| match e.kind {
                ExprKind::Int(n) if n >= 1 => Some(n),
                _ => None,
            })
            .collect(),
        _ => None,
    };
    match dims {
        Some(dims) if !dims.is_empty() => Some((dims, setting.value.span)),
        _ => {
            errors.push(type_error(
                &setting.value,
                "a list of sizes ≥ 1, e.g. `[1, 8, 8]`",
                "shape",
            ));
            None
        }
    }
}
