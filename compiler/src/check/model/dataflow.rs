//! The tensor expressions of a forward body: names, chains of stages,
//! sums, `concat`, `repeat`, and the nodes they add to the graph.

use super::{
    describe_expr, passes_input_through, Body, BoundLayer, Callee, Elaborator, NoteKind, TensorRef,
    MAX_NODES, MAX_TENSOR_ELEMENTS,
};
use crate::ast::{Arg, BinOp, Expr, ExprKind, Ident, ModuleDef};
use crate::check::args::{eval, value_text, Env, Value};
use crate::check::context::{ordinal, wrap_inside, Frame};
use crate::check::library::{join_path, Builtin};
use crate::check::CheckError;
use crate::plan::{shape_to_string, Dim, Node, Op, Shape};
use crate::span::Span;
use crate::util::suggest::did_you_mean;

impl<'a> Elaborator<'a> {
    /// A tensor-valued expression: a name, a chain, a sum or `concat(...)`.
    pub(super) fn tensor_expr(&mut self, expr: &'a Expr, body: &mut Body<'a>) -> Option<TensorRef> {
        match &expr.kind {
            ExprKind::Name(ident) => self.tensor_name(ident, body),
            ExprKind::Pipe(stages) => {
                let mut value = self.tensor_expr(&stages[0], body)?;
                for stage in &stages[1..] {
                    value = self.apply_stage(stage, body, value)?;
                    self.note(stage.span, "", &value.shape, NoteKind::Stage);
                }
                Some(value)
            }
            ExprKind::Add(terms) => {
                let values: Vec<Option<TensorRef>> =
                    terms.iter().map(|t| self.tensor_expr(t, body)).collect();
                let values: Vec<TensorRef> = values.into_iter().collect::<Option<_>>()?;
                for (term, value) in terms.iter().zip(&values).skip(1) {
                    if value.shape != values[0].shape {
                        self.errors.push(CheckError::ShapeMismatch {
                            expected: shape_to_string(&values[0].shape),
                            found: shape_to_string(&value.shape),
                            span: term.span,
                            what: "`+` adds tensors of the same shape".into(),
                            help: None,
                        });
                        return None;
                    }
                }
                let node = self.push_node(
                    join_path(&body.scope, "add"),
                    Op::Add,
                    &values,
                    values[0].shape.clone(),
                    expr.span,
                );
                Some(node)
            }
            ExprKind::Binary { op, lhs, rhs } => self.tensor_binary(*op, lhs, rhs, expr.span, body),
            ExprKind::Call(call) if call.callee.name == "concat" => {
                self.concat(&call.args, expr.span, body)
            }
            ExprKind::Call(call) => {
                let what = if Builtin::lookup(&call.callee.name).is_some()
                    || self.modules.contains_key(&call.callee.name)
                {
                    format!(
                        "`{}(...)` is a layer; apply it to a tensor",
                        call.callee.name
                    )
                } else {
                    format!("unknown function `{}`", call.callee.name)
                };
                self.errors.push(CheckError::TypeMismatch {
                    expected: "a tensor".into(),
                    found: what,
                    span: expr.span,
                    help: Some("start a chain with a tensor: `x |> layer(...)`".into()),
                });
                None
            }
            ExprKind::Repeat { .. } => {
                self.errors.push(CheckError::TypeMismatch {
                    expected: "a tensor".into(),
                    found: "`repeat`, which is a stage".into(),
                    span: expr.span,
                    help: Some("apply it to a tensor: `x |> repeat 2 { ... }`".into()),
                });
                None
            }
            _ => {
                self.errors.push(CheckError::TypeMismatch {
                    expected: "a tensor".into(),
                    found: describe_expr(expr),
                    span: expr.span,
                    help: None,
                });
                None
            }
        }
    }

    /// `a * b`: the element-wise product of two tensors of one shape.
    /// `-` and `/` are arithmetic on numbers only.
    fn tensor_binary(
        &mut self,
        op: BinOp,
        lhs: &'a Expr,
        rhs: &'a Expr,
        span: Span,
        body: &mut Body<'a>,
    ) -> Option<TensorRef> {
        if op != BinOp::Mul {
            self.errors.push(CheckError::Unsupported {
                message: format!("`{}` between tensors", op.symbol()),
                span,
                help: Some(
                    "tensors combine with `+` (sum) and `*` (element-wise product); `-` and `/` are arithmetic on numbers, e.g. `linear(d, d / 2)`".into(),
                ),
            });
            return None;
        }
        let (a, b) = (self.tensor_expr(lhs, body), self.tensor_expr(rhs, body));
        let (a, b) = (a?, b?);
        if a.shape != b.shape {
            self.errors.push(CheckError::ShapeMismatch {
                expected: shape_to_string(&a.shape),
                found: shape_to_string(&b.shape),
                span: rhs.span,
                what: "`*` multiplies tensors of the same shape element by element".into(),
                help: None,
            });
            return None;
        }
        let shape = a.shape.clone();
        Some(self.push_node(join_path(&body.scope, "mul"), Op::Mul, &[a, b], shape, span))
    }

