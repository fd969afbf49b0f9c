import pytest

from anogan.config import config_to_dict, load_config, override_config, save_config
from anogan.errors import ConfigError


def test_unknown_key_names_the_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("wgan:\n  n_critics: 5\n")
    with pytest.raises(ConfigError, match=r"'wgan\.n_critics'"):
        load_config(path)


def test_unknown_override_names_the_key():
    with pytest.raises(ConfigError, match=r"'scoring\.kapa'"):
        load_config(None, ["scoring.kapa=2"])


def test_wrong_type_names_key_and_value():
    with pytest.raises(ConfigError, match=r"'wgan\.iterations'.*int.*'many'"):
        load_config(None, ["wgan.iterations=many"])


def test_overrides_apply_and_the_resolved_config_round_trips(tmp_path):
    config = load_config("configs/demo.yaml", ["wgan.lr=2e-4", "model.channels=[8,16,32,64]"])
    assert config.wgan.lr == pytest.approx(2e-4)
    assert config.model.channels == (8, 16, 32, 64)
    saved = save_config(config, tmp_path / "resolved.yaml")
    assert config_to_dict(load_config(saved)) == config_to_dict(config)


@pytest.mark.parametrize("name", ["demo", "brain-mri", "paper"])
def test_shipped_configs_load(name):
    load_config(f"configs/{name}.yaml")


def test_override_config_changes_only_the_allowed_sections():
    config = load_config("configs/brain-mri.yaml")
    changed = override_config(
        config, ["scoring.refine_steps=5", "scoring.flip=false"], ("scoring",)
    )
    assert changed.scoring.refine_steps == 5 and changed.scoring.flip is False
    assert changed.wgan == config.wgan and config.scoring.refine_steps == 20

    with pytest.raises(ConfigError, match=r"'wgan.lr=1'.*only scoring\.\*"):
        override_config(config, ["wgan.lr=1"], ("scoring",))
    with pytest.raises(ConfigError, match=r"scoring\.refine_steps"):
        override_config(config, ["scoring.refine_steps=many"], ("scoring",))


def test_luminance_residual_on_unstandardised_intensities_warns(caplog):
    with caplog.at_level("WARNING", logger="anogan.config"):
        load_config(None, ["scoring.residual=luminance", "data.intensity=minmax"])
    assert "luminance is meant for data.intensity zscore, got minmax" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="anogan.config"):
        load_config(None, ["scoring.residual=luminance"])
        load_config(None, ["data.intensity=minmax"])
    assert caplog.text == ""
