"""Tests of nst_batch.manifest: loading, path expansion, validation messages, sweeps, --set,
and every bad manifest through the command (exit 2, nothing written)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import CONTENT, STYLE, invoke, run_unprivileged, write_manifest_in
from PIL import Image

from nst_batch.manifest import Manifest, ManifestError, load_manifest, parse_devices
from nst_batch.params import GATYS_STYLE_LAYERS, PRESETS, Params
from nst_batch.plan import plan

WriteManifest = Callable[..., Path]


def _error(path: Path, overrides: tuple[str, ...] = ()) -> str:
    """The message of the ManifestError that loading `path` raises."""
    with pytest.raises(ManifestError) as info:
        load_manifest(path, overrides)
    return str(info.value)


def _write_text(tmp_path: Path, text: str, name: str = "gallery.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _copy(source: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target


def _names(manifest: Manifest) -> tuple[list[str], list[str]]:
    return [c.name for c in manifest.contents], [s.name for s in manifest.styles]


# --- a valid manifest ------------------------------------------------------------------------


def test_valid_manifest_loads(write_manifest: WriteManifest, tmp_path: Path) -> None:
    path = write_manifest()
    manifest = load_manifest(path)

    assert manifest.path == path
    assert manifest.output == (tmp_path / "out").resolve()
    assert _names(manifest) == (["chelsea", "coffee"], ["starry_night", "the_scream"])
    assert manifest.contents[0].path == CONTENT / "chelsea.png"
    assert manifest.styles[1].path == STYLE / "the_scream.jpg"
    assert [v.name for v in manifest.variants] == [""]
    assert manifest.weights == "original"
    assert manifest.devices == ("auto",)
    assert manifest.workers_per_device == 1
    assert manifest.format == "jpg"
    assert manifest.name_template == "{content}__{style}"
    assert dict(manifest.base) == {"size": 64, "steps": 8}
    params = manifest.params_for(manifest.contents[0], manifest.styles[0], manifest.variants[0])
    assert (params.size, params.steps) == (64, 8)
    assert params.style_weight == Params().style_weight  # the default
    assert params.style_layers == GATYS_STYLE_LAYERS
    names = [
        manifest.output_name(c, s, v)
        for s in manifest.styles
        for c in manifest.contents
        for v in manifest.variants
    ]
    assert names == [
        "chelsea__starry_night.jpg",
        "coffee__starry_night.jpg",
        "chelsea__the_scream.jpg",
        "coffee__the_scream.jpg",
    ]


def test_single_path_instead_of_a_list(write_manifest: WriteManifest) -> None:
    manifest = load_manifest(
        write_manifest(content=str(CONTENT / "rocket.jpg"), style=str(STYLE / "shipwreck.jpg"))
    )
    assert _names(manifest) == (["rocket"], ["shipwreck"])


def test_paths_resolve_relative_to_the_manifest_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    _copy(CONTENT / "chelsea.png", project / "images" / "content" / "chelsea.png")
    _copy(STYLE / "the_scream.jpg", project / "images" / "style" / "the_scream.jpg")
    path = write_manifest_in(
        project,
        output="gallery/out",
        content=["images/content/chelsea.png"],
        style=["./images/style/the_scream.jpg"],
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # relative to the manifest, not to the working directory

    manifest = load_manifest(path)

    assert manifest.contents[0].path == (project / "images/content/chelsea.png").resolve()
    assert manifest.styles[0].path == (project / "images/style/the_scream.jpg").resolve()
    assert manifest.output == (project / "gallery" / "out").resolve()


def test_relative_manifest_path_from_the_working_directory(
    write_manifest: WriteManifest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _copy(CONTENT / "coffee.png", tmp_path / "sub" / "c" / "coffee.png")
    write_manifest("sub/gallery.yaml", output="o", content="c", style=str(STYLE))
    monkeypatch.chdir(tmp_path)

    manifest = load_manifest("sub/gallery.yaml")

    assert manifest.contents[0].path == (tmp_path / "sub" / "c" / "coffee.png").resolve()
    assert manifest.output == (tmp_path / "sub" / "o").resolve()


def test_folder_expands_to_its_images_sorted(write_manifest: WriteManifest, tmp_path: Path) -> None:
    folder = tmp_path / "content"
    _copy(CONTENT / "coffee.png", folder / "b_coffee.png")
    _copy(CONTENT / "rocket.jpg", folder / "a_rocket.jpg")
    _copy(CONTENT / "chelsea.png", folder / "c_chelsea.PNG")  # suffixes match in any case
    (folder / "notes.txt").write_text("not an image")
    path = write_manifest(content="content", style=str(STYLE))

    manifest = load_manifest(path)

    assert [c.name for c in manifest.contents] == ["a_rocket", "b_coffee", "c_chelsea"]
    assert [c.path.name for c in manifest.contents] == [
        "a_rocket.jpg",
        "b_coffee.png",
        "c_chelsea.PNG",
    ]
    assert [s.name for s in manifest.styles] == [
        "shipwreck",
        "starry_night",
        "the_scream",
        "woman-with-hat-matisse",
    ]


def test_folders_and_globs_resolve_links_to_their_targets(
    write_manifest: WriteManifest, tmp_path: Path
) -> None:
    real = tmp_path / "real"
    _copy(CONTENT / "coffee.png", real / "b_coffee.png")
    _copy(CONTENT / "rocket.jpg", tmp_path / "elsewhere" / "z_rocket.jpg")
    (real / "a_rocket.jpg").symlink_to(tmp_path / "elsewhere" / "z_rocket.jpg")
    (tmp_path / "linked").symlink_to(real, target_is_directory=True)
    for pattern in ("linked", "linked/*"):
        path = write_manifest(content=pattern, style=str(STYLE))
        contents = load_manifest(path).contents
        # each image by its real path and name, sorted by real path
        assert [(c.name, c.path) for c in contents] == [
            ("z_rocket", (tmp_path / "elsewhere" / "z_rocket.jpg").resolve()),
            ("b_coffee", real.resolve() / "b_coffee.png"),
        ]


def test_an_output_through_a_link_out_of_the_output_folder_is_refused(
    write_manifest: WriteManifest, tmp_path: Path
) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "starry_night").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "out" / "coffee__the_scream.jpg").symlink_to(tmp_path / "elsewhere" / "x.jpg")
    coffee = str(CONTENT / "coffee.png")
    folder = _error(write_manifest(content=coffee, name="{style}/{content}"))
    assert "output 'starry_night/coffee.jpg' would land outside" in folder
    file = _error(write_manifest(content=coffee))
    assert "output 'coffee__the_scream.jpg' would land outside" in file


def test_folder_expansion_ignores_subfolders_named_like_images(
    write_manifest: WriteManifest, tmp_path: Path
) -> None:
    folder = tmp_path / "content"
    _copy(CONTENT / "coffee.png", folder / "coffee.png")
    (folder / "old.png").mkdir()
    path = write_manifest(content="content", style=str(STYLE))

    assert [c.name for c in load_manifest(path).contents] == ["coffee"]


def test_globs_expand_sorted_and_only_to_images(
    write_manifest: WriteManifest, tmp_path: Path
) -> None:
    _copy(CONTENT / "coffee.png", tmp_path / "imgs" / "coffee.png")
    _copy(CONTENT / "chelsea.png", tmp_path / "imgs" / "chelsea.png")
    _copy(CONTENT / "rocket.jpg", tmp_path / "imgs" / "rocket.jpg")
    _copy(CONTENT / "astronaut.png", tmp_path / "imgs" / "deeper" / "astronaut.png")
    (tmp_path / "imgs" / "list.txt").write_text("x")
    _copy(STYLE / "shipwreck.jpg", tmp_path / "styles" / "one" / "shipwreck.jpg")
    _copy(STYLE / "the_scream.jpg", tmp_path / "styles" / "two" / "the_scream.jpg")
    path = write_manifest(content=["imgs/*.png"], style=["styles/**/*.jpg"])

    manifest = load_manifest(path)

    assert _names(manifest) == (["chelsea", "coffee"], ["shipwreck", "the_scream"])
    assert manifest.contents[0].path == (tmp_path / "imgs" / "chelsea.png").resolve()


def test_a_file_listed_twice_is_used_once(write_manifest: WriteManifest, tmp_path: Path) -> None:
    _copy(CONTENT / "coffee.png", tmp_path / "c" / "coffee.png")
    _copy(CONTENT / "chelsea.png", tmp_path / "c" / "chelsea.png")
    path = write_manifest(content=["c/coffee.png", "c"], style=str(STYLE / "shipwreck.jpg"))
    assert [c.name for c in load_manifest(path).contents] == ["coffee", "chelsea"]


def test_entry_object_with_path_name_and_params(write_manifest: WriteManifest) -> None:
    path = write_manifest(
        style=[
            {
                "path": str(STYLE / "starry_night.jpg"),
                "name": "vangogh",
                "params": {"tv_weight": 2},
            },
            str(STYLE / "the_scream.jpg"),
        ]
    )
    manifest = load_manifest(path)

    vangogh, scream = manifest.styles
    assert (vangogh.name, vangogh.path, dict(vangogh.overrides)) == (
        "vangogh",
        STYLE / "starry_night.jpg",
        {"tv_weight": 2},
    )
    assert (scream.name, dict(scream.overrides)) == ("the_scream", {})
    content, variant = manifest.contents[0], manifest.variants[0]
    assert manifest.params_for(content, vangogh, variant).tv_weight == 2
    assert manifest.params_for(content, scream, variant).tv_weight == 0
    assert manifest.output_name(content, vangogh, variant) == "chelsea__vangogh.jpg"
    # one Params per setting, shared by its tasks: a big plan validates a few
    other = manifest.contents[1]
    assert manifest.params_for(other, scream, variant) is manifest.params_for(
        content, scream, variant
    )
    assert manifest.params_for(other, vangogh, variant) is not manifest.params_for(
        other, scream, variant
    )


def test_entry_name_needs_a_single_file(write_manifest: WriteManifest) -> None:
    path = write_manifest(style=[{"path": str(STYLE), "name": "all"}])
    message = _error(path)
    assert str(path) in message
    assert f"style[0] '{STYLE}'" in message
    assert "'name' needs a single file, but it matches 4" in message


def test_format_and_template_shape_the_output_names(write_manifest: WriteManifest) -> None:
    manifest = load_manifest(write_manifest(format="png", name="{style}/{content}"))
    content, style, variant = manifest.contents[0], manifest.styles[0], manifest.variants[0]
    assert manifest.output_name(content, style, variant) == "starry_night/chelsea.png"


# --- unknown keys, types and ranges --------------------------------------------------------


def test_unknown_top_level_key_suggests_the_right_one(write_manifest: WriteManifest) -> None:
    path = write_manifest(ouptut="elsewhere")
    message = _error(path)
    assert message == f"{path}: unknown key 'ouptut' (did you mean 'output'?)"


def test_misspelled_required_key_reports_missing_and_suggests(
    write_manifest: WriteManifest,
) -> None:
    path = write_manifest(output=None, ouptut="out")
    message = _error(path)
    assert f"{path}: missing required key 'output'" in message
    assert f"{path}: unknown key 'ouptut' (did you mean 'output'?)" in message


def test_unknown_key_without_close_match_lists_known_keys(write_manifest: WriteManifest) -> None:
    path = write_manifest(zzz=1)
    message = _error(path)
    assert f"{path}: unknown key 'zzz'; known keys: output, content, style" in message


def test_unknown_params_key_suggests_the_right_one(write_manifest: WriteManifest) -> None:
    path = write_manifest(params={"stlye_weight": 10})
    assert (
        _error(path) == f"{path}: params: unknown key 'stlye_weight' (did you mean 'style_weight'?)"
    )


def test_unknown_key_in_an_image_entry(write_manifest: WriteManifest) -> None:
    path = write_manifest(style=[{"path": str(STYLE / "shipwreck.jpg"), "nmae": "ship"}])
    message = _error(path)
    assert f"{path}: unknown key 'style.0.nmae' (did you mean 'name'?)" in message


def test_unknown_key_in_per_style_params(write_manifest: WriteManifest) -> None:
    path = write_manifest(
        style=[{"path": str(STYLE / "shipwreck.jpg"), "params": {"stlye_weight": 1}}]
    )
    message = _error(path)
    assert message == (
        f"{path}: style 'shipwreck.jpg' params: unknown key 'stlye_weight' "
        "(did you mean 'style_weight'?)"
    )


def _bound(key: str, kind: str) -> float:
    """A Params field's ge/le bound, read from the model so the tests follow its definition."""
    return next(getattr(m, kind) for m in Params.model_fields[key].metadata if hasattr(m, kind))


