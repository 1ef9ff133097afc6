//! Planning, as Thanos's compactor plans: which blocks belong together (a *group*: one stream, i.e.
//! the same external labels without the replica labels, and one resolution), which blocks are
//! left alone (too fresh, marked no-compact, already covered by a compacted block), whether a group
//! has overlapping blocks, and which blocks of a group to compact next.
//!
//! ```text
//!   blocks in the bucket ──► consistency delay (fresh level-1 blocks wait) ──► groups by stream
//!      ──► covered blocks (sources ⊆ another block's sources) are garbage
//!      ──► overlaps? halt (or, with vertical compaction, merge the overlapping blocks first)
//!      ──► plan: the first aligned window of 2h, 8h, 2d, 14d holding two or more blocks
//! ```
//!
//! Window rule (Prometheus's leveled planner, kept by Thanos): the newest block of a group is never
//! planned, so a window is compacted once it is complete or once a newer block exists after it;
//! windows are aligned to multiples of their size from the epoch; a block longer than a window
//! never joins it. A no-compact-marked block splits its window: the blocks on either side of it
//! are compacted separately, never across it.

use std::collections::{BTreeMap, HashSet};

use engine::BlockMeta;

/// Thanos's compaction levels (`--debug.max-compaction-level` picks a prefix): 1h (the level of
/// blocks Prometheus cuts, never planned), then the windows blocks are compacted into.
pub const LEVEL_RANGES_MS: [i64; 5] = [3_600_000, 7_200_000, 28_800_000, 172_800_000, 1_209_600_000];

/// The highest compaction level (index into [`LEVEL_RANGES_MS`]); Thanos's default.
pub const MAX_LEVEL: usize = LEVEL_RANGES_MS.len() - 1;

/// `thanos.source` of the blocks the compactor writes; such blocks skip the consistency delay.
pub const COMPACTOR_SOURCE: &str = "compactor";

/// A block as the compactor sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockInfo {
    /// The block's meta.json (with its own external labels).
    pub meta: BlockMeta,
    /// The stream the block belongs to: its external labels without the replica labels.
    pub stream: BTreeMap<String, String>,
    /// The block carries `no-compact-mark.json`.
    pub no_compact: bool,
}

impl BlockInfo {
    /// The block's ULID.
    pub fn ulid(&self) -> &str {
        &self.meta.ulid
    }
}

/// Blocks of one stream and resolution, sorted by `(minTime, ULID)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// `<resolution>@{labels}`, e.g. `0@{region="eu"}`.
    pub key: String,
    /// The stream's labels (external labels of the blocks the group writes).
    pub labels: BTreeMap<String, String>,
    /// Resolution in ms (0 = raw).
    pub resolution: i64,
    /// The blocks.
    pub blocks: Vec<BlockInfo>,
}

/// Prints labels as Prometheus does: `{a="1",b="2"}`.
pub fn labels_string(labels: &BTreeMap<String, String>) -> String {
    let parts: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", parts.join(","))
}

/// A block's stream: its external labels without `replica_labels`. When nothing is left, the
/// first replica label with the value `deduped` (Thanos's rule, so the stream keeps a label).
pub fn stream_labels(external: &BTreeMap<String, String>, replica_labels: &[String]) -> BTreeMap<String, String> {
    let mut out = external.clone();
    let mut removed = false;
    for r in replica_labels {
        removed |= out.remove(r).is_some();
    }
    if removed
        && out.is_empty()
        && let Some(first) = replica_labels.first()
    {
        out.insert(first.clone(), "deduped".into());
    }
    out
}

/// The group key of a stream and resolution.
pub fn group_key(labels: &BTreeMap<String, String>, resolution: i64) -> String {
    format!("{resolution}@{}", labels_string(labels))
}

/// True when the block is younger than `delay_ms` by its ULID time at `now_ms` and was not
/// written by the compactor (Thanos's consistency delay: give uploads and other replicas time
/// before planning with a block).
pub fn too_fresh(meta: &BlockMeta, now_ms: i64, delay_ms: i64) -> bool {
    if meta.thanos.source == COMPACTOR_SOURCE {
        return false;
    }
    let Ok(u) = ulid::Ulid::from_string(&meta.ulid) else { return false };
    now_ms.saturating_sub(u.timestamp_ms() as i64) < delay_ms
}

