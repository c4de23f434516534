//! Check: the typed syntax tree → a resolved [`Experiment`], or every error
//! found. Names are resolved, module instances expanded with shapes
//! inferred, settings typed and ranged, and the parts checked against each
//! other (data width against the model input, model output against the
//! label space, batch arithmetic).

mod args;
mod data;
mod error;
mod library;
mod lint;
mod model;
mod parallel;
mod settings;
pub(crate) mod suggest;
mod tests;

use std::collections::BTreeMap;
use std::path::PathBuf;

pub use error::CheckError;
pub use library::builtin_names;
pub use lint::Lint;

use crate::ast::{DataDef, ExprKind, File, Forward, Item, ModuleDef, ModuleKind, SettingsBlock};
use crate::plan::{shape_to_string, DataPlan, Dim, ModelPlan, TrainPlan};
use crate::span::Span;
use settings::Settings;

/// Where the checker looks for files and what it may read.
#[derive(Debug, Clone)]
pub struct Options {
    /// Folder that relative data paths start from: the `.dtl` file's folder.
    pub base_dir: PathBuf,
    /// Read data files to check their shape against the model.
    pub probe_data: bool,
    /// World sizes to check the parallel configuration against
    /// (`dtl check --world 4,8,64`).
    pub world: Vec<u64>,
    /// `--set PATH=VALUE` overrides, applied before checking.
    pub overrides: Vec<crate::overrides::Override>,
}

/// Everything a checked file says, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Experiment {
    pub model: ModelPlan,
    pub data: DataPlan,
    pub train: TrainPlan,
}

/// The settings a `train` block accepts.
pub const TRAIN_KEYS: [&str; 14] = [
    "model",
    "data",
    "loss",
    "optimizer",
    "schedule",
    "warmup",
    "steps",
    "micro_batch",
    "accumulate",
    "clip",
    "seed",
    "eval_every",
    "epochs",
    "init",
];

/// Everything the checker found in one file.
pub struct Checked {
    /// `Some` when there are no errors.
    pub experiment: Option<Experiment>,
    pub errors: Vec<CheckError>,
    pub lints: Vec<Lint>,
    /// The module tests whose shape claims hold.
    pub tests: Vec<crate::plan::TestPlan>,
}

pub fn check(file: &File, options: &Options) -> Checked {
    let mut errors = Vec::new();
    let mut lints = Vec::new();
    let modules = collect_named(file, &mut errors);
    let data_defs = collect_data(file, &mut errors);
    let is_library = file.items.iter().any(|item| matches!(item, Item::Test(_)));
    let train = single_block(file, is_library, &mut errors);
    let parallel_blocks = blocks_of(file, "parallel", &mut errors);
    let parallel = parallel_blocks
        .first()
        .map(|block| (*block, parallel::resolve(block, &mut errors)));
    let experiment = train.and_then(|train| {
        check_train(
            train,
            &modules,
            &data_defs,
            options,
            &mut errors,
            &mut lints,
        )
    });
    if let (Some((block, Some(spec))), Some(experiment)) = (&parallel, &experiment) {
        let data = &experiment.data;
        let train_rows = (data.rows > 0)
            .then(|| data.rows - (data.rows as f64 * data.valid_fraction).round() as u64);
        let context = parallel::Context {
            model: &experiment.model,
            train: &experiment.train,
            train_rows,
            worlds: &options.world,
        };
        parallel::check(spec, block, &context, &mut errors, &mut lints);
    }
    let test_defs: Vec<&crate::ast::TestDef> = file
        .items
        .iter()
        .filter_map(|item| match item {
            Item::Test(test) => Some(test),
            _ => None,
        })
        .collect();
    let tests = tests::check_tests(&test_defs, &modules, &mut errors, &mut lints);
    errors.sort_by_key(|e| (e.span(), e.to_string()));
    errors.dedup();
    lints.sort_by_key(|l| (l.span(), l.to_string()));
    lints.dedup();
    let experiment = if errors.is_empty() { experiment } else { None };
    Checked {
        experiment,
        errors,
        lints,
        tests,
    }
}

