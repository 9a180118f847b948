"""Built-in scenarios: the paper's instances and calibrations, in one place.

Sources (Lin, Han, Ding & Zhang, arXiv 2602.02987 v1):
- Sec. 6.1 calibration on 4x A100-40GB with vLLM 0.11.0:
  Qwen-8B ``tau = 0.0174 + 6.2e-5 C`` (R^2 0.998), gamma = 45.45 tok/s;
  Qwen-4B ``tau = 0.0152 + 3.6e-5 C`` (R^2 0.997), gamma = 52.63 tok/s.
- Sec. 6.2 convergence instance: B = 16, C = 256, two classes (decode-heavy P=300, D=1000;
  prefill-heavy P=3000, D=400), lambda = 0.5 per GPU each, theta = 0.1, c_p = 0.1, c_d = 0.2.
- EC 14, Table 1: Databricks Dolly-15k category means (prompt P / output D tokens).
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from .model import Model, ModelError

__all__ = ["CALIBRATIONS", "SCENARIOS", "DOLLY_15K", "changed", "load", "names", "to_toml",
           "toml_value"]

#: Iteration-time calibrations of Sec. 6.1: (alpha seconds, beta seconds/token, gamma tokens/s).
#: gamma is ``1/tau_solo`` with the measured solo iteration time (0.022 s and 0.019 s), which the
#: paper prints rounded as 45.45 and 52.63 tok/s; the paper's LP values (docs/model.md Sec. 8:
#: bundled R* = 297.716, separate 298.598) are reproduced with 1/0.022, not with 45.45.
CALIBRATIONS = {
    "qwen-8b": dict(alpha=0.0174, beta=6.2e-5, gamma=1 / 0.022),
    "qwen-4b": dict(alpha=0.0152, beta=3.6e-5, gamma=1 / 0.019),
}

#: Dolly-15k categories (EC 14, Table 1): name -> (mean prompt tokens, mean output tokens).
DOLLY_15K = {
    "brainstorming": (61, 331),
    "classification": (123, 142),
    "closed-qa": (992, 182),
    "creative-writing": (89, 915),
    "general-qa": (69, 572),
    "information-extraction": (1139, 273),
    "open-qa": (45, 293),
    "summarization": (1177, 436),
}

_PAPER_SHAPE = dict(C=256, B=16, c_p=0.1, c_d=0.2)


def _paper(name: str, calibration: str) -> Model:
    return Model(
        name=name,
        class_names=("decode-heavy", "prefill-heavy"),
        lambda_=(0.5, 0.5),
        theta=(0.1, 0.1),
        P=(300, 3000),
        D=(1000, 400),
        **CALIBRATIONS[calibration],
        **_PAPER_SHAPE,
    )


def _dolly() -> Model:
    names_ = tuple(DOLLY_15K)
    return Model(
        name="dolly-8class",
        class_names=names_,
        lambda_=[0.25] * len(names_),
        theta=[0.1] * len(names_),
        P=[DOLLY_15K[k][0] for k in names_],
        D=[DOLLY_15K[k][1] for k in names_],
        **CALIBRATIONS["qwen-8b"],
        **_PAPER_SHAPE,
    )


SCENARIOS = {
    "paper-qwen8b": lambda: _paper("paper-qwen8b", "qwen-8b"),
    "paper-qwen4b": lambda: _paper("paper-qwen4b", "qwen-4b"),
    "dolly-8class": _dolly,
}


def names() -> list[str]:
    """Names of the built-in scenarios."""
    return sorted(SCENARIOS)


def load(spec: str | Path) -> Model:
    """A built-in scenario by name, or a scenario TOML file by path.

    Raises:
        ModelError: unknown name, unreadable file, or invalid contents (the message names the
            field and its allowed range).
    """
    key = str(spec)
    if key in SCENARIOS:
        return SCENARIOS[key]()
    path = Path(spec)
    if not path.exists():
        raise ModelError(
            f"scenario {key!r} is neither a built-in name ({', '.join(names())}) nor a file"
        )
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ModelError(f"scenario file {key}: cannot be read as TOML: {err}") from None
    return Model.from_dict(data, source=str(path))


#: What ``changed`` may set: each key's place in the scenario file.
SETTABLE = {"alpha": "gpu", "beta": "gpu", "gamma": "gpu", "chunk": "gpu", "batch": "gpu",
            "prefill": "pricing", "decode": "pricing", "arrival_rate": "classes",
            "patience_rate": "classes", "prompt_tokens": "classes", "output_tokens": "classes",
            "name": ""}


def _number(text: str, key: str) -> int | float:
    try:
        value = float(text)
    except ValueError:
        raise ModelError(f"--set {key}={text!r} is invalid: must be a number") from None
    return int(value) if key in ("chunk", "batch") and value.is_integer() else value


def changed(model: Model, settings: list[str]) -> Model:
    """``model`` with some of its file's numbers replaced, each setting ``KEY=VALUE``: a key of
    ``[gpu]`` (``alpha``, ``beta``, ``gamma``, ``chunk``, ``batch``) or ``[pricing]``
    (``prefill``, ``decode``), a per-class key (``arrival_rate``, ``patience_rate``,
    ``prompt_tokens``, ``output_tokens``: one value for every class, or one per class separated
    by commas) or ``name``. The result is checked as a scenario file is, and an error names the
    setting.
    """
    data = model.to_dict()
    for setting in settings:
        key, sep, text = setting.partition("=")
        key = key.strip()
        if not sep or key not in SETTABLE:
            raise ModelError(f"--set {setting!r} is invalid: must be KEY=VALUE with KEY one of "
                             f"{', '.join(SETTABLE)}")
        place = SETTABLE[key]
        if key == "name":
            data["name"] = text
        elif place == "classes":
            values = [_number(v, key) for v in text.split(",")]
            if len(values) not in (1, len(data["classes"])):
                raise ModelError(f"--set {setting!r} is invalid: give one value, or one per "
                                 f"class ({len(data['classes'])})")
            for row, v in zip(data["classes"], values * len(data["classes"]) if len(values) == 1
                              else values, strict=False):
                row[key] = v
        else:
            data[place][key] = _number(text, key)
    return Model.from_dict(data, source="--set")


def toml_value(value) -> str:
    """``value`` (a dict of strings, numbers and lists of them) as a TOML value (inline)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string
    return repr(float(value)) if isinstance(value, float) else repr(value)


def to_toml(model: Model, header: str = "") -> str:
    """``model`` as a scenario file (the layout :func:`load` reads), ``header`` as comments."""
    d = model.to_dict()
    lines = [f"# {line}" for line in header.splitlines()]
    lines += [f"name = {toml_value(d['name'])}", "", "[gpu]"]
    lines += [f"{k} = {toml_value(v)}" for k, v in d["gpu"].items()]
    lines += ["", "[pricing]"] + [f"{k} = {toml_value(v)}" for k, v in d["pricing"].items()]
    for row in d["classes"]:
        lines += ["", "[[classes]]"] + [f"{k} = {toml_value(v)}" for k, v in row.items()]
    for table in ("patience", "service"):
        if table in d:
            lines += ["", f"[{table}]"] + [f"{k} = {toml_value(v)}" for k, v in d[table].items()]
    return "\n".join(lines) + "\n"