/// Groups blocks by stream and resolution; groups sorted by key, blocks by `(minTime, ULID)`.
pub fn groups(blocks: Vec<BlockInfo>) -> Vec<Group> {
    let mut by_key: BTreeMap<String, Group> = BTreeMap::new();
    for b in blocks {
        let resolution = b.meta.thanos.downsample.resolution;
        let key = group_key(&b.stream, resolution);
        by_key
            .entry(key.clone())
            .or_insert_with(|| Group { key, labels: b.stream.clone(), resolution, blocks: Vec::new() })
            .blocks
            .push(b);
    }
    let mut out: Vec<Group> = by_key.into_values().collect();
    for g in &mut out {
        g.blocks.sort_by(|a, b| (a.meta.min_time, &a.meta.ulid).cmp(&(b.meta.min_time, &b.meta.ulid)));
    }
    out
}

/// Blocks of one group whose data another block of the group already holds (Thanos's
/// deduplicate filter): a block is covered when another block's `compaction.sources` contain all
/// of its sources and either have more of them, or name the block as a parent (a rewritten block
/// replaces its original). With equal source sets and no parent link, the lower ULID stays.
/// Happens when a compaction (or rewrite) uploaded its block but stopped before marking its inputs.
pub fn covered_blocks(blocks: &[BlockInfo]) -> Vec<String> {
    let mut order: Vec<&BlockInfo> = blocks.iter().collect();
    order.sort_by(|a, b| {
        b.meta
            .compaction
            .sources
            .len()
            .cmp(&a.meta.compaction.sources.len())
            .then_with(|| a.meta.ulid.cmp(&b.meta.ulid))
    });
    let supersedes = |parent: &BlockInfo, child: &BlockInfo| -> bool {
        let ps: HashSet<&str> = parent.meta.compaction.sources.iter().map(String::as_str).collect();
        child.meta.compaction.sources.iter().all(|s| ps.contains(s.as_str()))
    };
    // Equal source sets: a block naming the other as parent wins over ULID order.
    let names_parent = |a: &BlockInfo, b: &BlockInfo| a.meta.compaction.parents.iter().any(|p| p.ulid == b.meta.ulid);
    let mut covering: Vec<&BlockInfo> = Vec::new();
    let mut covered: Vec<String> = Vec::new();
    for child in order {
        if child.meta.compaction.sources.is_empty() {
            covering.push(child);
            continue;
        }
        let mut replaced_by_child: Option<usize> = None;
        let mut is_covered = false;
        for (i, parent) in covering.iter().enumerate() {
            if !supersedes(parent, child) {
                continue;
            }
            let same = parent.meta.compaction.sources.len() == child.meta.compaction.sources.len()
                && supersedes(child, parent);
            if same && names_parent(child, parent) {
                replaced_by_child = Some(i);
            } else {
                is_covered = true;
            }
            break;
        }
        if let Some(i) = replaced_by_child {
            covered.push(covering[i].meta.ulid.clone());
            covering[i] = child;
        } else if is_covered {
            covered.push(child.meta.ulid.clone());
        } else {
            covering.push(child);
        }
    }
    covered.sort();
    covered
}

/// Clusters of blocks whose time ranges overlap (each cluster of two or more, in time order);
/// `blocks` sorted by `minTime`.
pub fn overlapping<'a>(blocks: &[&'a BlockMeta]) -> Vec<Vec<&'a BlockMeta>> {
    let mut out = Vec::new();
    let mut cur: Vec<&BlockMeta> = Vec::new();
    let mut cur_max = i64::MIN;
    for &b in blocks {
        if !cur.is_empty() && b.min_time < cur_max {
            cur.push(b);
        } else {
            if cur.len() > 1 {
                out.push(std::mem::take(&mut cur));
            }
            cur = vec![b];
            cur_max = i64::MIN;
        }
        cur_max = cur_max.max(b.max_time);
    }
    if cur.len() > 1 {
        out.push(cur);
    }
    out
}