fn collect_named<'a>(
    file: &'a File,
    errors: &mut Vec<CheckError>,
) -> BTreeMap<String, &'a ModuleDef> {
    let mut modules: BTreeMap<String, &ModuleDef> = BTreeMap::new();
    for item in &file.items {
        if let Item::Module(def) = item {
            if let Some(first) = modules.get(&def.name.name) {
                errors.push(CheckError::Duplicate {
                    kind: "module",
                    name: def.name.name.clone(),
                    span: def.name.span,
                    first: first.name.span,
                });
            } else {
                modules.insert(def.name.name.clone(), def);
            }
        }
    }
    modules
}

fn collect_data<'a>(file: &'a File, errors: &mut Vec<CheckError>) -> BTreeMap<String, &'a DataDef> {
    let mut defs: BTreeMap<String, &DataDef> = BTreeMap::new();
    for item in &file.items {
        if let Item::Data(def) = item {
            if let Some(first) = defs.get(&def.name.name) {
                errors.push(CheckError::Duplicate {
                    kind: "data source",
                    name: def.name.name.clone(),
                    span: def.name.span,
                    first: first.name.span,
                });
            } else {
                defs.insert(def.name.name.clone(), def);
            }
        }
    }
    defs
}

/// The `train` or `parallel` blocks of a file, in order; every one after the
/// first is reported as a duplicate.
fn blocks_of<'a>(
    file: &'a File,
    keyword: &str,
    errors: &mut Vec<CheckError>,
) -> Vec<&'a SettingsBlock> {
    let blocks: Vec<&SettingsBlock> = file
        .items
        .iter()
        .filter_map(|item| match (item, keyword) {
            (Item::Train(block), "train") | (Item::Parallel(block), "parallel") => Some(block),
            _ => None,
        })
        .collect();
    for extra in blocks.iter().skip(1) {
        errors.push(CheckError::Duplicate {
            kind: "block",
            name: keyword.into(),
            span: extra.keyword,
            first: blocks[0].keyword,
        });
    }
    blocks
}

/// The one `train` block. A file without one is fine when it has module
/// tests: it is a library that `dtl test` runs.
fn single_block<'a>(
    file: &'a File,
    is_library: bool,
    errors: &mut Vec<CheckError>,
) -> Option<&'a SettingsBlock> {
    let blocks = blocks_of(file, "train", errors);
    if blocks.is_empty() && !is_library {
        errors.push(CheckError::MissingItem {
            message: "no `train` block: nothing says what to train".into(),
            span: Span::new(0, 0),
            help: Some("add `train { model = ...; data = ...; loss = cross_entropy; optimizer = adamw(lr: 1e-3); steps = 100; micro_batch = 32 }`".into()),
        });
    }
    blocks.first().copied()
}

