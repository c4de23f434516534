//! The `train` block: model, data, loss, optimizer, schedule, batch and
//! step counts, clipping, precision, checkpoints — resolved into a
//! [`TrainPlan`] and checked against each other.

use std::collections::BTreeMap;

use super::args::{ParamSig, Ty, Value};
use super::settings::{self, choose, Settings};
use super::{data, fit, model, CheckError, Experiment, Lint, Options};
use crate::ast::{DataDef, ExprKind, ModuleDef, ModuleKind, SettingsBlock};
use crate::plan::{
    Clip, DataPlan, Loss, NanPolicy, Optimizer, Precision, Recompute, Schedule, Tracking,
};
use crate::span::Span;
use crate::util::suggest;

/// The settings a `train` block accepts.
pub const TRAIN_KEYS: [&str; 24] = [
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
    "precision",
    "recompute",
    "checkpoint_every",
    "on_nan",
    "metrics",
    "keep_best",
    "stop_early",
    "ema",
    "freeze",
    "groups",
];

/// How long to train: a number of optimizer steps, or of passes over the
/// training rows, turned into steps once the data-parallel degree is known
/// (`lower`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Length {
    Steps(u64),
    Epochs(u64),
}

/// The `train` block, checked: everything the plan's [`crate::plan::TrainPlan`]
/// holds except what depends on the parallel layout (the step count of
/// `epochs`, the global batch), plus the spans that lowering's errors point
/// at.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainSpec {
    pub loss: Loss,
    pub optimizer: Optimizer,
    pub schedule: Schedule,
    pub length: Length,
    pub micro_batch: u64,
    pub accumulate: u64,
    pub clip: Option<Clip>,
    pub seed: u64,
    pub eval_every: u64,
    pub init: Option<String>,
    pub init_skip: Option<Vec<String>>,
    /// How the `init` file's names and layouts map onto the model's.
    pub init_map: InitMap,
    pub precision: Precision,
    pub recompute: Recompute,
    pub checkpoint_every: u64,
    pub on_nan: NanPolicy,
    pub tracking: Tracking,
    pub groups: Vec<crate::plan::ParamGroup>,
    pub spans: TrainSpans,
}

/// Where the settings that lowering checks were written.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainSpans {
    /// The `train` keyword.
    pub block: Span,
    /// The `steps` or `epochs` setting.
    pub length: Span,
    /// The value of `warmup`, if written.
    pub warmup: Option<Span>,
    /// The value of `schedule`, if written.
    pub schedule: Option<Span>,
    /// The value of `micro_batch`.
    pub micro_batch: Span,
}

/// `steps = N` or `epochs = N` (one of them), with its span.
fn length(s: &Settings<'_>, errors: &mut Vec<CheckError>) -> Option<(Length, Span)> {
    match (s.get("steps"), s.get("epochs")) {
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
        (Some(setting), None) => s
            .int("steps", 1..=1 << 40, None, errors)
            .map(|n| (Length::Steps(n as u64), setting.span)),
        (None, Some(setting)) => s
            .int("epochs", 1..=1 << 20, None, errors)
            .map(|n| (Length::Epochs(n as u64), setting.span)),
    }
}

