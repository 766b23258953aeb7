import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from yolo.models.backbones import build_backbone
from yolo.models.weights import load_backbone_weights, load_matching_state, write_darknet_weights


def randomize(module: nn.Module, seed: int = 0) -> nn.Module:
    """Give BN running stats non-default values so that a load that skips them cannot pass."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                for t in (m.weight, m.bias, m.running_mean):
                    t.copy_(torch.randn(t.shape, generator=g))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return module


def conv_bn_pairs(model: nn.Module):
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    return list(zip(convs, bns))


def write_darknet_by_hand(model: nn.Module, path, version) -> None:
    """Independent writer of the darknet binary layout (see darknet's parser.c: save_weights / load_convolutional)."""
    major, minor, revision = version
    seen_int64 = major * 10 + minor >= 2 and major < 1000 and minor < 1000
    with open(path, "wb") as f:
        f.write(np.array([major, minor, revision], dtype="<i4").tobytes())
        f.write(np.array([123456], dtype="<i8" if seen_int64 else "<i4").tobytes())
        for conv, bn in conv_bn_pairs(model):
            for t in (bn.bias, bn.weight, bn.running_mean, bn.running_var, conv.weight):
                f.write(t.detach().numpy().astype("<f4").tobytes())


def leading_slice(full: torch.Tensor, shape) -> torch.Tensor:
    return full[tuple(slice(0, n) for n in shape)]


# --- darknet -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version, header_bytes", [((0, 2, 0), 20), ((0, 1, 0), 16)])
def test_darknet_file_loads_back_exactly(tmp_path, version, header_bytes):
    source = randomize(build_backbone("darknet53", 0.25))
    path = tmp_path / "darknet.weights"
    write_darknet_by_hand(source, path, version)
    num_floats = sum(conv.weight.numel() + 4 * bn.num_features for conv, bn in conv_bn_pairs(source))
    assert path.stat().st_size == header_bytes + 4 * num_floats

    target = build_backbone("darknet53", 0.25)
    load_backbone_weights(target, "darknet53", str(path))
    for key, value in source.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(target.state_dict()[key], value), key

    # our writer produces the same bytes apart from the images-seen counter
    ours = tmp_path / "ours.weights"
    write_darknet_weights(source, str(ours), version)
    assert ours.read_bytes()[header_bytes:] == path.read_bytes()[header_bytes:]
    assert ours.read_bytes()[:12] == path.read_bytes()[:12]


def test_full_darknet_file_initialises_slim_model_with_leading_slices(tmp_path):
    full = randomize(build_backbone("darknet53", 1.0))
    path = tmp_path / "darknet53.conv.74"
    write_darknet_by_hand(full, path, (0, 2, 0))
    with open(path, "ab") as f:  # trailing layers (as in a full yolov3.weights) are ignored
        f.write(np.zeros(1000, dtype="<f4").tobytes())
    slim = build_backbone("darknet53", 0.5)
    load_backbone_weights(slim, "darknet53", str(path))
    for (conv, bn), (full_conv, full_bn) in zip(conv_bn_pairs(slim), conv_bn_pairs(full)):
        assert torch.equal(conv.weight, leading_slice(full_conv.weight, conv.weight.shape))
        n = bn.num_features
        for name in ("weight", "bias", "running_mean", "running_var"):
            assert torch.equal(getattr(bn, name), getattr(full_bn, name)[:n])


def test_truncated_darknet_file_is_rejected(tmp_path):
    path = tmp_path / "cut.weights"
    write_darknet_by_hand(build_backbone("darknet53", 0.25), path, (0, 2, 0))
    path.write_bytes(path.read_bytes()[:-4])  # one float short
    with pytest.raises(ValueError, match=r"cut\.weights.*expected \d+.*found \d+"):
        load_backbone_weights(build_backbone("darknet53", 0.25), "darknet53", str(path))
    path.write_bytes(b"\x00" * 8)
    with pytest.raises(ValueError, match=r"cut\.weights.*header"):
        load_backbone_weights(build_backbone("darknet53", 0.25), "darknet53", str(path))


def test_darknet_file_needs_darknet_backbone(tmp_path):
    path = tmp_path / "d.weights"
    write_darknet_by_hand(build_backbone("darknet53", 0.25), path, (0, 2, 0))
    with pytest.raises(ValueError, match=r"d\.weights.*Darknet-53"):
        load_backbone_weights(build_backbone("resnet18", 0.25), "darknet53", str(path))


def test_missing_file(tmp_path):
    for name in ("darknet53", "resnet18"):
        with pytest.raises(FileNotFoundError, match="nowhere.pth"):
            load_backbone_weights(build_backbone(name, 0.25), name, str(tmp_path / "nowhere.pth"))


# --- torchvision state_dicts -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    model = randomize(torchvision.models.resnet18(weights=None), seed=1).eval()
    path = tmp_path_factory.mktemp("tv") / "resnet18.pth"
    torch.save(model.state_dict(), path)
    return model, str(path)


def test_torchvision_resnet18_loads_exactly(resnet18_file):
    reference, path = resnet18_file
    ours = build_backbone("resnet18", 1.0)
    load_backbone_weights(ours, "resnet18", path)
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        c3, c4, c5 = ours.eval()(x)
        r = reference
        expected_c4 = r.layer3(r.layer2(r.layer1(r.maxpool(r.relu(r.bn1(r.conv1(x)))))))
        expected_c5 = r.layer4(expected_c4)
    assert torch.equal(c4, expected_c4) and torch.equal(c5, expected_c5)


def test_torchvision_resnet18_initialises_half_width_with_leading_slices(resnet18_file):
    reference, path = resnet18_file
    ours = build_backbone("resnet18", 0.5)
    load_backbone_weights(ours, "resnet18", path)
    full = reference.state_dict()
    for key, value in ours.state_dict().items():
        assert torch.equal(value, leading_slice(full[key], value.shape)), key
    assert ours.conv1.weight.shape == (32, 3, 7, 7) and ours.layer4[1].conv2.weight.shape == (256, 256, 3, 3)


def test_torchvision_mobilenet_loads_exactly(tmp_path):
    reference = randomize(torchvision.models.mobilenet_v3_small(weights=None), seed=2).eval()
    path = tmp_path / "mnv3.pth"
    torch.save(reference.state_dict(), path)
    ours = build_backbone("mobilenet_v3_small", 1.0)
    load_backbone_weights(ours, "mobilenet_v3_small", str(path))
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(ours.eval()(x)[2], reference.features(x))


def test_wrong_architecture_is_rejected(tmp_path):
    path = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)
    # resnet50's layer1.0.conv1 is 1x1 where resnet18 needs 3x3; its extra conv3/bn3 are unexpected too
    with pytest.raises(ValueError, match=r"resnet50\.pth.*unexpected"):
        load_backbone_weights(build_backbone("resnet18"), "resnet18", str(path))
    # a smaller network cannot initialise a wider one
    small = tmp_path / "small.pth"
    torch.save(build_backbone("resnet18", 0.25).state_dict(), small)
    with pytest.raises(ValueError, match=r"small\.pth: conv1.weight: expected shape \(32, 3, 7, 7\).*found \(16"):
        load_backbone_weights(build_backbone("resnet18", 0.5), "resnet18", str(small))
    # keys of another backbone entirely
    with pytest.raises(ValueError, match=r"small\.pth.*missing"):
        load_backbone_weights(build_backbone("mobilenet_v3_small", 0.5), "mobilenet_v3_small", str(small))