    pub(super) fn tensor_name(&mut self, ident: &Ident, body: &mut Body<'a>) -> Option<TensorRef> {
        body.used.insert(ident.name.clone());
        if let Some(value) = body.tensors.get(&ident.name).cloned() {
            self.note_shape(ident, &value.shape);
            return Some(value);
        }
        if body.poisoned.contains(&ident.name) {
            return None;
        }
        if body.layers.contains_key(&ident.name) || Builtin::lookup(&ident.name).is_some() {
            self.errors.push(CheckError::TypeMismatch {
                expected: "a tensor".into(),
                found: format!("the layer `{}`", ident.name),
                span: ident.span,
                help: Some(format!("apply it to a tensor: `x |> {}`", ident.name)),
            });
            return None;
        }
        self.errors.push(CheckError::UnknownName {
            kind: "tensor",
            name: ident.name.clone(),
            span: ident.span,
            help: did_you_mean(&ident.name, body.tensors.keys().map(String::as_str)),
        });
        None
    }

    /// `concat(a, b, ..., dim: -1)`: tensors that agree except along `dim`.
    pub(super) fn concat(
        &mut self,
        args: &'a [Arg],
        span: Span,
        body: &mut Body<'a>,
    ) -> Option<TensorRef> {
        let mut dim = -1i64;
        let mut values = Vec::new();
        let mut ok = true;
        for arg in args {
            match &arg.name {
                Some(name) if name.name == "dim" => match eval(&arg.value, &body.env) {
                    Ok(Value::Int(d)) => dim = d,
                    _ => {
                        self.errors.push(CheckError::TypeMismatch {
                            expected: "an integer for `dim`".into(),
                            found: describe_expr(&arg.value),
                            span: arg.value.span,
                            help: None,
                        });
                        ok = false;
                    }
                },
                Some(name) => {
                    self.errors.push(CheckError::UnknownArgument {
                        callee: "concat".into(),
                        name: name.name.clone(),
                        span: name.span,
                        help: Some("`concat` takes tensors and `dim: int = -1`".into()),
                    });
                    ok = false;
                }
                None => match self.tensor_expr(&arg.value, body) {
                    Some(v) => values.push((v, arg.span)),
                    None => ok = false,
                },
            }
        }
        if !ok {
            return None;
        }
        if values.len() < 2 {
            self.errors.push(CheckError::Arity {
                callee: "concat".into(),
                expected: "at least 2".into(),
                found: values.len(),
                span,
                help: Some("e.g. `concat(x, h, dim: -1)`".into()),
            });
            return None;
        }
        let rank = values[0].0.shape.len() as i64;
        let axis = if dim < 0 { dim + rank } else { dim };
        if !(1..rank).contains(&axis) {
            self.errors.push(CheckError::invalid(
                format!(
                    "concat: no dimension {dim} after the batch in {}",
                    shape_to_string(&values[0].0.shape)
                ),
                span,
                "bad `dim`",
            ));
            return None;
        }
        let mut output = values[0].0.shape.clone();
        let mut total = 0i64;
        for (value, arg_span) in &values {
            let agrees = value.shape.len() == output.len()
                && value
                    .shape
                    .iter()
                    .zip(&output)
                    .enumerate()
                    .all(|(i, (a, b))| i as i64 == axis || a == b);
            match (&value.shape.get(axis as usize), agrees) {
                (Some(Dim::Size(n)), true) => total += n,
                _ => {
                    self.errors.push(CheckError::ShapeMismatch {
                        expected: format!(
                            "{} except along dimension {axis}",
                            shape_to_string(&output)
                        ),
                        found: shape_to_string(&value.shape),
                        span: *arg_span,
                        what: "cannot be concatenated".into(),
                        help: None,
                    });
                    return None;
                }
            }
        }
        output[axis as usize] = Dim::Size(total);
        let inputs: Vec<TensorRef> = values.into_iter().map(|(v, _)| v).collect();
        Some(self.push_node(
            join_path(&body.scope, "concat"),
            Op::Concat { dim: axis },
            &inputs,
            output,
            span,
        ))
    }

