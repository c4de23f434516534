//! An image folder as the rows of a dataset: the folder listed once, the
//! images of a batch decoded when the batch is asked for (on the data
//! thread, a few batches ahead of training).

use std::path::Path;
use std::sync::Arc;

use dtl_compiler::dataset::images::{self, ImageFolder};
use dtl_compiler::dataset::{Limits, Skipped};
use dtl_compiler::plan::{BadRows, DataSource};
use tch::Tensor;

use crate::error::{RunError, TorchContext};

/// Some of a folder's images: row i is `folder.files[files[i]]`.
#[derive(Clone)]
pub struct Images {
    pub folder: Arc<ImageFolder>,
    pub files: Arc<Vec<usize>>,
    pub channels: u32,
    pub size: [u32; 2],
    /// The data block's `scale`, times each pixel / 255.
    pub scale: f64,
}

/// Lists an image source's folder (classes and files; no image read,
/// unless `on_bad_row = skip`, which decodes every image and leaves out
/// and counts those that fail).
pub fn list(source: &DataSource, bad_rows: BadRows) -> Result<(ImageFolder, Skipped), RunError> {
    let DataSource::Images {
        path,
        size,
        channels,
    } = source
    else {
        unreachable!("listed sources are image folders")
    };
    let refuse = |message| RunError::Data {
        path: path.to_string(),
        message,
    };
    let meter = Limits::unbounded().meter();
    let mut folder = ImageFolder::list(Path::new(path), &meter).map_err(refuse)?;
    let skipped = match bad_rows {
        BadRows::Skip => folder
            .keep_readable(*channels, *size, &meter)
            .map_err(refuse)?,
        BadRows::Error => Skipped::default(),
    };
    Ok((folder, skipped))
}

impl Images {
    /// Rows `idx`: pixels `[n, C, H, W]` (float32) and classes `[n]`.
    pub fn at(&self, idx: &[i64]) -> Result<(Tensor, Tensor), RunError> {
        let [h, w] = self.size;
        let per_image = (self.channels * h * w) as usize;
        let mut pixels = Vec::with_capacity(idx.len() * per_image);
        let mut classes = Vec::with_capacity(idx.len());
        for &i in idx {
            let (file, class) = &self.folder.files[self.files[i as usize]];
            let values = images::decode(file, self.channels, self.size).map_err(|message| {
                RunError::Data {
                    path: file.display().to_string(),
                    message,
                }
            })?;
            pixels.extend(values);
            classes.push(*class);
        }
        let shape = [idx.len() as i64, self.channels as i64, h as i64, w as i64];
        let x = Tensor::from_slice(&pixels)
            .f_mul_scalar(self.scale)
            .and_then(|t| t.f_reshape(shape))
            .context(|| "arrange the images".to_string())?;
        Ok((x, Tensor::from_slice(&classes)))
    }
}
