"""yolo.assign.assign against an independent, plain-Python reference (loops and floats, no torch, no yolo.assign).

Exact comparison without flaky float noise: box coordinates are multiples of 0.5 px and anchors whole pixels, so
every area, intersection and union is exact in float32 as well as in Python floats; the only rounding is the final
division, which the reference rounds to float32 (`f32`) as torch does. Thresholds and ties are then decided on
identical numbers, and the positives can be compared as exact sets.
"""
import random
import struct

import pytest
import torch

from yolo.assign import assign

STRIDES = (8, 16, 32)
DEFAULT_ANCHORS = [[(14, 14), (22, 22), (30, 30)], [(42, 42), (58, 58), (80, 80)], [(110, 110), (150, 150), (210, 210)]]

def f32(x):
    """Round a Python float to the nearest float32, as torch stores it."""
    return struct.unpack("f", struct.pack("f", x))[0]


# ------------------------------------------------------------------------------------------ the reference
def shape_iou(w1, h1, w2, h2):
    inter = min(w1, w2) * min(h1, h2)
    return f32(inter / (w1 * h1 + w2 * h2 - inter))


def box_iou_cxcywh(a, b):
    ax1, ay1, ax2, ay2 = a[0] - a[2] / 2, a[1] - a[3] / 2, a[0] + a[2] / 2, a[1] + a[3] / 2
    bx1, by1, bx2, by2 = b[0] - b[2] / 2, b[1] - b[3] / 2, b[0] + b[2] / 2, b[1] + b[3] / 2
    inter = max(0.0, min(ax2, bx2) - max(ax1, bx1)) * max(0.0, min(ay2, by2) - max(ay1, by1))
    return f32(inter / (a[2] * a[3] + b[2] * b[3] - inter))