def test_bad_format(write_manifest: WriteManifest) -> None:
    path = write_manifest(format="gif")
    assert _error(path) == f"{path}: format: Input should be 'jpg', 'png' or 'webp' (got 'gif')"


def test_unknown_preset(write_manifest: WriteManifest) -> None:
    path = write_manifest(preset="pytorch")
    assert _error(path) == f"{path}: preset: unknown preset 'pytorch'; known: pytorch-tutorial"


def test_weights_neither_named_nor_a_file(write_manifest: WriteManifest, tmp_path: Path) -> None:
    path = write_manifest(weights="vgg.pth")
    message = _error(path)
    assert message == (
        f"{path}: weights: 'vgg.pth' is neither original nor torchvision nor an existing file "
        f"(looked for {(tmp_path / 'vgg.pth').resolve()})"
    )


def test_weights_file_resolves_relative_to_the_manifest(
    write_manifest: WriteManifest, tmp_path: Path
) -> None:
    (tmp_path / "vgg.pth").write_bytes(b"state dict")
    manifest = load_manifest(write_manifest(weights="vgg.pth"))
    assert manifest.weights == str((tmp_path / "vgg.pth").resolve())


# --- booleans and numbers ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"params": {"size": True}}, "params.size: Input should be a valid integer (got True)"),
        ({"params": {"seed": False}}, "params.seed: Input should be a valid integer (got False)"),
        (
            {"params": {"tv_weight": True}},
            "params.tv_weight: Input should be a valid number (got True)",
        ),
        (
            {"params": {"style_layer_weights": [1, 1, True, 1, 1]}},
            "params.style_layer_weights.2: Input should be a valid number (got True)",
        ),
        ({"workers_per_device": True}, "workers_per_device: Input should be a valid integer"),
        ({"batch_size": True}, "batch_size: Input should be 'auto' or a valid integer"),
        ({"batch_size": "many"}, "batch_size: Input should be 'auto' or a valid integer"),
        ({"max_pixels": True}, "max_pixels: Input should be a valid integer (got True)"),
    ],
)
def test_a_boolean_is_not_a_number(
    write_manifest: WriteManifest, fields: dict[str, Any], message: str
) -> None:
    path = write_manifest(**fields)
    assert _error(path).startswith(f"{path}: {message}")


def test_weights_accept_ints_and_exponents_without_a_dot(tmp_path: Path) -> None:
    path = _write_text(  # YAML reads 1e6 (no dot) as text
        tmp_path,
        f"output: out\ncontent: {CONTENT / 'coffee.png'}\nstyle: {STYLE / 'shipwreck.jpg'}\n"
        "params:\n  style_weight: 1e6\n  content_weight: 2\n  tv_weight: 1.5e-3\n"
        "batch_size: 4\n",
    )
    manifest = load_manifest(path)
    params = manifest.params_for(manifest.contents[0], manifest.styles[0], manifest.variants[0])
    assert (params.style_weight, params.content_weight, params.tv_weight) == (1e6, 2.0, 1.5e-3)
    assert isinstance(params.content_weight, float)
    assert manifest.batch_size == 4


