//! dtl-compiler: the front end of dtl.
//!
//! The phases are the modules, in order: [`syntax`] (grammar → [`ast`]),
//! [`check`] (names, types, shapes, settings → a resolved
//! [`check::Experiment`]), [`lower`] (the experiment and a world size → the
//! layout, step count and step program) and [`plan`] (the execution plan's
//! data types, which the runtime reads). Each phase imports only the ones
//! before it; `plan` imports none.
//!
//! Beside them: [`ast`] (the syntax tree); [`span`] (byte ranges, line
//! numbers); [`diagnostics`] (rendering what the phases report);
//! [`dataset`] (reading data files, for `check` and the runtime); [`input`]
//! and [`overrides`] (what a command line names: a source file or a
//! compiled plan, and `--set`); [`records`] (the run output's schema);
//! [`util`].
//!
//! Around them, the [`tools`], which no phase imports:
//! [`tools::explain`] and [`tools::graph`] read a plan; [`tools::format`]
//! and [`tools::analysis`] (the editor queries) read the syntax tree;
//! [`tools::sarif`] renders diagnostics for code-scanning services.
//!
//! This crate may depend on neither libtorch nor MPI: `dtl check` must run
//! on a machine that has neither.

pub mod ast;
pub mod check;
pub mod dataset;
pub mod diagnostics;
pub mod imports;
pub mod input;
pub mod lower;
pub mod overrides;
pub mod plan;
pub mod records;
pub mod span;
pub mod syntax;
pub mod tools;
pub mod util;

use std::path::Path;

pub use diagnostics::Diagnostics;

/// A file that checked without errors, with its warnings.
pub struct Checked {
    /// `None` for a library file: modules and tests but no `train` block.
    pub experiment: Option<check::Experiment>,
    /// Module tests whose shape claims hold, for `dtl test`.
    pub tests: Vec<plan::TestPlan>,
    pub warnings: Diagnostics,
}

/// Parses and checks one file. `name` is how diagnostics name it. The
/// world-size arithmetic is checked by lowering for each of
/// `options.world` (see [`lower::validate`]). Errors (with any warnings)
/// come back as `Err`.
pub fn check_source(
    name: &str,
    text: &str,
    options: &check::Options,
) -> Result<Checked, Diagnostics> {
    let (file, syntax_errors) = syntax::parse(text);
    let mut diagnostics = Diagnostics::new(name, text);
    if !syntax_errors.is_empty() {
        for err in syntax_errors {
            diagnostics.push(err);
        }
        return Err(diagnostics);
    }
    let mut file = file;
    let imported = imports::load(
        &mut file,
        name,
        text.len(),
        &options.base_dir,
        options.strict,
        &mut diagnostics,
    );
    if diagnostics.error_count() > 0 {
        return Err(diagnostics);
    }
    if let Err(message) = overrides::apply(&mut file, &options.overrides) {
        diagnostics.push(check::CheckError::BadOverride {
            message,
            span: span::Span::new(0, 0),
        });
        return Err(diagnostics);
    }
    let mut checked = check::check(&file, options);
    checked.lints = imports::own_lints(checked.lints, imported.lints, &diagnostics);
    if let Some(experiment) = &checked.experiment {
        checked.errors = lower::validate(experiment, &options.world);
        if !checked.errors.is_empty() {
            checked.experiment = None;
        }
    }
    if let (Some(experiment), Some(limit)) = (&checked.experiment, options.memory_limit) {
        checked
            .lints
            .extend(memory_lints(experiment, &options.world, limit));
    }
    let mut items: Vec<(span::Span, bool, usize)> = Vec::new();
    items.extend(
        checked
            .errors
            .iter()
            .enumerate()
            .map(|(i, e)| (e.span(), true, i)),
    );
    items.extend(
        checked
            .lints
            .iter()
            .enumerate()
            .map(|(i, l)| (l.span(), false, i)),
    );
    items.sort();
    for (_, is_error, i) in items {
        if is_error {
            diagnostics.push(checked.errors[i].clone());
        } else {
            diagnostics.push(checked.lints[i].clone());
        }
    }
    if diagnostics.error_count() > 0 {
        return Err(diagnostics);
    }
    Ok(Checked {
        experiment: checked.experiment,
        tests: checked.tests,
        warnings: diagnostics,
    })
}

