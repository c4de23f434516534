//! Check: the typed syntax tree → a resolved [`Experiment`], or every error
//! found. Names are resolved, module instances expanded with shapes
//! inferred, settings typed and ranged, and the parts checked against each
//! other (data width against the model input, model output against the
//! label space, batch arithmetic).

mod args;
mod augment;
mod calls;
mod context;
mod data;
mod error;
mod fit;
mod foreign;
mod images;
mod library;
mod lint;
mod loss;
mod model;
mod module_tests;
mod optimizer;
mod parallel;
pub(crate) mod paths;
mod schedule;
mod settings;
mod sync;
mod tensor;
mod tracking;
mod train;

use std::collections::BTreeMap;
use std::path::PathBuf;

pub use args::{ParamSig, Ty};
pub use calls::{param_text, setting_call, setting_calls, SettingCall};
pub use data::DATA_KEYS;
pub use error::CheckError;
pub use library::{builtin_names, Builtin};
pub use lint::Lint;
pub use model::{NoteKind, ShapeNote};
pub use parallel::{Degree, ParallelLayout, ParallelSpans, KEYS as PARALLEL_KEYS, MAX_RANKS};
pub use settings::Choice;
pub use train::{Length, TrainSpans, TrainSpec, TRAIN_KEYS};

use crate::ast::{DataDef, File, Item, ModuleDef, SettingsBlock};
use crate::plan::{DataPlan, ModelPlan};
use crate::span::Span;

/// Where the checker looks for files and what it may read.
#[derive(Debug, Clone)]
pub struct Options {
    /// Folder that relative data paths start from: the `.dtl` file's folder.
    pub base_dir: PathBuf,
    /// Read data files to check their shape against the model.
    pub probe_data: bool,
    /// World sizes to check the parallel configuration against
    /// (`dtl check --world 4,8,64`); `lower` runs once for each.
    pub world: Vec<u64>,
    /// `--set PATH=VALUE` overrides, applied before checking.
    pub overrides: Vec<crate::overrides::Override>,
    /// `dtl check --strict`: a path that leads out of the project folder is
    /// an error, not a warning.
    pub strict: bool,
    /// What reading the data may cost (`--data-budget`), and whether its
    /// errors may quote values (`--show-values`).
    pub data_limits: crate::dataset::Limits,
    /// `dtl check --memory SIZE`: warn when a rank would need more, by
    /// `dtl explain`'s estimate.
    pub memory_limit: Option<u64>,
}

/// Everything a checked file says, resolved, for `lower` to turn into a
/// plan for one world size.
#[derive(Debug, Clone, PartialEq)]
pub struct Experiment {
    pub model: ModelPlan,
    /// Where each of the model's nodes was written.
    pub node_spans: Vec<Span>,
    /// Each node as the user would name it (`Net › Block(64) › fc`).
    pub node_names: Vec<String>,
    pub data: DataPlan,
    pub train: TrainSpec,
    /// The parallel block, checked (one process without one).
    pub parallel: ParallelLayout,
}

/// Everything the checker found in one file.
pub struct Checked {
    /// `Some` when there are no errors.
    pub experiment: Option<Experiment>,
    pub errors: Vec<CheckError>,
    pub lints: Vec<Lint>,
    /// The module tests whose shape claims hold.
    pub tests: Vec<crate::plan::TestPlan>,
    /// Every tensor name's shape, per module instance (for editors).
    pub shapes: Vec<ShapeNote>,
}

pub fn check(file: &File, options: &Options) -> Checked {
    let mut errors = Vec::new();
    let mut lints = Vec::new();
    let mut shapes = Vec::new();
    let modules = collect_named(file, &mut errors);
    let data_defs = collect_data(file, &mut errors);
    let is_library = file.items.iter().any(|item| matches!(item, Item::Test(_)));
    let train = single_block(file, is_library, &mut errors);
    let parallel_blocks = blocks_of(file, "parallel", &mut errors);
    let parallel = parallel_blocks
        .first()
        .map(|block| (*block, parallel::resolve(block, &mut errors)));
    let mut experiment = train.and_then(|train| {
        train::check_train(
            train,
            &modules,
            &data_defs,
            options,
            &mut errors,
            &mut lints,
            &mut shapes,
        )
    });
    if let (Some((block, Some(spec))), Some(experiment)) = (&parallel, &mut experiment) {
        if let Some(layout) = parallel::check(
            spec,
            block,
            (
                &experiment.model,
                (&experiment.node_spans, &experiment.node_names),
            ),
            &experiment.train,
            &mut errors,
            &mut lints,
        ) {
            experiment.parallel = layout;
        }
    }
    let test_defs: Vec<&crate::ast::TestDef> = file
        .items
        .iter()
        .filter_map(|item| match item {
            Item::Test(test) => Some(test),
            _ => None,
        })
        .collect();
    let tests =
        module_tests::check_tests(&test_defs, &modules, &mut errors, &mut lints, &mut shapes);
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
        shapes,
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
