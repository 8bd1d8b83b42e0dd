"""Rotated-box operators (issue 19): conversions, exact IoU, NMS, RoIAlignRotated, coders.

The references here are independent of the code under test: IoU from a plain-Python
Sutherland-Hodgman clipping with the shoelace formula, NMS from a plain loop over that
IoU, RoIAlign from hand computations and torchvision's axis-aligned roi_align.
"""

from __future__ import annotations

import math

import pytest
import torch

from lsnet.ops import (
    DeltaXYWHAOBBoxCoder,
    MidpointOffsetCoder,
    RotatedRoIAlign,
    batched_nms_rotated,
    box_iou_rotated,
    hbox_to_obb,
    nms_rotated,
    norm_angle_le90,
    obb_to_hbox,
    obb_to_poly,
    poly_to_obb,
    roi_align_rotated,
)

# ---------------------------------------------------------------------------------------
# plain-Python references
# ---------------------------------------------------------------------------------------

def py_corners(box):
    cx, cy, w, h, a = (float(v) for v in box)
    c, s = math.cos(a), math.sin(a)
    pts = []
    for su, sv in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
        lx, ly = su * w / 2, sv * h / 2
        pts.append((cx + c * lx - s * ly, cy + s * lx + c * ly))
    return pts


def py_area(poly):
    return abs(sum(poly[i][0] * poly[(i + 1) % len(poly)][1] - poly[(i + 1) % len(poly)][0] * poly[i][1]
                   for i in range(len(poly)))) / 2


def py_clip(subject, clip):
    """Sutherland-Hodgman: the part of convex polygon ``subject`` inside convex ``clip``."""
    signed = sum(clip[i][0] * clip[(i + 1) % 4][1] - clip[(i + 1) % 4][0] * clip[i][1] for i in range(4))
    orient = 1.0 if signed > 0 else -1.0
    out = list(subject)
    for i in range(len(clip)):
        ax, ay = clip[i]
        bx, by = clip[(i + 1) % len(clip)]

        def side(p, ax=ax, ay=ay, bx=bx, by=by):
            return orient * ((bx - ax) * (p[1] - ay) - (by - ay) * (p[0] - ax))

        inp, out = out, []
        for k in range(len(inp)):
            p, q = inp[k], inp[(k + 1) % len(inp)]
            sp, sq = side(p), side(q)
            if sp >= 0:
                out.append(p)
            if (sp >= 0) != (sq >= 0):
                t = sp / (sp - sq)
                out.append((p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1])))
        if not out:
            return []
    return out


def py_iou(b1, b2):
    a1, a2 = float(b1[2]) * float(b1[3]), float(b2[2]) * float(b2[3])
    if a1 <= 0 or a2 <= 0:
        return 0.0
    clipped = py_clip(py_corners(b1), py_corners(b2))
    inter = py_area(clipped) if len(clipped) >= 3 else 0.0
    return inter / (a1 + a2 - inter)


def py_nms(boxes, scores, thr):
    order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))
    keep = []
    for i in order:
        if all(py_iou(boxes[i], boxes[k]) <= thr for k in keep):
            keep.append(i)
    return keep


def random_boxes(n, gen, spread=20.0, size=10.0):
    xy = torch.rand(n, 2, generator=gen, dtype=torch.float64) * spread
    wh = torch.rand(n, 2, generator=gen, dtype=torch.float64) * size + 0.5
    a = (torch.rand(n, 1, generator=gen, dtype=torch.float64) - 0.5) * math.pi
    return torch.cat([xy, wh, a], 1)


def special_boxes():
    """Degenerate, nested, touching, identical, far-apart and edge-sharing cases."""
    b = [
        [10, 10, 6, 4, 0.3],
        [10, 10, 6, 4, 0.3],              # identical
        [10, 10, 2, 1, -0.7],             # nested inside the first
        [16, 10, 6, 4, 0.0],              # touches [10,10,6,4,0] along an edge
        [10, 10, 6, 4, 0.0],
        [10, 14, 6, 4, 0.0],              # shares the top edge of the previous one
        [10, 10, 0, 4, 0.2],              # zero width
        [10, 10, 3, 0, 0.2],              # zero height
        [10, 10, 0, 0, 0.0],              # a point
        [500, -300, 5, 5, 1.0],           # far away
        [10, 10, 4, 6, -math.pi / 2],     # the same rectangle as [10,10,6,4,0]
        [10, 10, 6, 4, math.pi / 4],
        [13, 12, 6, 4, math.pi / 2 - 1e-9],
    ]
    return torch.tensor(b, dtype=torch.float64)


