//! Run-time device selection shared by the CLI and the examples.
//!
//! Every stage takes a `&burn::Device`; this module turns the `--device` flag into one.

use std::fmt;
use std::str::FromStr;

use burn::tensor::Device;

/// A device named on the command line: `flex`, `tch`, `tch-cuda:N` or `cuda:N`.
///
/// `tch*` needs the `tch` feature (and a libtorch 2.9.0), `cuda:N` the `cuda` feature; asking
/// for one without its feature is an error, not a silent fallback to the CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceSpec {
    /// burn's pure-Rust CPU backend (the default).
    Flex,
    /// LibTorch on the CPU (`tch` feature).
    Tch,
    /// LibTorch on CUDA device N (`tch` feature).
    TchCuda(usize),
    /// CubeCL CUDA device N (`cuda` feature).
    Cuda(usize),
}

/// Why a `--device` value was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeviceError {
    /// The text is not one of the known device names.
    #[error("unknown device `{0}`: expected flex, tch, tch-cuda:N or cuda:N")]
    Unknown(String),
    /// The device exists but this binary was built without its feature.
    #[error("device `{device}` needs this binary built with `--features {feature}`")]
    NotCompiled {
        /// The device asked for.
        device: String,
        /// The cargo feature that enables it.
        feature: &'static str,
    },
}

impl FromStr for DeviceSpec {
    type Err = DeviceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let index = |rest: &str| {
            rest.parse::<usize>()
                .map_err(|_| DeviceError::Unknown(s.to_string()))
        };
        match s.trim() {
            "flex" | "cpu" => Ok(Self::Flex),
            "tch" => Ok(Self::Tch),
            other => {
                if let Some(rest) = other.strip_prefix("tch-cuda:") {
                    Ok(Self::TchCuda(index(rest)?))
                } else if let Some(rest) = other.strip_prefix("cuda:") {
                    Ok(Self::Cuda(index(rest)?))
                } else if other == "cuda" {
                    Ok(Self::Cuda(0))
                } else {
                    Err(DeviceError::Unknown(s.to_string()))
                }
            }
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Flex => write!(f, "flex"),
            Self::Tch => write!(f, "tch"),
            Self::TchCuda(i) => write!(f, "tch-cuda:{i}"),
            Self::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

impl DeviceSpec {
    /// Builds the burn device, or says which feature the binary lacks.
    pub fn device(&self) -> Result<Device, DeviceError> {
        match *self {
            Self::Flex => Ok(Device::flex()),
            #[cfg(feature = "tch")]
            #[allow(deprecated)]
            // burn-tch is deprecated upstream but is the LibTorch path we offer
            Self::Tch => Ok(Device::libtorch()),
            #[cfg(feature = "tch")]
            #[allow(deprecated)]
            Self::TchCuda(i) => Ok(Device::libtorch_cuda(i)),
            #[cfg(feature = "cuda")]
            Self::Cuda(i) => Ok(Device::cuda(i)),
            #[allow(unreachable_patterns)]
            other => Err(DeviceError::NotCompiled {
                device: other.to_string(),
                feature: if matches!(other, Self::Cuda(_)) {
                    "cuda"
                } else {
                    "tch"
                },
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_documented_name() {
        assert_eq!("flex".parse(), Ok(DeviceSpec::Flex));
        assert_eq!("tch".parse(), Ok(DeviceSpec::Tch));
        assert_eq!("tch-cuda:1".parse(), Ok(DeviceSpec::TchCuda(1)));
        assert_eq!("cuda:0".parse(), Ok(DeviceSpec::Cuda(0)));
        assert!(matches!(
            "gpu".parse::<DeviceSpec>(),
            Err(DeviceError::Unknown(_))
        ));
        assert!(matches!(
            "cuda:x".parse::<DeviceSpec>(),
            Err(DeviceError::Unknown(_))
        ));
    }

    #[test]
    fn flex_builds_and_missing_features_are_errors() {
        assert!(DeviceSpec::Flex.device().is_ok());
        #[cfg(not(feature = "cuda"))]
        assert!(matches!(
            DeviceSpec::Cuda(0).device(),
            Err(DeviceError::NotCompiled {
                feature: "cuda",
                ..
            })
        ));
    }
}