/// Describes overlap clusters for an error message: `[ULID [min, max), ULID [min, max)], ...`.
pub fn describe_overlaps(clusters: &[Vec<&BlockMeta>]) -> String {
    let parts: Vec<String> = clusters
        .iter()
        .map(|c| {
            let blocks: Vec<String> =
                c.iter().map(|m| format!("{} [{}, {})", m.ulid, m.min_time, m.max_time)).collect();
            format!("[{}]", blocks.join(", "))
        })
        .collect();
    parts.join(", ")
}

/// The blocks of a group to compact next (empty: nothing to do), as Thanos's planner chooses
/// them. `blocks` sorted by `(minTime, ULID)`; `ranges` are the level ranges (the first one is the
/// level-1 block size and is not planned).
pub fn plan<'a>(ranges: &[i64], blocks: &'a [BlockInfo]) -> Vec<&'a BlockInfo> {
    if blocks.is_empty() {
        return Vec::new();
    }
    let not_excluded: Vec<&BlockInfo> = blocks.iter().filter(|b| !b.no_compact).collect();
    let over = select_overlapping(&not_excluded);
    if !over.is_empty() {
        return over;
    }
    // The newest block is left out, so a window is only compacted once a newer block exists after
    // it or it is complete.
    let older: Vec<&BlockInfo> = blocks[..blocks.len() - 1].iter().collect();
    select_in_ranges(ranges, &older)
}

/// The first run of overlapping blocks (in time order), as Prometheus's planner finds them.
fn select_overlapping<'a>(blocks: &[&'a BlockInfo]) -> Vec<&'a BlockInfo> {
    let mut out: Vec<&BlockInfo> = Vec::new();
    let Some(first) = blocks.first() else { return out };
    let mut global_max = first.meta.max_time;
    for (i, b) in blocks.iter().enumerate().skip(1) {
        if b.meta.min_time < global_max {
            if out.is_empty() {
                out.push(blocks[i - 1]);
            }
            out.push(b);
        } else if !out.is_empty() {
            break;
        }
        global_max = global_max.max(b.meta.max_time);
    }
    out
}

/// Splits blocks into aligned windows of size `range`: a block joins the window its start falls
/// in if it ends inside it; blocks longer than the window (or misaligned across its end) are
/// skipped.
fn split_by_range<'a>(blocks: &[&'a BlockInfo], range: i64) -> Vec<Vec<&'a BlockInfo>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < blocks.len() {
        let m = &blocks[i].meta;
        let t0 = m.min_time.div_euclid(range) * range;
        if m.max_time > t0 + range {
            i += 1;
            continue;
        }
        let mut part = Vec::new();
        while i < blocks.len() && blocks[i].meta.max_time <= t0 + range {
            part.push(blocks[i]);
            i += 1;
        }
        if !part.is_empty() {
            out.push(part);
        }
    }
    out
}