def same_rectangles(b1, b2, atol):
    """Whether boxes describe the same rectangles: their corner lists agree up to a
    cyclic shift (obb_to_poly walks every box the same way round)."""
    p1 = obb_to_poly(b1).reshape(-1, 4, 2)
    p2 = obb_to_poly(b2).reshape(-1, 4, 2)
    err = torch.stack([(p1 - p2.roll(k, 1)).abs().amax((1, 2)) for k in range(4)]).amin(0)
    return bool((err <= atol).all()), err.max().item()


# ---------------------------------------------------------------------------------------
# conversions
# ---------------------------------------------------------------------------------------

def test_obb_to_poly_convention():
    # angle pi/2 turns the x axis onto the y axis (y down: clockwise on screen), so a box
    # 4 wide and 2 high becomes 2 wide and 4 high; the first corner is local (-w/2, -h/2)
    p = obb_to_poly(torch.tensor([[0.0, 0.0, 4.0, 2.0, math.pi / 2]], dtype=torch.float64))
    expected = torch.tensor([[1.0, -2.0, 1.0, 2.0, -1.0, 2.0, -1.0, -2.0]], dtype=torch.float64)
    torch.testing.assert_close(p, expected)
    # a small positive angle moves the right-hand end of the box down (larger y)
    p = obb_to_poly(torch.tensor([[0.0, 0.0, 4.0, 2.0, 0.1]]))[0]
    assert p[3] > -1.0 and p[2] > p[0]


def test_poly_to_obb_round_trip_and_le90():
    gen = torch.Generator().manual_seed(1)
    boxes = random_boxes(500, gen)
    boxes[:, 4] = (torch.rand(500, generator=gen, dtype=torch.float64) - 0.5) * 6 * math.pi  # any angle
    back = poly_to_obb(obb_to_poly(boxes))
    assert (back[:, 4] >= -math.pi / 2).all() and (back[:, 4] < math.pi / 2).all()
    assert (back[:, 2] >= back[:, 3]).all()  # le90: the longer side is w
    ok, err = same_rectangles(boxes, back, 1e-9)
    assert ok, err
    torch.testing.assert_close(back, norm_angle_le90(boxes))
    # batched leading dimensions
    assert poly_to_obb(obb_to_poly(boxes.reshape(5, 100, 5))).shape == (5, 100, 5)


def test_poly_to_obb_reads_mmrotate_edges():
    # a square with p1-p2 not longer than p2-p3: the angle comes from p1->p4 (mmrotate)
    poly = torch.tensor([0.0, 0.0, 2.0, 0.0, 2.0, 2.0, 0.0, 2.0])
    torch.testing.assert_close(poly_to_obb(poly), torch.tensor([1.0, 1.0, 2.0, 2.0, -math.pi / 2]))
    poly = torch.tensor([0.0, 0.0, 4.0, 0.0, 4.0, 2.0, 0.0, 2.0])  # p1->p2 is the long edge
    torch.testing.assert_close(poly_to_obb(poly), torch.tensor([2.0, 1.0, 4.0, 2.0, 0.0]))


def test_norm_angle_le90():
    b = torch.tensor([[0.0, 0.0, 2.0, 5.0, 0.3], [0.0, 0.0, 5.0, 2.0, math.pi / 2],
                      [0.0, 0.0, 5.0, 2.0, -1e-20], [1.0, 2.0, 3.0, 3.0, 7.0]], dtype=torch.float64)
    n = norm_angle_le90(b)
    torch.testing.assert_close(n[0], torch.tensor([0.0, 0.0, 5.0, 2.0, 0.3 + math.pi / 2 - math.pi],
                                                  dtype=torch.float64))
    assert n[1, 4].item() == pytest.approx(-math.pi / 2)
    assert -math.pi / 2 <= n[2, 4].item() < math.pi / 2
    assert same_rectangles(b, n, 1e-12)[0]
    torch.testing.assert_close(norm_angle_le90(n), n)  # idempotent, squares included


