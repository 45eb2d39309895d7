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
    let mut last_use = vec![None; n];
    for (s, ins) in inputs.iter().enumerate() {
        for &v in ins {
            last_use[v] = Some(s);
        }
    }
    let mut free: Vec<(usize, usize)> = vec![]; // (offset, len), sorted by offset
    let mut size = 0;
    let mut offsets = vec![0; n];
    let alloc = |len: usize, free: &mut Vec<(usize, usize)>, size: &mut usize| -> usize {
        let len = len.div_ceil(ALIGN).max(1) * ALIGN;
        if let Some(k) = free.iter().position(|&(_, l)| l >= len) {
            let (off, l) = free[k];
            if l == len {
                free.remove(k);
            } else {
                free[k] = (off + len, l - len);
            }
            return off;
        }
        // Grow, absorbing a free block that ends at the top.
        if let Some(&(off, l)) = free.last() {
            if off + l == *size {
                free.pop();
                *size = off + len;
                return off;
            }
        }
        *size += len;
        *size - len
    };
    let release = |v: usize, free: &mut Vec<(usize, usize)>, offsets: &[usize]| {
        let len = sizes[v].div_ceil(ALIGN).max(1) * ALIGN;
        let k = free.partition_point(|&(o, _)| o < offsets[v]);
        free.insert(k, (offsets[v], len));
        // Merge with neighbours.
        if k + 1 < free.len() && free[k].0 + free[k].1 == free[k + 1].0 {
            free[k].1 += free[k + 1].1;
            free.remove(k + 1);
        }
        if k > 0 && free[k - 1].0 + free[k - 1].1 == free[k].0 {
            free[k - 1].1 += free[k].1;
            free.remove(k);
        }
    };
    offsets[0] = alloc(sizes[0], &mut free, &mut size);
    for (s, ins) in inputs.iter().enumerate() {
        let v = s + 1;
        offsets[v] = alloc(sizes[v], &mut free, &mut size);
        let mut done: Vec<usize> = ins.iter().copied().filter(|&u| u != output && last_use[u] == Some(s)).collect();
        done.sort_unstable();
        done.dedup();
        if last_use[v].is_none() && v != output {
            done.push(v);
        }
        for u in done {
            release(u, &mut free, &offsets);
        }
    }
    Arena { offsets, size }
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
}
