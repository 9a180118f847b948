"""Model validation: every invalid input names its field and allowed range."""

import math

import pytest

from jaxqueue import scenarios
from jaxqueue.model import Model, ModelError

GOOD = dict(lambda_=(0.5, 0.5), theta=(0.1, 0.1), P=(300, 3000), D=(1000, 400), alpha=0.0174,
            beta=6.2e-5, gamma=45.45, C=256, B=16, c_p=0.1, c_d=0.2)


def test_paper_rates_by_hand():
    m = scenarios.load("paper-qwen8b")
    # tau = 0.0174 + 6.2e-5 * 256 = 0.033272 s; mu_p,1 = 256 / (300 * 0.033272) = 25.6472
    assert math.isclose(m.tau, 0.033272, rel_tol=1e-12)
    assert math.isclose(m.mu_p[0], 256 / (300 * 0.033272), rel_tol=1e-12)
    assert math.isclose(m.mu_m[1], 1 / (400 * 0.033272), rel_tol=1e-12)
    assert math.isclose(m.mu_s[0], (1 / 0.022) / 1000, rel_tol=1e-12)
    # kappa = gamma tau is class independent: mu_s / mu_m = kappa for each class
    assert all(math.isclose(s / mm, m.kappa, rel_tol=1e-12)
               for s, mm in zip(m.mu_s, m.mu_m, strict=True))
    assert list(m.w) == [0.1 * 300 + 0.2 * 1000, 0.1 * 3000 + 0.2 * 400]
    assert m.solo_efficient


@pytest.mark.parametrize(
    "change, field",
    [
        (dict(P=(0, 3000)), "P"),
        (dict(D=(1000, -1)), "D"),
        (dict(B=0), "B"),
        (dict(B=2.5), "B"),
        (dict(C=0), "C"),
        (dict(C=-3), "C"),
        (dict(lambda_=(-0.1, 0.5)), "lambda_"),
        (dict(theta=(0.1, -1)), "theta"),
        (dict(lambda_=(math.nan, 0.5)), "lambda_"),
        (dict(theta=(math.inf, 0.1)), "theta"),
        (dict(gamma=0), "gamma"),
        (dict(alpha=-1), "alpha"),
        (dict(c_p=math.inf), "c_p"),
        (dict(lambda_=(0.5,)), "class arrays have different lengths"),
        (dict(lambda_=(), theta=(), P=(), D=()), "classes is empty"),
    ],
)
def test_invalid_values_raise_naming_the_field(change, field):
    with pytest.raises(ModelError, match=field.replace("(", r"\(")):
        Model(**{**GOOD, **change})


def test_toml_unknown_field_and_missing_sections(tmp_path):
    good = scenarios.load("paper-qwen8b").to_dict()
    path = tmp_path / "s.toml"
    text = """name = "x"
[gpu]
alpha = 0.0174
beta = 6.2e-5
gamma = 45.45
chunk = 256
batch = 16
colour = 3
[pricing]
prefill = 0.1
decode = 0.2
[[classes]]
arrival_rate = 0.5
patience_rate = 0.1
prompt_tokens = 300
output_tokens = 1000
"""
    path.write_text(text)
    with pytest.raises(ModelError, match=r"s\.toml: unknown key gpu\.colour"):
        scenarios.load(path)
    path.write_text(text.replace("colour = 3\n", "").replace("batch = 16\n", "batch = 0\n"))
    with pytest.raises(ModelError, match=r"s\.toml: gpu\.batch = 0 is invalid: must be an integer"):
        scenarios.load(path)
    path.write_text(text.replace("colour = 3\n", ""))
    m = scenarios.load(path)
    assert m.num_classes == 1 and m.class_names == ("class-1",)
    assert Model.from_dict(good).to_dict() == good
    with pytest.raises(ModelError, match="neither a built-in name"):
        scenarios.load("no-such-scenario")


def test_builtin_scenarios():
    assert scenarios.load("dolly-8class").num_classes == 8
    assert scenarios.load("paper-qwen4b").tau == pytest.approx(0.0152 + 3.6e-5 * 256)


# A scenario file the paper's instance spells out; each case replaces one line.
SCENARIO = """name = "x"
[gpu]
alpha = 0.0174
beta = 6.2e-5
gamma = 45.45
chunk = 256
batch = 16
[pricing]
prefill = 0.1
decode = 0.2
[[classes]]
arrival_rate = 0.5
patience_rate = 0.1
prompt_tokens = 300
output_tokens = 1000
[[classes]]
name = "second"
arrival_rate = 0.5
patience_rate = 0.1
prompt_tokens = 3000
output_tokens = 400
"""