    /// Adds a node, written at `span` (the layer's call, the `+`).
    pub(super) fn push_node(
        &mut self,
        name: String,
        op: Op,
        inputs: &[TensorRef],
        output: Shape,
        span: Span,
    ) -> TensorRef {
        self.node_spans.push(span);
        // A named layer is called by its name, an inline one by its kind.
        let last = name.rsplit('.').next().unwrap_or_default();
        let last = match last.parse::<usize>() {
            Ok(_) => op.kind().to_string(),
            Err(_) if last.is_empty() => op.kind().to_string(),
            Err(_) => last.to_string(),
        };
        let mut display = self.display.clone();
        display.push(last);
        self.node_names.push(display.join(" › "));
        self.nodes.push(Node {
            name,
            op,
            inputs: inputs.iter().map(|v| v.node).collect(),
            output: output.clone(),
        });
        TensorRef {
            node: self.nodes.len() - 1,
            shape: output,
        }
    }

    /// Applies one stage of a chain to `input`.
    pub(super) fn apply_stage(
        &mut self,
        stage: &'a Expr,
        body: &mut Body<'a>,
        input: TensorRef,
    ) -> Option<TensorRef> {
        match &stage.kind {
            ExprKind::Repeat {
                count,
                count_span,
                body: chain,
            } => {
                let path = join_path(&body.scope, &body.next_index.to_string());
                body.next_index += 1;
                self.repeat(*count, *count_span, chain, &path, body, input)
            }
            ExprKind::Name(ident) if body.repeats.contains_key(&ident.name) => {
                body.used.insert(ident.name.clone());
                let ExprKind::Repeat {
                    count,
                    count_span,
                    body: chain,
                } = &body.repeats[&ident.name].kind
                else {
                    unreachable!("body.repeats holds repeats")
                };
                let path = join_path(&body.scope, &ident.name);
                self.repeat(*count, *count_span, chain, &path, body, input)
            }
            ExprKind::Call(call) if call.callee.name == "tied" => {
                let path = join_path(&body.scope, &body.next_index.to_string());
                body.next_index += 1;
                self.tied(&call.args, stage.span, body, &path, input)
            }
            ExprKind::Name(ident) if body.layers.contains_key(&ident.name) => {
                body.used.insert(ident.name.clone());
                let bound = body.layers[&ident.name].clone();
                self.apply_bound(
                    &bound,
                    &join_path(&body.scope, &ident.name),
                    input,
                    stage.span,
                )
            }
            ExprKind::Name(ident)
                if body.tensors.contains_key(&ident.name) || body.env.contains_key(&ident.name) =>
            {
                self.errors.push(CheckError::TypeMismatch {
                    expected: "a layer".into(),
                    found: format!("`{}`, which is not a layer", ident.name),
                    span: stage.span,
                    help: Some("after `|>` comes a layer, a module or `repeat`".into()),
                });
                None
            }
            _ => {
                let bound = self.bind_layer(stage, &body.env, Some(&body.layers))?;
                let path = join_path(&body.scope, &body.next_index.to_string());
                body.next_index += 1;
                self.apply_bound(&bound, &path, input, stage.span)
            }
        }
    }

    /// `repeat N { chain }` under `path`: N copies of the chain, each with
    /// its own weights, copy i named `path.i` (`path.i.j` for the j-th
    /// stage of a chain of several).
    fn repeat(
        &mut self,
        count: i64,
        count_span: Span,
        chain: &'a [Expr],
        path: &str,
        body: &mut Body<'a>,
        input: TensorRef,
    ) -> Option<TensorRef> {
        if count < 1 {
            self.errors.push(CheckError::invalid(
                format!("repeat needs a count of at least 1, got {count}"),
                count_span,
                "here",
            ));
            return None;
        }
        let mut value = input;
        // A copy in the model's own forward is one of its blocks.
        let top = body.scope.is_empty();
        let mut inputs: Vec<Shape> = Vec::new();
        for copy in 0..count {
            if self.nodes.len() > MAX_NODES {
                self.errors.push(CheckError::invalid(
                    format!("the model grows past {MAX_NODES} operations"),
                    count_span,
                    "too many copies",
                ));
                return None;
            }
            let copy_path = join_path(path, &copy.to_string());
            inputs.push(value.shape.clone());
            let first_error = self.errors.len();
            self.display
                .push(format!("repeat {count}, copy {}", copy + 1));
            let result = self.as_block(&copy_path, (top, true), |this| {
                this.repeat_copy(chain, &copy_path, body, value)
            });
            self.display.pop();
            if result.is_none() && copy > 0 {
                // Earlier copies were fine: say which copy, and how its
                // input got there.
                let chain_span = chain
                    .iter()
                    .map(|e| e.span)
                    .reduce(Span::to)
                    .unwrap_or(count_span);
                let sizes: Vec<String> = inputs.iter().map(|s| shape_to_string(s)).collect();
                let frame = Frame {
                    span: count_span,
                    name: format!("the {} copy of `repeat {count}`", ordinal(copy + 1)),
                    label: format!(
                        "copy {} of {count}; the copies' inputs: {}",
                        copy + 1,
                        sizes.join(" → ")
                    ),
                };
                wrap_inside(&mut self.errors, first_error, chain_span, &frame);
            }
            value = result?;
        }
        Some(value)
    }

