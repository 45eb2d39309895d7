//! Exponential moving average of the weights and BN statistics, as
//! `tf.train.ExponentialMovingAverage(decay, num_updates=global_step)`: the effective decay
//! warms up as `min(decay, (1+t)/(10+t))`, so early shadows follow the weights closely.

/// Effective decay after `t` optimizer steps (the official code passes the global step, which the
/// train op has already incremented when the EMA update runs: `t` = 1 on the first update).
pub fn tf_decay(decay: f32, t: u64) -> f32 {
    let t = t as f64;
    (decay as f64).min((1.0 + t) / (10.0 + t)) as f32
}

/// `shadow ← shadow − (1−decay)·(shadow − value)`.
pub fn update(shadow: &mut [f32], value: &[f32], decay: f32) {
    let a = 1.0 - decay;
    shadow.iter_mut().zip(value).for_each(|(s, v)| *s -= a * (*s - v));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warm_up_rule_and_update_by_hand() {
        assert!((tf_decay(0.9999, 0) - 0.1).abs() < 1e-7);
        assert!((tf_decay(0.9999, 1) - 2.0 / 11.0).abs() < 1e-7);
        assert!((tf_decay(0.9999, 100) - 101.0 / 110.0).abs() < 1e-7);
        assert_eq!(tf_decay(0.9, 1_000_000), 0.9);
        let mut s = vec![1.0, -2.0];
        update(&mut s, &[3.0, 2.0], 0.75); // s + 0.25·(v − s)
        assert_eq!(s, vec![1.5, -1.0]);
    }
}
