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

/// A sliding window along one dimension: its taps `dilation` apart.
#[derive(Debug, Clone, Copy)]
pub(super) struct Window {
    pub kernel: i64,
    pub stride: i64,
    pub padding: i64,
    pub dilation: i64,
}

impl Window {
    /// A window of adjacent taps (pooling).
    pub(super) fn dense(kernel: i64, stride: i64, padding: i64) -> Self {
        Window {
            kernel,
            stride,
            padding,
            dilation: 1,
        }
    }

    /// The positions the window spans: dilation · (kernel − 1) + 1.
    fn span(self) -> i64 {
        self.dilation * (self.kernel - 1) + 1
    }
}

/// Output size of a sliding window (convolution, pooling):
/// ⌊(size + 2·padding − dilation·(kernel − 1) − 1) / stride⌋ + 1.
pub(super) fn window_out(
    layer: Builtin,
    size: i64,
    window: Window,
    span: Span,
) -> Result<i64, CheckError> {
    let Window {
        kernel,
        stride,
        padding,
        dilation,
    } = window;
    let out = (size + 2 * padding - window.span()).div_euclid(stride) + 1;
    if out < 1 {
        let dilated = if dilation == 1 {
            String::new()
        } else {
            format!(", dilation {dilation}")
        };
        return Err(CheckError::ShapeMismatch {
            expected: format!(
                "an input of at least {} (kernel {kernel}{dilated}, padding {padding})",
                window.span() - 2 * padding
            ),
            found: format!("size {size}"),
            span,
            what: format!("`{}`: the window does not fit", layer.name()),
            help: None,
        });
    }
    Ok(out)
}

/// Output size of a transposed convolution: (size − 1)·stride − 2·padding
/// + dilation·(kernel − 1) + output_padding + 1.
pub(super) fn transposed_out(
    layer: Builtin,
    size: i64,
    window: Window,
    output_padding: i64,
    span: Span,
) -> Result<i64, CheckError> {
    let out = (size - 1) * window.stride - 2 * window.padding + window.span() + output_padding;
    if out < 1 {
        return Err(CheckError::ShapeMismatch {
            expected: "an output of at least one position".into(),
            found: format!(
                "size {size} → {out} (padding {} takes more than the kernel adds)",
                window.padding
            ),
            span,
            what: format!("`{}`: nothing is left", layer.name()),
            help: Some("lower `padding`".into()),
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
