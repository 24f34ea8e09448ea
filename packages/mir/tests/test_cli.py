"""`paperbricks mir ...`: info, synth-data, tiny-model and compute (end to end, offline)."""

import json

import pytest

from paperbricks.core_kernels.cli import main


def test_info(capsys):
    assert main(["mir", "info"]) == 0
    assert "arXiv:2410.07167" in capsys.readouterr().out


def test_synth_data_writes_a_set_and_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "set"
    assert main(["mir", "synth-data", "--out", str(out), "--num", "4", "--seed", "3"]) == 0
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"{i:06d}.png" for i in range(4)]
    assert len((out / "texts.txt").read_text().splitlines()) == 4
    capsys.readouterr()
    assert main(["mir", "synth-data", "--out", str(out), "--num", "2"]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["mir", "synth-data", "--out", str(out), "--num", "2", "--force"]) == 0
    assert len((out / "texts.txt").read_text().splitlines()) == 2


@pytest.fixture(scope="module")
def local_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    assert main(["mir", "tiny-model", "--out", str(root / "model"), "--seed", "1"]) == 0
    assert main(["mir", "synth-data", "--out", str(root / "data"), "--num", "6"]) == 0
    return root


def test_compute_matches_the_library_and_guards_its_output(local_setup, capsys):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from paperbricks.mir import compute_mir
    from paperbricks.mir.cli import list_images
    from paperbricks.mir.data import read_texts

    root = local_setup
    out = root / "mir.json"
    argv = [
        "mir", "compute", "--model", str(root / "model"), "--images", str(root / "data/images"),
        "--texts", str(root / "data/texts.txt"), "--num", "5", "--device", "cpu",
        "--out", str(out), "--batch-size", "2", "--no-progress",
    ]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    got = json.loads(out.read_text())
    assert got["method"] == "eigh" and got["extra"]["num"] == 5
    assert len(got["per_layer_fd"]) == 2 and f"MIR = log10(total) = {got['mir']:.4f}" in printed

    # the same number from the library on the same checkpoint and files
    model = AutoModelForImageTextToText.from_pretrained(root / "model", local_files_only=True)
    proc = AutoProcessor.from_pretrained(root / "model", local_files_only=True)
    images = list_images(root / "data/images")[:5]
    texts = read_texts(root / "data/texts.txt")[:5]
    ref = compute_mir(model, proc, images, texts, batch_size=2, progress=False)
    assert got["mir"] == pytest.approx(ref.mir, rel=1e-9)
    assert got["per_layer_fd"] == pytest.approx([float(v) for v in ref.per_layer_fd], rel=1e-9)

    # an existing --out is kept unless --force
    out.write_text("keep me")
    assert main(argv) == 2
    assert "--force" in capsys.readouterr().err
    assert out.read_text() == "keep me"
    assert main([*argv, "--force"]) == 0
    assert json.loads(out.read_text())["mir"] == pytest.approx(got["mir"])


def test_compute_rejects_bad_arguments(local_setup, capsys):
    root = local_setup
    base = [
        "mir",
        "compute",
        "--model",
        str(root / "model"),
        "--texts",
        str(root / "data/texts.txt"),
    ]
    out = str(root / "bad.json")
    assert main([*base, "--images", str(root / "data/images"), "--num", "99", "--out", out]) == 2
    assert "--num" in capsys.readouterr().err
    assert main([*base, "--images", str(root / "nowhere"), "--out", out]) == 2
    assert "--images" in capsys.readouterr().err
    assert main(["mir", "compute", "--model", str(root / "none"), "--images", "x", "--texts", "y",
                 "--out", out]) == 2  # fmt: skip
    assert "--model" in capsys.readouterr().err
    assert not (root / "bad.json").exists()