fn check_train(
    block: &SettingsBlock,
    modules: &BTreeMap<String, &ModuleDef>,
    data_defs: &BTreeMap<String, &DataDef>,
    options: &Options,
    errors: &mut Vec<CheckError>,
    lints: &mut Vec<Lint>,
) -> Option<Experiment> {
    let s = Settings::new("train", block.keyword, &block.settings, &TRAIN_KEYS, errors);
    let model_def = resolve_model(&s, modules, errors);
    let data = resolve_data(&s, data_defs, options, errors);
    let loss = s
        .require("loss", "e.g. `loss = cross_entropy`", errors)
        .and_then(|x| settings::loss(x, errors));
    let optimizer = s
        .require("optimizer", "e.g. `optimizer = adamw(lr: 3e-3)`", errors)
        .and_then(|x| settings::optimizer(x, errors));
    let steps = match (s.get("steps"), s.get("epochs")) {
        (Some(_), Some(epochs)) => {
            errors.push(CheckError::invalid(
                "give `steps` or `epochs`, not both",
                epochs.key.span,
                "choose one",
            ));
            None
        }
        (None, None) => {
            s.require("steps", "e.g. `steps = 500`, or `epochs = 10`", errors);
            None
        }
        (Some(_), None) => s.int("steps", 1, None, errors),
        // Epochs become steps once the data's size is known, below.
        (None, Some(_)) => s.int("epochs", 1, None, errors).map(|_| 0),
    };
    s.require("micro_batch", "e.g. `micro_batch = 32`", errors);
    let micro_batch = s.int("micro_batch", 1, None, errors);
    let accumulate = s.int("accumulate", 1, Some(1), errors);
    let clip = match s.get("clip") {
        Some(x) => settings::clip(x, errors),
        None => Some(None),
    };
    let seed = s.int("seed", 0, Some(0), errors);
    let eval_every = s.int("eval_every", 0, Some(0), errors);
    let warmup = s.int("warmup", 0, Some(0), errors);
    let schedule = warmup.and_then(|w| {
        let warmup_span = s.get("warmup").map(|x| x.value.span);
        settings::schedule(
            s.get("schedule"),
            w as u64,
            steps.map(|n| n as u64),
            warmup_span,
            errors,
        )
    });

    let model = model_def.and_then(|def| {
        let mut elaborator = model::Elaborator::new(modules);
        let model = elaborator.elaborate_model(def);
        errors.append(&mut elaborator.errors);
        lints.append(&mut elaborator.lints);
        if model.is_some() {
            unused_modules(modules, def, &elaborator.used_modules, lints);
        }
        model.map(|m| (m, def))
    });
    if let (Some(optimizer), Some(setting)) = (&optimizer, s.get("optimizer")) {
        learning_rate_lint(optimizer, setting.value.span, lints);
    }
    if let (Some((model, _)), Some(None)) = (&model, &clip) {
        let layers = model.nodes.iter().filter(|n| has_weights(&n.op)).count();
        if layers >= DEEP_MODEL_LAYERS {
            lints.push(Lint::NoClipping {
                layers,
                span: block.keyword,
            });
        }
    }
    let (model, def) = model?;
    let mut data = data?;
    check_model_against_data(&model, def, &mut data, &s, options, errors)?;
    let (micro_batch, accumulate) = (micro_batch? as u64, accumulate? as u64);
    let train_rows = data.rows - (data.rows as f64 * data.valid_fraction).round() as u64;
    if data.rows > 0 && micro_batch > train_rows {
        errors.push(CheckError::InvalidValue {
            message: format!(
                "micro_batch {micro_batch} is larger than the {train_rows} training rows"
            ),
            span: s.get("micro_batch").map_or(block.keyword, |x| x.value.span),
            label: "more rows than the data has".into(),
            help: Some(format!(
                "the data `{}` has {} rows, {} of them held out",
                data.name,
                data.rows,
                data.rows - train_rows
            )),
        });
        return None;
    }
    let steps = match (steps?, s.get("epochs")) {
        (0, Some(setting)) => steps_for_epochs(setting, &data, micro_batch, accumulate, errors)?,
        (steps, _) => steps as u64,
    };
    let init = init_weights(&s, options, errors)?;
    let train = TrainPlan {
        loss: loss?,
        optimizer: optimizer?,
        schedule: schedule?,
        steps,
        micro_batch,
        accumulate,
        global_batch: micro_batch * accumulate,
        clip: clip?,
        seed: seed? as u64,
        eval_every: eval_every? as u64,
        init,
    };
    Some(Experiment { model, data, train })
}

fn resolve_model<'a>(
    s: &Settings<'_>,
    modules: &BTreeMap<String, &'a ModuleDef>,
    errors: &mut Vec<CheckError>,
) -> Option<&'a ModuleDef> {
    s.require(
        "model",
        "e.g. `model = Net`, naming a `model Net { ... }`",
        errors,
    );
    let name = s.name("model", errors)?;
    match modules.get(&name.name) {
        Some(def) if def.kind == ModuleKind::Model => Some(def),
        Some(_) => {
            errors.push(CheckError::TypeMismatch {
                expected: "a `model`".into(),
                found: format!("the module `{}`", name.name),
                span: name.span,
                help: Some(format!(
                    "declare it as `model {}` or write `model Net {{ forward(...) {{ x |> {}(...) }} }}`",
                    name.name, name.name
                )),
            });
            None
        }
        None => {
            let models = modules
                .values()
                .filter(|m| m.kind == ModuleKind::Model)
                .map(|m| m.name.name.as_str());
            errors.push(CheckError::UnknownName {
                kind: "model",
                name: name.name.clone(),
                span: name.span,
                help: suggest::did_you_mean(&name.name, models),
            });
            None
        }
    }
}