/// `--memory`: a warning for each world size at which a rank would need
/// more than `limit`, by `dtl explain`'s estimate (a layout that does not
/// lower is reported by `lower::validate` already).
fn memory_lints(experiment: &check::Experiment, worlds: &[u64], limit: u64) -> Vec<check::Lint> {
    let worlds: Vec<Option<u64>> = if worlds.is_empty() {
        vec![None]
    } else {
        worlds.iter().copied().map(Some).collect()
    };
    let mut lints = Vec::new();
    for world in worlds {
        let Ok(plan) = lower::lower(experiment, world, "") else {
            continue;
        };
        let cost = tools::explain::cost(&plan);
        let Some(worst) = cost.stages.iter().max_by_key(|s| s.memory.total) else {
            continue;
        };
        let m = &worst.memory;
        if m.total <= limit {
            continue;
        }
        let mut parts = [
            ("parameters", m.parameters),
            ("gradients", m.gradients),
            ("optimizer state", m.optimizer_state),
            ("activations", m.activations),
            ("gathered weights", m.gathered),
            ("gradient exchange buffers", m.communication),
        ];
        parts.sort_by_key(|(_, b)| std::cmp::Reverse(*b));
        let biggest: Vec<String> = parts
            .iter()
            .take(3)
            .map(|(what, b)| format!("{what} {}", tools::explain::bytes(*b)))
            .collect();
        let mut fits = layouts_that_fit(experiment, &plan, limit);
        fits.extend(recompute_that_fits(experiment, world, limit));
        let help = if fits.is_empty() {
            "no layout of these ranks fits (with or without `shard = optimizer` or `parameters` and pipeline stages): lower micro_batch, use more ranks, or give ranks more memory; `dtl explain` shows the estimate in full".to_string()
        } else {
            format!(
                "on the same {} rank(s) these fit, by the same estimate: {}",
                plan.topology.parallelism.world_size(),
                fits.join("; ")
            )
        };
        lints.push(check::Lint::Memory {
            needed: tools::explain::bytes(m.total),
            world: world.map_or(String::new(), |w| format!(" at --world {w}")),
            limit: tools::explain::bytes(limit),
            biggest: biggest.join(", "),
            span: experiment.train.spans.block,
            help,
        });
    }
    lints
}

/// `recompute = blocks` in the same layout, written with its estimate, when
/// the model has blocks to recompute, does not recompute them yet, and
/// that fits in `limit`.
fn recompute_that_fits(
    experiment: &check::Experiment,
    world: Option<u64>,
    limit: u64,
) -> Option<String> {
    use plan::Recompute;
    if experiment.train.recompute != Recompute::None
        || !experiment.model.recomputes(Recompute::Blocks)
    {
        return None;
    }
    let mut other = experiment.clone();
    other.train.recompute = Recompute::Blocks;
    let total = tools::explain::cost(&lower::lower(&other, world, "").ok()?)
        .memory
        .total;
    (total <= limit).then(|| {
        format!(
            "`recompute = blocks` in `train` ({} per rank)",
            tools::explain::bytes(total)
        )
    })
}

