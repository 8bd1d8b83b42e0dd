"""DOTA task-1 (oriented boxes) evaluation, as mmrotate scores it, and the submission format.

:func:`evaluate_dota` follows mmrotate's ``eval_rbbox_map`` (what ``DOTADataset.evaluate``
calls):

* per class, every detection of every image is matched against the image's ground truth
  of that class by the IoU of the **rotated boxes** (``box_iou_rotated`` on
  ``(cx, cy, w, h, angle)``, mmcv's exact rotated-rectangle IoU; the DOTA devkit's own
  ``dota_evaluation_task1.py`` uses the IoU of the label polygons instead, which is the
  same for rectangular labels);
* in order of decreasing score, a detection goes to the ground-truth box it overlaps most
  (over all of them, difficult ones included); at IoU >= ``iou_threshold`` it is a true
  positive if that box is not difficult and not yet taken, a false positive if it was
  taken (a duplicate), and neither when the box is difficult (the detection is ignored);
  below the threshold it is a false positive;
* difficult boxes do not count in the number of ground-truth boxes (the recall's
  denominator). mmrotate's ``DOTADataset`` reads difficult objects as ordinary ones unless
  its ``difficulty`` threshold is lowered, whereas the DOTA devkit and server ignore them;
  here they are ignored, as the devkit and ``eval_rbbox_map``'s ``bboxes_ignore`` do;
* AP from the cumulative precision/recall: VOC07's 11-point interpolation by default
  (``eval_rbbox_map(use_07_metric=True)``, mmrotate's default for DOTA), or the area under
  the interpolated curve (``use_07_metric=False``, VOC2010+'s "area" mode);
* mAP is the mean AP over the classes that have ground truth (not difficult).

Ties in score are broken by input order (a stable sort; mmrotate's ``np.argsort`` is not
stable). :func:`write_dota_task1` writes the files the DOTA evaluation server takes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from ..data.folder import DataError
from ..errors import ConfigError

__all__ = ["average_precision", "evaluate_dota", "format_dota_table", "write_dota_task1"]


def average_precision(recalls, precisions, use_07_metric: bool = True) -> float:
    """AP of one class from cumulative ``recalls`` and ``precisions`` (1-D, by decreasing score).

    ``use_07_metric``: mean over the 11 recall levels 0, 0.1, ..., 1 of the highest precision
    at recall >= level (0 where none). Otherwise the area under the precision envelope (the
    precision made non-increasing from the right), summed where the recall changes.
    """
    rec = np.asarray(recalls, dtype=np.float64).reshape(-1)
    prec = np.asarray(precisions, dtype=np.float64).reshape(-1)
    if use_07_metric:
        total = 0.0
        for level in np.linspace(0.0, 1.0, 11):
            above = prec[rec >= level - 1e-12]
            total += float(above.max()) if above.size else 0.0
        return total / 11.0
    mrec = np.concatenate([[0.0], rec, [1.0]])
    mpre = np.concatenate([[0.0], prec, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def _as_tensor(x, dtype) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().to(dtype)
    return torch.as_tensor(np.asarray(x), dtype=dtype)


def _unpack_detection(name, det):
    if isinstance(det, Mapping):
        boxes, scores, labels = det["boxes"], det["scores"], det["labels"]
    else:
        try:
            boxes, scores, labels = det
        except (TypeError, ValueError):
            raise ConfigError(f"detections[{name!r}] must be (boxes, scores, labels) or a dict with those "
                              "keys") from None
    boxes = _as_tensor(boxes, torch.float64).reshape(-1, 5)
    scores = _as_tensor(scores, torch.float64).reshape(-1)
    labels = _as_tensor(labels, torch.int64).reshape(-1)
    if not (len(boxes) == len(scores) == len(labels)):
        raise ConfigError(f"detections[{name!r}]: {len(boxes)} boxes, {len(scores)} scores and {len(labels)} labels")
    return boxes, scores, labels


def evaluate_dota(detections: Mapping, annotations: Mapping, num_classes: int, iou_threshold: float = 0.5,
                  use_07_metric: bool = True) -> dict:
    """mAP of oriented detections against DOTA ground truth (see the module docstring).

    ``detections``: ``{image name: (boxes (N, 5) le90, scores (N,), labels (N,))}`` (or dicts
    with those keys), on whole images (merge patch results first with
    :func:`lsnet.rotated.split.merge_patch_detections`). ``annotations``: ``{image name:
    target}`` with ``boxes`` (M, 5), ``labels`` (M,) and optionally ``difficult`` (M,), e.g.
    :meth:`lsnet.rotated.dota.DotaDataset.annotations`. Images without detections count
    their ground truth as missed; detections for an image not in ``annotations`` raise
    :class:`DataError`. Labels are 0-based.

    Returns ``{"mAP", "ap", "recall", "precision", "num_gts", "num_dets", "iou_threshold",
    "use_07_metric"}``: ``mAP`` a float, the others lists by class (``recall`` and
    ``precision`` at the last detection; 0 without detections).
    """
    from ..ops.rotated_boxes import box_iou_rotated

    if num_classes < 1:
        raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
    unknown = [n for n in detections if n not in annotations]
    if unknown:
        hint = " (patch names? merge them with merge_patch_detections first)" if "__" in str(unknown[0]) else ""
        raise DataError(f"detections for {len(unknown)} image(s) without ground truth, e.g. {unknown[0]!r}{hint}")
    scores_by_class = [[] for _ in range(num_classes)]
    tp_by_class = [[] for _ in range(num_classes)]
    fp_by_class = [[] for _ in range(num_classes)]
    num_gts = np.zeros(num_classes, dtype=np.int64)
    for name, target in annotations.items():
        gt_boxes = _as_tensor(target["boxes"], torch.float64).reshape(-1, 5)
        gt_labels = _as_tensor(target["labels"], torch.int64).reshape(-1)
        diff = target.get("difficult")
        gt_diff = (_as_tensor(diff, torch.bool).reshape(-1) if diff is not None
                   else torch.zeros(len(gt_labels), dtype=torch.bool))
        if (gt_labels < 0).any() or (gt_labels >= num_classes).any():
            raise DataError(f"annotations[{name!r}]: labels must be in 0..{num_classes - 1}")
        np.add.at(num_gts, gt_labels[~gt_diff].numpy(), 1)
        if name not in detections:
            continue
        boxes, scores, labels = _unpack_detection(name, detections[name])
        if (labels < 0).any() or (labels >= num_classes).any():
            raise ConfigError(f"detections[{name!r}]: labels must be in 0..{num_classes - 1}")
        for c in labels.unique().tolist():
            sel = labels == c
            d_boxes, d_scores = boxes[sel], scores[sel]
            order = torch.sort(d_scores, descending=True, stable=True).indices
            d_boxes, d_scores = d_boxes[order], d_scores[order]
            g_sel = gt_labels == c
            g_boxes, g_diff = gt_boxes[g_sel], gt_diff[g_sel]
            tp = np.zeros(len(d_scores), dtype=np.float64)
            fp = np.zeros(len(d_scores), dtype=np.float64)
            if len(g_boxes) == 0:
                fp[:] = 1.0
            else:
                ious = box_iou_rotated(d_boxes, g_boxes).numpy()
                best = ious.argmax(axis=1)
                best_iou = ious[np.arange(len(best)), best]
                covered = np.zeros(len(g_boxes), dtype=bool)
                for i in range(len(d_scores)):
                    if best_iou[i] >= iou_threshold:
                        j = best[i]
                        if g_diff[j]:
                            continue  # matches a difficult box: neither true nor false positive
                        if covered[j]:
                            fp[i] = 1.0
                        else:
                            covered[j] = True
                            tp[i] = 1.0
                    else:
                        fp[i] = 1.0
            scores_by_class[c].append(d_scores.numpy())
            tp_by_class[c].append(tp)
            fp_by_class[c].append(fp)
    aps, recalls, precisions, num_dets = [], [], [], []
    for c in range(num_classes):
        if scores_by_class[c]:
            sc = np.concatenate(scores_by_class[c])
            order = np.argsort(-sc, kind="stable")
            tp = np.cumsum(np.concatenate(tp_by_class[c])[order])
            fp = np.cumsum(np.concatenate(fp_by_class[c])[order])
        else:
            sc = tp = fp = np.zeros(0)
        eps = np.finfo(np.float32).eps
        rec = tp / max(float(num_gts[c]), eps)
        prec = tp / np.maximum(tp + fp, eps)
        aps.append(average_precision(rec, prec, use_07_metric) if len(sc) else 0.0)
        recalls.append(float(rec[-1]) if len(rec) else 0.0)
        precisions.append(float(prec[-1]) if len(prec) else 0.0)
        num_dets.append(len(sc))
    with_gt = [aps[c] for c in range(num_classes) if num_gts[c] > 0]
    return {
        "mAP": float(np.mean(with_gt)) if with_gt else 0.0,
        "ap": [float(a) for a in aps],
        "recall": recalls,
        "precision": precisions,
        "num_gts": [int(n) for n in num_gts],
        "num_dets": num_dets,
        "iou_threshold": float(iou_threshold),
        "use_07_metric": bool(use_07_metric),
    }


def format_dota_table(results: Mapping, classes: Sequence[str] | None = None) -> str:
    """A markdown table of :func:`evaluate_dota`'s results: one row per class (gts, dets,
    recall, AP in %) and a last row with the mAP."""
    n = len(results["ap"])
    names = list(classes) if classes is not None else [f"class_{i}" for i in range(n)]
    if len(names) != n:
        raise ConfigError(f"{len(names)} class names for results of {n} classes")
    metric = "VOC07 11-point" if results.get("use_07_metric", True) else "area"
    lines = [f"| class | gts | dets | recall (%) | AP{round(results.get('iou_threshold', 0.5) * 100)} (%) |",
             "|---|---:|---:|---:|---:|"]
    for i in range(n):
        lines.append(f"| {names[i]} | {results['num_gts'][i]} | {results['num_dets'][i]} | "
                     f"{100 * results['recall'][i]:.2f} | {100 * results['ap'][i]:.2f} |")
    lines.append(f"| **mAP** ({metric}) | {sum(results['num_gts'])} | {sum(results['num_dets'])} | | "
                 f"**{100 * results['mAP']:.2f}** |")
    return "\n".join(lines)


def write_dota_task1(detections: Mapping, classes: Sequence[str], out_dir) -> list[Path]:
    """Write the DOTA task-1 submission: ``out_dir/Task1_{class}.txt`` for every class (empty
    files included), lines ``image_name score x1 y1 x2 y2 x3 y3 x4 y4`` (the box corners of
    ``obb_to_poly``), images in sorted order, detections by decreasing score. Returns the paths."""
    from ..ops.rotated_boxes import obb_to_poly

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir} is a file, not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    lines: list[list[str]] = [[] for _ in classes]
    for name in sorted(detections):
        boxes, scores, labels = _unpack_detection(name, detections[name])
        if len(boxes) == 0:
            continue
        if (labels < 0).any() or (labels >= len(classes)).any():
            raise ConfigError(f"detections[{name!r}]: labels must be in 0..{len(classes) - 1}")
        polys = obb_to_poly(boxes).numpy()
        order = torch.sort(scores, descending=True, stable=True).indices.numpy()
        for i in order:
            coords = " ".join(f"{v:.2f}" for v in polys[i])
            lines[int(labels[i])].append(f"{name} {float(scores[i]):.6f} {coords}\n")
    paths = []
    for c, cls in enumerate(classes):
        path = out_dir / f"Task1_{cls}.txt"
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(lines[c]), encoding="utf-8")
        os.replace(tmp, path)
        paths.append(path)
    return paths