# --- init_image -----------------------------------------------------------------------------


def _init_manifest(tmp_path: Path, init_image: str = "init/astronaut.png", **fields: Any) -> Path:
    """coffee x shipwreck started from `init_image`; init/astronaut.png is there."""
    _copy(CONTENT / "astronaut.png", tmp_path / "init" / "astronaut.png")
    doc = {"content": [str(CONTENT / "coffee.png")], "style": [str(STYLE / "shipwreck.jpg")]}
    params = {"init": "image", "init_image": init_image}
    return write_manifest_in(tmp_path, **{**doc, **fields}, params=params)


def test_init_image_resolves_relative_to_the_manifest_everywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    init = str((tmp_path / "init" / "astronaut.png").resolve())
    path = _init_manifest(
        tmp_path,
        style=[
            {
                "path": str(STYLE / "shipwreck.jpg"),
                "params": {"init_image": "./init/../init/astronaut.png"},
            }
        ],
        sweep={"init_image": ["init/astronaut.png"]},
    )
    monkeypatch.chdir(CONTENT)  # relative to the manifest, not to the working directory

    manifest = load_manifest(path)

    assert manifest.base["init_image"] == init
    assert manifest.styles[0].overrides["init_image"] == init
    assert manifest.variants[0].overrides["init_image"] == init
    assert manifest.variants[0].name == "init_image-init_astronaut.png"  # as written


@pytest.mark.parametrize(
    ("init_image", "file"),
    [("init/nope.png", "nope.png"), ("init/{{x}}.png", "{x}.png")],  # braces escaped: the file
    ids=["plain", "escaped-braces"],
)
def test_missing_init_image_names_the_key_and_the_file(
    tmp_path: Path, init_image: str, file: str
) -> None:
    path = _init_manifest(tmp_path, init_image)
    root = tmp_path.resolve()
    assert _error(path) == (
        f"{path}: params.init_image: no such file {root / 'init' / file}; "
        f"paths are relative to {root}"
    )


def test_init_image_with_escaped_braces_names_the_file_with_braces(tmp_path: Path) -> None:
    _copy(CONTENT / "astronaut.png", tmp_path / "init" / "{x}.png")
    manifest = load_manifest(_init_manifest(tmp_path, "init/{{x}}.png"))
    (task,) = plan(manifest)
    assert task.params.init_image == str((tmp_path / "init" / "{x}.png").resolve())


@pytest.mark.parametrize("template", ["previews/{content!r}.png", "previews/{content:>9}.png"])
def test_init_image_template_field_with_a_format_spec_is_refused(
    tmp_path: Path, template: str
) -> None:
    path = _init_manifest(tmp_path, template)
    assert _error(path) == (
        f"{path}: params.init_image: {{content}} in {template!r} has a format spec or "
        "conversion (':' or '!'); write the field plainly, such as {content}"
    )


def test_unreadable_content_image(write_manifest: WriteManifest, shared_tmp: Path) -> None:
    # a real refusal of the file system, also as root (see run_unprivileged)
    image = _copy(CONTENT / "coffee.png", shared_tmp / "coffee.png")
    path = shutil.copy(write_manifest(content=["coffee.png"]), shared_tmp / "gallery.yaml")
    image.chmod(0)
    done = run_unprivileged(
        "from nst_batch.manifest import ManifestError, load_manifest",
        f"try:\n    load_manifest({str(path)!r})\nexcept ManifestError as e:\n    print(e)",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        f"{path}: content[0] 'coffee.png': {image} is not readable; check its permissions"
    )


@pytest.mark.parametrize(
    "text",
    ["output: out\nsweep: " + "[" * 3000 + "]" * 3000, "output: " + "{a: " * 3000 + "}" * 3000],
    ids=["lists", "mappings"],
)
def test_yaml_nested_too_deeply_is_a_sentence(tmp_path: Path, text: str) -> None:
    path = _write_text(tmp_path, text + "\n")
    assert _error(path) == f"{path}: the YAML nests too deeply; flatten it"


def test_init_image_folder_names_the_key(tmp_path: Path) -> None:
    path = _init_manifest(tmp_path, "init")
    assert _error(path) == (
        f"{path}: params.init_image: {(tmp_path / 'init').resolve()} is a folder; "
        "give an image file"
    )


def test_missing_init_image_in_an_override_names_where(tmp_path: Path) -> None:
    entry = {"path": str(CONTENT / "coffee.png"), "params": {"init_image": "gone.png"}}
    path = _init_manifest(tmp_path, content=[entry])
    assert _error(path).startswith(f"{path}: content 'coffee.png' params.init_image: no such file ")
    path = _init_manifest(tmp_path, sweep={"init_image": ["gone.png"]})
    assert _error(path).startswith(f"{path}: sweep.init_image: no such file ")


# --- images that cannot be found ------------------------------------------------------------


def test_empty_glob(write_manifest: WriteManifest, tmp_path: Path) -> None:
    path = write_manifest(content=["photos/*.png"])
    assert _error(path) == (
        f"{path}: content[0] 'photos/*.png': the pattern matches no image; "
        f"patterns are relative to {tmp_path.resolve()}"
    )


def test_missing_file(write_manifest: WriteManifest, tmp_path: Path) -> None:
    path = write_manifest(style=[str(STYLE / "shipwreck.jpg"), "styles/monet.jpg"])
    root = tmp_path.resolve()
    assert _error(path) == (
        f"{path}: style[1] 'styles/monet.jpg': no such file {root / 'styles/monet.jpg'}; "
        f"paths are relative to {root}"
    )


def test_content_folder_without_images(write_manifest: WriteManifest, tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "readme.txt").write_text("no images here")
    path = write_manifest(content="photos")
    message = _error(path)
    assert message.startswith(
        f"{path}: content[0] 'photos': the folder {tmp_path.resolve() / 'photos'} holds no image"
    )
    assert ".jpg" in message
    assert ".png" in message


def test_unreadable_content_folder(write_manifest: WriteManifest, shared_tmp: Path) -> None:
    # a real refusal of the file system, also as root (see run_unprivileged)
    folder = shared_tmp / "photos"
    _copy(CONTENT / "coffee.png", folder / "coffee.png")
    path = shutil.copy(write_manifest(content="photos"), shared_tmp / "gallery.yaml")
    folder.chmod(0)
    done = run_unprivileged(
        "from nst_batch.manifest import ManifestError, load_manifest",
        f"try:\n    load_manifest({str(path)!r})\nexcept ManifestError as e:\n    print(e)",
    )
    assert done.returncode == 0, done.stderr
    message = done.stdout.strip()
    assert message.startswith(f"{path}: content[0] 'photos'"), message
    assert "permission denied" in message.lower()
    assert str(folder) in message


def test_same_stem_in_two_folders_collides(write_manifest: WriteManifest, tmp_path: Path) -> None:
    first = _copy(CONTENT / "chelsea.png", tmp_path / "x" / "a.png")
    second = tmp_path / "y" / "a.jpg"
    second.parent.mkdir()
    Image.open(CONTENT / "coffee.png").convert("RGB").save(second)
    path = write_manifest(content=["x/a.png", "y/a.jpg"])
    assert _error(path) == (
        f"{path}: content images {first.resolve()} and {second.resolve()} share the name 'a', "
        "so their outputs would collide; give one a 'name:'"
    )


def test_same_stem_resolved_with_name(write_manifest: WriteManifest, tmp_path: Path) -> None:
    _copy(CONTENT / "chelsea.png", tmp_path / "x" / "a.png")
    _copy(CONTENT / "coffee.png", tmp_path / "y" / "a.png")
    manifest = load_manifest(write_manifest(content=["x/a.png", {"path": "y/a.png", "name": "b"}]))
    assert [c.name for c in manifest.contents] == ["a", "b"]


