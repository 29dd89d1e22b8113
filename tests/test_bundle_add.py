"""``sfumato bundle add / remove / info``: ControlNets (diffusers folders and original single files converted by
diffusers' converter), motion modules (both AnimateDiff layouts) and LoRAs go into a copy of a tiny bundle, checked
against its family, hashed into its manifest, and usable at once; pickles, other families, the embedded bundle and
the base components are refused, and a failure leaves the bundle as it was.

Every file here is made by the test from the tiny bundles (diffusers' ``save_pretrained``, ``save_lora_weights``), the
original layouts by renaming diffusers' keys back (``ldm_layout.unet_key`` for the U-Net part)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from controlnet_files import controlnet_to_original, tiny_controlnet
from sfumato.cli import main
from sfumato.core.bundle import embedded_dir, open_bundle, verify
from sfumato.core.bundle_add import add_component, holdings
from sfumato.core.capabilities import capabilities
from sfumato.core.errors import BadParameter, PickleRefused

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def files(sd15, sdxl, tmp_path_factory):
    """A diffusers ControlNet for the sd15 bundle, the same in the original layout, an SDXL one, a LoRA saved by
    diffusers, and a motion adapter as a diffusers folder and as an original AnimateDiff file."""
    from diffusers import MotionAdapter, StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_kohya
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import load_file, save_file

    from sfumato.video.adapter import diffusers_to_original

    root = tmp_path_factory.mktemp("offered")
    net = tiny_controlnet(sd15 / "unet", 1)
    net.save_pretrained(root / "cn_diffusers")
    state = load_file(str(root / "cn_diffusers" / "diffusion_pytorch_model.safetensors"))
    save_file(controlnet_to_original(state, dict(net.config)), str(root / "control_tiny_depth.safetensors"))
    tiny_controlnet(sdxl / "unet", 2).save_pretrained(root / "cn_sdxl")

    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(sd15 / "unet")
    unet.add_adapter(LoraConfig(r=4, lora_alpha=8, target_modules=["to_q", "to_k", "to_v", "to_out.0"],
                                init_lora_weights="gaussian"))
    layers = get_peft_model_state_dict(unet)
    StableDiffusionPipeline.save_lora_weights(root / "lora", unet_lora_layers=layers, safe_serialization=True)
    kohya = convert_state_dict_to_kohya({f"unet.{k}": v for k, v in layers.items()})
    save_file({k: v.contiguous() for k, v in kohya.items()}, str(root / "style_kohya.safetensors"))

    torch.manual_seed(3)
    adapter = MotionAdapter(block_out_channels=(32, 64), motion_layers_per_block=1, motion_num_attention_heads=8,
                            motion_norm_num_groups=32, motion_max_seq_length=32)  # what the original layout assumes
    adapter.save_pretrained(root / "mm_diffusers")
    motion = load_file(str(root / "mm_diffusers" / "diffusion_pytorch_model.safetensors"))
    save_file({k: v.contiguous() for k, v in diffusers_to_original(motion).items()}, str(root / "mm_tiny.safetensors"))
    MotionAdapter(block_out_channels=(64, 64), motion_layers_per_block=1, motion_num_attention_heads=8,
                  motion_norm_num_groups=32).save_pretrained(root / "mm_other")
    torch.save({"w": torch.zeros(2)}, root / "control.ckpt")
    return root


@pytest.fixture
def bundle(sd15, tmp_path):
    """A copy of the tiny sd15 bundle (the session's must not change), without its depth ControlNet."""
    shutil.copytree(sd15, tmp_path / "mine")
    assert main(["bundle", "remove", str(tmp_path / "mine"), "controlnet-depth"]) == 0
    return tmp_path / "mine"


def _run(capsys, *argv) -> tuple[int, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out + out.err


def _untouched(path, before: str) -> None:
    assert (path / "sfumato.json").read_text() == before
    assert not [p.name for p in path.iterdir() if p.name.startswith(".")]  # no staging or removed folders left


def _control_out(net) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x, text, cond = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 7, 32, generator=g), \
        torch.rand(1, 3, 64, 64, generator=g)
    with torch.no_grad():
        down, mid = net(x, torch.tensor(500), encoder_hidden_states=text, controlnet_cond=cond, return_dict=False)
    return torch.cat([t.flatten() for t in (*down, mid)])


def test_an_original_single_file_controlnet_is_converted_and_works(bundle, files, capsys, tmp_path):
    from diffusers import ControlNetModel

    from sfumato.core.image import ImageRequest, generate
    from sfumato.core.loading import load_component, load_models

    assert "controlnet_depth" not in open_bundle(bundle).components and not (bundle / "controlnet_depth").exists()
    code, said = _run(capsys, "bundle", "add", str(bundle), str(files / "control_tiny_depth.safetensors"),
                      "--as", "controlnet-depth")
    assert code == 0, said
    b = open_bundle(bundle)
    assert any(line == "controlnet_depth/diffusion_pytorch_model.safetensors: sha256 ok" for line in verify(b))
    assert capabilities(b)["depth"] and capabilities(b)["controlnets"] == ["depth"]
    ours = load_component(b, "controlnet_depth", CPU, torch.float32)
    saved = ControlNetModel.from_pretrained(files / "cn_diffusers").eval()
    theirs = ControlNetModel.from_single_file(str(files / "control_tiny_depth.safetensors"),
                                              config=str(files / "cn_diffusers"), local_files_only=True).eval()
    out = _control_out(ours)
    assert out.abs().max() > 0.01
    assert (out - _control_out(saved)).abs().max() == 0  # the weights diffusers saved, tensor for tensor
    assert (out - _control_out(theirs)).abs().max() == 0  # what diffusers' own single-file loader makes of it

    Image.fromarray(np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (64, 1))).save(tmp_path / "ramp.png")
    models = load_models(b, CPU, torch.float32, need_controlnet=True)
    kw = dict(prompt="red brick", seed=1, steps=2, width=64, height=64, fast="off")
    depth = generate(ImageRequest(depth_image=str(tmp_path / "ramp.png"), **kw), models)[0].image
    plain = generate(ImageRequest(**kw), models)[0].image
    assert np.abs(np.asarray(depth, np.float32) - np.asarray(plain, np.float32)).mean() > 1  # the ControlNet steers


