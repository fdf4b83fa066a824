"""Training options are declared once (C++ FitOptions' table): Learner.fit, the command
line and the recipe a model file records are all built from that one list."""
import json
import subprocess
import sys

import pytest

import tlcore

# The options the CLI sets through its recipe flags (--epochs, --lr, --seed, ...) or leaves to
# the Learner; every other option gets a flag of its own.
RECIPE_OWNED = {"epochs", "lr", "phase", "seed", "device", "amp", "checkpoint", "epoch_offset"}


@pytest.fixture(scope="module")
def data(fashion_data):
    return fashion_data(3, batch_size=16)


def test_fit_takes_the_table_and_records_it(data, tmp_path):
    learner = tlcore.Learner("simple_cnn", data, verbose=False)
    learner.fit(1, lr=2e-3, optimizer="sgd", nesterov=True, label_smoothing=0.1, class_weights="balanced")
    recipe = json.loads(tlcore.load(learner.save(tmp_path / "m.tlc")).spec.recipe)
    assert len(recipe) == 1
    names = {name for name, _, _ in tlcore.fit_options()}
    assert names <= set(recipe[0])  # every option, with the value the trainer ran with
    assert (recipe[0]["optimizer"], recipe[0]["nesterov"], recipe[0]["lr"]) == ("sgd", True, 2e-3)
    assert recipe[0]["label_smoothing"] == 0.1 and recipe[0]["epochs"] == 1
    assert recipe[0]["class_weights"] == pytest.approx([1.0] * 10)  # balanced on a balanced subset


def test_fit_refuses_unknown_options_and_learner_settings(data):
    learner = tlcore.Learner("simple_cnn", data, verbose=False)
    with pytest.raises(ValueError, match="unknown training option 'learning_rate'.*label_smoothing"):
        learner.fit(1, learning_rate=0.1)
    with pytest.raises(ValueError, match="training option 'patience' takes int"):
        learner.fit(1, patience=1.5)
    with pytest.raises(ValueError, match="amp is set on the Learner"):
        learner.fit(1, amp="bf16")


def test_every_option_has_a_cli_flag():
    out = subprocess.run([sys.executable, "-m", "tlcore.cli", "train", "--help"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for name, kind, _ in tlcore.fit_options():
        if name not in RECIPE_OWNED:
            flag = "--" + name.replace("_", "-")
            assert flag in out.stdout, flag
            if kind == "bool":
                assert "--no-" + name.replace("_", "-") in out.stdout


def test_cli_flags_reach_the_trainer(tmp_path):
    try:
        tlcore.fashion_mnist(train=True)
    except FileNotFoundError as e:
        pytest.skip(str(e))
    from tlcore.cli import main

    out = tmp_path / "runs"
    assert main(["train", "--limit", "40", "--epochs", "1", "--batch-size", "16", "--out", str(out),
                 "--optimizer", "adamw", "--weight-decay", "0.05", "--label-smoothing", "0.2",
                 "--no-compile-frozen", "--class-weights", ",".join(["1"] * 10)]) == 0
    model = next(out.glob("*.tlc"))
    recipe = json.loads(tlcore.load(model).spec.recipe)[0]
    assert (recipe["optimizer"], recipe["weight_decay"], recipe["label_smoothing"]) == ("adamw", 0.05, 0.2)
    assert recipe["compile_frozen"] is False and recipe["class_weights"] == [1.0] * 10
    assert recipe["schedule"] == "cosine"  # the from-scratch recipe's default, not overridden
