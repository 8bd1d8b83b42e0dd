"""Which objects does an oriented detector miss? A per-object breakdown of one checkpoint on a
DOTA-format validation split, beside the AP that ``lsnet rotated eval`` reports.

    python benchmarks/rotated_misses.py --checkpoint runs/rot/best.pth [--data data/aerial]
        [--sheet misses.png] [--threads 2]

For every non-difficult ground-truth object it finds the best IoU of a detection of its class
(any score) and of any class, and the object's contrast: the mean luminance inside its box
minus that of a ring around it (the box grown by 50 %), in 0..255 units. Prints, per class, the
objects by best same-class IoU (missed < 0.1, poor 0.1-0.5, found >= 0.5), how many of the
missed ones another class found at IoU >= 0.5, and the median length, width and |contrast|
of the missed and the found objects, and for the poorly boxed ones the median ratio of the
nearest same-class box's length to the object's and the median angle between them.
``--sheet`` draws the worst-missed objects (ground truth in green, the nearest detection of the
class in red) for looking at them.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw


def box_mask(box, shape, grow: float = 1.0) -> np.ndarray:
    """Boolean (H, W) mask of an le90 box (cx, cy, w, h, angle), its sides scaled by ``grow``."""
    from lsnet.ops.rotated_boxes import obb_to_poly

    b = torch.tensor(box, dtype=torch.float64).clone()
    b[2:4] *= grow
    poly = obb_to_poly(b).tolist()
    canvas = Image.new("L", (shape[1], shape[0]), 0)
    ImageDraw.Draw(canvas).polygon([(poly[i], poly[i + 1]) for i in range(0, 8, 2)], fill=1)
    return np.asarray(canvas, dtype=bool)


def contrast(gray: np.ndarray, box) -> float:
    """Mean luminance inside ``box`` minus the mean of the ring out to 1.5x its size."""
    inner = box_mask(box, gray.shape)
    ring = box_mask(box, gray.shape, 1.5) & ~inner
    if not inner.any() or not ring.any():
        return float("nan")
    return float(gray[inner].mean() - gray[ring].mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="a checkpoint of lsnet rotated train")
    parser.add_argument("--data", default="data/aerial", help="DOTA root with val/images and val/labelTxt")
    parser.add_argument("--sheet", help="PNG of the worst-missed objects")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from lsnet.data import load_image
    from lsnet.ops.rotated_boxes import box_iou_rotated, obb_to_poly
    from lsnet.rotated.dota import DotaDataset
    from lsnet.rotated.inference import detect_image, load_rotated_for_inference
    from tqdm import tqdm

    inf = load_rotated_for_inference(args.checkpoint)
    classes, cfg = inf.class_names, inf.config
    val = DotaDataset(Path(args.data) / "val", classes)
    records, difficult = [], 0
    for name, target in tqdm(val.annotations().items(), desc="detecting", unit="image"):
        image = load_image(val.root / "images" / f"{name}.png")
        rgb = np.asarray(image, dtype=np.float32)
        gray = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        x = torch.from_numpy(rgb.copy()).permute(2, 0, 1) / 255.0
        boxes, _, labels = detect_image(inf.model, x, cfg.patch_size, cfg.gap)
        gt = torch.as_tensor(target["boxes"], dtype=torch.float64).reshape(-1, 5)
        iou = box_iou_rotated(gt, boxes.double()) if len(boxes) else torch.zeros(len(gt), 0, dtype=torch.float64)
        for g in range(len(gt)):
            if bool(target["difficult"][g]):
                difficult += 1
                continue
            label = int(target["labels"][g])
            same = labels == label
            best_same = float(iou[g][same].max()) if same.any() else 0.0
            nearest = None
            if same.any():
                nearest = boxes[torch.nonzero(same).flatten()[iou[g][same].argmax()]].tolist()
            records.append(dict(image=name, label=label, box=gt[g].tolist(), best_same=best_same,
                                best_any=float(iou[g].max()) if iou.shape[1] else 0.0,
                                contrast=contrast(gray, gt[g].tolist()), nearest=nearest))

    def med(values, fmt=".0f"):
        return f"{statistics.median(values):{fmt}}" if values else "-"

    def long_side(box):
        """(length, angle of the long side) of an le90 box, whichever side the detector called w."""
        return (box[2], box[4]) if box[2] >= box[3] else (box[3], box[4] + np.pi / 2)

    def angle_error(a, b):
        """Degrees between two long-side directions (a box is the same turned by 180 degrees)."""
        d = abs(np.degrees(a - b)) % 180.0
        return min(d, 180.0 - d)

    print(f"{Path(args.checkpoint)} on {val.root}: {len(records)} objects scored, {difficult} difficult ones "
          f"left out ({difficult / max(1, len(records) + difficult):.1%})\n")
    print("| class | objects | missed (< 0.1) | poor (0.1-0.5) | found (>= 0.5) | missed but found as another class "
          "| missed: median length x width, abs. contrast | found: median length x width, abs. contrast "
          "| poor: median length ratio, angle error (deg) |")
    print("|---|---:|---:|---:|---:|---:|---|---|---|")
    for k, cls in enumerate(classes):
        rows = [r for r in records if r["label"] == k]
        missed = [r for r in rows if r["best_same"] < 0.1]
        found = [r for r in rows if r["best_same"] >= 0.5]
        poor = [r for r in rows if 0.1 <= r["best_same"] < 0.5]
        other = sum(r["best_any"] >= 0.5 for r in missed)
        ratios = [long_side(r["nearest"])[0] / long_side(r["box"])[0] for r in poor]
        angles = [angle_error(long_side(r["nearest"])[1], long_side(r["box"])[1]) for r in poor]

        def shape(group):
            return (f"{med([r['box'][2] for r in group])} x {med([r['box'][3] for r in group])}, "
                    f"{med([abs(r['contrast']) for r in group if r['contrast'] == r['contrast']])}")

        print(f"| {cls} | {len(rows)} | {len(missed)} | {len(poor)} | {len(found)} | {other} | {shape(missed)} "
              f"| {shape(found)} | {med(ratios, '.2f')}, {med(angles)} |")

    if args.sheet:
        worst = sorted(records, key=lambda r: (r["best_same"], abs(r["contrast"])))[:12]
        tile = 200
        sheet = Image.new("RGB", (tile * 4, tile * 3))
        for i, r in enumerate(worst):
            image = load_image(val.root / "images" / f"{r['image']}.png").convert("RGB")
            draw = ImageDraw.Draw(image)
            for box, colour in ((r["box"], (0, 255, 0)), (r["nearest"], (255, 0, 0))):
                if box is not None:
                    poly = obb_to_poly(torch.tensor(box, dtype=torch.float64)).tolist()
                    draw.polygon([(poly[j], poly[j + 1]) for j in range(0, 8, 2)], outline=colour)
            cx, cy = int(r["box"][0]), int(r["box"][1])
            crop = image.crop((cx - 50, cy - 50, cx + 50, cy + 50)).resize((tile, tile), Image.NEAREST)
            ImageDraw.Draw(crop).text((4, 4), f"{classes[r['label']]} IoU {r['best_same']:.2f}", fill=(255, 255, 0))
            sheet.paste(crop, ((i % 4) * tile, (i // 4) * tile))
        sheet.save(args.sheet)
        print(f"\nworst-missed objects: {args.sheet}")


if __name__ == "__main__":
    main()
