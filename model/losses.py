"""FFN's training loss: cross-entropy on the highest frame count plus KL distillation into the lower ones."""

from __future__ import annotations

import torch
from torch.nn import functional


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
        (N,) class indices.
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
    total = functional.cross_entropy(teacher_logits, labels)
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
            ce = functional.cross_entropy(logits_by_frames[frames], labels)
            parts[f"ce_{frames}"] = ce.detach()
            total = total + ce
    return total, parts
