//! What the CUDA backend finds on this machine, for `effv2_runtime::probe`: the libraries it
//! dlopens and their versions, and every GPU the driver lists — read through the driver's device
//! queries, without creating a context (cheap, and harmless to a GPU another process is using).

use cudarc::driver::{result, sys, DriverError};

use super::missing_library;
use crate::backends::{Found, Readiness};

pub(crate) fn probe() -> Found {
    if let Some(why) = missing_library() {
        return Found::unavailable(why);
    }
    match gpus() {
        Err(e) => Found::unavailable(format!("no usable CUDA GPU ({e})")),
        Ok(devices) if devices.is_empty() => Found::unavailable("the CUDA driver lists no GPU"),
        Ok(devices) => Found { readiness: Readiness::Ready, devices, detail: versions() },
    }
}

/// "GPU 0: NVIDIA H200 (sm_90), 139.8 GiB" for each GPU the driver lists.
fn gpus() -> Result<Vec<String>, DriverError> {
    use sys::CUdevice_attribute::{CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR as MAJOR, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR as MINOR};
    result::init()?;
    (0..result::device::get_count()?)
        .map(|i| {
            let dev = result::device::get(i)?;
            let name = result::device::get_name(dev)?;
            // SAFETY: `dev` came from cuDeviceGet just above.
            let (major, minor, bytes) =
                unsafe { (result::device::get_attribute(dev, MAJOR)?, result::device::get_attribute(dev, MINOR)?, result::device::total_mem(dev)?) };
            Ok(format!("GPU {i}: {name} (sm_{major}{minor}), {:.1} GiB", bytes as f64 / (1u64 << 30) as f64))
        })
        .collect()
}

/// The versions of the driver's CUDA API and of the libraries the engine loads.
fn versions() -> String {
    let mut driver = 0;
    // SAFETY: an out-pointer to an int; the driver library is present (missing_library).
    let driver = match unsafe { sys::cuDriverGetVersion(&mut driver) } {
        sys::CUresult::CUDA_SUCCESS => cuda_version(driver),
        e => format!("unknown ({e:?})"),
    };
    let (mut major, mut minor) = (0, 0);
    // SAFETY: out-pointers to ints; NVRTC is present (missing_library).
    let nvrtc = match unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) } {
        cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS => format!("{major}.{minor}"),
        e => format!("unknown ({e:?})"),
    };
    format!("CUDA driver API {driver}, cuDNN {}, cuBLAS {}, NVRTC {nvrtc}", cudnn_version(cudarc::cudnn::result::get_version()), cublas_version())
}

/// cuDriverGetVersion's 1000·major + 10·minor as "major.minor".
fn cuda_version(v: i32) -> String {
    format!("{}.{}", v / 1000, v % 1000 / 10)
}

/// CUDNN_VERSION as "major.minor.patch": 10000·major + 100·minor + patch since cuDNN 9,
/// 1000·major + 100·minor + patch before.
fn cudnn_version(v: usize) -> String {
    let (major, rest) = if v >= 90_000 { (v / 10_000, v % 10_000) } else { (v / 1000, v % 1000) };
    format!("{major}.{}.{}", rest / 100, rest % 100)
}

fn cublas_version() -> String {
    use cudarc::cublas::sys::{cublasGetProperty, cublasStatus_t::CUBLAS_STATUS_SUCCESS, libraryPropertyType as P};
    let mut parts = vec![];
    for p in [P::MAJOR_VERSION, P::MINOR_VERSION, P::PATCH_LEVEL] {
        let mut v = 0;
        // SAFETY: an out-pointer to an int; cuBLAS is present (missing_library).
        if unsafe { cublasGetProperty(p, &mut v) } != CUBLAS_STATUS_SUCCESS {
            return "unknown".into();
        }
        parts.push(v.to_string());
    }
    parts.join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_read_like_nvidia_writes_them() {
        assert_eq!(cuda_version(13000), "13.0");
        assert_eq!(cuda_version(12080), "12.8");
        assert_eq!(cudnn_version(91002), "9.10.2");
        assert_eq!(cudnn_version(90300), "9.3.0");
        assert_eq!(cudnn_version(8906), "8.9.6");
    }
}