def test_bad_torch_files_are_rejected(tmp_path, resnet18_file):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(ValueError, match=r"garbage\.pth.*not a readable"):
        load_backbone_weights(build_backbone("resnet18", 0.25), "resnet18", str(garbage))
    truncated = tmp_path / "truncated.pth"
    data = open(resnet18_file[1], "rb").read()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"truncated\.pth"):
        load_backbone_weights(build_backbone("resnet18", 0.25), "resnet18", str(truncated))
    not_a_dict = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], not_a_dict)
    with pytest.raises(ValueError, match=r"list\.pth.*expected a state_dict"):
        load_backbone_weights(build_backbone("resnet18", 0.25), "resnet18", str(not_a_dict))


# --- partial loading ---------------------------------------------------------------------------------------------


def tiny_detector(num_classes: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Conv2d(8, 3 * (5 + num_classes), 1))


def test_load_matching_state_skips_other_head_shapes():
    checkpoint = randomize(tiny_detector(80)).state_dict()
    checkpoint["old_extra.weight"] = torch.zeros(2)
    model = tiny_detector(20)
    head_before = model[2].weight.clone()
    loaded, skipped = load_matching_state(model, checkpoint)

    assert loaded == ["0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var",
                      "1.num_batches_tracked"]
    assert skipped == ["2.weight: shape (255, 8, 1, 1) in checkpoint vs (75, 8, 1, 1) in model",
                       "2.bias: shape (255,) in checkpoint vs (75,) in model",
                       "old_extra.weight: not in model"]
    for key in loaded:
        assert torch.equal(model.state_dict()[key], checkpoint[key])
    assert torch.equal(model[2].weight, head_before)


def test_load_matching_state_reports_tensors_missing_from_checkpoint():
    model = tiny_detector(20)
    checkpoint = {k: v for k, v in model.state_dict().items() if not k.startswith("2.")}
    loaded, skipped = load_matching_state(model, checkpoint)
    assert len(loaded) == 7
    assert skipped == ["2.weight: not in checkpoint, kept initial value", "2.bias: not in checkpoint, kept initial value"]