def test_a_diffusers_folder_is_taken_as_it_is_and_replaced_only_when_asked(bundle, files, capsys):
    from sfumato.core.loading import load_component

    code, said = _run(capsys, "bundle", "add", str(bundle), str(files / "cn_diffusers"), "--as", "controlnet-normal")
    assert code == 0, said
    b = open_bundle(bundle)
    assert capabilities(b)["controlnets"] == ["normal"] and not capabilities(b)["depth"]
    assert (bundle / "controlnet_normal" / "config.json").read_bytes() == \
        (files / "cn_diffusers" / "config.json").read_bytes()
    assert load_component(b, "controlnet_normal", CPU, torch.float32) is not None
    before = (bundle / "sfumato.json").read_text()
    code, said = _run(capsys, "bundle", "add", str(bundle), str(files / "control_tiny_depth.safetensors"),
                      "--as", "controlnet-normal")
    assert code == 2 and "it holds controlnet_normal/ already" in said and "pass --replace" in said
    _untouched(bundle, before)
    code, said = _run(capsys, "bundle", "add", str(bundle), str(files / "control_tiny_depth.safetensors"),
                      "--as", "controlnet-normal", "--replace")
    assert code == 0, said
    verify(open_bundle(bundle))
    # the old command still works, as an alias of --as controlnet-depth
    code, said = _run(capsys, "bundle", "add-controlnet", str(bundle), str(files / "cn_diffusers"))
    assert code == 0 and "now does depth guidance" in said
    assert capabilities(open_bundle(bundle))["controlnets"] == ["depth", "normal"]
    # one file in diffusers' names, without its config: the config comes from the bundle's U-Net
    code, said = _run(capsys, "bundle", "add", str(bundle), str(files / "cn_diffusers" /
                      "diffusion_pytorch_model.safetensors"), "--as", "controlnet-canny")
    assert code == 0, said
    b = open_bundle(bundle)
    canny, depth = (load_component(b, c, CPU, torch.float32) for c in ("controlnet_canny", "controlnet_depth"))
    assert (_control_out(canny) - _control_out(depth)).abs().max() == 0


