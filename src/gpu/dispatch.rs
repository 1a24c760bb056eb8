//! Grid maths: how many workgroups to launch, folded into 2-D when one dimension would exceed
//! the adapter's limit (65535 by default). Shaders rebuild the linear index as
//! `wg.x + wg.y * num_workgroups.x` and return when it is past the real count.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grid {
    pub x: u32,
    pub y: u32,
    pub z: u32,
}

impl Grid {
    pub fn new(x: u32, y: u32, z: u32) -> Self {
        Grid { x, y, z }
    }

    /// `count` workgroups along one logical axis, folded so that no dimension exceeds
    /// `max_per_dim`.
    pub fn linear(count: u64, max_per_dim: u32) -> Self {
        let max = u64::from(max_per_dim.max(1));
        if count <= max {
            return Grid::new(count as u32, 1, 1);
        }
        let y = count.div_ceil(max);
        let x = count.div_ceil(y);
        Grid::new(x as u32, y as u32, 1)
    }

    pub fn workgroups(&self) -> u64 {
        u64::from(self.x) * u64::from(self.y) * u64::from(self.z)
    }
}

/// Number of tiles of `tile` needed to cover `n`.
pub fn tiles(n: usize, tile: u32) -> u32 {
    n.div_ceil(tile as usize) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_large_counts_into_two_dimensions() {
        assert_eq!(Grid::linear(7, 65535), Grid::new(7, 1, 1));
        let g = Grid::linear(200_000, 65535);
        assert!(g.x <= 65535 && g.y <= 65535);
        assert!(g.workgroups() >= 200_000);
        assert!(g.workgroups() - 200_000 < u64::from(g.y));
    }
}
