"""SimSiam's loss: symmetrised negative cosine similarity (Chen & He 2021, Eq. 1-4)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """D(p, z) = -(p / ||p||) . (z / ||z||), averaged over the batch (Eq. 1). Inputs N x d; computed in fp32."""
    return -F.cosine_similarity(p.float(), z.float(), dim=-1).mean()


def simsiam_loss(p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor,
                 symmetric: bool = True) -> torch.Tensor:
    """L = D(p1, z2) / 2 + D(p2, z1) / 2 (Eq. 2), or D(p1, z2) alone when ``symmetric`` is False (Sec. 4.6).

    The stop-gradient on z is applied by the model (``SimSiam.forward``), so that the
    no-stop-gradient ablation is a model switch. The minimum is -1.
    """
    if not symmetric:
        return negative_cosine(p1, z2)
    return 0.5 * negative_cosine(p1, z2) + 0.5 * negative_cosine(p2, z1)


def z_std(z: torch.Tensor) -> torch.Tensor:
    """Mean over channels of the std of l2-normalised z (Sec. 4.1, Figure 2 middle).

    About 1/sqrt(d) when outputs are spread over the unit sphere, 0 when they collapse to one point.
    """
    return F.normalize(z.float(), dim=1).std(dim=0).mean()


def collapse_threshold(z_std_ref: float, fraction: float) -> float:
    """The z_std below which an output counts as collapsed: ``fraction`` x 1/sqrt(d) (Sec. 4.1, Figure 2).

    Healthy training keeps z_std near ``z_std_ref`` = 1/sqrt(d); a collapsed output goes to 0.
    """
    return fraction * z_std_ref


def collapsed(z_std_value: float, z_std_ref: float, fraction: float) -> bool:
    """The collapse rule, the one copy used by the training warning and the study's outcome."""
    return z_std_value < collapse_threshold(z_std_ref, fraction)
