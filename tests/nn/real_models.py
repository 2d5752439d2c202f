"""Small real models for the drop-in tests: transformers' BERT, GPT-2, ViT and a Llama-style
decoder from tiny configs (random init, no download) and a torchvision-style CNN, each with a
fixed batch and its loss."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from torch import nn

# transformers is a test requirement (pip install -e .[test]): without it these tests fail.
needs_transformers = pytest.mark.transformers


@dataclass
class RealModel:
    model: nn.Module
    inputs: dict
    loss: Callable[[nn.Module, dict], torch.Tensor]
    output: Callable[[nn.Module, dict], torch.Tensor]
    # Module types whose weights count towards the conversion coverage.
    layer_types: tuple
    tied: tuple = ()  # (head, embedding) parameter names of a tied weight
    # Builds another model of the same architecture (random init), e.g. under torch.device.
    make: Callable[[], nn.Module] | None = None


def _quiet_transformers():
    import transformers

    transformers.logging.set_verbosity_error()
    return transformers


def bert() -> RealModel:
    transformers = _quiet_transformers()
    config = transformers.BertConfig(
        vocab_size=97,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=16,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    make = lambda: transformers.BertForMaskedLM(config)  # noqa: E731
    ids = torch.randint(0, 97, (2, 8))
    return RealModel(
        make(),
        {"input_ids": ids, "labels": ids},
        lambda m, batch: m(**batch).loss,
        lambda m, batch: m(input_ids=batch["input_ids"]).logits,
        (nn.Linear,),
        ("cls.predictions.decoder.weight", "bert.embeddings.word_embeddings.weight"),
        make,
    )


def gpt2() -> RealModel:
    transformers = _quiet_transformers()
    config = transformers.GPT2Config(
        vocab_size=97,
        n_positions=16,
        n_embd=32,
        n_layer=2,
        n_head=2,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
    )
    make = lambda: transformers.GPT2LMHeadModel(config)  # noqa: E731
    ids = torch.randint(0, 97, (2, 8))
    conv1d = transformers.pytorch_utils.Conv1D
    return RealModel(
        make(),
        {"input_ids": ids, "labels": ids},
        lambda m, batch: m(**batch).loss,
        lambda m, batch: m(input_ids=batch["input_ids"]).logits,
        (nn.Linear, conv1d),
        ("lm_head.weight", "transformer.wte.weight"),
        make,
    )


def llama() -> RealModel:
    """A Llama-style decoder (RMSNorm, rotary positions, grouped-query attention, SwiGLU) with
    its own output head: kernel layers everywhere but the token embedding, a maskable weight."""
    transformers = _quiet_transformers()
    config = transformers.LlamaConfig(
        vocab_size=97,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=16,
        tie_word_embeddings=False,
    )
    make = lambda: transformers.LlamaForCausalLM(config)  # noqa: E731
    ids = torch.randint(0, 97, (2, 8))
    return RealModel(
        make(),
        {"input_ids": ids, "labels": ids},
        lambda m, batch: m(**batch).loss,
        lambda m, batch: m(input_ids=batch["input_ids"]).logits,
        (nn.Linear, nn.Embedding),
        make=make,
    )


def vit() -> RealModel:
    transformers = _quiet_transformers()
    config = transformers.ViTConfig(
        image_size=16,
        patch_size=4,
        num_channels=3,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=5,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    model = transformers.ViTForImageClassification(config)
    images, labels = torch.randn(2, 3, 16, 16), torch.tensor([1, 3])
    return RealModel(
        model,
        {"pixel_values": images, "labels": labels},
        lambda m, batch: m(**batch).loss,
        lambda m, batch: m(pixel_values=batch["pixel_values"]).logits,
        (nn.Linear, nn.Conv2d),
    )


class SmallCNN(nn.Module):
    """torchvision style: conv-bn-relu blocks, a strided conv, global pooling, a linear head."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=False),
            nn.BatchNorm2d(8),
            nn.ReLU(inplace=True),
            nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(inplace=True),
            nn.Conv2d(16, 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(inplace=True),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


def cnn() -> RealModel:
    model = SmallCNN()
    # One scale for every layer, so a global magnitude ranking leaves each layer some weights.
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(module.weight, std=0.1)
    images, labels = torch.randn(4, 3, 12, 12), torch.tensor([0, 1, 2, 4])
    cross_entropy = nn.functional.cross_entropy
    return RealModel(
        model,
        {"images": images, "labels": labels},
        lambda m, batch: cross_entropy(m(batch["images"]), batch["labels"]),
        lambda m, batch: m(batch["images"]),
        (nn.Linear, nn.Conv2d),
    )


BUILDERS = [
    pytest.param(bert, id="bert", marks=needs_transformers),
    pytest.param(gpt2, id="gpt2", marks=needs_transformers),
    pytest.param(vit, id="vit", marks=needs_transformers),
    pytest.param(cnn, id="cnn"),
]
