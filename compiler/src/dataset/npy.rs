//! NumPy's `.npy` format (versions 1–3), little-endian numeric dtypes, C order.

use std::path::Path;

#[derive(Debug)]
pub struct Array {
    pub shape: Vec<i64>,
    pub values: Vec<f64>,
}

pub fn read(path: &Path, meter: &mut super::read::Meter) -> Result<Array, String> {
    parse(&super::read::bytes(path, meter)?)
}

pub fn parse(bytes: &[u8]) -> Result<Array, String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("not a .npy file (bad magic)".into());
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(format!("unsupported .npy version {v}")),
    };
    let header = bytes
        .get(start..start + header_len)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or("truncated .npy header")?;
    let descr = field(header, "descr").ok_or("no dtype in the .npy header")?;
    let quote = descr.chars().next().ok_or("empty dtype")?;
    let descr = descr[1..]
        .split(quote)
        .next()
        .ok_or("bad dtype in the .npy header")?;
    if field(header, "fortran_order").is_some_and(|f| f.starts_with("True")) {
        return Err(
            "Fortran-ordered arrays are not supported; save with np.ascontiguousarray".into(),
        );
    }
    let shape_text = field(header, "shape").ok_or("no shape in the .npy header")?;
    let inner = shape_text.trim_start_matches('(');
    let inner = &inner[..inner.find(')').ok_or("bad shape in the .npy header")?];
    let shape: Vec<i64> = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| match s.parse::<i64>() {
            Ok(d) if d >= 0 => Ok(d),
            _ => Err(format!("bad dimension `{s}`")),
        })
        .collect::<Result<_, _>>()?;
    let count = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d as usize))
        .ok_or("shape too large")?;
    let data = &bytes[start + header_len..];
    let (size, convert): (usize, fn(&[u8]) -> f64) = match descr {
        "<f4" => (4, |b| f32::from_le_bytes(b.try_into().unwrap()) as f64),
        "<f8" => (8, |b| f64::from_le_bytes(b.try_into().unwrap())),
        "|u1" | "<u1" => (1, |b| b[0] as f64),
        "|i1" | "<i1" => (1, |b| b[0] as i8 as f64),
        "<i2" => (2, |b| i16::from_le_bytes(b.try_into().unwrap()) as f64),
        "<i4" => (4, |b| i32::from_le_bytes(b.try_into().unwrap()) as f64),
        "<i8" => (8, |b| i64::from_le_bytes(b.try_into().unwrap()) as f64),
        other => {
            return Err(format!(
                "dtype `{other}` is not supported (use float32/64 or int8..64, little-endian)"
            ))
        }
    };
    let needed = count.checked_mul(size).ok_or("shape too large")?;
    if data.len() != needed {
        return Err(format!(
            "the header's shape {shape:?} needs {needed} bytes of data after byte {}, the file has {}{}",
            start + header_len,
            data.len(),
            if data.len() < needed { " (truncated)" } else { "" }
        ));
    }
    let values = data[..needed].chunks_exact(size).map(convert).collect();
    Ok(Array { shape, values })
}

/// The text after `'key':` in the header dict.
fn field<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let at = header.find(&format!("'{key}'"))?;
    let rest = &header[at + key.len() + 2..];
    Some(rest[rest.find(':')? + 1..].trim_start())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
        let mut header =
            format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend((header.len() as u16).to_le_bytes());
        out.extend(header.as_bytes());
        out.extend(data);
        out
    }

    #[test]
    fn reads_floats_and_ints() {
        let data: Vec<u8> = [1.5f32, -2.0, 3.25, 0.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let a = parse(&npy("<f4", "(2, 2)", &data)).unwrap();
        assert_eq!(a.shape, vec![2, 2]);
        assert_eq!(a.values, vec![1.5, -2.0, 3.25, 0.0]);
        let data: Vec<u8> = [3i64, 7].iter().flat_map(|v| v.to_le_bytes()).collect();
        let a = parse(&npy("<i8", "(2,)", &data)).unwrap();
        assert_eq!((a.shape, a.values), (vec![2], vec![3.0, 7.0]));
    }

    #[test]
    fn rejects_truncated_and_unknown() {
        assert!(parse(&npy("<f4", "(4,)", &[0; 8]))
            .unwrap_err()
            .ends_with("(truncated)"));
        assert!(parse(&npy("<f4", "(1,)", &[0; 8]))
            .unwrap_err()
            .contains("needs 4 bytes"));
        assert!(parse(&npy(">f4", "(1,)", &[0; 4]))
            .unwrap_err()
            .contains("not supported"));
        assert!(parse(b"hello world").unwrap_err().contains("magic"));
    }
}