def test_an_sdxl_controlnet_is_refused_by_an_sd15_bundle_in_one_sentence(bundle, files, capsys):
    before = (bundle / "sfumato.json").read_text()
    with pytest.raises(BadParameter) as refused:
        from sfumato.core.bundle_add import add_component, controlnet_writer

        add_component(bundle, "controlnet_depth", controlnet_writer(open_bundle(bundle), files / "cn_sdxl"))
    said = str(refused.value)
    assert refused.value.field == "file" and "a ControlNet for SD 1.5, the family of bundle tiny-sd15" in said
    assert "this is an SDXL ControlNet (cross-attention width 64" in said and "cross-attention width 32" in said
    _untouched(bundle, before)
    for source in (files / "cn_sdxl", files / "cn_sdxl" / "diffusion_pytorch_model.safetensors"):  # folder, file
        code, said = _run(capsys, "bundle", "add", str(bundle), str(source), "--as", "controlnet-depth")
        assert code == 2 and "this is an SDXL ControlNet" in said, said
    _untouched(bundle, before)


def test_pickles_are_refused_for_every_kind(bundle, files, tmp_path, capsys):
    before = (bundle / "sfumato.json").read_text()
    folder = tmp_path / "pickled"
    folder.mkdir()
    shutil.copy(files / "cn_diffusers" / "config.json", folder)
    torch.save({"w": torch.zeros(2)}, folder / "diffusion_pytorch_model.bin")
    for kind in ("controlnet-depth", "motion", "lora"):
        for source in (files / "control.ckpt", folder):
            code, said = _run(capsys, "bundle", "add", str(bundle), str(source), "--as", kind)
            assert code == 1 and "refusing to load a pickled checkpoint" in said, (kind, source, said)
    _untouched(bundle, before)
    with pytest.raises(PickleRefused):
        from sfumato.core.bundle_add import controlnet_writer

        controlnet_writer(open_bundle(bundle), files / "control.ckpt")


def test_a_motion_module_in_either_layout_becomes_the_same_component(bundle, files, tmp_path, capsys):
    from safetensors.torch import load_file

    from sfumato.video.adapter import config_from_diffusers, load_motion_adapter

    other = tmp_path / "other"
    shutil.copytree(bundle, other)
    for target, source in ((bundle, files / "mm_tiny.safetensors"), (other, files / "mm_diffusers")):
        code, said = _run(capsys, "bundle", "add", str(target), str(source), "--as", "motion")
        assert code == 0, said
        caps = capabilities(open_bundle(target))
        assert caps["motion_module"] and caps["motion_frames"] == 32
        verify(open_bundle(target))
    weights = "motion_adapter/diffusion_pytorch_model.safetensors"
    a, b = load_file(str(bundle / weights)), load_file(str(other / weights))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    configs = [config_from_diffusers(json.loads((p / "motion_adapter" / "config.json").read_text()))
               for p in (bundle, other)]
    assert configs[0] == configs[1]
    from sfumato.core.loading import load_component

    unet = load_component(open_bundle(bundle), "unet", CPU, torch.float32)
    assert load_motion_adapter(open_bundle(bundle).component_dir("motion_adapter"), unet) is not None
    before = (bundle / "sfumato.json").read_text()
    code, said = _run(capsys, "bundle", "add", str(bundle), str(files / "mm_other"), "--as", "motion", "--replace")
    assert code == 2 and "a motion module for SD 1.5, the family of bundle tiny-sd15" in said
    _untouched(bundle, before)
    code, said = _run(capsys, "bundle", "remove", str(bundle), "motion")
    assert code == 0 and not capabilities(open_bundle(bundle))["motion_module"]
    assert not (bundle / "motion_adapter").exists() and weights not in (bundle / "sfumato.json").read_text()