def test_hbox_conversions():
    h = torch.tensor([[1.0, 2.0, 5.0, 4.0]])
    o = hbox_to_obb(h)
    torch.testing.assert_close(o, torch.tensor([[3.0, 3.0, 4.0, 2.0, 0.0]]))
    torch.testing.assert_close(obb_to_hbox(o), h)
    # the enclosing box of a rotated one bounds its corners exactly
    gen = torch.Generator().manual_seed(2)
    b = random_boxes(100, gen)
    p = obb_to_poly(b)
    e = obb_to_hbox(b)
    torch.testing.assert_close(e[:, 0], p[:, 0::2].amin(1))
    torch.testing.assert_close(e[:, 3], p[:, 1::2].amax(1))


# ---------------------------------------------------------------------------------------
# IoU
# ---------------------------------------------------------------------------------------

def test_iou_known_answers():
    unit = torch.tensor([[0.0, 0.0, 1.0, 1.0, 0.0]])
    # The unit square against itself turned by 45 degrees about its centre: the overlap
    # is a regular octagon, the square minus four corner triangles. The turned square's
    # sides lie 1/2 from the centre, the square's corners sqrt(2)/2 away, so each cut-off
    # triangle is right-isosceles with height d = (sqrt(2) - 1)/2 and area d^2:
    # intersection 1 - 4 d^2 = 2 sqrt(2) - 2, union 2 - (2 sqrt(2) - 2) = 4 - 2 sqrt(2),
    # IoU (2 sqrt(2) - 2) / (4 - 2 sqrt(2)) = 1/sqrt(2) = sqrt(2)/2 ~ 0.7071, as the issue says.
    turned = torch.tensor([[0.0, 0.0, 1.0, 1.0, math.pi / 4]])
    assert box_iou_rotated(unit, turned).item() == pytest.approx(math.sqrt(2) / 2, abs=1e-6)
    # shifted by half its width: intersection 1/2, union 3/2
    shifted = torch.tensor([[0.5, 0.0, 1.0, 1.0, 0.0]])
    assert box_iou_rotated(unit, shifted).item() == pytest.approx(1 / 3, abs=1e-6)
    assert box_iou_rotated(unit, unit).item() == pytest.approx(1.0, abs=1e-6)
    # float64 in float64 out, exact to rounding
    r = box_iou_rotated(unit.double(), turned.double())
    assert r.dtype == torch.float64 and abs(r.item() - math.sqrt(0.5)) < 1e-12


def test_iou_matches_python_clipping():
    gen = torch.Generator().manual_seed(3)
    b1 = torch.cat([random_boxes(40, gen), special_boxes()])
    b2 = torch.cat([random_boxes(30, gen), special_boxes()])
    got = box_iou_rotated(b1, b2)
    ref = torch.tensor([[py_iou(p, q) for q in b2] for p in b1], dtype=torch.float64)
    assert got.shape == (b1.shape[0], b2.shape[0])
    assert torch.isfinite(got).all()
    assert (got - ref).abs().max().item() < 1e-9
    # touching boxes: 0; identical (also written with swapped sides): 1
    s = special_boxes()
    assert got[40 + 4, 30 + 3].item() == pytest.approx(0.0, abs=1e-12)
    assert got[40 + 4, 30 + 10].item() == pytest.approx(1.0, abs=1e-12)
    assert got[40 + 0, 30 + 2].item() == pytest.approx(2.0 / 24.0, abs=1e-12)  # nested
    assert (got[40 + 6:40 + 9] == 0).all()  # degenerate rows
    # aligned mode pairs row i with row i; float32 input gives float32
    al = box_iou_rotated(s.float(), s.flip(0).float(), aligned=True)
    assert al.dtype == torch.float32
    torch.testing.assert_close(al.double(), box_iou_rotated(s, s.flip(0)).diagonal(), atol=1e-6, rtol=0)


def test_iou_large_coordinates_and_symmetry():
    gen = torch.Generator().manual_seed(4)
    b = random_boxes(50, gen, spread=30.0)
    far = b.clone()
    far[:, :2] += 1e5  # float64 internally, relative to the first box's centre
    torch.testing.assert_close(box_iou_rotated(far.float(), far.float()).double(), box_iou_rotated(b, b),
                               atol=2e-3, rtol=0)
    m = box_iou_rotated(b, b)
    torch.testing.assert_close(m, m.T, atol=1e-12, rtol=0)
    assert torch.allclose(m.diagonal(), torch.ones(50, dtype=torch.float64))