# --- YAML and document shape ---------------------------------------------------------------


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = _write_text(
        tmp_path,
        "output: out\n"
        f"content: {CONTENT / 'coffee.png'}\n"
        f"style: [{STYLE / 'shipwreck.jpg'}\n"
        "params:\n"
        "  size: 64\n",
    )
    message = _error(path)
    assert message.startswith(f"{path}: YAML syntax error at line 4, column ")


def test_yaml_bad_indentation_names_the_line(tmp_path: Path) -> None:
    path = _write_text(tmp_path, "output: out\n  content: a.png\nstyle: b.jpg\n")
    assert _error(path) == (
        f"{path}: YAML syntax error at line 2, column 10: mapping values are not allowed here"
    )


@pytest.mark.parametrize("text", ["", "- a.png\n- b.png\n", "just text\n"])
def test_document_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    path = _write_text(tmp_path, text)
    message = _error(path)
    assert message.startswith(f"{path}: expected a mapping with at least output, content and style")


def test_missing_manifest_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    assert _error(path) == f"{path}: no such manifest file"


def test_empty_content_list(write_manifest: WriteManifest) -> None:
    path = write_manifest(content=[])
    message = _error(path)
    assert message.startswith(f"{path}: content: ")
    assert "at least 1 item" in message


# --- output name template ------------------------------------------------------------------


@pytest.mark.parametrize(
    "template", ["../{content}__{style}", "{style}/../../{content}", "/tmp/{content}_{style}"]
)
def test_template_outside_the_output_folder(write_manifest: WriteManifest, template: str) -> None:
    path = write_manifest(name=template)
    assert _error(path) == (
        f"{path}: name: {template!r} would write outside the output folder; "
        "use a relative name such as '{style}/{content}'"
    )


def test_template_unknown_field(write_manifest: WriteManifest) -> None:
    path = write_manifest(name="{content}__{colour}")
    assert _error(path) == (
        f"{path}: name: unknown field {{colour}} in '{{content}}__{{colour}}'; "
        "use {content}, {style}, {variant}"
    )


def test_template_bad_syntax(write_manifest: WriteManifest) -> None:
    path = write_manifest(name="{content")
    assert _error(path).startswith(f"{path}: name: bad template '{{content'")


def test_template_without_style_collides(write_manifest: WriteManifest) -> None:
    path = write_manifest(name="{content}")
    message = _error(path)
    assert message.startswith(f"{path}: two tasks would write chelsea.jpg: ")
    assert "add {variant} or {style} to 'name'" in message


@pytest.mark.parametrize(("kind", "name"), [("content", "../../evil"), ("style", "/tmp/evil")])
def test_image_name_cannot_escape_the_output_folder(
    write_manifest: WriteManifest, kind: str, name: str
) -> None:
    entries = {
        "content": [str(CONTENT / "chelsea.png"), {"path": str(CONTENT / "coffee.png")}],
        "style": [str(STYLE / "starry_night.jpg"), {"path": str(STYLE / "the_scream.jpg")}],
    }
    entries[kind][1]["name"] = name  # type: ignore[index]
    path = write_manifest(**entries)
    assert _error(path) == (
        f"{path}: {kind}[1].name: {name!r} would write outside the output folder; "
        "give a relative name without '..', such as 'portrait'"
    )


@pytest.mark.parametrize("name", ["", ".", "cups\ncoffee", "tab\there"])
def test_image_name_empty_or_with_a_control_character_is_refused(
    write_manifest: WriteManifest, name: str
) -> None:
    path = write_manifest(content=[{"path": str(CONTENT / "coffee.png"), "name": name}])
    assert _error(path) == (
        f"{path}: content[0].name: {name!r} is empty or holds a control character (a line "
        "break, say); give a plain name, such as 'portrait'"
    )


def test_image_name_with_a_folder_stays_inside(write_manifest: WriteManifest) -> None:
    path = write_manifest(content=[{"path": str(CONTENT / "coffee.png"), "name": "cups/coffee"}])
    manifest = load_manifest(path)
    content, style, variant = manifest.contents[0], manifest.styles[0], manifest.variants[0]
    assert manifest.output_name(content, style, variant) == "cups/coffee__starry_night.jpg"


@pytest.mark.parametrize(
    ("template", "output"),
    [("{variant}", ".jpg"), ("{variant}/{content}", "/chelsea.jpg"), ("{style}/{variant}", None)],
)
def test_template_that_renders_an_empty_part(
    write_manifest: WriteManifest, template: str, output: str | None
) -> None:
    path = write_manifest(name=template)
    output = output or "starry_night/.jpg"
    assert _error(path) == (
        f"{path}: name: {template!r} gives the output {output!r}, with an empty file or folder "
        "name ({variant} is empty without a sweep); put {content} or {style} in each part of "
        "'name'"
    )


def test_template_variant_alone_is_fine_with_a_sweep(write_manifest: WriteManifest) -> None:
    path = write_manifest(sweep={"steps": [2, 4]}, name="{style}/{content}/{variant}")
    manifest = load_manifest(path)
    content, style, variant = manifest.contents[0], manifest.styles[0], manifest.variants[0]
    assert manifest.output_name(content, style, variant) == "starry_night/chelsea/steps-2.jpg"


# --- sweeps and per-image overrides --------------------------------------------------------


def test_sweep_one_variant_per_value(write_manifest: WriteManifest) -> None:
    manifest = load_manifest(write_manifest(sweep={"style_weight": [1, 10, 100.5]}))
    assert [v.name for v in manifest.variants] == [
        "style_weight-1",
        "style_weight-10",
        "style_weight-100.5",
    ]
    content, style = manifest.contents[0], manifest.styles[0]
    weights = [manifest.params_for(content, style, v).style_weight for v in manifest.variants]
    assert weights == [1, 10, 100.5]
    names = [manifest.output_name(content, style, v) for v in manifest.variants]
    assert names == [
        "chelsea__starry_night__style_weight-1.jpg",
        "chelsea__starry_night__style_weight-10.jpg",
        "chelsea__starry_night__style_weight-100.5.jpg",
    ]


def test_sweep_of_two_keys_makes_every_combination(write_manifest: WriteManifest) -> None:
    manifest = load_manifest(
        write_manifest(sweep={"style_weight": [1, 10], "tv_weight": [0, 0.5]}),
    )
    assert [v.name for v in manifest.variants] == [
        "style_weight-1_tv_weight-0",
        "style_weight-1_tv_weight-0.5",
        "style_weight-10_tv_weight-0",
        "style_weight-10_tv_weight-0.5",
    ]
    assert [dict(v.overrides) for v in manifest.variants] == [
        {"style_weight": 1, "tv_weight": 0},
        {"style_weight": 1, "tv_weight": 0.5},
        {"style_weight": 10, "tv_weight": 0},
        {"style_weight": 10, "tv_weight": 0.5},
    ]
    names = {
        manifest.output_name(c, s, v)
        for c in manifest.contents
        for s in manifest.styles
        for v in manifest.variants
    }
    assert len(names) == 2 * 2 * 4
    for variant in manifest.variants:
        name = manifest.output_name(manifest.contents[0], manifest.styles[0], variant)
        assert variant.name in name


def test_sweep_with_variant_in_the_template(write_manifest: WriteManifest) -> None:
    path = write_manifest(sweep={"steps": [2, 4]}, name="{variant}/{style}/{content}")
    manifest = load_manifest(path)
    assert manifest.name_template == "{variant}/{style}/{content}"
    content, style, variant = manifest.contents[0], manifest.styles[0], manifest.variants[1]
    assert manifest.output_name(content, style, variant) == "steps-4/starry_night/chelsea.jpg"