def test_a_lora_is_checked_copied_listed_usable_and_removed(bundle, sdxl, files, tmp_path, capsys):
    from sfumato.core.lora import apply
    from sfumato.core.loading import load_models

    code, said = _run(capsys, "bundle", "add", str(bundle), str(files / "lora"), "--as", "lora", "--name", "style")
    assert code == 0, said
    b = open_bundle(bundle)
    assert capabilities(b)["loras"] == ["style"] and "loras/style.safetensors: sha256 ok" in verify(b)
    provenance = apply(load_models(b, CPU, torch.float32), ("style:0.5",))
    assert provenance[0]["name"] == "style.safetensors" and provenance[0]["scale"] == 0.5
    code, said = _run(capsys, "bundle", "add", str(bundle), str(files / "lora"), "--as", "lora", "--name", "style")
    assert code == 2 and "pass --replace" in said
    code, said = _run(capsys, "bundle", "add", str(bundle), str(files / "style_kohya.safetensors"), "--as", "lora")
    assert code == 0 and capabilities(open_bundle(bundle))["loras"] == ["style", "style_kohya"], said
    code, said = _run(capsys, "bundle", "add", str(bundle), str(files / "lora"), "--as", "controlnet-depth",
                      "--name", "x")
    assert code == 2 and "--name names LoRAs" in said

    other = tmp_path / "xl"
    shutil.copytree(sdxl, other)
    before = (other / "sfumato.json").read_text()
    code, said = _run(capsys, "bundle", "add", str(other), str(files / "lora"), "--as", "lora")
    assert code == 2 and said.startswith("sfumato: error: file=") and "tiny-sdxl" in said, said
    _untouched(other, before)

    code, said = _run(capsys, "bundle", "remove", str(bundle), "style")
    assert code == 0 and "removed loras/style.safetensors" in said
    b = open_bundle(bundle)
    assert capabilities(b)["loras"] == ["style_kohya"] and "loras/style.safetensors" not in json.dumps(b.manifest)
    verify(b)


def test_info_lists_components_with_sizes_and_hashes_and_loras(bundle, files, capsys):
    assert main(["bundle", "add", str(bundle), str(files / "lora" / "pytorch_lora_weights.safetensors"),
                 "--as", "lora"]) == 0
    capsys.readouterr()
    code, said = _run(capsys, "bundle", "info", str(bundle))
    info = json.loads(said)
    unet = info["holds"]["components"]["unet"]
    listed = json.loads((bundle / "sfumato.json").read_text())["files"]
    assert unet["weights"]["unet/diffusion_pytorch_model.safetensors"]["sha256"] == \
        listed["unet/diffusion_pytorch_model.safetensors"]["sha256"] and unet["bytes"] > 0
    assert list(info["holds"]["loras"]) == ["pytorch_lora_weights"] and "capabilities" in info
    code, said = _run(capsys, "bundle", "info", str(bundle), "--text")
    assert code == 0 and "components:" in said and "pytorch_lora_weights" in said and "can: text to image" in said
    assert holdings(open_bundle(bundle))["loras"]["pytorch_lora_weights"]["sha256"] is not None


def test_the_embedded_bundle_and_base_components_are_refused(bundle, files, capsys):
    embedded = embedded_dir() / "materials"
    before = (embedded / "sfumato.json").read_text()
    for argv in (("add", "materials", str(files / "cn_diffusers"), "--as", "controlnet-depth"),
                 ("remove", "materials", "motion")):
        code, said = _run(capsys, "bundle", *argv)
        assert code == 2 and "the embedded bundle is part of the engine" in said and "copy it first" in said, argv
    assert (embedded / "sfumato.json").read_text() == before and (embedded / "motion_adapter").is_dir()
    for base in ("unet", "text_encoder", "scheduler"):
        code, said = _run(capsys, "bundle", "remove", str(bundle), base)
        assert code == 2 and "is part of every bundle" in said
    for name in ("nothing-here", "../unet/diffusion_pytorch_model"):  # a name, never a path out of loras/
        code, said = _run(capsys, "bundle", "remove", str(bundle), name)
        assert code == 2 and "a component or LoRA of bundle tiny-sd15" in said
    verify(open_bundle(bundle))


