//! The whole model on rank 0, for the files it writes: with pipeline stages
//! each stage holds its own layers, and replica 0's stages send theirs to
//! stage 0 (rank 0), named by parameter, so `model.safetensors` and every
//! checkpoint are one unsharded file whatever the layout that wrote them.
//!
//! Each stage sends a description (names and shapes, as int64 values) and
//! then its float32 tensors, in order; stage 0 allocates and receives.

use tch::{Device, Kind, Tensor};

use crate::comm::Communicator;
use crate::error::{RunError, TorchContext};

/// Named tensors, in the order they are written.
type Named = Vec<(String, Tensor)>;

/// Gathers every stage's `own` tensors on stage 0 of `pipeline` (which
/// gets them all, in stage order); the other stages get `None`. Every
/// stage of the pipeline calls it.
pub fn on_stage_zero(
    own: Named,
    pipeline: &dyn Communicator,
    step: u64,
) -> Result<Option<Named>, RunError> {
    let comm_err = |e: crate::comm::CommError| RunError::Collective {
        step,
        message: format!("gather the weights: {}", e.0),
    };
    let stage = pipeline.rank();
    if stage != 0 {
        let own: Named = own
            .into_iter()
            .map(|(n, t)| {
                t.f_detach()
                    .and_then(|t| t.f_to_device(Device::Cpu))
                    .and_then(|t| t.f_to_kind(Kind::Float))
                    .and_then(|t| t.f_contiguous())
                    .map(|t| (n, t))
            })
            .collect::<Result<_, _>>()
            .context(|| format!("step {step}: gather the weights"))?;
        let description = Tensor::from_slice(&describe(&own));
        let length = Tensor::from_slice(&[description.numel() as i64]);
        pipeline
            .exchange(&[(&length, 0)], &mut [])
            .map_err(comm_err)?;
        pipeline
            .exchange(&[(&description, 0)], &mut [])
            .map_err(comm_err)?;
        let sends: Vec<(&Tensor, usize)> = own.iter().map(|(_, t)| (t, 0)).collect();
        pipeline.exchange(&sends, &mut []).map_err(comm_err)?;
        return Ok(None);
    }
    let mut all = own;
    for from in 1..pipeline.size() {
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
        let mut tensors: Vec<Tensor> = described
            .iter()
            .map(|(_, shape)| Tensor::zeros(shape.as_slice(), (Kind::Float, Device::Cpu)))
            .collect();
        let mut recvs: Vec<(&mut Tensor, usize)> = tensors.iter_mut().map(|t| (t, from)).collect();
        pipeline.exchange(&[], &mut recvs).map_err(comm_err)?;
        all.extend(described.into_iter().map(|(n, _)| n).zip(tensors));
    }
    Ok(Some(all))
}

/// `[count, then per tensor: name length, name bytes…, rank, dims…]`.
fn describe(tensors: &Named) -> Vec<i64> {
    let mut out = vec![tensors.len() as i64];
    for (name, t) in tensors {
        out.push(name.len() as i64);
        out.extend(name.bytes().map(i64::from));
        let size = t.size();
        out.push(size.len() as i64);
        out.extend(size);
    }
    out
}

fn read_description(values: &[i64]) -> Option<Vec<(String, Vec<i64>)>> {
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
        out.push((String::from_utf8(bytes).ok()?, shape));
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
        let back = read_description(&describe(&named)).unwrap();
        assert_eq!(
            back,
            vec![
                ("0.weight".to_string(), vec![3, 4]),
                ("1.bias".to_string(), vec![7])
            ]
        );
        assert!(read_description(&[2, 3]).is_none());
    }
}
