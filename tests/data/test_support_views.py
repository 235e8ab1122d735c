"""Support-set test-time augmentation (``data.support_views``) against a per-image loop written out here."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from toolkit.config import AugmentConfig
from toolkit.data.batch_augment import BatchViews
from toolkit.data.support_views import check_support_views, content_seeds, support_view_embeddings
from toolkit.errors import ToolkitError

SIZE, CHANNELS = 12, 3
AUGMENT = AugmentConfig(crop_min_scale=0.5, hflip=0.5, jitter_p=0.5, affine_rotation=10.0)


def _images(n: int, side: int = 14) -> torch.Tensor:
    return torch.randint(0, 256, (n, CHANNELS, side, side), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))


def _projection(dim: int = 6) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(CHANNELS * SIZE * SIZE, dim))


def _embedder(weights: np.ndarray, calls: list[int] | None = None):
    """A fixed linear map of the pixels, l2-normalised: float [0, 255] (n, C, S, S) -> (n, D)."""

    def embed(pixels: torch.Tensor) -> np.ndarray:
        if calls is not None:
            calls.append(len(pixels))
        out = pixels.double().reshape(len(pixels), -1).numpy() @ weights
        return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)

    return embed


def test_the_mean_direction_of_the_own_and_every_views_embedding_one_image_at_a_time() -> None:
    images, weights = _images(7), _projection()
    embed = _embedder(weights)
    own = embed(images[:, :, 1:13, 1:13].float())  # any unit vectors stand for the evaluation view
    seeds = np.arange(7) * 1000 + 3

    got = support_view_embeddings(embed, images, own, AUGMENT, SIZE, CHANNELS, views=4, seeds=seeds, batch_size=3)

    maker = BatchViews(AUGMENT, SIZE, CHANNELS)
    for i in range(7):  # reference: image i alone, its views written out, summed in float64
        total = own[i].astype(np.float64).copy()
        for view in range(4):
            pixels = maker.apply(images[i:i + 1], maker.params(seeds[i:i + 1], view, 14))
            flat = pixels.double().reshape(-1).numpy() @ weights
            total += flat / np.linalg.norm(flat)
        np.testing.assert_allclose(got[i], total / np.linalg.norm(total), atol=1e-5)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)
    assert not np.allclose(got, own, atol=1e-3)  # the views moved every support


def test_an_images_views_depend_on_its_pixels_alone() -> None:
    images, embed = _images(9), _embedder(_projection())
    images[4] = images[1]  # the same picture twice
    own = embed(images[:, :, :SIZE, :SIZE].float())
    whole = support_view_embeddings(embed, images, own, AUGMENT, SIZE, CHANNELS, 3, batch_size=256)
    order = np.random.default_rng(0).permutation(9)
    shuffled = support_view_embeddings(embed, images[order], own[order], AUGMENT, SIZE, CHANNELS, 3, batch_size=2)
    np.testing.assert_allclose(shuffled, whole[order], atol=1e-6)  # another order and batching, the same views
    alone = support_view_embeddings(embed, images[6:7], own[6:7], AUGMENT, SIZE, CHANNELS, 3)
    np.testing.assert_allclose(alone, whole[6:7], atol=1e-6)  # without the other images
    np.testing.assert_allclose(whole[4], whole[1], atol=1e-6)
    seeds = content_seeds(images)
    assert seeds.dtype == np.int64 and (seeds >= 0).all() and len(set(seeds.tolist())) == 8  # 8 distinct pictures
    other = support_view_embeddings(embed, images, own, AUGMENT, SIZE, CHANNELS, 3, content_seeds(images, seed=1))
    assert not np.allclose(other, whole, atol=1e-4)  # another seed, other views


def test_identity_views_leave_the_embedding_and_zero_views_call_nothing() -> None:
    images, calls = _images(5, side=SIZE), []
    embed = _embedder(_projection(), calls)
    own = embed(images.float())
    identity = AugmentConfig(crop_min_scale=1.0, crop_max_scale=1.0, hflip=0.0, jitter_p=0.0, grayscale_p=0.0)
    np.testing.assert_allclose(support_view_embeddings(embed, images, own, identity, SIZE, CHANNELS, 3), own, atol=1e-5)
    calls.clear()
    assert support_view_embeddings(embed, images, own, AUGMENT, SIZE, CHANNELS, 0) is not None
    assert calls == []


@pytest.mark.parametrize("bad", [-1, 65, 2.5, True, "3"])
def test_a_bad_number_of_views_is_one_line_naming_the_option(bad) -> None:
    with pytest.raises(ToolkitError, match=r"^--support-tta .*from 0 \(off\) to 64$"):
        check_support_views(bad)


def test_mismatched_inputs_are_errors() -> None:
    images, embed = _images(4), _embedder(_projection())
    own = embed(images[:, :, :SIZE, :SIZE].float())
    with pytest.raises(ToolkitError, match="4 images but 3 embeddings"):
        support_view_embeddings(embed, images, own[:3], AUGMENT, SIZE, CHANNELS, 2)
    with pytest.raises(ToolkitError, match="seeds for 4 images"):
        support_view_embeddings(embed, images, own, AUGMENT, SIZE, CHANNELS, 2, seeds=np.arange(3))
