"""ArcFace IR-SE50 identity loss: the reference file's layout, safe loading, the references' crop, and the loss."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from core.errors import CheckpointError, MissingWeightsError
from core.losses import arcface as A

# sum(p.numel() for p in Backbone(112, 50, 'ir_se', 0.6).parameters()) with pSp's
# models/encoders/model_irse.py (eladrich/pixel2style2pixel; StyleCLIP's copy is the same), run locally.
REFERENCE_PARAMETERS = 43_797_696
# len(Backbone(...).state_dict()) the same way: 235 parameters, 108 running statistics, 54 step counters.
REFERENCE_STATE_ENTRIES = 397


def reference_layout() -> list[tuple[str, tuple[int, ...]]]:
    """The state-dict keys and shapes of TreB1eN's model_ir_se50.pth, in its order, written out from the
    reference's structure: input layer, output layer (BN2d, dropout, flatten, linear, BN1d), then 24 units
    (3, 4, 14, 3 per stage of 64, 128, 256, 512 channels; a conv shortcut where the width changes)."""

    def bn(prefix, c):
        return [(f"{prefix}.weight", (c,)), (f"{prefix}.bias", (c,)), (f"{prefix}.running_mean", (c,)),
                (f"{prefix}.running_var", (c,)), (f"{prefix}.num_batches_tracked", ())]

    keys = [("input_layer.0.weight", (64, 3, 3, 3)), *bn("input_layer.1", 64), ("input_layer.2.weight", (64,)),
            *bn("output_layer.0", 512), ("output_layer.3.weight", (512, 512 * 7 * 7)),
            ("output_layer.3.bias", (512,)), *bn("output_layer.4", 512)]
    unit, c_in = 0, 64
    for c_out, n in [(64, 3), (128, 4), (256, 14), (512, 3)]:
        for _ in range(n):
            b = f"body.{unit}"
            if c_in != c_out:
                keys += [(f"{b}.shortcut_layer.0.weight", (c_out, c_in, 1, 1)), *bn(f"{b}.shortcut_layer.1", c_out)]
            keys += [*bn(f"{b}.res_layer.0", c_in), (f"{b}.res_layer.1.weight", (c_out, c_in, 3, 3)),
                     (f"{b}.res_layer.2.weight", (c_out,)), (f"{b}.res_layer.3.weight", (c_out, c_out, 3, 3)),
                     *bn(f"{b}.res_layer.4", c_out), (f"{b}.res_layer.5.fc1.weight", (c_out // 16, c_out, 1, 1)),
                     (f"{b}.res_layer.5.fc2.weight", (c_out, c_out // 16, 1, 1))]
            unit, c_in = unit + 1, c_out
    return keys


def faces(n=2, size=256, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n, 3, size, size), generator=g, dtype=dtype) * 2 - 1


@pytest.fixture(scope="module")
def net():
    return A.random_arcface(0)


@pytest.fixture(scope="module")
def layout():
    """An IR-SE50 state dict (default initialisation) to damage; tests copy the dict, not the tensors."""
    return A.ArcFaceIRSE50().state_dict()


@pytest.fixture
def saved(tmp_path):
    """A models folder holding a random IR-SE50 as model_ir_se50.pth, and that network."""
    model = A.random_arcface(1)
    folder = tmp_path / "arcface"
    folder.mkdir()
    torch.save(model.state_dict(), folder / A.ARCFACE_FILE)
    return folder, model


# ------------------------------------------------------------------------------------------------
# The network


def test_state_dict_is_the_reference_layout():
    model = A.ArcFaceIRSE50()
    state = model.state_dict()
    assert [(k, tuple(v.shape)) for k, v in state.items()] == reference_layout()
    assert len(state) == REFERENCE_STATE_ENTRIES
    assert sum(p.numel() for p in model.parameters()) == REFERENCE_PARAMETERS
    # frozen, and BatchNorm never switches to batch statistics
    assert not any(p.requires_grad for p in model.parameters())
    assert not model.train().training and not any(m.training for m in model.modules())


@pytest.mark.slow
def test_embeddings_are_unit_vectors_and_batch_independent(net):
    x = faces(3)
    f = A.arcface_features(net, x)
    assert f.shape == (3, A.EMBEDDING_DIM) and f.dtype == torch.float32
    torch.testing.assert_close(f.norm(dim=1), torch.ones(3))
    # eval-mode BatchNorm: an image's embedding does not depend on the rest of its batch
    torch.testing.assert_close(A.arcface_features(net, x[1:2]), f[1:2], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"\[N, 3, 112, 112\].*\[1, 3, 256, 256\].*crop_face"):
        net(x[:1])
    with pytest.raises(ValueError, match=r"RGB images \[N, 3, H, W\].*\[3, 1, 256, 256\]"):
        A.arcface_features(net, x[:, :1])


# ------------------------------------------------------------------------------------------------
# The references' crop: 256 px, rows 35:223, columns 32:220, adaptive average pooling to 112 px


def test_crop_takes_exactly_the_reference_box():
    box = torch.full((1, 3, 256, 256), -1.0)
    box[:, :, 35:223, 32:220] = 1.0
    torch.testing.assert_close(A.crop_face(box), torch.ones(1, 3, 112, 112))
    for rows, cols in [(34, slice(None)), (223, slice(None)), (slice(None), 31), (slice(None), 220)]:
        outside = torch.full((1, 3, 256, 256), -1.0)
        outside[:, :, rows, cols] = 1.0  # just outside the box: invisible
        torch.testing.assert_close(A.crop_face(outside), torch.full((1, 3, 112, 112), -1.0))


def test_crop_pools_188_px_to_112_px_with_adaptive_windows():
    # Output row i averages crop rows floor(i·188/112) .. ceil((i+1)·188/112) − 1: rows 0-1, 1-3, 3-5, ...,
    # 186-187, overlapping as torch's adaptive pooling does (the references' AdaptiveAvgPool2d((112, 112))).
    x = torch.zeros(1, 3, 256, 256)
    x[:, :, 35], x[:, :, 36] = 0.6, -0.3    # crop rows 0 and 1
    x[:, :, 222] = 0.8                      # crop row 187, the last
    out = A.crop_face(x)
    assert out.shape == (1, 3, 112, 112)
    torch.testing.assert_close(out[0, 0, 0], torch.full((112,), 0.15))
    torch.testing.assert_close(out[0, 0, 1], torch.full((112,), -0.1))
    torch.testing.assert_close(out[0, 0, 111], torch.full((112,), 0.4))
    torch.testing.assert_close(out[0, 0, 2:111], torch.zeros(109, 112))
    # columns the same way, from column 32
    y = torch.zeros(1, 3, 256, 256)
    y[..., 32], y[..., 33], y[..., 219] = 0.6, -0.3, 0.8
    torch.testing.assert_close(A.crop_face(y), out.transpose(2, 3))


def test_larger_images_are_box_averaged_to_256_first():
    small = faces(1, seed=3)
    big = small.repeat_interleave(4, 2).repeat_interleave(4, 3)  # 1024 px, 4x4 blocks
    torch.testing.assert_close(A.crop_face(big), A.crop_face(small), rtol=0, atol=1e-6)
    x512 = faces(1, size=512, seed=4)
    torch.testing.assert_close(A.crop_face(x512), A.crop_face(F.avg_pool2d(x512, 2)), rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# The loss


@pytest.mark.slow
def test_id_loss_is_zero_for_the_same_image_and_positive_for_others(net):
    x, y = faces(2, seed=0), faces(2, seed=1)
    same = A.id_loss(net, x, x, reduction="none")
    assert same.shape == (2,) and same.abs().max() < 1e-6
    different = A.id_loss(net, x, y, reduction="none")
    assert (different > 0.01).all() and (different <= 2).all()
    torch.testing.assert_close(A.id_loss(net, x, y), different.mean())
    # 1 - cos from the embeddings themselves
    fx, fy = A.arcface_features(net, x), A.arcface_features(net, y)
    torch.testing.assert_close(different, 1 - F.cosine_similarity(fx, fy), rtol=1e-5, atol=1e-6)
    # a 1024 px render of the same face is the same identity
    assert A.id_loss(net, x.repeat_interleave(4, 2).repeat_interleave(4, 3), x) < 1e-5


@pytest.mark.slow
def test_batches_and_a_single_reference(net):
    x, ref = faces(3, seed=5), faces(1, seed=6)
    one_ref = A.id_loss(net, x, ref, reduction="none")
    torch.testing.assert_close(one_ref, A.id_loss(net, x, ref.expand(3, -1, -1, -1), reduction="none"))
    torch.testing.assert_close(one_ref[2:], A.id_loss(net, x[2:], ref, reduction="none"), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"1 image or as many as the images \(3\), got 2"):
        A.id_loss(net, x, faces(2))
    with pytest.raises(ValueError, match="reduction must be 'mean' or 'none', got 'sum'"):
        A.id_loss(net, x, ref, reduction="sum")


@pytest.mark.slow
def test_gradient_flows_to_x_only(net):
    x = faces(2, seed=7).requires_grad_()
    ref = faces(2, seed=8).requires_grad_()
    A.id_loss(net, x, ref).backward()
    assert x.grad is not None and x.grad.isfinite().all() and x.grad.abs().sum() > 0
    assert ref.grad is None  # the reference embedding is detached, as in pSp and StyleCLIP
    # only the crop box receives gradient
    outside = torch.ones(256, 256, dtype=torch.bool)
    outside[35:223, 32:220] = False
    assert x.grad[:, :, outside].abs().max() == 0


@pytest.mark.slow
def test_gradcheck_along_random_directions():
    """float64 gradcheck of the whole loss along three image-space directions (the full Jacobian would take
    a forward pass per pixel)."""
    net64 = A.random_arcface(2).double()
    g = torch.Generator().manual_seed(9)
    base, ref = faces(1, seed=10, dtype=torch.float64), faces(1, seed=11, dtype=torch.float64)
    dirs = torch.randn((3, 3, 256, 256), generator=g, dtype=torch.float64) * 0.1

    def loss(a):
        return A.id_loss(net64, base + (a.view(-1, 1, 1, 1) * dirs).sum(0, keepdim=True), ref)

    a = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(loss, (a,), eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)


@pytest.mark.slow
def test_other_input_dtypes_follow_the_network(net):
    x, y = faces(2, seed=12), faces(2, seed=13)
    half = A.id_loss(net, x.half(), y.half())
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, A.id_loss(net, x.half().float(), y.half().float()))


@pytest.mark.slow
def test_id_loss_module_with_a_fixed_reference(net):
    x, ref = faces(2, seed=14), faces(1, seed=15)
    expected = A.id_loss(net, x, ref)
    torch.testing.assert_close(A.IDLoss(net, ref)(x), expected)
    torch.testing.assert_close(A.IDLoss(net)(x, ref), expected)
    with pytest.raises(ValueError, match="IDLoss needs a reference"):
        A.IDLoss(net)(x)


@pytest.mark.slow
def test_works_with_a_network_and_references_made_under_inference_mode(saved):
    """ComfyUI loads models and runs nodes under torch.inference_mode(); an optimisation then turns it off."""
    folder, model = saved
    x0, ref0 = faces(2, seed=16), faces(2, seed=17)
    expected = A.id_loss(model, x0, ref0)
    with torch.inference_mode():
        net = A.load_arcface([folder])
        ref = ref0.clone()
        torch.testing.assert_close(A.id_loss(net, x0, ref), expected)  # evaluating there works too
    assert ref.is_inference() and any(p.is_inference() for p in net.parameters())
    loss_module = A.IDLoss(net, ref)
    for loss in (lambda x: loss_module(x), lambda x: A.id_loss(net, x, ref)):
        x = x0.clone().requires_grad_()
        value = loss(x)
        value.backward()
        torch.testing.assert_close(value.detach(), expected)
        assert x.grad is not None and x.grad.abs().sum() > 0
    assert any(p.is_inference() for p in net.parameters())  # the caller's network is not changed


# ------------------------------------------------------------------------------------------------
# Loading


@pytest.mark.slow
def test_load_from_a_models_folder(saved, tmp_path):
    folder, model = saved
    empty = tmp_path / "empty"
    empty.mkdir()
    loaded = A.load_arcface([empty, folder])
    assert isinstance(loaded, A.ArcFaceIRSE50) and not loaded.training
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k
    x = faces(1, seed=18)
    torch.testing.assert_close(A.arcface_features(loaded, x), A.arcface_features(model, x))


@pytest.mark.slow
def test_load_variants_of_the_file(tmp_path):
    from safetensors.torch import save_file

    model = A.random_arcface(3)
    state = model.state_dict()
    x = faces(1, seed=19)
    expected = A.arcface_features(model, x)
    # .safetensors copy; a file from old PyTorch without BatchNorm step counters; a DataParallel save
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "model_ir_se50.safetensors"))
    variants = {"no_counters": {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")},
                "data_parallel": {f"module.{k}": v for k, v in state.items()}}
    dirs = [tmp_path]
    for name, variant in variants.items():
        (tmp_path / name).mkdir()
        torch.save(variant, tmp_path / name / A.ARCFACE_FILE)
        dirs.append(tmp_path / name)
    for d in dirs:
        torch.testing.assert_close(A.arcface_features(A.load_arcface([d]), x), expected)


def test_missing_file_says_what_where_and_from_where(tmp_path):
    with pytest.raises(MissingWeightsError) as e:
        A.load_arcface([tmp_path / "a", tmp_path / "b"])
    msg = str(e.value)
    assert "model_ir_se50.pth" in msg and A.ARCFACE_URL in msg
    assert A.ARCFACE_URL == "https://drive.google.com/file/d/1KW7bjndL3QG3sxBbZxreGHigcCCpsDgn/view?usp=sharing"
    assert str(tmp_path / "a") in msg and str(tmp_path / "b") in msg
    with pytest.raises(MissingWeightsError, match="no model folders were given"):
        A.load_arcface()
    assert issubclass(MissingWeightsError, FileNotFoundError)


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["no_se", "input_224", "extra_units", "not_a_tensor", "integer", "garbage",
                                    "pickled_object"])
def test_wrong_files_are_refused_with_the_file_named(tmp_path, layout, damage):
    state = dict(layout)
    path = tmp_path / A.ARCFACE_FILE
    expected = {
        "no_se": r"missing \['body\.0\.res_layer\.5\.fc1\.weight'.*\(48 in all\)",  # IR-50 without SE
        "input_224": r"output_layer\.3\.weight has shape \[512, 100352\], expected \[512, 25088\]",
        "extra_units": r"unexpected \['body\.24\.res_layer\.0\.weight'",  # a deeper network
        "not_a_tensor": r"entry 'input_layer\.0\.weight' is a list",
        "integer": r"input_layer\.0\.weight is torch\.int64, expected floating point",
        "garbage": r"cannot read weights",
        "pickled_object": r"cannot read weights",  # weights_only=True refuses to build objects
    }[damage]
    if damage == "no_se":
        state = {k: v for k, v in state.items() if ".res_layer.5." not in k}
    elif damage == "input_224":
        state["output_layer.3.weight"] = torch.zeros(512, 512 * 14 * 14)
    elif damage == "extra_units":
        state["body.24.res_layer.0.weight"] = torch.zeros(512)
    elif damage == "not_a_tensor":
        state["input_layer.0.weight"] = [1.0]
    elif damage == "integer":
        state["input_layer.0.weight"] = torch.zeros(64, 3, 3, 3, dtype=torch.long)
    if damage == "garbage":
        path.write_bytes(b"this is not a checkpoint")
    elif damage == "pickled_object":
        torch.save({"model": torch.nn.PReLU()}, path)
    else:
        torch.save(state, path)
    with pytest.raises(CheckpointError, match=re.escape(str(path)) + ".*" + expected):
        A.load_arcface([tmp_path])