pub(super) fn check_train(
    block: &SettingsBlock,
    modules: &BTreeMap<String, &ModuleDef>,
    data_defs: &BTreeMap<String, &DataDef>,
    options: &Options,
    errors: &mut Vec<CheckError>,
    lints: &mut Vec<Lint>,
    shapes: &mut Vec<model::ShapeNote>,
) -> Option<Experiment> {
    let s = Settings::new("train", block.keyword, &block.settings, &TRAIN_KEYS, errors);
    let model_def = resolve_model(&s, modules, errors);
    let data = resolve_data(&s, data_defs, options, errors, lints);
    let loss = s
        .require("loss", "e.g. `loss = cross_entropy`", errors)
        .and_then(|x| super::loss::loss(x, errors));
    let optimizer = s
        .require("optimizer", "e.g. `optimizer = adamw(lr: 3e-3)`", errors)
        .and_then(|x| super::optimizer::optimizer(x, errors));
    let length = length(&s, errors);
    s.require("micro_batch", "e.g. `micro_batch = 32`", errors);
    let micro_batch = s.int("micro_batch", 1..=1 << 31, None, errors);
    let accumulate = s.int("accumulate", 1..=1 << 20, Some(1), errors);
    let clip = match s.get("clip") {
        Some(x) => settings::clip(x, errors),
        None => Some(None),
    };
    let seed = s.int("seed", 0..=i64::MAX, Some(0), errors);
    let eval_every = s.int("eval_every", 0..=1 << 40, Some(0), errors);
    let checkpoint_every = s.int("checkpoint_every", 0..=1 << 40, Some(0), errors);
    let precision = s.choice_or("precision", Precision::Fp32, errors);
    let recompute = s.choice_or("recompute", Recompute::None, errors);
    let on_nan = s.choice_or("on_nan", NanPolicy::Stop, errors);
    let warmup = s.int("warmup", 0..=1 << 40, Some(0), errors);
    let warmup_span = s.get("warmup").map(|x| x.value.span);
    let schedule = warmup
        .and_then(|w| super::schedule::schedule(s.get("schedule"), w as u64, warmup_span, errors));

    let model = model_def.and_then(|def| elaborate(def, modules, errors, lints, shapes));
    if let (Some(optimizer), Some(setting)) = (&optimizer, s.get("optimizer")) {
        learning_rate_lint(optimizer, setting.value.span, lints);
        min_lr_lint(optimizer, schedule.as_ref(), s.get("schedule"), lints);
    }
    if let (Some((model, _, _)), Some(None)) = (&model, &clip) {
        let layers = model.nodes.iter().filter(|n| has_weights(&n.op)).count();
        if layers >= DEEP_MODEL_LAYERS {
            lints.push(Lint::NoClipping {
                layers,
                span: block.keyword,
            });
        }
    }
    let (mut model, def, (node_spans, node_names)) = model?;
    if let (Some(mode), Some(setting)) = (recompute, s.get("recompute")) {
        nothing_to_recompute(&model, mode, setting.value.span, errors)?;
    }
    if let Some(setting) = s.get("freeze") {
        freeze(setting, &mut model, errors)?;
    }
    let groups = match s.get("groups") {
        Some(setting) => groups(setting, &model, errors)?,
        None => Vec::new(),
    };
    let mut data = data?;
    let loss = loss?;
    fit::check_model_against_data(&model, def, &mut data, &loss, &s, options, errors)?;
    let sources = (&node_spans[..], &node_names[..]);
    let scale = data_setting(data_defs, &data.name, "scale");
    fit::embeddings_fit_features((&model, sources), &data, scale, errors)?;
    if let Some(setting) = s.get("loss") {
        lints.extend(fit::loss_on_output(
            (&model, sources),
            &loss,
            setting.value.span,
        ));
    }
    let (length, length_span) = length?;
    let (init, init_skip, init_map) = init_weights(&s, options, errors, lints)?;
    let tracking = super::tracking::tracking(&s, &loss, &data, eval_every? as u64, errors)?;
    let train = TrainSpec {
        loss,
        optimizer: optimizer?,
        schedule: schedule?,
        length,
        micro_batch: micro_batch? as u64,
        accumulate: accumulate? as u64,
        clip: clip?,
        seed: seed? as u64,
        eval_every: eval_every? as u64,
        init,
        init_skip,
        init_map,
        precision: precision?,
        recompute: recompute?,
        checkpoint_every: checkpoint_every? as u64,
        on_nan: on_nan?,
        tracking,
        groups,
        spans: TrainSpans {
            block: block.keyword,
            length: length_span,
            warmup: warmup_span,
            schedule: s.get("schedule").map(|x| x.value.span),
            micro_batch: s.get("micro_batch").map_or(block.keyword, |x| x.value.span),
        },
    };
    Some(Experiment {
        model,
        node_spans,
        node_names,
        data,
        train,
        parallel: super::parallel::ParallelLayout::single(block.keyword),
    })
}

/// Where each node of a model was written, and its name in the user's
/// terms.
type Sources = (Vec<Span>, Vec<String>);

/// The model `def` expanded, with where each node was written and its
/// name in the user's terms.
fn elaborate<'a>(
    def: &'a ModuleDef,
    modules: &BTreeMap<String, &ModuleDef>,
    errors: &mut Vec<CheckError>,
    lints: &mut Vec<Lint>,
    shapes: &mut Vec<model::ShapeNote>,
) -> Option<(crate::plan::ModelPlan, &'a ModuleDef, Sources)> {
    let mut elaborator = model::Elaborator::new(modules);
    let model = elaborator.elaborate_model(def);
    errors.append(&mut elaborator.errors);
    lints.append(&mut elaborator.lints);
    shapes.append(&mut elaborator.shapes);
    if model.is_some() {
        unused_modules(modules, def, &elaborator.used_modules, lints);
    }
    let spans = std::mem::take(&mut elaborator.node_spans);
    let names = std::mem::take(&mut elaborator.node_names);
    model.map(|m| (m, def, (spans, names)))
}

