//! Image folders in torchvision's `ImageFolder` convention: one subfolder
//! per class, classes numbered in name order, every image file below a
//! class folder (its subfolders too) in path order. The folder is listed at
//! start; images are decoded when a batch asks for them, so a folder of 10⁵
//! files costs a listing, not a read. Pixels come out as `ToTensor` gives
//! them: channels first, each value / 255 in float32.

use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageReader};

use super::read::{self, Meter};

/// The extensions `ImageFolder` takes (compared in lower case).
const EXTENSIONS: [&str; 9] = [
    "jpg", "jpeg", "png", "ppm", "bmp", "pgm", "tif", "tiff", "webp",
];

/// The largest image decoded: 16384 pixels a side, 256 MiB decoded.
const MAX_SIDE: u32 = 16384;
const MAX_BYTES: u64 = 256 << 20;

/// A listed image folder.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageFolder {
    /// Class names, in order: class i is `classes[i]`.
    pub classes: Vec<String>,
    /// Every image and its class.
    pub files: Vec<(PathBuf, i64)>,
}

impl ImageFolder {
    /// Lists `root` as torchvision does.
    pub fn list(root: &Path, meter: &Meter) -> Result<ImageFolder, String> {
        let mut classes: Vec<String> = Vec::new();
        for entry in std::fs::read_dir(root).map_err(|e| format!("cannot list: {e}"))? {
            let entry = entry.map_err(|e| format!("cannot list: {e}"))?;
            if entry.path().is_dir() {
                let name = entry.file_name();
                let name = name
                    .to_str()
                    .ok_or("a class folder whose name is not UTF-8")?;
                classes.push(name.to_string());
            }
        }
        if classes.is_empty() {
            return Err("no class folders (one subfolder per class, holding its images)".into());
        }
        classes.sort();
        let mut files = Vec::new();
        for (class, name) in classes.iter().enumerate() {
            let before = files.len();
            let mut folders = Vec::new();
            walk(&root.join(name), &mut folders, meter)?;
            // Python sorts os.walk's (folder, subfolders, files) tuples:
            // folders by path, then each folder's files by name.
            folders.sort();
            for (_, images) in folders {
                files.extend(images.into_iter().map(|p| (p, class as i64)));
            }
            if files.len() == before {
                return Err(format!(
                    "the class folder `{name}` holds no image ({})",
                    EXTENSIONS.map(|e| format!(".{e}")).join(", ")
                ));
            }
        }
        Ok(ImageFolder { classes, files })
    }
}

/// Lists the folder at `path` and decodes the first image of each class,
/// within `limits`: the folder's layout, sizes and channels are checked
/// before launch, its images read by the batches that need them. Under
/// `on_bad_row = skip` every image is decoded, and those that fail are
/// left out of the listing and counted.
pub fn probe(
    path: &str,
    channels: u32,
    size: [u32; 2],
    limits: &read::Limits,
) -> Result<(ImageFolder, super::Skipped), super::DataError> {
    let at = |path: &Path| {
        let path = path.display().to_string();
        move |message: String| super::DataError { path, message }
    };
    let meter = limits.meter();
    let mut folder = ImageFolder::list(Path::new(path), &meter).map_err(at(Path::new(path)))?;
    if meter.skip_bad_rows() {
        let skipped = folder
            .keep_readable(channels, size, &meter)
            .map_err(at(Path::new(path)))?;
        return Ok((folder, skipped));
    }
    let mut last = None;
    for (file, class) in &folder.files {
        if last != Some(class) {
            decode(file, channels, size).map_err(at(file))?;
            meter.check_time().map_err(at(Path::new(path)))?;
        }
        last = Some(class);
    }
    Ok((folder, super::Skipped::default()))
}

impl ImageFolder {
    /// Decodes every image and leaves out those that cannot be read (or
    /// are not `channels` × `size`), counting them; an error if none is
    /// left.
    pub fn keep_readable(
        &mut self,
        channels: u32,
        size: [u32; 2],
        meter: &Meter,
    ) -> Result<super::Skipped, String> {
        let mut skipped = super::Skipped::default();
        let mut kept = Vec::with_capacity(self.files.len());
        for (file, class) in std::mem::take(&mut self.files) {
            meter.check_time()?;
            let outcome = decode(&file, channels, size)
                .map(|_| ())
                .map_err(|e| format!("{}: {e}", file.display()));
            if skipped.row(outcome, true)? {
                kept.push((file, class));
            }
        }
        if kept.is_empty() {
            return Err(format!("no readable image: {}", skipped.words()));
        }
        self.files = kept;
        Ok(skipped)
    }
}

/// Every folder under `dir` (itself included) with its image files sorted
/// by name.
fn walk(dir: &Path, out: &mut Vec<(String, Vec<PathBuf>)>, meter: &Meter) -> Result<(), String> {
    meter.check_time()?;
    let listing = |e: std::io::Error| format!("cannot list {}: {e}", dir.display());
    let mut images = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(listing)? {
        let path = entry.map_err(listing)?.path();
        if path.is_dir() {
            walk(&path, out, meter)?;
        } else if is_image(&path) {
            images.push(path);
        }
    }
    images.sort();
    out.push((dir.to_string_lossy().into_owned(), images));
    Ok(())
}

fn is_image(path: &Path) -> bool {
    let name = path.to_string_lossy().to_lowercase();
    EXTENSIONS.iter().any(|e| name.ends_with(&format!(".{e}")))
}

/// The pixels of the image at `path`, `channels` × `size` (1: greyscale
/// as PIL's `convert("L")`, 3: `convert("RGB")`, alpha dropped), channels
/// first, each value / 255. The image must be `size` already.
pub fn decode(path: &Path, channels: u32, size: [u32; 2]) -> Result<Vec<f32>, String> {
    let file = read::open(path)?;
    let mut reader = ImageReader::new(std::io::BufReader::new(file))
        .with_guessed_format()
        .map_err(|e| format!("cannot read: {e}"))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_BYTES);
    reader.limits(limits);
    if reader.format().is_none() {
        return Err("not an image (no PNG, JPEG, BMP, PNM, TIFF or WebP signature)".into());
    }
    let image = reader
        .decode()
        .map_err(|e| format!("a damaged or unreadable image ({e})"))?;
    let [h, w] = size;
    if (image.height(), image.width()) != (h, w) {
        return Err(format!(
            "height {} and width {}, not the [{h}, {w}] of `size` (dtl does not resize: resize the folder first)",
            image.height(),
            image.width()
        ));
    }
    let pixels = match channels {
        1 => luminance(image),
        _ => image.to_rgb8().into_raw(),
    };
    let c = channels as usize;
    let plane = (h * w) as usize;
    let mut out = vec![0f32; c * plane];
    for (i, v) in pixels.iter().enumerate() {
        out[(i % c) * plane + i / c] = f32::from(*v) / 255.0;
    }
    Ok(out)
}

/// One byte a pixel, as PIL's `convert("L")`: a greyscale image as it is
/// (alpha dropped), colour by ITU-R 601-2 in PIL's integer arithmetic.
fn luminance(image: DynamicImage) -> Vec<u8> {
    match image {
        DynamicImage::ImageLuma8(buffer) => buffer.into_raw(),
        DynamicImage::ImageLumaA8(buffer) => buffer.into_raw().iter().step_by(2).copied().collect(),
        other => other
            .to_rgb8()
            .pixels()
            .map(|p| {
                let [r, g, b] = p.0.map(u32::from);
                ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16) as u8
            })
            .collect(),
    }
}