def test_sweep_unknown_key(write_manifest: WriteManifest) -> None:
    path = write_manifest(sweep={"stlye_weight": [1, 2]})
    assert (
        _error(path) == f"{path}: sweep: unknown key 'stlye_weight' (did you mean 'style_weight'?)"
    )


def test_sweep_without_values(write_manifest: WriteManifest) -> None:
    path = write_manifest(sweep={"style_weight": []})
    assert _error(path) == f"{path}: sweep.style_weight: give at least one value"


def test_sweep_value_listed_twice(write_manifest: WriteManifest) -> None:
    path = write_manifest(sweep={"tv_weight": [0, 1], "style_weight": [5, 10, 10]})
    assert _error(path) == (
        f"{path}: sweep.style_weight: the value 10 is listed twice; keep one of them"
    )


@pytest.mark.parametrize(("first", "second"), [(10, 10.0), (10, "10"), ("a b", "a_b")])
def test_sweep_values_with_one_variant_name(
    write_manifest: WriteManifest, first: object, second: object
) -> None:
    path = write_manifest(sweep={"init": [first, second]})
    message = _error(path)
    assert message == (
        f"{path}: sweep.init: {first!r} and {second!r} both give the variant name "
        f"'init-{second if isinstance(second, str) else first}'; keep one of them"
    )
    assert "add {variant}" not in message


def test_sweep_bad_value_names_the_variant(write_manifest: WriteManifest) -> None:
    path = write_manifest(sweep={"style_weight": [1, -1]})
    message = _error(path)
    assert message.startswith(
        f"{path}: params.style_weight: Input should be greater than or equal to 0 (got -1)"
    )
    assert "(with the overrides of variant 'style_weight-" in message


def test_sweep_bad_value_variant_name_keeps_the_sign(write_manifest: WriteManifest) -> None:
    path = write_manifest(sweep={"style_weight": [1, -1]})
    assert "variant 'style_weight-1'" not in _error(path)


def test_per_style_params_override_base_params(write_manifest: WriteManifest) -> None:
    manifest = load_manifest(
        write_manifest(
            params={"style_weight": 20, "tv_weight": 1},
            style=[
                {"path": str(STYLE / "starry_night.jpg"), "params": {"style_weight": 5}},
                str(STYLE / "the_scream.jpg"),
            ],
        )
    )
    content, variant = manifest.contents[0], manifest.variants[0]
    starry, scream = manifest.styles
    assert manifest.params_for(content, starry, variant).style_weight == 5
    assert manifest.params_for(content, starry, variant).tv_weight == 1  # not overridden
    assert manifest.params_for(content, scream, variant).style_weight == 20


def test_style_overrides_beat_content_overrides(write_manifest: WriteManifest) -> None:
    manifest = load_manifest(
        write_manifest(
            content=[{"path": str(CONTENT / "coffee.png"), "params": {"tv_weight": 3, "seed": 7}}],
            style=[{"path": str(STYLE / "shipwreck.jpg"), "params": {"tv_weight": 4}}],
        )
    )
    params = manifest.params_for(manifest.contents[0], manifest.styles[0], manifest.variants[0])
    assert (params.tv_weight, params.seed) == (4, 7)


def test_sweep_overrides_base_and_per_style_params(write_manifest: WriteManifest) -> None:
    manifest = load_manifest(
        write_manifest(
            params={"style_weight": 20},
            style=[
                {"path": str(STYLE / "starry_night.jpg"), "params": {"style_weight": 5}},
                str(STYLE / "the_scream.jpg"),
            ],
            sweep={"style_weight": [100, 200]},
        )
    )
    content = manifest.contents[0]
    for style in manifest.styles:
        got = [manifest.params_for(content, style, v).style_weight for v in manifest.variants]
        assert got == [100, 200]


def test_bad_per_style_value_names_the_style(write_manifest: WriteManifest) -> None:
    path = write_manifest(
        style=[{"path": str(STYLE / "shipwreck.jpg"), "params": {"steps": 0}}],
    )
    assert _error(path) == (
        f"{path}: params.steps: Input should be greater than or equal to {_bound('steps', 'ge')} "
        "(got 0) (with the overrides of style 'shipwreck')"
    )


# --- --set overrides -----------------------------------------------------------------------


def test_set_overrides_a_param(write_manifest: WriteManifest) -> None:
    manifest = load_manifest(
        write_manifest(), ["params.style_weight=20", "params.size=96", "format=png"]
    )
    assert dict(manifest.base) == {"size": 96, "steps": 8, "style_weight": 20}
    assert manifest.format == "png"


def test_set_a_list_index_turns_a_bare_path_into_an_entry(write_manifest: WriteManifest) -> None:
    manifest = load_manifest(write_manifest(), ["style.0.params.tv_weight=1"])
    starry, scream = manifest.styles
    assert (starry.name, starry.path, dict(starry.overrides)) == (
        "starry_night",
        STYLE / "starry_night.jpg",
        {"tv_weight": 1},
    )
    assert dict(scream.overrides) == {}


def test_set_replaces_a_list_item(write_manifest: WriteManifest) -> None:
    manifest = load_manifest(write_manifest(), [f"content.1={CONTENT / 'rocket.jpg'}"])
    assert [c.name for c in manifest.contents] == ["chelsea", "rocket"]


@pytest.mark.parametrize(
    "item",
    ["style.9=monet.jpg", "style.first.params.tv_weight=1"],
    ids=["out-of-range", "not-a-number"],
)
def test_set_index_that_is_not_one_of_the_list(write_manifest: WriteManifest, item: str) -> None:
    message = _error(write_manifest(), (item,))
    key = item.partition("=")[0]
    assert message == f"--set {key}: style is a list of 2; use an index from 0 to 1"


def test_set_into_a_value(write_manifest: WriteManifest) -> None:
    path = write_manifest(params={"style_weight": 5})
    message = _error(path, ("params.style_weight.x=1",))
    assert message == (
        "--set params.style_weight.x: params.style_weight is a value, not a mapping; "
        "set an existing mapping's key, e.g. params.style_weight"
    )


def test_set_into_an_absent_params_key_names_the_set(write_manifest: WriteManifest) -> None:
    message = _error(write_manifest(), ("params.style_weight.x=1",))
    assert "--set params.style_weight.x" in message


@pytest.mark.parametrize("item", ["params.style_weight", "=20", " =1"])
def test_set_without_key_or_value(write_manifest: WriteManifest, item: str) -> None:
    message = _error(write_manifest(), (item,))
    assert message == f"--set {item!r}: expected KEY=VALUE, e.g. params.style_weight=20"


def test_set_unknown_key_is_validated_like_the_file(write_manifest: WriteManifest) -> None:
    path = write_manifest()
    message = _error(path, ("params.stlye_weight=3",))
    assert message == f"{path}: params: unknown key 'stlye_weight' (did you mean 'style_weight'?)"


def test_set_index_into_a_single_path(write_manifest: WriteManifest) -> None:
    path = write_manifest(style=str(STYLE / "shipwreck.jpg"))
    manifest = load_manifest(path, ["style.0.params.tv_weight=1"])
    assert dict(manifest.styles[0].overrides) == {"tv_weight": 1}


def test_set_a_template_value(write_manifest: WriteManifest) -> None:
    path = write_manifest(style=[str(STYLE / "shipwreck.jpg")])
    manifest = load_manifest(path, ["name={content}"])  # braces are a template, not YAML
    assert manifest.name_template == "{content}"
    assert [task.relative_output for task in plan(manifest)] == ["chelsea.jpg", "coffee.jpg"]


# --- presets --------------------------------------------------------------------------------