/// Where the data block `name` sets `key`.
fn data_setting(data_defs: &BTreeMap<String, &DataDef>, name: &str, key: &str) -> Option<Span> {
    let data = data_defs.get(name)?;
    data.settings
        .iter()
        .find(|x| x.key.name == key)
        .map(|x| x.span)
}

/// `recompute` on a model where it would recompute nothing is an error,
/// not a setting that silently does nothing.
fn nothing_to_recompute(
    model: &crate::plan::ModelPlan,
    mode: Recompute,
    span: Span,
    errors: &mut Vec<CheckError>,
) -> Option<()> {
    if mode == Recompute::None || model.recomputes(mode) {
        return Some(());
    }
    let message = if model.blocks.is_empty() {
        "the model's forward has no module instance and no `repeat`: there is no block to recompute"
    } else {
        "the model's only block computes its output, which backward needs at once: there is nothing to recompute"
    };
    errors.push(CheckError::Unsupported {
        message: format!("`recompute = {}`: {message}", mode.name()),
        span,
        help: Some("write the repeated layers as a module (`module Block(...) { ... }`) applied in the model's forward or under `repeat N { ... }`, or remove `recompute`".into()),
    });
    None
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
    lints: &mut Vec<Lint>,
) -> Option<DataPlan> {
    s.require(
        "data",
        "e.g. `data = digits`, naming a `data digits { ... }`",
        errors,
    );
    let name = s.name("data", errors)?;
    match data_defs.get(&name.name) {
        Some(def) => data::data(def, options, errors, lints),
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

/// A cosine schedule whose floor is above the rate it starts from.
fn min_lr_lint(
    optimizer: &Optimizer,
    schedule: Option<&Schedule>,
    setting: Option<&crate::ast::Setting>,
    lints: &mut Vec<Lint>,
) {
    if let (Some(schedule), Some(setting)) = (schedule, setting) {
        if let crate::plan::Decay::Cosine { min_lr } = schedule.decay {
            if min_lr > optimizer.lr() {
                lints.push(Lint::MinLrAboveLr {
                    min_lr,
                    lr: optimizer.lr(),
                    span: setting.value.span,
                });
            }
        }
    }
}

/// Rates far outside what each optimizer is normally run with are usually
/// typos (`3e3` for `3e-3`).
fn learning_rate_lint(optimizer: &Optimizer, span: Span, lints: &mut Vec<Lint>) {
    use crate::plan::Optimizer::*;
    let lr = optimizer.lr();
    let (name, low, high, range) = match optimizer {
        Sgd { .. } => ("sgd", 1e-5, 2.0, "1e-5 to 2"),
        Adam { .. } => ("adam", 1e-6, 0.1, "1e-6 to 0.1"),
        AdamW { .. } => ("adamw", 1e-6, 0.1, "1e-6 to 0.1"),
        // Lion runs 3–10× below AdamW (its paper); Adafactor's lr caps a
        // relative step of 1/√t.
        Lion { .. } => ("lion", 1e-7, 0.01, "1e-7 to 0.01"),
        Adafactor { .. } => ("adafactor", 1e-5, 1.0, "1e-5 to 1"),
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

/// `freeze = ["0.*", "blocks.0.*"]`: the parameters these patterns name
/// are not trained. Each pattern must name a parameter, and one parameter
/// at least must be left to train.
fn freeze(
    setting: &crate::ast::Setting,
    model: &mut crate::plan::ModelPlan,
    errors: &mut Vec<CheckError>,
) -> Option<()> {
    let value = &setting.value;
    let patterns: Vec<(String, Span)> = match &value.kind {
        ExprKind::Str(p) => vec![(p.clone(), value.span)],
        ExprKind::List(items) => {
            let mut patterns = Vec::new();
            for item in items {
                let ExprKind::Str(p) = &item.kind else {
                    errors.push(settings::type_error(
                        item,
                        "a name pattern in quotes",
                        "freeze",
                    ));
                    return None;
                };
                patterns.push((p.clone(), item.span));
            }
            patterns
        }
        _ => {
            errors.push(settings::type_error(
                value,
                "a list of name patterns, e.g. [\"0.*\"]",
                "freeze",
            ));
            return None;
        }
    };
    let names: Vec<String> = model.parameters.iter().map(|p| p.name.clone()).collect();
    let before = errors.len();
    for (pattern, span) in &patterns {
        if !names.iter().any(|n| crate::util::glob::matches(pattern, n)) {
            errors.push(CheckError::UnknownName {
                kind: "parameter pattern",
                name: pattern.clone(),
                span: *span,
                help: suggest::did_you_mean(pattern, names.iter().map(String::as_str))
                    .or_else(|| Some(format!("the parameters are: {}", few_names(&names)))),
            });
        }
    }
    let patterns: Vec<String> = patterns.into_iter().map(|(p, _)| p).collect();
    for param in &mut model.parameters {
        param.frozen = crate::util::glob::any(&patterns, &param.name);
    }
    if model.parameters.iter().all(|p| p.frozen) {
        errors.push(CheckError::invalid(
            "`freeze` names every parameter: nothing is left to train",
            value.span,
            "everything frozen",
        ));
    }
    (errors.len() == before).then_some(())
}

/// `groups = [group(select, weight_decay: D, lr_scale: S), ...]`: each
/// selector a kind (`matrices`, `norms`, `biases`, `embeddings`) or a name
/// pattern, and each must pick a trainable parameter; a parameter belongs
/// to the first group that picks it.
fn groups(
    setting: &crate::ast::Setting,
    model: &crate::plan::ModelPlan,
    errors: &mut Vec<CheckError>,
) -> Option<Vec<crate::plan::ParamGroup>> {
    let ExprKind::List(items) = &setting.value.kind else {
        errors.push(settings::type_error(
            &setting.value,
            "a list of `group(...)`, e.g. [group([\"norms\", \"biases\"], weight_decay: 0)]",
            "groups",
        ));
        return None;
    };
    let sig = vec![
        ParamSig::required("select", Ty::StrOrList),
        ParamSig::optional("weight_decay", Ty::Float, Value::Float(-1.0)),
        ParamSig::optional("lr_scale", Ty::Float, Value::Float(1.0)),
    ];
    let kinds = parameter_kinds(model);
    let mut taken = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    let before = errors.len();
    for item in items {
        let one = crate::ast::Setting {
            key: setting.key.clone(),
            value: item.clone(),
            span: item.span,
        };
        let Some((_, v)) = choose(
            &one,
            "parameter group",
            &[("group", (), sig.clone())],
            errors,
        ) else {
            continue;
        };
        let selectors = v[0].as_strings();
        let (decay, scale) = (v[1].as_float(), v[2].as_float());
        if decay != -1.0 && !(0.0..1e6).contains(&decay) {
            errors.push(CheckError::invalid(
                format!("weight_decay must be 0 or more, got {decay}"),
                item.span,
                "out of range",
            ));
        }
        if !(scale > 0.0 && scale.is_finite()) {
            errors.push(CheckError::invalid(
                format!("lr_scale must be greater than 0, got {scale}"),
                item.span,
                "must be > 0",
            ));
        }
        let mut parameters = Vec::new();
        for selector in &selectors {
            let picked: Vec<&String> = kinds
                .iter()
                .filter(|(name, kinds)| match selector.as_str() {
                    "matrices" | "norms" | "biases" | "embeddings" => {
                        kinds.contains(&selector.as_str())
                    }
                    pattern => crate::util::glob::matches(pattern, name),
                })
                .map(|(name, _)| name)
                .collect();
            if picked.is_empty() {
                errors.push(CheckError::invalid(
                    format!("`{selector}` picks no trainable parameter"),
                    item.span,
                    "an empty group",
                ));
            }
            for name in picked {
                if taken.insert(name.clone()) {
                    parameters.push(name.clone());
                }
            }
        }
        out.push(crate::plan::ParamGroup {
            parameters,
            weight_decay: (decay != -1.0).then_some(decay),
            lr_scale: scale,
        });
    }
    (errors.len() == before).then_some(out)
}

/// Each trainable parameter, in plan order, with the kinds a group may
/// select it by: `matrices` (two or more dimensions), `norms` (a
/// normalisation layer's weight or bias), `biases` (a name ending in
/// `bias`), `embeddings` (an embedding's table).
fn parameter_kinds(model: &crate::plan::ModelPlan) -> Vec<(String, Vec<&'static str>)> {
    use crate::plan::Op;
    let mut role: BTreeMap<&str, &'static str> = BTreeMap::new();
    for node in &model.nodes {
        let kind = match node.op {
            Op::LayerNorm { .. }
            | Op::RmsNorm { .. }
            | Op::BatchNorm { .. }
            | Op::GroupNorm { .. }
            | Op::InstanceNorm { .. } => "norms",
            Op::Embedding { .. } | Op::PosEmbedding { .. } => "embeddings",
            _ => continue,
        };
        for name in node.op.params() {
            role.insert(name, kind);
        }
    }
    model
        .parameters
        .iter()
        .filter(|p| !p.frozen)
        .map(|p| {
            let mut kinds = Vec::new();
            if p.shape.len() >= 2 {
                kinds.push("matrices");
            }
            if p.name
                .rsplit('.')
                .next()
                .is_some_and(|last| last.ends_with("bias"))
            {
                kinds.push("biases");
            }
            kinds.extend(role.get(p.name.as_str()).copied());
            (p.name.clone(), kinds)
        })
        .collect()
}

/// Up to eight names, and how many more.
fn few_names(names: &[String]) -> String {
    match names.len() {
        0..=8 => names.join(", "),
        n => format!("{}, … ({} more)", names[..8].join(", "), n - 8),
    }
}

/// `init = "weights.safetensors"`: initial weights, relative to the file,
/// every tensor of the model; or `init = weights(path, skip: [...])`: what
/// the file holds of the model, the names matching `skip` left to the
/// initialisers (fine-tuning with a new head).
/// `weights(path, rename: [...], transpose: [...], fuse: [...], squeeze:
/// [...])`: how the
/// file's names and layouts map onto the model's (see
/// [`crate::plan::TrainPlan`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InitMap {
    pub rename: Vec<[String; 2]>,
    pub transpose: Vec<String>,
    pub fuse: Vec<Vec<String>>,
    pub squeeze: Vec<String>,
}

/// `init`: the file, and for `weights(...)` what to skip and how to map.
type InitWeights = (Option<String>, Option<Vec<String>>, InitMap);

fn init_weights(
    s: &Settings<'_>,
    options: &Options,
    errors: &mut Vec<CheckError>,
    lints: &mut Vec<Lint>,
) -> Option<InitWeights> {
    let Some(setting) = s.get("init") else {
        return Some((None, None, InitMap::default()));
    };
    let sig = [
        ParamSig::required("path", Ty::Str),
        ParamSig::optional("skip", Ty::StrOrList, Value::List(Vec::new())),
        ParamSig::optional("rename", Ty::StrPairs, Value::List(Vec::new())),
        ParamSig::optional("transpose", Ty::StrOrList, Value::List(Vec::new())),
        ParamSig::optional("fuse", Ty::StrGroups, Value::List(Vec::new())),
        ParamSig::optional("squeeze", Ty::StrOrList, Value::List(Vec::new())),
    ];
    let (path, skip, map) = match &setting.value.kind {
        ExprKind::Str(path) => (path.clone(), None, InitMap::default()),
        ExprKind::Call(_) => {
            let (_, v) = choose(
                setting,
                "initial weights",
                &[("weights", (), sig.to_vec())],
                errors,
            )?;
            let map = InitMap {
                rename: v[2].as_str_pairs(),
                transpose: v[3].as_strings(),
                fuse: v[4].as_str_groups(),
                squeeze: v[5].as_strings(),
            };
            if let Some(group) = map.fuse.iter().find(|g| g.iter().any(String::is_empty)) {
                errors.push(CheckError::invalid(
                    format!(
                        "`fuse`: each string of {group:?} names a piece of the file's names, and one is empty"
                    ),
                    setting.value.span,
                    "empty piece",
                ));
                return None;
            }
            if let Some([from, _]) = map.rename.iter().find(|[from, _]| from.is_empty()) {
                errors.push(CheckError::invalid(
                    format!(
                        "`rename`: a pair replaces a piece of every name, and `{from}` is empty"
                    ),
                    setting.value.span,
                    "empty `from`",
                ));
                return None;
            }
            (v[0].as_str().to_string(), Some(v[1].as_strings()), map)
        }
        _ => {
            errors.push(CheckError::TypeMismatch {
                expected:
                    "a path to a .safetensors file for `init`, or `weights(path, skip: [...])`"
                        .into(),
                found: "something else".into(),
                span: setting.value.span,
                help: None,
            });
            return None;
        }
    };
    super::paths::check(
        &path,
        &options.base_dir,
        setting.value.span,
        options.strict,
        errors,
        lints,
    );
    let resolved = options.base_dir.join(&path);
    if options.probe_data && !resolved.is_file() {
        errors.push(CheckError::DataFile {
            reason: format!("{}: no such file", resolved.display()),
            span: setting.value.span,
            help: Some("initial weights are a safetensors file, e.g. a model.safetensors from an earlier run".into()),
        });
        return None;
    }
    Some((Some(resolved.display().to_string()), skip, map))
}