/// Other layouts of the ranks of `plan` whose largest rank fits in
/// `limit` by explain's estimate, written as `parallel` settings with the
/// estimate: the optimizer state sharded, then the model cut into 2, 4, …
/// pipeline stages (balanced, as many pieces as stages), sharded too where
/// that may be. At most three, fewest changes first.
fn layouts_that_fit(experiment: &check::Experiment, plan: &plan::Plan, limit: u64) -> Vec<String> {
    use plan::{BatchNormSync, Optimizer, Shard, SyncMode};
    let now = &plan.topology.parallelism;
    let world = now.world_size();
    let layers = experiment
        .model
        .nodes
        .iter()
        .filter(|n| !matches!(n.op, plan::Op::Input))
        .count() as u64;
    let can_shard = now.sync == SyncMode::EveryStep
        && !matches!(experiment.train.optimizer, Optimizer::Adafactor { .. });
    let mut candidates = Vec::new();
    for stages in (0..)
        .map(|k| 1u64 << k)
        .take_while(|&p| p <= world.min(layers))
    {
        let data = world / stages;
        let pipelined = stages > 1;
        if !world.is_multiple_of(stages)
            || (pipelined
                && (now.sync != SyncMode::EveryStep
                    || !experiment.train.micro_batch.is_multiple_of(stages)
                    || (data > 1 && now.batch_norm == BatchNormSync::Sync)))
        {
            continue;
        }
        for shard in [Shard::None, Shard::Optimizer, Shard::Parameters] {
            let same = stages == now.pipeline && shard == now.shard;
            let sharded = shard != Shard::None;
            // ZeRO-3 does not compose with these yet (the checker says so).
            let full_refused =
                now.batch_norm == BatchNormSync::Sync || experiment.train.tracking.ema.is_some();
            if same
                || (sharded && (!can_shard || data == 1))
                || (shard == Shard::Parameters && full_refused)
            {
                continue;
            }
            candidates.push((stages, data, shard));
        }
    }
    let mut fits = Vec::new();
    for (stages, data, shard) in candidates {
        let mut other = experiment.clone();
        let layout = &mut other.parallel;
        layout.data = check::Degree::Fixed(data);
        if stages != now.pipeline {
            layout.pipeline = stages;
            layout.micro_batches = stages;
            layout.split = None;
        }
        layout.shard = shard;
        let Ok(plan) = lower::lower(&other, Some(world), "") else {
            continue;
        };
        let total = tools::explain::cost(&plan).memory.total;
        if total <= limit {
            let mut settings = Vec::new();
            if stages != now.pipeline {
                settings.push(format!("data = {data}; pipeline = {stages}"));
            }
            match shard {
                Shard::Optimizer => settings.push("shard = optimizer".into()),
                Shard::Parameters => settings.push("shard = parameters".into()),
                _ => {}
            }
            fits.push(format!(
                "`{}` ({} per rank)",
                settings.join("; "),
                tools::explain::bytes(total)
            ));
        }
    }
    fits.truncate(3);
    fits
}

/// Parses, checks and plans one file; warnings are dropped (see
/// [`compile_source_with_warnings`]).
pub fn compile_source(
    name: &str,
    text: &str,
    options: &check::Options,
) -> Result<plan::Plan, Diagnostics> {
    compile_source_with_warnings(name, text, options).map(|(plan, _)| plan)
}

/// Parses, checks and plans one file for the one world size in
/// `options.world` (none: the layout's own), keeping the warnings. A
/// library file (no `train` block) has nothing to plan: that is an error
/// here.
pub fn compile_source_with_warnings(
    name: &str,
    text: &str,
    options: &check::Options,
) -> Result<(plan::Plan, Diagnostics), Diagnostics> {
    let checked = check_source(name, text, options)?;
    let mut diagnostics = checked.warnings;
    let Some(experiment) = checked.experiment else {
        diagnostics.push(check::CheckError::MissingItem {
            message:
                "no `train` block: nothing to train (the file's tests still run with `dtl test`)"
                    .into(),
            span: span::Span::new(0, 0),
            help: Some("add `train { model = ...; data = ...; ... }`".into()),
        });
        return Err(diagnostics);
    };
    let world = match options.world[..] {
        [] => None,
        [world] => Some(world),
        _ => {
            diagnostics.push(check::CheckError::MissingItem {
                message: format!(
                    "a plan is for one world size; {} were given",
                    options.world.len()
                ),
                span: span::Span::new(0, 0),
                help: Some("compile once per world size".into()),
            });
            return Err(diagnostics);
        }
    };
    match lower::lower(&experiment, world, name) {
        Ok(plan) => Ok((plan, diagnostics)),
        Err(errors) => {
            for err in errors {
                diagnostics.push(err);
            }
            Err(diagnostics)
        }
    }
}

/// The options for a file at `path`: data paths start from its folder.
pub fn options_for(path: &Path, probe_data: bool) -> check::Options {
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    check::Options {
        base_dir,
        probe_data,
        world: Vec::new(),
        overrides: Vec::new(),
        strict: false,
        data_limits: dataset::Limits::checking(),
        memory_limit: None,
    }
}