fn resolve_data(
    s: &Settings<'_>,
    data_defs: &BTreeMap<String, &DataDef>,
    options: &Options,
    errors: &mut Vec<CheckError>,
) -> Option<DataPlan> {
    s.require(
        "data",
        "e.g. `data = digits`, naming a `data digits { ... }`",
        errors,
    );
    let name = s.name("data", errors)?;
    match data_defs.get(&name.name) {
        Some(def) => data::data(def, &options.base_dir, options.probe_data, errors),
        None => {
            errors.push(CheckError::UnknownName {
                kind: "data source",
                name: name.name.clone(),
                span: name.span,
                help: suggest::did_you_mean(&name.name, data_defs.keys().map(String::as_str)),
            });
            None
        }
    }
}

/// The data's features must be the model's input and the model's output must
/// have one score per class. Without a probed file the data takes its shape
/// from the model.
fn check_model_against_data(
    model: &ModelPlan,
    def: &ModuleDef,
    data: &mut DataPlan,
    s: &Settings<'_>,
    options: &Options,
    errors: &mut Vec<CheckError>,
) -> Option<()> {
    let forward: &Forward = def.forwards.first()?;
    let sample: Vec<Dim> = model.input.iter().skip(1).cloned().collect();
    let output_classes = match model.output.as_slice() {
        [Dim::Symbol(_), Dim::Size(c)] => *c,
        _ => {
            errors.push(CheckError::ShapeMismatch {
                expected: "[B, classes]".into(),
                found: shape_to_string(&model.output),
                span: forward.output_shape.span,
                what: "cross_entropy needs one score per class".into(),
                help: None,
            });
            return None;
        }
    };
    if !matches!(model.input.first(), Some(Dim::Symbol(_))) {
        errors.push(CheckError::ShapeMismatch {
            expected: "a symbolic batch dimension first, e.g. [B, 64]".into(),
            found: shape_to_string(&model.input),
            span: forward.input_shape.span,
            what: "the batch dimension".into(),
            help: None,
        });
        return None;
    }
    if !options.probe_data {
        data.sample_shape = sample
            .iter()
            .map(|d| if let Dim::Size(n) = d { *n } else { 0 })
            .collect();
        data.classes = output_classes;
        return Some(());
    }
    let expected: Vec<Dim> = data.sample_shape.iter().map(|n| Dim::Size(*n)).collect();
    if sample != expected {
        let mut full = vec![model.input[0].clone()];
        full.extend(expected);
        errors.push(CheckError::ShapeMismatch {
            expected: shape_to_string(&full),
            found: shape_to_string(&model.input),
            span: forward.input_shape.span,
            what: format!(
                "data `{}` gives {} per batch",
                data.name,
                shape_to_string(&full)
            ),
            help: Some(format!(
                "each row of `{}` has {} features",
                data.name,
                data.sample_shape.iter().product::<i64>()
            )),
        });
        return None;
    }
    if output_classes != data.classes {
        let span = s
            .get("loss")
            .map_or(forward.output_shape.span, |_| forward.output_shape.span);
        errors.push(CheckError::ShapeMismatch {
            expected: format!("[{}, {}]", model.output[0], data.classes),
            found: shape_to_string(&model.output),
            span,
            what: format!("data `{}` has {} classes", data.name, data.classes),
            help: Some(format!(
                "make the last layer produce {} outputs",
                data.classes
            )),
        });
        return None;
    }
    Some(())
}

/// From this many layers with weights on, training without clipping warns.
const DEEP_MODEL_LAYERS: usize = 8;

fn has_weights(op: &crate::plan::Op) -> bool {
    use crate::plan::Op::*;
    matches!(
        op,
        Linear { .. } | Conv1d { .. } | Conv2d { .. } | Attention { .. } | Embedding { .. }
    )
}