def test_iou_empty_and_errors():
    assert box_iou_rotated(torch.zeros(0, 5), torch.zeros(3, 5)).shape == (0, 3)
    assert box_iou_rotated(torch.zeros(0, 5), torch.zeros(0, 5), aligned=True).shape == (0,)
    with pytest.raises(ValueError):
        box_iou_rotated(torch.zeros(3, 4), torch.zeros(3, 5))
    with pytest.raises(ValueError):
        box_iou_rotated(torch.zeros(3, 5), torch.zeros(2, 5), aligned=True)


# ---------------------------------------------------------------------------------------
# NMS
# ---------------------------------------------------------------------------------------

def clustered_boxes(n, gen):
    """Boxes in a few clusters, so that NMS has real work to do."""
    centres = torch.rand(6, 2, generator=gen, dtype=torch.float64) * 60
    pick = torch.randint(0, 6, (n,), generator=gen)
    b = random_boxes(n, gen, spread=6.0, size=12.0)
    b[:, :2] += centres[pick]
    return b


@pytest.mark.parametrize("thr", [0.1, 0.5, 0.7])
def test_nms_matches_python_loop(thr):
    gen = torch.Generator().manual_seed(5)
    b = clustered_boxes(120, gen)
    s = torch.rand(120, generator=gen, dtype=torch.float64)
    keep = nms_rotated(b.float(), s.float(), thr)
    assert keep.dtype == torch.int64
    assert keep.tolist() == py_nms(b.float().double(), s.float(), thr)
    assert (s[keep].diff() <= 0).all()


def test_nms_edge_cases():
    b = special_boxes()
    s = torch.linspace(1, 0, b.shape[0], dtype=torch.float64)
    assert nms_rotated(b, s, 0.5).tolist() == py_nms(b, s, 0.5)
    assert nms_rotated(torch.zeros(0, 5), torch.zeros(0), 0.5).tolist() == []
    # equal scores: the lower index wins, as a stable sort gives
    two = torch.tensor([[0.0, 0.0, 2.0, 2.0, 0.0]] * 2)
    assert nms_rotated(two, torch.ones(2), 0.5).tolist() == [0]


def test_batched_nms_equals_per_class_nms():
    gen = torch.Generator().manual_seed(6)
    b = clustered_boxes(200, gen)
    s = torch.rand(200, generator=gen)
    cls = torch.randint(0, 4, (200,), generator=gen)
    keep = batched_nms_rotated(b, s, cls, 0.3)
    per_class = []
    for c in range(4):
        idx = (cls == c).nonzero().squeeze(1)
        per_class.append(idx[nms_rotated(b[idx], s[idx], 0.3)])
    merged = torch.cat(per_class)
    merged = merged[torch.sort(s[merged], descending=True, stable=True).indices]
    assert keep.tolist() == merged.tolist()
    # with a single class it is plain NMS
    assert batched_nms_rotated(b, s, torch.zeros(200, dtype=torch.long), 0.3).tolist() == \
        nms_rotated(b, s, 0.3).tolist()


# ---------------------------------------------------------------------------------------
# RoIAlignRotated
# ---------------------------------------------------------------------------------------

def test_roi_align_angle_zero_equals_torchvision():
    from torchvision.ops import roi_align

    gen = torch.Generator().manual_seed(7)
    feat = torch.randn(2, 3, 20, 24, generator=gen, dtype=torch.float64)
    rois = torch.tensor([[0, 20.0, 16.0, 12.0, 8.0, 0.0],
                         [1, 5.0, 30.0, 17.0, 9.0, 0.0],     # crosses the left border
                         [1, 40.0, 3.0, 30.0, 25.0, 0.0],    # crosses two borders, adaptive grid 3x4
                         [0, 24.0, 20.0, 2.0, 1.0, 0.0]], dtype=torch.float64)
    boxes = torch.cat([rois[:, :1], rois[:, 1:3] - rois[:, 3:5] / 2, rois[:, 1:3] + rois[:, 3:5] / 2], 1)
    for ratio in (0, 2):
        for clockwise in (False, True):
            got = roi_align_rotated(feat, rois, (4, 5), 0.5, ratio, aligned=True, clockwise=clockwise)
            ref = roi_align(feat, boxes, (4, 5), 0.5, ratio, aligned=True)
            torch.testing.assert_close(got, ref, atol=1e-12, rtol=0)
    # unaligned, for rois of at least one feature pixel (a smaller one is widened to 1 about
    # its centre by mmcv's rotated kernel, but from its corner x1 by torchvision's)
    got = roi_align_rotated(feat, rois[:3], 3, 0.5, 2, aligned=False)
    torch.testing.assert_close(got, roi_align(feat, boxes[:3], 3, 0.5, 2, aligned=False), atol=1e-12, rtol=0)


