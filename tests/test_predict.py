"""`multimix predict` and the MLflow model: new files through the pipeline's own preprocessing,
DICOM as hospitals store it (written here with pydicom), the counting rule on bad inputs, and the
registered model giving the numbers the run gives."""

from __future__ import annotations

import json
from pathlib import Path
import subprocess
import sys

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from multimix import serving
from multimix.config import load_config
from multimix.data import dicom, formats
from multimix.data.preprocess import read_manifest
from multimix.predict import load, predict
from multimix.training.loop import train

from test_training import linked_data, tiny_params, tiny_project  # noqa: F401  (module fixture)

# One worker trains and registers the module's tiny run once (about 40 s).
pytestmark = pytest.mark.xdist_group("test_predict")

RUN = "multimix-s1-c2-r0"
SECONDARY = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation


def write_dicom(path, pixels: np.ndarray, photometric="MONOCHROME2", bits_stored=None, slope=1.0, intercept=0.0,
                window=None, view="PA", frames=1, with_pixels=True):
    """A DICOM Part 10 file as a hospital would export it (explicit VR little endian)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SECONDARY
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = SECONDARY, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.ViewPosition, ds.PatientID = "DX", view, "TEST"
    if with_pixels:
        allocated = 8 if pixels.dtype == np.uint8 else 16
        ds.Rows, ds.Columns = pixels.shape[-2:]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
        ds.BitsAllocated, ds.BitsStored = allocated, bits_stored or allocated
        ds.HighBit, ds.PixelRepresentation = ds.BitsStored - 1, 0
        ds.RescaleSlope, ds.RescaleIntercept = str(slope), str(intercept)
        if window is not None:
            ds.WindowCenter, ds.WindowWidth = str(window[0]), str(window[1])
        if frames > 1:
            ds.NumberOfFrames = frames
            pixels = np.stack([pixels] * frames)
        ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_project):
    """The tiny project with one MultiMix run trained (2 x 2 steps) and its MLflow model logged."""
    import os

    folder = linked_data(tiny_project, tmp_path_factory.mktemp("predict"))
    tiny_params(folder)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder / 'mlflow.db'}"
    try:
        train(load_config(folder / "params.yaml"), RUN, show_progress=False, log=lambda *a: None)
    finally:
        del os.environ["MLFLOW_TRACKING_URI"]
    return folder


def manifest_row(folder, dataset):
    manifest = read_manifest(folder / "interim" / "manifest.csv")
    return manifest[manifest.dataset == dataset].iloc[0]


def processed_image(folder, row):
    with h5py.File(folder / "processed" / f"{row['dataset']}.h5", "r") as f:
        ids = list(f["ids"].asstr()[:])
        return f["images"][ids.index(row["id"])]


@pytest.mark.parametrize("dataset", ["jsrt", "chex", "mcu", "nihx"])
def test_predict_prepares_a_raw_file_exactly_as_the_pipeline(trained, dataset):
    """JSRT's raw .IMG, CheX's JPEG, Montgomery's and NIH's PNG: the tensor the network sees."""
    cfg = load_config(trained / "params.yaml")
    row = manifest_row(trained, dataset)
    prepared = load(Path(row["image_path"]), "x", cfg.preprocess)
    assert prepared.native == (row["height"], row["width"])
    assert np.array_equal(prepared.image, processed_image(trained, row))


def phantom_pixels(trained) -> np.ndarray:
    """A 12-bit radiograph from the tiny project (Montgomery's PNG, display polarity)."""
    row = manifest_row(trained, "mcu")
    pixels = np.asarray(Image.open(row["image_path"]).convert("L"), dtype=np.uint16)
    return pixels * 16  # 8 -> 12 bits


def test_dicom_monochrome1_is_inverted_and_16_bit_words_keep_their_stored_bits(trained, tmp_path):
    cfg = load_config(trained / "params.yaml")
    pixels = phantom_pixels(trained)
    plain = write_dicom(tmp_path / "plain.dcm", pixels, bits_stored=12)
    inverted = write_dicom(tmp_path / "m1.dcm", 4095 - pixels, "MONOCHROME1", bits_stored=12)
    # 12 bits stored in 16-bit words whose unused high bits hold garbage (a real scanner quirk)
    noisy = write_dicom(tmp_path / "noisy.dcm", pixels | 0xA000, bits_stored=12)
    reference = load(plain, "a", cfg.preprocess).image
    assert np.allclose(load(inverted, "b", cfg.preprocess).image, reference, atol=1e-6)
    assert np.array_equal(load(noisy, "c", cfg.preprocess).image, reference)
    # the same image as a PNG goes the same way (16-bit PNG of the 12-bit values)
    formats.write_png(tmp_path / "same.png", pixels)
    assert np.allclose(load(tmp_path / "same.png", "d", cfg.preprocess).image, reference, atol=1e-3)
    # 8-bit words
    eight = write_dicom(tmp_path / "eight.dcm", (pixels // 16).astype(np.uint8))
    assert load(eight, "e", cfg.preprocess).image.shape == reference.shape


def test_dicom_rescale_comes_before_the_window(trained, tmp_path):
    """A window given in rescaled units (Hounsfield-like) must cut the rescaled values: reading
    the stored values through it (rescale skipped) gives another image."""
    cfg = load_config(trained / "params.yaml")
    pixels = phantom_pixels(trained)
    slope, intercept, window = 2.0, -1000.0, (3000.0, 4000.0)  # rescaled values span -1000 … 7190
    path = write_dicom(tmp_path / "w.dcm", pixels, bits_stored=12, slope=slope, intercept=intercept, window=window)
    values, applied = dicom.read_dicom(path)
    rescaled = pixels * slope + intercept
    lo, hi = window[0] - 0.5 - (window[1] - 1) / 2, window[0] - 0.5 + (window[1] - 1) / 2
    expected = np.clip(rescaled, lo, hi)  # DICOM's linear window, up to its output scaling
    assert applied["voi"] == "window" and applied["rescale"] == [2.0, -1000.0]
    a = (values - values.min()) / (values.max() - values.min())
    b = (expected - expected.min()) / (expected.max() - expected.min())
    assert np.allclose(a, b, atol=2e-3)
    stored_through_window = np.clip(pixels.astype(float), lo, hi)  # what a reader without rescale gets
    c = (stored_through_window - stored_through_window.min()) / np.ptp(stored_through_window)
    assert not np.allclose(a, c, atol=0.05)
    assert load(path, "w", cfg.preprocess).image.shape == (cfg.preprocess.size, cfg.preprocess.size)


@pytest.mark.parametrize("case, reason", [
    ("lateral", "a lateral view (ViewPosition LL)"),
    ("frames", "a multi-frame DICOM (3 frames)"),
    ("report", "a DICOM without pixel data"),
    ("colour", "photometric interpretation RGB"),
    ("truncated", "pixel data not decodable"),
])
def test_dicom_refusals_name_their_reason(trained, tmp_path, case, reason):
    pixels = phantom_pixels(trained)
    path = tmp_path / f"{case}.dcm"
    if case == "lateral":
        write_dicom(path, pixels, view="LL")
    elif case == "frames":
        write_dicom(path, pixels, frames=3)
    elif case == "report":
        write_dicom(path, pixels, with_pixels=False)
    elif case == "colour":
        write_dicom(path, pixels, photometric="RGB")
    else:
        write_dicom(path, pixels)
        path.write_bytes(path.read_bytes()[:-5000])
    with pytest.raises(formats.ImageDecodeError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        dicom.read_dicom(path)


def make_inputs(trained, folder):
    """A hospital-like folder: good files of every kind and bad ones beside them."""
    folder.mkdir()
    pixels = phantom_pixels(trained)
    write_dicom(folder / "IM0001", pixels, "MONOCHROME2", bits_stored=12)  # no suffix: found by its prefix
    write_dicom(folder / "IM0002.dcm", 4095 - pixels, "MONOCHROME1", bits_stored=12, window=(2048, 4096))
    write_dicom(folder / "lateral.dcm", pixels, view="RL")
    write_dicom(folder / "sr.dcm", pixels, with_pixels=False)
    Image.fromarray((pixels // 16).astype(np.uint8)).save(folder / "scan.tif")
    (folder / "sub").mkdir()
    row = manifest_row(trained, "chex")
    (folder / "sub" / "xray.jpeg").write_bytes(open(row["image_path"], "rb").read())
    data = (folder / "sub" / "xray.jpeg").read_bytes()
    (folder / "sub" / "broken.jpeg").write_bytes(data[: len(data) // 3])
    (folder / "notes.txt").write_text("not an image")
    return {"good": {"IM0001", "IM0002", "scan", "sub__xray"},  # output names: the path below the folder
            "bad": {"lateral.dcm": "lateral view", "sr.dcm": "without pixel data", "sub/broken.jpeg": "truncated",
                    "notes.txt": "not an image this command reads", "missing.png": "not found"}}


def test_predict_on_a_folder_uses_every_good_file_and_lists_every_bad_one(trained, tmp_path):
    cfg = load_config(trained / "params.yaml")
    expected = make_inputs(trained, tmp_path / "in")
    bundle = serving.Bundle.from_run(cfg, RUN)
    out = tmp_path / "out"
    lines = []
    predictions, rejected = predict(bundle, [str(tmp_path / "in"), str(tmp_path / "missing.png")], out, log=lines.append)
    assert set(predictions["name"]) == expected["good"]
    assert len(predictions) + len(rejected) == len(expected["good"]) + len(expected["bad"])  # the counting rule
    for name, reason in expected["bad"].items():
        match = rejected[rejected.file.str.endswith(name)]
        assert len(match) == 1 and reason in match.iloc[0]["reason"], (name, rejected)
        assert any(line.startswith(str(match.iloc[0]["file"])) for line in lines)
    assert all("\n" not in r for r in rejected.reason)
    for _, row in predictions.iterrows():
        stem = row["name"]
        mask = Image.open(out / f"{stem}_mask.png")
        assert (mask.height, mask.width) == (row["height"], row["width"])  # native size
        assert set(np.unique(np.asarray(mask))) <= {0, 255}
        assert np.isclose(row["p_normal"] + row["p_pneumonia"], 1.0) and row["predicted"] in ("normal", "pneumonia")
        assert (out / f"{stem}_overlay.png").is_file()
    dicom_row = predictions.set_index("name").loc["IM0002"]
    assert json.loads(dicom_row["details"])["photometric"] == "MONOCHROME1"
    saved = json.loads((out / "predictions.json").read_text())
    assert saved["run"] == RUN and len(saved["images"]) == 4 and len(saved["rejected"]) == 5
    assert pd.read_csv(out / "rejected.csv").shape[0] == 5


@pytest.fixture(scope="module")
def registered(trained):
    """The trained run registered as tiny-multimix@champion by `multimix register`."""
    import os

    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{trained / 'mlflow.db'}")
    result = subprocess.run([sys.executable, "-m", "multimix", "-q", "register", "--name", "tiny-multimix",
                             "--alias", "champion", "--preset", "multimix"], capture_output=True, text=True,
                            cwd=trained, env=env)
    assert result.returncode == 0, result.stderr
    assert "version 1 from run multimix-s1-c2-r0" in result.stdout and "models:/tiny-multimix@champion" in result.stdout
    return trained


def test_the_logged_model_registered_gives_the_runs_numbers(registered, tmp_path, monkeypatch):
    trained = registered
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{trained / 'mlflow.db'}")
    monkeypatch.chdir(trained)
    cfg = load_config(trained / "params.yaml")
    from_run = serving.Bundle.from_run(cfg, RUN)
    from_model = serving.load_model("models:/tiny-multimix@champion")
    images = np.stack([load(Path(manifest_row(trained, d)["image_path"]), "x", cfg.preprocess).image
                       for d in ("chex", "jsrt")])
    a, b = from_run.predict(images), from_model.predict(images)
    assert set(a) == set(b) == {"probabilities", "class_names", "masks", "mask_names", "saliency"}
    for key in ("probabilities", "masks", "saliency"):
        assert np.array_equal(a[key], b[key])
    # the same through the command line, --model against --run
    inputs = tmp_path / "in"
    inputs.mkdir()
    formats.write_png(inputs / "one.png", (images[0] * 255).astype(np.uint8))
    runs = {}
    for how in (["--run", RUN], ["--model", "models:/tiny-multimix@champion"]):
        out = tmp_path / how[0].strip("-")
        done = subprocess.run([sys.executable, "-m", "multimix", "-q", "predict", str(inputs), "--out", str(out), *how],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        runs[how[0]] = pd.read_csv(out / "predictions.csv")
    assert np.array_equal(runs["--run"]["p_pneumonia"], runs["--model"]["p_pneumonia"])


def test_bundle_input_checks_are_one_line(trained):
    bundle = serving.Bundle.from_run(load_config(trained / "params.yaml"), RUN)
    s = bundle.size
    for bad, message in ((np.zeros((2, s, s + 1)), "expected (N, 64, 64)"), (np.full((1, s, s), np.nan), "NaN"),
                         (np.full((1, s, s), 40.0), "expected [0, 1]"), ([["a"]], "not a numeric array")):
        with pytest.raises(Exception, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
            bundle.predict(bad)
    assert torch.is_tensor(torch.from_numpy(bundle.check(np.zeros((s, s)))))


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_mlflow_serves_the_registered_model_and_answers_bad_requests_with_400(registered, tmp_path):
    """`mlflow models serve -m models:/NAME@ALIAS` on loopback: a valid image gets the run's own
    numbers; a wrong-shaped array and garbage get a 400 with a message; the server stays up."""
    import os
    import signal
    import time
    import urllib.error
    import urllib.request

    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{registered / 'mlflow.db'}")
    port = free_port()
    log = open(tmp_path / "serve.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/tiny-multimix@champion",
                               "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)],
                              cwd=registered, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def post(body: bytes):
        request = urllib.request.Request(f"{url}/invocations", data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("the model server did not start: " + (tmp_path / "serve.log").read_text()[-2000:])
        cfg = load_config(registered / "params.yaml")
        image = load(Path(manifest_row(registered, "chex")["image_path"]), "x", cfg.preprocess).image
        started = time.perf_counter()
        status, body = post(json.dumps({"inputs": image[None].tolist()}).encode())
        latency = time.perf_counter() - started
        assert status == 200, body
        served = body["predictions"]
        expected = serving.Bundle.from_run(cfg, RUN).predict(image[None])
        assert served["class_names"] == ["normal", "pneumonia"]
        assert np.allclose(served["probabilities"], expected["probabilities"], atol=1e-6)
        assert np.array(served["masks"]).shape == (1, 1, cfg.preprocess.size, cfg.preprocess.size)
        print(f"served prediction in {latency * 1000:.0f} ms")
        s = cfg.preprocess.size
        for bad in (json.dumps({"inputs": np.zeros((1, s, s + 3)).tolist()}).encode(), b"\x00garbage{"):
            status, message = post(bad)
            assert 400 <= status < 500 and len(message) > 0, (status, message)
        status, message = post(json.dumps({"inputs": np.full((1, s, s), 7.0).tolist()}).encode())
        assert status == 400 and "expected [0, 1]" in message, message
        with urllib.request.urlopen(f"{url}/ping", timeout=5) as answer:
            assert answer.status == 200  # still up
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()
