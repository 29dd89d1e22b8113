"""Temporal U-Net: frame attention hooked into the shared image U-Net, AnimateDiff weights in two layouts.

Tiny models built here (an SD-1.5-shaped U-Net of two levels, a ControlNet from it, a diffusers
``MotionAdapter`` with random weights), B = 2 videos of F = 4 frames at 8×8 latents.
"""

from __future__ import annotations

import pytest
import torch
from einops import rearrange

from sfumato.core.errors import BadParameter, BundleCorrupt, PickleRefused
from sfumato.video.adapter import (PE, config_from_diffusers, detect, diffusers_to_original, expected_shapes,
                                   load_motion_adapter, original_to_diffusers, read_motion_adapter,
                                   save_motion_adapter)
from sfumato.video.motion import MotionConfig, MotionModule, MotionStack, inflate

B, F, SEQ = 2, 4, 7
HEADS = (2, 4)


@pytest.fixture(scope="module")
def unet():
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(32, 64), norm_num_groups=8, attention_head_dim=(2, 4),
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32).eval()


@pytest.fixture(scope="module")
def inputs(unet):
    """x (B·F, 4, 8, 8), t, text (B·F, SEQ, 32) repeated per frame, ControlNet residuals for (B·F)."""
    from diffusers import ControlNetModel

    g = torch.Generator().manual_seed(1)
    x = torch.randn(B * F, 4, 8, 8, generator=g)
    text = torch.randn(B, SEQ, 32, generator=g).repeat_interleave(F, dim=0)  # AnimateDiffPipeline's convention
    t = torch.tensor(500)
    net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 8, 16, 16)).eval()
    with torch.no_grad():
        for module in [*net.controlnet_down_blocks, net.controlnet_mid_block]:
            module.weight.normal_(0, 0.3, generator=g)  # non-zero residuals
        control = torch.rand(B * F, 3, 64, 64, generator=g)
        down, mid = net(x, t, encoder_hidden_states=text, controlnet_cond=control, return_dict=False)
    assert mid.abs().max() > 0.01
    return {"x": x, "t": t, "text": text, "residuals": {"down_block_additional_residuals": down,
                                                        "mid_block_additional_residual": mid}}


def randomise(module: torch.nn.Module, seed: int) -> None:
    """All parameters random (proj_out included), so that frame attention visibly acts."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory):
    """A diffusers MotionAdapter shaped for the tiny U-Net (v2-like: mid block, 32 positions), random weights."""
    from diffusers import MotionAdapter

    adapter = MotionAdapter(block_out_channels=(32, 64), motion_layers_per_block=1, motion_num_attention_heads=HEADS,
                            motion_norm_num_groups=8, motion_max_seq_length=32)
    randomise(adapter, 2)
    folder = tmp_path_factory.mktemp("motion") / "adapter"
    adapter.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def original_file(adapter_dir, tmp_path_factory):
    """The same weights in AnimateDiff's original key layout, one safetensors file."""
    from safetensors.torch import load_file, save_file

    state = diffusers_to_original(load_file(str(adapter_dir / "diffusion_pytorch_model.safetensors")))
    path = tmp_path_factory.mktemp("original") / "mm_tiny.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def unet_out(model, inputs, control: bool):
    extra = inputs["residuals"] if control else {}
    with torch.no_grad():
        return model(inputs["x"], inputs["t"], encoder_hidden_states=inputs["text"], return_dict=False, **extra)[0]


def per_frame(unet, inputs, control: bool) -> torch.Tensor:
    """The image U-Net run on each of the B·F frames alone."""
    outs = []
    for i in range(B * F):
        extra = {}
        if control:
            r = inputs["residuals"]
            extra = {"down_block_additional_residuals": [d[i:i + 1] for d in r["down_block_additional_residuals"]],
                     "mid_block_additional_residual": r["mid_block_additional_residual"][i:i + 1]}
        with torch.no_grad():
            outs.append(unet(inputs["x"][i:i + 1], inputs["t"], encoder_hidden_states=inputs["text"][i:i + 1],
                             return_dict=False, **extra)[0])
    return torch.cat(outs)


@pytest.mark.parametrize("control", [False, True], ids=["plain", "controlnet"])
def test_fresh_inflation_equals_image_unet_per_frame(unet, inputs, control):
    reference = per_frame(unet, inputs, control)
    motion_unet = inflate(unet, MotionConfig.for_unet(unet.config, num_attention_heads=4))
    try:
        calls = []
        for m in motion_unet.motion.modules():
            if isinstance(m, MotionModule):
                m.register_forward_hook(lambda *_: calls.append(1))
        with motion_unet.video(F):
            out = unet_out(motion_unet, inputs, control)
        assert len(calls) == 1 + 1 + 2 + 2 + 1  # down 1+1, up 2+2, mid 1: every module ran
        assert (out - reference).abs().max() <= 1e-5
    finally:
        motion_unet.remove()