def test_roi_align_quarter_turn_by_hand():
    # f(y, x) = x. A roi 4 wide and 2 high at (8, 8), turned by 90 degrees, output 2 x 4.
    # aligned: the centre moves to (7.5, 7.5). Bin centres of the 2 rows sit at local
    # v = -0.5 and +0.5 across the box; a quarter turn clockwise on screen (le90, clockwise=
    # True) maps local (u, v) to (-v, u), so row 0 reads x = 7.5 + 0.5 = 8 and row 1 x = 7,
    # constant along each row (the w side now runs down the image, where f is constant).
    # Linear f: the mean over a bin's symmetric samples is f at the bin centre.
    feat = torch.arange(16.0, dtype=torch.float64).repeat(16, 1)[None, None]
    roi = torch.tensor([[0, 8.0, 8.0, 4.0, 2.0, math.pi / 2]], dtype=torch.float64)
    cw = roi_align_rotated(feat, roi, (2, 4), 1.0, 2, aligned=True, clockwise=True)
    torch.testing.assert_close(cw[0, 0], torch.tensor([[8.0] * 4, [7.0] * 4], dtype=torch.float64))
    # counter-clockwise (mmcv's default) turns the other way: (u, v) -> (v, -u)
    ccw = roi_align_rotated(feat, roi, (2, 4), 1.0, 2, aligned=True, clockwise=False)
    torch.testing.assert_close(ccw[0, 0], torch.tensor([[7.0] * 4, [8.0] * 4], dtype=torch.float64))


def test_roi_align_linear_ramp_at_rotated_bin_centres():
    # bilinear interpolation is exact for f = a x + b y + c, so each output is f at its
    # rotated bin centre, computed here from the le90 corner formula of the docs
    h, w = 40, 48
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                            indexing="ij")
    feat = torch.stack([0.7 * xs - 0.3 * ys + 2.0, -0.2 * xs + 1.1 * ys])[None]
    gen = torch.Generator().manual_seed(8)
    k = 10
    rois = torch.cat([torch.zeros(k, 1, dtype=torch.float64),
                      torch.rand(k, 2, generator=gen, dtype=torch.float64) * 16 + 16,
                      torch.rand(k, 2, generator=gen, dtype=torch.float64) * 8 + 4,
                      (torch.rand(k, 1, generator=gen, dtype=torch.float64) - 0.5) * math.pi], 1)
    oh, ow = 3, 4
    got = roi_align_rotated(feat, rois, (oh, ow), 1.0, 0, aligned=True, clockwise=True)
    for r in range(k):
        _, cx, cy, bw, bh, a = rois[r].tolist()
        for i in range(oh):
            for j in range(ow):
                u = -bw / 2 + (j + 0.5) * bw / ow
                v = -bh / 2 + (i + 0.5) * bh / oh
                x = cx + math.cos(a) * u - math.sin(a) * v - 0.5
                y = cy + math.sin(a) * u + math.cos(a) * v - 0.5
                expected = [0.7 * x - 0.3 * y + 2.0, -0.2 * x + 1.1 * y]
                assert got[r, :, i, j].tolist() == pytest.approx(expected, abs=1e-9)


