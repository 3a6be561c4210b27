"""The shipped default detector agrees with the preset that trains it and with its card."""

import yaml

from medimg.tasks.detect.demo import DEMO_SEED
from medimg.tasks.detect.infer import load_model_folder
from medimg.tasks.detect.predict import DEFAULT_MODEL
from medimg.tasks.detect.train import DEFAULT_PRESET, DEFAULT_STAGES, STAGE2_PRESET


def test_default_model_matches_preset_and_card():
    cfg = yaml.safe_load((DEFAULT_MODEL / "config.yaml").read_text())
    # the shipped weights are the preset's last stage (stage 2, from stage 1's best weights)
    assert DEFAULT_STAGES == 2 and cfg["hard_per_kind"] and cfg["small_weight"] > 1
    assert cfg["train"]["max_steps"] == STAGE2_PRESET["max_steps"]
    assert cfg["train"]["batch_size"] == DEFAULT_PRESET["batch_size"]
    card = (DEFAULT_MODEL / "MODEL_CARD.md").read_text()
    assert f"{DEFAULT_PRESET['max_steps']} steps" in card
    assert f"{STAGE2_PRESET['max_steps']} more steps" in card
    assert f"seeds 0–{DEFAULT_PRESET['n_cases'] - 1}" in card
    # the demo's and the bench's scans (seeds >= 1000) were never simulated for training
    assert DEMO_SEED >= DEFAULT_PRESET["seed"] + DEFAULT_PRESET["n_cases"]
    assert (DEFAULT_MODEL / "model.safetensors").stat().st_size < 5 * 2**20
    model, _ = load_model_folder(DEFAULT_MODEL)
    assert not model.training
