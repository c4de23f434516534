//! The whole model written by rank 0, for the files it writes: with
//! pipeline stages each stage holds its own layers, and replica 0's stages
//! send theirs to stage 0 (rank 0), named by parameter, so
//! `model.safetensors` and every checkpoint are one unsharded file
//! whatever the layout that wrote them.
//!
//! Each stage sends a description (names and shapes, as int64 values)
//! first, so that stage 0 can write the file's header; then its tensors
//! one at a time, each made whole (under tensor parallelism, gathered over
//! its tensor group) just before it is sent, as float32. Stage 0 writes
//! each as it comes: no rank holds more than one tensor it does not own.

use std::path::Path;

use tch::{Device, Kind, Tensor};

use crate::comm::Communicator;
use crate::error::{RunError, TorchContext};
use crate::tensor_file::{Described, Lazy, TensorFile};

/// Named tensors, in the order they are written.
type Named = Vec<(String, Tensor)>;

/// Writes every stage's `own` tensors into `path` on stage 0 of
/// `pipeline` (`None`: no stages), in stage order, then stage 0's
/// `extra`, one tensor at a time. Every stage's first tensor rank calls
/// it. Stage 0 goes on receiving after a failed write, so that no stage
/// waits forever, and then gives the write's error (the inner one); a
/// tensor that could not be made or moved (its collective's peers left
/// waiting) is the outer error, given at once.
pub fn stream_to_stage_zero(
    own: Vec<Lazy<'_>>,
    pipeline: Option<&dyn Communicator>,
    (path, extra): (&Path, Named),
    step: u64,
) -> Result<Result<(), RunError>, RunError> {
    let comm_err = |e: crate::comm::CommError| RunError::Collective {
        step,
        message: format!("gather the weights: {}", e.0),
    };
    let stage = pipeline.map_or(0, |p| p.rank());
    if let (Some(pipeline), true) = (pipeline, stage != 0) {
        let description = Tensor::from_slice(&describe(own.iter().map(|l| &l.described)));
        let length = Tensor::from_slice(&[description.numel() as i64]);
        pipeline
            .exchange(&[(&length, 0)], &mut [])
            .map_err(comm_err)?;
        pipeline
            .exchange(&[(&description, 0)], &mut [])
            .map_err(comm_err)?;
        for lazy in own {
            let t = lazy
                .make()?
                .f_detach()
                .and_then(|t| t.f_to_device(Device::Cpu))
                .and_then(|t| t.f_to_kind(Kind::Float))
                .and_then(|t| t.f_contiguous())
                .context(|| format!("step {step}: gather the weights"))?;
            pipeline.exchange(&[(&t, 0)], &mut []).map_err(comm_err)?;
        }
        return Ok(Ok(()));
    }
    let mut stages = Vec::new();
    for from in 1..pipeline.map_or(1, |p| p.size()) {
        let pipeline = pipeline.expect("stages");
        let mut length = Tensor::from_slice(&[0i64]);
        pipeline
            .exchange(&[], &mut [(&mut length, from)])
            .map_err(comm_err)?;
        let n = length.int64_value(&[0]);
        let mut description = Tensor::zeros([n], (Kind::Int64, Device::Cpu));
        pipeline
            .exchange(&[], &mut [(&mut description, from)])
            .map_err(comm_err)?;
        let described = read_description(
            &Vec::<i64>::try_from(&description)
                .context(|| format!("step {step}: read stage {from}'s description"))?,
        )
        .ok_or_else(|| RunError::Collective {
            step,
            message: format!("stage {from} described its weights in a form stage 0 cannot read"),
        })?;
        stages.push((from, described));
    }
    let described = own
        .iter()
        .map(|l| l.described.clone())
        .chain(stages.iter().flat_map(|(_, d)| d.iter().cloned()))
        .chain(extra.iter().map(|(n, t)| Described::of(n, t)))
        .collect();
    // The first failure to write; the tensors still come.
    let mut file = TensorFile::create(path, described);
    let mut put = |t: &Tensor| {
        if let Ok(f) = &mut file {
            if let Err(e) = f.put(t) {
                file = Err(e);
            }
        }
    };
    for lazy in own {
        put(&lazy.make()?);
    }
    for (from, described) in stages {
        let pipeline = pipeline.expect("stages");
        for d in described {
            let mut t = Tensor::zeros(d.shape.as_slice(), (Kind::Float, Device::Cpu));
            pipeline
                .exchange(&[], &mut [(&mut t, from)])
                .map_err(comm_err)?;
            put(&t);
        }
    }
    for (_, t) in &extra {
        put(t);
    }
    Ok(file.and_then(TensorFile::finish))
}

/// `[count, then per tensor: name length, name bytes…, rank, dims…]`.
fn describe<'a>(tensors: impl ExactSizeIterator<Item = &'a Described>) -> Vec<i64> {
    let mut out = vec![tensors.len() as i64];
    for d in tensors {
        out.push(d.name.len() as i64);
        out.extend(d.name.bytes().map(i64::from));
        out.push(d.shape.len() as i64);
        out.extend(&d.shape);
    }
    out
}

/// A stage's description: its tensors, as float32 (as they are sent).
fn read_description(values: &[i64]) -> Option<Vec<Described>> {
    let mut at = values.iter().copied();
    let count = at.next()?;
    let mut out = Vec::new();
    for _ in 0..count {
        let len = at.next()? as usize;
        let bytes: Vec<u8> = (0..len)
            .map(|_| at.next().map(|b| b as u8))
            .collect::<Option<_>>()?;
        let rank = at.next()? as usize;
        let shape: Vec<i64> = (0..rank).map(|_| at.next()).collect::<Option<_>>()?;
        out.push(Described {
            name: String::from_utf8(bytes).ok()?,
            kind: Kind::Float,
            shape,
        });
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_read_back() {
        let named: Named = vec![
            (
                "0.weight".into(),
                Tensor::zeros([3, 4], (Kind::Float, Device::Cpu)),
            ),
            (
                "1.bias".into(),
                Tensor::zeros([7], (Kind::Float, Device::Cpu)),
            ),
        ];
        let described: Vec<Described> = named.iter().map(|(n, t)| Described::of(n, t)).collect();
        let back = read_description(&describe(described.iter())).unwrap();
        assert_eq!(back, described);
        assert!(read_description(&[2, 3]).is_none());
    }
}
