"""Integration tests against a real ComfyUI server (skipped unless COMFYUI_DIR is set)."""

from __future__ import annotations

import importlib
import json
import os
import re
import time

import pytest
import torch

import core
from conftest import load_pack, tiny_generator

pytestmark = pytest.mark.skipif(not os.environ.get("COMFYUI_DIR"),
                                reason="set COMFYUI_DIR to a ComfyUI checkout to run integration tests")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from comfyui_server import ComfyServer

    srv = ComfyServer(tmp_path_factory.mktemp("comfyui"))
    core.save_generator(tiny_generator("stylegan2"), srv.models / "tiny.safetensors")
    srv.start()
    yield srv
    srv.stop()


def node(cls, **inputs):
    return {"class_type": cls, "inputs": inputs}


def sample(gen, seed, n=1, space="w"):
    return node("SGS_SampleLatent", generator=gen, seed=seed, batch_size=n, space=space, truncation_psi=0.7,
                truncation_cutoff=0, seed_mode="nvidia")


def test_object_info_lists_every_node_with_tooltips(server):
    info = server.get("/object_info")
    ours = {k: v for k, v in info.items() if k.startswith("SGS_")}
    assert {"SGS_LoadStyleGAN", "SGS_DemoGenerator", "SGS_SaveStyleGAN", "SGS_SampleLatent", "SGS_Synthesize",
            "SGS_InterpolateLatents", "SGS_StyleMix", "SGS_SaveLatent", "SGS_LoadLatent", "SGS_AlignFace",
            "SGS_UnalignFace", "SGS_InvertImage", "SGS_SaveWeightDelta", "SGS_ApplyWeightDelta", "SGS_LoadCLIP",
            "SGS_LoadArcFace", "SGS_CLIPLatentOptimize", "SGS_ComputeGlobalDirections", "SGS_GlobalDirectionEdit",
            "SGS_TrainLatentMapper", "SGS_LoadLatentMapper", "SGS_ApplyLatentMapper", "SGS_TrainWeightShift",
            "SGS_SaveWeightShift", "SGS_LoadWeightShift", "SGS_ApplyWeightShifts", "SGS_WeightShiftSweep",
            "SGS_WeightShiftLayerScan"} <= set(ours)
    for name, spec in ours.items():
        assert spec["category"].startswith("StyleGAN/") and spec["description"], name
        for group in ("required", "optional"):
            for inp, entry in spec["input"].get(group, {}).items():
                assert entry[1].get("tooltip"), f"{name}.{inp}"
    assert info["SGS_LoadStyleGAN"]["input"]["required"]["ckpt_name"][0] == ["tiny.safetensors"]
    # Every node of the pack's registry, under its registered name; the web extension's lists come from there too.
    registry = importlib.import_module(f"{load_pack().__name__}.nodes.registry")
    assert set(ours) == set(registry.NODES)
    assert all(spec["display_name"] == registry.NODES[name].display_name for name, spec in ours.items())
    assert server.get("/stylegan_studio/nodes") == registry.web_info()
    assert "SGS_InvertImage" in registry.web_info()["optimising"]


def test_generate_mix_interpolate_and_save(server):
    prompt = {
        "1": node("SGS_LoadStyleGAN", ckpt_name="tiny.safetensors", device="auto", network="G_ema", dtype="auto"),
        "2": sample(["1", 0], 0, n=2),
        "3": sample(["1", 0], 10),
        "4": node("SGS_StyleMix", generator=["1", 0], base=["2", 0], style=["3", 0], layers="coarse"),
        "5": node("SGS_InterpolateLatents", latent_a=["2", 0], latent_b=["4", 0], num_frames=3, method="auto",
                  generator=["1", 0]),
        "6": node("SGS_Synthesize", generator=["1", 0], latent=["5", 0], noise_mode="const"),
        "7": node("SaveImage", images=["6", 0], filename_prefix="sgs_it"),
        "8": node("SGS_SaveLatent", latent=["4", 0], filename_prefix="latents/mix"),
    }
    result = server.run_prompt(prompt)
    assert result["status"]["status_str"] == "success", result["status"]
    images = result["outputs"]["7"]["images"]
    assert len(images) == 6 and all((server.output / im["filename"]).is_file() for im in images)
    assert "stylegan2, 32 px" in result["outputs"]["1"]["text"][0]
    saved = list((server.output / "latents").glob("mix_*_.safetensors"))
    assert len(saved) == 1 and core.load_latent(saved[0]).space == "w+"


def test_bad_input_is_a_node_error_not_a_crash(server):
    prompt = {"1": node("SGS_LoadStyleGAN", ckpt_name="missing.pkl", device="auto", network="G_ema", dtype="auto"),
              "2": sample(["1", 0], 0),
              "3": node("SGS_Synthesize", generator=["1", 0], latent=["2", 0], noise_mode="const"),
              "4": node("PreviewImage", images=["3", 0])}
    status, body = server.post("/prompt", {"prompt": prompt})
    assert status == 400
    assert "not in models/stylegan" in str(body["node_errors"]["1"])
    assert server.get("/object_info/SGS_Synthesize")  # still serving


def test_runtime_error_is_reported_and_server_stays_healthy(server):
    narrow = tiny_generator("stylegan2", w_dim=8, z_dim=8)
    core.save_generator(narrow, server.models / "narrow.safetensors")
    prompt = {"1": node("SGS_LoadStyleGAN", ckpt_name="tiny.safetensors", device="auto", network="G_ema", dtype="auto"),
              "2": node("SGS_LoadStyleGAN", ckpt_name="narrow.safetensors", device="auto", network="G_ema", dtype="auto"),
              "3": sample(["2", 0], 0, space="w+"),
              "4": node("SGS_Synthesize", generator=["1", 0], latent=["3", 0], noise_mode="const"),
              "5": node("PreviewImage", images=["4", 0])}
    result = server.run_prompt(prompt)
    assert result["status"]["status_str"] == "error"
    errors = [m[1] for m in result["status"]["messages"] if m[0] == "execution_error"]
    assert errors and "LatentError" in errors[0]["exception_type"]
    assert "made for" in errors[0]["exception_message"]
    ok = server.run_prompt({"1": node("SGS_DemoGenerator", arch="stylegan2", resolution=32, seed=1, device="cpu"),
                            "2": sample(["1", 0], 0),
                            "3": node("SGS_Synthesize", generator=["1", 0], latent=["2", 0], noise_mode="const"),
                            "4": node("PreviewImage", images=["3", 0])})
    assert ok["status"]["status_str"] == "success"