def test_preset_sets_its_params_and_torchvision_weights(write_manifest: WriteManifest) -> None:
    manifest = load_manifest(write_manifest(preset="pytorch-tutorial"))
    assert manifest.weights == "torchvision"
    params = manifest.params_for(manifest.contents[0], manifest.styles[0], manifest.variants[0])
    assert params.content_layers == ("conv2_2",)  # the tutorial's conv_4
    assert params.style_layers == ("conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1")
    assert params.square is True
    preset = Params.model_validate(PRESETS["pytorch-tutorial"])
    for key in ("style_weight", "content_weight", "content_layers", "style_layers", "square"):
        assert getattr(params, key) == getattr(preset, key), key
    # the manifest's own params win over the preset's
    assert (params.size, params.steps) == (64, 8)


def test_preset_keeps_explicit_weights(write_manifest: WriteManifest) -> None:
    manifest = load_manifest(write_manifest(preset="pytorch-tutorial", weights="original"))
    assert manifest.weights == "original"
    params = manifest.params_for(manifest.contents[0], manifest.styles[0], manifest.variants[0])
    assert params.style_weight == 1e6


# --- devices --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("auto", ("auto",)),
        ("cpu", ("cpu",)),
        ("cpu,cpu", ("cpu", "cpu")),
        (" cuda:0 , cuda:1 ", ("cuda:0", "cuda:1")),
        (["cuda:0", "cuda:1"], ("cuda:0", "cuda:1")),
        ("cuda", ("cuda",)),
        ("mps", ("mps",)),
    ],
)
def test_parse_devices(value: str | list[str], expected: tuple[str, ...]) -> None:
    assert parse_devices(value, "--devices") == expected


@pytest.mark.parametrize(
    ("value", "shown"),
    [("gpu", "'gpu'"), ("cpu,gpu1", "'gpu1'"), ("", "'(none)'"), (["cuda:x"], "'cuda:x'")],
)
def test_parse_devices_rejects(value: str | list[str], shown: str) -> None:
    with pytest.raises(ManifestError) as info:
        parse_devices(value, "--devices")
    assert str(info.value) == (
        f"--devices: unknown device {shown}; use auto, cpu, cuda, cuda:N or a list of them "
        "(e.g. cuda:0,cuda:1 or cpu,cpu)"
    )


def test_manifest_devices(write_manifest: WriteManifest) -> None:
    manifest = load_manifest(write_manifest(devices=["cuda:0", "cuda:1"], workers_per_device=2))
    assert manifest.devices == ("cuda:0", "cuda:1")
    assert manifest.workers_per_device == 2
    path = write_manifest(devices="gpu")
    assert _error(path).startswith(f"{path}: devices: unknown device 'gpu'; use auto, cpu")


# --- style blends and the colour and scale options -----------------------------------------

STARRY_PATH, SCREAM_PATH = STYLE / "starry_night.jpg", STYLE / "the_scream.jpg"
PAIR = [str(STARRY_PATH), str(SCREAM_PATH)]


def test_a_style_blend_normalizes_its_weights(write_manifest: WriteManifest) -> None:
    path = write_manifest(
        style=[
            {"path": PAIR, "weights": [3, 1], "name": "mix", "params": {"tv_weight": 2}},
            {"path": PAIR},
            {"path": [str(STARRY_PATH)], "weights": [7]},
        ]
    )
    mix, equal, one = load_manifest(path).styles
    assert mix.blend == ((STARRY_PATH, 0.75), (SCREAM_PATH, 0.25))
    assert mix.images == mix.blend
    assert (mix.name, mix.path, dict(mix.overrides)) == ("mix", STARRY_PATH, {"tv_weight": 2})
    assert equal.images == ((STARRY_PATH, 0.5), (SCREAM_PATH, 0.5))
    assert equal.name == "starry_night+the_scream"
    assert one.images == ((STARRY_PATH, 1.0),)
    assert sum(w for _, w in mix.images) == 1.0


def test_a_plain_style_stands_for_its_image_at_weight_1(write_manifest: WriteManifest) -> None:
    (starry, scream) = load_manifest(write_manifest()).styles
    assert (starry.blend, starry.images) == ((), ((STARRY_PATH, 1.0),))
    assert scream.images == ((SCREAM_PATH, 1.0),)


def test_blend_paths_resolve_relative_to_the_manifest(
    write_manifest: WriteManifest, tmp_path: Path
) -> None:
    a = _copy(STARRY_PATH, tmp_path / "paintings" / "a.jpg")
    b = _copy(SCREAM_PATH, tmp_path / "paintings" / "b.jpg")
    path = write_manifest(
        style=[{"path": ["paintings/a.jpg", "paintings/b.jpg"], "weights": [1, 4]}]
    )
    (style,) = load_manifest(path).styles
    assert style.images == ((a.resolve(), 0.2), (b.resolve(), 0.8))
    assert style.name == "a+b"


def test_set_overrides_blend_weights(write_manifest: WriteManifest) -> None:
    path = write_manifest(style=[{"path": PAIR, "weights": [3, 1]}])
    (style,) = load_manifest(path, ("style.0.weights=[1, 3]",)).styles
    assert style.images == ((STARRY_PATH, 0.25), (SCREAM_PATH, 0.75))


def test_a_content_entry_cannot_blend(write_manifest: WriteManifest) -> None:
    path = write_manifest(content=[{"path": [str(CONTENT / "chelsea.png")] * 2}])
    assert _error(path) == (
        f"{path}: content[0].path: a list of images blends styles; a content entry takes one "
        "image, file, folder or pattern"
    )


def test_weights_on_a_content_entry_name_the_weights(write_manifest: WriteManifest) -> None:
    path = write_manifest(content=[{"path": str(CONTENT / "chelsea.png"), "weights": [1]}])
    assert _error(path).startswith(f"{path}: content[0].weights: ")


@pytest.mark.parametrize("weights", [[1], [1, 2, 3]])
def test_blend_needs_one_weight_per_image(write_manifest: WriteManifest, weights: list) -> None:
    path = write_manifest(style=[str(STARRY_PATH), {"path": PAIR, "weights": weights}])
    assert _error(path) == (
        f"{path}: style[1].weights: {len(weights)} weights for 2 images; give one weight per "
        "image in 'path'"
    )


@pytest.mark.parametrize(
    "pattern", [str(STYLE / "*.jpg"), str(STYLE / "the_*.jpg"), str(STYLE)], ids=str
)
def test_a_blend_takes_single_files(write_manifest: WriteManifest, pattern: str) -> None:
    path = write_manifest(style=[{"path": [str(STARRY_PATH), pattern]}])
    assert _error(path) == (
        f"{path}: style[0].path[1] '{pattern}': a blend takes single files, not folders or "
        "patterns; list each image"
    )


def test_a_blend_with_a_missing_file(write_manifest: WriteManifest, tmp_path: Path) -> None:
    path = write_manifest(style=[{"path": [str(STARRY_PATH), "nope.jpg"]}])
    assert _error(path) == (
        f"{path}: style[0].path[1] 'nope.jpg': no such file {tmp_path / 'nope.jpg'}; "
        f"paths are relative to {tmp_path}"
    )


def test_an_empty_blend(write_manifest: WriteManifest) -> None:
    path = write_manifest(style=[{"path": []}])
    assert _error(path) == (
        f"{path}: style[0].path: the blend lists no image; give one or more files"
    )


@pytest.mark.parametrize(
    ("weights", "index", "value"), [([1, 0], 1, 0), ([-1, 2], 0, -1), ([0.0, 0.0], 0, 0.0)]
)
def test_blend_weights_must_be_positive(
    write_manifest: WriteManifest, weights: list, index: int, value: float
) -> None:
    path = write_manifest(style=[{"path": PAIR, "weights": weights}])
    assert _error(path).startswith(
        f"{path}: style.0.weights.{index}: Input should be greater than 0 (got {value!r})"
    )


def test_blend_weights_must_be_numbers(write_manifest: WriteManifest) -> None:
    path = write_manifest(style=[{"path": PAIR, "weights": [True, 1]}])
    assert _error(path) == f"{path}: style.0.weights.0: Input should be a valid number (got True)"


