"""The network: pretrained backbone, NetVLAD layer, PCA-whitening, checkpoints, embedder."""
import os

import matplotlib
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vpr_ros.io.images import read_image
from vpr_ros.mapping import KeyframeMap, MapMismatchError
from vpr_ros.model import ModelConfig, build_model
from vpr_ros.model.backbones import create_backbone
from vpr_ros.model.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from vpr_ros.model.local_pca import fit_local_pca, project, set_projection
from vpr_ros.model.netvlad import NetVLAD
from vpr_ros.model.whitening import fit_pca_whitening
from vpr_ros.runtime.embedder import load_embedder
from vpr_ros.runtime.preprocess import preprocess, target_size

IMAGENET_MILITARY_UNIFORM = 652
GRACE_HOPPER = os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")
TINY = dict(backbone="efficientnet_lite0", image_long_side=96, num_clusters=8, reduce_dim=None,
            backbone_kwargs={"feature_block": 5})


def _tensor(image, size):
    import cv2
    resized = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(resized).permute(2, 0, 1)[None].float() / 255.0


@torch.no_grad()
@pytest.mark.parametrize("name, sizes", [("efficientnet_lite0", (224, 256)),
                                         ("efficientnet_lite2", (224, 260))])
def test_efficientnet_lite_is_the_pretrained_imagenet_network(name, sizes):
    """Grace Hopper in uniform: a confident 'military uniform' at two scales and mirrored."""
    image = read_image(GRACE_HOPPER)
    net = create_backbone(name).eval()
    for x in (*(_tensor(image, size) for size in sizes), torch.flip(_tensor(image, 224), [3])):
        probs = F.softmax(net.classify(x), dim=1)[0]
        assert int(probs.argmax()) == IMAGENET_MILITARY_UNIFORM
        assert float(probs.max()) > 0.3
    untrained = create_backbone(name, pretrained=False).eval()
    assert float(F.softmax(untrained.classify(_tensor(image, 224)), 1).max()) < 0.05


@pytest.mark.parametrize("name, blocks, channels", [
    ("efficientnet_lite0", 16, [16, 24, 24, 40, 40, 80, 80, 80, 112, 112, 112, 192, 192, 192,
                                192, 320]),
    ("efficientnet_lite2", 21, [16, 24, 24, 24, 48, 48, 48, 88, 88, 88, 88, 120, 120, 120, 120,
                                208, 208, 208, 208, 208, 352])])
def test_efficientnet_lite_feature_blocks_and_strides(name, blocks, channels):
    """Every cut-off gives its stage's channels; the last stride-16 block and stride-32 blocks."""
    assert [create_backbone(name, pretrained=False, feature_block=b).out_channels
            for b in range(blocks)] == channels
    stride16 = channels.index(channels[-2]) - 1
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        assert create_backbone(name, pretrained=False,
                               feature_block=stride16)(x).shape[2:] == (4, 6)
        assert create_backbone(name, pretrained=False,
                               feature_block=stride16 + 1)(x).shape[2:] == (2, 3)
    with pytest.raises(ValueError, match=f"0..{blocks - 1}"):
        create_backbone(name, pretrained=False, feature_block=blocks)
    with pytest.raises(ValueError, match="whole network"):
        create_backbone(name, pretrained=False, feature_block=blocks - 2).classify(x)


def test_vgg16_without_weights_file_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="weights"):
        create_backbone("vgg16")
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "missing.pth")):
        create_backbone("vgg16", weights=str(tmp_path / "missing.pth"))


def test_backbone_kwargs_of_another_backbone_are_a_clear_error():
    with pytest.raises(ValueError, match="backbone_kwargs"):
        build_model(ModelConfig(backbone="vgg16"), pretrained=False)