def write_random_perceptual_weights(folder) -> None:
    """VGG16 / AlexNet / LPIPS files with seeded random weights under the names users download them as (no
    download is possible here); the pack reads them like the real ones."""
    from core.losses import perceptual as P

    folder.mkdir(parents=True, exist_ok=True)
    for net, (backbone_file, _url) in P.BACKBONE_FILES.items():
        lp = P.random_lpips(net)
        torch.save({f"features.{k}": v for k, v in lp.features.state_dict().items()}, folder / backbone_file)
        torch.save({f"lin{k}.model.1.weight": lin.weight for k, lin in enumerate(lp.lins)},
                   folder / f"lpips_{net}.pth")
    from core.losses import vgg19 as V   # Neural Style's VGG-19: torchvision's layout and file name

    torch.save(V.vgg19_state(V.random_vgg19(seed=0)), folder / V.VGG19_FILES["torchvision"][0])


def example_face_photo(path) -> list:
    """A smooth synthetic 'photo' saved as `path`, and 68 landmarks of a face in it (no real face photo or
    detector weights can be used here)."""
    from test_align import face_landmarks, synthetic_photo
    from PIL import Image

    Image.fromarray(synthetic_photo(11, 160, 140)).save(path, quality=95)
    return face_landmarks(70, 72, 28, 0.15, seed=11).round(2).tolist()


def inversion_prompt(num_steps: int, preview_every: int = 5) -> dict:
    return {"1": node("SGS_LoadStyleGAN", ckpt_name="tiny.safetensors", device="auto", network="G_ema", dtype="auto"),
            "2": sample(["1", 0], 3),
            "3": node("SGS_Synthesize", generator=["1", 0], latent=["2", 0], noise_mode="const"),
            "4": node("SGS_InvertImage", generator=["1", 0], image=["3", 0], method="image2stylegan",
                      num_steps=num_steps, seed=0, preview_every=preview_every),
            "5": node("PreviewImage", images=["4", 2])}


@pytest.fixture(scope="module")
def perceptual_weights(server):
    write_random_perceptual_weights(server.root / "models" / "perceptual")


def test_inversion_streams_progress_and_previews(server, perceptual_weights):
    from comfyui_server import Listener

    listener = Listener(server)
    try:
        result = server.run_prompt(inversion_prompt(20), client_id=listener.client_id)
        assert result["status"]["status_str"] == "success"
        listener.wait_for(lambda kind, data: kind == "executing" and data.get("node") is None)
    finally:
        listener.close()
    steps = [p for p in listener.of_type("progress") if p["node"] == "4"]
    assert steps and steps[-1]["value"] == steps[-1]["max"] == 20
    assert [p["value"] for p in steps] == sorted(p["value"] for p in steps)
    previews = [payload for event, payload in listener.of_type("binary") if event == 1]  # PREVIEW_IMAGE
    assert len(previews) >= 4  # every 5 steps
    assert all(p[4:6] == b"\xff\xd8" for p in previews)  # image type, then a JPEG
    assert "image2stylegan: 20 steps" in result["outputs"]["4"]["text"][0]
    status = listener.of_type("stylegan_studio.progress")  # the pack's own event: step, loss terms, ETA
    assert status and all(s["node"] == "4" and s["total"] == 20 for s in status), status[:3]
    assert status[-1]["step"] == 20 and {"mse", "vgg"} <= set(status[-1]["losses"])
    assert status[-1]["prompt_id"] == steps[-1]["prompt_id"]


def test_interrupting_a_long_inversion_keeps_the_server_healthy(server, perceptual_weights):
    from comfyui_server import Listener

    listener = Listener(server)
    try:
        pid = server.queue(inversion_prompt(100_000), client_id=listener.client_id)
        listener.wait_for(lambda kind, data: kind == "progress" and data["node"] == "4" and data["value"] >= 3)
        stopped_at = time.time()
        status, _ = server.post("/interrupt", {"prompt_id": pid})
        assert status == 200
        result = server.wait(pid, timeout=60)
        took = time.time() - stopped_at
    finally:
        listener.close()
    assert result["status"]["status_str"] == "error"
    assert any(m[0] == "execution_interrupted" for m in result["status"]["messages"])
    assert took < 15, f"the inversion took {took:.1f} s to stop"
    ok = server.run_prompt(inversion_prompt(2))
    assert ok["status"]["status_str"] == "success"
    assert server.get("/queue") == {"queue_running": [], "queue_pending": []}


def write_random_clip(folder, arch: str, tag: str) -> None:
    """open_clip's `arch` with seeded random weights, saved (fp16, to halve the file) under the name Load CLIP looks
    for with `tag` in 'auto' mode; no CLIP weights can be downloaded here."""
    from safetensors.torch import save_file

    from core.models import clip as C

    path = folder / f"{arch}-{tag}.safetensors"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        model = C.random_clip(arch, seed=0)
        save_file({k: v.half().contiguous() for k, v in model.model.state_dict().items()}, str(path))