def test_preserve_color_names_its_choices(write_manifest: WriteManifest) -> None:
    path = write_manifest(params={"preserve_color": "sepia"})
    assert _error(path) == (
        f"{path}: params.preserve_color: Input should be 'none', 'luminance' or 'histogram' "
        "(got 'sepia')"
    )
    path = write_manifest(style=[{"path": PAIR, "params": {"preserve_color": "yes"}}])
    assert _error(path) == (
        f"{path}: params.preserve_color: Input should be 'none', 'luminance' or 'histogram' "
        "(got 'yes') (with the overrides of style 'starry_night+the_scream')"
    )


def test_option_values_reach_the_params(write_manifest: WriteManifest) -> None:
    path = write_manifest(
        params={"preserve_color": "histogram", "scales": 3, "scale_steps": 5, "adam_average": 0}
    )
    manifest = load_manifest(path)
    params = manifest.params_for(manifest.contents[0], manifest.styles[0], manifest.variants[0])
    assert (params.preserve_color, params.scales, params.scale_steps, params.adam_average) == (
        "histogram",
        3,
        5,
        0.0,
    )
    assert (params.scale_sizes, params.total_steps) == ((64,), 8)  # 16 and 32 are dropped


@pytest.mark.parametrize(
    ("name", "output"),
    [
        ("contact_sheet", "contact_sheet.jpg"),
        ("thumbs/{content}", "thumbs/chelsea.jpg"),
        ("pages/{content}", "pages/chelsea.jpg"),
        ("contact_sheet-001", "contact_sheet-001.jpg"),
    ],
)
def test_output_names_that_would_overwrite_the_gallery_are_refused(
    write_manifest, name: str, output: str
) -> None:
    path = write_manifest(content=[str(CONTENT / "chelsea.png")], name=name)
    with pytest.raises(ManifestError, match=f"output '{output}' would overwrite"):
        load_manifest(path)


# --- the run's keys: compile and batch_size ---------------------------------------------------


def test_manifest_compile_and_batch_size(write_manifest: WriteManifest) -> None:
    default = load_manifest(write_manifest())
    assert default.compile is False and default.batch_size is None
    set_ = load_manifest(write_manifest(batch_size=3, compile=True))
    assert set_.batch_size == 3 and set_.compile is True
    assert load_manifest(write_manifest(compile=False)).compile is False
    overridden = load_manifest(write_manifest(), ["batch_size=2", "compile=true"])
    assert overridden.batch_size == 2 and overridden.compile is True


def test_explicit_batch_size_auto(write_manifest: WriteManifest) -> None:
    manifest = write_manifest(batch_size="auto")
    result = invoke("--dry-run", manifest)
    assert result.exit_code == 0, repr(result.exception)
    assert load_manifest(manifest).batch_size is None
    assert load_manifest(write_manifest(), ["batch_size=auto"]).batch_size is None


# --- through the command: exit 2, the file and the key named, nothing written -----------------
#
# Every manifest error a user can make, run through `nst-batch`: the process exits 2 with
# "Error: <manifest>: ..." on stderr and nothing on stdout, and nothing is written (no output
# folder, no file added or changed beside the manifest).

GOOD, COFFEE = CONTENT / "chelsea.png", CONTENT / "coffee.png"
STARRY, SCREAM = STYLE / "starry_night.jpg", STYLE / "the_scream.jpg"
NAN, INF = float("nan"), float("inf")


@dataclass(frozen=True)
class Refused:
    """A bad manifest and what the command says about it."""

    make: Callable[[Path, WriteManifest], Path]  # (tmp_path, write_manifest) -> manifest
    says: tuple[str, ...] = ()  # each somewhere on stderr
    after_path: tuple[str, ...] = ()  # each on stderr right after "<manifest>: "
    never: tuple[str, ...] = ()  # none of these on stderr
    args: tuple[str, ...] = ()  # more command-line arguments


def _fields(**fields: Any) -> Callable[[Path, WriteManifest], Path]:
    return lambda folder, write: write(**fields)


def _named(template: str, **fields: Any) -> Callable[[Path, WriteManifest], Path]:
    """The manifest with a top-level `name:`."""
    return _fields(name=template, **fields)


def _photos(folder: Path) -> list[str]:
    """Two content images with one stem in different folders."""
    for sub, source in (("a", GOOD), ("b", COFFEE)):
        (folder / sub).mkdir()
        (folder / sub / "photo.png").write_bytes(source.read_bytes())
    return ["a/photo.png", "b/photo.png"]


def _yaml_syntax_error(folder: Path, write: WriteManifest) -> Path:
    path = folder / "gallery.yaml"
    path.write_text(
        f"output: out\ncontent: [{GOOD}]\nstyle: [{STARRY}]\nparams: {{size: 64, steps: 4]\n"
    )
    return path


def _empty_folder(folder: Path, write: WriteManifest) -> Path:
    (folder / "photos").mkdir()
    return write(content=["photos/"])


def _same_stem_by_glob(folder: Path, write: WriteManifest) -> Path:
    _photos(folder)
    return write(content=["*/photo.png"])


