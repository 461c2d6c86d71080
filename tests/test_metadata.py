from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from PIL import Image

from nst_batch.images import read_metadata, save_image
from nst_batch.metadata import (
    ANIMATION_METADATA,
    KEY_METADATA,
    PARAMS_METADATA,
    RECIPE_METADATA,
    RESULT_METADATA,
    SNAPSHOT_METADATA,
    SOURCE_METADATA,
    START_METADATA,
    OutputRecord,
    animation_metadata,
    output_metadata,
    snapshot_metadata,
)

KEY = "0123456789abcdef01234567"
RECIPE = {"algorithm": "6", "content": "c" * 64, "style": "s" * 64, "params": {"size": 48}}
PARAMS = {"size": 48, "style_weight": 50.0, "style_layers": ["relu1_1", "relu2_1"]}
LOSSES = {"content": 1.5, "style": 2.25, "tv": 0.125, "total": 3.875, "temporal": 0.0}
MADE_AT = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)


def _output(**changes: object) -> dict[str, str]:
    values: dict[str, object] = {
        "key": KEY,
        "recipe": RECIPE,
        "params": PARAMS,
        "content": "chelsea.png",
        "style": "starry_night.jpg",
        "losses": LOSSES,
        "steps": 300,
        "seconds": 12.34567,
        "device": "cuda:0",
        "made_at": MADE_AT,
        "version": "0.1.0",
        "init": "previous",
        "start_from": "f" * 24,
    }
    values.update(changes)
    return output_metadata(**values)  # type: ignore[arg-type]


def test_key_names_are_those_outputs_already_carry() -> None:
    # Renaming one would make every existing output look foreign (and every task outdated).
    names = [KEY_METADATA, RECIPE_METADATA, PARAMS_METADATA, SOURCE_METADATA, RESULT_METADATA]
    names += [START_METADATA, SNAPSHOT_METADATA, ANIMATION_METADATA]
    assert names == [
        "nst-batch:key",
        "nst-batch:recipe",
        "nst-batch:params",
        "nst-batch:source",
        "nst-batch:result",
        "nst-batch:start",
        "nst-batch:snapshot",
        "nst-batch:animation",
    ]


def test_an_output_records_these_exact_strings_in_this_order() -> None:
    actual = _output()

    desired = {
        KEY_METADATA: KEY,
        RECIPE_METADATA: json.dumps(RECIPE, sort_keys=True, separators=(",", ":")),
        PARAMS_METADATA: json.dumps(PARAMS, sort_keys=True),
        SOURCE_METADATA: '{"content": "chelsea.png", "style": "starry_night.jpg"}',
        RESULT_METADATA: (
            '{"device": "cuda:0", "losses": {"content": 1.5, "style": 2.25, "temporal": 0.0, '
            '"total": 3.875, "tv": 0.125}, "made_at": "2024-05-06T07:08:09Z", '
            '"seconds": 12.346, "steps": 300, "version": "0.1.0"}'
        ),
        START_METADATA: f'{{"init": "previous", "from": "{"f" * 24}"}}',
    }
    assert actual == desired
    assert list(actual) == list(desired)  # PNG text chunks are written in this order
    assert actual[RECIPE_METADATA].startswith('{"algorithm":"6","content":"ccc')


def test_an_output_without_a_previous_records_from_null() -> None:
    actual = _output(init="content", start_from=None)[START_METADATA]

    assert actual == '{"init": "content", "from": null}'


def test_round_trip_gives_back_what_was_recorded() -> None:
    record = OutputRecord.from_metadata(_output())

    assert record.key == KEY
    assert record.recipe == RECIPE
    assert record.params == PARAMS
    assert record.source == {"content": "chelsea.png", "style": "starry_night.jpg"}
    assert record.result == {
        "losses": LOSSES,
        "steps": 300,
        "seconds": 12.346,
        "device": "cuda:0",
        "made_at": "2024-05-06T07:08:09Z",
        "version": "0.1.0",
    }
    assert record.start == {"init": "previous", "from": "f" * 24}


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_round_trip_through_an_image_file(tmp_path: Path, suffix: str) -> None:
    output = tmp_path / f"made{suffix}"
    recorded = _output()
    save_image(Image.new("RGB", (8, 6), (10, 20, 30)), output, recorded)

    read = read_metadata(output)

    assert read == recorded
    assert OutputRecord.from_metadata(read) == OutputRecord.from_metadata(recorded)


def test_snapshot_records_key_step_steps_and_total_loss() -> None:
    actual = snapshot_metadata(KEY, 100, 300, 2.5)

    assert actual == {
        KEY_METADATA: KEY,
        SNAPSHOT_METADATA: '{"step": 100, "steps": 300, "total_loss": 2.5}',
    }


def test_animation_records_last_key_shape_and_names() -> None:
    actual = animation_metadata(KEY, 4, 100, "coffee", "starry_night")

    assert actual == {
        KEY_METADATA: KEY,
        ANIMATION_METADATA: '{"duration": 100, "frames": 4}',
        SOURCE_METADATA: '{"content": "coffee", "style": "starry_night"}',
    }
    assert OutputRecord.from_metadata(actual).source == {
        "content": "coffee",
        "style": "starry_night",
    }


def test_nothing_recorded_gives_none_everywhere() -> None:
    assert OutputRecord.from_metadata({}) == OutputRecord(None, None, None, None, None, None)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "{not json",
        "[1]",
        "5",
        "null",
        '"a string"',
        "1" * 5000,  # past Python's limit on digits in an int: ValueError
        "\ud800",
        "[" * 100_000 + "]" * 100_000,  # json.loads: RecursionError
        '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}",
    ],
)
def test_malformed_or_foreign_values_give_none(value: str) -> None:
    names = [RECIPE_METADATA, PARAMS_METADATA, SOURCE_METADATA, RESULT_METADATA, START_METADATA]
    metadata = {KEY_METADATA: KEY} | dict.fromkeys(names, value)

    record = OutputRecord.from_metadata(metadata)

    assert record == OutputRecord(key=KEY)


def test_one_malformed_part_leaves_the_others() -> None:
    metadata = _output() | {RESULT_METADATA: "{torn", START_METADATA: "[]"}

    record = OutputRecord.from_metadata(metadata)

    assert (record.result, record.start) == (None, None)
    assert record.recipe == RECIPE and record.params == PARAMS and record.key == KEY
