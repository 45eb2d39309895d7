//! clap flags for model options, shared by every binary that shapes a model (`effv2-edge
//! inspect/import/build/train`, `effv2-bench sweep`), so they spell and mean the same everywhere.
//! Behind the `cli` feature: apps embedding the library don't pull clap.

use clap::Args;

use crate::spec::{Activation, FusedStages, ModelOptions, Padding};

/// A variant, its Fused-MBConv placement and its options.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Variant: efficientnetv2-b0..b3, -s, -m, -l, -xl (or just b0, s, …)
    #[arg(long)]
    pub model: String,
    /// Fused-MBConv placement: official, none, all, N (first N stages) or a list like 0,1,3
    #[arg(long)]
    pub fused_stages: Option<FusedStages>,
    #[command(flatten)]
    pub shape: ShapeArgs,
}

impl ModelArgs {
    /// `base` with every flag the user gave applied on top.
    pub fn options(&self, base: ModelOptions) -> ModelOptions {
        self.shape.apply_with_placement(base, self.fused_stages.as_ref())
    }
}

/// Every model option except the variant and the Fused-MBConv placement.
#[derive(Args, Debug, Clone, Default)]
pub struct ShapeArgs {
    /// Width coefficient replacing the variant's (custom sizes)
    #[arg(long)]
    pub width: Option<f64>,
    /// Depth coefficient replacing the variant's (custom sizes)
    #[arg(long)]
    pub depth: Option<f64>,
    /// Classifier outputs (default: 1000; `train` counts the data set's classes)
    #[arg(long)]
    pub num_classes: Option<usize>,
    /// Input image channels (3 = RGB, 1 = grayscale)
    #[arg(long)]
    pub in_channels: Option<usize>,
    /// silu (official) or relu6 (EfficientNet-Lite style, int8-friendly)
    #[arg(long)]
    pub activation: Option<Activation>,
    /// Remove squeeze-excite everywhere (EfficientNet-Lite style)
    #[arg(long)]
    pub no_se: bool,
    /// Put SE on Fused-MBConv blocks too
    #[arg(long)]
    pub se_on_fused: bool,
    /// tf-same (official) or symmetric
    #[arg(long)]
    pub padding: Option<Padding>,
    /// Batch-norm epsilon (default: 1e-3, the official value and timm tf_* / torchvision's; timm's non-tf models use 1e-5)
    #[arg(long)]
    pub bn_eps: Option<f64>,
    /// Classifier dropout (default: the variant's)
    #[arg(long)]
    pub dropout: Option<f64>,
    /// Stochastic-depth rate of the last block
    #[arg(long)]
    pub drop_path: Option<f64>,
}

impl ShapeArgs {
    /// [`ShapeArgs::apply`], then the placement when one was given.
    pub fn apply_with_placement(&self, base: ModelOptions, fused: Option<&FusedStages>) -> ModelOptions {
        let o = self.apply(base);
        match fused {
            Some(f) => ModelOptions { fused_stages: f.clone(), ..o },
            None => o,
        }
    }

    /// `base` with every flag the user gave applied on top (the placement is left as it is).
    pub fn apply(&self, base: ModelOptions) -> ModelOptions {
        ModelOptions {
            num_classes: self.num_classes.unwrap_or(base.num_classes),
            in_channels: self.in_channels.unwrap_or(base.in_channels),
            dropout: self.dropout.or(base.dropout),
            drop_path: self.drop_path.unwrap_or(base.drop_path),
            padding: self.padding.unwrap_or(base.padding),
            bn_eps: self.bn_eps.unwrap_or(base.bn_eps),
            width: self.width.or(base.width),
            depth: self.depth.or(base.depth),
            activation: self.activation.unwrap_or(base.activation),
            se: base.se && !self.no_se,
            fused_stages: base.fused_stages,
            se_on_fused: base.se_on_fused || self.se_on_fused,
        }
    }
}

/// `224` or `256x192` (height x width).
pub fn parse_size(s: &str) -> Result<(usize, usize), String> {
    let bad = || format!("bad image size {s:?}: expected N or HxW");
    match s.split_once(['x', 'X']) {
        Some((h, w)) => Ok((h.trim().parse().map_err(|_| bad())?, w.trim().parse().map_err(|_| bad())?)),
        None => s.trim().parse().map(|n| (n, n)).map_err(|_| bad()),
    }
}

/// An error and its causes on one line for a binary's `error: …` message, each cause added only
/// when the text so far does not already say it (our error types often print their source inline,
/// e.g. "PATH: No such file or directory", which a plain `{:#}` chain would repeat).
pub fn error_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut line = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = c.source();
    }
    line
}

#[cfg(test)]
mod error_line_tests {
    use super::error_line;

    #[derive(Debug)]
    struct Wrap(String, Option<std::io::Error>);
    impl std::fmt::Display for Wrap {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }
    impl std::error::Error for Wrap {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_ref().map(|e| e as _)
        }
    }

    #[test]
    fn causes_already_in_the_message_are_not_repeated() {
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        assert_eq!(error_line(&Wrap("/x: No such file".into(), Some(io()))), "/x: No such file");
        assert_eq!(error_line(&Wrap("cannot open /x".into(), Some(io()))), "cannot open /x: No such file");
        assert_eq!(error_line(&Wrap("plain".into(), None)), "plain");
    }
}