def test_latent_mapper_trains_saves_loads_and_applies(server):
    """Train Latent Mapper runs in ComfyUI (a few steps, the stand-in CLIP), saves into models/latent_mappers,
    Load Latent Mapper lists and reads that file, and both mappers give the same edited images."""
    write_random_clip(server.root / "models" / "text_encoders", "ViT-B-32", "openai")
    clip = node("SGS_LoadCLIP", model_name="ViT-B-32", weights="auto (by tag: models folder, else download)",
                pretrained_tag="openai", device="cpu", precision="fp32")
    load = node("SGS_LoadStyleGAN", ckpt_name="tiny.safetensors", device="auto", network="G_ema", dtype="auto")
    train = {
        "1": load, "2": clip,
        "3": node("SGS_TrainLatentMapper", generator=["1", 0], clip=["2", 0], text="a red face",
                  mapper_name="comfy-test", num_steps=3, coarse=True, medium=True, fine=True, id_lambda=0.0,
                  num_train_latents=4, checkpoint_every=1, preview_every=1),
        "4": sample(["1", 0], 7, n=2),
        "5": node("SGS_ApplyLatentMapper", generator=["1", 0], latent=["4", 0], mapper=["3", 0], strength=3.0),
        "6": node("SGS_Synthesize", generator=["1", 0], latent=["5", 0], noise_mode="const"),
        "7": node("SaveImage", images=["6", 0], filename_prefix="mapper_trained"),
    }
    result = server.run_prompt(train, timeout=600)
    assert result["status"]["status_str"] == "success", result["status"]
    report = result["outputs"]["3"]["text"][0]
    assert "3 steps" in report and "comfy-test.safetensors" in report, report
    assert (server.root / "models" / "latent_mappers" / "comfy-test.safetensors").is_file()
    assert (server.output / "latent_mappers" / "comfy-test.training.safetensors").is_file()
    info = server.get("/object_info/SGS_LoadLatentMapper")
    assert "comfy-test.safetensors" in info["SGS_LoadLatentMapper"]["input"]["required"]["mapper_name"][0]
    loaded = {"1": load, "4": sample(["1", 0], 7, n=2),
              "8": node("SGS_LoadLatentMapper", mapper_name="comfy-test.safetensors"),
              "5": node("SGS_ApplyLatentMapper", generator=["1", 0], latent=["4", 0], mapper=["8", 0], strength=3.0),
              "6": node("SGS_Synthesize", generator=["1", 0], latent=["5", 0], noise_mode="const"),
              "7": node("SaveImage", images=["6", 0], filename_prefix="mapper_loaded")}
    result2 = server.run_prompt(loaded)
    assert result2["status"]["status_str"] == "success", result2["status"]
    assert "'a red face'" in result2["outputs"]["8"]["text"][0]
    from PIL import Image

    def pixels(res):
        return [list(Image.open(server.output / i["filename"]).getdata()) for i in res["outputs"]["7"]["images"]]

    a, b = pixels(result), pixels(result2)
    assert len(a) == 2 and a == b
    plain = server.run_prompt({"1": load, "4": sample(["1", 0], 7, n=2),
                               "6": node("SGS_Synthesize", generator=["1", 0], latent=["4", 0], noise_mode="const"),
                               "7": node("SaveImage", images=["6", 0], filename_prefix="mapper_plain")})
    assert pixels(plain) != a  # the mapper changed the images


def write_stand_in_mapper(path, G) -> None:
    """A StyleCLIP-format mapper file (`torch.save` of state_dict + opts, as its coach.py writes) with seeded random
    weights for G's shape (coarse and medium groups: the stand-in generator has no fine layers); no published
    mapper can be downloaded here."""
    if path.exists():
        return
    gen = torch.Generator().manual_seed(0)
    state = {f"mapper.{g}_mapping.mapping.{i}.{k}": (torch.randn(G.w_dim, G.w_dim, generator=gen) / 0.01
                                                     if k == "weight" else torch.zeros(G.w_dim))
             for g in ("course", "medium") for i in range(1, 5) for k in ("weight", "bias")}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state, "opts": {"description": "mohawk hairstyle", "mapper_type": "LevelsMapper",
                                              "stylegan_size": G.img_resolution, "no_fine_mapper": True}}, path)


def write_stand_in_encoder(path, G) -> None:
    """An e4e-format encoder checkpoint (state_dict encoder.*, opts, latent_avg, as its coach writes) with seeded
    random weights and tiny widths for G's w (no published encoder can be downloaded here)."""
    if path.exists():
        return
    import forge
    from core.models.encoders.networks import EncoderConfig, random_encoder

    cfg = EncoderConfig(arch="fpn", progressive=True, num_ws=G.num_ws, stem_channels=8,
                        stages=((16, 3), (16, 4), (16, 14), (G.w_dim, 3)))
    ckpt = forge.encoder_checkpoint("e4e", random_encoder(cfg, 0).state_dict(),
                                    G.w_avg.detach().reshape(1, -1).repeat(G.num_ws, 1), size=G.img_resolution)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)


def write_stand_in_face_parser(folder, choice: str, photo, landmarks, size: int) -> None:
    """The BiSeNet file Load Face Parser's 'auto' entry `choice` looks for, with seeded random weights (no published
    parser can be downloaded here): the first seed whose parse of the aligned photo (`size` px) has some hair and
    some of everything else, so Segment Composite's 'hair' region is neither empty nor the whole face."""
    pack = load_pack()
    FP = importlib.import_module(f"{pack.__name__}.core.models.face_parsing")
    kind = importlib.import_module(f"{pack.__name__}.nodes.face_parsing").AUTO_PARSERS[choice]
    schema = FP.get_schema(kind)
    path = folder / FP.parser.LOCAL_NAMES[kind][0]   # written every time: another test may leave its own there
    aligned, _ = core.align_face(photo, core.face_keypoints(landmarks), size)
    x = aligned.permute(2, 0, 1)[None] * 2 - 1
    for seed in range(50):
        net = FP.random_bisenet(schema.num_classes, seed)
        with torch.no_grad():
            labels = FP.FaceParser(net, "bisenet", schema).parse(x).labels
        hair = float(torch.isin(labels, torch.tensor(schema.indices("hair"))).float().mean())
        if 0.05 <= hair <= 0.6:
            break
    else:
        raise AssertionError("no seed gives a usable stand-in parse")
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)


def needs_fs(workflow) -> bool:
    """The example works in FS space (Segment Composite, Invert Image ii2s+fs): its stand-in generator must have
    a 32 px block and more (64 px)."""
    return any(n["type"] == "SGS_SegmentComposite" or (n["type"] == "SGS_InvertImage" and "ii2s+fs" in
                                                        n["widgets_values"]) for n in workflow["nodes"])