def test_a_lora_for_the_embedded_bundle_goes_to_the_users_folder_and_is_used_by_name(bundle_root, capsys, tmp_path):
    """The embedded bundle is never changed: a style made for it lives in the user's data, beside the user
    bundles, and jobs name it as any bundle's LoRA."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from sfumato.core.bundle import loras_dir
    from sfumato.core.loading import load_models
    from sfumato.core.lora import apply

    embedded = embedded_dir() / "materials"
    before = {p.name: p.stat().st_mtime_ns for p in embedded.rglob("*")}
    unet = UNet2DConditionModel.from_pretrained(embedded / "unet")
    unet.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=["to_q", "to_v"], init_lora_weights="gaussian"))
    StableDiffusionPipeline.save_lora_weights(tmp_path / "mine", unet_lora_layers=get_peft_model_state_dict(unet),
                                              safe_serialization=True)
    code, said = _run(capsys, "bundle", "add", "materials", str(tmp_path / "mine"), "--as", "lora", "--name",
                      "studio")
    b = open_bundle(embedded)
    target = loras_dir(b) / "studio.safetensors"
    try:
        assert code == 0 and target.is_file() and not target.is_relative_to(embedded), said
        assert {p.name: p.stat().st_mtime_ns for p in embedded.rglob("*")} == before  # not a byte changed there
        assert capabilities(b)["loras"] == ["studio"]
        provenance = apply(load_models(b, CPU, torch.float32), ("studio:0.7",))
        assert provenance[0]["name"] == "studio.safetensors" and provenance[0]["scale"] == 0.7
        code, said = _run(capsys, "bundle", "add", "materials", str(tmp_path / "mine"), "--as", "lora", "--name",
                          "studio")
        assert code == 2 and "pass --replace" in said
    finally:
        code, said = _run(capsys, "bundle", "remove", "materials", "studio")
    assert code == 0 and not target.exists() and capabilities(b)["loras"] == []


def test_a_failure_while_writing_leaves_the_bundle_as_it_was(bundle, files):
    before = (bundle / "sfumato.json").read_text()

    def half(folder):
        shutil.copy(files / "cn_diffusers" / "config.json", folder)
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        add_component(bundle, "controlnet_depth", half)
    _untouched(bundle, before)
    assert not (bundle / "controlnet_depth").exists()


def test_a_plain_diffusers_folder_gets_a_manifest_with_what_it_holds(sd15, files, tmp_path, capsys):
    plain = tmp_path / "plain"
    shutil.copytree(sd15, plain, ignore=shutil.ignore_patterns("sfumato.json", "controlnet_depth"))
    index = {"_class_name": "StableDiffusionPipeline", **{c: ["diffusers", "x"] for c in
                                                            ("unet", "vae", "text_encoder", "tokenizer", "scheduler")}}
    (plain / "model_index.json").write_text(json.dumps(index))
    family = open_bundle(plain).family  # from the text encoder's width: "mini" for the tiny one
    code, said = _run(capsys, "bundle", "add", str(plain), str(files / "control_tiny_depth.safetensors"),
                      "--as", "controlnet-depth")
    assert code == 0, said
    b = open_bundle(plain)
    assert b.has_manifest and capabilities(b)["depth"] and b.family == family
    assert {"unet/diffusion_pytorch_model.safetensors", "controlnet_depth/diffusion_pytorch_model.safetensors"} <= \
        set(b.manifest["files"])
    verify(b)