def centre_cell(cx, cy, stride, grid_hw):
    h, w = grid_hw
    return min(max(int(cy // stride), 0), h - 1), min(max(int(cx // stride), 0), w - 1)  # (gy, gx)


def overlaps_along(centre, size, anchor_size, stride, num_cells):
    """[(cell, overlap length)] along one axis between the GT and the anchor centred in each cell, overlap > 0.

    Box intersections are separable (inter = overlap_x * overlap_y), which keeps the all_grid loops fast."""
    lo, hi = centre - size / 2, centre + size / 2
    out = []
    for cell in range(num_cells):
        a_centre = (cell + 0.5) * stride
        overlap = min(hi, a_centre + anchor_size / 2) - max(lo, a_centre - anchor_size / 2)
        if overlap > 0:
            out.append((cell, overlap))
    return out


def reference_candidates(targets, anchors, grid_sizes, strides, strategy, thres, unmatched_to_best):
    """All candidates as tuples (scale, batch, anchor, gy, gx, gt, iou), before conflicts are resolved."""
    thres32 = f32(thres)
    out = []
    for g, (b, _, cx, cy, w, h) in enumerate(targets):
        found = []
        for s, (grid_hw, stride) in enumerate(zip(grid_sizes, strides)):
            gy0, gx0 = centre_cell(cx, cy, stride, grid_hw)
            for a, (aw, ah) in enumerate(anchors[s]):
                if strategy == "single_grid":
                    iou = shape_iou(w, h, aw, ah)
                    if iou >= thres32:
                        found.append((s, int(b), a, gy0, gx0, g, iou))
                elif strategy == "nearby_grid":
                    iou = shape_iou(w, h, aw, ah)
                    for dy in (-1, 0, 1):
                        for dx in (-1, 0, 1):
                            gy, gx = gy0 + dy, gx0 + dx
                            if 0 <= gy < grid_hw[0] and 0 <= gx < grid_hw[1] and iou >= thres32:
                                found.append((s, int(b), a, gy, gx, g, iou))
                else:
                    # IoU <= smaller area / larger area: skip anchors that cannot reach the threshold anywhere
                    ratio = min(w * h, aw * ah) / max(w * h, aw * ah)
                    if ratio < thres * 0.999:
                        continue
                    along_x = overlaps_along(cx, w, aw, stride, grid_hw[1])
                    for gy, overlap_y in overlaps_along(cy, h, ah, stride, grid_hw[0]):
                        for gx, overlap_x in along_x:
                            inter = overlap_x * overlap_y
                            iou = inter / (w * h + aw * ah - inter)
                            if iou >= thres * 0.999:  # float32 rounding moves an IoU by < 1e-7
                                iou = f32(iou)
                                if iou >= thres32:
                                    found.append((s, int(b), a, gy, gx, g, iou))
        if not found and unmatched_to_best:
            best = None
            for s, (grid_hw, stride) in enumerate(zip(grid_sizes, strides)):
                gy, gx = centre_cell(cx, cy, stride, grid_hw)
                for a, (aw, ah) in enumerate(anchors[s]):
                    if strategy == "all_grid":
                        iou = box_iou_cxcywh((cx, cy, w, h), ((gx + 0.5) * stride, (gy + 0.5) * stride, aw, ah))
                    else:
                        iou = shape_iou(w, h, aw, ah)
                    if best is None or iou > best[-1]:  # strict: the first index wins ties
                        best = (s, int(b), a, gy, gx, g, iou)
            found.append(best)
        out += found
    return out


def reference_assign(targets, anchors, grid_sizes, strides, strategy, thres, unmatched_to_best=True):
    """Positives {(scale, batch, anchor, gy, gx, gt): iou} with conflicts won by the highest IoU, then lowest GT."""
    winners = {}
    for s, b, a, gy, gx, g, iou in reference_candidates(targets, anchors, grid_sizes, strides, strategy, thres,
                                                        unmatched_to_best):
        key = (s, b, a, gy, gx)
        if key not in winners or iou > winners[key][1] or (iou == winners[key][1] and g < winners[key][0]):
            winners[key] = (g, iou)
    return {key + (g,): iou for key, (g, iou) in winners.items()}


def reference_stats(positives, num_gt, num_scales=3):
    per_gt = [0] * num_gt
    per_scale = [0] * num_scales
    for s, *_, g in positives:
        per_gt[g] += 1
        per_scale[s] += 1
    stats = {f"pos_s{s}": float(n) for s, n in enumerate(per_scale)}
    if num_gt:
        stats.update(pos_per_gt=sum(per_gt) / num_gt, pos_per_gt_min=float(min(per_gt)),
                     unmatched_pct=100.0 * sum(n == 0 for n in per_gt) / num_gt, num_gt=float(num_gt))
    else:
        stats.update(pos_per_gt=0.0, pos_per_gt_min=0.0, unmatched_pct=0.0, num_gt=0.0)
    return stats


# ------------------------------------------------------------------------------------------ helpers
def as_dict(result):
    """assign()'s output as {(scale, batch, anchor, gy, gx, gt): iou}; fails on a duplicated anchor."""
    out = {}
    for s, r in enumerate(result):
        for row in zip(r.batch.tolist(), r.anchor.tolist(), r.gy.tolist(), r.gx.tolist(), r.gt.tolist(),
                       r.iou.tolist()):
            key = (s,) + tuple(row[:5])
            assert key not in out, f"positive {key} listed twice"
            out[key] = row[5]
    return out


def run_assign(targets, anchors, img_hw, strategy, thres, **kw):
    grid_sizes = [(img_hw[0] // s, img_hw[1] // s) for s in STRIDES]
    t = torch.tensor(targets, dtype=torch.float32).view(-1, 6)
    result, stats = assign(t, torch.tensor(anchors, dtype=torch.float32), grid_sizes, STRIDES, strategy, thres, **kw)
    return result, stats, grid_sizes


def half(x):
    return round(x * 2) / 2  # multiples of 0.5 px keep every area exact in float32


def random_case(rng):
    """One random batch: image size, targets rows, anchors, threshold, unmatched_to_best."""
    if rng.random() < 0.3:
        img_h = img_w = 416
    else:
        img_h, img_w = rng.choice(range(64, 449, 32)), rng.choice(range(64, 449, 32))
    batch = rng.randint(1, 4)
    anchors = DEFAULT_ANCHORS if rng.random() < 0.5 else [
        sorted((rng.randint(4, 320), rng.randint(4, 320)) for _ in range(3)) for _ in range(3)]
    rows = []
    for b in range(batch):
        count = rng.choice([0, 0, 1, 2, 5, 12, 30, 50])
        for _ in range(count):
            kind = rng.random()
            if kind < 0.15:    # tiny
                w, h = half(rng.uniform(1, 4)), half(rng.uniform(1, 4))
            elif kind < 0.25:  # larger than the image
                w, h = half(rng.uniform(1.0, 1.4) * img_w), half(rng.uniform(1.0, 1.4) * img_h)
            else:
                w, h = half(rng.uniform(4, 0.8 * img_w)), half(rng.uniform(4, 0.8 * img_h))
            edge = rng.random()
            if edge < 0.1:     # centre exactly on the far edge
                cx, cy = float(img_w), half(rng.uniform(0, img_h))
            elif edge < 0.2:
                cx, cy = half(rng.uniform(0, img_w)), float(img_h)
            elif edge < 0.25:
                cx, cy = 0.0, 0.0
            elif edge < 0.4 and rows and rows[-1][0] == b:  # next to the previous GT: same cell
                cx, cy = min(rows[-1][2] + rng.choice([0, 0.5, 1]), img_w), min(rows[-1][3] + 0.5, img_h)
            else:
                cx, cy = half(rng.uniform(0, img_w)), half(rng.uniform(0, img_h))
            rows.append([b, rng.randrange(3), cx, cy, max(w, 0.5), max(h, 0.5)])
            if rng.random() < 0.05:
                rows.append(list(rows[-1]))  # duplicate GT
    if rng.random() < 0.3:
        rng.shuffle(rows)  # assign must not rely on rows sorted by image
    thres = rng.choice([0.1, 0.2, 0.25, 0.3, 0.4, 0.5, 0.7])
    return (img_h, img_w), rows, anchors, thres, rng.random() < 0.85


def check_against_reference(seed, strategy, max_gts=None):
    rng = random.Random(seed)
    img_hw, rows, anchors, thres, to_best = random_case(rng)
    rows = rows[:max_gts]
    result, stats, grid_sizes = run_assign(rows, anchors, img_hw, strategy, thres, unmatched_to_best=to_best)
    got = as_dict(result)
    want = reference_assign(rows, anchors, grid_sizes, STRIDES, strategy, thres, to_best)
    context = f"seed {seed}, {strategy}, img {img_hw}, {len(rows)} GTs, thres {thres}, unmatched_to_best {to_best}"
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    assert not missing and not extra, f"{context}: missing {missing[:5]} extra {extra[:5]}"
    for key, iou in want.items():
        assert abs(got[key] - iou) <= 1e-5, f"{context}: iou of {key} is {got[key]}, expected {iou}"
    for name, value in reference_stats(want, len(rows)).items():
        assert stats[name] == pytest.approx(value, abs=1e-4), f"{context}: stats[{name}]"


# ------------------------------------------------------------------------------------------ tests
@pytest.mark.parametrize("strategy", ["single_grid", "nearby_grid", "all_grid"])
def test_random_cases_match_reference(strategy):
    for seed in range(200):
        check_against_reference(seed, strategy)


@pytest.mark.parametrize("strategy", ["single_grid", "nearby_grid", "all_grid"])
def test_random_cases_with_three_gts_match_reference(strategy):
    # few GTs, so most anchors have a single claimant: cells, thresholds, the unmatched rule, stats and borders are
    # checked apart from the conflict resolution that dominates the crowded cases above
    for seed in range(200):
        check_against_reference(seed, strategy, max_gts=3)


def test_late_gt_alone_on_a_scale_is_kept():
    # five small GTs match only stride 8; GT 5 (150x150) matches only anchor 150 of stride 32 (IoU 1), so stride 32
    # has one candidate whose GT index (5) is above the candidate count: it must still be positive
    rows = [[0, 0, x, 20, 10, 10] for x in (20, 60, 100, 140, 180)] + [[0, 0, 200, 200, 150, 150]]
    result, stats, _ = run_assign(rows, DEFAULT_ANCHORS, (416, 416), "single_grid", 0.3)
    assert as_dict(result).get((2, 0, 1, 6, 6, 5)) == 1.0
    assert stats["pos_per_gt_min"] == 1.0


def test_hand_computed_single_grid():
    # GT 30x30 centred at (100, 60): stride 8 cell (x 12, y 7); shape IoUs with 14, 22, 30 px anchors are
    # 196/900, 484/900, 1 -> anchors 1 and 2 at thres 0.5; stride 16 anchor 42: 900/1764 = 0.51 -> positive too
    result, _, _ = run_assign([[0, 1, 100, 60, 30, 30]], DEFAULT_ANCHORS, (416, 416), "single_grid", 0.5)
    got = as_dict(result)
    assert set(got) == {(0, 0, 1, 7, 12, 0), (0, 0, 2, 7, 12, 0), (1, 0, 0, 3, 6, 0)}
    assert got[(0, 0, 1, 7, 12, 0)] == pytest.approx(484 / 900)


def test_higher_iou_gt_listed_second_wins():
    # both GTs in stride-8 cell (12, 12); anchor 30 px: GT 0 (20x20) has IoU 400/900, GT 1 (30x30) has IoU 1
    rows = [[0, 0, 100, 100, 20, 20], [0, 2, 101, 101, 30, 30]]
    got = as_dict(run_assign(rows, DEFAULT_ANCHORS, (416, 416), "single_grid", 0.3)[0])
    assert got[(0, 0, 2, 12, 12, 1)] == 1.0
    assert (0, 0, 2, 12, 12, 0) not in got
    assert got[(0, 0, 1, 12, 12, 0)] == pytest.approx(400 / 484)  # anchor 22: GT 0 (0.83) beats GT 1 (0.54)


def test_equal_iou_goes_to_lowest_gt_index():
    rows = [[0, 0, 100, 100, 22, 22], [0, 1, 100, 100, 22, 22]]  # duplicates
    got = as_dict(run_assign(rows, DEFAULT_ANCHORS, (416, 416), "nearby_grid", 0.3)[0])
    assert got and all(key[-1] == 0 for key in got)


def test_unmatched_gets_best_anchor_first_index_on_ties():
    # 4x4 GT matches nothing at 0.5; identical anchors on every scale -> the first one (scale 0, anchor 0) wins
    anchors = [[(10, 10), (10, 10), (20, 20)]] * 3
    rows = [[0, 0, 50, 50, 4, 4]]
    got = as_dict(run_assign(rows, anchors, (128, 128), "single_grid", 0.5)[0])
    assert got == {(0, 0, 0, 6, 6, 0): pytest.approx(16 / 100)}
    assert not as_dict(run_assign(rows, anchors, (128, 128), "single_grid", 0.5, unmatched_to_best=False)[0])


def test_empty_targets():
    for strategy in ("single_grid", "nearby_grid", "all_grid"):
        result, stats, _ = run_assign([], DEFAULT_ANCHORS, (416, 416), strategy, 0.3)
        assert len(result) == 3 and all(len(r.gt) == 0 for r in result)
        assert stats == reference_stats({}, 0)


def test_non_square_grid_320x416():
    rng = random.Random(7)
    img_h, img_w = 320, 416
    rows = [[0, 0, half(rng.uniform(0, img_w)), half(rng.uniform(0, img_h)), half(rng.uniform(4, 300)),
             half(rng.uniform(4, 250))] for _ in range(12)]
    rows += [[0, 1, img_w, img_h, 40, 40], [0, 1, img_w, 10, 300, 20], [0, 2, 3, img_h, 12, 200]]  # far edges
    for strategy in ("single_grid", "nearby_grid", "all_grid"):
        for first in range(0, len(rows), 3):  # groups of 3 GTs: a failure names the group
            group = rows[first:first + 3]
            result, stats, grids = run_assign(group, DEFAULT_ANCHORS, (img_h, img_w), strategy, 0.3)
            assert grids == [(40, 52), (20, 26), (10, 13)]
            got = as_dict(result)
            want = reference_assign(group, DEFAULT_ANCHORS, grids, STRIDES, strategy, 0.3)
            assert set(got) == set(want), f"{strategy}, GTs {first}..{first + 2}"
            assert stats == pytest.approx(reference_stats(want, len(group)))


def random_claimant(seed, rows, strategy="single_grid"):
    gen = torch.Generator().manual_seed(seed)
    return as_dict(run_assign(rows, DEFAULT_ANCHORS, (416, 416), strategy, 0.3, filter_by_max_iou=False,
                              generator=gen)[0])


def test_random_conflicts_are_fair_and_seeded():
    # three GTs of different sizes in one stride-8 cell all claim anchor 22 (IoUs 0.83, 1.0, 0.86)
    rows = [[0, 0, 100, 100, 20, 20], [0, 1, 101, 102, 22, 22], [0, 2, 102, 100, 24, 24]]
    key = (0, 0, 1, 12, 12)
    counts = [0, 0, 0]
    runs = 300
    want = reference_assign(rows, DEFAULT_ANCHORS, [(52, 52), (26, 26), (13, 13)], STRIDES, "single_grid", 0.3)
    for seed in range(runs):
        got = random_claimant(seed, rows)
        winners = [k[-1] for k in got if k[:5] == key]
        assert len(winners) == 1
        counts[winners[0]] += 1
        assert {k[:5] for k in got} == {k[:5] for k in want}  # still one GT per anchor, the same anchors
    chi2 = sum((c - runs / 3) ** 2 / (runs / 3) for c in counts)
    assert chi2 < 13.8, f"claimant counts {counts} are not uniform (chi2 {chi2:.1f}, p < 0.001)"
    assert random_claimant(123, rows) == random_claimant(123, rows)


def test_random_conflicts_pick_a_claimant_in_every_strategy():
    rng = random.Random(3)
    rows = [[0, 0, half(rng.uniform(80, 120)), half(rng.uniform(80, 120)), half(rng.uniform(15, 60)),
             half(rng.uniform(15, 60))] for _ in range(6)]
    grids = [(52, 52), (26, 26), (13, 13)]
    for strategy in ("single_grid", "nearby_grid", "all_grid"):
        claimants = {}
        for s, b, a, gy, gx, g, _ in reference_candidates(rows, DEFAULT_ANCHORS, grids, STRIDES, strategy, 0.3, True):
            claimants.setdefault((s, b, a, gy, gx), set()).add(g)
        got = random_claimant(11, rows, strategy)
        assert {k[:5] for k in got} == set(claimants)
        assert all(k[-1] in claimants[k[:5]] for k in got)


def test_unknown_strategy_is_rejected():
    with pytest.raises(ValueError, match="label_assignment"):
        run_assign([[0, 0, 10, 10, 5, 5]], DEFAULT_ANCHORS, (64, 64), "everything", 0.3)


# ------------------------------------------------------------------------------------------ --task debug
def test_run_debug_writes_pngs(tmp_path):
    from yolo.config import BaseConfig
    from yolo.tasks.assignments import draw_assignments

    cfg = BaseConfig()
    cfg.task, cfg.data_root, cfg.runs_dir = "debug", str(tmp_path / "shapes"), str(tmp_path / "runs")
    cfg.shapes_num_train, cfg.shapes_num_val = 4, 2
    cfg.batch_size, cfg.num_workers, cfg.img_size, cfg.num_debug_batch = 2, 0, 128, 1
    cfg.debug_demos = True
    cfg.finalize()
    out_dir = draw_assignments(cfg, demo_dir=tmp_path / "imgs")
    assert out_dir == tmp_path / "runs" / "debug"
    pngs = sorted(out_dir.glob("*.png"))
    assert len(pngs) == 2 and all(p.stat().st_size > 1000 for p in pngs)
    demos = sorted(p.name for p in (tmp_path / "imgs").glob("*.png"))
    assert demos == ["all_grid_demo.png", "nearby_grid_demo.png", "single_grid_demo.png"]
    assert all(1000 < (tmp_path / "imgs" / d).stat().st_size <= 300 * 1024 for d in demos)