@pytest.mark.parametrize("old, new, message", [
    ("chunk = 256", "chunk = 2.5", r"gpu\.chunk = 2\.5 is invalid: must be an integer >= 1"),
    ("chunk = 256", "chunk = -512", r"gpu\.chunk = -512 is invalid: must be an integer >= 1"),
    ("batch = 16", "batch = 1.5", r"gpu\.batch = 1\.5 is invalid: must be an integer >= 1"),
    ("batch = 16", 'batch = "16"', r"gpu\.batch = '16' is invalid"),
    ("prompt_tokens = 300", 'prompt_tokens = "300"',
     r"classes\[0\]\.prompt_tokens = '300' is invalid: must be a number, not a string"),
    ("arrival_rate = 0.5\npatience_rate = 0.1\nprompt_tokens = 3000",
     "arrival_rate = -1\npatience_rate = 0.1\nprompt_tokens = 3000",
     r"classes\[1\]\.arrival_rate = -1 is invalid: must be a finite number >= 0"),
    ("gamma = 45.45", "gamma = 0", r"gpu\.gamma = 0 is invalid: must be a finite number > 0"),
    ("prefill = 0.1", "prefill = true", r"pricing\.prefill = True is invalid: must be a number"),
    ("alpha = 0.0174\nbeta = 6.2e-5", "alpha = 0\nbeta = 0",
     r"gpu\.alpha \+ gpu\.beta \* gpu\.chunk = 0\.0 is invalid"),
    ('name = "second"', "name = 3", r"classes\[1\]\.name = 3 is invalid: must be a non-empty"),
    ("output_tokens = 1000", "", r"missing key classes\[0\]\.output_tokens"),
])
def test_toml_errors_name_the_file_and_the_key(tmp_path, old, new, message):
    # The file's own spelling (classes[0].arrival_rate, gpu.chunk), never the model's symbols
    # (lambda_, C); strings and fractional chunks are errors, not silently converted.
    assert old in SCENARIO
    path = tmp_path / "cluster.toml"
    path.write_text(SCENARIO.replace(old, new, 1))
    with pytest.raises(ModelError, match=message) as err:
        scenarios.load(path)
    assert str(err.value).startswith(f"{path}: ")
    assert "lambda_" not in str(err.value) and "C =" not in str(err.value)


def test_python_construction_names_its_own_fields_and_refuses_strings():
    with pytest.raises(ModelError, match=r"^lambda_ = "):
        Model(**{**GOOD, "lambda_": (-1.0, 0.5)})
    with pytest.raises(ModelError, match=r"^P = .*not strings"):
        Model(**{**GOOD, "P": ("300", 3000)})
    with pytest.raises(ModelError, match=r"^alpha = .*not strings"):
        Model(**{**GOOD, "alpha": "0.0174"})


@pytest.mark.parametrize("name", scenarios.names())
def test_every_scenario_written_as_a_file_reads_back_the_same(name, tmp_path):
    from jaxqueue.patience import Patience
    from jaxqueue.service import Service

    model = scenarios.load(name)
    path = tmp_path / "s.toml"
    path.write_text(scenarios.to_toml(model, header="a header\nof two lines"))
    assert scenarios.load(path).to_dict() == model.to_dict()
    # the optional tables too
    k = model.num_classes
    model = model.replace(patience=Patience.make("lognormal", k, cv=[0.5 + i for i in range(k)]),
                          service=Service.make(k, prefill={"law": "erlang", "phases": 3}))
    path.write_text(scenarios.to_toml(model))
    assert scenarios.load(path).to_dict() == model.to_dict()


def test_set_changes_exactly_the_named_numbers():
    base = scenarios.load("paper-qwen8b")
    new = scenarios.changed(base, ["gamma=10", "batch=8", "arrival_rate=0.6,0.4",
                                   "patience_rate=0.2", "prefill=0.3", "name=g10"])
    want = base.to_dict()
    want["gpu"].update(gamma=10.0, batch=8)
    want["pricing"]["prefill"] = 0.3
    for row, rate in zip(want["classes"], (0.6, 0.4), strict=True):
        row.update(arrival_rate=rate, patience_rate=0.2)
    want["name"] = "g10"
    assert new.to_dict() == want


@pytest.mark.parametrize("setting, message", [
    ("gamma=0", "gpu.gamma = 0.0 is invalid: must be a finite number > 0"),
    ("batch=2.5", "gpu.batch = 2.5 is invalid: must be an integer >= 1"),
    ("gamma=fast", "--set gamma='fast' is invalid: must be a number"),
    ("arrival_rate=1,2,3", "give one value, or one per class \\(2\\)"),
    ("speed=2", "KEY one of alpha, beta"),
    ("gamma", "must be KEY=VALUE"),
])
def test_set_refuses_bad_settings_by_name(setting, message):
    with pytest.raises(ModelError, match=message):
        scenarios.changed(scenarios.load("paper-qwen8b"), [setting])
