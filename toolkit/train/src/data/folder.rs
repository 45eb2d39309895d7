//! ImageFolder directories: one subfolder per class holding PNG/JPEG files; classes in sorted
//! name order. A dataset directory holds `train/` and `test/` (or `val/`) splits.

use std::path::{Path, PathBuf};

use super::{Dataset, Samples};
use crate::TrainError;

fn is_image(p: &Path) -> bool {
    p.extension().and_then(|e| e.to_str()).map(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg")).unwrap_or(false)
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, TrainError> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir).map_err(|e| TrainError::io(dir, e))?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    v.sort();
    Ok(v)
}

/// Images under `dir/<class>/`; `classes` fixes the label order (None: this folder's own).
pub fn image_folder(dir: &Path, classes: Option<&[String]>) -> Result<Dataset, TrainError> {
    let own: Vec<String> = sorted_entries(dir)?.iter().filter(|p| p.is_dir()).filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned())).collect();
    let classes: Vec<String> = classes.map(|c| c.to_vec()).unwrap_or(own.clone());
    if classes.is_empty() {
        return Err(TrainError::Data(format!("{}: no class subfolders (expected {}/<class>/*.png|jpg)", dir.display(), dir.display())));
    }
    let (mut files, mut labels) = (vec![], vec![]);
    for name in &own {
        let label = classes.iter().position(|c| c == name).ok_or_else(|| TrainError::Data(format!("{}: class {name:?} is not in the training split", dir.display())))?;
        for f in sorted_entries(&dir.join(name))?.into_iter().filter(|p| p.is_file() && is_image(p)) {
            files.push(f);
            labels.push(label);
        }
    }
    if files.is_empty() {
        return Err(TrainError::Data(format!("{}: no PNG/JPEG images in the class subfolders", dir.display())));
    }
    Ok(Dataset { samples: Samples::Files(files), labels, classes })
}

/// `dir/train` and `dir/test` (or `dir/val`).
pub fn open_split(dir: &Path) -> Result<(Dataset, Dataset), TrainError> {
    if !dir.is_dir() {
        return Err(TrainError::Data(format!("--data {}: not `fashion-mnist` and not a directory", dir.display())));
    }
    let train_dir = dir.join("train");
    let test_dir = ["test", "val"].iter().map(|s| dir.join(s)).find(|p| p.is_dir());
    let (true, Some(test_dir)) = (train_dir.is_dir(), test_dir) else {
        return Err(TrainError::Data(format!("{}: expected train/ and test/ (or val/) subfolders, each with one folder per class", dir.display())));
    };
    let train = image_folder(&train_dir, None)?;
    let test = image_folder(&test_dir, Some(&train.classes))?;
    Ok((train, test))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_layout_labels_and_errors() {
        let d = tempfile::tempdir().unwrap();
        for (split, class, n) in [("train", "cat", 2), ("train", "dog", 1), ("test", "dog", 1)] {
            let p = d.path().join(split).join(class);
            std::fs::create_dir_all(&p).unwrap();
            for i in 0..n {
                image::GrayImage::from_pixel(4, 3, image::Luma([i as u8 * 100])).save(p.join(format!("{i}.png"))).unwrap();
            }
            std::fs::write(p.join("notes.txt"), "skip me").unwrap();
        }
        let (tr, te) = open_split(d.path()).unwrap();
        assert_eq!(tr.classes, vec!["cat", "dog"]);
        assert_eq!(tr.labels, vec![0, 0, 1]);
        assert_eq!(te.labels, vec![1]);
        let img = tr.image(1).unwrap();
        assert_eq!((img.w, img.h, img.c, img.data[0]), (4, 3, 1, 100));
        std::fs::create_dir_all(d.path().join("test/bird")).unwrap();
        assert!(open_split(d.path()).unwrap_err().to_string().contains("bird"));
        assert!(open_split(&d.path().join("nope")).is_err());
        assert!(open_split(&d.path().join("train")).is_err());
    }
}
