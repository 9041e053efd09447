//! Cache sizes of the running CPU, read once, and the GEMM's cache blocks derived from them.
//!
//! Sizes come from CPUID (leaf 4 on Intel, 0x8000001D on AMD: the deterministic cache parameters),
//! else from Linux's `/sys/devices/system/cpu/cpu0/cache`, else from [`CacheSizes::FALLBACK`]. The
//! blocks are a function of these sizes and the microkernel's tile, never of a CPU model.

use std::sync::OnceLock;

/// Data cache sizes in bytes, per core for L1d/L2; L3 is the slice one core can count on (the
/// shared cache divided by the cores sharing it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheSizes {
    /// Level-1 data cache of one core.
    pub l1d: usize,
    /// Level-2 cache of one core (the part of it one core uses, if shared).
    pub l2: usize,
    /// Level-3 cache per core sharing it (0 if there is none).
    pub l3: usize,
}

impl CacheSizes {
    /// When nothing can be read (Miri, an unknown OS): 32 KiB / 512 KiB / 2 MiB per core, the
    /// smallest of the x86-64 server cores this project has met.
    pub const FALLBACK: CacheSizes = CacheSizes { l1d: 32 << 10, l2: 512 << 10, l3: 2 << 20 };

    /// This CPU's cache sizes (read once, then cached).
    pub fn detected() -> CacheSizes {
        static SIZES: OnceLock<CacheSizes> = OnceLock::new();
        *SIZES.get_or_init(|| {
            let read = if cfg!(miri) { None } else { cpuid::read().or_else(sysfs::read) };
            read.filter(|s| s.l1d >= 4 << 10 && s.l2 >= s.l1d).unwrap_or(CacheSizes::FALLBACK)
        })
    }
}

/// The GEMM's cache blocks for one microkernel shape.
///
/// The microkernel streams its `kc × NR` slice of a B panel from L2 (L2 feeds a 6×16 or 8×32
/// tile's one panel row per step with room to spare) and A's rows in place, so the blocks are set
/// by what must stay in L2 and L3:
///
/// * `kc` (reduction block): the `kc × NR` panel slice takes at most half of L2. Each reduction
///   block restarts every tile (its partial sums go to C and come back), which costs about as
///   much as 100 multiply-add steps, so `kc` is as long as that allows; on the models' shapes
///   (k ≤ 3072) it is all of k. A block sized for L1 (`kc = 256` on a 32 KiB L1d) measured 5–10 %
///   slower on Zen 3.
/// * `mc` (row block): the `mc × kc` block of A, which every panel of the row block reads again,
///   takes half of L2, but never fewer than [`MIN_MC`] rows.
/// * `nc` (column block): every row block streams its `kc × nc` block of B, which takes half of
///   this core's L3 share, so the row blocks after the first find it there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blocking {
    /// Reduction length per block (≥ 1; a packed B balances it to equal blocks of at most this).
    pub kc: usize,
    /// Rows per block (the kernel rounds it up to a multiple of the tile height `MR`).
    pub mc: usize,
    /// Columns per block (the kernel rounds it down to whole panels of `NR`, ≥ one).
    pub nc: usize,
}

/// The fewest rows of a row block: 64 rows of A streamed from L3 (when their `kc` columns do not
/// fit L2) measured as fast as from L2 on Zen 3, while every extra row block streams B once more
/// (a 64-row block rounded down to 60 for 6-row tiles cost 7 % at k = 3072 by its 4-row rest).
const MIN_MC: usize = 64;

impl Blocking {
    /// The blocks for `MR × NR` tiles under `caches`, for the longest reduction block.
    pub fn new(caches: CacheSizes, mr: usize, nr: usize) -> Blocking {
        Blocking::for_reduction(caches, mr, nr, usize::MAX)
    }