def test_vgg16_loads_torchvision_layout(tmp_path):
    donor = create_backbone("vgg16", pretrained=False)
    state = {f"features.{k}": v for k, v in donor.features.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(4, 4)
    torch.save(state, tmp_path / "vgg16.pth")
    net = create_backbone("vgg16", weights=str(tmp_path / "vgg16.pth"))
    assert torch.equal(net.features[28].weight, donor.features[28].weight)
    assert net(torch.rand(1, 3, 64, 64)).shape == (1, 512, 4, 4)


def test_netvlad_shape_and_unit_norm():
    layer = NetVLAD(num_clusters=8, dim=16)
    out = layer(torch.randn(3, 16, 5, 7))
    assert out.shape == (3, 8 * 16)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))


def test_netvlad_is_invariant_to_the_order_of_local_features():
    layer = NetVLAD(num_clusters=4, dim=8)
    x = torch.randn(2, 8, 3, 5)
    shuffled = x.flatten(2)[:, :, torch.randperm(15)].reshape(2, 8, 5, 3)
    torch.testing.assert_close(layer(x), layer(shuffled))


def test_netvlad_matches_the_definition():
    """V_k = Σ_i a_k(x_i)(x_i − c_k), intra-normalized, then L2 — computed the long way."""
    layer = NetVLAD(num_clusters=3, dim=4)
    x = torch.randn(1, 4, 2, 3)
    feats = F.normalize(x, dim=1).flatten(2)[0].T                     # (N, D)
    assign = F.softmax(feats @ layer.assign.weight[:, :, 0, 0].T + layer.assign.bias, dim=1)
    vlad = torch.stack([(assign[:, k:k + 1] * (feats - layer.centroids[k])).sum(0)
                        for k in range(3)])
    expected = F.normalize(F.normalize(vlad, dim=1).flatten(), dim=0)
    torch.testing.assert_close(layer(x)[0], expected, atol=1e-5, rtol=1e-5)


def test_kmeans_init_gives_the_layer_its_centers():
    rng = np.random.default_rng(0)
    centers = np.eye(6, dtype=np.float32)[:3] * 1.0
    features = np.concatenate([c + 0.05 * rng.standard_normal((200, 6)) for c in centers])
    layer = NetVLAD(num_clusters=3, dim=6)
    alpha = layer.init_from_features(features.astype(np.float32))
    found = layer.centroids.detach().numpy()
    nearest = np.abs(found @ centers.T).argmax(axis=0)
    assert sorted(nearest.tolist()) == [0, 1, 2]
    for k, c in enumerate(centers):
        assert np.linalg.norm(found[nearest[k]] - c) < 0.1
    w = layer.assign.weight[:, :, 0, 0].detach().numpy()
    np.testing.assert_allclose(w, 2 * alpha * found, rtol=1e-5)
    np.testing.assert_allclose(layer.assign.bias.detach().numpy(),
                               -alpha * (found ** 2).sum(1), rtol=1e-5)
    # Each point is assigned almost entirely to its own center.
    soft = F.softmax(torch.from_numpy(features @ w.T) + layer.assign.bias.detach(), dim=1)
    assert float(soft.max(dim=1).values.mean()) > 0.9


def test_kmeans_init_refuses_too_few_features():
    with pytest.raises(ValueError, match="too few"):
        NetVLAD(num_clusters=8, dim=4).init_from_features(np.ones((10, 4), np.float32))


def test_pca_whitening_decorrelates_and_reduces():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((300, 40)) @ rng.standard_normal((40, 40))
    mean, proj = fit_pca_whitening(x, 10)
    y = (x - mean) @ proj.T
    np.testing.assert_allclose(np.cov(y.T), np.eye(10), atol=1e-3)
    wide = rng.standard_normal((30, 500))                              # N < D: Gram path
    mean, proj = fit_pca_whitening(wide, 20)
    np.testing.assert_allclose(np.cov(((wide - mean) @ proj.T).T), np.eye(20), atol=1e-3)
    with pytest.raises(ValueError, match="at most 29"):
        fit_pca_whitening(wide, 64)


def test_model_output_dim_and_norm_with_whitening():
    model = build_model(ModelConfig(**TINY)).eval()
    x = torch.rand(2, 3, 96, 64)
    assert model(x).shape == (2, 8 * 80)
    mean, proj = fit_pca_whitening(np.random.default_rng(0).standard_normal((50, 640)), 16)
    model.set_whitening(mean, proj)
    out = model(x)
    assert out.shape == (2, 16) and model.config.whitening_dim == 16
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2))


