"""Perceptual losses: LPIPS equals the lpips package's numbers; weights are found, checked, or explained."""

from __future__ import annotations

import pickle
import re
import warnings

import pytest
import torch

import core
from core.losses import nvidia_vgg16 as NV
from core.losses import perceptual as P


def images(n=2, size=48, seed=0, width=None):
    g = torch.Generator().manual_seed(seed)
    shape = (n, 3, size, width or size)
    return torch.rand(shape, generator=g) * 2 - 1, torch.rand(shape, generator=g) * 2 - 1


@pytest.fixture(scope="module", params=["vgg", "alex"])
def pair(request):
    """Our LPIPS and the lpips package's, with the same random backbone and linear weights."""
    lpips = pytest.importorskip("lpips")
    net = request.param
    theirs = lpips.LPIPS(net=net, pretrained=False, pnet_rand=True, verbose=False).eval()
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in theirs.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (0.05 if p.ndim == 4 else 0.01))
            if p.shape[0] == 1 and p.ndim == 4:  # lin layers are non-negative in LPIPS
                p.abs_()
    state = theirs.state_dict()
    ours = P.LPIPS(net, backbone_state=state, lin_state=state)
    return net, ours, theirs


@pytest.mark.slow
def test_lpips_equals_lpips_package(pair):
    net, ours, theirs = pair
    # the smallest size the network takes, and a non-square one that no pooling divides evenly
    for h, w in [(16, 16), (35, 50)] if net == "vgg" else [(31, 31), (37, 70)]:
        x, y = images(size=h, width=w, seed=h)
        expected = theirs(x, y).flatten()
        got = ours(x, y)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)
        assert (got > 0).all()
    # the feature form used by optimisations gives the same distance
    fx, fy = ours.lpips_features(x), ours.lpips_features(y)
    torch.testing.assert_close(sum((a - b).square().flatten(1).sum(1) for a, b in zip(fx, fy)), expected,
                               rtol=1e-4, atol=1e-7)
    # gradients with respect to the input agree too
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours(xa, y).sum().backward()
    theirs(xb, y).sum().backward()
    assert xa.grad.isfinite().all() and xa.grad.abs().sum() > 0
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-4, atol=1e-8)


def test_lpips_basic_properties():
    lp = P.random_lpips("vgg", seed=0)
    x, y = images(2, 24)
    assert torch.equal(lp(x, x), torch.zeros(2))
    torch.testing.assert_close(lp(x, y), lp(y, x))
    assert not any(p.requires_grad for p in lp.parameters())
    with pytest.raises(ValueError, match="one shape"):
        lp(x, y[:1])
    with pytest.raises(ValueError, match="'vgg' or 'alex'"):
        P.LPIPS("squeeze")
    with pytest.raises(ValueError, match="at least 16x16 px, got 20x15"):
        lp(x[..., :15, :20], y[..., :15, :20])
    with pytest.raises(ValueError, match=r"RGB images \[N, 3, H, W\]"):
        lp(x[:, :1], y[:, :1])
    assert P.random_lpips("alex").min_size == 31


def test_perceptual_mse_is_the_sum_of_layer_mses():
    fx = [torch.ones(2, 4, 3, 3), torch.zeros(2, 8, 2, 2)]
    fy = [torch.zeros(2, 4, 3, 3), torch.full((2, 8, 2, 2), 2.0)]
    fy[0][1] = 1  # the second sample matches on the first layer
    torch.testing.assert_close(P.perceptual_mse(fx, fy), torch.tensor([1.0 + 4.0, 4.0]))
    m = P.random_vgg16_features(seed=2)
    x, y = images(2, 16)
    assert torch.equal(P.perceptual_mse(m(x), m(x)), torch.zeros(2))
    xg = x.clone().requires_grad_()
    P.perceptual_mse(m(xg), m(y)).sum().backward()
    assert xg.grad.isfinite().all() and xg.grad.abs().sum() > 0


def test_vgg16_features_layers_and_normalisation():
    m = P.random_vgg16_features(seed=1)
    x, _ = images(1, 32)
    feats = m(x)
    assert [tuple(f.shape[1:]) for f in feats] == [(64, 32, 32), (64, 32, 32), (256, 8, 8), (512, 4, 4)]
    assert all((f >= 0).all() for f in feats)  # post-ReLU
    # ImageNet normalisation of [0, 1] images happens inside: conv1_1 on the normalised input
    conv = m.features[0]
    ref = torch.relu(conv(((x + 1) / 2 - torch.tensor([0.485, 0.456, 0.406]).reshape(1, 3, 1, 1))
                          / torch.tensor([0.229, 0.224, 0.225]).reshape(1, 3, 1, 1)))
    torch.testing.assert_close(feats[0], ref)
    with pytest.raises(ValueError, match="unknown VGG16 layers"):
        P.VGG16Features(["conv9_9"])


