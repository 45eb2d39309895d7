//! NumPy `.npy` files of float32 (little-endian, C order): model inputs and logits.

use std::path::Path;

use crate::io::atomic::write_atomic;
use crate::tensor::Tensor;

const MAGIC: &[u8] = b"\x93NUMPY";

#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: not a .npy file ({why})")]
    Format { path: String, why: String },
    #[error("{path}: dtype {descr} is not supported; expected float32 ('<f4'), e.g. x.astype(np.float32)")]
    Dtype { path: String, descr: String },
    #[error("{path}: Fortran-ordered arrays are not supported; save with np.ascontiguousarray")]
    FortranOrder { path: String },
}

pub fn read_f32(path: &Path) -> Result<Tensor, NpyError> {
    let p = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| NpyError::Io { path: p.clone(), source })?;
    parse_f32(&bytes).map_err(|e| e.with_path(&p))
}

pub fn write_f32(path: &Path, t: &Tensor) -> Result<(), NpyError> {
    write_atomic(path, &encode_f32(t)).map_err(|source| NpyError::Io { path: path.display().to_string(), source })
}

pub fn encode_f32(t: &Tensor) -> Vec<u8> {
    let shape = match t.shape() {
        [n] => format!("({n},)"),
        s => format!("({})", s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    // Pad so the data starts on a 64-byte boundary, ending with a newline (format v1.0).
    let unpadded = MAGIC.len() + 2 + 2 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(MAGIC.len() + 4 + header.len() + t.numel() * 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in t.data() {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

pub fn parse_f32(bytes: &[u8]) -> Result<Tensor, NpyError> {
    let fmt = |why: &str| NpyError::Format { path: String::new(), why: why.to_string() };
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(fmt("missing \\x93NUMPY magic"));
    }
    let (header_len, start): (usize, usize) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        v => return Err(fmt(&format!("unsupported format version {v}"))),
    };
    let end = start.checked_add(header_len).filter(|&e| e <= bytes.len()).ok_or_else(|| fmt("truncated header"))?;
    let header = std::str::from_utf8(&bytes[start..end]).map_err(|_| fmt("header is not text"))?;
    let descr = dict_value(header, "descr").ok_or_else(|| fmt("header has no 'descr'"))?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"').to_string();
    if descr != "<f4" && descr != "|f4" {
        return Err(NpyError::Dtype { path: String::new(), descr });
    }
    if dict_value(header, "fortran_order").map(str::trim) == Some("True") {
        return Err(NpyError::FortranOrder { path: String::new() });
    }
    let shape_txt = dict_value(header, "shape").ok_or_else(|| fmt("header has no 'shape'"))?;
    let shape = shape_txt
        .trim()
        .trim_start_matches('(')
        .trim_end_matches(')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| fmt(&format!("bad shape {shape_txt}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let numel = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or_else(|| fmt("shape overflows"))?;
    let data = &bytes[end..];
    if numel.checked_mul(4) != Some(data.len()) {
        return Err(fmt(&format!("shape {shape:?} needs {numel} float32 values but the file holds {} bytes of data", data.len())));
    }
    let values = data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    Ok(Tensor::new(shape, values).expect("length checked above"))
}

/// The raw text of one value in the header's Python dict literal.
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let at = header.find(&format!("'{key}'")).or_else(|| header.find(&format!("\"{key}\"")))?;
    let rest = header[at + key.len() + 2..].trim_start().strip_prefix(':')?.trim_start();
    let end = if rest.starts_with('(') { rest.find(')')? + 1 } else { rest.find([',', '}'])? };
    Some(&rest[..end])
}

impl NpyError {
    fn with_path(self, p: &str) -> Self {
        let path = p.to_string();
        match self {
            NpyError::Format { why, .. } => NpyError::Format { path, why },
            NpyError::Dtype { descr, .. } => NpyError::Dtype { path, descr },
            NpyError::FortranOrder { .. } => NpyError::FortranOrder { path },
            e @ NpyError::Io { .. } => e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for shape in [vec![3], vec![2, 3, 4, 5], vec![], vec![0, 4]] {
            let n: usize = shape.iter().product();
            let t = Tensor::new(shape, (0..n).map(|i| i as f32 * 0.5 - 1.0).collect()).unwrap();
            let bytes = encode_f32(&t);
            assert_eq!((bytes.len() - t.numel() * 4) % 64, 0);
            assert_eq!(parse_f32(&bytes).unwrap(), t);
        }
    }

    #[test]
    fn numpy_written_header_parses() {
        let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2), }          \n";
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&[1, 0]);
        b.extend_from_slice(&(header.len() as u16).to_le_bytes());
        b.extend_from_slice(header.as_bytes());
        b.extend_from_slice(&1.5f32.to_le_bytes());
        b.extend_from_slice(&(-2f32).to_le_bytes());
        assert_eq!(parse_f32(&b).unwrap().data(), &[1.5, -2.0]);
    }

    #[test]
    fn bad_files_are_errors() {
        let good = encode_f32(&Tensor::zeros(vec![2, 2]));
        assert!(parse_f32(b"hello").is_err());
        assert!(parse_f32(&good[..good.len() - 1]).is_err());
        assert!(parse_f32(&good[..20]).is_err());
        let replace = |from: &[u8], to: &[u8]| {
            let at = good.windows(from.len()).position(|w| w == from).unwrap();
            let mut b = good.clone();
            b[at..at + to.len()].copy_from_slice(to);
            b
        };
        assert!(matches!(parse_f32(&replace(b"<f4", b"<f8")), Err(NpyError::Dtype { .. })));
        assert!(matches!(parse_f32(&replace(b"False", b"True ")), Err(NpyError::FortranOrder { .. })));
        // Every truncation is an error, never a panic.
        for n in 0..good.len() {
            assert!(parse_f32(&good[..n]).is_err());
        }
    }
}
