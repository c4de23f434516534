//! `upsample(size, scale, mode = "nearest", align_corners = false)`: an
//! image resized to `size` (`[height, width]`, or one number for both) or
//! by `scale` (a factor, or `[height, width]` factors), as `nn.Upsample`
//! and `F.interpolate` resize it: `"nearest"` copies the nearest input
//! position, `"bilinear"` interpolates.

use super::{bool_or, Args, Call, Layer};
use crate::check::args::{ParamSig, Ty, Value, ABSENT};
use crate::check::library::shapes::{spatial_sizes, Spatial};
use crate::check::library::Applied;
use crate::check::CheckError;
use crate::plan::{Dim, Op, UpsampleMode};
use crate::util::suggest::did_you_mean;

const SIZE: usize = 0;
const SCALE: usize = 1;
const MODE: usize = 2;
const ALIGN_CORNERS: usize = 3;

const MODES: [(&str, UpsampleMode); 2] = [
    ("nearest", UpsampleMode::Nearest),
    ("bilinear", UpsampleMode::Bilinear),
];

pub struct Upsample;

impl Upsample {
    fn mode(args: &Args<'_>) -> Option<UpsampleMode> {
        let written = args.values[MODE].as_str();
        MODES.iter().find(|(n, _)| *n == written).map(|(_, m)| *m)
    }
}

impl Layer for Upsample {
    fn signature(&self) -> Vec<ParamSig> {
        let absent = || Value::Name(ABSENT.into());
        vec![
            ParamSig::optional("size", Ty::IntOrPair, absent()),
            ParamSig::optional("scale", Ty::FloatOrPair, absent()),
            ParamSig::optional("mode", Ty::Str, Value::Str("nearest".into())),
            bool_or("align_corners", false),
        ]
    }

    fn validate(&self, args: &Args<'_>) -> Result<(), CheckError> {
        let (size, scale) = (&args.values[SIZE], &args.values[SCALE]);
        match (size.is_absent(), scale.is_absent()) {
            (true, true) => {
                return Err(CheckError::InvalidValue {
                    message: "upsample needs a `size` or a `scale`".into(),
                    span: args.span,
                    label: "neither given".into(),
                    help: Some("e.g. `upsample(scale: 2)` doubles the height and width, `upsample(size: [16, 24])` resizes to 16 × 24".into()),
                })
            }
            (false, false) => {
                return Err(CheckError::InvalidValue {
                    message: "upsample takes a `size` or a `scale`, not both".into(),
                    span: args.span,
                    label: "both given".into(),
                    help: Some("keep one: the size follows from the scale".into()),
                })
            }
            (false, true) => args.pair_at_least(SIZE, 1)?,
            (true, false) => {
                if scale.as_float_pair().iter().any(|s| *s <= 0.0) {
                    return Err(CheckError::invalid(
                        "upsample: `scale` must be greater than 0",
                        args.span,
                        "here",
                    ));
                }
            }
        }
        let Some(mode) = Self::mode(args) else {
            let written = args.values[MODE].as_str();
            let names = MODES.iter().map(|(n, _)| *n);
            return Err(CheckError::UnknownName {
                kind: "upsample mode",
                name: written.to_string(),
                span: args.span,
                help: did_you_mean(written, names)
                    .or_else(|| Some("the modes are \"nearest\" and \"bilinear\"".into())),
            });
        };
        if mode == UpsampleMode::Nearest && args.flag(ALIGN_CORNERS) {
            return Err(CheckError::InvalidValue {
                message: "upsample: `align_corners` applies to bilinear interpolation only".into(),
                span: args.span,
                label: "nearest has no corners to align".into(),
                help: Some("use `mode: \"bilinear\"`, or leave align_corners out".into()),
            });
        }
        Ok(())
    }

    fn apply(&self, call: &Call<'_>) -> Result<Applied, CheckError> {
        let a = &call.args;
        let [h, w] =
            <[i64; 2]>::try_from(spatial_sizes(a.layer, call.input, Spatial::Two, a.span)?)
                .expect("two spatial sizes");
        let scale = (!a.values[SCALE].is_absent()).then(|| a.values[SCALE].as_float_pair());
        let [height, width] = match scale {
            // F.interpolate's output size: each input size times its
            // factor, truncated.
            Some([sh, sw]) => [(h as f64 * sh) as i64, (w as f64 * sw) as i64],
            None => a.pair(SIZE),
        };
        if height < 1 || width < 1 {
            return Err(CheckError::ShapeMismatch {
                expected: "at least one position in each dimension".into(),
                found: format!("{h} × {w} scaled to {height} × {width}"),
                span: a.span,
                what: "upsample: the scale leaves nothing".into(),
                help: None,
            });
        }
        let mut output = call.input[..2].to_vec();
        output.extend([Dim::Size(height), Dim::Size(width)]);
        let op = Op::Upsample {
            mode: Self::mode(a).expect("validated"),
            height,
            width,
            scale,
            align_corners: a.flag(ALIGN_CORNERS),
        };
        Ok(Applied::stateless(op, output))
    }
}
