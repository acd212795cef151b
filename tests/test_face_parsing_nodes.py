"""Face parsing nodes headless: Load Face Parser lists and caches files of models/face_parsing, Face Parse works on a
batch (MASK, preview, parsing result), Face Parsing Mask reuses one parse; names, not indices, pick classes."""

from __future__ import annotations

import sys

import pytest
import torch

from core.models import face_parsing as FP


@pytest.fixture()
def nodes(pack):
    return sys.modules[f"{pack.__name__}.nodes.face_parsing"]


@pytest.fixture()
def seg_file(tmp_path):
    folder = tmp_path / "models" / "face_parsing" / "bisenet"
    folder.mkdir(parents=True)
    torch.save(FP.random_bisenet(16, seed=2).state_dict(), folder / "seg.pth")
    return "bisenet/seg.pth"


def images(n: int = 3, h: int = 48, w: int = 40) -> torch.Tensor:
    return torch.rand(n, h, w, 3, generator=torch.Generator().manual_seed(5))


def load(nodes, name, device="cpu"):
    out = nodes.LoadFaceParser().load(name, device)
    return out["result"]


def test_load_face_parser_lists_loads_and_caches(pack, nodes, seg_file, tmp_path):
    comfy_env = sys.modules[f"{pack.__name__}.nodes.comfy_env"]
    assert comfy_env.face_parsing_dirs() == [tmp_path / "models" / "face_parsing"]
    choices = nodes.LoadFaceParser.INPUT_TYPES()["required"]["parser_name"][0]
    assert choices[:3] == list(nodes.AUTO_PARSERS) and seg_file in choices
    loads = nodes._cache.loads
    parser, info = load(nodes, seg_file)
    assert parser.schema.name == "barbershop16" and "barbershop16" in info and "hair" in info
    assert load(nodes, seg_file)[0] is parser and nodes._cache.loads == loads + 1
    assert not any(p.requires_grad for p in parser.parameters()) and not torch.is_inference(parser.scale)
    with pytest.raises(ValueError, match="must be a file name inside models/face_parsing"):
        load(nodes, "../seg.pth")
    with pytest.raises(FileNotFoundError, match="'gone.pth' not found in .*face_parsing"):
        load(nodes, "gone.pth")


def test_auto_entry_finds_the_published_file_in_the_folder(pack, nodes, tmp_path):
    folder = tmp_path / "models" / "face_parsing"
    folder.mkdir(parents=True)
    torch.save(FP.random_bisenet(19, seed=1).state_dict(), folder / "79999_iter.pth")
    auto = next(k for k, v in nodes.AUTO_PARSERS.items() if v == "bisenet19")
    parser, info = load(nodes, auto)
    assert parser.schema.name == "bisenet19" and "79999_iter.pth" in parser.source


def test_face_parse_on_a_batch_and_masks_from_the_result(pack, nodes, seg_file):
    parser, _ = load(nodes, seg_file)
    parser.input_size = 64  # the cached parser, made small for speed (the node resizes to whatever it says)
    try:
        batch = images()
        mask, preview, parsing = nodes.FaceParse().parse(parser, batch, "hair, face")
        assert mask.shape == (3, 48, 40) and mask.dtype == torch.float32
        assert preview.shape == (3, 48, 40, 3) and 0 <= float(preview.min()) and float(preview.max()) <= 1
        assert parsing.labels.shape == (3, 48, 40) and parsing.schema.name == "barbershop16"
        # the node's result is the core parse of the batch, image by image
        convert = sys.modules[f"{pack.__name__}.nodes.convert"]
        single = parser.parse(convert.comfy_to_generator(batch[1:2])).labels
        assert torch.equal(parsing.labels[1:2], single)
        expected = ((parsing.labels == 10) | torch.isin(parsing.labels, torch.tensor([1, 2, 4, 5, 7, 8, 9],
                                                                                        dtype=torch.uint8)))
        assert torch.equal(mask, expected.float())
        (again,) = nodes.FaceParsingMask().mask(parsing, "hair, face")
        assert torch.equal(again, mask)
        (bg,) = nodes.FaceParsingMask().mask(parsing, "background")
        assert torch.equal(bg, (parsing.labels == 0).float())
        (grown,) = nodes.FaceParsingMask().mask(parsing, "background", grow=2, feather=0.0)
        assert bool((grown >= bg).all())
        (soft,) = nodes.FaceParsingMask().mask(parsing, "background", grow=0, feather=3.0)
        assert soft.shape == bg.shape and 0 <= float(soft.min()) and float(soft.max()) <= 1
        with pytest.raises(ValueError, match="barbershop16 schema has no class 'left_eye'.*select 'eyes'"):
            nodes.FaceParsingMask().mask(parsing, "left_eye")
        with pytest.raises(ValueError, match="unknown face class 'fur'.*valid names: background"):
            nodes.FaceParse().parse(parser, batch, "fur")
    finally:
        parser.input_size = FP.INPUT_SIZE


def test_grow_and_feather():
    m = torch.zeros(1, 9, 9)
    m[0, 4, 4] = 1
    assert int(FP.grow_mask(m, 1).sum()) == 9 and int(FP.grow_mask(FP.grow_mask(m, 2), -2).sum()) == 1
    soft = FP.refine_mask(m, 0, 2.0)
    assert float(soft[0, 4, 4]) < 1 and float(soft[0, 4, 5]) > 0 and abs(float(soft.sum()) - 1) < 1e-5
    with pytest.raises(ValueError, match="grow must be within"):
        FP.refine_mask(m, 1000, 0)