def test_roi_align_borders_batches_and_module():
    feat = torch.ones(2, 1, 8, 8)
    feat[1] *= 5
    rois = torch.tensor([[1, 4.0, 4.0, 4.0, 4.0, 0.3],       # inside image 1
                         [0, 100.0, 100.0, 4.0, 4.0, 0.0],   # far outside: zeros
                         [0, 4.0, 4.0, 0.0, 0.0, 0.0]])      # empty roi, adaptive grid: zeros
    out = RotatedRoIAlign(2, 1.0, 0, clockwise=True)(feat, rois)
    assert out.shape == (3, 1, 2, 2) and out.dtype == torch.float32
    torch.testing.assert_close(out[0], torch.full((1, 2, 2), 5.0))
    assert (out[1:] == 0).all()
    assert roi_align_rotated(feat, torch.zeros(0, 6), 7).shape == (0, 1, 7, 7)
    with pytest.raises(ValueError):
        roi_align_rotated(feat, torch.zeros(3, 5), 7)
    with pytest.raises(ValueError):
        roi_align_rotated(feat, torch.tensor([[2, 4.0, 4.0, 2.0, 2.0, 0.0]]), 7)


def test_roi_align_under_autocast_keeps_the_feature_dtype():
    """Under CPU bfloat16 autocast grid_sample runs in float32; the pooled features come back in
    the features' dtype (as torchvision's roi_align does) and match the float32 result."""
    gen = torch.Generator().manual_seed(3)
    feat = torch.randn(2, 4, 9, 10, generator=gen)
    rois = torch.tensor([[0, 4.0, 4.5, 5.0, 3.0, 0.6], [1, 5.5, 3.0, 4.0, 4.0, -0.9]])
    want = roi_align_rotated(feat, rois, 3, 1.0, 2, clockwise=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = roi_align_rotated(feat.bfloat16(), rois, 3, 1.0, 2, clockwise=True)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want, rtol=2e-2, atol=2e-2)


def test_roi_align_bfloat16_samples_at_float32_positions():
    """On a large map, bfloat16 sample positions would be off by up to a pixel; the positions
    stay float32, so only the values' own rounding remains (a 6-pixel-period pattern)."""
    xs = torch.arange(256, dtype=torch.float32)
    feat = torch.sin(2 * math.pi * (xs[None, :] + 0.5 * xs[:, None]) / 6)[None, None].repeat(1, 2, 1, 1)
    rois = torch.tensor([[0, 200.3, 190.7, 40.0, 12.0, 0.5], [0, 231.2, 60.4, 30.0, 30.0, -1.2]])
    want = roi_align_rotated(feat, rois, 7, 1.0, 2, clockwise=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = roi_align_rotated(feat.bfloat16(), rois, 7, 1.0, 2, clockwise=True)
    assert (got.float() - want).abs().max() < 0.02


def test_roi_align_gradcheck():
    gen = torch.Generator().manual_seed(9)
    feat = torch.randn(2, 2, 7, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 3.3, 3.1, 4.2, 2.7, 0.4],
                         [1, 5.2, 2.9, 5.5, 3.3, -1.1],
                         [1, 7.1, 6.4, 4.0, 4.0, 0.9]], dtype=torch.float64)  # partly outside
    assert torch.autograd.gradcheck(
        lambda f: roi_align_rotated(f, rois, (2, 3), 1.0, 2, aligned=True, clockwise=True), (feat,))
    assert torch.autograd.gradcheck(
        lambda f: roi_align_rotated(f, rois, 2, 0.8, 0, aligned=False, clockwise=False), (feat,))


# ---------------------------------------------------------------------------------------
# box coders
# ---------------------------------------------------------------------------------------

def coder_boxes(n, gen, away_from_axes=False):
    b = random_boxes(n, gen, spread=100.0, size=40.0)
    b[:, 2:4] += 5.0
    if away_from_axes:
        # keep every edge at least 0.1 rad off the axes: the midpoint coder treats vertices
        # within 0.1 pixel of the same height as level, which snaps near-level boxes
        mag = torch.rand(n, generator=gen, dtype=torch.float64) * (math.pi / 2 - 0.2) + 0.1
        sign = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0).double()
        b[:, 4] = mag * sign
    return b