def test_example_workflows_run_unchanged(server):
    """Every example converts UI -> API against the server's own schemas and runs, given the documented
    checkpoint name (a tiny stand-in generator saved under that name). Photos, perceptual weights, CLIP weights
    latent mappers and face landmarks are stand-ins too: a synthetic photo under the example's file name,
    random-weight VGG/LPIPS files in models/perceptual, a random-weight CLIP of the example's architecture under
    its 'auto' file name in models/text_encoders, a random StyleCLIP-format mapper under the example's name in
    models/latent_mappers, and the face's landmarks typed into Align Face's landmarks_json (the
    face_alignment detector's weights cannot be downloaded here), random BiSeNet face parsers under the 'auto'
    entries' file names in models/face_parsing; examples in FS space get a 64 px stand-in generator (FS needs a
    32 px block and more). Optimising nodes run their quick preset."""
    from workflows import check_workflow, example_paths, load_workflow, ui_to_api

    write_random_perceptual_weights(server.root / "models" / "perceptual")
    stand_ins = {}   # checkpoint path -> the stand-in resolution written there
    only = [n for n in os.environ.get("SGS_EXAMPLES", "").split(",") if n]   # e.g. SGS_EXAMPLES=hair_transfer
    for path in example_paths():
        if only and path.stem not in only:
            continue
        workflow = load_workflow(path)
        if any(n["type"] == "CheckpointLoaderSimple" for n in workflow["nodes"]):
            continue  # needs a diffusion checkpoint: checked against the schemas in test_workflows.py
        resolution = 64 if needs_fs(workflow) else 32
        for n in workflow["nodes"]:
            if n["type"] == "SGS_LoadStyleGAN":
                target = server.models / n["widgets_values"][0]
                if stand_ins.get(target) != resolution:
                    core.save_generator(tiny_generator("stylegan2", img_resolution=resolution), target)
                    stand_ins[target] = resolution
            if n["type"] == "LoadImage":
                landmarks = example_face_photo(server.root / "input" / n["widgets_values"][0])
            if n["type"] == "SGS_LoadCLIP":
                assert n["widgets_values"][1].startswith("auto"), "examples name CLIP by tag, not by a local file"
                write_random_clip(server.root / "models" / "text_encoders", n["widgets_values"][0],
                                  n["widgets_values"][2])
            if n["type"] == "SGS_LoadLatentMapper":
                write_stand_in_mapper(server.root / "models" / "latent_mappers" / n["widgets_values"][0],
                                      tiny_generator("stylegan2"))
            if n["type"] == "SGS_LoadEncoder":
                write_stand_in_encoder(server.root / "models" / "encoders" / n["widgets_values"][0],
                                       tiny_generator("stylegan2"))
        for n in workflow["nodes"]:
            if n["type"] == "SGS_LoadFaceParser":
                from test_align import synthetic_photo

                write_stand_in_face_parser(server.root / "models" / "face_parsing", n["widgets_values"][0],
                                           synthetic_photo(11, 160, 140), landmarks, resolution)
        info = server.get("/object_info")  # refreshed model and input lists
        assert check_workflow(workflow, info) == [], path.name
        prompt = ui_to_api(workflow, info)
        for entry in prompt.values():
            if "preset" in info[entry["class_type"]]["input"].get("optional", {}):   # every optimising node
                # Examples run the quick preset (global directions: 2 images per channel, which a random ViT-B-32
                # measures on 2 CPU cores in minutes for the stand-in's 208 channels), with no step overrides.
                assert entry["inputs"]["preset"] == "quick", (path.name, entry)
            if entry["class_type"] == "SGS_AlignFace":
                assert entry["inputs"]["landmarks_source"] == "auto" and entry["inputs"]["landmarks_json"] == ""
                entry["inputs"]["landmarks_json"] = json.dumps(landmarks)
        # hair_transfer runs Segment Composite's quick preset unchanged: 310 embedding steps (the stand-in photos are
        # one picture, embedded once) + 110 alignment + 100 blending steps, several minutes on 2 loaded CPU cores
        result = server.run_prompt(prompt, timeout=1800 if path.stem == "hair_transfer" else 900)
        errors = [m[1].get("exception_message") for m in result["status"]["messages"] if m[0] == "execution_error"]
        assert result["status"]["status_str"] == "success", (path.name, errors)
        saved = [item for out in result["outputs"].values() for item in out.get("images", [])
                 if item.get("type") == "output"]  # Synthesize's temp previews are not saved files
        assert saved and all((server.output / i["subfolder"] / i["filename"]).is_file() for i in saved), path.name
        if path.stem == "clip_edit_photo":
            from PIL import Image

            edited = [i for i in saved if i["filename"].startswith("clip_edit")]
            assert len(edited) == 1
            assert Image.open(server.output / edited[0]["subfolder"] / edited[0]["filename"]).size == (140, 160)
            report = result["outputs"]["7"]["text"][0]
            assert "50 steps" in report and "CLIP distance to the text" in report
        if path.stem == "fast_photo_edit":
            assert len([i for i in saved if i["filename"].startswith("fast_photo_edit")]) == 1
            assert "encoder: 1 pass in" in result["outputs"]["6"]["text"][0]
        if path.stem == "global_direction_sweep":
            assert len([i for i in saved if i["filename"].startswith("global_direction_sweep")]) == 7
            report = result["outputs"]["5"]["text"][0]
            assert "alpha -6 .. 6 in 7 frames" in report and "measured channels changed" in report, report
            assert "208 of 320 S channels measured" in result["outputs"]["3"]["text"][0]
        if path.stem == "latent_mapper_edit":
            frames = [i for i in saved if i["filename"].startswith("latent_mapper")]
            assert len(frames) == 10  # 2 faces x 5 strengths
            assert "strength 0 .. 1 in 5 frames" in result["outputs"]["4"]["text"][0]
        if path.stem == "weight_shift_edit":
            from PIL import Image

            ids = {e["class_type"]: k for k, e in prompt.items()}
            video = [i for i in saved if i["filename"].startswith("weight_shift")]
            assert len(video) == 1  # one animated WebP: the 7 frames of the sweep pasted back into the photo
            webp = Image.open(server.output / video[0]["subfolder"] / video[0]["filename"])
            assert webp.n_frames == 7 and webp.size == (140, 160)
            report = result["outputs"][ids["SGS_TrainWeightShift"]]["text"][0]
            assert "'a face with a big nose' on b16.conv1" in report and "steps" in report, report
            assert "k -3 .. 3 in 7 frames" in result["outputs"][ids["SGS_WeightShiftSweep"]]["text"][0]
            shifts = list((server.output / "weight_shifts").glob("big_nose_*_.safetensors"))
            assert len(shifts) == 1
        if path.stem == "hair_transfer":
            from PIL import Image

            ids = {e["class_type"]: k for k, e in prompt.items()}
            pasted = [i for i in saved if i["filename"].startswith("hair_transfer_")
                          and not i["filename"].startswith("hair_transfer_stages")]  # the debug strip is saved too
            assert len(pasted) == 1   # the composite pasted back into photo 1
            assert Image.open(server.output / pasted[0]["subfolder"] / pasted[0]["filename"]).size == (140, 160)
            stages = [i for i in saved if i["filename"].startswith("hair_transfer_stages")]
            assert len(stages) == 1 and Image.open(server.output / stages[0]["subfolder"] / stages[0]["filename"]
                                                   ).size[0] > 3 * 64   # the intermediates side by side
            report = result["outputs"][ids["SGS_SegmentComposite"]]["text"][0]
            assert "Segment Composite (parser)" in report and "align reference" in report, report
            done, total = re.search(r"\(parser\): ([\d,]+) of ([\d,]+) steps", report).groups()
            assert done == total, report   # the quick preset unchanged, every stage to the end
            # the stand-in photos are one picture under three names: embedded once, not three times
            assert "reference: the same photo as the base, embedded once" in report, report
        if path.stem == "face_parse_and_fs_invert":
            assert len([i for i in saved if i["filename"].startswith("hair_mask")]) == 1
            assert len([i for i in saved if i["filename"].startswith("face_classes")]) == 1
            assert len([i for i in saved if i["filename"].startswith("fs_reconstruction")]) == 1
            (latent,) = list((server.output / "latents").glob("fs_face_*_.safetensors"))
            assert core.load_latent(latent).space == "fs"
        if path.stem == "invert_and_edit":
            from PIL import Image

            frames = [i for i in saved if i["filename"].startswith("invert_edit")]
            assert len(frames) == 8  # the interpolation's frames, pasted back into the photo
            assert all(Image.open(server.output / i["subfolder"] / i["filename"]).size == (140, 160) for i in frames)