    /// One copy of a `repeat`'s chain, at `copy_path`.
    fn repeat_copy(
        &mut self,
        chain: &'a [Expr],
        copy_path: &str,
        body: &mut Body<'a>,
        mut value: TensorRef,
    ) -> Option<TensorRef> {
        for (i, inner) in chain.iter().enumerate() {
            let inner_path = if chain.len() == 1 {
                copy_path.to_string()
            } else {
                join_path(copy_path, &i.to_string())
            };
            if let ExprKind::Name(ident) = &inner.kind {
                if body.layers.contains_key(&ident.name) || body.repeats.contains_key(&ident.name) {
                    self.errors.push(CheckError::Unsupported {
                        message: format!("the named layer `{}` inside `repeat` would be one layer shared by every copy", ident.name),
                        span: inner.span,
                        help: Some("write the layer inline so that each copy has its own weights".into()),
                    });
                    return None;
                }
            }
            let bound = self.bind_layer(inner, &body.env, Some(&body.layers))?;
            value = self.apply_bound(&bound, &inner_path, value, inner.span)?;
        }
        Some(value)
    }

    /// `tied(embed)`: an output projection that uses the named embedding's
    /// weight ([vocabulary, d]) as its own (a linear layer without bias):
    /// one parameter, under the embedding's name, trained by the gradients
    /// of both uses (GPT-2's tied output layer).
    fn tied(
        &mut self,
        args: &'a [Arg],
        span: Span,
        body: &mut Body<'a>,
        path: &str,
        input: TensorRef,
    ) -> Option<TensorRef> {
        let help = "`tied(embed)` takes the name of an `embedding` layer of this module, e.g. `embed = embedding(50257, 768)`";
        let name = match args {
            [Arg {
                name: None,
                value:
                    Expr {
                        kind: ExprKind::Name(ident),
                        ..
                    },
                ..
            }] => ident,
            _ => {
                self.errors.push(CheckError::TypeMismatch {
                    expected: "the name of an embedding layer".into(),
                    found: format!("{} argument(s)", args.len()),
                    span,
                    help: Some(help.into()),
                });
                return None;
            }
        };
        let Some(bound) = body.layers.get(&name.name) else {
            self.errors.push(CheckError::UnknownName {
                kind: "layer",
                name: name.name.clone(),
                span: name.span,
                help: did_you_mean(&name.name, body.layers.keys().map(String::as_str))
                    .or_else(|| Some(help.into())),
            });
            return None;
        };
        let Callee::Builtin(Builtin::Embedding) = bound.callee else {
            self.errors.push(CheckError::TypeMismatch {
                expected: "an `embedding` layer".into(),
                found: format!("`{}`, which is not an embedding", name.name),
                span: name.span,
                help: Some(help.into()),
            });
            return None;
        };
        body.used.insert(name.name.clone());
        let (vocabulary, width) = (bound.values[0].as_int(), bound.values[1].as_int());
        let weight = join_path(&join_path(&body.scope, &name.name), "weight");
        if !self.tensor_names.contains(&weight) {
            self.errors.push(CheckError::Unsupported {
                message: format!("`tied({})` before `{}` is used", name.name, name.name),
                span,
                help: Some(format!(
                    "apply `{}` to the input first; the output layer then reuses its weight",
                    name.name
                )),
            });
            return None;
        }
        if input.shape.last() != Some(&Dim::Size(width)) {
            self.errors.push(CheckError::ShapeMismatch {
                expected: format!("[..., {width}]"),
                found: shape_to_string(&input.shape),
                span,
                what: format!(
                    "tied({}) maps {width}-wide vectors to {vocabulary} scores with the embedding's weight",
                    name.name
                ),
                help: None,
            });
            return None;
        }
        let mut output = input.shape.clone();
        *output.last_mut().expect("the shape has a last dimension") = Dim::Size(vocabulary);
        let op = Op::Linear {
            in_features: width,
            out_features: vocabulary,
            weight,
            bias: None,
        };
        Some(self.push_node(path.to_string(), op, &[input], output, span))
    }