def test_too_wide_netvlad_is_refused():
    with pytest.raises(ValueError, match="reduce_dim"):
        build_model(ModelConfig(backbone="efficientnet_lite0", num_clusters=128, reduce_dim=None,
                                backbone_kwargs={"feature_block": 15}), pretrained=False)


def test_maps_of_the_old_default_model_are_refused(tmp_path):
    """The default moved off Lite0 block 15: its maps fail with the rebuild-the-map message."""
    old = build_model(ModelConfig(backbone="efficientnet_lite0",
                                  backbone_kwargs={"feature_block": 15}), pretrained=False)
    new = build_model(pretrained=False)
    assert new.config != old.config
    save_checkpoint(tmp_path / "new.pt", new)
    assert "feature_block" in read_checkpoint(tmp_path / "new.pt")["config"]["backbone_kwargs"]
    KeyframeMap.create(old.output_dim, old.fingerprint()).save(tmp_path / "map")
    with pytest.raises(MapMismatchError, match="rebuild the map with this model"):
        KeyframeMap.load(tmp_path / "map", expected_fingerprint=new.fingerprint())


def test_a_reduction_wider_than_the_backbone_is_refused():
    with pytest.raises(ValueError, match="reduce_dim 64 does not reduce the 40-channel"):
        build_model(ModelConfig(backbone="efficientnet_lite0", backbone_kwargs={"feature_block": 4}),
                    pretrained=False)


def test_maps_of_the_13312_d_default_are_refused(tmp_path):
    """Issue 13 added the local PCA (208 → 64, K = 32): maps of the 13312-D model are refused."""
    old = build_model(ModelConfig(reduce_dim=None, num_clusters=64), pretrained=False)
    new = build_model(pretrained=False)
    assert (old.output_dim, new.output_dim) == (13312, 2048)
    KeyframeMap.create(old.output_dim, old.fingerprint()).save(tmp_path / "map")
    with pytest.raises(MapMismatchError, match="rebuild the map with this model"):
        KeyframeMap.load(tmp_path / "map", expected_fingerprint=new.fingerprint())


def test_local_pca_finds_the_principal_axes_and_the_conv_applies_them():
    rng = np.random.default_rng(0)
    axes = np.linalg.qr(rng.standard_normal((12, 12)))[0][:, :3].T        # (3, 12) orthonormal
    signal = rng.standard_normal((20000, 3)) * [5.0, 3.0, 1.5]
    features = signal @ axes + 0.05 * rng.standard_normal((20000, 12)) + 7.0
    mean, projection = fit_local_pca(features, 3)
    np.testing.assert_allclose(mean, features.mean(0), atol=1e-4)
    np.testing.assert_allclose(np.abs(projection @ axes.T), np.eye(3), atol=0.03)
    conv = torch.nn.Conv2d(12, 3, kernel_size=1)
    set_projection(conv, mean, projection)
    x = torch.from_numpy(features[:6].T.reshape(1, 12, 2, 3).astype(np.float32))
    with torch.no_grad():
        out = conv(x)[0].reshape(3, -1).T.numpy()
    np.testing.assert_allclose(out, project(features[:6], mean, projection), atol=1e-4)
    with pytest.raises(ValueError, match="too few"):
        fit_local_pca(features[:3], 3)


def test_offtheshelf_init_fits_the_reduction_as_pca_before_clustering():
    """The 1×1 reduction becomes the PCA of the sample's local features: centred outputs with
    decreasing variance, and NetVLAD's centers live in the reduced space."""
    from vpr_ros.model.clustering import init_netvlad, sample_local_features

    model = build_model(ModelConfig(**dict(TINY, reduce_dim=16))).eval()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (96, 128, 3), dtype=np.uint8) for _ in range(12)]
    init_netvlad(model, images)
    raw = sample_local_features(model, images)
    with torch.no_grad():
        reduced = model.reduce(torch.from_numpy(raw.T[None, :, :, None]))[0, :, :, 0].numpy().T
    np.testing.assert_allclose(reduced.mean(0), 0.0, atol=1e-3)
    variance = reduced.var(0)
    assert np.all(np.diff(variance) <= 1e-6) and model.netvlad.centroids.shape == (8, 16)
    assert model(torch.rand(1, 3, 96, 128)).shape == (1, 8 * 16)


