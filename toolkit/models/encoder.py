"""The deployable encoder: backbone (+ the fine-tuning head) -> l2-normalised embedding."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Encoder(nn.Module):
    """x (N x C x H x W, normalised float) -> embeddings (N x D), unit length, float32.

    After SimSiam pretraining the embedding is the backbone feature (the representation the
    paper evaluates); after metric fine-tuning it is the output of the new embedding head, or the
    backbone feature again when ``finetune.features = "backbone"`` (``deployable``).

    During fine-tuning with ``finetune.aux = "simsiam"`` the encoder also carries the pretraining
    projector and predictor (``aux``), trained on the auxiliary SimSiam loss; they are not part of
    what is deployed.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module | None = None, aux: nn.Module | None = None,
                 feature_dim: int = 0) -> None:
        super().__init__()
        self.backbone = backbone
        self.feature_dim = feature_dim  # C of the backbone's pooled features (0 = unknown)
        self.head = head if head is not None else nn.Identity()
        if aux is not None:
            self.aux = aux  # registered only when present, so checkpoints without it keep their keys

    def forward(self, x: torch.Tensor, normalise: bool = True,
                second_view: torch.Tensor | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Embeddings of ``x`` (N x D, fp32).

        Args:
            normalise: False gives the raw head output (for squared-Euclidean prototypes).
            second_view: another view of the same images; then the auxiliary SimSiam loss on the
                two views' backbone features is returned too: ``(embeddings, aux_loss)``.
        """
        trunk = self.backbone(x)  # N x C
        features = self.head(trunk).float()  # N x D
        embeddings = F.normalize(features, dim=1) if normalise else features  # fp32: exact unit norms under bf16
        if second_view is None:
            return embeddings
        return embeddings, self.aux.loss(trunk, self.backbone(second_view))

    def deployable(self, features: str = "embedding") -> Encoder:
        """The encoder to evaluate and export: without the auxiliary branch, and without the head
        when ``features`` is "backbone" (the penultimate features; Tian et al. 2020)."""
        return Encoder(self.backbone, None if features == "backbone" else self.head, feature_dim=self.feature_dim)


class AuxSimSiam(nn.Module):
    """The SimSiam branch kept beside the encoder while fine-tuning: projector f and predictor h.

    ``loss(b1, b2)`` takes the backbone features of two views (N x C each) and returns the
    symmetric negative cosine of Eq. (1)-(4) of Chen & He with the stop-gradient on z.
    """

    def __init__(self, projector: nn.Module, predictor: nn.Module) -> None:
        super().__init__()
        self.projector, self.predictor = projector, predictor

    def loss(self, b1: torch.Tensor, b2: torch.Tensor) -> torch.Tensor:
        z1, z2 = self.projector(b1), self.projector(b2)  # N x d
        p1, p2 = self.predictor(z1), self.predictor(z2)  # N x d
        return -(F.cosine_similarity(p1.float(), z2.detach().float(), dim=1).mean()
                 + F.cosine_similarity(p2.float(), z1.detach().float(), dim=1).mean()) / 2