def test_midpoint_offset_known_deltas():
    coder = MidpointOffsetCoder()
    # an axis-aligned target against its own box: centre and size deltas 0, and the top
    # and right vertices are the corners (x2, y1), (x2, y2): da = db = 0.5, i.e. 1 / std 0.5
    gt = torch.tensor([[10.0, 20.0, 8.0, 4.0, 0.0]])
    d = coder.encode(obb_to_hbox(gt), gt)
    torch.testing.assert_close(d, torch.tensor([[0.0, 0.0, 0.0, 0.0, 1.0, 1.0]]))
    # a square turned by 45 degrees: its top vertex is above the centre and its right one
    # level with it, so all six deltas are 0
    diamond = torch.tensor([[10.0, 20.0, 6.0, 6.0, math.pi / 4]])
    torch.testing.assert_close(coder.encode(obb_to_hbox(diamond), diamond), torch.zeros(1, 6),
                               atol=1e-6, rtol=0)
    # a proposal twice as big and shifted right by half its width
    prop = torch.tensor([[8.0, 16.0, 24.0, 24.0]])  # centre (16, 20), 16 x 8
    d = coder.encode(prop, gt)
    torch.testing.assert_close(d[:, :4], torch.tensor([[-6.0 / 16, 0.0, math.log(0.5), math.log(0.5)]]))


def test_midpoint_offset_round_trip():
    gen = torch.Generator().manual_seed(10)
    coder = MidpointOffsetCoder()
    gt = coder_boxes(300, gen, away_from_axes=True)
    prop = obb_to_hbox(gt) + torch.randn(300, 4, generator=gen, dtype=torch.float64)  # stays well-formed
    back = coder.decode(prop, coder.encode(prop, gt))
    assert (back[:, 4] >= -math.pi / 2).all() and (back[:, 4] < math.pi / 2).all()
    ok, err = same_rectangles(back, gt, 1e-6)
    assert ok, err
    torch.testing.assert_close(back, norm_angle_le90(gt), atol=1e-6, rtol=0)
    # axis-aligned targets come back exactly too, and float32 works
    level = hbox_to_obb(torch.tensor([[0.0, 0.0, 10.0, 4.0], [5.0, 5.0, 8.0, 20.0]]))
    back = coder.decode(obb_to_hbox(level) + 1.0, coder.encode(obb_to_hbox(level) + 1.0, level))
    assert same_rectangles(back, level, 1e-4)[0]


def test_delta_xywha_known_deltas_and_round_trip():
    gen = torch.Generator().manual_seed(11)
    coder = DeltaXYWHAOBBoxCoder()
    gt = norm_angle_le90(coder_boxes(300, gen))
    torch.testing.assert_close(coder.encode(gt, gt), torch.zeros(300, 5, dtype=torch.float64))
    prop = norm_angle_le90(gt + torch.randn(300, 5, generator=gen, dtype=torch.float64)
                           * torch.tensor([3.0, 3.0, 2.0, 2.0, 0.3], dtype=torch.float64))
    for c in (coder, DeltaXYWHAOBBoxCoder(edge_swap=False, proj_xy=False),
              DeltaXYWHAOBBoxCoder(norm_factor=0.5, proj_xy=False)):
        back = c.decode(prop, c.encode(prop, gt))
        assert same_rectangles(back, gt, 1e-6)[0], c.__dict__
    back = coder.decode(prop, coder.encode(prop, gt))
    torch.testing.assert_close(back, gt, atol=1e-6, rtol=0)  # le90 in, le90 out
    # a target written with swapped sides is read as the same rectangle (edge_swap)
    swapped = torch.stack([gt[:, 0], gt[:, 1], gt[:, 3], gt[:, 2], gt[:, 4] + math.pi / 2], 1)
    torch.testing.assert_close(coder.encode(prop, swapped), coder.encode(prop, gt), atol=1e-9, rtol=0)
    # proj_xy measures the offset in the proposal's frame: a shift along its w side is dx only
    p = torch.tensor([[0.0, 0.0, 10.0, 5.0, math.pi / 6]])
    g = torch.tensor([[5 * math.cos(math.pi / 6), 5 * math.sin(math.pi / 6), 10.0, 5.0, math.pi / 6]])
    torch.testing.assert_close(coder.encode(p, g), torch.tensor([[0.5 / 0.1, 0.0, 0.0, 0.0, 0.0]]),
                               atol=1e-5, rtol=0)
    # max_shape clamps the centre
    far = coder.decode(p, torch.tensor([[100.0, 100.0, 0.0, 0.0, 0.0]]), max_shape=(32, 48))
    assert far[0, 0].item() == 47 and far[0, 1].item() == 31
