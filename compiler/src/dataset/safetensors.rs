//! Named tensors of a safetensors file (the format `torch` and `safetensors`
//! write), read as numbers: float32/64, bfloat16/float16, integers, bool.

use std::path::Path;

use safetensors::{Dtype, SafeTensors};

#[derive(Debug)]
pub struct Array {
    pub shape: Vec<i64>,
    pub values: Vec<f64>,
}

/// Reads the tensors called `names`, in that order.
pub fn read(
    path: &Path,
    names: &[&String],
    meter: &mut super::read::Meter,
) -> Result<Vec<Array>, String> {
    parse(&super::read::bytes(path, meter)?, names)
}

pub fn parse(bytes: &[u8], names: &[&String]) -> Result<Vec<Array>, String> {
    let file =
        SafeTensors::deserialize(bytes).map_err(|e| format!("not a safetensors file ({e:?})"))?;
    names
        .iter()
        .map(|name| {
            let view = file.tensor(name).map_err(|_| {
                let mut present = file.names();
                present.sort();
                format!("no tensor `{name}` (the file has: {present:?})")
            })?;
            let values = convert(view.dtype(), view.data()).ok_or_else(|| {
                format!("tensor `{name}`: dtype {:?} is not supported", view.dtype())
            })?;
            Ok(Array {
                shape: view.shape().iter().map(|d| *d as i64).collect(),
                values,
            })
        })
        .collect()
}

fn convert(dtype: Dtype, data: &[u8]) -> Option<Vec<f64>> {
    fn each<const N: usize>(data: &[u8], f: impl Fn([u8; N]) -> f64) -> Vec<f64> {
        data.chunks_exact(N)
            .map(|c| f(c.try_into().expect("chunk of N")))
            .collect()
    }
    Some(match dtype {
        Dtype::F64 => each(data, f64::from_le_bytes),
        Dtype::F32 => each(data, |b| f32::from_le_bytes(b) as f64),
        // bfloat16 is the upper half of a float32.
        Dtype::BF16 => each(data, |b: [u8; 2]| {
            f32::from_bits((u16::from_le_bytes(b) as u32) << 16) as f64
        }),
        Dtype::F16 => each(data, |b| half_to_f64(u16::from_le_bytes(b))),
        Dtype::I64 => each(data, |b| i64::from_le_bytes(b) as f64),
        Dtype::I32 => each(data, |b| i32::from_le_bytes(b) as f64),
        Dtype::I16 => each(data, |b| i16::from_le_bytes(b) as f64),
        Dtype::I8 => each(data, |b: [u8; 1]| b[0] as i8 as f64),
        Dtype::U8 | Dtype::BOOL => each(data, |b: [u8; 1]| b[0] as f64),
        _ => return None,
    })
}

/// IEEE 754 half precision to double.
fn half_to_f64(h: u16) -> f64 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exponent = ((h >> 10) & 0x1f) as i32;
    let mantissa = (h & 0x3ff) as f64;
    sign * match exponent {
        0 => mantissa * 2f64.powi(-24),
        31 if mantissa == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        e => (1.0 + mantissa / 1024.0) * 2f64.powi(e - 15),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A safetensors file by hand: header length, JSON header, data.
    fn file(tensors: &[(&str, &str, &[usize], Vec<u8>)]) -> Vec<u8> {
        let (mut header, mut data) = (Vec::new(), Vec::<u8>::new());
        for (name, dtype, shape, bytes) in tensors {
            let begin = data.len();
            data.extend(bytes);
            header.push(format!(
                "\"{name}\":{{\"dtype\":\"{dtype}\",\"shape\":{shape:?},\"data_offsets\":[{begin},{}]}}",
                data.len()
            ));
        }
        let header = format!("{{{}}}", header.join(","));
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend(header.as_bytes());
        out.extend(data);
        out
    }

    #[test]
    fn reads_named_tensors() {
        let x: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let y: Vec<u8> = [3i64].iter().flat_map(|v| v.to_le_bytes()).collect();
        let half: Vec<u8> = [0x3c00u16, 0xc000]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let bytes = file(&[
            ("x", "F32", &[1, 2], x),
            ("y", "I64", &[1], y),
            ("h", "F16", &[2], half),
        ]);
        let names = ["x".to_string(), "y".to_string(), "h".to_string()];
        let arrays = parse(&bytes, &names.iter().collect::<Vec<_>>()).unwrap();
        assert_eq!(arrays[0].shape, vec![1, 2]);
        assert_eq!(arrays[0].values, vec![1.5, -2.0]);
        assert_eq!(arrays[1].values, vec![3.0]);
        assert_eq!(arrays[2].values, vec![1.0, -2.0]);
        let missing = "z".to_string();
        let err = parse(&bytes, &[&missing]).unwrap_err();
        assert!(
            err.contains("no tensor `z`") && err.contains("\"x\""),
            "{err}"
        );
        assert!(parse(b"garbage", &[&missing])
            .unwrap_err()
            .contains("not a safetensors"));
    }
}
