//! Linear warmup, then constant, linear or cosine decay, built from burn's schedulers.

use burn::lr_scheduler::LrSchedulerConfig;
use burn::lr_scheduler::cosine::CosineAnnealingLrSchedulerConfig;
use burn::lr_scheduler::linear::LinearLrSchedulerConfig;
use burn::lr_scheduler::module_lr_scheduler::ModuleLrScheduler;
use burn::lr_scheduler::sequential::SequentialLrSchedulerConfig;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// How the learning rate decays after warmup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    /// Constant after warmup.
    Constant,
    /// Linear decay to zero at the last step.
    Linear,
    /// Half-cosine decay to zero at the last step.
    Cosine,
}

/// The learning rate of each optimiser step: `ceil(warmup_ratio * total)` warmup steps rising
/// linearly to `peak` (step `s` of `w` gets `peak * (s + 1) / w`), then `schedule` over the
/// remaining steps (progress `p = (s - w) / (total - w)`: `peak`, `peak * (1 - p)` or
/// `peak * (1 + cos(pi p)) / 2`). burn's linear, cosine and sequential schedulers do the work,
/// on a unit peak scaled by `peak` (burn refuses learning rates above 1).
///
/// ```
/// use pulserec_train::{Schedule, WarmupSchedule};
/// let mut lr = WarmupSchedule::new(1e-3, 0.25, Schedule::Linear, 8)?;
/// let steps: Vec<f64> = (0..8).map(|_| lr.next_lr()).collect();
/// assert!((steps[0] - 5e-4).abs() < 1e-12 && (steps[1] - 1e-3).abs() < 1e-12);
/// assert!((steps[7] - 1e-3 / 6.0).abs() < 1e-12);
/// # Ok::<(), pulserec_train::TrainError>(())
/// ```
pub struct WarmupSchedule {
    scheduler: ModuleLrScheduler,
    peak: f64,
}

impl std::fmt::Debug for WarmupSchedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarmupSchedule").finish_non_exhaustive()
    }
}

impl WarmupSchedule {
    /// The schedule of `total` steps peaking at `peak` (finite, > 0).
    pub fn new(peak: f64, warmup_ratio: f64, schedule: Schedule, total: usize) -> Result<Self> {
        let bad = |field, message: String| Err(TrainError::Schedule { field, message });
        if !(peak.is_finite() && peak > 0.0) {
            return bad("learning_rate", format!("{peak} must be finite and > 0"));
        }
        if !(0.0..1.0).contains(&warmup_ratio) {
            return bad("warmup_ratio", format!("{warmup_ratio} must be in [0, 1)"));
        }
        let total = total.max(1);
        let warmup = ((warmup_ratio * total as f64).ceil() as usize).min(total);
        let mut phases: Vec<LrSchedulerConfig> = Vec::new();
        match warmup {
            0 => {}
            1 => phases.push(LrSchedulerConfig::Constant(1.0)),
            w => phases.push(LinearLrSchedulerConfig::new(1.0 / w as f64, 1.0, w - 1).into()),
        }
        let decay = total - warmup;
        if decay > 0 {
            phases.push(match schedule {
                Schedule::Constant => LrSchedulerConfig::Constant(1.0),
                Schedule::Linear => LinearLrSchedulerConfig::new(1.0, 0.0, decay).into(),
                Schedule::Cosine => CosineAnnealingLrSchedulerConfig::new(1.0, decay).into(),
            });
        }
        let milestones = if phases.len() == 2 {
            vec![warmup]
        } else {
            Vec::new()
        };
        let scheduler = SequentialLrSchedulerConfig::new(phases, milestones)
            .init()
            .map_err(|message| TrainError::Schedule {
                field: "schedule",
                message,
            })?;
        Ok(Self { scheduler, peak })
    }

    /// The learning rate of the next step (the first call gives step 0's).
    pub fn next_lr(&mut self) -> f64 {
        self.peak * self.scheduler.step().base()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The closed form the schedule implements (the hand-written one it replaced).
    fn closed_form(peak: f64, ratio: f64, schedule: Schedule, step: usize, total: usize) -> f64 {
        let total = total.max(1) as f64;
        let warmup = (ratio * total).ceil();
        let s = step as f64;
        if s < warmup {
            return peak * (s + 1.0) / warmup;
        }
        let p = ((s - warmup) / (total - warmup).max(1.0)).clamp(0.0, 1.0);
        peak * match schedule {
            Schedule::Constant => 1.0,
            Schedule::Linear => 1.0 - p,
            Schedule::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * p).cos()),
        }
    }

    #[test]
    fn matches_the_closed_form_at_every_step() {
        for schedule in [Schedule::Constant, Schedule::Linear, Schedule::Cosine] {
            for (ratio, total) in [
                (0.0, 1),
                (0.0, 7),
                (0.03, 125),
                (0.1, 10),
                (0.1, 1),
                (0.5, 3),
            ] {
                let mut lr = WarmupSchedule::new(2e-4, ratio, schedule, total).unwrap();
                for step in 0..total {
                    let want = closed_form(2e-4, ratio, schedule, step, total);
                    let got = lr.next_lr();
                    assert!(
                        (got - want).abs() <= 1e-12 * want.max(1e-4),
                        "{schedule:?} ratio {ratio} total {total} step {step}: {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn any_positive_peak_schedules() {
        let mut lr = WarmupSchedule::new(1e30, 0.0, Schedule::Constant, 3).unwrap();
        assert_eq!(lr.next_lr(), 1e30);
    }

    #[test]
    fn refuses_what_cannot_schedule() {
        for (peak, ratio) in [
            (0.0, 0.1),
            (f64::INFINITY, 0.1),
            (1e-3, 1.0),
            (f64::NAN, 0.1),
        ] {
            let err = WarmupSchedule::new(peak, ratio, Schedule::Linear, 10).unwrap_err();
            assert!(matches!(err, TrainError::Schedule { .. }), "{err}");
        }
    }
}