def torchvision_state(module: torch.nn.Sequential, extra: bool = True) -> dict:
    state = {f"features.{k}": v for k, v in module.state_dict().items()}
    if extra:  # a full torchvision file also holds the classifier, which is ignored
        state["classifier.0.weight"] = torch.zeros(4, 4)
    return state


@pytest.fixture()
def offline(monkeypatch, tmp_path):
    """No hub cache, no lpips package files, no network."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def no_network(url, *a, **k):
        raise OSError(f"network is unreachable ({url})")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    monkeypatch.setattr(P, "_lpips_package_dir", lambda: [])
    return tmp_path


def test_load_lpips_from_model_folder(offline):
    folder = offline / "models" / "perceptual"
    folder.mkdir(parents=True)
    ref = P.random_lpips("alex", seed=4)
    torch.save(torchvision_state(ref.features), folder / "alexnet-owt-7be5be79.pth")
    torch.save({f"lin{k}.model.1.weight": lin.weight for k, lin in enumerate(ref.lins)}, folder / "lpips_alex.pth")
    loaded = P.load_lpips("alex", model_dirs=[folder])
    x, y = images(1, 64)
    torch.testing.assert_close(loaded(x, y), ref(x, y))
    # the same backbone file serves from torch hub's cache
    hub = offline / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (folder / "alexnet-owt-7be5be79.pth").rename(hub / "alexnet-owt-7be5be79.pth")
    torch.testing.assert_close(P.load_lpips("alex", model_dirs=[folder])(x, y), ref(x, y))


def test_missing_weights_error_says_what_to_put_where(offline):
    folder = offline / "models" / "perceptual"
    with pytest.raises(P.MissingWeightsError) as e:
        P.load_lpips("vgg", model_dirs=[folder])
    msg = str(e.value)
    # every missing file at once: the backbone and the linear layers, each with its URL and name
    assert "vgg16-397923af.pth" in msg and "https://download.pytorch.org/models/vgg16-397923af.pth" in msg
    assert "save it as lpips_vgg.pth" in msg and P.LIN_FILES["vgg"][1] in msg
    assert str(folder) in msg and str(offline / "hub" / "checkpoints") in msg and "network is unreachable" in msg
    assert isinstance(e.value, FileNotFoundError) and isinstance(e.value, core.StyleGANStudioError)
    with pytest.raises(P.MissingWeightsError, match="vgg16-397923af.pth"):
        P.load_vgg16_features(model_dirs=[folder])


@pytest.mark.slow
def test_wrong_or_damaged_weight_files_are_refused(offline):
    folder = offline / "models" / "perceptual"
    folder.mkdir(parents=True)
    vgg = P.random_vgg16_features(seed=0)
    torch.save(torchvision_state(vgg.features), folder / "alexnet-owt-7be5be79.pth")  # VGG saved as AlexNet
    torch.save({f"lins.{k}.weight": lin.weight for k, lin in enumerate(P.random_lpips("alex").lins)},
               folder / "lpips_alex.pth")
    with pytest.raises(core.CheckpointError, match=r"alexnet-owt-7be5be79.pth \(LPIPS-alex backbone\): missing"):
        P.load_lpips("alex", model_dirs=[folder])
    (folder / "vgg16-397923af.pth").write_bytes(b"not a torch file")
    with pytest.raises(core.CheckpointError, match="cannot read weights"):
        P.load_vgg16_features(model_dirs=[folder])
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, folder / "vgg16-397923af.pth")
    with pytest.raises(core.CheckpointError, match="missing"):
        P.load_vgg16_features(model_dirs=[folder])
    state = torchvision_state(vgg.features)
    state["features.0.weight"] = torch.zeros(64, 3, 5, 5)  # right names, wrong network
    torch.save(state, folder / "vgg16-397923af.pth")
    with pytest.raises(core.CheckpointError, match=r"vgg16-397923af.pth \(VGG16\): tensor features.0.weight has shape"):
        P.load_vgg16_features(model_dirs=[folder])
    # a backbone file given as the linear layers
    torch.save(torchvision_state(P.random_lpips("alex").features), folder / "alexnet-owt-7be5be79.pth")
    torch.save(torchvision_state(P.random_lpips("alex").features), folder / "lpips_alex.pth")
    with pytest.raises(core.CheckpointError, match=r"lpips_alex.pth \(LPIPS-alex linear layers\): no weight"):
        P.load_lpips("alex", model_dirs=[folder])
    lp = P.LPIPS("vgg")
    with pytest.raises(core.CheckpointError, match="linear layer 0"):
        lp.load_lin_state({"lin0.model.1.weight": torch.zeros(1, 3, 1, 1)})


@pytest.mark.slow
def test_vgg16_features_load_torchvision_file(offline):
    folder = offline / "p"
    folder.mkdir()
    ref = P.random_vgg16_features(seed=5, layers=P.VGG16_LAYERS)  # every layer, so the file is complete
    torch.save(torchvision_state(ref.features), folder / "vgg16-397923af.pth")
    loaded = P.load_vgg16_features(model_dirs=[folder])
    x, _ = images(1, 32)
    for a, b in zip(loaded(x), P.VGG16Features(backbone_state=torchvision_state(ref.features))(x)):
        torch.testing.assert_close(a, b)


# ------------------------------------------------------------------------------------------------
# NVIDIA's vgg16.pt: a TorchScript archive with its tensor names, read without running its code


class _NvidiaLayers(torch.nn.Module):
    def __init__(self, convs):
        super().__init__()
        for k, conv in enumerate(convs, start=1):
            setattr(self, f"conv{k}", conv)
        self.fc1 = torch.nn.Linear(4, 2)  # the real file's classifier is ignored

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class _NvidiaLike(torch.nn.Module):
    """The tensor names NVIDIA's file holds (`layers.conv1..13`, `lpips0..4` of shape [C, 1, 1])."""

    def __init__(self, lpips: P.LPIPS):
        super().__init__()
        self.layers = _NvidiaLayers([m for m in lpips.features if isinstance(m, torch.nn.Conv2d)])
        for k, lin in enumerate(lpips.lins):
            self.register_parameter(f"lpips{k}", torch.nn.Parameter(lin.weight.detach()[0].clone()))

    def forward(self, x: torch.Tensor, resize_images: bool = True, return_lpips: bool = False) -> torch.Tensor:
        return self.layers(x) * self.lpips0.sum()


