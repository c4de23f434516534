//! The IDX format of MNIST and its relatives: big-endian sizes, unsigned
//! bytes (optionally gzip-compressed).

use std::path::Path;

#[derive(Debug)]
pub struct Array {
    pub shape: Vec<i64>,
    pub values: Vec<f32>,
}

pub fn read(path: &Path, meter: &mut super::read::Meter) -> Result<Array, String> {
    parse(&super::read::bytes(path, meter)?)
}

pub fn parse(bytes: &[u8]) -> Result<Array, String> {
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err("not an IDX file (bad magic)".into());
    }
    if bytes[2] != 0x08 {
        return Err(format!(
            "IDX type 0x{:02x} is not supported (only unsigned bytes, 0x08)",
            bytes[2]
        ));
    }
    let dims = bytes[3] as usize;
    let header = 4 + 4 * dims;
    if dims == 0 || bytes.len() < header {
        return Err("truncated IDX header".into());
    }
    let shape: Vec<i64> = (0..dims)
        .map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as i64)
        .collect();
    let count = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d as usize))
        .ok_or("shape too large")?;
    let data = &bytes[header..];
    if data.len() != count {
        return Err(format!(
            "the header's shape {shape:?} needs {count} bytes of data after byte {header}, the file has {}{}",
            data.len(),
            if data.len() < count { " (truncated)" } else { "" }
        ));
    }
    Ok(Array {
        shape,
        values: data[..count].iter().map(|b| *b as f32).collect(),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_images_and_labels() {
        let mut images = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2];
        images.extend([10, 20, 30, 40]);
        let a = super::parse(&images).unwrap();
        assert_eq!(a.shape, vec![2, 1, 2]);
        assert_eq!(a.values, vec![10.0, 20.0, 30.0, 40.0]);
        assert!(super::parse(&images[..18])
            .unwrap_err()
            .ends_with("(truncated)"));
        // A header that promises less than the file holds is wrong too.
        let mut longer = images.clone();
        longer.push(50);
        assert!(super::parse(&longer)
            .unwrap_err()
            .contains("needs 4 bytes of data after byte 16, the file has 5"));
    }
}
