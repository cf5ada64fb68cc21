"""FFN's training loss: cross-entropy on the highest frame count plus KL distillation into the lower ones.

The targets are class indices, or soft targets (one probability row per video, e.g. from mixup / cutmix with label
smoothing): the cross-entropy is then the soft-target one, the mean over videos of ``-sum_c y_c log softmax(z)_c``
(timm's SoftTargetCrossEntropy), which equals the hard cross-entropy for one-hot rows. The KL terms do not read the
targets, so the loss is the same function for every family and every target kind.
"""

from __future__ import annotations

import torch
from torch.nn import functional


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy against class indices (N,) or soft targets (N, num_classes).

    Soft targets give the mean of ``-sum_c y_c log softmax(z)_c`` (torch's probability-target cross-entropy);
    class indices give torch's plain cross-entropy, exactly as before soft targets existed.
    """
    if targets.is_floating_point():
        if targets.shape != logits.shape:
            raise ValueError(f"soft targets of shape {tuple(targets.shape)} do not match logits "
                             f"{tuple(logits.shape)}; pass (N,) class indices or (N, num_classes) probabilities")
        return functional.cross_entropy(logits, targets.to(logits.dtype))
    return functional.cross_entropy(logits, targets)


def distillation_loss(
    logits_by_frames: dict[int, torch.Tensor],
    labels: torch.Tensor,
    lam: float = 1.0,
    ce_all_frames: bool = False,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The official FFN loss: CE(z_high, y) + lam * sum over the lower frame counts of
    KL(softmax(z_high).detach() || softmax(z)).

    Parameters
    ----------
    logits_by_frames : dict
        {frames: logits (N, num_classes)}, e.g. the output of ``model.forward_by_frames``. One frame count gives
        plain CE.
    labels : torch.Tensor
        (N,) class indices, or (N, num_classes) soft targets (rows summing to 1).
    lam : float
        Weight of each KL term (1 in the paper).
    ce_all_frames : bool
        Also add CE on every lower frame count (not the official loss; for ablations).

    Returns
    -------
    tuple
        (total loss, parts) with parts {"ce_16": ..., "kl_4": ..., "kl_8": ...} as detached scalar tensors
        (plus "ce_4", "ce_8" with ``ce_all_frames``). KL uses temperature 1 and batchmean reduction.
    """
    if not logits_by_frames:
        raise ValueError("distillation_loss needs logits for at least one frame count")
    highest = max(logits_by_frames)
    teacher_logits = logits_by_frames[highest]
    total = cross_entropy(teacher_logits, labels)
    parts = {f"ce_{highest}": total.detach()}
    teacher_probs = functional.softmax(teacher_logits.detach().float(), dim=1)
    for frames in sorted(logits_by_frames):
        if frames == highest:
            continue
        student_log_probs = functional.log_softmax(logits_by_frames[frames].float(), dim=1)
        kl = functional.kl_div(student_log_probs, teacher_probs, reduction="batchmean")
        parts[f"kl_{frames}"] = kl.detach()
        total = total + lam * kl
        if ce_all_frames:
            ce = cross_entropy(logits_by_frames[frames], labels)
            parts[f"ce_{frames}"] = ce.detach()
            total = total + ce
    return total, parts
