"""Every model builds and runs; the text models ignore padding exactly and take a batch of one."""

from __future__ import annotations

import logging
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision

from torchguide.errors import ConfigError
from torchguide.registry import MODELS

IMAGE = ["my_neural_net", "my_crazy_neural_net", "my_custom_neural_net", "my_classification_net", "simple_cnn"]
TEXT = ["bilstm", "gru", "transformer_encoder", "embedding_bag"]


@pytest.mark.parametrize("name", IMAGE)
def test_image_models(name: str) -> None:
    model = MODELS.build(name, num_classes=10, **({"in_channels": 1} if name == "simple_cnn" else
                                                 {"in_features": 64}))
    out = model(torch.randn(5, 1, 8, 8))
    assert out.shape == (5, 10)
    if name == "my_classification_net":
        assert torch.allclose(out.exp().sum(1), torch.ones(5))


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small"])
def test_torchvision_models_build_without_download(name: str, tmp_path) -> None:
    model = MODELS.build(name, num_classes=3)
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 3)
    torch.save(model.state_dict(), tmp_path / "w.pth")
    again = MODELS.build(name, num_classes=5, weights=str(tmp_path / "w.pth"))  # new head, rest loaded
    assert again(torch.randn(1, 3, 64, 64)).shape == (1, 5)


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch.hub cache, and no network: a download attempt fails as it does offline."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(url: str, *args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return tmp_path / "torch" / "hub" / "checkpoints"


def cache_fake_weights(cache: Path, arch: str) -> torch.nn.Module:
    """A randomly initialised 1000-class model saved under the file name torchvision downloads to."""
    torch.manual_seed(1)
    model = torchvision.models.get_model(arch, weights=None)
    cache.mkdir(parents=True, exist_ok=True)
    url = torchvision.models.get_model_weights(arch).DEFAULT.url
    torch.save(model.state_dict(), cache / url.rsplit("/", 1)[1])
    return model


@pytest.mark.parametrize("weights", ["DEFAULT", "IMAGENET1K_V1", "SqueezeNet1_1_Weights.IMAGENET1K_V1"])
def test_torchvision_weights_by_name_load_from_the_cache_with_a_new_head(
        torch_home: Path, weights: str, caplog: pytest.LogCaptureFixture) -> None:
    pretrained = cache_fake_weights(torch_home, "squeezenet1_1")
    with caplog.at_level(logging.WARNING, logger="torchguide"):
        model = MODELS.build("squeezenet1_1", num_classes=3, weights=weights)
    assert torch.equal(model.features[0].weight, pretrained.features[0].weight)  # the backbone: loaded
    assert model.classifier[1].weight.shape[0] == 3  # the head: new, for 3 classes
    assert ("classifier.1.weight, classifier.1.bias initialised afresh, shape (3, 512, 1, 1) here, "
            "(1000, 512, 1, 1) in the weights (a new classifier head); the other 50 tensors loaded") in caplog.text


def test_torchvision_weights_offline_and_not_cached_name_the_file_and_folder(torch_home: Path) -> None:
    with pytest.raises(ConfigError) as info:
        MODELS.build("squeezenet1_1", num_classes=3, weights="DEFAULT")
    (line,) = info.value.lines()
    assert line.startswith("config error: model.weights: SqueezeNet1_1_Weights.IMAGENET1K_V1 is not in torch's "
                           "cache and could not be downloaded (<urlopen error [Errno -2] Name or service not known>)")
    assert line.endswith(f"put squeezenet1_1-b8a52dc0.pth (from https://download.pytorch.org/models/"
                         f"squeezenet1_1-b8a52dc0.pth) in {torch_home}")


def test_weights_that_fit_nothing_are_refused(tmp_path: Path) -> None:
    torch.save({"other.weight": torch.zeros(2)}, tmp_path / "w.pt")
    with pytest.raises(ConfigError, match="no tensor of .*w.pt fits this model"):
        MODELS.build("squeezenet1_1", num_classes=3, weights=str(tmp_path / "w.pt"))


def text_model(name: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return MODELS.build(name, vocab_size=50, num_classes=3, **kwargs).eval()


@pytest.mark.parametrize("name, kwargs", [(n, {}) for n in TEXT] + [("bilstm", {"pack": True}),
                                                                    ("gru", {"pack": True})])
def test_padding_does_not_change_the_output(name: str, kwargs: dict) -> None:
    model = text_model(name, **kwargs)
    seq = torch.randint(2, 50, (7,))
    alone = model(seq[None], torch.tensor([7]))  # a batch of one, no padding
    padded = torch.zeros(2, 12, dtype=torch.long)
    padded[0, :7] = seq
    padded[1] = torch.randint(2, 50, (12,))
    together = model(padded, torch.tensor([7, 12]))
    assert alone.shape == (1, 3)
    torch.testing.assert_close(together[:1], alone, atol=1e-5, rtol=1e-5)


def test_packed_and_unpacked_bilstm_agree() -> None:
    packed, plain = text_model("bilstm", pack=True), text_model("bilstm", pack=False)
    state = packed.state_dict()
    # the same weights: the bidirectional LSTM's reverse direction is the plain model's backward RNN
    mapped = {k: v for k, v in state.items() if not k.startswith("rnn.")}
    for key, value in state.items():
        if key.startswith("rnn."):
            direction = "backward_rnn" if key.endswith("_reverse") else "forward_rnn"
            mapped[f"{direction}.{key[4:].removesuffix('_reverse')}"] = value
    plain.load_state_dict(mapped)
    tokens = torch.randint(1, 50, (3, 9))
    lengths = torch.tensor([9, 4, 1])
    tokens[1, 4:] = 0
    tokens[2, 1:] = 0
    torch.testing.assert_close(plain(tokens, lengths), packed(tokens, lengths), atol=1e-5, rtol=1e-5)