def test_image_mode_and_remove_leave_the_unet_untouched(unet, inputs, adapter_dir):
    before = unet_out(unet, inputs, True)
    keys = set(unet.state_dict())
    motion_unet = load_motion_adapter(adapter_dir, unet)
    try:
        assert torch.equal(unet_out(motion_unet, inputs, True), before)  # no video context: image mode
        with motion_unet.video(F):
            assert (unet_out(motion_unet, inputs, True) - before).abs().max() > 1e-2  # the weights act
        assert set(unet.state_dict()) == keys  # shared, not modified
        with pytest.raises(BadParameter, match="already has a stack"):  # no second set of hooks on top
            inflate(unet, motion_unet.config)
    finally:
        motion_unet.remove()
    assert torch.equal(unet_out(unet, inputs, True), before)


@pytest.fixture(scope="module")
def diffusers_reference(unet, inputs, adapter_dir):
    """diffusers' UNetMotionModel.from_unet2d(unet, adapter) on the same inputs, folded back to (B·F)."""
    from diffusers import MotionAdapter, UNetMotionModel

    model = UNetMotionModel.from_unet2d(unet, MotionAdapter.from_pretrained(adapter_dir, local_files_only=True)).eval()
    video = {**inputs, "x": rearrange(inputs["x"], "(b f) c h w -> b c f h w", f=F)}
    return {c: rearrange(unet_out(model, video, c), "b c f h w -> (b f) c h w") for c in (False, True)}


@pytest.mark.parametrize("layout", ["diffusers", "original"])
@pytest.mark.parametrize("control", [False, True], ids=["plain", "controlnet"])
def test_parity_with_diffusers_unet_motion_model(unet, inputs, adapter_dir, original_file, diffusers_reference,
                                                 layout, control):
    source = adapter_dir if layout == "diffusers" else original_file
    # heads and groups are not recorded in the original layout (a diffusers folder's config.json wins)
    motion_unet = load_motion_adapter(source, unet, num_attention_heads=HEADS, norm_num_groups=8)
    try:
        with motion_unet.video(F):
            out = unet_out(motion_unet, inputs, control)
    finally:
        motion_unet.remove()
    assert (out - diffusers_reference[control]).abs().max() <= 1e-4


def test_both_layouts_read_the_same_tensors(adapter_dir, original_file):
    from diffusers.loaders.single_file_utils import convert_animatediff_checkpoint_to_diffusers
    from safetensors.torch import load_file

    a = read_motion_adapter(adapter_dir)
    b = read_motion_adapter(original_file, num_attention_heads=HEADS, norm_num_groups=8)
    assert a.config == b.config and a.info.layout == "diffusers" and b.info.layout == "original"
    assert a.info.version == b.info.version == "v2"
    assert a.state.keys() == b.state.keys() and all(torch.equal(a.state[k], b.state[k]) for k in a.state)
    # diffusers keys in a bare file (no config.json): the shape is read off the keys
    c = read_motion_adapter(adapter_dir / "diffusion_pytorch_model.safetensors", num_attention_heads=HEADS,
                            norm_num_groups=8)
    assert c.config == a.config and c.info == a.info
    # our original layout is the one diffusers' own single-file converter reads (it drops the tables)
    theirs = convert_animatediff_checkpoint_to_diffusers(load_file(str(original_file)))
    assert set(theirs) == {k for k in a.state if not k.endswith(PE)}
    assert original_to_diffusers(diffusers_to_original(a.state)).keys() == a.state.keys()


def test_saved_stack_is_a_diffusers_motion_adapter(tmp_path, unet):
    from diffusers import MotionAdapter

    stack = MotionStack(MotionConfig.for_unet(unet.config, num_attention_heads=4))
    randomise(stack, 3)
    theirs = MotionAdapter.from_pretrained(save_motion_adapter(stack, tmp_path / "mm"), local_files_only=True)
    ours = stack.state_dict()
    assert theirs.state_dict().keys() == ours.keys()
    assert all(torch.equal(v, ours[k]) for k, v in theirs.state_dict().items())


SD15 = {"block_out_channels": (320, 640, 1280, 1280), "layers_per_block": (2,) * 4,
        "num_attention_heads": (8,) * 4, "transformer_layers": (1,) * 4}


