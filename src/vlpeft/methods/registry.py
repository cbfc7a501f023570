"""What the study says about each fine-tuning method, importable without torch: name, labels, look, group, figures.

The implementations (``vlpeft.methods.<name>``, torch) register under the same names with ``@register_method``,
which refuses a name described nowhere here; ``tests/contract/test_methods.py`` checks that both registries list the
same methods. The grid, the config checks, the figures, the report, the aggregation and the Snakemake rules read
this table, so a new method is one description here plus its implementation module.

The views below (:data:`METHODS`, :data:`PEFT_METHODS`, :data:`METHOD_LABELS`, ...) read the table whenever they are
used, so a method described later (a test's toy method) appears in them too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar, overload

EMBEDDING = "embedding"
LAYER = "layer"


@dataclass(frozen=True)
class MethodInfo:
    """One method's description.

    Attributes:
        name: Key in the config (``methods:``), the run ids and the tables; the implementation's registered name.
        label: Display name (figures, report).
        size_label: What the ``size`` knob means (axis label of the vs-size panels, legend title).
        marker: Matplotlib marker, the same in every figure.
        color: Fixed colour (hex), the same in every figure.
        composition: The paper's grouping: ``"embedding"`` (trainable vectors enter as extra inputs or keys/values),
            ``"layer"`` (trainable modules change what a layer computes), or None (full fine-tuning).
        curve_figure: Number of the paper's figure of this method's validation curves (Figs. 6-10), or None.
        table_sizes: Size knob values of the paper's Table II (``python -m vlpeft.methods.table``); for a method
            beyond the paper, those of config/beyond.yaml.
        peft: False for full fine-tuning, the reference: no size knob, no "+ classifier" variant (it trains the
            classifier anyway), every parameter trains.
        in_paper: False for a method the paper did not study (README, "Beyond the paper"): the claims report,
            whose findings are the paper's, says when a claim's rows include such a method.
    """

    name: str
    label: str
    size_label: str
    marker: str
    color: str
    composition: str | None = None
    curve_figure: int | None = None
    table_sizes: tuple[int, ...] = ()
    peft: bool = True
    in_paper: bool = True

    def __post_init__(self) -> None:
        if self.composition not in (EMBEDDING, LAYER, None):
            raise ValueError(f"method {self.name!r}: composition must be {EMBEDDING!r}, {LAYER!r} or None")

    @property
    def curve_stem(self) -> str | None:
        """File stem of the method's validation-curve figure (``fig<number>_<name>``), or None."""
        return None if self.curve_figure is None else f"fig{self.curve_figure}_{self.name}"


_DESCRIPTIONS: dict[str, MethodInfo] = {}


def describe(info: MethodInfo) -> MethodInfo:
    """Add a method's description (order of description = order of panels, legends and tables)."""
    if info.name in _DESCRIPTIONS:
        raise ValueError(f"method {info.name!r} described twice")
    _DESCRIPTIONS[info.name] = info
    return info


def info(name: str) -> MethodInfo:
    """The description of method ``name``; ValueError naming the known ones otherwise."""
    if name not in _DESCRIPTIONS:
        raise ValueError(f"unknown method {name!r}; expected one of {list(_DESCRIPTIONS)}")
    return _DESCRIPTIONS[name]


def descriptions() -> tuple[MethodInfo, ...]:
    """Every described method, in order."""
    return tuple(_DESCRIPTIONS.values())


def is_peft(name: str) -> bool:
    """Whether ``name`` is a parameter-efficient method (has a size knob), i.e. not full fine-tuning."""
    return info(name).peft


T = TypeVar("T")


class _LiveNames(Sequence[str]):
    """A tuple of method names recomputed from the table at every use."""

    def __init__(self, keep: Callable[[MethodInfo], bool]) -> None:
        self._keep = keep

    def _names(self) -> tuple[str, ...]:
        return tuple(m.name for m in _DESCRIPTIONS.values() if self._keep(m))

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> tuple[str, ...]: ...
    def __getitem__(self, i):
        return self._names()[i]

    def __len__(self) -> int:
        return len(self._names())

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __contains__(self, name: object) -> bool:
        return name in self._names()

    def __eq__(self, other: object) -> bool:
        return self._names() == (tuple(other) if isinstance(other, (list, tuple, _LiveNames)) else other)

    def __hash__(self) -> int:
        return hash(self._names())

    def __repr__(self) -> str:
        return repr(self._names())


class _LiveField(Mapping[str, T], Generic[T]):
    """Method name -> one field of its description, read from the table at every use."""

    def __init__(self, field: str) -> None:
        self._field = field

    def __getitem__(self, name: str) -> T:
        if name not in _DESCRIPTIONS:
            raise KeyError(name)
        return getattr(_DESCRIPTIONS[name], self._field)

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(_DESCRIPTIONS))

    def __len__(self) -> int:
        return len(_DESCRIPTIONS)

    def __repr__(self) -> str:
        return repr(dict(self))