def test_checkpoint_round_trip(tmp_path):
    model = build_model(ModelConfig(**TINY)).eval()
    mean, proj = fit_pca_whitening(np.random.default_rng(0).standard_normal((50, 640)), 16)
    model.set_whitening(mean, proj)
    path = tmp_path / "model.pt"
    fingerprint = save_checkpoint(path, model, extra={"epoch": 3})
    loaded, extra = load_checkpoint(path, with_extra=True)
    assert loaded.fingerprint() == fingerprint == model.fingerprint()
    assert extra == {"epoch": 3}
    x = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    assert not list(tmp_path.glob(".*tmp")), "no temp file left behind"


def test_checkpoint_fingerprint_mismatch_is_an_error(tmp_path):
    model = build_model(ModelConfig(**TINY))
    path = tmp_path / "model.pt"
    save_checkpoint(path, model)
    payload = torch.load(path, weights_only=True)
    payload["state_dict"]["netvlad.centroids"] += 1.0
    torch.save(payload, path)
    with pytest.raises(ValueError, match="fingerprint"):
        load_checkpoint(path)


def test_text_file_as_checkpoint_is_one_line_naming_it(tmp_path):
    text = tmp_path / "config.yaml"
    text.write_text("backbone: lite2\nclusters: 64\n")
    with pytest.raises(ValueError) as info:
        load_checkpoint(text)
    message = str(info.value)
    assert "\n" not in message and str(text) in message and "not a vpr_ros checkpoint" in message
    assert "weights_only" not in message


def test_not_a_checkpoint_or_wrong_version_is_a_clear_error(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="not a vpr_ros checkpoint"):
        load_checkpoint(junk)
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a vpr_ros checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    model = build_model(ModelConfig(**TINY))
    save_checkpoint(tmp_path / "m.pt", model)
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    payload["version"] = 99
    torch.save(payload, tmp_path / "future.pt")
    with pytest.raises(ValueError, match="version 99"):
        load_checkpoint(tmp_path / "future.pt")
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_checkpoint(tmp_path / "nope.pt")


def test_preprocessing_keeps_aspect_and_rounds_to_the_stride():
    assert target_size(540, 960, 640) == (352, 640)
    assert target_size(360, 640, 640) == (352, 640)
    assert target_size(480, 640, 320) == (256, 320)
    out = preprocess(np.full((540, 960, 3), 255, np.uint8), 640)
    assert out.shape == (3, 352, 640) and out.dtype == np.float32 and out.max() == 1.0
    with pytest.raises(ValueError, match="H×W×3 uint8"):
        preprocess(np.zeros((10, 10), np.uint8), 640)


def test_embedder_batches_mixed_sizes_in_order():
    model = build_model(ModelConfig(**TINY)).eval()
    embedder = load_embedder(model=model, backend="torch", batch_size=2)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
              for h, w in [(60, 90), (90, 60), (60, 90), (100, 150), (90, 60)]]
    out = embedder.embed(images)
    assert out.shape == (5, embedder.dim) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    one_by_one = np.concatenate([embedder.embed([im]) for im in images])
    np.testing.assert_allclose(out, one_by_one, atol=1e-5)


def test_load_embedder_without_a_model_says_how_to_get_one():
    with pytest.raises(ValueError, match="checkpoint"):
        load_embedder(None)


def test_unreadable_or_missing_image_names_the_file(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(ValueError, match="broken.jpg"):
        read_image(bad)
    with pytest.raises(FileNotFoundError, match="absent.png"):
        read_image(tmp_path / "absent.png")
