//! Static memory plan: every value of a plan gets an offset in one activation arena, reusing the
//! space of values no later step reads. Computed once at load; nothing is allocated while running.

/// Offsets (in elements) of each value and the arena's total size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arena {
    pub offsets: Vec<usize>,
    pub size: usize,
}

/// Rounding of every block, in elements (keeps cuDNN's operands 256-byte aligned for f32).
pub const ALIGN: usize = 64;

/// `sizes[v]`: elements of value `v`; `inputs[s]`: values step `s` reads (step `s` writes value
/// `s + 1`; value 0 is the input). `output` lives to the end. A step's output never shares space
/// with its own inputs.
pub fn plan_arena(sizes: &[usize], inputs: &[Vec<usize>], output: usize) -> Arena {
    let n = sizes.len();
    // Value v is born at step v - 1 (the input at step 0) and lives through its last reader.
    let born: Vec<usize> = (0..n).map(|v| v.saturating_sub(1)).collect();
    let mut dies = born.clone();
    for (s, ins) in inputs.iter().enumerate() {
        for &v in ins {
            dies[v] = dies[v].max(s);
        }
    }
    if output < n {
        dies[output] = usize::MAX;
    }
    let lens: Vec<usize> = sizes.iter().map(|l| l.div_ceil(ALIGN).max(1) * ALIGN).collect();
    let (offsets, size) = plan_intervals(&lens, &born, &dies);
    Arena { offsets, size }
}

/// Offsets for blocks of `lens` units, block `i` live from step `born[i]` through step `dies[i]`
/// (inclusive; `usize::MAX` = to the end), such that no two blocks live at the same step overlap;
/// returns the offsets and the total. Blocks are placed first-fit in order of birth, freed
/// space reused and merged. Callers round `lens` to their alignment.
pub fn plan_intervals(lens: &[usize], born: &[usize], dies: &[usize]) -> (Vec<usize>, usize) {
    let mut order: Vec<usize> = (0..lens.len()).collect();
    order.sort_by_key(|&i| (born[i], i));
    // Blocks by the step after which they are freed.
    let mut by_death: Vec<usize> = (0..lens.len()).filter(|&i| dies[i] != usize::MAX).collect();
    by_death.sort_by_key(|&i| (dies[i], i));
    let mut free = FreeList::default();
    let mut offsets = vec![0; lens.len()];
    let mut next_death = 0;
    for i in order {
        while next_death < by_death.len() && dies[by_death[next_death]] < born[i] {
            let d = by_death[next_death];
            free.release(offsets[d], lens[d]);
            next_death += 1;
        }
        offsets[i] = free.alloc(lens[i]);
    }
    (offsets, free.size)
}

/// First-fit allocation in one block that grows at the top, with freed ranges kept sorted and
/// merged with their neighbours.
#[derive(Default)]
struct FreeList {
    free: Vec<(usize, usize)>, // (offset, len), sorted by offset
    size: usize,
}

impl FreeList {
    fn alloc(&mut self, len: usize) -> usize {
        if let Some(k) = self.free.iter().position(|&(_, l)| l >= len) {
            let (off, l) = self.free[k];
            if l == len {
                self.free.remove(k);
            } else {
                self.free[k] = (off + len, l - len);
            }
            return off;
        }
        // Grow, absorbing a free block that ends at the top.
        if let Some(&(off, l)) = self.free.last() {
            if off + l == self.size {
                self.free.pop();
                self.size = off + len;
                return off;
            }
        }
        self.size += len;
        self.size - len
    }

    fn release(&mut self, off: usize, len: usize) {
        let k = self.free.partition_point(|&(o, _)| o < off);
        self.free.insert(k, (off, len));
        if k + 1 < self.free.len() && self.free[k].0 + self.free[k].1 == self.free[k + 1].0 {
            self.free[k].1 += self.free[k + 1].1;
            self.free.remove(k + 1);
        }
        if k > 0 && self.free[k - 1].0 + self.free[k - 1].1 == self.free[k].0 {
            self.free[k - 1].1 += self.free[k].1;
            self.free.remove(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values live from their step to their last reader; no two live values may overlap.
    fn check(sizes: &[usize], inputs: &[Vec<usize>], output: usize, a: &Arena) {
        let n = sizes.len();
        let born = |v: usize| if v == 0 { 0 } else { v };
        let dies = |v: usize| if v == output { usize::MAX } else { inputs.iter().enumerate().filter(|(_, i)| i.contains(&v)).map(|(s, _)| s + 1).max().unwrap_or(born(v)) };
        for u in 0..n {
            for v in u + 1..n {
                let live_together = born(v) <= dies(u) && born(u) <= dies(v);
                let (ou, ov) = (a.offsets[u], a.offsets[v]);
                let overlap = ou < ov + sizes[v] && ov < ou + sizes[u];
                assert!(!(live_together && overlap), "values {u} and {v} overlap while both live: {a:?}");
            }
            assert!(a.offsets[u] + sizes[u] <= a.size && a.offsets[u].is_multiple_of(ALIGN));
        }
    }

    #[test]
    fn a_residual_chain_reuses_space_without_clobbering_live_values() {
        // 0 -> 1 -> 2 -> 3 = add(2, 0) -> 4 -> 5 = add(4, 3) -> 6 (output)
        let sizes = [100, 400, 100, 100, 300, 100, 10];
        let inputs = vec![vec![0], vec![1], vec![2, 0], vec![3], vec![4, 3], vec![5]];
        let a = plan_arena(&sizes, &inputs, 6);
        check(&sizes, &inputs, 6, &a);
        let naive: usize = sizes.iter().map(|s| s.div_ceil(ALIGN) * ALIGN).sum();
        assert!(a.size < naive, "{} vs {naive}", a.size);
    }

    #[test]
    fn se_shaped_plans_stay_correct() {
        // x(0) -> conv 1 -> pool 2 -> fc 3 -> fc 4 -> mul(1, 4) 5 -> add(5, 0) 6 -> dead 7, output 6
        let sizes = [640, 640, 10, 3, 10, 640, 640, 5];
        let inputs = vec![vec![0], vec![1], vec![2], vec![3], vec![1, 4], vec![5, 0], vec![6]];
        let a = plan_arena(&sizes, &inputs, 6);
        check(&sizes, &inputs, 6, &a);
    }

    /// Random lifetimes: blocks live at the same step never overlap, and freed space is reused.
    #[test]
    fn intervals_never_overlap_while_both_live() {
        let mut x = 12345u64;
        let mut rnd = |m: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % m as u64) as usize
        };
        let n = 200;
        let lens: Vec<usize> = (0..n).map(|_| 1 + rnd(50)).collect();
        let born: Vec<usize> = (0..n).map(|_| rnd(100)).collect();
        let dies: Vec<usize> = (0..n).map(|i| if i % 17 == 0 { usize::MAX } else { born[i] + rnd(20) }).collect();
        let (off, size) = plan_intervals(&lens, &born, &dies);
        for a in 0..n {
            assert!(off[a] + lens[a] <= size);
            for b in a + 1..n {
                let live = born[a] <= dies[b] && born[b] <= dies[a];
                let overlap = off[a] < off[b] + lens[b] && off[b] < off[a] + lens[a];
                assert!(!(live && overlap), "blocks {a} and {b}");
            }
        }
        assert!(size < lens.iter().sum::<usize>() / 2, "{size}");
    }
}
