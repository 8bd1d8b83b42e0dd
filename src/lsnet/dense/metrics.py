"""Evaluation for dense prediction: COCO box/mask AP and semantic-segmentation mIoU.

* :func:`coco_evaluate` turns torchvision-style detections into COCO results
  and scores them with pycocotools' ``COCOeval`` (the reference implementation,
  so numbers are comparable with published ones), silencing its prints.
* :class:`SegmentationMetric` accumulates a confusion matrix over batches and
  reports mIoU (mean over classes that occur in the prediction or the target),
  per-class IoU and pixel accuracy, as mmsegmentation does.
"""

from __future__ import annotations

import contextlib
import io
import math
from typing import Mapping, Sequence

import numpy as np
import torch

__all__ = ["COCO_STAT_NAMES", "SegmentationMetric", "coco_evaluate", "predictions_to_coco_results"]

#: Names of ``COCOeval.stats`` entries, in order.
COCO_STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def _to_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def predictions_to_coco_results(predictions: Mapping[int, Mapping], iou_type: str,
                                label_to_cat_id: Mapping[int, int] | None = None,
                                image_sizes: Mapping[int, tuple[int, int]] | None = None) -> list[dict]:
    """COCO result dicts for one ``iou_type`` (``"bbox"`` or ``"segm"``).

    Boxes become ``[x, y, w, h]``; masks (``[N, 1, H, W]`` probabilities or ``[N, H, W]``
    bool/probabilities) are thresholded at 0.5 and RLE-encoded. ``image_sizes`` maps
    image id to ``(H, W)`` and, when given, is checked against the masks.
    """
    from pycocotools import mask as mask_util

    results = []
    for image_id, pred in predictions.items():
        scores = _to_numpy(pred["scores"]).astype(np.float64).reshape(-1)
        labels = _to_numpy(pred["labels"]).astype(np.int64).reshape(-1)
        n = len(scores)
        if len(labels) != n:
            raise ValueError(f"image {image_id}: {len(labels)} labels for {n} scores")
        if label_to_cat_id is None:
            cat_ids = [int(v) for v in labels]
        else:
            unknown = sorted({int(v) for v in labels} - set(label_to_cat_id))
            if unknown:
                raise ValueError(f"image {image_id}: labels {unknown} are not in label_to_cat_id")
            cat_ids = [int(label_to_cat_id[int(v)]) for v in labels]
        if iou_type == "bbox":
            boxes = _to_numpy(pred["boxes"]).astype(np.float64).reshape(-1, 4)
            if len(boxes) != n:
                raise ValueError(f"image {image_id}: {len(boxes)} boxes for {n} scores")
            for box, score, cat in zip(boxes, scores, cat_ids):
                x1, y1, x2, y2 = (float(v) for v in box)
                results.append({"image_id": int(image_id), "category_id": cat,
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(score)})
        elif iou_type == "segm":
            if "masks" not in pred:
                raise ValueError(f"image {image_id}: 'segm' evaluation needs 'masks' in the predictions")
            masks = _to_numpy(pred["masks"])
            if masks.ndim == 4:
                if masks.shape[1] != 1:
                    raise ValueError(f"image {image_id}: masks must be [N, 1, H, W] or [N, H, W], got {masks.shape}")
                masks = masks[:, 0]
            if masks.ndim != 3 or len(masks) != n:
                raise ValueError(f"image {image_id}: expected {n} masks as [N, 1, H, W] or [N, H, W], "
                                 f"got shape {masks.shape}")
            if image_sizes is not None and n and tuple(masks.shape[-2:]) != tuple(image_sizes[int(image_id)]):
                raise ValueError(f"image {image_id}: masks are {masks.shape[-2:]} but the image is "
                                 f"{tuple(image_sizes[int(image_id)])} (H, W); paste masks at full resolution")
            binary = masks if masks.dtype == np.bool_ else masks > 0.5
            if n:
                # encode wants Fortran-ordered uint8 [H, W, N]
                rles = mask_util.encode(np.asfortranarray(binary.transpose(1, 2, 0).astype(np.uint8)))
            else:
                rles = []
            for rle, score, cat in zip(rles, scores, cat_ids):
                rle = {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}
                results.append({"image_id": int(image_id), "category_id": cat, "segmentation": rle,
                                "score": float(score)})
        else:
            raise ValueError(f"unsupported iou_type {iou_type!r}; use 'bbox' or 'segm'")
    return results


def _load_results(coco_gt, results: list[dict]):
    """``coco_gt.loadRes(results)``, also for an empty list (which loadRes cannot handle)."""
    from pycocotools.coco import COCO

    if results:
        return coco_gt.loadRes(results)
    res = COCO()
    res.dataset = {"images": list(coco_gt.dataset["images"]), "annotations": [],
                   "categories": list(coco_gt.dataset["categories"])}
    res.createIndex()
    return res


