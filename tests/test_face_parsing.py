"""Face parsers: BiSeNet parity with the reference code, schema detection, masks by class name in all three label
orders, the SegFormer path (when transformers is installed), and specific errors for wrong files."""

from __future__ import annotations

import collections
import functools
import json
import os
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

import core
from core.errors import CheckpointError, MissingDependencyError, MissingWeightsError
from core.models import face_parsing as FP
from core.models.face_parsing import parser as P
from conftest import tiny_generator

FIXTURES = Path(__file__).parent / "fixtures"
# sum(p.numel() for p in BiSeNet(n).parameters()) and len(state_dict()) of zllrunning's model.py, run locally.
REFERENCE_PARAMETERS = {16: 13_299_264, 19: 13_300_416}
REFERENCE_STATE_ENTRIES = 191


@functools.lru_cache(maxsize=None)
def bisenet(n: int, seed: int) -> FP.BiSeNet:
    """random_bisenet(n, seed), built once per session (read only: clone its state before changing it)."""
    return FP.random_bisenet(n, seed)


def reference_input() -> torch.Tensor:
    return torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1234))


# ------------------------------------------------------------------------------------------------
# BiSeNet parity with zllrunning/face-parsing.PyTorch

@pytest.mark.parametrize("n", [16, 19])
def test_bisenet_equals_the_reference_code(n):
    # tests/fixtures/bisenet_reference.safetensors: the reference model.py's outputs (main head strided 2, the
    # auxiliary heads strided 4) for random_state(seed=n) loaded into it, on reference_input().
    expected = load_file(str(FIXTURES / "bisenet_reference.safetensors"))
    net = bisenet(n, n)
    with torch.no_grad():
        main, out16, out32 = net(reference_input(), aux=True)
        only_main = net(reference_input())
    assert main.shape == (1, n, 64, 64)
    torch.testing.assert_close(main[:, :, ::2, ::2], expected[f"main{n}"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out16[:, :, ::4, ::4], expected[f"out16_{n}"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out32[:, :, ::4, ::4], expected[f"out32_{n}"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(only_main, main, rtol=0, atol=0)
    assert expected[f"main{n}"].abs().max() > 1  # the fixture is not trivially small


@pytest.mark.parametrize("n", [16, 19])
def test_bisenet_has_the_reference_state_dict_layout(n):
    net = FP.BiSeNet(n)
    state = net.state_dict()
    assert len(state) == REFERENCE_STATE_ENTRIES
    assert sum(p.numel() for p in net.parameters()) == REFERENCE_PARAMETERS[n]
    for key in ("cp.resnet.conv1.weight", "cp.resnet.layer4.1.bn2.running_var", "cp.resnet.layer2.0.downsample.0.weight",
                "cp.arm16.conv.conv.weight", "cp.arm32.bn_atten.bias", "cp.conv_head16.bn.weight",
                "cp.conv_avg.conv.weight", "ffm.convblk.conv.weight", "ffm.conv1.weight", "ffm.conv2.weight",
                "conv_out.conv.conv.weight", "conv_out16.conv_out.weight", "conv_out32.conv.bn.running_mean"):
        assert key in state, key
    assert state["conv_out.conv_out.weight"].shape == (n, 256, 1, 1)
    assert not any(p.requires_grad for p in net.parameters()) and not net.train().training


# ------------------------------------------------------------------------------------------------
# Schemas: names -> labels, by hand from methods-edits.md B.2 (not from the code's tables)

HAND = {  # name -> (bisenet19, barbershop16, celebamask19); None: the schema merges it with its pair
    "background": ({0}, {0}, {0}), "skin": ({1}, {1}, {1}), "nose": ({10}, {2}, {2}),
    "eyeglasses": ({6}, {3}, {3}), "left_eye": ({4}, None, {4}), "right_eye": ({5}, None, {5}),
    "left_brow": ({2}, None, {6}), "right_brow": ({3}, None, {7}), "left_ear": ({7}, None, {8}),
    "right_ear": ({8}, None, {9}), "earring": ({9}, {12}, {15}), "mouth": ({11}, {7}, {10}),
    "upper_lip": ({12}, {8}, {11}), "lower_lip": ({13}, {9}, {12}), "hair": ({17}, {10}, {13}),
    "hat": ({18}, {11}, {14}), "neck": ({14}, {14}, {17}), "necklace": ({15}, {13}, {16}),
    "cloth": ({16}, {15}, {18}), "eyes": ({4, 5}, {4}, {4, 5}), "brows": ({2, 3}, {5}, {6, 7}),
    "ears": ({7, 8}, {6}, {8, 9}), "lips": ({12, 13}, {8, 9}, {11, 12}),
}
SCHEMA_ORDER = ("bisenet19", "barbershop16", "celebamask19")


def all_labels(schema) -> FP.FaceParsing:
    """One image whose pixel i has label i (a 2-image batch: the second is the first flipped)."""
    row = torch.arange(schema.num_classes, dtype=torch.uint8).view(1, 1, -1)
    return FP.FaceParsing(torch.cat([row, row.flip(-1)]), schema)


@pytest.mark.parametrize("which", range(3), ids=SCHEMA_ORDER)
@pytest.mark.parametrize("name", sorted(HAND))
def test_names_select_the_schemas_labels(name, which):
    schema = FP.get_schema(SCHEMA_ORDER[which])
    expected = HAND[name][which]
    parsing = all_labels(schema)
    if expected is None:
        with pytest.raises(ValueError, match=f"barbershop16 schema has no class '{name}': it merges .* select "
                                             f"'(eyes|brows|ears)' instead"):
            parsing.mask(name)
        return
    mask = parsing.mask(name)
    assert mask.dtype == torch.float32 and mask.shape == (2, 1, schema.num_classes)
    assert set(torch.nonzero(mask[0, 0]).flatten().tolist()) == expected
    torch.testing.assert_close(mask[1], mask[0].flip(-1))
    assert set(schema.indices(name)) == expected


def test_schema_class_counts_and_hair():
    assert [FP.get_schema(s).num_classes for s in SCHEMA_ORDER] == [19, 16, 19]
    assert FP.BISENET19.indices("hair") == [17] and FP.BARBERSHOP16.indices("hair") == [10]
    assert FP.CELEBAMASK19.indices("hair") == [13] and FP.BARBERSHOP16.indices("cloth") == [15]


def test_names_lists_groups_and_aliases():
    s = FP.BISENET19
    assert s.indices("hair, skin") == [1, 17] == s.indices(["skin", " Hair "])
    assert s.indices("l_eye") == [4] and s.indices("u_lip,l_lip") == [12, 13] and s.indices("Upper Lip") == [12]
    assert s.indices("eye_g") == [6] and s.indices("ear_r") == [9] and s.indices("neck_l") == [15]
    assert s.indices("face") == sorted({1, 2, 3, 4, 5, 10, 11, 12, 13})
    assert FP.BARBERSHOP16.indices("face") == sorted({1, 2, 4, 5, 7, 8, 9})
    assert 0 not in s.indices("foreground") and len(s.indices("foreground")) == 18
    with pytest.raises(ValueError, match=r"unknown face class 'beard' for the bisenet19 schema; valid names: "
                                         r"background, skin, .*hair, hat, eyes, brows"):
        s.indices("hair,beard")
    with pytest.raises(ValueError, match="no class names given; choose from: background"):
        s.indices(" , ")
    assert "eyes" in FP.BARBERSHOP16.valid_names() and "left_eye" not in FP.BARBERSHOP16.valid_names()
    with pytest.raises(ValueError, match="unknown label schema 'ade20k'; known: bisenet19, barbershop16"):
        FP.get_schema("ade20k")


def test_face_parsing_checks_its_labels_and_colours_by_name():
    with pytest.raises(ValueError, match="uint8"):
        FP.FaceParsing(torch.zeros(1, 4, 4, dtype=torch.long), "bisenet19")
    with pytest.raises(ValueError, match="label 16 is out of range for the barbershop16 schema"):
        FP.FaceParsing(torch.full((1, 2, 2), 16, dtype=torch.uint8), "barbershop16")
    hair = {}
    for name in SCHEMA_ORDER:
        schema = FP.get_schema(name)
        parsing = FP.FaceParsing(torch.full((2, 3, 5), schema.indices("hair")[0], dtype=torch.uint8), name)
        rgb = parsing.colorize()
        assert rgb.shape == (2, 3, 3, 5) and 0 <= float(rgb.min()) and float(rgb.max()) <= 1
        hair[name] = rgb[0, :, 0, 0].tolist()
    assert hair["bisenet19"] == hair["barbershop16"] == hair["celebamask19"]
    palette = FP.BISENET19.palette()
    assert len({tuple(c) for c in palette.tolist()}) == 19  # every class its own colour


# ------------------------------------------------------------------------------------------------
# FaceParser: preprocessing, differentiable logits, parse on a batch

def test_logits_are_differentiable_and_parse_matches_them():
    assert FP.random_face_parser("bisenet19").input_size == 512 == FP.INPUT_SIZE
    parser = FP.random_face_parser("bisenet19", seed=3, input_size=64)  # small, for speed
    assert parser.kind == "bisenet" and parser.schema is FP.BISENET19 and parser.input_size == 64
    x = (torch.rand(2, 3, 40, 56, generator=torch.Generator().manual_seed(0)) * 2 - 1).requires_grad_(True)
    logits = parser.logits(x)
    assert logits.shape == (2, 19, 64, 64)
    F.cross_entropy(logits, torch.zeros(2, 64, 64, dtype=torch.long)).backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    assert not any(p.grad is not None for p in parser.parameters())
    parsing = parser.parse(x.detach())
    assert parsing.labels.shape == (2, 40, 56) and parsing.labels.dtype == torch.uint8
    with torch.no_grad():
        small = F.interpolate(parser.logits(x.detach()), (40, 56), mode="bilinear", align_corners=False,
                              antialias=True)
    assert torch.equal(parsing.labels, small.argmax(1).to(torch.uint8))
    # one image at a time gives the same labels as the batch
    assert torch.equal(parser.parse(x.detach()[1:], batch_size=1).labels, parsing.labels[1:])
    assert len(parsing.labels.unique()) > 1


def test_preprocessing_is_imagenet_normalisation_and_antialiased_resizing():
    parser = FP.random_face_parser("barbershop16", seed=0, input_size=64)
    seen = {}
    parser.net.register_forward_pre_hook(lambda m, args: seen.setdefault("x", args[0]))
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    parser.logits(x)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(seen["x"], ((x + 1) / 2 - mean) / std)
    seen.clear()
    big = torch.rand(1, 3, 128, 128) * 2 - 1
    parser.logits(big)
    expected = F.interpolate((big + 1) / 2, (64, 64), mode="bilinear", antialias=True)
    torch.testing.assert_close(seen["x"], (expected - mean) / std, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"RGB images \[N, 3, H, W\]"):
        parser.parse(torch.zeros(1, 4, 8, 8))


# ------------------------------------------------------------------------------------------------
# Loading: schema detection and wrong files

@pytest.mark.parametrize("n,schema", [(16, "barbershop16"), (19, "bisenet19")])
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_schema_is_detected_from_the_head(tmp_path, n, schema, suffix):
    net = bisenet(n, n)
    path = tmp_path / f"parser{suffix}"
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    if suffix == ".pth":
        torch.save(collections.OrderedDict(state), path)
    else:
        save_file(state, str(path))
    parser = FP.load_face_parser(path)
    assert parser.schema.name == schema and parser.kind == "bisenet" and parser.source == str(path)
    with torch.no_grad():
        # the parser holds the BatchNorm-folded, channels-last form: the same logits to float rounding
        assert parser.net.fused and not net.fused
        torch.testing.assert_close(parser.net(reference_input()), net(reference_input()), rtol=1e-4, atol=1e-4)


def test_wrapped_and_dataparallel_state_dicts_load(tmp_path):
    state = bisenet(16, 16).state_dict()
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "dp.pth")
    assert FP.load_face_parser(tmp_path / "dp.pth").schema.name == "barbershop16"
    no_counters = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    torch.save(no_counters, tmp_path / "old.pth")
    assert FP.load_face_parser(tmp_path / "old.pth", schema="barbershop16").num_classes == 16
    with pytest.raises(CheckpointError, match="16 classes but the bisenet19 schema 19"):
        FP.load_face_parser(tmp_path / "old.pth", schema="bisenet19")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def _resnet18_classifier_state() -> dict:
    state = {"conv1.weight": torch.zeros(64, 3, 7, 7), "bn1.weight": torch.ones(64),
             "layer1.0.conv1.weight": torch.zeros(64, 64, 3, 3), "fc.weight": torch.zeros(1000, 512),
             "fc.bias": torch.zeros(1000)}
    return state


WRONG_FILES = {
    "resnet_classifier": r"a ResNet image classifier \(torchvision layout: conv1, layer1\.\.4, fc with 1000 outputs\), "
                         r"not a face parser",
    "rosinality_pt": r"a StyleGAN generator checkpoint \(keys .*g_ema.*\), not a face parser; load it with Load StyleGAN",
    "stylegan_safetensors": r"a StyleGAN generator checkpoint \(StyleGAN Studio \.safetensors\), not a face parser",
    "stylegan_state": r"a StyleGAN generator's weights, not a face parser",
    "truncated": r"not a readable face parser weights file: the file is truncated or corrupt",
    "foreign_globals": r"cannot read face parser weights \(it holds Python objects, not only tensors .*nothing from "
                       r"the file was executed",
    "nan": r"tensor cp\.resnet\.layer3\.0\.conv1\.weight holds NaN or infinite values",
    "eight_classes": r"a BiSeNet with 8 classes \(conv_out\.conv_out\.weight \[8, 256, 1, 1\]\); the known face "
                     r"parsers have 19 \(79999_iter\.pth, schema bisenet19\) or 16",
    "head_mismatch": r"tensor conv_out16\.conv_out\.weight has shape \[16, 64, 1, 1\], expected \[19, 64, 1, 1\]",
    "missing_keys": r"not a BiSeNet-ResNet18 face parser state dict: missing \['cp\.arm16\.conv\.conv\.weight'",
    "foreign_keys": r"not a face parser: its keys \['encoder\.weight'\] .* neither BiSeNet's",
    "segformer_without_config": r"SegFormer weights without a config\.json beside them",
    "not_tensors": r"entry 'conv_out\.conv_out\.weight' is a list",
    "empty_folder": r"a face parser folder needs config\.json and model\.safetensors",
}


@pytest.mark.parametrize("damage", sorted(WRONG_FILES))
def test_wrong_files_get_specific_errors(tmp_path, damage):
    path = tmp_path / "parser.pth"
    good = {k: v.clone() for k, v in bisenet(19, 19).state_dict().items()}
    if damage == "resnet_classifier":
        torch.save(_resnet18_classifier_state(), path)
    elif damage == "rosinality_pt":
        G = tiny_generator()
        torch.save({"g_ema": {k: v.clone() for k, v in list(G.state_dict().items())[:4]},
                    "latent_avg": torch.zeros(8)}, path)
    elif damage == "stylegan_safetensors":
        path = core.save_generator(tiny_generator(), tmp_path / "tiny.safetensors")
    elif damage == "stylegan_state":
        torch.save({f"synthesis.b{r}.conv0.weight": torch.zeros(2) for r in (4, 8, 16)}
                   | {"mapping.fc0.weight": torch.zeros(2)}, path)
    elif damage == "truncated":
        torch.save(good, path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif damage == "foreign_globals":
        torch.save({"conv_out.conv_out.weight": _Evil()}, path)
    elif damage == "nan":
        good["cp.resnet.layer3.0.conv1.weight"][0, 0, 0, 0] = float("nan")
        torch.save(good, path)
    elif damage == "eight_classes":
        torch.save(FP.random_bisenet(8).state_dict(), path)
    elif damage == "head_mismatch":
        good["conv_out16.conv_out.weight"] = torch.zeros(16, 64, 1, 1)
        torch.save(good, path)
    elif damage == "missing_keys":
        torch.save({k: v for k, v in good.items() if not k.startswith("cp.arm16")}, path)
    elif damage == "foreign_keys":
        torch.save({"encoder.weight": torch.zeros(3)}, path)
    elif damage == "segformer_without_config":
        path = tmp_path / "model.safetensors"
        save_file({"segformer.encoder.x": torch.zeros(2), "decode_head.classifier.weight": torch.zeros(2)}, str(path))
    elif damage == "not_tensors":
        good["conv_out.conv_out.weight"] = [1.0]
        torch.save(good, path)
    elif damage == "empty_folder":
        path = tmp_path / "folder"
        path.mkdir()
    with pytest.raises(CheckpointError, match=re.escape(str(path)) + ".*" + WRONG_FILES[damage]):
        FP.load_face_parser(path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="face parser not found: .*nothing.pth"):
        FP.load_face_parser(tmp_path / "nothing.pth")


# ------------------------------------------------------------------------------------------------
# Finding and downloading

def test_find_face_parser_prefers_local_files_and_names_the_source_offline(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    torch.save(bisenet(16, 16).state_dict(), b / "seg.pth")
    assert FP.find_face_parser("barbershop16", [a, b]) == b / "seg.pth"

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    import core.files

    monkeypatch.setattr(core.files, "download_url", offline)
    monkeypatch.setattr(P, "download_from_hub", offline)
    with pytest.raises(MissingWeightsError, match=r"download https://huggingface\.co/AIRI-Institute/HairFastGAN/resolve/"
                                                  r"main/pretrained_models/BiSeNet/face_parsing_79999_iter\.pth and "
                                                  r"save it as 79999_iter\.pth .*zllrunning.*" + re.escape(str(a))):
        FP.find_face_parser("bisenet19", [a, b])
    with pytest.raises(MissingWeightsError, match=r"https://huggingface\.co/jonathandinu/face-parsing.*network is "
                                                  r"unreachable|network is unreachable.*jonathandinu/face-parsing"):
        FP.find_face_parser("celebamask19", [a, b])
    (a / "face_parsing_79999_iter.pth").write_bytes(b"x")
    assert FP.find_face_parser("bisenet19", [a, b]) == a / "face_parsing_79999_iter.pth"
    with pytest.raises(ValueError, match="unknown face parser 'bisenet'"):
        FP.find_face_parser("bisenet", [a])


# ------------------------------------------------------------------------------------------------
# SegFormer (transformers is optional)

CELEBA_LABELS = ["background", "skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear",
                 "mouth", "u_lip", "l_lip", "hair", "hat", "ear_r", "neck_l", "neck", "cloth"]


def write_tiny_segformer(folder: Path, labels=CELEBA_LABELS, seed: int = 0):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.SegformerConfig(
        num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16], patch_sizes=[7, 3],
        strides=[4, 2], num_attention_heads=[1, 1], mlp_ratios=[2, 2], decoder_hidden_size=16,
        num_labels=len(labels), id2label={i: n for i, n in enumerate(labels)},
        label2id={n: i for i, n in enumerate(labels)})
    torch.manual_seed(seed)
    model = transformers.SegformerForSemanticSegmentation(cfg).eval()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(cfg.to_json_string())
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    return model


def test_segformer_folder_loads_with_the_celebamask_schema(tmp_path):
    model = write_tiny_segformer(tmp_path / "fp")
    parser = FP.load_face_parser(tmp_path / "fp")
    assert parser.kind == "segformer" and parser.schema is FP.CELEBAMASK19
    assert FP.load_face_parser(tmp_path / "fp" / "model.safetensors").schema is FP.CELEBAMASK19
    assert parser.input_size == 512
    parser.input_size = 64  # small, for speed
    x = (torch.rand(2, 3, 96, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1).requires_grad_(True)
    logits = parser.logits(x)
    assert logits.shape == (2, 19, 64, 64)
    with torch.no_grad():
        pixels = F.interpolate((x.detach() + 1) / 2, (64, 64), mode="bilinear", antialias=True)
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        ref = model(pixel_values=(pixels - mean) / std).logits
    assert ref.shape == (2, 19, 16, 16)
    torch.testing.assert_close(logits.detach(), F.interpolate(ref, (64, 64), mode="bilinear"),
                               rtol=1e-4, atol=1e-4)
    logits[:, 13].sum().backward()
    assert float(x.grad.abs().sum()) > 0
    parsing = parser.parse(x.detach())
    assert parsing.labels.shape == (2, 96, 64) and parsing.schema is FP.CELEBAMASK19
    assert parsing.mask("hair").shape == (2, 96, 64)


def test_segformer_config_errors(tmp_path):
    write_tiny_segformer(tmp_path / "odd", labels=CELEBA_LABELS[:18] + ["sky"])
    with pytest.raises(CheckpointError, match=r"config\.json: the model's labels .*'sky'.* not all face classes"):
        FP.load_face_parser(tmp_path / "odd")
    write_tiny_segformer(tmp_path / "a")
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    config["decoder_hidden_size"] = 32
    (tmp_path / "a" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"the config needs .*same model"):
        FP.load_face_parser(tmp_path / "a")
    config["model_type"] = "bert"
    (tmp_path / "a" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="model_type is 'bert', not 'segformer'"):
        FP.load_face_parser(tmp_path / "a")
    # another label order of known classes becomes its own schema: names still select the right labels
    order = list(reversed(CELEBA_LABELS))
    write_tiny_segformer(tmp_path / "rev", labels=order)
    parser = FP.load_face_parser(tmp_path / "rev")
    assert parser.schema.name == "segformer19" and parser.schema.indices("hair") == [order.index("hair")]


def test_segformer_without_transformers_says_how_to_install(tmp_path, monkeypatch):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "segformer", "id2label": {"0": "background"},
                                                      "num_labels": 1}))
    save_file({"decode_head.classifier.weight": torch.zeros(1)}, str(tmp_path / "model.safetensors"))
    import builtins

    real_import = builtins.__import__

    def no_transformers(name, *args, **kwargs):
        if name == "transformers" or name.startswith("transformers."):
            raise ImportError("No module named 'transformers'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_transformers)
    with pytest.raises(MissingDependencyError, match=r"needs the `transformers` package .*pip install transformers"):
        FP.load_face_parser(tmp_path)