@pytest.fixture(scope="module")
def nvidia_like_file(tmp_path_factory):
    ref = P.random_lpips("vgg", seed=7)
    path = tmp_path_factory.mktemp("nv") / "vgg16.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.script is deprecated; it still writes the archive format
        try:
            torch.jit.script(_NvidiaLike(ref)).save(str(path))
        except Exception as e:  # noqa: BLE001
            pytest.skip(f"this torch cannot write TorchScript archives ({e})")
    return path, ref


@pytest.mark.slow
def test_nvidia_vgg16_is_read_as_data_and_rebuilt(nvidia_like_file, monkeypatch):
    path, ref = nvidia_like_file
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: pytest.fail("torch.jit.load must not be called"))
    tensors = NV.read_torchscript_tensors(path)
    assert torch.equal(tensors["layers.conv13.weight"], ref.features[28].weight)
    assert tensors["lpips4"].shape == (512, 1, 1)
    with pytest.raises(core.CheckpointError, match="SHA-256 .* is not that of NVIDIA's vgg16.pt"):
        NV.load_nvidia_vgg16(path)
    vgg16 = NV.load_nvidia_vgg16(path, check_hash=False)
    x, y = images(2, 32)
    img_x, img_y = (x + 1) * 127.5, (y + 1) * 127.5  # NVIDIA's call takes [0, 255]
    fx = vgg16(img_x, resize_images=False, return_lpips=True)
    fy = vgg16(img_y, resize_images=False, return_lpips=True)
    assert fx.ndim == 2 and fx.shape[0] == 2
    torch.testing.assert_close((fx - fy).square().sum(1), ref(x, y), rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(vgg16.lpips(x, y), ref(x, y))
    with pytest.raises(ValueError, match="resize_images=False, return_lpips=True"):
        vgg16(img_x)


def test_nvidia_vgg16_refuses_code_and_wrong_files(tmp_path, nvidia_like_file):
    import os
    import zipfile

    with pytest.raises(P.MissingWeightsError, match=re.escape(NV.NVIDIA_VGG16_URL)):
        NV.load_nvidia_vgg16(tmp_path / "vgg16.pt")
    # a data.pkl that would run os.system when unpickled
    evil = tmp_path / "evil.pt"

    class Boom:
        def __reduce__(self):
            return os.system, ("echo pwned > " + str(tmp_path / "pwned"),)

    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("evil/data.pkl", pickle.dumps(Boom(), protocol=2))
    with pytest.raises(core.UnsafeCheckpointError, match="asks for (posix|nt).system"):
        NV.load_nvidia_vgg16(evil, check_hash=False)
    assert not (tmp_path / "pwned").exists()
    # another network's TorchScript archive: the tensor names are checked
    other = tmp_path / "other.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(torch.nn.Linear(2, 2)).save(str(other))
    with pytest.raises(core.CheckpointError, match=r"not NVIDIA's vgg16.pt: tensors \['layers.conv1.weight'"):
        NV.load_nvidia_vgg16(other, check_hash=False)
    (tmp_path / "not_zip.pt").write_bytes(b"\x80\x02}q\x00.")
    with pytest.raises(core.CheckpointError, match="not a TorchScript archive"):
        NV.load_nvidia_vgg16(tmp_path / "not_zip.pt", check_hash=False)
