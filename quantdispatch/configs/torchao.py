"""torchao: a serialized ``AOBaseConfig`` under ``quant_type: {"default": …}``."""

from __future__ import annotations

from typing import ClassVar

import attrs

from ..jsonvalue import EMPTY_OBJECT, JsonObject
from .base import AbstractQuantConfig

__all__ = ["Torchao", "TorchaoType"]


@attrs.frozen(kw_only=True)
class TorchaoType:
    """torchao's serialized config (``torchao.core.config.config_to_dict``).

    Attributes:
        name: The config class (``_type``): ``Int4WeightOnlyConfig``,
            ``Float8DynamicActivationFloat8WeightConfig`` …
        version: Its serialization version (``_version``).
        data: Its arguments (``_data``), kept as written.
    """

    name: str
    version: int = 1
    data: JsonObject = EMPTY_OBJECT


@attrs.frozen(kw_only=True)
class Torchao(AbstractQuantConfig):
    """``quant_method: "torchao"``.

    Attributes:
        quant_type: The torchao config (``{"default": {"_type": …, "_version": …, "_data": …}}``
            on disk; Transformers 5 refuses the 4.x string form such as ``"int4_weight_only"``).
        modules_to_not_convert: Modules left in full precision.
        include_input_output_embeddings: Quantize the embeddings too.
        untie_embedding_weights: Untie input and output embeddings before quantizing.
    """

    method: ClassVar[str] = "torchao"

    quant_type: TorchaoType
    modules_to_not_convert: tuple[str, ...] | None = None
    include_input_output_embeddings: bool = False
    untie_embedding_weights: bool = False