fn select_in_ranges<'a>(ranges: &[i64], blocks: &[&'a BlockInfo]) -> Vec<&'a BlockInfo> {
    let (Some(last), true) = (blocks.last(), ranges.len() >= 2) else { return Vec::new() };
    let high_time = last.meta.min_time;
    for &range in &ranges[1..] {
        for part in split_by_range(blocks, range) {
            if part.len() < 2 {
                continue;
            }
            let (min, max) = (part[0].meta.min_time, part[part.len() - 1].meta.max_time);
            // A window is taken when it is complete, or when it lies before the newest block.
            if max - min != range && max > high_time {
                continue;
            }
            // No-compact blocks split the window; the first run of two or more is taken.
            let mut start = 0;
            for (i, b) in part.iter().enumerate() {
                if !b.no_compact {
                    continue;
                }
                if i - start > 1 {
                    return part[start..i].to_vec();
                }
                start = i + 1;
            }
            if part.len() - start > 1 {
                return part[start..].to_vec();
            }
        }
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use engine::meta::{BlockDesc, Compaction, ThanosMeta};

    const H: i64 = 3_600_000;

    fn ranges() -> Vec<i64> {
        LEVEL_RANGES_MS.to_vec()
    }

    fn block(n: u8, min: i64, max: i64) -> BlockInfo {
        let ulid = format!("01J00000000000000000000{n:03}");
        BlockInfo {
            meta: BlockMeta {
                ulid: ulid.clone(),
                min_time: min,
                max_time: max,
                stats: Default::default(),
                compaction: Compaction { level: 1, sources: vec![ulid], parents: vec![], hints: vec![] },
                version: 1,
                thanos: ThanosMeta::default(),
                strata: None,
            },
            stream: BTreeMap::new(),
            no_compact: false,
        }
    }

    fn ids(p: &[&BlockInfo]) -> Vec<String> {
        p.iter().map(|b| b.meta.ulid[23..].to_string()).collect()
    }

    #[test]
    fn four_2h_blocks_wait_for_a_newer_block_then_make_8h() {
        // 4 x 2h in [0, 8h): the newest is excluded and the other three neither fill the window nor
        // lie before the newest block.
        let mut bs: Vec<BlockInfo> = (0..4).map(|i| block(i, i as i64 * 2 * H, (i as i64 + 1) * 2 * H)).collect();
        assert!(plan(&ranges(), &bs).is_empty());
        // A fifth block after the window: the full 8h window is compacted.
        bs.push(block(4, 8 * H, 10 * H));
        assert_eq!(ids(&plan(&ranges(), &bs)), vec!["000", "001", "002", "003"]);
    }

    #[test]
    fn incomplete_window_before_the_newest_block_is_compacted() {
        // [0,2h) [2h,4h) then a block at 10h: the first 8h window holds two blocks and ends before
        // the newest block's start.
        let bs = vec![block(0, 0, 2 * H), block(1, 2 * H, 4 * H), block(2, 10 * H, 12 * H), block(3, 12 * H, 14 * H)];
        assert_eq!(ids(&plan(&ranges(), &bs)), vec!["000", "001"]);
    }

    #[test]
    fn larger_windows_after_smaller_ones() {
        // Six 8h blocks fill [0, 48h); a newer block follows: the 2d window is compacted.
        let mut bs: Vec<BlockInfo> = (0..6).map(|i| block(i, i as i64 * 8 * H, (i as i64 + 1) * 8 * H)).collect();
        bs.push(block(6, 48 * H, 50 * H));
        assert_eq!(plan(&ranges(), &bs).len(), 6);
        // With --debug.max-compaction-level=2 the 2d window does not exist.
        assert!(plan(&ranges()[..3], &bs).is_empty());
    }

    #[test]
    fn windows_are_aligned_and_long_blocks_skipped() {
        // [6h, 10h) crosses the 8h boundary: never joins an 8h window.
        let mut bs =
            vec![block(0, 0, 2 * H), block(1, 6 * H, 10 * H), block(2, 10 * H, 12 * H), block(3, 50 * H, 52 * H)];
        // 8h window [8h,16h): only [10h,12h) (the crossing block is skipped); [0,8h): only [0,2h).
        // 2d window [0,48h): [0,2h) [6h,10h) [10h,12h) but it is neither complete nor before the
        // newest block but one ([50h,52h) is the newest and left out).
        assert!(plan(&ranges(), &bs).is_empty());
        bs.push(block(4, 52 * H, 54 * H));
        assert_eq!(ids(&plan(&ranges(), &bs)), vec!["000", "001", "002"]);
        // Negative times align down: [-8h, 0) holds two blocks that end before the last planned one.
        let bs = vec![block(0, -4 * H, -2 * H), block(1, -2 * H, 0), block(2, 0, 2 * H), block(3, 2 * H, 4 * H)];
        assert_eq!(ids(&plan(&ranges(), &bs)), vec!["000", "001"]);
    }

    #[test]
    fn no_compact_marks_split_a_window() {
        let mut bs: Vec<BlockInfo> = (0..4).map(|i| block(i, i as i64 * 2 * H, (i as i64 + 1) * 2 * H)).collect();
        bs.push(block(4, 8 * H, 10 * H));
        bs[1].no_compact = true;
        assert_eq!(ids(&plan(&ranges(), &bs)), vec!["002", "003"]);
        bs[2].no_compact = true;
        assert!(plan(&ranges(), &bs).is_empty());
    }

    #[test]
    fn overlapping_blocks_come_first() {
        let bs = vec![block(0, 0, 2 * H), block(1, H, 3 * H), block(2, 4 * H, 6 * H), block(3, 5 * H, 7 * H)];
        assert_eq!(ids(&plan(&ranges(), &bs)), vec!["000", "001"]);
        let metas: Vec<&BlockMeta> = bs.iter().map(|b| &b.meta).collect();
        let o = overlapping(&metas);
        assert_eq!(o.len(), 2);
        let d = describe_overlaps(&o);
        assert!(
            d.contains("01J00000000000000000000000 [0, 7200000), 01J00000000000000000000001 [3600000, 10800000)"),
            "{d}"
        );
        // Touching blocks ([0,2h) and [2h,4h)) do not overlap.
        let bs = [block(0, 0, 2 * H), block(1, 2 * H, 4 * H)];
        let metas: Vec<&BlockMeta> = bs.iter().map(|b| &b.meta).collect();
        assert!(overlapping(&metas).is_empty());
    }

    #[test]
    fn covered_blocks_are_found() {
        let a = block(0, 0, 2 * H);
        let b = block(1, 2 * H, 4 * H);
        let mut ab = block(2, 0, 4 * H);
        ab.meta.compaction.sources = vec![a.meta.ulid.clone(), b.meta.ulid.clone()];
        ab.meta.compaction.level = 2;
        let c = block(3, 4 * H, 6 * H);
        assert_eq!(
            covered_blocks(&[a.clone(), b.clone(), ab.clone(), c.clone()]),
            vec![a.meta.ulid.clone(), b.meta.ulid.clone()]
        );
        // A rewrite (same sources, names the old block as parent) replaces the old block even
        // with a lower ULID.
        let mut rewritten = block(0, 0, 2 * H);
        rewritten.meta.ulid = "01H00000000000000000000000".into();
        rewritten.meta.compaction.parents = vec![BlockDesc { ulid: a.meta.ulid.clone(), min_time: 0, max_time: 2 * H }];
        assert_eq!(covered_blocks(&[a.clone(), rewritten.clone()]), vec![a.meta.ulid.clone()]);
        assert_eq!(covered_blocks(&[rewritten, a.clone()]), vec![a.meta.ulid.clone()]);
        // Equal sources without a parent link: the higher ULID is covered.
        let mut twin = block(9, 0, 2 * H);
        twin.meta.compaction.sources = a.meta.compaction.sources.clone();
        assert_eq!(covered_blocks(&[twin.clone(), a.clone()]), vec![twin.meta.ulid.clone()]);
        assert!(covered_blocks(&[a, b, c]).is_empty());
    }

    #[test]
    fn streams_and_keys() {
        let ext: BTreeMap<String, String> =
            [("region".to_string(), "eu".to_string()), ("replica".to_string(), "a".to_string())].into();
        let s = stream_labels(&ext, &["replica".into()]);
        assert_eq!(labels_string(&s), r#"{region="eu"}"#);
        assert_eq!(group_key(&s, 0), r#"0@{region="eu"}"#);
        let only: BTreeMap<String, String> = [("replica".to_string(), "a".to_string())].into();
        assert_eq!(labels_string(&stream_labels(&only, &["replica".into()])), r#"{replica="deduped"}"#);
        assert_eq!(stream_labels(&BTreeMap::new(), &["replica".into()]), BTreeMap::new());
        let mut bs = vec![block(1, 2 * H, 4 * H), block(0, 0, 2 * H)];
        bs[0].stream = s.clone();
        let g = groups(bs);
        assert_eq!(g.len(), 2);
        assert_eq!(g[1].key, "0@{}");
        assert_eq!(g[0].labels, s);
    }

    #[test]
    fn fresh_blocks_wait_unless_the_compactor_wrote_them() {
        let now = 1_800_000_000_000i64;
        let fresh = ulid::Ulid::from_parts((now - 60_000) as u64, 1).to_string();
        let mut m = block(0, 0, 2 * H).meta;
        m.ulid = fresh;
        assert!(too_fresh(&m, now, 30 * 60_000));
        assert!(!too_fresh(&m, now, 60_000));
        m.thanos.source = COMPACTOR_SOURCE.into();
        assert!(!too_fresh(&m, now, 30 * 60_000));
    }
}
