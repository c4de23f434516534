//! Shape arithmetic shared by the layers: widths, channels, sliding
//! windows, flattening.

use super::Builtin;
use crate::check::CheckError;
use crate::plan::{shape_to_string, Dim, Shape};
use crate::span::Span;

/// The dimensions after `[B, C]` that a window slides or pools over: a
/// sequence's (`[B, C, L]`) or an image's (`[B, C, H, W]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Spatial {
    One,
    Two,
}

impl Spatial {
    pub(super) fn count(self) -> usize {
        match self {
            Spatial::One => 1,
            Spatial::Two => 2,
        }
    }

    fn layout(self) -> &'static str {
        match self {
            Spatial::One => "[B, C, L]",
            Spatial::Two => "[B, C, H, W]",
        }
    }
}

/// The divisor of `dim` nearest `heads`, for a help line.
pub(super) fn divisor_near(dim: i64, heads: i64) -> i64 {
    (1..=dim)
        .filter(|d| dim % d == 0)
        .min_by_key(|d| (d - heads).abs())
        .unwrap_or(1)
}

pub fn join_path(scope: &str, name: &str) -> String {
    if scope.is_empty() {
        name.to_string()
    } else {
        format!("{scope}.{name}")
    }
}

pub(super) fn check_last_dim(
    layer: Builtin,
    input: &Shape,
    expected: i64,
    span: Span,
) -> Result<(), CheckError> {
    match input.last() {
        Some(Dim::Size(found)) if *found == expected => Ok(()),
        Some(Dim::Size(found)) => Err(CheckError::WidthMismatch {
            layer: format!("`{}`", layer.name()),
            unit: "input features",
            expected,
            found: *found,
            span,
            help: Some(format!(
                "the input here has shape {}",
                shape_to_string(input)
            )),
        }),
        _ => Err(CheckError::ShapeMismatch {
            expected: format!("a last dimension of {expected}"),
            found: shape_to_string(input),
            span,
            what: format!("`{}` needs a known last dimension", layer.name()),
            help: None,
        }),
    }
}

/// The known sizes of the last `spatial` dimensions of `[B, C, spatial...]`.
pub(super) fn spatial_sizes(
    layer: Builtin,
    input: &Shape,
    spatial: Spatial,
    span: Span,
) -> Result<Vec<i64>, CheckError> {
    let layout = spatial.layout();
    if input.len() != spatial.count() + 2 {
        return Err(CheckError::ShapeMismatch {
            expected: layout.into(),
            found: shape_to_string(input),
            span,
            what: format!("`{}` takes {layout}", layer.name()),
            help: (spatial == Spatial::Two && input.len() == 2)
                .then(|| "reshape flat rows into images first, e.g. `reshape([1, 8, 8])`".into()),
        });
    }
    known_sizes(&input[2..], input, span, "known spatial sizes")
}

/// Like [`spatial_sizes`], and the channel dimension must be `channels`.
pub(super) fn check_channels(
    layer: Builtin,
    input: &Shape,
    spatial: Spatial,
    channels: i64,
    span: Span,
) -> Result<Vec<i64>, CheckError> {
    let sizes = spatial_sizes(layer, input, spatial, span)?;
    match &input[1] {
        Dim::Size(c) if *c == channels => Ok(sizes),
        Dim::Size(c) => Err(CheckError::WidthMismatch {
            layer: format!("`{}`", layer.name()),
            unit: "input channels",
            expected: channels,
            found: *c,
            span,
            help: Some(format!(
                "the input here has shape {} (channels are dimension 1)",
                shape_to_string(input)
            )),
        }),
        Dim::Symbol(_) => Err(CheckError::ShapeMismatch {
            expected: format!("{channels} channels"),
            found: shape_to_string(input),
            span,
            what: "unknown channel count".into(),
            help: None,
        }),
    }
}

/// Output size of a sliding window (convolution, pooling).
pub(super) fn window_out(
    layer: Builtin,
    size: i64,
    kernel: i64,
    stride: i64,
    padding: i64,
    span: Span,
) -> Result<i64, CheckError> {
    let out = (size + 2 * padding - kernel).div_euclid(stride) + 1;
    if out < 1 {
        return Err(CheckError::ShapeMismatch {
            expected: format!(
                "an input of at least {} (kernel {kernel}, padding {padding})",
                kernel - 2 * padding
            ),
            found: format!("size {size}"),
            span,
            what: format!("`{}`: the window does not fit", layer.name()),
            help: None,
        });
    }
    Ok(out)
}

pub(super) fn sample_size(input: &Shape, span: Span) -> Result<i64, CheckError> {
    let sizes = known_sizes(
        &input[1..],
        input,
        span,
        "known sizes after the batch dimension",
    )?;
    Ok(sizes.iter().fold(1i64, |acc, n| acc.saturating_mul(*n)))
}

/// The sizes of `dims` (part of `input`), or an error naming the symbol.
pub(super) fn known_sizes(
    dims: &[Dim],
    input: &Shape,
    span: Span,
    expected: &str,
) -> Result<Vec<i64>, CheckError> {
    dims.iter()
        .map(|d| match d {
            Dim::Size(n) => Ok(*n),
            Dim::Symbol(s) => Err(CheckError::ShapeMismatch {
                expected: expected.into(),
                found: shape_to_string(input),
                span,
                what: format!("`{s}` is not a known size"),
                help: None,
            }),
        })
        .collect()
}

pub(super) fn with_last(input: &Shape, size: i64) -> Shape {
    let mut out = input.clone();
    if let Some(last) = out.last_mut() {
        *last = Dim::Size(size);
    }
    out
}

pub(super) fn flatten(input: &Shape, span: Span) -> Result<Shape, CheckError> {
    if input.len() < 2 {
        return Err(CheckError::ShapeMismatch {
            expected: "a batch dimension and at least one more".into(),
            found: shape_to_string(input),
            span,
            what: "nothing to flatten".into(),
            help: None,
        });
    }
    Ok(vec![input[0].clone(), Dim::Size(sample_size(input, span)?)])
}
