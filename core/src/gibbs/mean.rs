//! The model of a Gibbs run: the average of the draws kept after burn-in.

use crate::side::Factors;

/// Running f64 sums of the kept draws of both sides.
#[derive(Debug, Clone, PartialEq)]
pub struct PosteriorMean {
    draws: usize,
    users: (Vec<f64>, Vec<f64>),
    items: (Vec<f64>, Vec<f64>),
}

impl PosteriorMean {
    pub fn new(users: &Factors, items: &Factors) -> Self {
        let zeros = |f: &Factors| (vec![0f64; f.flat().len()], vec![0f64; f.bias.len()]);
        PosteriorMean {
            draws: 0,
            users: zeros(users),
            items: zeros(items),
        }
    }

    /// Draws averaged so far.
    pub fn draws(&self) -> usize {
        self.draws
    }

    /// Add one draw of both sides.
    pub fn add(&mut self, users: &Factors, items: &Factors) {
        fn add_to(sums: &mut (Vec<f64>, Vec<f64>), f: &Factors) {
            sums.0.iter_mut().zip(f.flat()).for_each(|(s, &v)| *s += v as f64);
            sums.1.iter_mut().zip(&f.bias).for_each(|(s, &v)| *s += v as f64);
        }
        add_to(&mut self.users, users);
        add_to(&mut self.items, items);
        self.draws += 1;
    }

    /// The averages, shaped as `users` and `items`, or `None` before the first draw.
    pub fn mean(&self, users: &Factors, items: &Factors) -> Option<(Factors, Factors)> {
        if self.draws == 0 {
            return None;
        }
        let n = self.draws as f64;
        let average = |sums: &(Vec<f64>, Vec<f64>), shape: &Factors| {
            let mut f = shape.clone();
            f.flat_mut().iter_mut().zip(&sums.0).for_each(|(o, s)| *o = (s / n) as f32);
            f.bias.iter_mut().zip(&sums.1).for_each(|(o, s)| *o = (s / n) as f32);
            f
        };
        Some((average(&self.users, users), average(&self.items, items)))
    }
}