#: Every method, in the order panels, legends and figure numbers use.
METHODS: Sequence[str] = _LiveNames(lambda m: True)
#: The parameter-efficient methods (everything but full fine-tuning).
PEFT_METHODS: Sequence[str] = _LiveNames(lambda m: m.peft)
#: Embedding composition: the trainable vectors enter as extra inputs (prompt) or extra keys/values (prefix).
EMBEDDING_COMPOSITION: Sequence[str] = _LiveNames(lambda m: m.composition == EMBEDDING)
#: Layer composition: the trainable modules change what a layer computes (LoRA, adapters).
LAYER_COMPOSITION: Sequence[str] = _LiveNames(lambda m: m.composition == LAYER)
METHOD_LABELS: Mapping[str, str] = _LiveField("label")
METHOD_COLORS: Mapping[str, str] = _LiveField("color")
METHOD_MARKERS: Mapping[str, str] = _LiveField("marker")
SIZE_LABELS: Mapping[str, str] = _LiveField("size_label")


# ---------------------------------------------------------------------------------------------------------------
# The study's methods. Colours come from the Okabe-Ito palette (colour-blind safe): the embedding-composition methods
# get the warm hues and the layer-composition methods the cool ones, so the paper's main grouping is visible at a
# glance; full fine-tuning is black because it is the reference every panel compares against. Table II's adapter
# sizes: COCO uses 16..128, VQAv2 16..512; the union is listed.
# ---------------------------------------------------------------------------------------------------------------
PROMPT = describe(
    MethodInfo(
        name="prompt",
        label="Prompt-tuning",
        size_label="prompt length $p$",
        marker="o",
        color="#e69f00",  # orange
        composition=EMBEDDING,
        curve_figure=6,
        table_sizes=(2, 4, 8, 16, 32, 64, 128),
    )
)
PREFIX = describe(
    MethodInfo(
        name="prefix",
        label="Prefix-tuning",
        size_label="prefix length $p$",
        marker="s",
        color="#d55e00",  # vermillion
        composition=EMBEDDING,
        curve_figure=7,
        table_sizes=(2, 4, 8, 16, 32, 64, 128),
    )
)
LORA = describe(
    MethodInfo(
        name="lora",
        label="LoRA",
        size_label="LoRA rank $r$",
        marker="^",
        color="#0072b2",  # blue
        composition=LAYER,
        curve_figure=8,
        table_sizes=(2, 4, 8, 16, 32),
    )
)
SERIAL_ADAPTER = describe(
    MethodInfo(
        name="serial_adapter",
        label="Serial adapter",
        size_label="adapter hidden size $l$",
        marker="D",
        color="#009e73",  # bluish green
        composition=LAYER,
        curve_figure=9,
        table_sizes=(16, 32, 64, 128, 256, 512),
    )
)
PARALLEL_ADAPTER = describe(
    MethodInfo(
        name="parallel_adapter",
        label="Parallel adapter",
        size_label="adapter hidden size $l$",
        marker="v",
        color="#cc79a7",  # reddish purple
        composition=LAYER,
        curve_figure=10,
        table_sizes=(16, 32, 64, 128, 256, 512),
    )
)
# Beyond the paper (README, "Beyond the paper"): both change what a layer computes, so both join the layer-composition
# group. DoRA shares LoRA's size axis (the rank); (IA)^3 has no size knob: its one size, 1, means "one vector per
# target". The two remaining Okabe-Ito hues would be yellow (unreadable on white) and sky blue; (IA)^3 takes Paul
# Tol's olive instead.
DORA = describe(
    MethodInfo(
        name="dora",
        label="DoRA",
        size_label="DoRA rank $r$",
        marker="<",
        color="#56b4e9",  # sky blue
        composition=LAYER,
        curve_figure=11,
        table_sizes=(2, 4, 8, 16, 32),
        in_paper=False,
    )
)
IA3 = describe(
    MethodInfo(
        name="ia3",
        label="(IA)³",
        size_label="(IA)³: one vector per target",
        marker="p",
        color="#999933",  # olive
        composition=LAYER,
        curve_figure=12,
        table_sizes=(1,),
        in_paper=False,
    )
)
FULL = describe(
    MethodInfo(name="full", label="Full fine-tuning", size_label="size", marker="*", color="#000000", peft=False)
)

#: Full fine-tuning's name: the reference run of every comparison, the baseline's and the pre-training's method.
REFERENCE = FULL.name
