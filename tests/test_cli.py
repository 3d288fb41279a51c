"""The command line: generate on the tiny model, and errors reported without a traceback."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from media import write_audio
from multitalk_serve.cli import main
from multitalk_serve.engine.pipeline.video import probe


def test_generate_command(tiny_root, tmp_path, capsys):
    image = tmp_path / "face.png"
    Image.fromarray((np.random.RandomState(0).rand(120, 180, 3) * 255).astype(np.uint8)).save(image)
    a, b = write_audio(tmp_path / "a.wav", 1.0), write_audio(tmp_path / "b.ogg", 1.0)
    code = main(
        [
            "generate",
            "--model",
            str(tiny_root),
            "--image",
            str(image),
            "--audio",
            str(a),
            "--audio",
            str(b),
            "--prompt",
            "two people",
            "--out",
            str(tmp_path / "o.mp4"),
            "--size",
            "64x96",
            "--steps",
            "1",
            "--seed",
            "5",
            "--box",
            "0,0,90,120",
            "--box",
            "90,0,180,120",
            "--mask-preview",
            str(tmp_path / "m.png"),
            "--quiet",
        ]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    # reported in the order --size takes it (HEIGHTxWIDTH), and spelt out
    assert summary["seed"] == 5 and summary["size"] == "64x96" and (tmp_path / "m.png").exists()
    assert (summary["height"], summary["width"]) == (64, 96) and "resolution" not in summary
    assert probe(tmp_path / "o.mp4").frames == summary["frames"]


def test_errors_are_one_line(tiny_root, tmp_path, capsys):
    bad = tmp_path / "x.wav"
    bad.write_text("not audio")
    image = tmp_path / "face.png"
    Image.fromarray((np.random.RandomState(0).rand(120, 180, 3) * 255).astype(np.uint8)).save(image)
    for picture, message in (
        ("nope.png", "error: --image: no such file: nope.png\n"),
        (str(image), "error: --audio (speaker 1): cannot open as audio"),  # named as the option, found before loading
    ):
        code = main(
            [
                "generate",
                "--model",
                str(tiny_root),
                "--image",
                picture,
                "--audio",
                str(bad),
                "--prompt",
                "x",
                "--out",
                str(tmp_path / "o.mp4"),
                "--size",
                "64x96",
                "--quiet",
            ]
        )
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1
        assert message in err