def coco_evaluate(coco_gt, predictions: Mapping[int, Mapping], iou_types: Sequence[str] = ("bbox",),
                  label_to_cat_id: Mapping[int, int] | None = None, *,
                  img_ids: Sequence[int] | None = None, per_class: bool = False) -> dict:
    """COCO AP of torchvision-style predictions against ``coco_gt`` (a ``pycocotools`` COCO).

    ``predictions`` maps image id to ``{"boxes" [N, 4] x1y1x2y2, "scores" [N],
    "labels" [N], optional "masks"}``; ``label_to_cat_id`` maps model labels to
    category ids (e.g. ``CocoDetection.label_to_cat_id``; ``None``: labels are
    category ids). Evaluation covers ``img_ids`` if given, else the images in
    ``predictions`` (an image with no detections still counts: give it empty
    tensors), else, when ``predictions`` is empty, every ground-truth image.
    Returns ``{iou_type: {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10",
    "AR100", "ARs", "ARm", "ARl"}}`` as floats in 0..1, -1 where COCO finds the
    value undefined (e.g. no ground truth of that size). With ``per_class=True`` each
    entry also holds ``"per_class": {category name: {"AP", "AP50"}}`` (areas all, 100
    detections; -1 for a category without ground truth), as mmdetection's ``classwise``.
    """
    from pycocotools.cocoeval import COCOeval

    gt_ids = set(coco_gt.getImgIds())
    unknown = sorted({int(i) for i in predictions} - gt_ids)
    if unknown:
        raise ValueError(f"predictions for image ids {unknown[:5]} that are not in the ground truth")
    if img_ids is None:
        img_ids = sorted(int(i) for i in predictions) if predictions else sorted(gt_ids)
    else:
        img_ids = sorted(int(i) for i in img_ids)
    sizes = {i: (coco_gt.imgs[i]["height"], coco_gt.imgs[i]["width"])
             for i in img_ids if "height" in coco_gt.imgs[i] and "width" in coco_gt.imgs[i]}
    out = {}
    for iou_type in iou_types:
        results = predictions_to_coco_results(predictions, iou_type, label_to_cat_id,
                                              sizes if len(sizes) == len(img_ids) else None)
        # COCOeval prints progress and the summary table; callers want numbers, not noise.
        with contextlib.redirect_stdout(io.StringIO()):
            coco_dt = _load_results(coco_gt, results)
            ev = COCOeval(coco_gt, coco_dt, iouType=iou_type)
            ev.params.imgIds = img_ids
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        out[iou_type] = {name: float(v) for name, v in zip(COCO_STAT_NAMES, ev.stats)}
        if per_class:
            out[iou_type]["per_class"] = _per_class_ap(coco_gt, ev)
    return out


def _per_class_ap(coco_gt, ev) -> dict:
    """AP and AP50 per category from an accumulated COCOeval (area "all", the most detections)."""
    # precision: [IoU thresholds, recall points, categories, areas, max detections]; -1 = undefined
    precision = ev.eval["precision"]
    result = {}
    for k, cat_id in enumerate(ev.params.catIds):
        name = coco_gt.cats[cat_id].get("name", str(cat_id))
        values = {}
        for key, p in (("AP", precision[:, :, k, 0, -1]), ("AP50", precision[0, :, k, 0, -1])):
            defined = p[p > -1]
            values[key] = float(defined.mean()) if defined.size else -1.0
        result[name] = values
    return result


class SegmentationMetric:
    """Confusion-matrix accumulator for semantic segmentation.

    ``update(pred, target)`` takes integer class maps ``[N, H, W]`` or ``[H, W]``
    (or logits ``[N, C, H, W]`` / ``[C, H, W]``, reduced by argmax over C);
    pixels whose target is ``ignore_index`` are skipped. ``compute()`` returns
    ``{"mIoU", "pixel_acc", "mAcc", "per_class_iou", "per_class_acc"}`` where a
    class absent from both prediction and target has IoU ``nan`` and is left out
    of the mean (likewise accuracy for classes absent from the target).
    """

    def __init__(self, num_classes: int, ignore_index: int = 255):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)  # [target, pred]

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        self.confusion.zero_()

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch (or one image) of predictions and targets to the confusion matrix."""
        pred = torch.as_tensor(pred)
        target = torch.as_tensor(target)
        if pred.is_floating_point() and pred.dim() == target.dim() + 1 and pred.shape[-2:] == target.shape[-2:]:
            pred = pred.argmax(dim=-3)  # logits; only float inputs, so an int [1, H, W] map is never argmaxed
        if pred.shape != target.shape:
            raise ValueError(f"pred shape {tuple(pred.shape)} does not match target shape {tuple(target.shape)}")
        pred = pred.reshape(-1).to(device="cpu", dtype=torch.int64)
        target = target.reshape(-1).to(device="cpu", dtype=torch.int64)
        keep = target != self.ignore_index
        pred, target = pred[keep], target[keep]
        nc = self.num_classes
        if target.numel():
            if int(target.min()) < 0 or int(target.max()) >= nc:
                raise ValueError(f"target values must be in 0..{nc - 1} or {self.ignore_index}, "
                                 f"got {int(target.min())}..{int(target.max())}")
            if int(pred.min()) < 0 or int(pred.max()) >= nc:
                raise ValueError(f"pred values must be in 0..{nc - 1}, got {int(pred.min())}..{int(pred.max())}")
        self.confusion += torch.bincount(target * nc + pred, minlength=nc * nc).reshape(nc, nc)

    def compute(self) -> dict:
        """``{"mIoU", "pixel_acc", "mAcc", "per_class_iou", "per_class_acc"}`` (fractions, nan when undefined)."""
        cm = self.confusion.double()
        tp = cm.diag()
        gt = cm.sum(1)
        union = gt + cm.sum(0) - tp
        iou = torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, math.nan))
        acc = torch.where(gt > 0, tp / gt.clamp_min(1), torch.full_like(tp, math.nan))
        total = cm.sum()
        return {
            "mIoU": float(iou.nanmean()) if (union > 0).any() else math.nan,
            "pixel_acc": float(tp.sum() / total) if total > 0 else math.nan,
            "mAcc": float(acc.nanmean()) if (gt > 0).any() else math.nan,
            "per_class_iou": [float(v) for v in iou],
            "per_class_acc": [float(v) for v in acc],
        }
