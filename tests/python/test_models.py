"""The model zoo against torchvision, the oracle: same names, same logits, real weights."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from tlcore import _core

# Input sizes small enough to keep the file fast, large enough for every stride.
PARITY = {
    "resnet18": 64, "resnet34": 64, "resnet50": 64, "resnet101": 64, "resnet152": 64,
    "vgg11": 32, "vgg11_bn": 32, "vgg13": 32, "vgg13_bn": 32,
    "vgg16": 32, "vgg16_bn": 32, "vgg19": 32, "vgg19_bn": 32,
    "mobilenet_v2": 64, "mobilenet_v3_small": 64, "mobilenet_v3_large": 64,
    "efficientnet_b0": 64, "efficientnet_b1": 64, "efficientnet_b2": 64, "efficientnet_b3": 64,
}


def randomize_norms(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial BatchNorm statistics and affine parameters, so eval-mode BN is really tested."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_((torch.rand(n, generator=g) - 0.5) * 0.2)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_((torch.rand(n, generator=g) - 0.5) * 0.2)
                m.num_batches_tracked.fill_(int(torch.randint(1, 1000, (1,), generator=g)))


@pytest.mark.parametrize("arch", sorted(PARITY))
def test_parity_with_torchvision(arch):
    torch.manual_seed(0)
    # VGG's own re-initialisation of its 100M-weight classifier is slow and adds nothing here.
    ref = getattr(torchvision.models, arch)(**({"init_weights": False} if arch.startswith("vgg") else {}))
    randomize_norms(ref)
    ref.eval()
    state = ref.state_dict()

    model = _core.create_model(arch)
    ours = model.state_dict()
    assert list(ours) == list(state)  # same names, same order
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in state.items()}

    assert model.load_state_dict(state) == []
    model.eval()
    x = torch.randn(2, 3, PARITY[arch], PARITY[arch])
    with torch.no_grad():
        expected = ref(x)
        got = model(x)
    assert got.shape == expected.shape == (2, 1000)
    assert expected.abs().max() > 1e-3  # the comparison is not between two near-zero outputs
    assert (got - expected).abs().max().item() <= 1e-4
    assert model.embed(x).shape == (2, model.embedding_dim)


@pytest.mark.parametrize("arch,strip", [("resnet18", "fc"), ("mobilenet_v2", "classifier"),
                                        ("mobilenet_v3_small", "classifier.3"), ("vgg11", "classifier.6")])
def test_embedding_is_the_input_of_the_head(arch, strip):
    torch.manual_seed(1)
    ref = getattr(torchvision.models, arch)()
    randomize_norms(ref, 1)
    ref.eval()
    model = _core.create_model(arch)
    model.load_state_dict(ref.state_dict())
    model.eval()
    parent = ref
    *path, last = strip.split(".")
    for p in path:
        parent = getattr(parent, p) if not p.isdigit() else parent[int(p)]
    if last.isdigit():
        parent[int(last)] = nn.Identity()
    else:
        setattr(parent, last, nn.Identity())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (model.embed(x) - ref(x)).abs().max().item() <= 1e-4


class RefSimpleCNN(nn.Module):
    """The documented simple_cnn, written independently in PyTorch."""

    def __init__(self, in_channels, widths, num_classes, depths=None):
        super().__init__()
        convs, self.pool_after, c = [], [], in_channels
        for w, depth in zip(widths, depths or [1] * len(widths)):
            for d in range(depth):
                convs.append(nn.Sequential(nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w)))
                self.pool_after.append(d == depth - 1)
                c = w
        self.features = nn.Sequential(*convs)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(c, num_classes))

    def forward(self, x):
        for conv, pool in zip(self.features, self.pool_after):
            x = F.relu(conv(x))
            if pool and x.shape[2] >= 2 and x.shape[3] >= 2:
                x = F.max_pool2d(x, 2)
        return self.classifier(x.mean((2, 3)))


class RefMLP(nn.Module):
    def __init__(self, inputs, hidden, num_classes):
        super().__init__()
        sizes = [inputs, *hidden]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))
        self.classifier = nn.Linear(sizes[-1], num_classes)

    def forward(self, x):
        x = x.flatten(1)
        for layer in self.layers:
            x = F.relu(layer(x))
        return self.classifier(x)


@pytest.mark.parametrize("arch,ref,kwargs,shape", [
    ("simple_cnn", lambda: RefSimpleCNN(1, [8, 16, 32], 10), dict(in_channels=1, widths=[8, 16, 32]), (1, 28)),
    ("simple_cnn", lambda: RefSimpleCNN(3, [32, 64, 128], 10), {}, (3, 32)),
    ("simple_cnn", lambda: RefSimpleCNN(1, [8, 16, 32], 10, depths=[1, 2, 3]),
     dict(in_channels=1, widths=[8, 16, 32], depths=[1, 2, 3]), (1, 28)),
    ("mlp", lambda: RefMLP(28 * 28, [64, 32], 10), dict(in_channels=1, input_size=28, widths=[64, 32]), (1, 28)),
])
def test_baselines_match_a_pytorch_reference(arch, ref, kwargs, shape):
    torch.manual_seed(2)
    reference = ref()
    randomize_norms(reference, 2)
    reference.eval()
    model = _core.create_model(arch, 10, **kwargs)
    assert list(model.state_dict()) == list(reference.state_dict())
    model.load_state_dict(reference.state_dict())
    model.eval()
    x = torch.randn(4, shape[0], shape[1], shape[1])
    with torch.no_grad():
        assert (model(x) - reference(x)).abs().max().item() <= 1e-4


def test_registry_errors():
    with pytest.raises(ValueError, match="unknown model 'resnet51'.*resnet50"):
        _core.create_model("resnet51")
    with pytest.raises(ValueError, match="in_channels"):
        _core.create_model("resnet18", 10, in_channels=1)
    with pytest.raises(ValueError, match="2 depths for 3 blocks"):
        _core.create_model("simple_cnn", 10, depths=[1, 2])
    with pytest.raises(ValueError, match="depths"):
        _core.create_model("resnet18", 10, depths=[1])
    names = _core.model_names()
    assert set(PARITY) | {"simple_cnn", "mlp"} <= set(names)


def test_preprocess_matches_torchvision_weights():
    for arch, weights in [("resnet50", torchvision.models.ResNet50_Weights.IMAGENET1K_V1),
                          ("mobilenet_v2", torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1),
                          ("efficientnet_b1", torchvision.models.EfficientNet_B1_Weights.IMAGENET1K_V1),
                          ("efficientnet_b3", torchvision.models.EfficientNet_B3_Weights.IMAGENET1K_V1)]:
        t = weights.transforms()
        p = _core.create_model(arch).preprocess
        assert p["input_size"] == t.crop_size[0]
        assert p["resize_size"] == t.resize_size[0]
        assert p["mean"] == pytest.approx(list(t.mean))
        assert p["std"] == pytest.approx(list(t.std))
        assert p["interpolation"] == t.interpolation.value


# -- checkpoints ------------------------------------------------------------------------------

def _state(seed=3):
    torch.manual_seed(seed)
    ref = torchvision.models.mobilenet_v3_small(num_classes=7)
    randomize_norms(ref, seed)
    return ref.eval()


@pytest.mark.parametrize("zipfile", [True, False], ids=["zip", "legacy"])
def test_torch_save_file_loads_from_cpp(tmp_path, zipfile):
    ref = _state()
    path = tmp_path / "m.pth"
    torch.save(ref.state_dict(), path, _use_new_zipfile_serialization=zipfile)
    model = _core.create_model("mobilenet_v3_small", 7)
    assert model.load_checkpoint(str(path)) == []
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (model(x) - ref(x)).abs().max().item() <= 1e-4


@pytest.mark.parametrize("zipfile", [True, False], ids=["zip", "legacy"])
def test_read_state_dict_matches_torch_load(tmp_path, zipfile):
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    state = {
        "half": torch.randn(3, 5).half(), "bf16": torch.randn(4).bfloat16(),
        "long": torch.arange(5), "int": torch.arange(6, dtype=torch.int32), "bool": torch.rand(7) > 0.5,
        "u8": torch.arange(9, dtype=torch.uint8), "double": torch.randn(2, 2, dtype=torch.float64),
        "scalar": torch.tensor(3), "empty": torch.zeros(0, 4),
        "transposed": base.t(), "view": base[1:3, 2:5], "base": base,
    }
    path = tmp_path / "s.pth"
    torch.save(state, path, _use_new_zipfile_serialization=zipfile)
    got = _core.read_state_dict(str(path))
    expected = torch.load(path)
    assert list(got) == list(expected)
    for k, v in expected.items():
        assert got[k].dtype == v.dtype, k
        assert torch.equal(got[k], v), k


def test_training_checkpoint_with_state_dict_entry(tmp_path):
    ref = _state()
    path = tmp_path / "ckpt.pth"
    torch.save({"epoch": 3, "state_dict": ref.state_dict(), "args": {"lr": 0.1}}, path)
    model = _core.create_model("mobilenet_v3_small", 7)
    model.load_checkpoint(str(path))
    assert torch.equal(model.state_dict()["features.0.0.weight"], ref.state_dict()["features.0.0.weight"])


def test_own_checkpoint_reads_with_torch_load(tmp_path):
    model = _core.create_model("resnet18", 4)
    path = tmp_path / "own.pth"
    model.save(str(path))
    loaded = torch.load(path)
    mine = model.state_dict()
    assert list(loaded) == list(mine)
    assert all(torch.equal(loaded[k], mine[k]) for k in mine)
    tv = torchvision.models.resnet18(num_classes=4)
    tv.load_state_dict(loaded)  # strict, by torchvision itself


def test_checkpoint_errors(tmp_path):
    model = _core.create_model("resnet18", 5)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        model.load_checkpoint(str(tmp_path / "missing.pth"))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="junk.pth.*not a PyTorch checkpoint"):
        model.load_checkpoint(str(junk))
    other = tmp_path / "mnv3.pth"
    torch.save(_state().state_dict(), other)
    with pytest.raises(ValueError, match=r"mnv3.pth: does not fit resnet18: missing 122 .*unexpected"):
        model.load_checkpoint(str(other))
    tv = tmp_path / "r1000.pth"
    torch.save(torchvision.models.resnet18().state_dict(), tv)
    with pytest.raises(ValueError, match=r"fc.weight \(checkpoint \[1000, 512\], model \[5, 512\]\).*drop_head"):
        model.load_checkpoint(str(tv))
    fresh = model.state_dict()["fc.weight"].clone()
    assert sorted(model.load_checkpoint(str(tv), drop_head=True)) == ["fc.bias", "fc.weight"]
    assert torch.equal(model.state_dict()["fc.weight"], fresh)


# -- freezing ---------------------------------------------------------------------------------

def test_training_step_changes_only_the_unfrozen_part():
    torch.manual_seed(4)
    model = _core.create_model("resnet18", 3)
    model.freeze_backbone()
    assert model.trainable_parameter_count == 512 * 3 + 3
    model.unfreeze_last(1)
    assert [b for b in model.blocks if not model.is_frozen(b)] == ["layer4"]
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 0])
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    after = model.state_dict()
    for name, old in before.items():
        changed = not torch.equal(old, after[name])
        trainable = name.startswith(("layer4.", "fc."))
        if name.endswith("num_batches_tracked") or name.endswith(("running_mean", "running_var")):
            assert changed == name.startswith("layer4."), name
        else:
            assert changed == trainable, name


def test_heads_and_counts():
    model = _core.create_model("mobilenet_v2", 10)
    model.set_head(10, "mlp", 0.3, [256, 128])
    shapes = dict(model.parameter_shapes())
    assert shapes["classifier.0.weight"] == [256, 1280]
    assert shapes["classifier.6.weight"] == [10, 128]
    model.freeze_backbone()
    head = 1280 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10
    assert model.trainable_parameter_count == head
    assert model.parameter_count == 3504872 - 1281000 + head
    with pytest.raises(ValueError, match="head kind"):
        model.set_head(3, "svm")


# -- real weights -----------------------------------------------------------------------------

PHOTOS = {"dog.jpg": 249, "eagle.jpg": 21, "giraffe.jpg": 340}  # malamute, kite, zebra


def _photos(shared_dir):
    from PIL import Image
    from torchvision import transforms as T

    tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                    T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    return torch.stack([tf(Image.open(shared_dir / "data" / "photos" / n).convert("RGB")) for n in PHOTOS])


def test_pretrained_mobilenet_v2_predicts_the_photos(shared_dir):
    path = shared_dir / "weights" / "mobilenet_v2-imagenet-dequantized.pth"
    if not path.exists():
        pytest.skip(f"{path} not found")
    model = _core.create_model("mobilenet_v2")
    assert model.load_checkpoint(str(path)) == []
    model.eval()
    with torch.no_grad():
        pred = model(_photos(shared_dir)).argmax(1).tolist()
    assert pred == list(PHOTOS.values())


def test_torchscript_backbone(shared_dir):
    path = shared_dir / "weights" / "mobilenet_v2-imagenet-int8-torchscript.pt"
    if not path.exists():
        pytest.skip(f"{path} not found")
    x = _photos(shared_dir)
    try:
        model = _core.load_torchscript_backbone(str(path), 5)
        model.eval()
        with torch.no_grad():
            emb = model.embed(x)
    except RuntimeError as e:
        # Debian's torch 1.13 oneDNN quantized kernels reject this int8 file on some CPUs.
        if "primitive descriptor" not in str(e):
            raise
        pytest.skip(f"this torch build cannot run the int8 TorchScript file here: {str(e).splitlines()[0]}")
    assert model.embedding_dim == 1000
    with torch.no_grad():
        script = torch.jit.load(str(path)).eval()  # traced for one image at a time
        expected = torch.cat([script(x[i:i + 1]) for i in range(len(x))])
        assert model(x).shape == (3, 5)
    assert (emb - expected).abs().max().item() <= 1e-4
    # The int8 original calls the eagle a bald eagle (22); kite (21) is its runner-up.
    top = emb.topk(2, 1).indices.tolist()
    assert [top[0][0], top[2][0]] == [249, 340] and 21 in top[1]
    with pytest.raises(ValueError, match="TorchScript"):
        _core.read_state_dict(str(path))


# -- inference path ---------------------------------------------------------------------------

@pytest.mark.parametrize("arch,size", [("mobilenet_v2", 64), ("mobilenet_v3_small", 64),
                                       ("efficientnet_b0", 64), ("resnet50", 64), ("vgg11_bn", 224)])
def test_compiled_inference_matches_torchvision(arch, size):
    torch.manual_seed(6)
    kwargs = {"init_weights": False} if arch.startswith("vgg") else {}
    ref = getattr(torchvision.models, arch)(**kwargs)
    randomize_norms(ref, 6)
    ref.eval()
    model = _core.create_model(arch)
    model.load_state_dict(ref.state_dict())
    fast = model.compile_for_inference(size)
    assert fast.compiled
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected = ref(x)
    got = fast(x)
    assert not got.requires_grad
    # Folding BatchNorm into the convolutions reorders float arithmetic: close, not equal.
    assert (got - expected).abs().max().item() <= 1e-3 * max(1.0, expected.abs().max().item())
    embed = model.compile_for_inference(size, output="embedding")(x)
    assert embed.shape == (2, model.embedding_dim)


def test_compiled_inference_checks_its_input():
    fast = _core.create_model("simple_cnn", 4).compile_for_inference()
    assert fast.image_size == 32
    assert fast(torch.rand(2, 3, 32, 32)).shape == (2, 4)
    with pytest.raises(ValueError, match="compiled for float N x 3 x 32 x 32"):
        fast(torch.rand(2, 3, 64, 64))
    # oneDNN cannot pool VGG's 1x1 map of a 32 px image to 7x7: eager, still right.
    vgg = _core.create_model("vgg11", 3).compile_for_inference(32)
    assert not vgg.compiled and vgg(torch.rand(1, 3, 32, 32)).shape == (1, 3)
    with pytest.raises(ValueError, match="output must be"):
        _core.create_model("simple_cnn", 4).compile_for_inference(output="probabilities")


def test_float_torchscript_backbone_trains_and_freezes(tmp_path):
    torch.manual_seed(7)
    net = torchvision.models.resnet18(num_classes=16).eval()
    path = tmp_path / "r18.pt"
    torch.jit.script(net).save(str(path))
    model = _core.load_torchscript_backbone(str(path), 3, input_size=64)
    assert model.embedding_dim == 16
    state = model.state_dict()
    assert torch.equal(state["backbone.conv1.weight"], net.conv1.weight)
    assert "backbone.layer1.0.bn1.running_mean" in state and "head.weight" in state
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (model.embed(x) - net(x)).abs().max().item() <= 1e-4
    model.freeze_backbone()
    assert model.trainable_parameter_count == 16 * 3 + 3
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    F.cross_entropy(model(x), torch.tensor([0, 2])).backward()
    opt.step()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"head.weight", "head.bias"}  # frozen backbone: BN statistics untouched too
    with pytest.raises(FileNotFoundError):
        _core.load_torchscript_backbone(str(tmp_path / "none.pt"), 3)
    with pytest.raises(ValueError, match="not a loadable TorchScript"):
        (tmp_path / "bad.pt").write_bytes(b"junk")
        _core.load_torchscript_backbone(str(tmp_path / "bad.pt"), 3)


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0"])
def test_backbone_cut_into_prefix_and_tail(arch):
    torch.manual_seed(8)
    ref = getattr(torchvision.models, arch)()
    randomize_norms(ref, 8)
    ref.eval()
    model = _core.create_model(arch)
    model.load_state_dict(ref.state_dict())
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = ref(x)
        n = model.splittable_blocks
        assert n >= 5
        for k in (0, 1, n // 2, n):
            logits = model.classify(model.embed_from(model.features(x, k), k))
            assert (logits - expected).abs().max().item() <= 1e-4, k
    # The compiled prefix feeds the eager tail: a frozen stem/body with a trained end.
    k = n - 2
    prefix = model.compile_for_inference(64, output="features", blocks=k)
    with torch.no_grad():
        got = model.classify(model.embed_from(prefix(x), k))
    assert (got - expected).abs().max().item() <= 1e-3 * max(1.0, expected.abs().max().item())
    with pytest.raises(ValueError, match="cannot cut"):
        model.features(x, n + 1)
    with pytest.raises(ValueError, match=r"simple_cnn: cannot cut after 1 blocks \(0..0"):
        _core.create_model("simple_cnn", 3).embed_from(x, 1)


def test_batchnorm_eval_keeps_running_statistics_while_fine_tuning():
    torch.manual_seed(9)
    model = _core.create_model("resnet18", 4)
    model.unfreeze_last(2)
    model.batchnorm_eval = True
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    F.cross_entropy(model(torch.randn(4, 3, 64, 64)), torch.tensor([0, 1, 2, 3])).backward()
    opt.step()
    after = {k: v.clone() for k, v in model.state_dict().items()}
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert "layer4.1.bn2.weight" in changed and "layer3.0.conv1.weight" in changed
    assert not any(k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in changed)
    assert all(k.startswith(("layer3.", "layer4.", "fc.")) for k in changed)
    model.batchnorm_eval = False  # the default: unfrozen BatchNorm learns batch statistics again
    model.train()
    model(torch.randn(4, 3, 64, 64))
    assert not torch.equal(model.state_dict()["layer4.1.bn2.running_mean"], after["layer4.1.bn2.running_mean"])
    assert torch.equal(model.state_dict()["layer1.0.bn1.running_mean"], after["layer1.0.bn1.running_mean"])