fn unused_modules(
    modules: &BTreeMap<String, &ModuleDef>,
    trained: &ModuleDef,
    used: &std::collections::BTreeSet<String>,
    lints: &mut Vec<Lint>,
) {
    for def in modules.values() {
        let unused = match def.kind {
            ModuleKind::Module => !used.contains(&def.name.name),
            ModuleKind::Model => def.name.name != trained.name.name,
        };
        if unused {
            let (kind, help) = match def.kind {
                ModuleKind::Module => ("module", None),
                ModuleKind::Model => (
                    "model",
                    Some(format!(
                        "only the model named in `train` (`{}`) is trained",
                        trained.name.name
                    )),
                ),
            };
            lints.push(Lint::UnusedModule {
                kind,
                name: def.name.name.clone(),
                span: def.name.span,
                help,
            });
        }
    }
}

/// Rates far outside what each optimizer is normally run with are usually
/// typos (`3e3` for `3e-3`).
fn learning_rate_lint(optimizer: &crate::plan::Optimizer, span: Span, lints: &mut Vec<Lint>) {
    use crate::plan::Optimizer::*;
    let lr = optimizer.lr();
    let (name, low, high, range) = match optimizer {
        Sgd { .. } => ("sgd", 1e-5, 2.0, "1e-5 to 2"),
        Adam { .. } => ("adam", 1e-6, 0.1, "1e-6 to 0.1"),
        AdamW { .. } => ("adamw", 1e-6, 0.1, "1e-6 to 0.1"),
    };
    if lr < low || lr > high {
        lints.push(Lint::LearningRate {
            lr,
            optimizer: name,
            range,
            span,
            help: Some(if lr > high {
                "is an exponent's minus sign missing?".into()
            } else {
                "training this slowly rarely gets anywhere".into()
            }),
        });
    }
}

/// `epochs = N`: enough optimizer steps to see every full micro-batch of the
/// training rows N times, ⌈N · ⌊rows / micro_batch⌋ / accumulate⌉.
fn steps_for_epochs(
    setting: &crate::ast::Setting,
    data: &DataPlan,
    micro_batch: u64,
    accumulate: u64,
    errors: &mut Vec<CheckError>,
) -> Option<u64> {
    let ExprKind::Int(epochs) = setting.value.kind else {
        return None;
    };
    if data.rows == 0 {
        errors.push(CheckError::InvalidValue {
            message: "`epochs` needs the number of rows, which is read from the data".into(),
            span: setting.span,
            label: "unknown size".into(),
            help: Some("drop --no-data, or give `steps` instead".into()),
        });
        return None;
    }
    let train_rows = data.rows - (data.rows as f64 * data.valid_fraction).round() as u64;
    let batches = train_rows / micro_batch;
    if batches == 0 {
        errors.push(CheckError::invalid(
            format!(
                "an epoch of {train_rows} training rows holds no full micro_batch of {micro_batch}"
            ),
            setting.span,
            "no steps",
        ));
        return None;
    }
    Some((epochs as u64 * batches).div_ceil(accumulate))
}

/// `init = "weights.safetensors"`: initial weights, relative to the file.
fn init_weights(
    s: &Settings<'_>,
    options: &Options,
    errors: &mut Vec<CheckError>,
) -> Option<Option<String>> {
    let Some(setting) = s.get("init") else {
        return Some(None);
    };
    let ExprKind::Str(path) = &setting.value.kind else {
        errors.push(CheckError::TypeMismatch {
            expected: "a path to a .safetensors file for `init`".into(),
            found: "something else".into(),
            span: setting.value.span,
            help: None,
        });
        return None;
    };
    let resolved = options.base_dir.join(path);
    if options.probe_data && !resolved.is_file() {
        errors.push(CheckError::DataFile {
            reason: format!("{}: no such file", resolved.display()),
            span: setting.value.span,
            help: Some("initial weights are a safetensors file, e.g. a model.safetensors from an earlier run".into()),
        });
        return None;
    }
    Some(Some(resolved.display().to_string()))
}