REFUSED: dict[str, Refused] = {
    "yaml syntax": Refused(_yaml_syntax_error, ("YAML syntax error at line 4, column 28",)),
    "unknown key": Refused(_fields(formt="png"), ("unknown key 'formt' (did you mean 'format'?)",)),
    "unknown params key": Refused(
        _fields(params={"stlye_weight": 5}),
        ("params: unknown key 'stlye_weight' (did you mean 'style_weight'?)",),
    ),
    "unknown entry key": Refused(
        _fields(content=[{"path": str(GOOD), "nmae": "cat"}]),
        ("unknown key 'content.0.nmae' (did you mean 'name'?)",),
    ),
    "unknown style params key": Refused(
        _fields(style=[{"path": str(STARRY), "params": {"syle_weight": 3}}]),
        (
            "style 'starry_night.jpg' params: unknown key 'syle_weight'",
            "(did you mean 'style_weight'?)",
        ),
    ),
    "steps a word": Refused(
        _fields(params={"steps": "many"}),
        ("params.steps: Input should be a valid integer", "(got 'many')"),
    ),
    "steps fractional": Refused(
        _fields(params={"steps": 4.5}),
        ("params.steps: Input should be a valid integer", "(got 4.5)"),
    ),
    "max_pixels a word": Refused(
        _fields(max_pixels="big"), ("max_pixels: Input should be a valid integer", "(got 'big')")
    ),
    "content a number": Refused(
        _fields(content=42), ("content: Input should be a valid list (got 42)",)
    ),
    "format": Refused(
        _fields(format="gif"), ("format: Input should be 'jpg', 'png' or 'webp' (got 'gif')",)
    ),
    "size zero": Refused(
        _fields(params={"size": 0}),
        ("params.size: Input should be greater than or equal to 32 (got 0)",),
    ),
    "size negative": Refused(
        _fields(params={"size": -64}),
        ("params.size: Input should be greater than or equal to 32 (got -64)",),
    ),
    "steps zero": Refused(
        _fields(params={"steps": 0}),
        ("params.steps: Input should be greater than or equal to 2 (got 0)",),
    ),
    "steps negative": Refused(
        _fields(params={"steps": -3}),
        ("params.steps: Input should be greater than or equal to 2 (got -3)",),
    ),
    "max_pixels zero": Refused(
        _fields(max_pixels=0), ("max_pixels: Input should be greater than or equal to 1 (got 0)",)
    ),
    "nan style_weight": Refused(
        _fields(params={"style_weight": NAN}),
        ("params.style_weight: must be a finite number (got nan)",),
    ),
    "infinite content_weight": Refused(
        _fields(params={"content_weight": INF}),
        ("params.content_weight: must be a finite number (got inf)",),
    ),
    "nan tv_weight": Refused(
        _fields(params={"tv_weight": NAN}), ("params.tv_weight: must be a finite number (got nan)",)
    ),
    "inf style_layer_weights": Refused(
        _fields(params={"style_layer_weights": [INF, 1, 1, 1, 1]}),
        ("params.style_layer_weights", "must be a finite number"),
    ),
    "nan style_layer_weights": Refused(
        _fields(params={"style_layer_weights": [NAN, 1, 1, 1, 1]}),
        ("params.style_layer_weights", "must be a finite number"),
    ),
    "nan weight of one style": Refused(
        _fields(style=[{"path": str(STARRY), "params": {"style_weight": NAN}}]),
        ("params.style_weight: must be a finite number", "of style 'starry_night'"),
    ),
    "nan weight in a sweep": Refused(
        _fields(sweep={"style_weight": [1, NAN]}),
        ("params.style_weight: must be a finite number", "variant 'style_weight-nan'"),
    ),
    "unknown content layer": Refused(
        _fields(params={"content_layers": ["relu6_1"]}),
        ("params.content_layers: unknown VGG19 layer 'relu6_1' (did you mean 'relu5_1'?)",),
    ),
    "unknown style layer": Refused(
        _fields(params={"style_layers": ["relu1_1", "reluu3_1"]}),
        ("params.style_layers: unknown VGG19 layer 'reluu3_1' (did you mean 'relu3_1'?)",),
    ),
    "preserve_color": Refused(
        _fields(params={"preserve_color": "sepia"}),
        (
            "params.preserve_color: Input should be 'none', 'luminance' or 'histogram' "
            "(got 'sepia')",
        ),
    ),
    "scales": Refused(
        _fields(params={"scales": 7}), ("params.scales: Input should be less than or equal to 6",)
    ),
    "precision": Refused(
        _fields(params={"precision": "fp64"}),
        (
            "params.precision: Input should be 'fp32', 'tf32', 'bf16', 'fp16' or 'auto'",
            "(got 'fp64')",
        ),
    ),
    "content blend": Refused(
        _fields(content=[{"path": [str(GOOD), str(COFFEE)]}]),
        ("content[0].path: a list of images blends styles; a content entry takes one image",),
    ),
    "weights count": Refused(
        _fields(style=[{"path": [str(STARRY), str(SCREAM)], "weights": [1, 2, 3]}]),
        ("style[0].weights: 3 weights for 2 images; give one weight per image in 'path'",),
    ),
    "batch_size zero": Refused(
        _fields(batch_size=0),
        after_path=("batch_size: Input should be greater than or equal to 1 (got 0)",),
    ),
    "batch_size a word": Refused(
        _fields(batch_size="many"),
        after_path=("batch_size: Input should be 'auto' or a valid integer",),
    ),
    "batch_size true": Refused(
        _fields(batch_size=True),
        after_path=("batch_size: Input should be 'auto' or a valid integer (got True)",),
    ),
    "compile a number": Refused(
        _fields(compile=3), after_path=("compile: Input should be a valid boolean",)
    ),
    "compile a word": Refused(
        _fields(compile="sometimes"), after_path=("compile: Input should be a valid boolean",)
    ),
    "missing init_image": Refused(
        _fields(params={"init": "image", "init_image": "missing.png"}), ("params.init_image",)
    ),
    "empty glob": Refused(
        _fields(content=["photos/*.jpg"]),
        ("content[0] 'photos/*.jpg': the pattern matches no image", "relative to"),
    ),
    "empty folder": Refused(_empty_folder, ("content[0] 'photos/': the folder", "holds no image")),
    "missing content": Refused(
        _fields(content=["missing.png"]),
        ("content[0] 'missing.png': no such file", "missing.png; paths are relative to"),
    ),
    "missing style": Refused(
        _fields(style=[str(STARRY), "nope.jpg"]), ("style[1] 'nope.jpg': no such file",)
    ),
    "missing weights": Refused(
        _fields(weights="nope.pth"),
        ("weights: 'nope.pth' is neither original nor torchvision nor an existing file",),
    ),
    "name with ..": Refused(
        _named("../{content}"), ("name: '../{content}' would write outside the output folder",)
    ),
    "absolute name": Refused(
        _named("/tmp/{content}"),
        ("name: '/tmp/{content}' would write outside the output folder",),
    ),
    "image name with ..": Refused(
        _fields(content=[{"path": str(GOOD), "name": "../../evil"}]),
        (
            "content[0]",
            "content[0].name: '../../evil' would write outside the output folder",
            "without '..'",
        ),
    ),
    "name renders empty": Refused(
        _named("{variant}", content=[str(GOOD)], style=[str(STARRY)]), after_path=("name: ",)
    ),
    "same stem in two folders": Refused(
        lambda folder, write: write(content=_photos(folder)),
        (
            "content images ",
            "share the name 'photo', so their outputs would collide; give one a 'name:'",
        ),
    ),
    "same stem by glob": Refused(
        _same_stem_by_glob,
        ("content images ", "share the name 'photo', so their outputs would collide"),
    ),
    "name without style": Refused(
        _named("{content}"),
        ("two tasks would write chelsea.jpg", "add {variant} or {style} to 'name'"),
    ),
    "duplicate sweep value": Refused(
        _fields(sweep={"style_weight": [10, 10.0]}),
        ("sweep.style_weight",),
        never=("add {variant}",),
    ),
}
# YAML's true and false are not numbers: refused before a dry run too.
for _key, (_fields_of, _message) in {
    "size": ({"params": {"size": True}}, "params.size: Input should be a valid integer"),
    "steps": ({"params": {"steps": True}}, "params.steps: Input should be a valid integer"),
    "style_weight": (
        {"params": {"style_weight": True}},
        "params.style_weight: Input should be a valid number",
    ),
    "workers_per_device": (
        {"workers_per_device": True},
        "workers_per_device: Input should be a valid integer",
    ),
    "batch_size": ({"batch_size": True}, "batch_size: Input should be 'auto' or a valid integer"),
}.items():
    REFUSED[f"{_key} true, dry run"] = Refused(
        _fields(**_fields_of), ("(got True)",), after_path=(_message,), args=("--dry-run",)
    )
REFUSED["max_pixels false, dry run"] = Refused(
    _fields(max_pixels=False),
    ("(got False)",),
    after_path=("max_pixels: Input should be a valid integer",),
    args=("--dry-run",),
)


@pytest.mark.parametrize("case", list(REFUSED))
def test_bad_manifest_exits_2_and_writes_nothing(
    write_manifest: WriteManifest, tmp_path: Path, case: str
) -> None:
    refused = REFUSED[case]
    manifest = refused.make(tmp_path, write_manifest)
    assert manifest.parent == tmp_path
    before = sorted(tmp_path.rglob("*"))

    result = invoke(manifest, *refused.args)

    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.stdout == ""
    assert result.stderr.startswith(f"Error: {manifest}: ")
    for fragment in refused.says:
        assert fragment in result.stderr
    for fragment in refused.after_path:
        assert f"{manifest}: {fragment}" in result.stderr
    for fragment in refused.never:
        assert fragment not in result.stderr
    assert not (tmp_path / "out").exists()
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.parametrize(
    "shipped", sorted((Path(__file__).resolve().parent.parent / "jobs").glob("*.yaml"))
)
def test_shipped_manifests_load(shipped: Path, tmp_path: Path) -> None:
    assert "\noutput: ../out/" in f"\n{shipped.read_text()}"  # the repository's out/
    # Loaded with the output elsewhere: a video's frames are decoded on loading (video.yaml).
    manifest = load_manifest(shipped, [f"output={tmp_path / 'out'}"])
    assert manifest.contents and manifest.styles
    assert manifest.output == (tmp_path / "out").resolve()