def test_core_mask_nodes_drive_align_face_and_use_its_masks(server):
    """A rectangle made with core mask nodes (SolidMask + MaskComposite) drives Align Face's mask input; the
    aligned mask feeds core GrowMask and Unalign Face's mask; Unalign Face's blend_mask feeds core ThresholdMask;
    without a mask, Align Face's padding mask feeds core InvertMask. Every MASK is saved through MaskToImage and
    checked against core.align on the same photo and landmarks."""
    import numpy as np
    from PIL import Image

    from test_align import face_landmarks, synthetic_photo

    photo = synthetic_photo(21, 160, 140)
    Image.fromarray(photo).save(server.root / "input" / "mask_face.png")
    # A face cut by the photo's left edge, so part of the aligned image is padding.
    landmarks = face_landmarks(40, 76, 30, 0.15, seed=21).round(2)
    text = json.dumps(landmarks.tolist())

    def align(image, **extra):
        return node("SGS_AlignFace", image=image, landmarks_source="landmarks input", output_size=64, face_index=0,
                    landmarks_json=text, transform_size=128, rotate_level=True, enable_padding=True, **extra)

    def save(mask, prefix):
        return [node("MaskToImage", mask=mask), prefix]

    prompt = {
        "1": node("LoadImage", image="mask_face.png"),
        "2": node("SolidMask", value=0.0, width=140, height=160),
        "3": node("SolidMask", value=1.0, width=30, height=24),
        "4": node("MaskComposite", destination=["2", 0], source=["3", 0], x=38, y=80, operation="add"),
        "5": align(["1", 0], mask=["4", 0]),
        "6": node("GrowMask", mask=["5", 3], expand=2, tapered_corners=True),
        "7": node("SGS_UnalignFace", original=["1", 0], edited=["5", 0], transform=["5", 1], feather=0.1,
                  mask=["5", 3]),
        "8": node("ThresholdMask", mask=["7", 1], value=0.5),
        "9": align(["1", 0]),
        "10": node("InvertMask", mask=["9", 3]),
    }
    outputs = {"aligned_mask": ["5", 3], "grown": ["6", 0], "blend": ["7", 1], "hard_blend": ["8", 0],
               "padding": ["10", 0]}
    for k, (name, source) in enumerate(outputs.items()):
        prompt[str(20 + k)] = node("MaskToImage", mask=source)
        prompt[str(30 + k)] = node("SaveImage", images=[str(20 + k), 0], filename_prefix=f"amask_{name}")
    result = server.run_prompt(prompt)
    errors = [m[1].get("exception_message") for m in result["status"]["messages"] if m[0] == "execution_error"]
    assert result["status"]["status_str"] == "success", errors

    def saved(name):
        (item,) = [i for out in result["outputs"].values() for i in out.get("images", [])
                   if i["filename"].startswith(f"amask_{name}_")]
        return np.asarray(Image.open(server.output / item["subfolder"] / item["filename"]))[..., 0] / 255.0

    # The same computation in core, on the same pixels and landmarks (8-bit PNGs: within one level).
    _, tf = core.align_face(photo, core.face_keypoints(landmarks), 64, 128)
    rect = torch.zeros(160, 140)
    rect[80:104, 38:68] = 1
    expected = core.align_mask(rect, tf)[0].numpy()
    assert saved("aligned_mask").shape == (64, 64)
    assert np.abs(saved("aligned_mask") - expected).max() <= 1 / 255 + 1e-6
    assert saved("grown").sum() > saved("aligned_mask").sum() + 10  # GrowMask consumed it
    padding = 1 - core.photo_coverage(tf).numpy()
    assert np.abs(saved("padding") - padding).max() <= 1 / 255 + 1e-6 and padding.max() == 1
    blend = saved("blend")
    assert blend.shape == (160, 140)
    assert np.abs(blend - core.blend_mask(tf, 160, 140, mask=torch.from_numpy(expected)).numpy()).max() <= 1 / 255
    hard = saved("hard_blend") > 0.5
    iou = (hard & (rect.numpy() > 0)).sum() / (hard | (rect.numpy() > 0)).sum()
    assert iou > 0.9, iou  # the rectangle drawn on the photo, back where it was drawn