@pytest.mark.parametrize("mid, length, levels, version", [
    (False, 24, 4, "v1"), (True, 32, 4, "v2"), (False, 32, 4, "v3"), (False, 32, 3, "sdxl_beta"),
    (True, 24, 4, "custom"), (False, 16, 4, "custom")])
def test_version_detection(mid, length, levels, version):
    kw = {k: v[:levels] for k, v in SD15.items()}
    shapes = expected_shapes(MotionConfig(**kw, max_frames=length, mid_block=mid))
    for state, layout in ((shapes, "diffusers"), (diffusers_to_original(shapes), "original")):
        info = detect(state)
        assert (info.layout, info.version, info.max_frames, info.mid_block) == (layout, version, length, mid)


def test_diffusers_config_defaults_are_sd15_v2():
    config = config_from_diffusers({"motion_max_seq_length": 32})
    assert config == MotionConfig(**SD15, max_frames=32, mid_block=True)


def test_strict_keys_name_the_offenders(original_file, tmp_path):
    from safetensors.torch import load_file, save_file

    state = load_file(str(original_file))
    dropped = "up_blocks.1.motion_modules.1.temporal_transformer.proj_out.bias"
    shaped = "down_blocks.0.motion_modules.0.temporal_transformer.proj_in.weight"
    del state[dropped]
    state["down_blocks.0.motion_modules.0.temporal_transformer.extra.weight"] = torch.zeros(2)
    state[shaped] = torch.zeros(32, 31)
    bad = tmp_path / "bad.safetensors"
    save_file(state, str(bad))
    with pytest.raises(BundleCorrupt) as err:
        read_motion_adapter(bad, num_attention_heads=HEADS, norm_num_groups=8)
    message = str(err.value)
    for name in ("up_blocks.1.motion_modules.1.proj_out.bias", "down_blocks.0.motion_modules.0.extra.weight",
                 "down_blocks.0.motion_modules.0.proj_in.weight is [32, 31], expected [32, 32]"):
        assert name in message


def test_files_that_are_not_safetensors_adapters(tmp_path, adapter_dir):
    (tmp_path / "mm.ckpt").write_bytes(b"not read")
    with pytest.raises(PickleRefused):
        read_motion_adapter(tmp_path / "mm.ckpt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleCorrupt, match="config.json"):
        read_motion_adapter(tmp_path / "empty")
    from safetensors.torch import save_file

    save_file({"conv_in.weight": torch.zeros(4, 4, 3, 3)}, str(tmp_path / "unet.safetensors"))
    with pytest.raises(BundleCorrupt, match="none of its 1 tensors belongs to a motion adapter"):
        read_motion_adapter(tmp_path / "unet.safetensors")


@pytest.mark.parametrize("change, field", [({"block_out_channels": (32, 128)}, "block_out_channels"),
                                           ({"layers_per_block": (2, 2)}, "layers_per_block")])
def test_adapter_for_another_unet_is_refused(unet, tmp_path, change, field):
    tiny = {"block_out_channels": (32, 64), "layers_per_block": (1, 1), "num_attention_heads": (4, 4),
            "transformer_layers": (1, 1), "norm_num_groups": 8}
    config = MotionConfig(**{**tiny, **change})
    folder = save_motion_adapter(MotionStack(config), tmp_path / "other")
    with pytest.raises(BadParameter, match=f"motion_adapter.{field}") as err:
        load_motion_adapter(folder, unet)
    assert "(32, 64)" in str(err.value) or "(1, 1)" in str(err.value)  # the U-Net's own value is named


def test_frame_counts_beyond_the_positional_table(unet):
    """More frames than the table covers is a clear error, before any work: windows are the caller's job."""
    motion_unet = inflate(unet, MotionConfig.for_unet(unet.config, num_attention_heads=4, max_frames=8))
    try:
        for frames in (9, 0):
            with pytest.raises(BadParameter, match="num_frames") as err, motion_unet.video(frames):
                pass
            assert "1 to 8" in str(err.value) and "windows" in str(err.value)
        assert motion_unet.context is None
        motion_unet.set_video(8)
        assert motion_unet.context.num_frames == 8
        motion_unet.set_video(None)
    finally:
        motion_unet.remove()
    module = MotionModule(8, 2, 1, 4, max_frames=3)
    with pytest.raises(BadParameter, match="at most 3"):
        module(torch.zeros(4, 8, 2, 2), num_frames=4)
    with pytest.raises(BadParameter, match="divisor of the U-Net batch 5"):
        module(torch.zeros(5, 8, 2, 2), num_frames=2)
