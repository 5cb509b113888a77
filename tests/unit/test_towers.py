"""Which sentence-transformers pipelines ``load_tower`` accepts (the export reproduces only mean pooling)."""

import json
import shutil

import pytest

from aisle_export.core.towers import TowerError, default_tower_path, load_tower


@pytest.fixture
def tower(tmp_path):
    directory = tmp_path / "tower"
    shutil.copytree(default_tower_path(), directory, ignore=shutil.ignore_patterns("*.safetensors"))
    return directory


@pytest.mark.parametrize(
    "pooling, accepted",
    [
        ({"word_embedding_dimension": 384, "pooling_mode_mean_tokens": True, "pooling_mode_cls_token": False}, True),
        ({"word_embedding_dimension": 384, "pooling_mode": "mean"}, True),  # sentence-transformers >= 6
        ({"word_embedding_dimension": 384, "pooling_mode": "cls"}, False),
        ({"word_embedding_dimension": 384, "pooling_mode_cls_token": True}, False),
    ],
)
def test_only_mean_pooling_is_accepted(tower, pooling, accepted):
    (tower / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    if accepted:
        assert load_tower(tower).dim == 384
    else:
        with pytest.raises(TowerError, match="only mean pooling"):
            load_tower(tower)