def test_a_core_mask_node_drives_segment_composite(server, perceptual_weights):
    """Core mask nodes (SolidMask + MaskComposite: the top half, at another size than the generator's) make Segment
    Composite's region in mask-only mode; it streams progress (its status-line events), its MASK output is that
    region at the generator's resolution (through core MaskToImage), its fs latent goes to Save Latent, and a second
    queue with the same photos reuses their cached embeddings."""
    import numpy as np
    from PIL import Image

    from comfyui_server import Listener

    core.save_generator(tiny_generator("stylegan2", img_resolution=64), server.models / "tiny64.safetensors")
    steps = {"w_steps": 3, "fs_steps": 2, "align_steps1": 1, "align_steps2": 1, "blend_steps": 3,
             "target_fill_steps": 1}

    def prompt(seed):
        return {
            "1": node("SGS_LoadStyleGAN", ckpt_name="tiny64.safetensors", device="auto", network="G_ema",
                      dtype="auto"),
            "2": sample(["1", 0], 1), "3": sample(["1", 0], 2),
            "4": node("SGS_Synthesize", generator=["1", 0], latent=["2", 0], noise_mode="const"),
            "5": node("SGS_Synthesize", generator=["1", 0], latent=["3", 0], noise_mode="const"),
            "6": node("SolidMask", value=0.0, width=96, height=96),
            "7": node("SolidMask", value=1.0, width=96, height=48),
            "8": node("MaskComposite", destination=["6", 0], source=["7", 0], x=0, y=0, operation="add"),
            "9": node("SGS_SegmentComposite", generator=["1", 0], base=["4", 0], reference=["5", 0],
                      region_mask=["8", 0], mode="realistic", region_classes="", seed=seed, preset="quick",
                      preview_every=1, **steps),
            "10": node("MaskToImage", mask=["9", 2]),
            "11": node("SaveImage", images=["10", 0], filename_prefix="sc_mask"),
            "12": node("SaveImage", images=["9", 0], filename_prefix="sc_image"),
            "13": node("SGS_SaveLatent", latent=["9", 1], filename_prefix="latents/sc"),
        }

    listener = Listener(server)
    try:
        result = server.run_prompt(prompt(0), client_id=listener.client_id)
        errors = [m[1].get("exception_message") for m in result["status"]["messages"] if m[0] == "execution_error"]
        assert result["status"]["status_str"] == "success", errors
        listener.wait_for(lambda kind, data: kind == "executing" and data.get("node") is None)
    finally:
        listener.close()
    status = [d for d in listener.of_type("stylegan_studio.progress") if d["node"] == "9"]
    assert status and status[-1]["finished"] and status[-1]["step"] == status[-1]["total"] == 13, status[-1:]
    assert status[-1]["losses"]   # the status line's loss terms
    previews = [payload for event, payload in listener.of_type("binary") if event == 1]
    assert previews   # the live composite
    report = result["outputs"]["9"]["text"][0]
    assert "Segment Composite (mask-only)" in report and "w+ base" in report, report

    def saved(prefix):
        (item,) = [i for out in result["outputs"].values() for i in out.get("images", [])
                   if i["filename"].startswith(prefix)]
        return np.asarray(Image.open(server.output / item["subfolder"] / item["filename"]))

    mask = saved("sc_mask")[..., 0] / 255.0
    assert mask.shape == (64, 64) and mask[:28].mean() > 0.9 and mask[36:].mean() < 0.1
    assert saved("sc_image").shape == (64, 64, 3)
    (latent,) = list((server.output / "latents").glob("sc_*_.safetensors"))
    assert core.load_latent(latent).space == "fs"
    again = server.run_prompt(prompt(0) | {"9": {**prompt(0)["9"], "inputs": {**prompt(0)["9"]["inputs"],
                                                                               "blend_steps": 2}}})
    assert again["status"]["status_str"] == "success"
    report = again["outputs"]["9"]["text"][0]
    assert "cached embeddings: base, reference" in report and "w+ base" not in report, report


def test_free_model_cache_releases_the_pack_models(server):
    """The UI's "Free model and node cache" (POST /free) empties the pack's model caches: the generator's memory is
    given back (nothing holds it any more: the weak reference the cache keeps dies) and the next prompt loads it
    from disk again. (The process's RSS is no measure: freed heap is kept by the allocator for reuse.)"""
    big = tiny_generator("stylegan2", z_dim=512, w_dim=512, img_resolution=64,
                         synthesis={"channel_base": 32768, "channel_max": 512})  # ~100 MB of weights
    path = core.save_generator(big, server.models / "big.safetensors")
    del big
    prompt = {"1": node("SGS_LoadStyleGAN", ckpt_name="big.safetensors", device="cpu", network="G_ema", dtype="auto"),
              "2": sample(["1", 0], 0),
              "3": node("SGS_SaveLatent", latent=["2", 0], filename_prefix="latents/free_test")}

    def generators():
        return server.get("/stylegan_studio/memory")["generators"]

    try:
        assert server.run_prompt(prompt)["status"]["status_str"] == "success"
        memory = generators()
        loads = memory["loads"]
        assert memory["entries"] >= 1 and memory["alive"] >= 1 and memory["alive_bytes"] > 80e6, memory

        status, _ = server.post("/free", {"unload_models": True, "free_memory": True})
        assert status == 200
        wait_until(lambda: generators()["entries"] == 0)
        wait_until(lambda: generators()["alive"] == 0)  # ComfyUI drops its node outputs too, then collects
        assert generators()["alive_bytes"] == 0
        assert "released" in server.read_log()

        assert server.run_prompt(prompt)["status"]["status_str"] == "success"
        memory = generators()
        assert memory["entries"] == 1 and memory["loads"] == loads + 1  # read from disk again
    finally:
        server.post("/free", {"unload_models": True, "free_memory": True})
        path.unlink()