    pub(super) fn apply_bound(
        &mut self,
        bound: &BoundLayer<'a>,
        path: &str,
        input: TensorRef,
        span: Span,
    ) -> Option<TensorRef> {
        match bound.callee {
            Callee::Builtin(Builtin::Embedding)
                if !passes_input_through(&self.nodes, input.node) =>
            {
                self.errors.push(CheckError::TypeMismatch {
                    expected: "token ids from the data (an embedding looks its input up as indices)".into(),
                    found: format!("values computed by `{}`", self.node_names[input.node]),
                    span,
                    help: Some(
                        "feed an embedding the model's input (text or tokens, or whole-number arrays); to map real values, use `linear`".into(),
                    ),
                });
                None
            }
            Callee::Builtin(builtin) => {
                match builtin.apply(&bound.values, path, &input.shape, span) {
                    Ok(applied) => {
                        for param in applied.params.iter().chain(&applied.buffers) {
                            let numel = param
                                .shape
                                .iter()
                                .try_fold(1i64, |acc, &n| acc.checked_mul(n));
                            if numel.is_none_or(|n| n > MAX_TENSOR_ELEMENTS) {
                                self.errors.push(CheckError::InvalidValue {
                                    message: format!("`{}` would hold {:?} values", param.name, param.shape),
                                    span,
                                    label: "too large for any machine".into(),
                                    help: Some(format!("a tensor may hold at most 2^40 values ({MAX_TENSOR_ELEMENTS})")),
                                });
                                return None;
                            }
                        }
                        for param in applied.params {
                            if self.tensor_names.insert(param.name.clone()) {
                                self.params.push(param);
                            }
                        }
                        for buffer in applied.buffers {
                            if self.tensor_names.insert(buffer.name.clone()) {
                                self.buffers.push(buffer);
                            }
                        }
                        Some(self.push_node(
                            path.to_string(),
                            applied.op,
                            &[input],
                            applied.output,
                            span,
                        ))
                    }
                    Err(err) => {
                        self.errors.push(err);
                        None
                    }
                }
            }
            Callee::Module(module) => {
                let env: Env = bound
                    .sig
                    .iter()
                    .map(|p| p.name.clone())
                    .zip(bound.values.iter().cloned())
                    .collect();
                // An instance in the model's own forward is one of its
                // blocks (a module test's subject, at "", is not).
                let top = !path.is_empty() && !path.contains('.');
                let first_error = self.errors.len();
                let params_before = self.params.len();
                let frame = instance_frame(module, bound, span);
                self.display.push(frame.name.trim_matches('`').to_string());
                // Each parameter's value in this instance, for hovers.
                for (param, value) in module.params.iter().zip(&bound.values) {
                    let text = value_text(value);
                    self.note_value(param.name.span, &param.name.name, text);
                }
                let result = self.as_block(path, (top, false), |this| {
                    this.instantiate(module, &env, path, input, span)
                });
                self.display.pop();
                match &result {
                    Some(value) => {
                        let parameters = self.params[params_before..]
                            .iter()
                            .map(|p| p.shape.iter().product::<i64>() as u64)
                            .sum();
                        let shape = value.shape.clone();
                        self.note(span, "", &shape, NoteKind::Instance { parameters });
                    }
                    None => wrap_inside(&mut self.errors, first_error, module.span, &frame),
                }
                result
            }
        }
    }
}

/// The frame of an error inside `module` at the call `span`: the call with
/// its values, `EncoderBlock(32, 5, 64)`, labelled with the parameters'
/// names, `d = 32, heads = 5, hidden = 64`.
fn instance_frame(module: &ModuleDef, bound: &BoundLayer<'_>, span: Span) -> Frame {
    let values: Vec<String> = bound.values.iter().map(value_text).collect();
    // Trailing arguments left at their defaults are not written.
    let written = bound
        .sig
        .iter()
        .zip(&bound.values)
        .rposition(|(p, v)| p.default.as_ref() != Some(v))
        .map_or(0, |i| i + 1);
    let named: Vec<String> = bound
        .sig
        .iter()
        .zip(&values)
        .map(|(p, v)| format!("{} = {v}", p.name))
        .collect();
    Frame {
        span,
        name: format!("`{}({})`", module.name.name, values[..written].join(", ")),
        label: match named.is_empty() {
            true => format!("this `{}`", module.name.name),
            false => named.join(", "),
        },
    }
}