    /// The blocks for `MR × NR` tiles under `caches` for a reduction of length `k`: `kc` balanced
    /// (k = 3072 under a longest block of 2048 is two blocks of 1536), `mc` and `nc` for that `kc`.
    pub fn for_reduction(caches: CacheSizes, mr: usize, nr: usize, k: usize) -> Blocking {
        const F32: usize = size_of::<f32>();
        let longest = (caches.l2 / 2 / (nr * F32)).clamp(64, 8192) / 8 * 8;
        let kc = if k == 0 { longest } else { k.div_ceil(k.div_ceil(longest)) };
        let mc = (caches.l2 / 2 / (kc * F32)).max(MIN_MC).max(mr);
        // Without an L3 (or a tiny share of one), L2 holds the block of B instead.
        let b_block = (caches.l3 / 2).max(caches.l2 / 2);
        let nc = (b_block / (kc * F32)).max(nr) / nr * nr;
        Blocking { kc, mc, nc }
    }
}

#[cfg(target_arch = "x86_64")]
mod cpuid {
    use super::CacheSizes;
    use std::arch::x86_64::{__cpuid, __cpuid_count, CpuidResult};

    /// Walks the deterministic cache parameter leaf (4 on Intel, 0x8000001D on AMD with topology
    /// extensions; both have the same layout) and keeps the data/unified caches of levels 1–3.
    // The CPUID intrinsics became safe functions after this crate's minimum Rust version; the
    // `unsafe` blocks are for that version.
    #[allow(unused_unsafe)]
    pub(super) fn read() -> Option<CacheSizes> {
        // SAFETY (every `__cpuid*` call below): CPUID exists on every x86-64 CPU; leaves above the
        // maximum the CPU reports are not queried.
        let vendor = unsafe { __cpuid(0) };
        let is_amd = vendor.ebx == u32::from_le_bytes(*b"Auth"); // "AuthenticAMD" / "HygonGenuine"
        let is_hygon = vendor.ebx == u32::from_le_bytes(*b"Hygo");
        let leaf = if is_amd || is_hygon {
            let max_ext = unsafe { __cpuid(0x8000_0000) }.eax;
            let topoext = max_ext >= 0x8000_0001 && unsafe { __cpuid(0x8000_0001) }.ecx & (1 << 22) != 0;
            if !topoext || max_ext < 0x8000_001D {
                return None;
            }
            0x8000_001D
        } else {
            if vendor.eax < 4 {
                return None;
            }
            4
        };
        let mut sizes = CacheSizes { l1d: 0, l2: 0, l3: 0 };
        for sub in 0..16 {
            let r: CpuidResult = unsafe { __cpuid_count(leaf, sub) };
            let kind = r.eax & 0x1f; // 0: no more caches, 1: data, 2: instruction, 3: unified
            if kind == 0 {
                break;
            }
            if kind == 2 {
                continue;
            }
            let level = (r.eax >> 5) & 7;
            let sharing = ((r.eax >> 14) & 0xfff) as usize + 1;
            let ways = ((r.ebx >> 22) & 0x3ff) as usize + 1;
            let partitions = ((r.ebx >> 12) & 0x3ff) as usize + 1;
            let line = (r.ebx & 0xfff) as usize + 1;
            let sets = r.ecx as usize + 1;
            let size = ways * partitions * line * sets;
            match level {
                1 => sizes.l1d = size,
                // An L2 shared by a cluster of cores (some Intel E-cores) counts per core.
                2 => sizes.l2 = size / sharing.max(1),
                3 => sizes.l3 = size / sharing.max(1),
                _ => {}
            }
        }
        (sizes.l1d > 0 && sizes.l2 > 0).then_some(sizes)
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod cpuid {
    pub(super) fn read() -> Option<super::CacheSizes> {
        None
    }
}

mod sysfs {
    use super::CacheSizes;
    use std::fs::read_to_string;

    /// `/sys/devices/system/cpu/cpu0/cache/index*/{level,type,size,shared_cpu_list}`.
    pub(super) fn read() -> Option<CacheSizes> {
        let mut sizes = CacheSizes { l1d: 0, l2: 0, l3: 0 };
        for index in 0..8 {
            let dir = format!("/sys/devices/system/cpu/cpu0/cache/index{index}");
            let Ok(level) = read_to_string(format!("{dir}/level")) else { break };
            let kind = read_to_string(format!("{dir}/type")).ok()?;
            if kind.trim() == "Instruction" {
                continue;
            }
            let size = parse_size(&read_to_string(format!("{dir}/size")).ok()?)?;
            let sharing = read_to_string(format!("{dir}/shared_cpu_list")).map_or(1, |l| count_cpus(&l));
            match level.trim() {
                "1" => sizes.l1d = size,
                "2" => sizes.l2 = size / sharing,
                "3" => sizes.l3 = size / sharing,
                _ => {}
            }
        }
        (sizes.l1d > 0 && sizes.l2 > 0).then_some(sizes)
    }

    /// "32K", "1024K", "32M" → bytes.
    fn parse_size(s: &str) -> Option<usize> {
        let s = s.trim();
        let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
        let shift = match unit {
            "" => 0,
            "K" => 10,
            "M" => 20,
            "G" => 30,
            _ => return None,
        };
        digits.parse::<usize>().ok().map(|n| n << shift)
    }

    /// Number of CPUs in a list like "0-3,8,10-11" (at least 1).
    fn count_cpus(list: &str) -> usize {
        let count: usize = list
            .trim()
            .split(',')
            .filter_map(|part| match part.split_once('-') {
                Some((a, b)) => Some(b.parse::<usize>().ok()?.checked_sub(a.parse::<usize>().ok()?)? + 1),
                None => part.parse::<usize>().ok().map(|_| 1),
            })
            .sum();
        count.max(1)
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn parses_sizes_and_cpu_lists() {
            assert_eq!(super::parse_size("32K\n"), Some(32 << 10));
            assert_eq!(super::parse_size("32768K"), Some(32 << 20));
            assert_eq!(super::parse_size("2M"), Some(2 << 20));
            assert_eq!(super::parse_size("12 kB"), None);
            assert_eq!(super::count_cpus("0-1\n"), 2);
            assert_eq!(super::count_cpus("0,2,4-7"), 6);
            assert_eq!(super::count_cpus(""), 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detected_sizes_are_plausible() {
        let s = CacheSizes::detected();
        assert!(s.l1d >= 4 << 10 && s.l2 >= s.l1d, "{s:?}");
    }

    /// 32 KiB L1d / 512 KiB L2 / 16 MiB L3 share (Zen 3), 48 KiB / 2 MiB / 1 MiB (Sapphire Rapids
    /// with many cores), and a tiny cache.
    #[test]
    fn blocks_follow_the_caches() {
        let zen3 = CacheSizes { l1d: 32 << 10, l2: 512 << 10, l3: 16 << 20 };
        assert_eq!(Blocking::new(zen3, 6, 16), Blocking { kc: 4096, mc: 64, nc: 512 });
        assert_eq!(Blocking::for_reduction(zen3, 6, 16, 384), Blocking { kc: 384, mc: 170, nc: 5456 });
        assert_eq!(Blocking::for_reduction(zen3, 6, 16, 768), Blocking { kc: 768, mc: 85, nc: 2720 });
        assert_eq!(Blocking::for_reduction(zen3, 6, 16, 3072), Blocking { kc: 3072, mc: 64, nc: 672 });
        assert_eq!(Blocking::for_reduction(zen3, 6, 16, 5000), Blocking { kc: 2500, mc: 64, nc: 832 });
        assert_eq!(Blocking::new(zen3, 8, 32), Blocking { kc: 2048, mc: 64, nc: 1024 });
        let spr = CacheSizes { l1d: 48 << 10, l2: 2 << 20, l3: 1 << 20 };
        assert_eq!(Blocking::for_reduction(spr, 8, 32, 768), Blocking { kc: 768, mc: 341, nc: 320 });
        let tiny = CacheSizes { l1d: 4 << 10, l2: 4 << 10, l3: 0 };
        assert_eq!(Blocking::new(tiny, 6, 16), Blocking { kc: 64, mc: 64, nc: 16 });
    }
}