def wait_until(condition, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            raise TimeoutError("condition not met within the timeout")
        time.sleep(0.25)


def test_finish_now_completes_the_graph_and_stop_saves_the_latent(server, perceptual_weights):
    """"Finish now" (POST /stylegan_studio/finish) ends a long inversion and the graph completes with the latent so
    far; the estimate route then knows this device's cost; Stop keeps the latent in output/inversions and says so."""
    import urllib.parse

    from comfyui_server import Listener

    def started(prompt_id):
        return lambda kind, data: (kind == "progress" and data["node"] == "4" and data["prompt_id"] == prompt_id
                                   and data["value"] >= 3)

    listener = Listener(server)
    try:
        pid = server.queue(inversion_prompt(100_000), client_id=listener.client_id)
        listener.wait_for(started(pid))
        status, body = server.post("/stylegan_studio/finish", {"node_id": "4"})
        assert status == 200 and body == {"ok": True, "running": True}
        result = server.wait(pid, timeout=60)
        assert result["status"]["status_str"] == "success"
        report = result["outputs"]["4"]["text"][0]
        assert "finished early at step" in report and "of 100000" in report
        assert server.post("/stylegan_studio/finish", {})[0] == 400
        query = urllib.parse.urlencode({"node": "SGS_InvertImage", "preset": "quick", "method": "image2stylegan",
                                        "resolution": 32})
        estimate = server.get(f"/stylegan_studio/estimate?{query}")
        assert estimate["steps"] == 100 and estimate["seconds"] > 0 and "on cpu at 32 px" in estimate["text"]
        assert (server.root / "user" / "stylegan_studio" / "step_costs.json").is_file()

        pid = server.queue(inversion_prompt(99_999), client_id=listener.client_id)
        listener.wait_for(started(pid))
        server.post("/interrupt", {"prompt_id": pid})
        result = server.wait(pid, timeout=60)
        assert any(m[0] == "execution_interrupted" for m in result["status"]["messages"])
        note = listener.wait_for(lambda kind, data: kind == "stylegan_studio.progress" and "note" in data)["note"]
    finally:
        listener.close()
    # (The interrupt test above also left one: every Stop of an inversion keeps its latent.)
    assert note.startswith("stopped at step") and "load it with Load Latent" in note
    name = note.split("output/inversions/", 1)[1].split(" ", 1)[0]
    assert name.startswith("image2stylegan_stopped_") and core.load_latent(server.output / "inversions" / name).space \
        == "w+"


def test_fs_inversion_saves_loads_and_renders(server, perceptual_weights):
    """Invert Image's ii2s+fs in a real server: II2S then the FS embedding under one progress bar; the fs latent
    is saved, loaded back and rendered."""
    core.save_generator(tiny_generator("stylegan2", img_resolution=64), server.models / "tiny64.safetensors")
    gen = ["1", 0]
    prompt = {"1": node("SGS_LoadStyleGAN", ckpt_name="tiny64.safetensors", device="auto", network="G_ema",
                        dtype="auto"),
              "2": sample(gen, 3, space="w+"),
              "3": node("SGS_Synthesize", generator=gen, latent=["2", 0], noise_mode="const"),
              "4": node("SGS_InvertImage", generator=gen, image=["3", 0], method="ii2s+fs", num_steps=2, seed=0,
                        tune_steps=2, preview_every=1),
              "5": node("SGS_SaveLatent", latent=["4", 0], filename_prefix="latents/fs_test"),
              "6": node("SGS_Synthesize", generator=gen, latent=["4", 0], noise_mode="const"),
              "7": node("PreviewImage", images=["6", 0])}
    result = server.run_prompt(prompt)
    assert result["status"]["status_str"] == "success", result["status"]
    report = result["outputs"]["4"]["text"][0]
    assert "ii2s: 2 steps" in report and "fs: 2 steps" in report
    saved = list((server.root / "output" / "latents").glob("fs_test*.safetensors"))
    assert len(saved) == 1 and core.load_latent(saved[0]).space == "fs"
    # Another 32 px generator has no FS space: a node error naming the reason, not a crash.
    prompt["1"]["inputs"]["ckpt_name"] = "tiny.safetensors"
    for key in ("5", "6", "7"):
        del prompt[key]
    prompt["8"] = node("PreviewImage", images=["4", 2])
    result = server.run_prompt(prompt)
    assert result["status"]["status_str"] == "error"
    assert "renders at 32 px" in json.dumps(result["status"])


@pytest.mark.parametrize("name", ["neural_style", "neural_style_stylegan_face"])
def test_neural_style_examples_run_unchanged(server, name):
    """The Neural Style examples as they are, with stand-ins: a seeded random VGG-19 in torchvision's layout under
    its published name, synthetic images under the Load Image names, the tiny generator under the checkpoint's name.
    The photo example's mask comes from ComfyUI's own Image To Mask; the result has `size` px on the long side."""
    from PIL import Image

    from workflows import EXAMPLES, check_workflow, load_workflow, ui_to_api

    write_random_perceptual_weights(server.root / "models" / "perceptual")
    workflow = load_workflow(EXAMPLES / f"{name}.json")
    for n in workflow["nodes"]:
        if n["type"] == "SGS_LoadStyleGAN" and not (server.models / n["widgets_values"][0]).exists():
            core.save_generator(tiny_generator("stylegan2"), server.models / n["widgets_values"][0])
        if n["type"] == "LoadImage":
            example_face_photo(server.root / "input" / n["widgets_values"][0])
    info = server.get("/object_info")
    assert check_workflow(workflow, info) == []
    prompt = ui_to_api(workflow, info)
    ids = {e["class_type"]: k for k, e in prompt.items()}
    style = prompt[ids["SGS_NeuralStyle"]]["inputs"]
    assert style["preset"] == "quick" and style["backbone"] == "vgg19-dcbb9e9d.pth"
    result = server.run_prompt(prompt, timeout=900)
    errors = [m[1].get("exception_message") for m in result["status"]["messages"] if m[0] == "execution_error"]
    assert result["status"]["status_str"] == "success", errors
    report = result["outputs"][ids["SGS_NeuralStyle"]]["text"][0]
    saved = result["outputs"][ids["SaveImage"]]["images"]
    assert len(saved) == 1
    size = Image.open(server.output / saved[0]["subfolder"] / saved[0]["filename"]).size
    assert max(size) == style["size"], (size, style["size"])
    if name == "neural_style":
        assert "Neural Style (gatys2016): 1 image(s), 100 of 100 steps" in report, report
    else:
        assert "Neural Style (tutorial): 1 image(s), 50 of 50 steps" in report, report


def test_face_parse_runs_on_a_batch_with_stand_in_parsers(server, tmp_path):
    """Load Face Parser lists models/face_parsing (a BiSeNet seg.pth and a SegFormer folder, random stand-ins), Face
    Parse and Face Parsing Mask run on a batch, and their MASK feeds ComfyUI's own mask nodes."""
    from core.models import face_parsing as FP

    folder = server.root / "models" / "face_parsing"
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(FP.random_bisenet(16, seed=0).state_dict(), folder / "seg.pth")
    try:
        import transformers
    except ImportError:
        transformers = None
    if transformers is not None:
        from test_face_parsing import write_tiny_segformer

        write_tiny_segformer(folder / "segformer")
    info = server.get("/object_info/SGS_LoadFaceParser")["SGS_LoadFaceParser"]
    choices = info["input"]["required"]["parser_name"][0]
    assert "seg.pth" in choices and (transformers is None or "segformer/model.safetensors" in choices)
    for name, schema in [("seg.pth", "barbershop16")] + ([("segformer/model.safetensors", "celebamask19")]
                                                          if transformers is not None else []):
        prompt = {
            "1": node("SGS_DemoGenerator", arch="stylegan2", resolution=32, seed=1, device="cpu"),
            "2": sample(["1", 0], 0, n=2),
            "3": node("SGS_Synthesize", generator=["1", 0], latent=["2", 0], noise_mode="const"),
            "4": node("SGS_LoadFaceParser", parser_name=name, device="auto"),
            "5": node("SGS_FaceParse", face_parser=["4", 0], image=["3", 0], classes="hair, face", grow=1,
                      feather=1.0),
            "6": node("SGS_FaceParsingMask", parsing=["5", 2], classes="background"),
            "7": node("MaskToImage", mask=["6", 0]),
            "8": node("PreviewImage", images=["7", 0]),
            "9": node("PreviewImage", images=["5", 1]),
            "10": node("MaskToImage", mask=["5", 0]),
            "11": node("PreviewImage", images=["10", 0]),
        }
        result = server.run_prompt(prompt)
        assert result["status"]["status_str"] == "success", result["status"]
        assert schema in result["outputs"]["4"]["text"][0]
        assert len(result["outputs"]["8"]["images"]) == 2 and len(result["outputs"]["9"]["images"]) == 2
    bad = {"1": node("SGS_DemoGenerator", arch="stylegan2", resolution=32, seed=1, device="cpu"),
           "2": sample(["1", 0], 0),
           "3": node("SGS_Synthesize", generator=["1", 0], latent=["2", 0], noise_mode="const"),
           "4": node("SGS_LoadFaceParser", parser_name="seg.pth", device="auto"),
           "5": node("SGS_FaceParse", face_parser=["4", 0], image=["3", 0], classes="left_eye"),
           "6": node("PreviewImage", images=["5", 1])}
    result = server.run_prompt(bad)
    errors = [m[1] for m in result["status"]["messages"] if m[0] == "execution_error"]
    assert errors and "select 'eyes' instead" in errors[0]["exception_message"]


def test_image_with_latent_saves_and_loads_back_through_the_server(server):
    """Save Image with Latent writes PNGs with the prompt and workflow text (as Save Image) and each image's latent;
    Load Image with Latent offers them (' [output]'), and an uploaded copy in the input folder, and gives the
    latent back bit for bit; ComfyUI's own Load Image still reads the file; a PNG without a latent is a clear node
    error."""
    import shutil

    from PIL import Image

    prompt = {"1": node("SGS_LoadStyleGAN", ckpt_name="tiny.safetensors", device="auto", network="G_ema",
                        dtype="auto"),
              "2": sample(["1", 0], 5, n=2, space="w+"),
              "3": node("SGS_Synthesize", generator=["1", 0], latent=["2", 0], noise_mode="const"),
              "4": node("SGS_SaveImageWithLatent", images=["3", 0], latent=["2", 0], filename_prefix="sgs_png/lat"),
              "5": node("SGS_SaveLatent", latent=["2", 0], filename_prefix="sgs_png/lat")}
    result = server.run_prompt(prompt, client_id="png-test")
    assert result["status"]["status_str"] == "success", result["status"]
    images = result["outputs"]["4"]["images"]
    assert len(images) == 2 and all(i["subfolder"] == "sgs_png" and i["type"] == "output" for i in images)
    second = server.output / "sgs_png" / images[1]["filename"]
    assert "prompt" in Image.open(second).text   # ComfyUI's workflow metadata, as Save Image writes it
    (saved,) = list((server.output / "sgs_png").glob("lat_*_.safetensors"))
    expected = core.select_latents(core.load_latent(saved), "1")
    listed = server.get("/object_info/SGS_LoadImageWithLatent")["SGS_LoadImageWithLatent"]["input"]["required"]
    name = f"sgs_png/{images[1]['filename']} [output]"
    assert name in listed["image"][0] and listed["image"][1]["image_upload"]
    shutil.copy(second, server.root / "input" / "uploaded.png")
    Image.new("RGB", (8, 8)).save(server.root / "input" / "no_latent.png")
    load = {"1": prompt["1"],
            "2": node("SGS_LoadImageWithLatent", image=name, generator=["1", 0]),
            "3": node("SGS_LoadImageWithLatent", image="uploaded.png"),
            "4": node("SGS_SaveLatent", latent=["2", 1], filename_prefix="sgs_png/back"),
            "5": node("SGS_SaveLatent", latent=["3", 1], filename_prefix="sgs_png/uploaded"),
            "6": node("LoadImage", image="uploaded.png"),
            "7": node("PreviewImage", images=["6", 0])}
    result = server.run_prompt(load)
    assert result["status"]["status_str"] == "success", result["status"]
    for prefix in ("back", "uploaded"):
        (path,) = list((server.output / "sgs_png").glob(f"{prefix}_*_.safetensors"))
        back = core.load_latent(path)
        assert torch.equal(back.tensor, expected.tensor) and back.generator == expected.generator
    assert "w+ latent for" in result["outputs"]["2"]["text"][0]
    bad = {"1": node("SGS_LoadImageWithLatent", image="no_latent.png"),
           "2": node("PreviewImage", images=["1", 0])}
    result = server.run_prompt(bad)
    errors = [m[1].get("exception_message") for m in result["status"]["messages"] if m[0] == "execution_error"]
    assert result["status"]["status_str"] == "error" and "holds no StyleGAN Studio latent" in errors[0], errors
